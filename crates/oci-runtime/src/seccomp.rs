//! linux.seccomp: the filter is compiled with libseccomp by the runtime before the container's
//! process exists (so a bad profile fails `create` with the field named), and loaded by that
//! process as late as it can be: right before execve when no_new_privs is set, otherwise before
//! it gives up the capabilities loading a filter needs, as runc does.

use std::os::fd::{FromRawFd, OwnedFd};
use std::str::FromStr;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator};

use crate::error::{Error, ErrorKind, Result};

pub struct Filter {
    ctx: ScmpFilterContext,
    /// Some rule uses SCMP_ACT_NOTIFY: the listener gets the notification fd.
    pub notify: bool,
    /// Syscall names this libseccomp does not know (profiles list syscalls of every
    /// architecture and kernel version); skipped, as runc and crun do.
    pub unknown_syscalls: Vec<String>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter").field("notify", &self.notify).finish_non_exhaustive()
    }
}

/// Errno for SCMP_ACT_ERRNO without an errnoRet (runc's default).
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

fn to_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn action(a: LinuxSeccompAction, errno_ret: Option<u32>, at: &str) -> Result<ScmpAction> {
    use LinuxSeccompAction::*;
    Ok(match a {
        ScmpActKill | ScmpActKillThread => ScmpAction::KillThread,
        ScmpActKillProcess => ScmpAction::KillProcess,
        ScmpActTrap => ScmpAction::Trap,
        ScmpActErrno => {
            let errno = errno_ret.unwrap_or(DEFAULT_ERRNO);
            if errno > u16::MAX as u32 {
                return Err(Error::invalid(format!("{at}: errnoRet {errno} is out of range")));
            }
            ScmpAction::Errno(errno as i32)
        }
        ScmpActNotify => ScmpAction::Notify,
        ScmpActTrace => ScmpAction::Trace(errno_ret.unwrap_or(0).min(u16::MAX as u32) as u16),
        ScmpActLog => ScmpAction::Log,
        ScmpActAllow => ScmpAction::Allow,
    })
}

fn compare(op: LinuxSeccompOperator, index: usize, value: u64, value_two: Option<u64>) -> ScmpArgCompare {
    use LinuxSeccompOperator::*;
    let op = match op {
        ScmpCmpNe => ScmpCompareOp::NotEqual,
        ScmpCmpLt => ScmpCompareOp::Less,
        ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        ScmpCmpEq => ScmpCompareOp::Equal,
        ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        ScmpCmpGt => ScmpCompareOp::Greater,
        // OCI: value is the mask, valueTwo the value to compare with.
        ScmpCmpMaskedEq => {
            return ScmpArgCompare::new(index as u32, ScmpCompareOp::MaskedEqual(value), value_two.unwrap_or(0))
        }
    };
    ScmpArgCompare::new(index as u32, op, value)
}

fn scmp_err(e: libseccomp::error::SeccompError, what: String) -> Error {
    let errno = e.errno().map(|en| -(en as i32)).filter(|en| *en > 0);
    match errno {
        Some(errno) => Error::from_errno(errno, what),
        None => Error::new(ErrorKind::System, format!("{what}: {e}")),
    }
}

