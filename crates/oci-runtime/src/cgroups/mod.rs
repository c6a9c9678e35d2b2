//! Control groups: the host's layout (v1, v2 or hybrid), a container's cgroup in every
//! hierarchy, applying linux.resources, freezing, listing and killing its processes, stats.
//!
//! The layout is read from /proc/self/mountinfo and /proc/self/cgroup, so a v1 hierarchy mounted
//! somewhere unusual, combined controllers ("cpu,cpuacct"), named hierarchies (name=systemd)
//! and a cgroup2 mount beside v1 controllers (hybrid) are all handled the same way.

mod devices;
pub mod stats;
mod v1;
mod v2;

use std::io::{ErrorKind as IoErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

pub use devices::{default_device_rules, DeviceRule};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 controllers plus a cgroup2 mount (usually /sys/fs/cgroup/unified).
    Hybrid,
    /// Pure cgroup v2.
    Unified,
}

/// One mounted v1 hierarchy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub mountpoint: PathBuf,
    /// Controllers of this hierarchy ("cpu", "cpuacct", "name=systemd").
    pub controllers: Vec<String>,
    /// The cgroup path the mount's root corresponds to (not "/" inside nested containers).
    pub mount_root: String,
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub mode: Mode,
    pub v1: Vec<V1Hierarchy>,
    pub unified: Option<(PathBuf, String)>,
}

fn unescape_mountinfo(s: &str) -> String {
    String::from_utf8_lossy(&berth_sys::proc::unescape_mountinfo(s)).into_owned()
}

impl Layout {
    /// Reads the cgroup mounts of this mount namespace.
    pub fn detect() -> Result<Layout> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ctx("reading /proc/self/mountinfo")?;
        Ok(Layout::parse(&mountinfo))
    }

    pub fn parse(mountinfo: &str) -> Layout {
        let mut v1: Vec<V1Hierarchy> = Vec::new();
        let mut unified = None;
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else { continue };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 5 || post.len() < 3 {
                continue;
            }
            let root = unescape_mountinfo(pre[3]);
            let mountpoint = PathBuf::from(unescape_mountinfo(pre[4]));
            match post[0] {
                "cgroup2" if unified.is_none() => unified = Some((mountpoint, root)),
                "cgroup" => {
                    let known = [
                        "cpu",
                        "cpuacct",
                        "cpuset",
                        "memory",
                        "devices",
                        "freezer",
                        "net_cls",
                        "net_prio",
                        "blkio",
                        "perf_event",
                        "hugetlb",
                        "pids",
                        "rdma",
                        "misc",
                    ];
                    let controllers: Vec<String> = post[2]
                        .split(',')
                        .filter(|o| known.contains(o) || o.starts_with("name="))
                        .map(str::to_string)
                        .collect();
                    // The same hierarchy may be mounted twice (bind mounts): keep the first.
                    if !controllers.is_empty() && !v1.iter().any(|h| h.controllers == controllers) {
                        v1.push(V1Hierarchy { mountpoint, controllers, mount_root: root });
                    }
                }
                _ => {}
            }
        }
        let mode = match (v1.is_empty(), unified.is_some()) {
            (true, _) => Mode::Unified,
            (false, true) => Mode::Hybrid,
            (false, false) => Mode::Legacy,
        };
        Layout { mode, v1, unified }
    }

    pub fn has_v1_controller(&self, name: &str) -> bool {
        self.v1.iter().any(|h| h.controllers.iter().any(|c| c == name))
    }
}

/// Where a process sits in each hierarchy, from /proc/<pid>/cgroup.
fn process_cgroups(pid: Option<i32>) -> Result<Vec<(String, String)>> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/cgroup"),
        None => "/proc/self/cgroup".to_string(),
    };
    let text = std::fs::read_to_string(&path).ctx(&path)?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?.to_string();
            let path = parts.next()?.to_string();
            Some((controllers, path))
        })
        .collect())
}

