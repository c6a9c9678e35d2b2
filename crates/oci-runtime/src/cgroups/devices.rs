//! Device access rules: the v1 devices controller's allow/deny files, and on cgroup v2 an eBPF
//! program (BPF_PROG_TYPE_CGROUP_DEVICE) compiled from the same rule list.
//!
//! Semantics follow the spec's list order: a later rule overrides an earlier one; access that
//! no rule matches is allowed (the kernel's default before any rule).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::write_file;
use crate::error::{Context, Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    /// 'a' (all), 'c' or 'b'.
    pub kind: char,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    /// Subset of "rwm".
    pub access: String,
}

impl DeviceRule {
    pub fn from_spec(d: &oci_spec::runtime::LinuxDeviceCgroup) -> Result<DeviceRule> {
        use oci_spec::runtime::LinuxDeviceType as T;
        let kind = match d.typ() {
            None | Some(T::A) => 'a',
            Some(T::C) | Some(T::U) => 'c',
            Some(T::B) => 'b',
            Some(T::P) => {
                return Err(Error::invalid("type: 'p' (FIFO) is not a device type the devices cgroup controls"))
            }
        };
        let access = d.access().clone().unwrap_or_else(|| "rwm".to_string());
        if access.is_empty() || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(Error::invalid(format!("access: '{access}' is not a combination of r, w and m")));
        }
        for (name, v) in [("major", d.major()), ("minor", d.minor())] {
            if let Some(v) = v {
                if !(0..=u32::MAX as i64).contains(&v) && v != -1 {
                    return Err(Error::invalid(format!("{name}: {v} is out of range")));
                }
            }
        }
        // -1 is the Go tooling's spelling of "any".
        let any = |v: Option<i64>| v.filter(|v| *v >= 0);
        Ok(DeviceRule { allow: d.allow(), kind, major: any(d.major()), minor: any(d.minor()), access })
    }

    pub fn allow(kind: char, major: i64, minor: Option<i64>, access: &str) -> DeviceRule {
        DeviceRule { allow: true, kind, major: Some(major), minor, access: access.to_string() }
    }

    fn is_wildcard(&self) -> bool {
        self.kind == 'a' && self.major.is_none() && self.minor.is_none()
    }

    /// The v1 devices.allow/devices.deny line.
    fn v1_line(&self) -> String {
        let n = |v: Option<i64>| v.map_or("*".to_string(), |v| v.to_string());
        if self.is_wildcard() {
            // "a" alone resets the whole list (and the default) in the kernel.
            return "a".to_string();
        }
        format!("{} {}:{} {}", self.kind, n(self.major), n(self.minor), self.access)
    }
}

/// Rules for the devices the runtime creates in every container (/dev/null, /dev/zero, ...,
/// the pty devices), as runc grants them.
pub fn default_device_rules() -> Vec<DeviceRule> {
    vec![
        DeviceRule::allow('c', 1, Some(3), "rwm"), // null
        DeviceRule::allow('c', 1, Some(5), "rwm"), // zero
        DeviceRule::allow('c', 1, Some(7), "rwm"), // full
        DeviceRule::allow('c', 1, Some(8), "rwm"), // random
        DeviceRule::allow('c', 1, Some(9), "rwm"), // urandom
        DeviceRule::allow('c', 5, Some(0), "rwm"), // tty
        DeviceRule::allow('c', 5, Some(1), "rwm"), // console
        DeviceRule::allow('c', 5, Some(2), "rwm"), // ptmx
        DeviceRule::allow('c', 136, None, "rwm"),  // pts/*
    ]
}

pub(super) fn apply_v1(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    for rule in rules {
        let file = if rule.allow { "devices.allow" } else { "devices.deny" };
        write_file(dir, file, &rule.v1_line())?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------ eBPF (cgroup v2)

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R7: u8 = 7;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | dst, off, imm }
}
fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x61, dst, src, off, 0) // BPF_LDX | BPF_MEM | BPF_W
}
fn mov32_reg(dst: u8, src: u8) -> Insn {
    insn(0xbc, dst, src, 0, 0) // BPF_ALU | BPF_MOV | BPF_X
}
fn and32_imm(dst: u8, imm: i32) -> Insn {
    insn(0x54, dst, 0, 0, imm) // BPF_ALU | BPF_AND | BPF_K
}
fn rsh32_imm(dst: u8, imm: i32) -> Insn {
    insn(0x74, dst, 0, 0, imm) // BPF_ALU | BPF_RSH | BPF_K
}
fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(0x55, dst, 0, off, imm) // BPF_JMP | BPF_JNE | BPF_K
}
fn jne_reg(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x5d, dst, src, off, 0) // BPF_JMP | BPF_JNE | BPF_X
}
fn mov64_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm) // BPF_ALU64 | BPF_MOV | BPF_K
}
fn exit() -> Insn {
    insn(0x95, 0, 0, 0, 0) // BPF_JMP | BPF_EXIT
}

