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
    /// The BPF program loaded: the ENOSYS stub ([`enosys_stub`]) ahead of libseccomp's filter.
    program: Vec<libc::sock_filter>,
    /// seccomp(2)'s flags for it (TSYNC, LOG, SPEC_ALLOW, NEW_LISTENER, ...).
    flags: libc::c_ulong,
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
    let mut flags: libc::c_ulong = 0;
    for (i, flag) in s.flags().iter().flatten().enumerate() {
        let result = match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {
                flags |= libc::SECCOMP_FILTER_FLAG_TSYNC;
                ctx.set_ctl_tsync(true)
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => {
                flags |= libc::SECCOMP_FILTER_FLAG_LOG;
                ctx.set_ctl_log(true)
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                flags |= libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW;
                ctx.set_ctl_ssb(true)
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                flags |= libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
                ctx.set_ctl_waitkill(true)
            }
        };
        result.map_err(|e| {
            scmp_err(e, format!("{at}.flags[{i}]: {} (not supported by this libseccomp or kernel?)", to_name(flag)))
        })?;
    }
    let mut notify = matches!(default, ScmpAction::Notify);
    let mut unknown = Vec::new();
    // The architectures the filter is for, and the newest syscall the profile names in each.
    let mut archs: Vec<ScmpArch> = Vec::new();
    for arch in s.architectures().iter().flatten() {
        if let Ok(a) = ScmpArch::from_str(&to_name(arch)) {
            archs.push(a);
        }
    }
    if archs.is_empty() {
        archs.push(ScmpArch::native());
    }
    let mut newest: Vec<(ScmpArch, i32)> = archs.iter().map(|a| (*a, -1)).collect();
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
            for (arch, max) in newest.iter_mut() {
                if let Ok(nr) = ScmpSyscall::from_name_by_arch(name, *arch) {
                    *max = (*max).max(i32::from(nr));
                }
            }
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
    if notify {
        flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        if flags & libc::SECCOMP_FILTER_FLAG_TSYNC != 0 {
            // The kernel refuses TSYNC with a listener unless told to report a failed sync
            // as ESRCH (what libseccomp does too).
            flags |= libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        }
    }
    // Newer syscalls than any the profile names answer ENOSYS unless the default lets them
    // through anyway (allow, log, trace) or already answers ENOSYS.
    let permissive = matches!(default, ScmpAction::Allow | ScmpAction::Log | ScmpAction::Trace(_));
    let mut program =
        if permissive || default == ScmpAction::Errno(libc::ENOSYS) { Vec::new() } else { enosys_stub(&newest) };
    program.extend(export(&ctx).map_err(|e| e.context(format!("{at}: exporting the filter")))?);
    if program.len() > u16::MAX as usize {
        return Err(Error::invalid(format!(
            "{at}: the filter has {} instructions, more than the kernel takes",
            program.len()
        )));
    }
    Ok(Filter { program, flags, notify, unknown_syscalls: unknown })
}

/// libseccomp's BPF program for `ctx`.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    use std::io::{Read, Seek, SeekFrom};
    let fd = berth_sys::file::memfd_create(c"seccomp-bpf", berth_sys::file::MFD_CLOEXEC).map_err(Error::from_io)?;
    ctx.export_bpf(&fd).map_err(|e| scmp_err(e, "libseccomp".into()))?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_end(&mut bytes)).map_err(Error::from_io)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// The kernel's AUDIT_ARCH_* value of a libseccomp architecture (those the stub knows).
fn audit_arch(arch: ScmpArch) -> Option<u32> {
    Some(match arch {
        ScmpArch::X8664 | ScmpArch::X32 => 0xc000_003e,
        ScmpArch::X86 => 0x4000_0003,
        ScmpArch::Aarch64 => 0xc000_00b7,
        ScmpArch::Arm => 0x4000_0028,
        ScmpArch::Riscv64 => 0xc000_00f3,
        ScmpArch::Ppc64Le => 0xc000_0015,
        ScmpArch::Ppc64 => 0x8000_0015,
        ScmpArch::Loongarch64 => 0xc000_0102,
        _ => return None,
    })
}

