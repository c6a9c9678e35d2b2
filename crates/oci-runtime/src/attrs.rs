//! Process attributes beyond user and capabilities: I/O priority, scheduler, CPU affinity
//! (process.ioPriority, process.scheduler, process.execCPUAffinity), the personality
//! (linux.personality), and the LSM labels (process.apparmorProfile, process.selinuxLabel).

use std::path::Path;

use oci_spec::runtime::{IOPriorityClass, LinuxPersonalityDomain, LinuxSchedulerFlag, LinuxSchedulerPolicy, Process};

use crate::error::{Error, Result};
use crate::procfs::Proc;

#[derive(Debug, Clone, Default)]
pub struct ProcessAttrs {
    /// ioprio_set value.
    pub io_priority: Option<i32>,
    pub scheduler: Option<SchedAttr>,
    pub cpus_initial: Option<Vec<usize>>,
    pub cpus_final: Option<Vec<usize>>,
    pub apparmor: Option<String>,
    pub selinux: Option<String>,
}

/// struct sched_attr (SCHED_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

impl SchedAttr {
    /// SCHED_FIFO or SCHED_RR: real-time policies, which need real-time CPU time in the
    /// process's cgroup where the kernel budgets it per group.
    pub fn is_realtime(&self) -> bool {
        matches!(self.policy, 1 | 2)
    }

    pub fn policy_name(&self) -> &'static str {
        ["SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_ISO", "SCHED_IDLE", "SCHED_DEADLINE"]
            .get(self.policy as usize)
            .copied()
            .unwrap_or("?")
    }
}

/// "0-3,7" to CPU numbers.
pub fn parse_cpu_list(list: &str, at: &str) -> Result<Vec<usize>> {
    let bad = || Error::invalid(format!("{at}: '{list}' is not a CPU list (like 0-3,7)"));
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b || b >= libc::CPU_SETSIZE as usize {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => {
                let c: usize = part.parse().map_err(|_| bad())?;
                if c >= libc::CPU_SETSIZE as usize {
                    return Err(bad());
                }
                cpus.push(c);
            }
        }
    }
    if cpus.is_empty() {
        return Err(bad());
    }
    Ok(cpus)
}

pub fn apparmor_enabled() -> bool {
    Path::new("/sys/kernel/security/apparmor").exists()
        && std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.starts_with('Y'))
}

pub fn selinux_enabled() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| m.lines().any(|l| l.contains(" - selinuxfs ")))
}

impl ProcessAttrs {
    pub fn from_spec(p: &Process, at: &str) -> Result<ProcessAttrs> {
        let mut a = ProcessAttrs::default();
        if let Some(io) = p.io_priority() {
            let class = match io.class() {
                IOPriorityClass::IoprioClassRt => 1,
                IOPriorityClass::IoprioClassBe => 2,
                IOPriorityClass::IoprioClassIdle => 3,
            };
            if !(0..=7).contains(&io.priority()) {
                return Err(Error::invalid(format!("{at}.ioPriority.priority: {} is outside 0..7", io.priority())));
            }
            a.io_priority = Some((class << 13) | io.priority() as i32);
        }
        if let Some(s) = p.scheduler() {
            use LinuxSchedulerPolicy::*;
            let policy = match s.policy() {
                SchedOther => 0,
                SchedFifo => 1,
                SchedRr => 2,
                SchedBatch => 3,
                SchedIso => {
                    return Err(Error::unsupported(format!(
                        "{at}.scheduler.policy: SCHED_ISO is not implemented by Linux"
                    )))
                }
                SchedIdle => 5,
                SchedDeadline => 6,
            };
            let mut flags = 0u64;
            for f in s.flags().iter().flatten() {
                use LinuxSchedulerFlag::*;
                flags |= match f {
                    SchedResetOnFork => 0x01,
                    SchedFlagReclaim => 0x02,
                    SchedFlagDLOverrun => 0x04,
                    SchedFlagKeepPolicy => 0x08,
                    SchedFlagKeepParams => 0x10,
                    SchedFlagUtilClampMin => 0x20,
                    SchedFlagUtilClampMax => 0x40,
                };
            }
            let nice = s.nice().unwrap_or(0);
            if !(-20..=19).contains(&nice) {
                return Err(Error::invalid(format!("{at}.scheduler.nice: {nice} is outside -20..19")));
            }
            a.scheduler = Some(SchedAttr {
                size: std::mem::size_of::<SchedAttr>() as u32,
                policy,
                flags,
                nice,
                priority: s.priority().unwrap_or(0).max(0) as u32,
                runtime: s.runtime().unwrap_or(0),
                deadline: s.deadline().unwrap_or(0),
                period: s.period().unwrap_or(0),
                ..Default::default()
            });
        }
        if let Some(aff) = p.exec_cpu_affinity() {
            a.cpus_initial = aff
                .initial()
                .as_deref()
                .map(|l| parse_cpu_list(l, &format!("{at}.execCPUAffinity.initial")))
                .transpose()?;
            a.cpus_final = aff
                .cpu_affinity_final()
                .as_deref()
                .map(|l| parse_cpu_list(l, &format!("{at}.execCPUAffinity.final")))
                .transpose()?;
        }
        if let Some(profile) = p.apparmor_profile().as_deref().filter(|p| !p.is_empty()) {
            if !apparmor_enabled() {
                return Err(Error::unsupported(format!(
                    "{at}.apparmorProfile: '{profile}' given, but AppArmor is not enabled on this host"
                )));
            }
            a.apparmor = Some(profile.to_string());
        }
        if let Some(label) = p.selinux_label().as_deref().filter(|l| !l.is_empty()) {
            if !selinux_enabled() {
                return Err(Error::unsupported(format!(
                    "{at}.selinuxLabel: '{label}' given, but SELinux is not enabled on this host"
                )));
            }
            a.selinux = Some(label.to_string());
        }
        Ok(a)
    }

