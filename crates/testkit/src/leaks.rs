//! What an integration suite left behind on the host, found the same way by every suite:
//! processes (in the suite's cgroups, or naming its directory), mounts under its directory,
//! cgroups under its parent in every hierarchy, runtime state, bridges, iptables rules and
//! network namespaces that name it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::host::{cgroup_dirs, is_dead, mount_points, processes_in_cgroups};

/// What belongs to one suite run.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// the suite's own directory (its temp roots, bundles, sockets)
    pub dir: PathBuf,
    /// the cgroup path component under which the suite's containers get their cgroups
    pub cgroup: String,
    /// children of that cgroup that are not containers' (podman keeps conmon in `conmon`)
    pub cgroups_not_containers: Vec<String>,
    /// directories whose entries are containers' runtime state
    pub state_roots: Vec<PathBuf>,
    /// network interfaces the suite may have made (bridges)
    pub interfaces: Vec<String>,
    /// text that only the suite's iptables rules and network namespaces hold (a subnet, an id
    /// prefix)
    pub markers: Vec<String>,
    /// how long processes that outlive their container briefly (a shim, a cleanup process)
    /// get to go first
    pub settle: Duration,
}

/// Everything of `scope` still on the host, one line per thing.
pub fn leaks(scope: &Scope) -> Vec<String> {
    let dir = scope.dir.to_string_lossy().into_owned();
    crate::check::poll_until(scope.settle, || {
        processes_mentioning(&dir).is_empty() && processes_in_cgroups(&scope.cgroup).is_empty()
    });
    let mut out = Vec::new();
    for (pid, cmdline) in processes_mentioning(&dir) {
        out.push(format!("process {pid}: {cmdline}"));
    }
    for pid in processes_in_cgroups(&scope.cgroup) {
        out.push(format!("process {pid} in a test cgroup"));
    }
    for m in mounts_containing(&dir) {
        out.push(format!("mount {m}"));
    }
    for parent in cgroup_dirs(&scope.cgroup) {
        for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && !scope.cgroups_not_containers.contains(&name) {
                out.push(format!("cgroup {}", e.path().display()));
            }
        }
    }
    for root in &scope.state_roots {
        for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
            out.push(format!("runtime state {}", e.path().display()));
        }
    }
    for i in &scope.interfaces {
        if Path::new("/sys/class/net").join(i).exists() {
            out.push(format!("network interface {i}"));
        }
    }
    if !scope.markers.is_empty() {
        for (table, rule) in iptables_rules() {
            if scope.markers.iter().any(|m| rule.contains(m.as_str())) {
                out.push(format!("iptables -t {table}: {rule}"));
            }
        }
        for e in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if scope.markers.iter().any(|m| name.contains(m.as_str())) {
                out.push(format!("network namespace /run/netns/{name}"));
            }
        }
    }
    out
}

/// Ends a suite that left `leaks` behind: prints them (the heading ending with `note`) and
/// exits with status 1. Without leaks it returns.
pub fn fail_on(leaks: &[String], note: &str) {
    if leaks.is_empty() {
        return;
    }
    eprintln!("LEAKS after the suite (it left these behind{note}):");
    for l in leaks {
        eprintln!("  {l}");
    }
    std::process::exit(1);
}

/// Live processes (not this one) whose command line holds `text`.
pub fn processes_mentioning(text: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if pid == me || is_dead(pid) {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(text) {
            out.push((pid, cmdline.trim_end().to_string()));
        }
    }
    out
}

/// Mount points whose path holds `text`, in this process's mount namespace.
pub fn mounts_containing(text: &str) -> Vec<String> {
    mount_points().into_iter().map(|m| m.to_string_lossy().into_owned()).filter(|m| m.contains(text)).collect()
}

/// Every iptables rule of the filter and nat tables, as `iptables -S` prints them (run as a
/// child of the suite's reaper).
pub fn iptables_rules() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for table in ["filter", "nat"] {
        let o = crate::children::run(Command::new("iptables").args(["-t", table, "-S"]));
        for l in o.stdout.lines() {
            out.push((table.to_string(), l.to_string()));
        }
    }
    out
}
