//! What the tests look at on the host: cgroup hierarchies and the processes in them.

/// The host runs the one cgroup2 hierarchy only (no v1 controllers).
pub fn is_cgroup2() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Hierarchy directory names under /sys/fs/cgroup ("" on pure v2).
pub fn hierarchies() -> Vec<String> {
    if is_cgroup2() {
        return vec![String::new()];
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        if e.path().join("cgroup.procs").exists() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

/// Whether process `pid` is gone or a zombie (exited, not yet reaped: it holds nothing).
pub fn is_dead(pid: i32) -> bool {
    berth_sys::proc::stat(pid).is_none_or(|s| s.state == 'Z')
}

/// Live processes with `component` as a component of their cgroup path (an id is not
/// matched by a longer id that starts with it).
pub fn processes_in_cgroups(component: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if is_dead(pid) {
            continue;
        }
        if let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            if cg.lines().any(|l| l.rsplit(':').next().unwrap_or("").split('/').any(|c| c == component)) {
                out.push(pid);
            }
        }
    }
    out
}
