//! `top` (the container's processes, from the runtime's `ps` and /proc), `stats` (its cgroup's
//! CPU, memory and pids counters, its network namespace's traffic) and `info`.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{bail, Result};
use crate::{runtime, Engine};

#[derive(Debug, Clone, Serialize)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    /// CPU time in seconds
    pub cpu_secs: u64,
    pub command: String,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Stats {
    pub id: String,
    pub name: String,
    pub cpu_nanos: u64,
    pub memory_usage: u64,
    pub memory_limit: u64,
    /// usage less the page cache the kernel can drop at once (inactive files): what kubelet
    /// evicts by
    pub memory_working_set: u64,
    /// anonymous memory and swap cache
    pub memory_rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub pids: u64,
    pub net_rx: u64,
    pub net_tx: u64,
}

fn read_u64(p: &PathBuf) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn proc_info(pid: i32) -> Option<Process> {
    let stat = berth_sys::proc::stat(pid)?;
    let ticks = 100; // USER_HZ
    let cpu = (stat.utime + stat.stime) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut command: String = cmdline
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    if command.is_empty() {
        command = format!("[{}]", stat.comm);
    }
    Some(Process { pid, ppid: stat.ppid, uid, cpu_secs: cpu, command })
}

/// The directory of `pid`'s cgroup for `controller` (v1), or its v2 directory.
fn cgroup_dir(pid: i32, controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut v2 = None;
    for l in text.lines() {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        if ctrls.split(',').any(|c| c == controller) {
            let p = PathBuf::from(format!("/sys/fs/cgroup/{controller}{path}"));
            if p.exists() {
                return Some(p);
            }
            // A combined mount (cpu,cpuacct).
            for d in std::fs::read_dir("/sys/fs/cgroup").ok()?.flatten() {
                let n = d.file_name().to_string_lossy().into_owned();
                if n.split(',').any(|c| c == controller) {
                    let p = d.path().join(path.trim_start_matches('/'));
                    if p.exists() {
                        return Some(p);
                    }
                }
            }
        }
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        }
    }
    let p = PathBuf::from(format!("/sys/fs/cgroup{}", v2?));
    p.join("cgroup.controllers").exists().then_some(p)
}

/// Whether the kernel has pidfd_open (5.3+), asked of the kernel itself.
/// Bytes of regular files (hard links once) and inodes below `dir`, without following
/// links or crossing into other file systems.
pub fn tree_usage(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else { return (0, 0) };
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut inodes) = (0, 1);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.nlink() > 1 && !md.is_dir() && !seen.insert(md.ino()) {
                continue;
            }
            inodes += 1;
            if md.is_dir() && md.dev() == top.dev() {
                stack.push(e.path());
            } else if md.is_file() {
                bytes += md.len();
            }
        }
    }
    (bytes, inodes)
}

fn pidfd_supported() -> bool {
    berth_sys::process::pidfd_open(berth_sys::process::getpid()).is_ok()
}

impl Engine {
    pub fn top(&self, name_or_id: &str) -> Result<Vec<Process>> {
        let c = self.get(name_or_id)?;
        if !c.running() {
            bail!(InvalidState, "container {} is not running", c.name);
        }
        let rt = self.runtime(Some(&c.runtime))?;
        let pids = match rt.pids(&c.id) {
            Ok(p) if !p.is_empty() => p,
            _ => {
                // The cgroup's member list, when the runtime cannot tell.
                let dir = cgroup_dir(c.state.pid, "pids").or_else(|| cgroup_dir(c.state.pid, "memory"));
                let procs = dir.and_then(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok()).unwrap_or_default();
                procs.lines().filter_map(|l| l.trim().parse().ok()).collect()
            }
        };
        Ok(pids.into_iter().filter_map(proc_info).collect())
    }

