//! berth-oci under its real callers: podman (with conmon) and containerd (with its runc shim),
//! each in private state, running the busybox image through berth-oci. The suite runs in a
//! private mount namespace with a tmpfs on /run (the paths these callers do not let us move:
//! berth-oci's default root for podman, containerd's shim sockets), is the subreaper of
//! everything they leave, and ends by checking that nothing (processes, cgroups, mounts,
//! runtime state) was left behind.
//!
//! `cargo test -p berth-oci --test callers -- FILTER` runs a subset. podman, conmon and
//! containerd must be installed (`make deps`); without them the tests fail, they never skip.

mod containerd;
mod podman;
mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use berth_testkit::trials;
use libtest_mimic::Arguments;

/// Fails (with what to do) when a caller's program is not installed.
pub fn require_tool(name: &str) -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| d.join(name).is_file()) {
        Ok(())
    } else {
        Err(format!("{name} is not installed: these tests need podman, conmon and containerd (make deps)"))
    }
}

/// The busybox image as an OCI archive, built once for podman and containerd.
pub fn busybox_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let dest = support::suite().dir.join("busybox-oci.tar");
        berth_testkit::callers::busybox_oci_archive(&support::suite().dir, &dest, podman::IMAGE)
            .expect("building the busybox OCI archive (is busybox-static installed?)");
        dest
    })
}

fn main() {
    let args = Arguments::from_args();
    berth_testkit::host::require_root("berth-oci's callers tests run real containers and must run as root");
    support::init();
    // While we are the only thread.
    if let Err(e) = berth_testkit::callers::private_run(&support::suite().dir) {
        eprintln!("a private mount namespace with a tmpfs on /run and /var/lib shielded: {e}");
        clean_up();
        std::process::exit(1);
    }
    // conmon double-forks and the shims daemonize: they come back to the suite's reaper.
    berth_testkit::children::become_subreaper(&support::suite().dir);
    // In the cgroup v2 guest (software emulation) the suite takes minutes; here seconds.
    berth_testkit::check::watchdog("callers", std::time::Duration::from_secs(30 * 60));
    let tests = trials![
        podman::run_foreground,
        podman::run_exit_codes_and_errors,
        podman::run_interactive_tty,
        podman::detached_exec_stop_start_rm,
        podman::stop_kill_pause_update,
        podman::spec_options_reach_the_container,
        containerd::run_foreground,
        containerd::run_exit_codes_and_errors,
        containerd::detached_exec_kill_delete,
        containerd::kill_all_and_force_delete,
        containerd::run_tty,
    ];
    let conclusion = libtest_mimic::run(&args, tests);
    containerd::shutdown();
    let leaks = check_leaks();
    clean_up();
    berth_testkit::leaks::fail_on(&leaks, "; now removed");
    conclusion.exit();
}

/// What the suite left: processes of its callers or containers, container cgroups, mounts,
/// berth-oci state. Processes that outlived their container briefly (podman's cleanup process,
/// a shim on its way out) get some time first.
fn check_leaks() -> Vec<String> {
    let s = support::suite();
    let mut state_roots = vec![PathBuf::from(support::PODMAN_RUNTIME_ROOT)];
    state_roots.extend(containerd::runtime_root());
    let scope = berth_testkit::leaks::Scope {
        dir: s.dir.clone(),
        cgroup: s.cgroup_prefix.clone(),
        // podman's own cgroup for conmon (<parent>/conmon) is podman's, not a container's
        cgroups_not_containers: vec!["conmon".into()],
        settle: Duration::from_secs(30),
        ..Default::default()
    };
    let mut leaks = berth_testkit::leaks::leaks(&scope);
    // berth-oci's state roots hold other entries of containerd's and podman's own.
    for root in state_roots {
        for entry in containerd::leftovers(&root) {
            leaks.push(format!("berth-oci state {entry}"));
        }
    }
    leaks
}

/// Removes everything the suite made, leaked or not: processes (by pid: only ours mention the
/// suite directory or sit in its cgroups), mounts, the cgroup tree, the suite directory.
fn clean_up() {
    let s = support::suite();
    let dir = s.dir.display().to_string();
    let mut pids: Vec<i32> = support::processes_mentioning(&dir).into_iter().map(|(p, _)| p).collect();
    pids.extend(support::processes_in_cgroups(&s.cgroup_prefix));
    for pid in &pids {
        // SAFETY: kill by pid, of processes this suite started.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    berth_testkit::host::unmount_all_under(&s.dir);
    berth_testkit::host::remove_cgroups(&s.cgroup_prefix);
    berth_testkit::callers::unshield();
    let _ = std::fs::remove_dir_all(&s.dir);
}
