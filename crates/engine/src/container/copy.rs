//! `cp` between the host and a container's root filesystem (mounted again while stopped).

use std::path::{Path, PathBuf};

use super::*;
use crate::error::{bail, Error, Result};
use crate::Engine;

impl Engine {
    /// The container's root filesystem, mounted (a stopped container's is mounted again).
    pub(crate) fn rootfs_for_copy(&self, c: &Container) -> Result<PathBuf> {
        if c.state.status == "creating" {
            bail!(InvalidState, "container {} is not completely created", c.name);
        }
        self.store.mount_snapshot(&c.id)
    }

    /// `cp CONTAINER:PATH HOST_PATH`
    pub fn copy_from(&self, name_or_id: &str, path: &str, host: &Path) -> Result<()> {
        let c = self.get(name_or_id)?;
        let _l = if c.running() { None } else { Some(self.lock(&c.id)?) };
        let rootfs = self.rootfs_for_copy(&c)?;
        let r = crate::cp::copy_from_root(&rootfs, path, host, false)
            .map_err(|e| Error::msg(format!("cp {}:{path}: {e}", c.name)));
        if !c.running() {
            let _ = self.store.snapshots.unmount(&c.id);
        }
        r
    }

    /// `cp HOST_PATH CONTAINER:PATH`
    pub fn copy_to(&self, host: &Path, name_or_id: &str, path: &str) -> Result<()> {
        let c = self.get(name_or_id)?;
        let _l = if c.running() { None } else { Some(self.lock(&c.id)?) };
        let rootfs = self.rootfs_for_copy(&c)?;
        let r = crate::cp::copy_to_root(host, &rootfs, path)
            .map_err(|e| Error::msg(format!("cp to {}:{path}: {e}", c.name)));
        if !c.running() {
            let _ = self.store.snapshots.unmount(&c.id);
        }
        r
    }
}
