//! The harness: a suite directory, berth-oci's state as its callers left it, and the checks
//! that a container left nothing behind. The reaper (the harness is the subreaper of conmon,
//! the shims and every container they leave behind), commands with output in files,
//! terminals and waiting are berth_testkit's, shared with the other suites.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command};
use std::sync::OnceLock;
use std::time::Duration;

pub struct Suite {
    pub dir: PathBuf,
    /// Every container's cgroup lives under /<cgroup_prefix>/ in each hierarchy (podman's
    /// --cgroup-parent, ctr's --cgroup).
    pub cgroup_prefix: String,
    /// berth-oci, as built for this test.
    pub bin: PathBuf,
    /// Test-unique names start with this.
    pub tag: String,
}

static SUITE: OnceLock<Suite> = OnceLock::new();

pub fn suite() -> &'static Suite {
    SUITE.get().expect("suite initialised in main")
}

/// The runtime's default state root, which podman uses (inside our private /run).
pub const PODMAN_RUNTIME_ROOT: &str = "/run/berth-oci";

pub fn init() {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("berth-callers-test-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let suite = Suite {
        dir,
        cgroup_prefix: format!("berth-callers-{pid}"),
        bin: PathBuf::from(env!("CARGO_BIN_EXE_berth-oci")),
        tag: format!("bt{pid}"),
    };
    SUITE.set(suite).ok().expect("init once");
}

/// A name unique to this suite run and test.
pub fn unique(name: &str) -> String {
    format!("{}-{name}", suite().tag)
}

// ------------------------------------------------------------------------------------- commands

pub use berth_testkit::check::{assert_contains, poll_until, wait_until};
pub use berth_testkit::children::{run, run_with_stdin, spawn, spawn_with_stdin_pipe, Output, Spawned};
pub use berth_testkit::host::{is_cgroup2, processes_in_cgroups};
pub use berth_testkit::leaks::{mounts_containing, processes_mentioning};
pub use berth_testkit::terminal::Terminal;

/// How long what the callers do after a command returned (podman's cleanup process, a shim's
/// exit) may take.
pub const SETTLE: Duration = Duration::from_secs(30);

/// Writes `data` and closes the pipe.
pub fn write_and_close(mut input: ChildStdin, data: &[u8]) {
    let _ = input.write_all(data);
}

/// berth-oci itself, with a state root.
pub fn berth_oci(root: &Path, args: &[&str]) -> Output {
    run(Command::new(&suite().bin).arg("--root").arg(root).args(args))
}

/// `berth-oci state`: the status and pid berth-oci records for a container.
pub fn runtime_state(root: &Path, id: &str) -> Option<(String, i64)> {
    let out = berth_oci(root, &["state", id]);
    if out.code != 0 {
        return None;
    }
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("state: {e}: {}", out.stdout));
    Some((v["status"].as_str().unwrap_or_default().to_string(), v["pid"].as_i64().unwrap_or(0)))
}

// ------------------------------------------------------------------------------------- leaks

/// A directory shared with a container, through which it says it started and is told to go on.
pub fn sync_dir(name: &str) -> PathBuf {
    let d = suite().dir.join(format!("sync-{name}"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Asserts that nothing of container `id` remains: berth-oci state under `runtime_root`, its
/// cgroup `cgroup_name` under the suite's prefix, processes in it, and mounts naming the id.
#[track_caller]
pub fn assert_container_gone(runtime_root: &Path, id: &str, cgroup_name: &str) {
    let state = runtime_root.join(id);
    wait_until(&format!("berth-oci state {} removed", state.display()), SETTLE, || !state.exists());
    let cgroup = format!("{}/{cgroup_name}", suite().cgroup_prefix);
    wait_until(&format!("cgroups of {id} removed"), SETTLE, || berth_testkit::host::cgroup_dirs(&cgroup).is_empty());
    let procs = processes_in_cgroups(cgroup_name);
    assert!(procs.is_empty(), "processes of {id} remain: {procs:?}");
    let mounts = mounts_containing(id);
    assert!(mounts.is_empty(), "mounts of {id} remain: {mounts:?}");
}
