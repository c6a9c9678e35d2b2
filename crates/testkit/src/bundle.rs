//! OCI bundles: a directory with config.json and a rootfs. The config starts as berth-oci's
//! default spec (runc's example) without a terminal; tests edit it as JSON.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::rootfs::build_busybox_rootfs;

pub struct Bundle {
    pub dir: PathBuf,
    pub config: Value,
}

impl Bundle {
    /// A bundle at `dir` (created) with its own busybox rootfs and a default config running
    /// `args`.
    pub fn busybox(dir: &Path, args: &[&str]) -> io::Result<Bundle> {
        std::fs::create_dir_all(dir)?;
        build_busybox_rootfs(&dir.join("rootfs"))?;
        Ok(Bundle::with_rootfs(dir, "rootfs", args))
    }

    /// A bundle whose config points at an existing rootfs (absolute, or relative to `dir`).
    pub fn with_rootfs(dir: &Path, rootfs: &str, args: &[&str]) -> Bundle {
        let mut config = oci_runtime::spec::default_spec(false);
        config["process"]["terminal"] = Value::Bool(false);
        config["process"]["args"] = args.iter().map(|a| Value::String(a.to_string())).collect();
        config["root"]["path"] = Value::String(rootfs.to_string());
        Bundle { dir: dir.to_path_buf(), config }
    }

    pub fn write(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::write(self.dir.join("config.json"), serde_json::to_vec_pretty(&self.config)?)
    }

    pub fn rootfs(&self) -> PathBuf {
        let p = PathBuf::from(self.config["root"]["path"].as_str().unwrap_or("rootfs"));
        if p.is_absolute() {
            p
        } else {
            self.dir.join(p)
        }
    }
}