/// A container's cgroup: its directory in every hierarchy this host has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cgroup {
    pub mode: Mode,
    /// The container's directory in each v1 hierarchy, with that hierarchy's controllers.
    #[serde(default)]
    pub v1: Vec<(Vec<String>, PathBuf)>,
    /// The container's directory in the cgroup2 hierarchy (pure v2, or hybrid's unified mount).
    #[serde(default)]
    pub unified: Option<PathBuf>,
    /// Directories this runtime created (deepest last), removed again on destroy.
    #[serde(default)]
    pub created: Vec<PathBuf>,
    /// No cgroup of its own (rootless, without a delegated cgroup): these are the caller's
    /// cgroups, never written to, signalled or removed.
    #[serde(default)]
    pub shared: bool,
    /// Real-time runtime (v1 cpu.rt_runtime_us, µs) given to ancestors so that the container's
    /// group could have some, taken back by destroy.
    #[serde(default)]
    pub rt_given: Vec<(PathBuf, i64)>,
}

fn no_cgroup(what: &str) -> Error {
    Error::unsupported(format!(
        "{what} needs a cgroup of the container's own, and this rootless container has none (give its user a delegated cgroup)"
    ))
}

/// The cgroups path runc uses when config.json gives none: the id, relative to the runtime's
/// own cgroup.
pub fn default_cgroups_path(id: &str) -> PathBuf {
    PathBuf::from(id)
}

fn join_cgroup(mountpoint: &Path, mount_root: &str, cgroup: &str) -> PathBuf {
    let rel = cgroup.strip_prefix(mount_root).unwrap_or(cgroup);
    let mut p = mountpoint.to_path_buf();
    for part in rel.split('/').filter(|s| !s.is_empty()) {
        p.push(part);
    }
    p
}

fn check_cgroups_path(path: &Path) -> Result<()> {
    for c in path.components() {
        if matches!(c, std::path::Component::ParentDir) {
            return Err(Error::invalid(format!("linux.cgroupsPath: '{}' contains '..'", path.display())));
        }
    }
    Ok(())
}