const DEVCG_DEV_BLOCK: i32 = 1;
const DEVCG_DEV_CHAR: i32 = 2;
const DEVCG_ACC_MKNOD: i32 = 1;
const DEVCG_ACC_READ: i32 = 2;
const DEVCG_ACC_WRITE: i32 = 4;

fn access_mask(access: &str) -> i32 {
    access.chars().fold(0, |m, c| {
        m | match c {
            'r' => DEVCG_ACC_READ,
            'w' => DEVCG_ACC_WRITE,
            'm' => DEVCG_ACC_MKNOD,
            _ => 0,
        }
    })
}

/// Compiles rules into a program: the context is (access_type, major, minor); rules are tested
/// last to first and the first match decides; no match allows.
pub(super) fn compile(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut prog = vec![
        ldx_w(R2, R1, 0),
        mov32_reg(R3, R2),
        and32_imm(R3, 0xffff), // device type
        mov32_reg(R4, R2),
        rsh32_imm(R4, 16), // requested access
        ldx_w(R5, R1, 4),  // major
        ldx_w(R6, R1, 8),  // minor
    ];
    for rule in rules.iter().rev() {
        let mut checks: Vec<Vec<Insn>> = Vec::new();
        match rule.kind {
            'c' => checks.push(vec![jne_imm(R3, DEVCG_DEV_CHAR, 0)]),
            'b' => checks.push(vec![jne_imm(R3, DEVCG_DEV_BLOCK, 0)]),
            _ => {}
        }
        let mask = access_mask(&rule.access);
        if mask != DEVCG_ACC_READ | DEVCG_ACC_WRITE | DEVCG_ACC_MKNOD {
            // Matches only if every requested access bit is in the rule.
            checks.push(vec![mov32_reg(R7, R4), and32_imm(R7, mask), jne_reg(R7, R4, 0)]);
        }
        if let Some(major) = rule.major {
            checks.push(vec![jne_imm(R5, major as i32, 0)]);
        }
        if let Some(minor) = rule.minor {
            checks.push(vec![jne_imm(R6, minor as i32, 0)]);
        }
        let matches_everything = checks.is_empty();
        let mut block: Vec<Insn> = checks.into_iter().flatten().collect();
        block.push(mov64_imm(R0, rule.allow as i32));
        block.push(exit());
        // Every conditional jump skips to the end of this block.
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == 0x55 || ins.code == 0x5d {
                ins.off = (len - i - 1) as i16;
            }
        }
        prog.extend(block);
        // The verifier refuses unreachable code: nothing after a rule that always matches.
        if matches_everything {
            return prog;
        }
    }
    prog.push(mov64_imm(R0, 1));
    prog.push(exit());
    prog
}

const BPF_PROG_LOAD: i32 = 5;
const BPF_PROG_ATTACH: i32 = 8;
const BPF_PROG_DETACH: i32 = 9;
const BPF_PROG_GET_FD_BY_ID: i32 = 13;
const BPF_PROG_QUERY: i32 = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// bpf(2) with an attribute block laid out by hand (the union is larger than any use here).
fn bpf(cmd: i32, attr: &mut [u8; 128]) -> std::io::Result<i64> {
    // SAFETY: the kernel reads (and for queries writes) at most `size` bytes of attr.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn put_u32(attr: &mut [u8; 128], off: usize, v: u32) {
    attr[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put_u64(attr: &mut [u8; 128], off: usize, v: u64) {
    attr[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn load_program(insns: &[Insn]) -> Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE);
    put_u32(&mut attr, 4, insns.len() as u32);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    put_u32(&mut attr, 24, 1); // log_level
    put_u32(&mut attr, 28, log.len() as u32);
    put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a fresh program descriptor.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let text = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned();
            let mut err = Error::from_io(e).context("loading the device-access eBPF program");
            if !text.trim().is_empty() {
                err = err.context(format!("verifier: {}", text.trim()));
            }
            Err(err)
        }
    }
}

fn attached_program_ids(cgroup: &OwnedFd) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, cgroup.as_raw_fd() as u32);
    put_u32(&mut attr, 4, BPF_CGROUP_DEVICE);
    put_u64(&mut attr, 16, ids.as_mut_ptr() as u64);
    put_u32(&mut attr, 24, ids.len() as u32);
    bpf(BPF_PROG_QUERY, &mut attr).ctx("querying the cgroup's device programs")?;
    let count = u32::from_ne_bytes(attr[24..28].try_into().unwrap()) as usize;
    ids.truncate(count.min(64));
    Ok(ids)
}

