//! berth-init for the suites: it is its own small workspace (no std), built here if needed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds berth-init (release) under `target_dir` and returns its path.
pub fn berth_init(target_dir: &Path) -> PathBuf {
    let init = target_dir.join("release/berth-init");
    let st = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "--manifest-path"])
        .arg(crate::workspace_root().join("crates/init/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .expect("cargo build berth-init");
    assert!(st.success() && init.is_file(), "building berth-init failed");
    init
}