    /// I/O priority and scheduler, set while the process still has the privileges they may
    /// need (real-time classes need CAP_SYS_NICE or CAP_SYS_ADMIN).
    pub fn apply_early(&self) -> Result<()> {
        if let Some(prio) = self.io_priority {
            const IOPRIO_WHO_PROCESS: libc::c_long = 1;
            // SAFETY: plain syscall on this process.
            if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, prio) } < 0 {
                return Err(Error::last_os("process.ioPriority: ioprio_set"));
            }
        }
        if let Some(attr) = &self.scheduler {
            // SAFETY: sched_attr laid out as the kernel's, for this process.
            if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, attr as *const SchedAttr, 0) } < 0 {
                return Err(Error::last_os("process.scheduler: sched_setattr"));
            }
        }
        Ok(())
    }

    /// The LSM label files for the program about to be executed, opened through the verified
    /// procfs handle (`pid` is this process as that procfs sees it) before the seccomp filter
    /// is loaded; [`Labels::write`] writes them at the last moment.
    pub fn open_labels(&self, proc: &Proc, pid: i32) -> Result<Labels> {
        let mut files = Vec::new();
        if let Some(profile) = &self.apparmor {
            let fd = proc
                .open_write(format!("{pid}/attr/apparmor/exec"))
                .or_else(|_| proc.open_write(format!("{pid}/attr/exec")))
                .map_err(|e| e.context("process.apparmorProfile"))?;
            files.push((fd, format!("exec {profile}"), "process.apparmorProfile"));
        }
        if let Some(label) = &self.selinux {
            let fd = proc.open_write(format!("{pid}/attr/exec")).map_err(|e| e.context("process.selinuxLabel"))?;
            files.push((fd, label.clone(), "process.selinuxLabel"));
        }
        Ok(Labels(files))
    }
}

