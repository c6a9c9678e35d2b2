//! Linux capabilities of the container process: the five sets of process.capabilities.

use std::collections::HashSet;

use berth_sys::process;
use oci_spec::runtime::{Capability, LinuxCapabilities};

use crate::error::{Error, Result};

/// Capability names, indexed by the kernel's number.
pub const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The name of capability number `n`, if this runtime knows it.
pub fn name(n: u32) -> Option<&'static str> {
    NAMES.get(n as usize).copied()
}

/// The kernel's number for a capability.
pub fn number(cap: Capability) -> u32 {
    use Capability::*;
    match cap {
        Chown => 0,
        DacOverride => 1,
        DacReadSearch => 2,
        Fowner => 3,
        Fsetid => 4,
        Kill => 5,
        Setgid => 6,
        Setuid => 7,
        Setpcap => 8,
        LinuxImmutable => 9,
        NetBindService => 10,
        NetBroadcast => 11,
        NetAdmin => 12,
        NetRaw => 13,
        IpcLock => 14,
        IpcOwner => 15,
        SysModule => 16,
        SysRawio => 17,
        SysChroot => 18,
        SysPtrace => 19,
        SysPacct => 20,
        SysAdmin => 21,
        SysBoot => 22,
        SysNice => 23,
        SysResource => 24,
        SysTime => 25,
        SysTtyConfig => 26,
        Mknod => 27,
        Lease => 28,
        AuditWrite => 29,
        AuditControl => 30,
        Setfcap => 31,
        MacOverride => 32,
        MacAdmin => 33,
        Syslog => 34,
        WakeAlarm => 35,
        BlockSuspend => 36,
        AuditRead => 37,
        Perfmon => 38,
        Bpf => 39,
        CheckpointRestore => 40,
    }
}

/// The highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40)
}

fn mask(set: &Option<HashSet<Capability>>) -> u64 {
    set.iter().flatten().fold(0u64, |m, c| m | (1u64 << number(*c)))
}

/// The five sets as bit masks, checked against what the kernel supports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub inheritable: u64,
    pub permitted: u64,
    pub ambient: u64,
}

impl CapSets {
    pub fn from_spec(caps: Option<&LinuxCapabilities>, at: &str) -> Result<CapSets> {
        let Some(c) = caps else { return Ok(CapSets::default()) };
        let sets = CapSets {
            bounding: mask(c.bounding()),
            effective: mask(c.effective()),
            inheritable: mask(c.inheritable()),
            permitted: mask(c.permitted()),
            ambient: mask(c.ambient()),
        };
        let last = last_cap();
        for (name, set) in [
            ("bounding", c.bounding()),
            ("effective", c.effective()),
            ("inheritable", c.inheritable()),
            ("permitted", c.permitted()),
            ("ambient", c.ambient()),
        ] {
            for cap in set.iter().flatten() {
                if number(*cap) > last {
                    return Err(Error::unsupported(format!(
                        "{at}.capabilities.{name}: {cap} is not known to this kernel (its last capability is {last})"
                    )));
                }
            }
        }
        Ok(sets)
    }
}

impl CapSets {
    /// Ambient capabilities the kernel cannot raise: each must be permitted and inheritable.
    pub fn unraisable_ambient(&self) -> u64 {
        self.ambient & !(self.permitted & self.inheritable)
    }
}

/// Names of the capabilities in a mask, for messages.
pub fn names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|c| mask & (1 << c) != 0)
        .map(|c| name(c).map_or(format!("capability {c}"), str::to_string))
        .collect()
}

/// Drops every capability outside `bounding` from the bounding set. Needs CAP_SETPCAP, so it
/// runs while the process is still root in its namespace.
pub fn drop_bounding(bounding: u64) -> Result<()> {
    for cap in 0..=last_cap() {
        if bounding & (1 << cap) == 0 {
            process::prctl(libc::PR_CAPBSET_DROP, cap as u64)
                .map_err(|e| Error::from_io(e).context(format!("dropping capability {cap} from the bounding set")))?;
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// capset(2) with the effective, permitted and inheritable sets.
pub fn set_process_caps(sets: &CapSets) -> Result<()> {
    let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [
        CapData {
            effective: sets.effective as u32,
            permitted: sets.permitted as u32,
            inheritable: sets.inheritable as u32,
        },
        CapData {
            effective: (sets.effective >> 32) as u32,
            permitted: (sets.permitted >> 32) as u32,
            inheritable: (sets.inheritable >> 32) as u32,
        },
    ];
    // SAFETY: header and two data structs, as capset(2) v3 expects.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if r < 0 {
        return Err(Error::last_os("setting the process capabilities (capset)"));
    }
    Ok(())
}

/// Raises the ambient set (each capability must be permitted and inheritable).
pub fn set_ambient(ambient: u64) -> Result<()> {
    process::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as u64)
        .map_err(|e| Error::from_io(e).context("clearing ambient capabilities"))?;
    // The mask's bits only (no /proc read: this runs after a seccomp filter may be loaded).
    for cap in (0..64).filter(|c| ambient & (1u64 << c) != 0) {
        // SAFETY: plain prctl.
        let r = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap as libc::c_ulong, 0, 0) };
        if r < 0 {
            return Err(Error::last_os(format!(
                "raising ambient capability {cap} (an ambient capability must also be permitted and inheritable)"
            )));
        }
    }
    Ok(())
}