impl Cgroup {
    /// Computes the container's directories for `cgroups_path` (absolute: from each hierarchy's
    /// root; relative: below this process's own cgroup, as runc does).
    pub fn plan(layout: &Layout, cgroups_path: &Path) -> Result<Cgroup> {
        check_cgroups_path(cgroups_path)?;
        let own = if cgroups_path.is_absolute() { Vec::new() } else { process_cgroups(None)? };
        let base_for = |matches: &dyn Fn(&str) -> bool| -> String {
            own.iter().find(|(c, _)| matches(c)).map(|(_, p)| p.clone()).unwrap_or_else(|| "/".to_string())
        };
        let target = |base: String| -> String {
            let joined = Path::new(&base).join(cgroups_path);
            joined.to_string_lossy().into_owned()
        };
        let mut v1 = Vec::new();
        for h in &layout.v1 {
            let base = base_for(&|c: &str| {
                let set: Vec<&str> = c.split(',').collect();
                h.controllers.iter().all(|hc| set.contains(&hc.as_str()))
            });
            v1.push((h.controllers.clone(), join_cgroup(&h.mountpoint, &h.mount_root, &target(base))));
        }
        // On pure v2 a relative path is taken from the parent of our own cgroup, as runc does:
        // our own cgroup may hold processes (a service's), and cannot also have children with
        // controllers enabled.
        let unified_base = match (layout.mode, cgroups_path.is_absolute()) {
            (Mode::Unified, false) => {
                let own = base_for(&|c: &str| c.is_empty());
                Path::new(&own).parent().map_or_else(|| "/".to_string(), |p| p.to_string_lossy().into_owned())
            }
            _ => base_for(&|c: &str| c.is_empty()),
        };
        let unified = layout.unified.as_ref().map(|(mp, root)| join_cgroup(mp, root, &target(unified_base)));
        Ok(Cgroup { mode: layout.mode, v1, unified, created: Vec::new(), shared: false, rt_given: Vec::new() })
    }

    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1.iter().find(|(c, _)| c.iter().any(|x| x == controller)).map(|(_, p)| p.as_path())
    }

    fn all_dirs(&self) -> impl Iterator<Item = &Path> {
        self.v1.iter().map(|(_, p)| p.as_path()).chain(self.unified.as_deref())
    }

    /// The directory whose cgroup.procs lists the container's processes.
    pub fn procs_dir(&self) -> &Path {
        match self.mode {
            Mode::Unified => self.unified.as_deref().expect("unified mode has a cgroup2 directory"),
            _ => ["freezer", "pids", "memory", "cpu", "devices"]
                .iter()
                .find_map(|c| self.v1_dir(c))
                .or_else(|| self.v1.first().map(|(_, p)| p.as_path()))
                .expect("a v1 layout has a hierarchy"),
        }
    }

    /// Creates the directories (recording which were new) and prepares them for processes.
    pub fn create(&mut self) -> Result<()> {
        let cpuset = self.v1_dir("cpuset").map(Path::to_path_buf);
        let dirs: Vec<PathBuf> = self.all_dirs().map(Path::to_path_buf).collect();
        for dir in &dirs {
            // Another container's delete removes the parents it created once they are empty:
            // one may vanish between our check and our mkdir below it. Then walk again.
            let mut attempts = 0;
            while !self.create_missing(dir, cpuset.as_deref(), attempts == 20)? {
                attempts += 1;
            }
        }
        if let Some(dir) = &self.unified {
            v2::enable_controllers(dir)?;
        }
        Ok(())
    }

    /// Creates `dir` and its missing parents. False when a parent vanished under us (and
    /// `last_attempt` is false): the caller walks again.
    fn create_missing(&mut self, dir: &Path, cpuset: Option<&Path>, last_attempt: bool) -> Result<bool> {
        let mut missing = Vec::new();
        let mut cur = Some(dir);
        while let Some(c) = cur.filter(|c| !c.exists()) {
            missing.push(c.to_path_buf());
            cur = c.parent();
        }
        for new in missing.into_iter().rev() {
            match std::fs::create_dir(&new) {
                Ok(()) => self.created.push(new.clone()),
                Err(e) if e.kind() == IoErrorKind::AlreadyExists => continue,
                Err(e) if e.kind() == IoErrorKind::NotFound && !last_attempt => return Ok(false),
                Err(e) => return Err(Error::from_io(e).context(format!("creating cgroup {}", new.display()))),
            }
            // A new v1 cpuset starts with no CPUs and no memory nodes: no process could
            // join it until they are copied from the parent.
            if Some(dir) == cpuset {
                match v1::init_cpuset(&new) {
                    Err(_) if !new.exists() && !last_attempt => return Ok(false),
                    result => result?,
                }
            }
        }
        Ok(true)
    }

    /// The cgroup2 directory, opened for clone3's CLONE_INTO_CGROUP: the child starts life in
    /// it, with no write to cgroup.procs.
    pub fn open_unified(&self) -> Result<Option<std::os::fd::OwnedFd>> {
        if self.shared {
            return Ok(None);
        }
        self.unified
            .as_deref()
            .map(|dir| {
                berth_sys::file::open(dir, libc::O_PATH | libc::O_DIRECTORY)
                    .with_ctx(|| format!("opening cgroup {}", dir.display()))
            })
            .transpose()
    }

    /// Moves the calling (single-threaded) process into the container's cgroup in every v1
    /// hierarchy, and into the cgroup2 one unless clone3 already put it there.
    ///
    /// A thread moving itself through v1's `tasks` file ("0") is the one migration the kernel
    /// does without taking the global threadgroup lock, whose first writer waits for an RCU
    /// grace period (10-20 ms here): writing the pid to cgroup.procs from outside costs that.
    pub fn join_self(&self, unified_joined: bool) -> Result<()> {
        if self.shared {
            return Ok(());
        }
        for (_, dir) in &self.v1 {
            write_file(dir, "tasks", "0").with_ctx(|| format!("joining cgroup {}", dir.display()))?;
        }
        if let (Some(dir), false) = (&self.unified, unified_joined) {
            write_file(dir, "cgroup.procs", "0").with_ctx(|| format!("joining cgroup {}", dir.display()))?;
        }
        Ok(())
    }

    /// Applies linux.resources. `devices_extra` are the rules for devices the runtime itself
    /// creates in the container (/dev/null, ...), added after the spec's own rules.
    pub fn apply(&mut self, resources: &LinuxResources, devices_extra: &[DeviceRule], updating: bool) -> Result<()> {
        if self.shared {
            return Err(no_cgroup("linux.resources"));
        }
        match self.mode {
            Mode::Unified => v2::apply(&*self, resources, devices_extra, updating),
            Mode::Legacy | Mode::Hybrid => v1::apply(self, resources, devices_extra, updating),
        }
        .map_err(|e| e.context("linux.resources"))
    }

    /// Real-time CPU time for a container whose process asks for a real-time policy, where the
    /// kernel budgets it per group (v1 cpu.rt_runtime_us) and the container's group has none
    /// yet: from its parents (see v1::ensure_rt_runtime).
    pub fn ensure_realtime(&mut self) -> Result<()> {
        if self.shared {
            return Ok(());
        }
        let Some(dir) = self.v1_dir("cpu").filter(|d| d.join("cpu.rt_runtime_us").exists()).map(Path::to_path_buf)
        else {
            return Ok(());
        };
        if read_file(&dir, "cpu.rt_runtime_us")?.trim() == "0" {
            let given = v1::ensure_rt_runtime(&dir, None)?;
            self.rt_given.extend(given);
        }
        Ok(())
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        if self.shared {
            return Err(no_cgroup("listing the container's processes"));
        }
        let dir = self.procs_dir();
        let text = match std::fs::read_to_string(dir.join("cgroup.procs")) {
            Ok(t) => t,
            Err(e) if e.kind() == IoErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::from_io(e).context(format!("reading {}/cgroup.procs", dir.display()))),
        };
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    pub fn exists(&self) -> bool {
        !self.shared && self.procs_dir().exists()
    }

    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        if self.shared {
            return Err(no_cgroup("pausing or resuming"));
        }
        match self.mode {
            Mode::Unified => v2::set_frozen(self.unified.as_deref().unwrap(), frozen),
            _ => {
                let dir = self.v1_dir("freezer").ok_or_else(|| {
                    Error::unsupported("the freezer cgroup controller is not mounted: cannot pause or resume")
                })?;
                v1::set_frozen(dir, frozen)
            }
        }
    }

    pub fn is_frozen(&self) -> Result<bool> {
        if self.shared {
            return Ok(false);
        }
        match self.mode {
            Mode::Unified => {
                let dir = self.unified.as_deref().unwrap();
                Ok(read_file(dir, "cgroup.freeze").map(|v| v.trim() == "1").unwrap_or(false))
            }
            _ => match self.v1_dir("freezer") {
                Some(dir) => Ok(read_file(dir, "freezer.state").map(|v| v.trim() != "THAWED").unwrap_or(false)),
                None => Ok(false),
            },
        }
    }

    /// Sends `signal` to every process in the cgroup. Freezes first so none can fork away,
    /// thaws after (a frozen process only dies once thawed).
    pub fn signal_all(&self, signal: i32) -> Result<()> {
        if self.shared {
            return Err(no_cgroup("signalling all the container's processes"));
        }
        let can_freeze = self.mode == Mode::Unified || self.v1_dir("freezer").is_some();
        let was_frozen = self.is_frozen()?;
        if can_freeze && !was_frozen {
            self.freeze()?;
        }
        let result = (|| {
            for pid in self.pids()? {
                match berth_sys::process::kill(pid, signal) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(Error::from_io(e).context(format!("signalling process {pid}"))),
                }
            }
            Ok(())
        })();
        if can_freeze && (!was_frozen || signal == libc::SIGKILL) {
            self.thaw()?;
        }
        result
    }

    /// Kills every process and waits until the cgroup is empty (up to `timeout`).
    pub fn kill_all_and_wait(&self, timeout: Duration) -> Result<()> {
        if self.shared {
            // Nothing to sweep: the init is killed by itself, its pid namespace with it.
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            self.signal_all(libc::SIGKILL)?;
            if Instant::now() > deadline {
                return Err(Error::new(
                    crate::error::ErrorKind::System,
                    format!("processes {pids:?} of cgroup {} did not die", self.procs_dir().display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Removes the container's directories (and parents this runtime created, if empty).
    pub fn destroy(&self) -> Result<()> {
        if self.shared {
            return Ok(());
        }
        let mut dirs: Vec<&Path> = self.all_dirs().collect();
        // Created parents go after the leaves, deepest first.
        let mut parents: Vec<&Path> = self.created.iter().map(|p| p.as_path()).filter(|p| !dirs.contains(p)).collect();
        parents.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        // A removed group's real-time runtime stays taken until the kernel frees it, a while
        // later: handed back first, so the next container can have it right away.
        if let Some(cpu) = self.v1_dir("cpu").filter(|d| d.join("cpu.rt_runtime_us").exists()) {
            let _ = write_file(cpu, "cpu.rt_runtime_us", "0");
        }
        for dir in dirs.drain(..) {
            remove_cgroup_dir(dir)?;
        }
        v1::return_rt_runtime(&self.rt_given);
        for dir in parents {
            // A parent still holding another container's cgroup stays.
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }
}

fn remove_cgroup_dir(dir: &Path) -> Result<()> {
    // rmdir fails with EBUSY while the last processes are still being torn down.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == IoErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(Error::from_io(e).context(format!("removing cgroup {}", dir.display()))),
        }
    }
}

pub(crate) fn write_file(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).map_err(|e| {
        if e.kind() == IoErrorKind::NotFound {
            Error::unsupported(format!("{} does not exist (controller not available on this host?)", path.display()))
        } else {
            Error::from_io(e).context(path.display().to_string())
        }
    })?;
    f.write_all(value.as_bytes()).with_ctx(|| format!("writing '{value}' to {}", path.display()))
}

pub(crate) fn read_file(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).with_ctx(|| path.display().to_string())
}

/// What linux.resources asks that is accepted but not applied here, one warning each for the
/// log (`at` prefixes the field: "linux.resources" or "resources").
pub fn resource_warnings(r: &LinuxResources, cgroup: &Cgroup, at: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    let Some(m) = r.memory() else { return warnings };
    #[allow(deprecated)]
    if m.kernel().is_some() {
        warnings.push(format!(
            "{at}.memory.kernel: Linux has no kernel memory limit any more (the runtime-spec deprecates the field); ignored"
        ));
    }
    if m.kernel_tcp().is_some() && !cgroup.kernel_tcp_limit_available() {
        let why = if cgroup.mode == Mode::Unified {
            "cgroup v2 has no separate TCP memory limit"
        } else {
            "this kernel's memory cgroup has no memory.kmem.tcp.limit_in_bytes"
        };
        warnings.push(format!("{at}.memory.kernelTCP: {why} (the runtime-spec deprecates the field); ignored"));
    }
    warnings
}

impl Cgroup {
    /// The v1 memory controller's TCP buffer limit exists (v2 has none).
    pub(crate) fn kernel_tcp_limit_available(&self) -> bool {
        self.mode != Mode::Unified
            && self.v1_dir("memory").is_some_and(|d| d.join("memory.kmem.tcp.limit_in_bytes").exists())
    }
}

/// Checks that needs no host access: values in range.
pub fn validate_resources(r: &LinuxResources) -> Result<()> {
    if let Some(m) = r.memory() {
        if let Some(s) = m.swappiness() {
            if s > 100 {
                return Err(Error::invalid(format!("memory.swappiness: {s} is above 100")));
            }
        }
        for (name, v) in [("limit", m.limit()), ("reservation", m.reservation()), ("swap", m.swap())] {
            if let Some(v) = v {
                if v < -1 {
                    return Err(Error::invalid(format!(
                        "memory.{name}: {v} is negative (only -1, unlimited, is allowed)"
                    )));
                }
            }
        }
        if let (Some(limit), Some(swap)) = (m.limit(), m.swap()) {
            if limit > 0 && swap > 0 && swap < limit {
                return Err(Error::invalid(format!(
                    "memory.swap: {swap} is below memory.limit {limit} (swap is the memory+swap total)"
                )));
            }
        }
    }
    if let Some(cpu) = r.cpu() {
        if let Some(p) = cpu.period() {
            if p != 0 && !(1000..=1_000_000).contains(&p) {
                return Err(Error::invalid(format!("cpu.period: {p} is outside 1000..1000000 microseconds")));
            }
        }
    }
    if let Some(b) = r.block_io() {
        if let Some(w) = b.weight() {
            if w != 0 && !(10..=1000).contains(&w) {
                return Err(Error::invalid(format!("blockIO.weight: {w} is outside 10..1000")));
            }
        }
    }
    for (i, d) in r.devices().iter().flatten().enumerate() {
        DeviceRule::from_spec(d).map_err(|e| e.context(format!("devices[{i}]")))?;
    }
    if let Some(unified) = r.unified() {
        for key in unified.keys() {
            if key.contains('/') || key.starts_with('.') || !key.contains('.') {
                return Err(Error::invalid(format!("unified.{key}: not a cgroup file name")));
            }
            if matches!(
                key.as_str(),
                "cgroup.procs"
                    | "cgroup.threads"
                    | "cgroup.subtree_control"
                    | "cgroup.kill"
                    | "cgroup.freeze"
                    | "cgroup.type"
            ) {
                return Err(Error::invalid(format!("unified.{key}: the runtime manages this file itself")));
            }
        }
    }
    Ok(())
}

/// Hugepage size names the kernel supports ("2MB", "1GB"), from /sys/kernel/mm/hugepages.
pub(crate) fn hugepage_sizes() -> Vec<String> {
    let mut sizes = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/hugepages") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(kb) =
                name.strip_prefix("hugepages-").and_then(|s| s.strip_suffix("kB")).and_then(|s| s.parse::<u64>().ok())
            {
                sizes.push(page_size_name(kb * 1024));
            }
        }
    }
    sizes.sort();
    sizes
}