/// LSM label files opened for writing, and what to write (see [`ProcessAttrs::open_labels`]).
pub struct Labels(Vec<(std::os::fd::OwnedFd, String, &'static str)>);

impl Labels {
    pub fn write(self) -> Result<()> {
        for (fd, data, field) in self.0 {
            berth_sys::file::write_all(fd, data.as_bytes()).map_err(|e| Error::from_io(e).context(field))?;
        }
        Ok(())
    }
}

/// linux.memoryPolicy as set_mempolicy(2) takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPolicy {
    /// The mode with its flags (MPOL_F_STATIC_NODES, ...) ORed in.
    pub mode: i32,
    /// The node mask, 64 nodes a word.
    pub nodes: Vec<u64>,
}

/// Node numbers a policy may name (the kernel's MAX_NUMNODES is at most 1024).
const MAX_NODES: usize = 1024;

/// linux.memoryPolicy to set_mempolicy's arguments. What the spec and the kernel rule out is
/// an error naming the field: a mode that takes nodes without them, one that takes none with
/// them, static and relative nodes together, a node list that is not one.
pub fn memory_policy(p: &oci_spec::runtime::LinuxMemoryPolicy) -> Result<MemoryPolicy> {
    use oci_spec::runtime::{MemoryPolicyFlagType as F, MemoryPolicyModeType as M};
    let at = "linux.memoryPolicy";
    let (mode, name) = match p.mode() {
        M::MpolDefault => (0, "MPOL_DEFAULT"),
        M::MpolPreferred => (1, "MPOL_PREFERRED"),
        M::MpolBind => (2, "MPOL_BIND"),
        M::MpolInterleave => (3, "MPOL_INTERLEAVE"),
        M::MpolLocal => (4, "MPOL_LOCAL"),
        M::MpolPreferredMany => (5, "MPOL_PREFERRED_MANY"),
        M::MpolWeightedInterleave => (6, "MPOL_WEIGHTED_INTERLEAVE"),
    };
    let list = p.nodes().as_deref().map(str::trim).filter(|n| !n.is_empty());
    let mut nodes = Vec::new();
    if let Some(list) = list {
        let parsed = parse_cpu_list(list, &format!("{at}.nodes"))
            .map_err(|_| Error::invalid(format!("{at}.nodes: '{list}' is not a list of NUMA nodes (like 0-3,7)")))?;
        nodes = vec![0u64; MAX_NODES / 64];
        for node in parsed {
            if node >= MAX_NODES {
                return Err(Error::invalid(format!("{at}.nodes: node {node} is beyond any NUMA node number")));
            }
            nodes[node / 64] |= 1 << (node % 64);
        }
    }
    match (mode, nodes.is_empty()) {
        // MPOL_DEFAULT and MPOL_LOCAL take no nodes; MPOL_PREFERRED without any means local.
        (0 | 4, false) => return Err(Error::invalid(format!("{at}.nodes: {name} takes no nodes"))),
        (2 | 3 | 5 | 6, true) => return Err(Error::invalid(format!("{at}.nodes: {name} needs nodes"))),
        _ => {}
    }
    let mut flags = 0;
    for f in p.flags().iter().flatten() {
        flags |= match f {
            F::MpolFStaticNodes => 1 << 15,
            F::MpolFRelativeNodes => 1 << 14,
            F::MpolFNumaBalancing => 1 << 13,
        };
    }
    if flags & (3 << 14) == 3 << 14 {
        return Err(Error::invalid(format!(
            "{at}.flags: MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude each other"
        )));
    }
    if flags & (1 << 13) != 0 && mode != 2 {
        return Err(Error::invalid(format!("{at}.flags: MPOL_F_NUMA_BALANCING goes with MPOL_BIND only, not {name}")));
    }
    if flags & (3 << 14) != 0 && nodes.is_empty() {
        return Err(Error::invalid(format!("{at}.flags: static or relative nodes need linux.memoryPolicy.nodes")));
    }
    Ok(MemoryPolicy { mode: mode | flags, nodes })
}

impl MemoryPolicy {
    /// set_mempolicy for the calling process (inherited by what it execs and forks).
    pub fn apply(&self) -> Result<()> {
        let (mask, maxnode) = if self.nodes.is_empty() {
            (std::ptr::null(), 0)
        } else {
            // maxnode counts one past the last node the mask holds.
            (self.nodes.as_ptr(), self.nodes.len() as libc::c_ulong * 64 + 1)
        };
        // SAFETY: a node mask of `maxnode - 1` bits that outlives the call.
        if unsafe { libc::syscall(libc::SYS_set_mempolicy, self.mode, mask, maxnode) } < 0 {
            let err = std::io::Error::last_os_error();
            let why = match err.raw_os_error() {
                Some(libc::ENOSYS) => " (this kernel has no NUMA support)",
                Some(libc::EINVAL) => " (are the nodes online here, is the mode known to this kernel?)",
                _ => "",
            };
            return Err(Error::from_io(err).context(format!("linux.memoryPolicy: set_mempolicy{why}")));
        }
        Ok(())
    }
}

pub fn set_affinity(cpus: &[usize], at: &str) -> Result<()> {
    // SAFETY: cpu_set_t manipulated through libc's macros.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(Error::last_os(format!("{at}: sched_setaffinity")));
        }
    }
    Ok(())
}

/// linux.personality to the personality(2) value.
pub fn personality(p: &oci_spec::runtime::LinuxPersonality) -> Result<u64> {
    if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(Error::unsupported(
            "linux.personality.flags: no personality flags are defined by the runtime-spec; none is supported",
        ));
    }
    Ok(match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    })
}

pub fn set_personality(persona: u64) -> Result<()> {
    // SAFETY: plain syscall.
    if unsafe { libc::personality(persona as libc::c_ulong) } < 0 {
        return Err(Error::last_os("linux.personality"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> Result<MemoryPolicy> {
        memory_policy(&serde_json::from_value(json).unwrap())
    }

    #[test]
    fn memory_policies() {
        let p = policy(serde_json::json!({"mode": "MPOL_BIND", "nodes": "0-1,65", "flags": ["MPOL_F_STATIC_NODES"]}))
            .unwrap();
        assert_eq!(p.mode, 2 | 1 << 15);
        assert_eq!(&p.nodes[..2], &[0b11, 0b10]);
        assert!(policy(serde_json::json!({"mode": "MPOL_LOCAL"})).unwrap().nodes.is_empty());
        for bad in [
            serde_json::json!({"mode": "MPOL_BIND"}),
            serde_json::json!({"mode": "MPOL_DEFAULT", "nodes": "0"}),
            serde_json::json!({"mode": "MPOL_INTERLEAVE", "nodes": "x"}),
            serde_json::json!({"mode": "MPOL_PREFERRED", "nodes": "10284838"}),
            serde_json::json!({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]}),
            serde_json::json!({"mode": "MPOL_PREFERRED", "nodes": "0", "flags": ["MPOL_F_NUMA_BALANCING"]}),
        ] {
            let err = policy(bad.clone()).unwrap_err().to_string();
            assert!(err.starts_with("linux.memoryPolicy"), "{bad}: {err}");
        }
    }
}
