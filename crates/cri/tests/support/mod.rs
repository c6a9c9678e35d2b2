//! Shared by berthd's integration tests: crictl, found as the project's tests find it.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// crictl from `$CRICTL`, else `../shared/bin/crictl` beside the workspace. `None` (after a
/// loud message) when it is absent; under CI (`CI=true`) its absence fails the test instead.
pub fn crictl() -> Option<PathBuf> {
    let path = std::env::var_os("CRICTL")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/bin/crictl"));
    if path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "crictl not found at {} (set CRICTL to a crictl 1.36 binary): the test against the real CRI client did not run",
        path.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    // Straight to the process's stderr: the test harness captures eprintln! of passing tests.
    let _ = writeln!(std::io::stderr(), "\n!!!!!!!!!! SKIPPED !!!!!!!!!!\n!!! {msg}\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
    None
}
