//! berth-init: the process `berth run --init` puts at PID 1 (bind-mounted at /dev/init), in
//! front of the container's command, the role tini and docker-init play. It starts the command
//! as its child in a process group of its own, forwards every signal it receives to it, reaps
//! every process that ends up its child (orphans re-parented to PID 1), and exits with the
//! command's status (128 + signal when killed).
//!
//! `berth-init --pause` runs no command: it is the PID 1 of a pod's shared PID namespace
//! (the engine starts it there), reaping the orphans its containers leave and exiting on
//! SIGTERM, SIGINT or SIGHUP.
//!
//! The container's root filesystem may hold no C library and no dynamic loader, so this binary
//! has neither: its own `_start`, raw system calls, no allocation, linked statically.

#![no_std]
#![no_main]

use core::panic::PanicInfo;

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    exit(255)
}

// What a C library would provide: core's prebuilt code refers to these. Byte loops through
// volatile accesses, so the compiler cannot turn them back into calls to themselves.
#[no_mangle]
unsafe extern "C" fn memcpy(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i)));
    }
    d
}

#[no_mangle]
unsafe extern "C" fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    if (d as usize) < (s as usize) {
        return memcpy(d, s, n);
    }
    for i in (0..n).rev() {
        core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i)));
    }
    d
}

#[no_mangle]
unsafe extern "C" fn memset(d: *mut u8, c: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        core::ptr::write_volatile(d.add(i), c as u8);
    }
    d
}

#[no_mangle]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        let (x, y) = (core::ptr::read_volatile(a.add(i)), core::ptr::read_volatile(b.add(i)));
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

#[no_mangle]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    memcmp(a, b, n)
}

#[no_mangle]
unsafe extern "C" fn strlen(p: *const u8) -> usize {
    let mut n = 0;
    while core::ptr::read_volatile(p.add(n)) != 0 {
        n += 1;
    }
    n
}

/// Referred to by core's unwinding tables; never called (panics abort).
#[no_mangle]
extern "C" fn rust_eh_personality() {}

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const WRITE: usize = 1;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const CLONE: usize = 56;
    pub const EXECVE: usize = 59;
    pub const WAIT4: usize = 61;
    pub const KILL: usize = 62;
    pub const SETPGID: usize = 109;
    pub const RT_SIGTIMEDWAIT: usize = 128;
    pub const EXIT_GROUP: usize = 231;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const WRITE: usize = 64;
    pub const EXIT_GROUP: usize = 94;
    pub const KILL: usize = 129;
    pub const RT_SIGPROCMASK: usize = 135;
    pub const RT_SIGTIMEDWAIT: usize = 137;
    pub const SETPGID: usize = 154;
    pub const CLONE: usize = 220;
    pub const EXECVE: usize = 221;
    pub const WAIT4: usize = 260;
}

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "xor rbp, rbp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym entry,
);

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(".globl _start", "_start:", "mov x29, #0", "mov x0, sp", "bl {entry}", "brk #0", entry = sym entry);