/// Compiles linux.seccomp. `at` names it in errors ("linux.seccomp").
pub fn compile(s: &LinuxSeccomp, at: &str) -> Result<Filter> {
    let default = action(s.default_action(), s.default_errno_ret(), &format!("{at}.defaultAction"))?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| scmp_err(e, format!("{at}: creating the filter")))?;
    // The runtime sets no_new_privs itself, as process.noNewPrivileges says; libseccomp would
    // set it with the filter.
    ctx.set_ctl_nnp(false).map_err(|e| scmp_err(e, format!("{at}: filter attributes")))?;
    for (i, arch) in s.architectures().iter().flatten().enumerate() {
        let name = to_name(arch);
        let a = ScmpArch::from_str(&name)
            .map_err(|_| Error::unsupported(format!("{at}.architectures[{i}]: {name} is not known to libseccomp")))?;
        ctx.add_arch(a).map_err(|e| scmp_err(e, format!("{at}.architectures[{i}]: {name}")))?;
    }
    for (i, flag) in s.flags().iter().flatten().enumerate() {
        let result = match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
        };
        result.map_err(|e| {
            scmp_err(e, format!("{at}.flags[{i}]: {} (not supported by this libseccomp or kernel?)", to_name(flag)))
        })?;
    }
    let mut notify = matches!(default, ScmpAction::Notify);
    let mut unknown = Vec::new();
    for (i, rule) in s.syscalls().iter().flatten().enumerate() {
        let rat = format!("{at}.syscalls[{i}]");
        let act = action(rule.action(), rule.errno_ret(), &rat)?;
        notify |= matches!(act, ScmpAction::Notify);
        // A rule that does what the default does is no rule (libseccomp refuses it).
        if act == default {
            continue;
        }
        let args = rule.args().as_deref().unwrap_or(&[]);
        for (j, a) in args.iter().enumerate() {
            if a.index() > 5 {
                return Err(Error::invalid(format!(
                    "{rat}.args[{j}].index: {} is not a syscall argument (0..5)",
                    a.index()
                )));
            }
        }
        let comparisons: Vec<ScmpArgCompare> =
            args.iter().map(|a| compare(a.op(), a.index(), a.value(), a.value_two())).collect();
        // Several conditions on one argument can only mean "any of them" (as in docker's
        // profile): one rule each. Otherwise all conditions hold together in one rule.
        let mut indexes: Vec<usize> = args.iter().map(|a| a.index()).collect();
        indexes.sort();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in rule.names() {
            let syscall = match ScmpSyscall::from_name(name) {
                Ok(s) => s,
                Err(_) => {
                    unknown.push(name.clone());
                    continue;
                }
            };
            let failed = |e| scmp_err(e, format!("{rat}: adding a rule for {name}"));
            if comparisons.is_empty() {
                ctx.add_rule(act, syscall).map_err(failed)?;
            } else if repeated {
                for c in &comparisons {
                    ctx.add_rule_conditional(act, syscall, std::slice::from_ref(c)).map_err(failed)?;
                }
            } else {
                ctx.add_rule_conditional(act, syscall, &comparisons).map_err(failed)?;
            }
        }
    }
    if notify && s.listener_path().is_none() {
        return Err(Error::invalid(format!("{at}.listenerPath: required by SCMP_ACT_NOTIFY")));
    }
    Ok(Filter { ctx, notify, unknown_syscalls: unknown })
}

impl Filter {
    /// Loads the filter into the calling process; returns the notification fd if the filter
    /// has SCMP_ACT_NOTIFY rules.
    pub fn load(&self) -> Result<Option<OwnedFd>> {
        self.ctx.load().map_err(|e| scmp_err(e, "loading the seccomp filter".into()))?;
        if !self.notify {
            return Ok(None);
        }
        let fd = self.ctx.get_notify_fd().map_err(|e| scmp_err(e, "getting the seccomp notification fd".into()))?;
        // SAFETY: libseccomp hands over the descriptor the kernel returned on load.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

/// Sends the notification fd and the container process state to linux.seccomp.listenerPath
/// (runtime-spec's ContainerProcessState, one message with the fd attached).
pub fn send_to_listener(
    listener: &std::path::Path,
    metadata: Option<&str>,
    pid: i32,
    state: serde_json::Value,
    fd: &OwnedFd,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    let sock = crate::sys::connect_unix(listener)
        .map_err(|e| Error::from_io(e).context(format!("linux.seccomp.listenerPath {}", listener.display())))?;
    let mut msg = serde_json::json!({
        "ociVersion": crate::config::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
        "state": state,
    });
    if let Some(m) = metadata {
        msg["metadata"] = serde_json::json!(m);
    }
    crate::sys::send_with_fds(sock.as_raw_fd(), msg.to_string().as_bytes(), &[fd.as_raw_fd()])
        .map_err(|e| Error::from_io(e).context("sending the seccomp fd to the listener"))
}

/// What this build supports, for the features document.
pub fn features() -> serde_json::Value {
    let actions = [
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_TRAP",
    ];
    let operators = [
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_LE",
        "SCMP_CMP_LT",
        "SCMP_CMP_MASKED_EQ",
        "SCMP_CMP_NE",
    ];
    let archs = [
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM",
        "SCMP_ARCH_MIPS",
        "SCMP_ARCH_MIPS64",
        "SCMP_ARCH_MIPS64N32",
        "SCMP_ARCH_MIPSEL",
        "SCMP_ARCH_MIPSEL64",
        "SCMP_ARCH_MIPSEL64N32",
        "SCMP_ARCH_PPC",
        "SCMP_ARCH_PPC64",
        "SCMP_ARCH_PPC64LE",
        "SCMP_ARCH_RISCV64",
        "SCMP_ARCH_S390",
        "SCMP_ARCH_S390X",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X86_64",
    ];
    let flags = ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"];
    serde_json::json!({
        "enabled": true,
        "actions": actions,
        "operators": operators,
        "archs": archs,
        "knownFlags": flags,
        "supportedFlags": flags,
    })
}