fn page_size_name(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes;
    let mut unit = 0;
    while v >= 1024 && v.is_multiple_of(1024) && unit < UNITS.len() - 1 {
        v /= 1024;
        unit += 1;
    }
    format!("{v}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn detects_hybrid_layout_with_combined_and_named_hierarchies() {
        let l = Layout::parse(HYBRID);
        assert_eq!(l.mode, Mode::Hybrid);
        assert_eq!(l.v1.len(), 3);
        assert_eq!(l.v1[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(l.v1[2].controllers, vec!["name=systemd"]);
        assert_eq!(l.unified.as_ref().unwrap().0, PathBuf::from("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn detects_pure_v2() {
        let l = Layout::parse("30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
        assert_eq!(l.mode, Mode::Unified);
    }

    #[test]
    fn absolute_paths_start_at_each_hierarchy_root() {
        let l = Layout::parse(HYBRID);
        let cg = Cgroup::plan(&l, Path::new("/berth/c1")).unwrap();
        assert_eq!(cg.v1_dir("cpuacct").unwrap(), Path::new("/sys/fs/cgroup/cpu,cpuacct/berth/c1"));
        assert_eq!(cg.unified.as_deref().unwrap(), Path::new("/sys/fs/cgroup/unified/berth/c1"));
    }

    #[test]
    fn nested_mount_roots_are_stripped() {
        let l = Layout::parse("30 23 0:26 /outer /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(
            join_cgroup(&l.unified.as_ref().unwrap().0, "/outer", "/outer/inner/x"),
            PathBuf::from("/sys/fs/cgroup/inner/x")
        );
    }

    #[test]
    fn dotdot_in_cgroups_path_is_refused() {
        let l = Layout::parse(HYBRID);
        assert!(Cgroup::plan(&l, Path::new("/a/../../etc")).is_err());
    }

    #[test]
    fn page_size_names() {
        assert_eq!(page_size_name(2 * 1024 * 1024), "2MB");
        assert_eq!(page_size_name(1024 * 1024 * 1024), "1GB");
        assert_eq!(page_size_name(64 * 1024), "64KB");
    }
}
