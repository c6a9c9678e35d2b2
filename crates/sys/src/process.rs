//! Processes: clone3, a PID namespace's first process, namespaces, pidfds, signals to
//! processes, waiting, prctl.

use std::ffi::CStr;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::{check, check_long, owned, raw, retry, Arg};

/// Whether the effective user is root in the user namespace we run in.
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// Runs `program` (with `argv`, an empty environment) as PID 1 of a new PID namespace, in a
/// session of its own, with /dev/null as its stdio and no other descriptor of this process;
/// returns its pid once it runs the program (an exec failure is the error). The namespace is
/// owned by `userns` when given (a pod's user namespace; the process is then that
/// namespace's root), else by the caller's. The program runs confined: chrooted to `root` (an
/// empty directory), no supplementary groups, no capabilities (root gains none at exec and
/// none can come back) and no new privileges, so whoever may ptrace it (a container sharing
/// its PID namespace) gains nothing. Unlike `clone3` this is for threaded callers: the
/// children only make async-signal-safe calls before exec.
pub fn spawn_pid1(program: &Path, argv: &[&CStr], userns: Option<BorrowedFd<'_>>, root: &Path) -> io::Result<i32> {
    // Opened here and run by descriptor: the chroot hides its path.
    let program_file = std::fs::File::open(program)?;
    let root = root.to_c()?;
    let mut args: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    args.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    // The child reports an exec failure's errno on this pipe; it closes on a successful exec.
    let (report_read, report_write) = crate::file::pipe()?;
    // With a user namespace, an intermediate child enters it and clones PID 1 as our child
    // (CLONE_PARENT): a PID namespace belongs to the user namespace of its creator. It sends
    // PID 1's pid on this pipe.
    let (pid_read, pid_write) = crate::file::pipe()?;
    let (null_fd, report_fd, pid_fd) = (null.as_raw_fd(), report_write.as_raw_fd(), pid_write.as_raw_fd());
    let program_fd = program_file.as_raw_fd();
    let userns_fd = userns.map(|u| u.as_raw_fd());
    // securebits: root gets no capabilities at exec, setuid changes none, and neither can be
    // undone.
    const SECURE_NOROOT: libc::c_ulong = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5);
    let exec_pid1 = || -> ! {
        // SAFETY: in the child: async-signal-safe calls, then exec or _exit.
        unsafe {
            let report = || -> ! {
                let errno = *libc::__errno_location();
                libc::write(report_fd, (&errno as *const i32).cast(), 4);
                libc::_exit(127);
            };
            libc::setsid();
            for fd in 0..3 {
                libc::dup2(null_fd, fd);
            }
            // Everything else closes on exec; the report pipe (close-on-exec already) only
            // when the exec succeeds.
            let keep = report_fd as libc::c_uint;
            libc::syscall(libc::SYS_close_range, 3, keep - 1, libc::CLOSE_RANGE_CLOEXEC);
            libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC);
            // Raw system calls: glibc's wrappers of these would signal the threads it thinks
            // this process has (its setxid broadcast) and wait for them forever.
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0 {
                report();
            }
            // In a pod's user namespace: its root (an unprivileged host user), not the
            // host's root that entered it.
            if userns_fd.is_some()
                && (libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0
                    || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0)
            {
                report();
            }
            if libc::prctl(libc::PR_SET_SECUREBITS, SECURE_NOROOT, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::chroot(root.as_ptr()) != 0
                || libc::chdir(c"/".as_ptr()) != 0
            {
                report();
            }
            libc::syscall(
                libc::SYS_execveat,
                program_fd,
                c"".as_ptr(),
                args.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            report();
        }
    };
    let flags = if userns_fd.is_some() { libc::SIGCHLD } else { libc::CLONE_NEWPID | libc::SIGCHLD };
    // SAFETY: fork semantics (no CLONE_VM); every pointer the child uses was made before.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let Some(userns_fd) = userns_fd else { exec_pid1() };
        // SAFETY: in the intermediate child: async-signal-safe calls, then _exit.
        unsafe {
            let pid1: i32 = if libc::setns(userns_fd, libc::CLONE_NEWUSER) == 0 {
                // CLONE_PARENT: the exit signal is ours (SIGCHLD), none is given here.
                let r = libc::syscall(libc::SYS_clone, libc::CLONE_NEWPID | libc::CLONE_PARENT, 0, 0, 0, 0);
                if r == 0 {
                    exec_pid1();
                }
                if r < 0 {
                    -*libc::__errno_location()
                } else {
                    r as i32
                }
            } else {
                -*libc::__errno_location()
            };
            libc::write(pid_fd, (&pid1 as *const i32).cast(), 4);
            libc::_exit(0);
        }
    }
    drop(report_write);
    drop(pid_write);
    let pid = if userns_fd.is_some() {
        let mut got = [0u8; 4];
        let n = std::io::Read::read(&mut std::fs::File::from(pid_read), &mut got).unwrap_or(0);
        let _ = waitpid(pid as i32, false);
        match (n, i32::from_ne_bytes(got)) {
            (4, p) if p > 0 => p,
            (4, errno) => return Err(io::Error::from_raw_os_error(-errno)),
            _ => return Err(io::Error::other("the process entering the user namespace ended early")),
        }
    } else {
        pid as i32
    };
    let mut report = [0u8; 4];
    let n = std::io::Read::read(&mut std::fs::File::from(report_read), &mut report).unwrap_or(0);
    if n == 4 {
        let _ = waitpid(pid, false);
        let err = io::Error::from_raw_os_error(i32::from_ne_bytes(report));
        return Err(io::Error::new(err.kind(), format!("running {}: {err}", program.display())));
    }
    Ok(pid)
}