#[cfg(target_arch = "x86_64")]
unsafe fn syscall(n: usize, a: [usize; 5]) -> isize {
    let ret: isize;
    core::arch::asm!(
        "syscall",
        inlateout("rax") n as isize => ret,
        in("rdi") a[0], in("rsi") a[1], in("rdx") a[2], in("r10") a[3], in("r8") a[4],
        lateout("rcx") _, lateout("r11") _,
        options(nostack)
    );
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn syscall(n: usize, a: [usize; 5]) -> isize {
    let ret: isize;
    core::arch::asm!(
        "svc 0",
        in("x8") n,
        inlateout("x0") a[0] as isize => ret,
        in("x1") a[1], in("x2") a[2], in("x3") a[3], in("x4") a[4],
        options(nostack)
    );
    ret
}

const SIGHUP: usize = 1;
const SIGINT: usize = 2;
const SIGTERM: usize = 15;
const SIGKILL: usize = 9;
const SIGCHLD: usize = 17;
const SIGSTOP: usize = 19;
const SIG_BLOCK: usize = 0;
const SIG_SETMASK: usize = 2;
const WNOHANG: usize = 1;
const EINTR: isize = -4;

fn exit(code: i32) -> ! {
    unsafe { syscall(nr::EXIT_GROUP, [code as usize, 0, 0, 0, 0]) };
    loop {
        core::hint::spin_loop();
    }
}

fn write_err(parts: &[&[u8]]) {
    for p in parts {
        unsafe { syscall(nr::WRITE, [2, p.as_ptr() as usize, p.len(), 0, 0]) };
    }
}

unsafe fn bytes<'a>(p: *const u8) -> &'a [u8] {
    core::slice::from_raw_parts(p, strlen(p))
}

/// execve of `argv[0]`, searched in the PATH of `envp` when it has no '/'. Returns on failure.
unsafe fn exec(argv: *const *const u8, envp: *const *const u8) {
    let prog = bytes(*argv);
    if prog.contains(&b'/') {
        syscall(nr::EXECVE, [*argv as usize, argv as usize, envp as usize, 0, 0]);
        return;
    }
    let mut path: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let mut e = envp;
    while !(*e).is_null() {
        let v = bytes(*e);
        if let Some(rest) = v.strip_prefix(b"PATH=") {
            path = rest;
        }
        e = e.add(1);
    }
    let mut buf = [0u8; 4096];
    for dir in path.split(|b| *b == b':') {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        if dir.len() + prog.len() + 2 > buf.len() {
            continue;
        }
        buf[..dir.len()].copy_from_slice(dir);
        buf[dir.len()] = b'/';
        buf[dir.len() + 1..dir.len() + 1 + prog.len()].copy_from_slice(prog);
        buf[dir.len() + 1 + prog.len()] = 0;
        syscall(nr::EXECVE, [buf.as_ptr() as usize, argv as usize, envp as usize, 0, 0]);
    }
}

unsafe extern "C" fn entry(sp: *const usize) -> ! {
    let argc = *sp;
    let argv = sp.add(1) as *const *const u8;
    let envp = argv.add(argc + 1);
    if argc == 2 && bytes(*argv.add(1)) == b"--pause" {
        pause();
    }
    let mut first = 1;
    if argc > 1 && bytes(*argv.add(1)) == b"--" {
        first = 2;
    }
    if argc <= first {
        write_err(&[b"usage: berth-init [--] COMMAND [ARG]...\n"]);
        exit(2);
    }
    let all: u64 = !0;
    let none: u64 = 0;
    syscall(nr::RT_SIGPROCMASK, [SIG_BLOCK, &all as *const u64 as usize, 0, 8, 0]);
    let child = syscall(nr::CLONE, [SIGCHLD, 0, 0, 0, 0]);
    if child < 0 {
        write_err(&[b"berth-init: fork failed\n"]);
        exit(255);
    }
    if child == 0 {
        syscall(nr::SETPGID, [0, 0, 0, 0, 0]);
        syscall(nr::RT_SIGPROCMASK, [SIG_SETMASK, &none as *const u64 as usize, 0, 8, 0]);
        exec(argv.add(first), envp);
        write_err(&[b"berth-init: cannot run ", bytes(*argv.add(first)), b"\n"]);
        exit(127);
    }
    let mut info = [0u64; 16];
    loop {
        let sig = syscall(nr::RT_SIGTIMEDWAIT, [&all as *const u64 as usize, info.as_mut_ptr() as usize, 0, 8, 0]);
        if sig == EINTR || sig < 0 {
            continue;
        }
        let sig = sig as usize;
        if sig != SIGCHLD {
            if sig != SIGKILL && sig != SIGSTOP {
                syscall(nr::KILL, [child as usize, sig, 0, 0, 0]);
            }
            continue;
        }
        loop {
            let mut status: i32 = 0;
            let pid = syscall(nr::WAIT4, [usize::MAX, &mut status as *mut i32 as usize, WNOHANG, 0, 0]);
            if pid <= 0 {
                break;
            }
            if pid == child {
                let code = if status & 0x7f == 0 { (status >> 8) & 0xff } else { 128 + (status & 0x7f) };
                exit(code);
            }
        }
    }
}

/// A pod's PID 1: reaps whatever ends up its child until told to stop.
unsafe fn pause() -> ! {
    let all: u64 = !0;
    syscall(nr::RT_SIGPROCMASK, [SIG_BLOCK, &all as *const u64 as usize, 0, 8, 0]);
    let mut info = [0u64; 16];
    loop {
        let sig = syscall(nr::RT_SIGTIMEDWAIT, [&all as *const u64 as usize, info.as_mut_ptr() as usize, 0, 8, 0]);
        match sig as usize {
            SIGTERM | SIGINT | SIGHUP => exit(0),
            SIGCHLD => loop {
                let mut status: i32 = 0;
                if syscall(nr::WAIT4, [usize::MAX, &mut status as *mut i32 as usize, WNOHANG, 0, 0]) <= 0 {
                    break;
                }
            },
            _ => {}
        }
    }
}