const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A prefix to the filter that answers ENOSYS to syscalls newer (higher numbered) than any the
/// profile names for the architecture, instead of the profile's default action: a profile
/// written before a syscall existed then makes programs fall back (clone3 → clone) instead of
/// failing, as runc's stub does. One block per architecture; anything else falls through to
/// libseccomp's filter. On x86_64, x32 syscalls (bit 30 set) are judged by the x32 number
/// when the profile names x32, else left to the filter.
fn enosys_stub(newest: &[(ScmpArch, i32)]) -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGT: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
    const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let max_of = |arch: ScmpArch| newest.iter().find(|(a, _)| *a == arch).map(|(_, m)| *m).filter(|m| *m >= 0);
    let mut program = Vec::new();
    let mut done = Vec::new();
    for (arch, _) in newest {
        let Some(audit) = audit_arch(*arch) else { continue };
        if done.contains(&audit) {
            continue;
        }
        done.push(audit);
        let mut body = vec![stmt(LD_W_ABS, NR)];
        if audit == 0xc000_003e {
            let (native, x32) = (max_of(ScmpArch::X8664), max_of(ScmpArch::X32));
            // x86_64 syscalls: [jset X32 → x32 part] [jgt native → enosys] [ja past]
            let x32_part: Vec<libc::sock_filter> = match x32 {
                Some(m) => vec![jump(JGT, m as u32, 0, 1), stmt(RET, enosys)],
                None => Vec::new(),
            };
            let native_part: Vec<libc::sock_filter> = match native {
                Some(m) => vec![jump(JGT, m as u32, 0, 1), stmt(RET, enosys)],
                None => Vec::new(),
            };
            // After the native part, skip the x32 part.
            let skip_x32 = x32_part.len() as u32;
            body.push(jump(JSET, X32_SYSCALL_BIT, (native_part.len() + 1) as u8, 0));
            body.extend(native_part);
            body.push(stmt((libc::BPF_JMP | libc::BPF_JA) as u16, skip_x32));
            body.extend(x32_part);
        } else {
            let Some(m) = max_of(*arch) else { continue };
            body.push(jump(JGT, m as u32, 0, 1));
            body.push(stmt(RET, enosys));
        }
        program.push(stmt(LD_W_ABS, ARCH));
        program.push(jump(JEQ, audit, 0, body.len() as u8));
        program.extend(body);
    }
    program
}

impl Filter {
    /// Loads the filter into the calling process (one seccomp(2), no allocation: it may run as
    /// the last thing before execve); returns the notification fd if the filter has
    /// SCMP_ACT_NOTIFY rules.
    pub fn load(&self) -> Result<Option<OwnedFd>> {
        let prog = libc::sock_fprog { len: self.program.len() as u16, filter: self.program.as_ptr() as *mut _ };
        // SAFETY: a program the kernel only reads, alive for the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if ret < 0 {
            return Err(Error::last_os("loading the seccomp filter"));
        }
        // SAFETY: with NEW_LISTENER the kernel returned a fresh descriptor.
        Ok(self.notify.then(|| unsafe { OwnedFd::from_raw_fd(ret as i32) }))
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
    use std::os::fd::AsFd;
    let sock = berth_sys::socket::connect_unix(listener)
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
    berth_sys::socket::send_with_fds(&sock, msg.to_string().as_bytes(), &[fd.as_fd()])
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a classic BPF program (the opcodes the stub uses) on (nr, arch).
    fn run(program: &[libc::sock_filter], nr: u32, arch: u32) -> u32 {
        let mut a = 0u32;
        let mut pc = 0usize;
        loop {
            let i = program[pc];
            pc += 1;
            let class = i.code as u32 & 0x07;
            let op = i.code as u32 & 0xf0;
            match (class, op) {
                (libc::BPF_LD, _) => a = if i.k == 0 { nr } else { arch },
                (libc::BPF_RET, _) => return i.k,
                (libc::BPF_JMP, libc::BPF_JA) => pc += i.k as usize,
                (libc::BPF_JMP, _) => {
                    let taken = match op {
                        libc::BPF_JEQ => a == i.k,
                        libc::BPF_JGT => a > i.k,
                        libc::BPF_JSET => a & i.k != 0,
                        other => panic!("opcode {other:#x}"),
                    };
                    pc += if taken { i.jt } else { i.jf } as usize;
                }
                other => panic!("class {other:?}"),
            }
        }
    }

    const ALLOW: u32 = 0x7fff_0000;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    const X86_64: u32 = 0xc000_003e;

    fn with_filter(stub: Vec<libc::sock_filter>) -> Vec<libc::sock_filter> {
        let mut p = stub;
        p.push(stmt((libc::BPF_RET | libc::BPF_K) as u16, ALLOW));
        p
    }

    #[test]
    fn enosys_stub_answers_newer_syscalls_only() {
        let p = with_filter(enosys_stub(&[(ScmpArch::X8664, 334)]));
        assert_eq!(run(&p, 334, X86_64), ALLOW);
        assert_eq!(run(&p, 12, X86_64), ALLOW);
        assert_eq!(run(&p, 435, X86_64), ENOSYS);
        // x32 syscalls are left to the filter when the profile does not name x32.
        assert_eq!(run(&p, X32_SYSCALL_BIT | 500, X86_64), ALLOW);
        // Another architecture falls through.
        assert_eq!(run(&p, 1000, 0x4000_0003), ALLOW);
    }

    #[test]
    fn enosys_stub_with_x32_and_two_architectures() {
        let p = with_filter(enosys_stub(&[
            (ScmpArch::X8664, 300),
            (ScmpArch::X32, (X32_SYSCALL_BIT + 200) as i32),
            (ScmpArch::X86, 100),
            (ScmpArch::Aarch64, -1),
        ]));
        assert_eq!(run(&p, 301, X86_64), ENOSYS);
        assert_eq!(run(&p, 250, X86_64), ALLOW);
        assert_eq!(run(&p, X32_SYSCALL_BIT | 201, X86_64), ENOSYS);
        assert_eq!(run(&p, X32_SYSCALL_BIT | 150, X86_64), ALLOW);
        assert_eq!(run(&p, 101, 0x4000_0003), ENOSYS);
        assert_eq!(run(&p, 100, 0x4000_0003), ALLOW);
        // No syscall named for aarch64: no stub for it.
        assert_eq!(run(&p, 5000, 0xc000_00b7), ALLOW);
    }
}
