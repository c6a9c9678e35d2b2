//! OOM kills, read from the container's memory cgroup before the runtime deletes it.

/// The memory cgroup's OOM-kill counter of `pid` (v1 `memory.oom_control`, v2 `memory.events`).
pub(crate) fn oom_counter_path(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut v2 = None;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        if ctrls.split(',').any(|c| c == "memory") {
            let p = format!("/sys/fs/cgroup/memory{path}/memory.oom_control");
            if std::path::Path::new(&p).exists() {
                return Some(p);
            }
        }
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        }
    }
    let path = v2?;
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let p = format!("{base}{path}/memory.events");
        if std::path::Path::new(&p).exists() {
            return Some(p);
        }
    }
    None
}

pub(crate) fn oom_kills(path: &Option<String>) -> u64 {
    let Some(p) = path else { return 0 };
    let text = std::fs::read_to_string(p).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}