/// Replaces the cgroup's device program with one compiled from `rules`.
pub(super) fn apply_v2(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let cgroup =
        berth_sys::file::open(dir, libc::O_RDONLY | libc::O_DIRECTORY).with_ctx(|| dir.display().to_string())?;
    let old = attached_program_ids(&cgroup)?;
    let prog = load_program(&compile(rules))?;
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, cgroup.as_raw_fd() as u32);
    put_u32(&mut attr, 4, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 8, BPF_CGROUP_DEVICE);
    put_u32(&mut attr, 12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut attr).with_ctx(|| format!("attaching the device program to {}", dir.display()))?;
    for id in old {
        let mut a = [0u8; 128];
        put_u32(&mut a, 0, id);
        let Ok(fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut a) else { continue };
        // SAFETY: a fresh descriptor for the old program.
        let old_prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut d = [0u8; 128];
        put_u32(&mut d, 0, cgroup.as_raw_fd() as u32);
        put_u32(&mut d, 4, old_prog.as_raw_fd() as u32);
        put_u32(&mut d, 8, BPF_CGROUP_DEVICE);
        bpf(BPF_PROG_DETACH, &mut d)
            .with_ctx(|| format!("detaching the previous device program from {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines() {
        let deny_all = DeviceRule { allow: false, kind: 'a', major: None, minor: None, access: "rwm".into() };
        assert_eq!(deny_all.v1_line(), "a");
        assert_eq!(DeviceRule::allow('c', 136, None, "rwm").v1_line(), "c 136:* rwm");
        assert_eq!(DeviceRule::allow('b', 8, Some(0), "r").v1_line(), "b 8:0 r");
    }

    /// Runs a compiled program on one access in a tiny interpreter of the instructions it uses.
    fn run(prog: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> u64 {
        let ctx = [((access as u32) << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                0x61 => r[dst] = ctx[i.off as usize / 4] as u64,
                0xbc => r[dst] = r[src] & 0xffff_ffff,
                0x54 => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                0x74 => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                0x55 => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc += i.off as usize
                    }
                }
                0x5d => {
                    if r[dst] != r[src] {
                        pc += i.off as usize
                    }
                }
                0xb7 => r[dst] = i.imm as i64 as u64,
                0x95 => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn later_rules_override_earlier_ones() {
        let rules = vec![
            DeviceRule { allow: false, kind: 'a', major: None, minor: None, access: "rwm".into() },
            DeviceRule::allow('c', 1, Some(3), "rwm"),
            DeviceRule::allow('c', 136, None, "rw"),
            DeviceRule { allow: false, kind: 'c', major: Some(1), minor: Some(3), access: "w".into() },
        ];
        let p = compile(&rules);
        assert_eq!(run(&p, DEVCG_DEV_CHAR, DEVCG_ACC_READ, 1, 3), 1, "read /dev/null");
        assert_eq!(run(&p, DEVCG_DEV_CHAR, DEVCG_ACC_WRITE, 1, 3), 0, "write /dev/null denied by the last rule");
        assert_eq!(run(&p, DEVCG_DEV_CHAR, DEVCG_ACC_READ | DEVCG_ACC_WRITE, 136, 7), 1, "pts rw");
        assert_eq!(run(&p, DEVCG_DEV_CHAR, DEVCG_ACC_MKNOD, 136, 7), 0, "pts mknod not granted");
        assert_eq!(run(&p, DEVCG_DEV_BLOCK, DEVCG_ACC_READ, 8, 0), 0, "disk denied");
    }

    /// Every instruction can be reached (the kernel's verifier refuses a program otherwise).
    fn assert_all_reachable(prog: &[Insn]) {
        let mut seen = vec![false; prog.len()];
        let mut todo = vec![0usize];
        while let Some(pc) = todo.pop() {
            if pc >= prog.len() || seen[pc] {
                continue;
            }
            seen[pc] = true;
            match prog[pc].code {
                0x95 => {}
                0x55 | 0x5d => todo.extend([pc + 1, pc + 1 + prog[pc].off as usize]),
                _ => todo.push(pc + 1),
            }
        }
        assert!(seen.iter().all(|s| *s), "unreachable instructions: {seen:?}");
    }

    #[test]
    fn programs_have_no_unreachable_code() {
        let deny_all = DeviceRule { allow: false, kind: 'a', major: None, minor: None, access: "rwm".into() };
        assert_all_reachable(&compile(std::slice::from_ref(&deny_all)));
        assert_all_reachable(&compile(&[deny_all.clone(), DeviceRule::allow('c', 1, Some(3), "rwm")]));
        assert_all_reachable(&compile(&[DeviceRule::allow('c', 1, Some(3), "rwm")]));
        assert_all_reachable(&compile(&[]));
        // A wildcard in the middle hides the rules before it.
        let p =
            compile(&[DeviceRule::allow('c', 1, Some(3), "r"), deny_all, DeviceRule::allow('c', 1, Some(5), "rwm")]);
        assert_all_reachable(&p);
        assert_eq!(run(&p, DEVCG_DEV_CHAR, DEVCG_ACC_READ, 1, 3), 0);
        assert_eq!(run(&p, DEVCG_DEV_CHAR, DEVCG_ACC_READ, 1, 5), 1);
    }

    #[test]
    fn no_rules_allow_everything() {
        assert_eq!(run(&compile(&[]), DEVCG_DEV_BLOCK, DEVCG_ACC_WRITE, 8, 0), 1);
    }
}