    pub fn stats(&self, name_or_id: &str) -> Result<Stats> {
        let c = self.get(name_or_id)?;
        let mut s = Stats { id: c.id.clone(), name: c.name.clone(), ..Default::default() };
        if !c.running() {
            return Ok(s);
        }
        let pid = c.state.pid;
        if let Some(d) = cgroup_dir(pid, "memory") {
            // cgroup v1 names its counters for the whole subtree `total_*`.
            let (v1, prefix) = if d.join("memory.usage_in_bytes").exists() { (true, "total_") } else { (false, "") };
            if v1 {
                s.memory_usage = read_u64(&d.join("memory.usage_in_bytes")).unwrap_or(0);
                s.memory_limit = read_u64(&d.join("memory.limit_in_bytes")).unwrap_or(0);
            } else {
                s.memory_usage = read_u64(&d.join("memory.current")).unwrap_or(0);
                s.memory_limit = read_u64(&d.join("memory.max")).unwrap_or(0);
            }
            let stat = std::fs::read_to_string(d.join("memory.stat")).unwrap_or_default();
            let field = |name: &str| {
                stat.lines()
                    .find_map(|l| l.strip_prefix(&format!("{prefix}{name} ")))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            s.memory_working_set = s.memory_usage.saturating_sub(field("inactive_file"));
            s.memory_rss = if v1 { field("rss") } else { field("anon") };
            s.page_faults = field("pgfault");
            s.major_page_faults = field("pgmajfault");
        }
        if s.memory_limit == 0 || s.memory_limit >= 1 << 60 {
            s.memory_limit = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find_map(|l| l.strip_prefix("MemTotal:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                })
                .map(|kb| kb * 1024)
                .unwrap_or(0);
        }
        // cgroup_dir falls back to the unified hierarchy, which has no cpuacct.usage: on
        // cgroup v2 the usage is cpu.stat's.
        let cpuacct = cgroup_dir(pid, "cpuacct").map(|d| d.join("cpuacct.usage")).filter(|p| p.exists());
        if let Some(usage) = cpuacct {
            s.cpu_nanos = read_u64(&usage).unwrap_or(0);
        } else if let Some(d) = cgroup_dir(pid, "cpu") {
            let text = std::fs::read_to_string(d.join("cpu.stat")).unwrap_or_default();
            s.cpu_nanos = text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
                * 1000;
        }
        if let Some(d) = cgroup_dir(pid, "pids") {
            s.pids = read_u64(&d.join("pids.current")).unwrap_or(0);
        }
        let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
        for l in dev.lines().skip(2) {
            let Some((name, rest)) = l.split_once(':') else { continue };
            if name.trim() == "lo" {
                continue;
            }
            let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if f.len() >= 9 {
                s.net_rx += f[0];
                s.net_tx += f[8];
            }
        }
        Ok(s)
    }

    /// A container's writable layer: bytes and inodes it holds (overlay's upper directory,
    /// the whole root filesystem of a copy snapshot), and the store directory it lives in.
    pub fn writable_layer(&self, id: &str) -> (PathBuf, u64, u64) {
        let base = self.store.snapshots.path(id);
        let upper = base.join("upper");
        let dir = if upper.is_dir() { upper } else { base.join("rootfs") };
        let (bytes, inodes) = tree_usage(&dir);
        (self.store.root.join("snapshots"), bytes, inodes)
    }

    /// `info`: the runtimes, storage, cgroups, kernel and the features detected.
    pub fn info(&self) -> Result<Value> {
        let mut runtimes = serde_json::Map::new();
        for name in runtime::handler_names(&self.config) {
            let v = match self.runtime(Some(&name)) {
                Ok(rt) => {
                    let f = rt.features(&self.run_root.join("runtimes"));
                    json!({"path": rt.path, "version": f.version, "seccomp": f.seccomp, "exec": f.exec, "hideCgroup2": rt.hide_cgroup2})
                }
                Err(e) => json!({"error": e.to_string()}),
            };
            runtimes.insert(name, v);
        }
        let uname = {
            let mut u: libc::utsname = unsafe { std::mem::zeroed() };
            // SAFETY: valid out-pointer.
            unsafe { libc::uname(&mut u) };
            let s = |a: &[libc::c_char]| unsafe { std::ffi::CStr::from_ptr(a.as_ptr()) }.to_string_lossy().into_owned();
            (s(&u.release), s(&u.machine))
        };
        let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        let has_fs = |n: &str| filesystems.lines().any(|l| l.split_whitespace().last() == Some(n));
        let containers = self.list()?;
        let running = containers.iter().filter(|c| c.running()).count();
        Ok(json!({
            "Root": self.root,
            "RunRoot": self.run_root,
            "DefaultRuntime": self.config.default_runtime.clone().unwrap_or_else(|| "berth-oci".into()),
            "Runtimes": runtimes,
            "StorageDriver": self.store.config.driver().name(),
            "CgroupVersion": runtime::cgroup_version(),
            "CgroupParent": self.config.cgroup_parent(),
            "Kernel": uname.0,
            "Architecture": uname.1,
            "KernelFeatures": {
                "overlay": has_fs("overlay"),
                "seccomp": std::fs::read_to_string("/proc/self/status").map(|s| s.contains("Seccomp:")).unwrap_or(false),
                "cgroup2": has_fs("cgroup2"),
                "userNamespaces": std::path::Path::new("/proc/self/ns/user").exists(),
                "pidfd": pidfd_supported(),
            },
            "CniPluginDirs": self.config.cni_dirs(),
            "DefaultNetwork": self.config.default_network(),
            "Containers": containers.len(),
            "ContainersRunning": running,
            "Images": self.store.list()?.len(),
            "Volumes": self.volume_list()?.len(),
            "Networks": self.network_list()?.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
        }))
    }
}