pub enum Forked {
    Child,
    Parent { pid: i32, pidfd: OwnedFd },
}

/// clone3(2) without a new stack, i.e. fork() with namespace flags, and a pidfd of the child
/// for the parent. `cgroup`: the cgroup2 directory the child starts in (CLONE_INTO_CGROUP).
/// The caller must be single-threaded: the child continues in a copy of this address space.
pub fn clone3(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> io::Result<Forked> {
    let mut pidfd: RawFd = -1;
    // SAFETY: clone_args is plain data.
    let mut args: libc::clone_args = unsafe { zeroed() };
    args.flags = flags | libc::CLONE_PIDFD as u64;
    args.pidfd = &mut pidfd as *mut RawFd as u64;
    // With CLONE_PARENT the child inherits our exit signal, and clone3 insists on 0 here.
    args.exit_signal = if flags & libc::CLONE_PARENT as u64 != 0 { 0 } else { libc::SIGCHLD as u64 };
    if let Some(fd) = cgroup {
        const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: fork semantics; the caller guarantees there are no other threads.
    let ret =
        unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut libc::clone_args, size_of::<libc::clone_args>()) };
    match ret {
        r if r < 0 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        // SAFETY: CLONE_PIDFD stored a fresh descriptor.
        pid => Ok(Forked::Parent { pid: pid as i32, pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) } }),
    }
}

/// setns(2): a namespace descriptor, or a pidfd with CLONE_NEW* flags (several at once).
pub fn setns(fd: impl AsFd, nstype: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::setns(raw(&fd), nstype) }).map(drop)
}

pub fn unshare(flags: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// A pidfd of process `pid` (ESRCH: no such process). Kernels before 5.3 answer ENOSYS.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })
}

/// Sends `sig` to the process `pidfd` refers to (never to another that reused its pid).
pub fn pidfd_send_signal(pidfd: impl AsFd, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall, no siginfo.
    check_long(unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, raw(&pidfd), sig, std::ptr::null::<libc::siginfo_t>(), 0)
    })
    .map(drop)
}

pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Waits until any of `fds` is readable or `timeout_ms` passes (-1: forever); which are. For
/// a pidfd, readable means the process exited.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: an array of pollfds of the length given.
    retry(|| check(unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) }))?;
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(i32),
    Signaled(i32),
}

impl WaitStatus {
    /// The shell's convention, as runc's `run` returns: the exit code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            WaitStatus::Exited(c) => c,
            WaitStatus::Signaled(s) => 128 + s,
        }
    }

    /// A status from waitpid(2), if it says the process ended.
    pub fn from_raw(status: i32) -> Option<Self> {
        if libc::WIFEXITED(status) {
            Some(WaitStatus::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(WaitStatus::Signaled(libc::WTERMSIG(status)))
        } else {
            None
        }
    }
}

/// waitpid(2) for a child that ended (-1: any); `nohang` returns None when none has.
pub fn waitpid(pid: i32, nohang: bool) -> io::Result<Option<(i32, WaitStatus)>> {
    loop {
        let mut status = 0;
        let flags = if nohang { libc::WNOHANG } else { 0 };
        // SAFETY: a valid status out-pointer.
        let ret = retry(|| check(unsafe { libc::waitpid(pid, &mut status, flags) }))?;
        if ret == 0 {
            return Ok(None);
        }
        if let Some(ws) = WaitStatus::from_raw(status) {
            return Ok(Some((ret, ws)));
        }
    }
}

pub fn prctl(option: i32, arg2: u64) -> io::Result<()> {
    // SAFETY: the options used take one integer argument.
    check(unsafe { libc::prctl(option, arg2, 0u64, 0u64, 0u64) }).map(drop)
}

pub fn setsid() -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::setsid() }).map(drop)
}

/// Makes the mount of a hybrid host's cgroup2 hierarchy (/sys/fs/cgroup/unified) invisible to
/// this process and what it execs: a mount namespace of its own without it, for runtimes that
/// refuse hybrid hosts (crun). Only /sys/fs/cgroup is made private there (so the unmount does
/// not reach the host); every other mount keeps the host's propagation, so a container's
/// shared and slave mounts still exchange mounts with the host. Async-signal-safe: for
/// between fork and exec.
pub fn hide_cgroup2_unified() -> io::Result<()> {
    unshare(libc::CLONE_NEWNS)?;
    let private = |path: &CStr| {
        // SAFETY: C strings and null pointers.
        check(unsafe {
            libc::mount(
                std::ptr::null(),
                path.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        })
    };
    // /sys/fs/cgroup is a mount on a hybrid host; anywhere else, all of this namespace.
    if private(c"/sys/fs/cgroup").is_err() {
        private(c"/")?;
    }
    // Not there: nothing to hide.
    // SAFETY: a C string literal.
    unsafe { libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH) };
    Ok(())
}
