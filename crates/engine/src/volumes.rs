//! Volumes: directories under `<root>/volumes/<name>/_data` with a `volume.json` beside,
//! named (`-v NAME:/path`, `volume create`) or anonymous (`-v /path`, the image's VOLUMEs;
//! removed with the container by `rm -v` and `--rm`). A new, empty volume is first filled with
//! what the image has at its mount point, as docker does.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{bail, Context, Error, Result};
use crate::spec::valid_volume_name;
use crate::{random_id, time, Engine};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    pub name: String,
    pub driver: String,
    pub mountpoint: PathBuf,
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
    pub anonymous: bool,
    /// filled from the image already (or used by a container): never again
    #[serde(default)]
    pub populated: bool,
}

impl Engine {
    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    fn volume_meta(&self, name: &str) -> PathBuf {
        self.volumes_dir().join(name).join("volume.json")
    }

    fn volume_write(&self, v: &Volume) -> Result<()> {
        let p = self.volume_meta(&v.name);
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&tmp, serde_json::to_vec_pretty(v).unwrap_or_default()).ctx(tmp.display())?;
        fs::rename(&tmp, &p).ctx(p.display())
    }

    /// `volume create [NAME]`; an existing volume of that name is an error here (see
    /// `volume_get_or_create` for `-v NAME:...`).
    pub fn volume_create(
        &self,
        name: Option<&str>,
        labels: &BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<Volume> {
        let name = match name {
            Some(n) => {
                if !valid_volume_name(n) {
                    bail!(InvalidInput, "invalid volume name {n:?}: [a-zA-Z0-9][a-zA-Z0-9_.-]+");
                }
                n.to_string()
            }
            None => random_id(),
        };
        fs::create_dir_all(self.volumes_dir()).ctx(self.volumes_dir().display())?;
        let dir = self.volumes_dir().join(&name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!(AlreadyExists, "volume {name} already exists")
            }
            Err(e) => return Err(e).ctx(dir.display()),
        }
        let data = dir.join("_data");
        let v = Volume {
            name: name.clone(),
            driver: "local".into(),
            mountpoint: data.clone(),
            created_at: time::now_rfc3339(),
            labels: labels.clone(),
            anonymous,
            populated: false,
        };
        let made = fs::create_dir(&data).ctx(data.display()).and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).ctx(data.display())?;
            self.volume_write(&v)
        });
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(v)
    }

    pub fn volume_get_or_create(&self, name: &str) -> Result<Volume> {
        match self.volume_inspect(name) {
            Ok(v) => Ok(v),
            Err(e) if e.is(crate::Kind::NotFound) => match self.volume_create(Some(name), &BTreeMap::new(), false) {
                Err(e) if e.is(crate::Kind::AlreadyExists) => self.volume_inspect(name),
                r => r,
            },
            Err(e) => Err(e),
        }
    }

    pub fn volume_inspect(&self, name: &str) -> Result<Volume> {
        if !valid_volume_name(name) {
            bail!(NotFound, "no such volume: {name}");
        }
        let p = self.volume_meta(name);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).ctx(p.display()),
            Err(_) => bail!(NotFound, "no such volume: {name}"),
        }
    }

    pub fn volume_list(&self) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.volumes_dir()).into_iter().flatten().flatten() {
            if let Ok(v) = self.volume_inspect(&e.file_name().to_string_lossy()) {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The names of the containers that mount `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .load_all()?
            .into_iter()
            .filter(|c| c.mounts.iter().any(|m| m.kind == "volume" && m.name == name))
            .map(|c| c.name)
            .collect())
    }

    pub fn volume_remove(&self, name: &str, force: bool) -> Result<()> {
        self.volume_inspect(name)?;
        let users = self.volume_users(name)?;
        if !users.is_empty() && !force {
            bail!(InvalidState, "volume {name} is in use by container(s) {}", users.join(", "));
        }
        let dir = self.volumes_dir().join(name);
        // Renamed first, so a half-removed volume is never found by its name.
        let trash = self.volumes_dir().join(format!(".trash-{name}-{}", std::process::id()));
        fs::rename(&dir, &trash).ctx(format!("remove volume {name}"))?;
        fs::remove_dir_all(&trash).ctx(format!("remove volume {name}"))
    }

    /// Removes every volume no container uses; their names.
    pub fn volume_prune(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for v in self.volume_list()? {
            if self.volume_users(&v.name)?.is_empty() {
                self.volume_remove(&v.name, false)?;
                out.push(v.name);
            }
        }
        Ok(out)
    }

    /// Fills a new, empty volume with the image's content at `dest` (once).
    pub(crate) fn volume_copy_up(&self, v: &Volume, rootfs: &Path, dest: &str) -> Result<()> {
        if v.populated {
            return Ok(());
        }
        let empty = fs::read_dir(&v.mountpoint).map(|mut d| d.next().is_none()).unwrap_or(false);
        if empty {
            crate::cp::copy_from_root(rootfs, dest, &v.mountpoint, true)
                .map_err(|e| Error::msg(format!("volume {}: copying the image's {dest}: {e}", v.name)))?;
        }
        let mut v = v.clone();
        v.populated = true;
        self.volume_write(&v)
    }
}
