//! berth-init for the suites: it is its own small workspace (no std), built here if needed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds berth-init (release) under `target_dir` and returns its path; `$BERTH_TEST_INIT`,
/// where set, is a berth-init built before (the cgroup v2 guest has no cargo).
pub fn berth_init(target_dir: &Path) -> PathBuf {
    if let Some(built) = std::env::var_os("BERTH_TEST_INIT") {
        let built = PathBuf::from(built);
        assert!(built.is_file(), "BERTH_TEST_INIT={} is not a file", built.display());
        return built;
    }
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
