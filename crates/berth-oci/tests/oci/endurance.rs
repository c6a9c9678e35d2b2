//! Many lifecycles in a row must not accumulate anything: every create/start/kill/delete cycle
//! gives back its mounts, cgroups, processes and state, and no runtime descriptor reaches the
//! container. (Namespaces live only as long as a process, a mount or a descriptor holds them:
//! with those gone, so are the container's namespaces.)

use std::time::{Duration, Instant};

use crate::support::*;

const CYCLES: usize = 1000;
/// A thousand cycles: the waits ask every millisecond, for 20 s at most.
const PAUSE: Duration = Duration::from_millis(1);
const WAIT: Duration = Duration::from_secs(20);

fn descriptors(pid: i32) -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    fds
}

pub fn thousand_lifecycles_leave_nothing() {
    let c = Ctr::new("endurance", &["sleep", "1000"]);
    c.write_bundle();
    let bundle = c.bundle.dir.to_str().unwrap().to_string();
    let started = Instant::now();
    for i in 0..CYCLES {
        c.oci(&["create", "--bundle", &bundle, &c.id]).ok(&format!("create {i}"));
        let pid = c.pid();
        c.oci(&["start", &c.id]).ok(&format!("start {i}"));
        if i % 100 == 0 {
            // Once the program runs, it holds stdio only.
            let running = poll_every(PAUSE, WAIT, || {
                std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e.ends_with("busybox"))
            });
            assert!(running, "cycle {i}: timed out waiting for the program to start");
            assert_eq!(descriptors(pid), ["0", "1", "2"], "cycle {i}: descriptors in the container");
        }
        c.oci(&["kill", &c.id, "KILL"]).ok(&format!("kill {i}"));
        assert!(poll_every(PAUSE, WAIT, || is_dead(pid)), "cycle {i}: timed out waiting for the init to die");
        c.oci(&["delete", &c.id]).ok(&format!("delete {i}"));
    }
    let elapsed = started.elapsed();
    eprintln!(
        "endurance: {CYCLES} create/start/kill/delete cycles in {:.1} s ({:.1} ms each)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / CYCLES as f64
    );
    c.assert_gone();
    let state_root: Vec<_> = std::fs::read_dir(&c.root).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(state_root.is_empty(), "state left under {}", c.root.display());
    let mounts = read("/proc/self/mountinfo");
    assert!(!mounts.contains(&c.id), "mounts named after the container remain");
    let nsfs = mounts.lines().filter(|l| l.contains(" - nsfs ") && l.contains(c.dir.to_str().unwrap())).count();
    assert_eq!(nsfs, 0, "namespace files bound under the test's directory");
}
