//! Thin, safe wrappers over the Linux system calls the runtime needs and that neither std nor
//! libc wrap conveniently: the fd-based mount API, openat2, clone3, pidfds, SCM_RIGHTS.
//! Each returns `io::Result` so callers add what they were doing with `.ctx(..)`.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::{size_of, zeroed, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn cstr<P: AsRef<OsStr> + ?Sized>(path: &P) -> io::Result<CString> {
    CString::new(path.as_ref().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check_long(fd)?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Retries a call interrupted by a signal.
/// Whether the effective user is root in the user namespace we run in.
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

// ---------------------------------------------------------------------------------------- files

pub const RESOLVE_NO_XDEV: u64 = 0x01;
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;
pub const RESOLVE_IN_ROOT: u64 = 0x10;

/// openat2(2): path resolution constrained by `resolve` (e.g. [`RESOLVE_IN_ROOT`]).
pub fn openat2(dirfd: RawFd, path: &Path, flags: i32, mode: u32, resolve: u64) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: open_how is plain data.
    let mut how: libc::open_how = unsafe { zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = mode as u64;
    how.resolve = resolve;
    retry(|| {
        // SAFETY: valid pointers for the duration of the call.
        owned(unsafe {
            libc::syscall(libc::SYS_openat2, dirfd, c.as_ptr(), &how as *const _, size_of::<libc::open_how>())
        })
    })
}

pub fn openat(dirfd: RawFd, path: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: valid C string.
    retry(|| owned(unsafe { libc::openat(dirfd, c.as_ptr(), flags | libc::O_CLOEXEC, mode) } as libc::c_long))
}

pub fn open(path: &Path, flags: i32) -> io::Result<OwnedFd> {
    openat(libc::AT_FDCWD, path, flags, 0)
}

pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled by the kernel.
    let mut st: libc::stat = unsafe { zeroed() };
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

pub fn fstatat(dirfd: RawFd, path: &Path, flags: i32) -> io::Result<libc::stat> {
    let c = cstr(path)?;
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { zeroed() };
    check(unsafe { libc::fstatat(dirfd, c.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

pub fn fstatfs(fd: RawFd) -> io::Result<libc::statfs> {
    // SAFETY: plain data.
    let mut st: libc::statfs = unsafe { zeroed() };
    check(unsafe { libc::fstatfs(fd, &mut st) })?;
    Ok(st)
}

pub fn mkdirat(dirfd: RawFd, name: &Path, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::mkdirat(dirfd, c.as_ptr(), mode) }).map(drop)
}

pub fn mknodat(dirfd: RawFd, name: &Path, mode: u32, dev: u64) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::mknodat(dirfd, c.as_ptr(), mode, dev) }).map(drop)
}

pub fn symlinkat(target: &Path, dirfd: RawFd, name: &Path) -> io::Result<()> {
    let t = cstr(target)?;
    let n = cstr(name)?;
    check(unsafe { libc::symlinkat(t.as_ptr(), dirfd, n.as_ptr()) }).map(drop)
}

pub fn fchownat(dirfd: RawFd, path: &Path, uid: u32, gid: u32, flags: i32) -> io::Result<()> {
    let c = cstr(path)?;
    check(unsafe { libc::fchownat(dirfd, c.as_ptr(), uid, gid, flags) }).map(drop)
}

pub fn fchown(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    check(unsafe { libc::fchown(fd, uid, gid) }).map(drop)
}

pub fn fchmod(fd: RawFd, mode: u32) -> io::Result<()> {
    check(unsafe { libc::fchmod(fd, mode) }).map(drop)
}

/// chmod through an O_PATH descriptor (fchmod refuses those): via its /proc/self/fd magic link.
pub fn fchmod_path_fd(fd: RawFd, mode: u32) -> io::Result<()> {
    let path = format!("/proc/self/fd/{fd}");
    let c = cstr(&path)?;
    check(unsafe { libc::chmod(c.as_ptr(), mode) }).map(drop)
}

pub fn fchdir(fd: RawFd) -> io::Result<()> {
    check(unsafe { libc::fchdir(fd) }).map(drop)
}

pub fn chdir(path: &Path) -> io::Result<()> {
    let c = cstr(path)?;
    check(unsafe { libc::chdir(c.as_ptr()) }).map(drop)
}

pub fn mkfifo(path: &Path, mode: u32) -> io::Result<()> {
    let c = cstr(path)?;
    check(unsafe { libc::mkfifo(c.as_ptr(), mode) }).map(drop)
}

pub fn write_all(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = retry(|| check_long(unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) } as libc::c_long))?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
        }
        data = &data[n as usize..];
    }
    Ok(())
}

pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    retry(|| check_long(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } as libc::c_long))
        .map(|n| n as usize)
}

pub const MFD_CLOEXEC: u32 = 0x1;
pub const MFD_ALLOW_SEALING: u32 = 0x2;
pub const MFD_EXEC: u32 = 0x10;

pub fn memfd_create(name: &CStr, flags: u32) -> io::Result<OwnedFd> {
    owned(unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), flags) })
}

pub fn dup_fd(fd: RawFd) -> io::Result<OwnedFd> {
    owned(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) } as libc::c_long)
}

pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    let flags = if on { flags | libc::FD_CLOEXEC } else { flags & !libc::FD_CLOEXEC };
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags) }).map(drop)
}

pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(drop)
}

/// The path an fd refers to, as the kernel names it (for error messages and checks).
pub fn fd_path(fd: RawFd) -> io::Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
}

pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: fresh descriptors from pipe2.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

// ---------------------------------------------------------------------------------------- mounts

pub const FSOPEN_CLOEXEC: u32 = 0x1;
pub const FSMOUNT_CLOEXEC: u32 = 0x1;
pub const FSCONFIG_SET_FLAG: u32 = 0;
pub const FSCONFIG_SET_STRING: u32 = 1;
pub const FSCONFIG_CMD_CREATE: u32 = 6;
pub const OPEN_TREE_CLONE: u32 = 1;
pub const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x04;
pub const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

pub const MOUNT_ATTR_RDONLY: u64 = 0x01;
pub const MOUNT_ATTR_NOSUID: u64 = 0x02;
pub const MOUNT_ATTR_NODEV: u64 = 0x04;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x08;
pub const MOUNT_ATTR__ATIME: u64 = 0x70;
pub const MOUNT_ATTR_RELATIME: u64 = 0x00;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

pub fn fsopen(fstype: &str) -> io::Result<OwnedFd> {
    let c = cstr(fstype)?;
    owned(unsafe { libc::syscall(libc::SYS_fsopen, c.as_ptr(), FSOPEN_CLOEXEC) })
}

pub fn fsconfig_flag(fsfd: RawFd, key: &str) -> io::Result<()> {
    let k = cstr(key)?;
    check_long(unsafe {
        libc::syscall(libc::SYS_fsconfig, fsfd, FSCONFIG_SET_FLAG, k.as_ptr(), std::ptr::null::<u8>(), 0)
    })
    .map(drop)
}

pub fn fsconfig_string(fsfd: RawFd, key: &str, value: &str) -> io::Result<()> {
    let k = cstr(key)?;
    let v = cstr(value)?;
    check_long(unsafe { libc::syscall(libc::SYS_fsconfig, fsfd, FSCONFIG_SET_STRING, k.as_ptr(), v.as_ptr(), 0) })
        .map(drop)
}

pub fn fsconfig_create(fsfd: RawFd) -> io::Result<()> {
    check_long(unsafe {
        libc::syscall(libc::SYS_fsconfig, fsfd, FSCONFIG_CMD_CREATE, std::ptr::null::<u8>(), std::ptr::null::<u8>(), 0)
    })
    .map(drop)
}

/// The messages a filesystem context logged (the kernel's own words for why a mount option
/// was refused), read back from the fsopen descriptor.
pub fn fs_context_messages(fsfd: RawFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let _ = set_nonblocking(fsfd, true);
    while let Ok(n) = read(fsfd, &mut buf) {
        if n == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf[..n]);
        // Each message is "e text", "w text" or "i text".
        let text = line.get(2..).unwrap_or("").trim().to_string();
        if !text.is_empty() {
            out.push(text);
        }
    }
    out.join("; ")
}

pub fn fsmount(fsfd: RawFd, attr_flags: u64) -> io::Result<OwnedFd> {
    owned(unsafe { libc::syscall(libc::SYS_fsmount, fsfd, FSMOUNT_CLOEXEC, attr_flags as u32) })
}

/// open_tree(2) with OPEN_TREE_CLONE: a detached copy of the mount at `path` (relative to
/// `dirfd`; empty path with AT_EMPTY_PATH for the fd itself).
pub fn open_tree_clone(dirfd: RawFd, path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    if path.as_os_str().is_empty() {
        flags |= libc::AT_EMPTY_PATH as u32;
    }
    owned(unsafe { libc::syscall(libc::SYS_open_tree, dirfd, c.as_ptr(), flags) })
}

/// Attaches the detached mount `from` on top of the object `to` refers to.
pub fn move_mount_fd(from: RawFd, to: RawFd) -> io::Result<()> {
    let empty = c"";
    check_long(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from,
            empty.as_ptr(),
            to,
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(drop)
}

pub fn mount_setattr(fd: RawFd, path: &Path, recursive: bool, attr: &MountAttr) -> io::Result<()> {
    let c = cstr(path)?;
    let mut flags = 0u32;
    if path.as_os_str().is_empty() {
        flags |= libc::AT_EMPTY_PATH as u32;
    }
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    check_long(unsafe {
        libc::syscall(libc::SYS_mount_setattr, fd, c.as_ptr(), flags, attr as *const MountAttr, size_of::<MountAttr>())
    })
    .map(drop)
}

/// mount(2), for the few operations the fd-based API does not replace (propagation of "/",
/// the rootfs bind, moving the rootfs for --no-pivot).
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: u64,
    data: Option<&str>,
) -> io::Result<()> {
    let src = source.map(cstr).transpose()?;
    let tgt = cstr(target)?;
    let ty = fstype.map(cstr).transpose()?;
    let dat = data.map(cstr).transpose()?;
    check(unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            tgt.as_ptr(),
            ty.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags as libc::c_ulong,
            dat.as_ref().map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    })
    .map(drop)
}

pub fn umount2(target: &Path, flags: i32) -> io::Result<()> {
    let c = cstr(target)?;
    check(unsafe { libc::umount2(c.as_ptr(), flags) }).map(drop)
}

pub fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    let n = cstr(new_root)?;
    let o = cstr(put_old)?;
    check_long(unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) }).map(drop)
}

pub fn chroot(path: &Path) -> io::Result<()> {
    let c = cstr(path)?;
    check(unsafe { libc::chroot(c.as_ptr()) }).map(drop)
}

// ---------------------------------------------------------------------------------------- processes

pub enum Forked {
    Child,
    Parent { pid: i32, pidfd: OwnedFd },
}

/// clone3(2) without a new stack, i.e. fork() with namespace flags. The caller must be
/// single-threaded: the child continues in a copy of this address space.
pub fn clone3(flags: u64, cgroup_fd: Option<RawFd>) -> io::Result<Forked> {
    let mut pidfd: RawFd = -1;
    // SAFETY: clone_args is plain data.
    let mut args: libc::clone_args = unsafe { zeroed() };
    args.flags = flags | libc::CLONE_PIDFD as u64;
    args.pidfd = &mut pidfd as *mut RawFd as u64;
    // With CLONE_PARENT the child inherits our exit signal, and clone3 insists on 0 here.
    args.exit_signal = if flags & libc::CLONE_PARENT as u64 != 0 { 0 } else { libc::SIGCHLD as u64 };
    if let Some(fd) = cgroup_fd {
        const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
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

pub fn setns(fd: RawFd, nstype: i32) -> io::Result<()> {
    check(unsafe { libc::setns(fd, nstype) }).map(drop)
}

pub fn unshare(flags: i32) -> io::Result<()> {
    check(unsafe { libc::unshare(flags) }).map(drop)
}

pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    owned(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })
}

pub fn pidfd_send_signal(pidfd: RawFd, sig: i32) -> io::Result<()> {
    check_long(unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd, sig, std::ptr::null::<libc::siginfo_t>(), 0)
    })
    .map(drop)
}

pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Waits until the fd is readable or `timeout_ms` passes (-1: forever). For a pidfd,
/// readable means the process exited.
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
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

    fn from_raw(status: i32) -> Option<Self> {
        if libc::WIFEXITED(status) {
            Some(WaitStatus::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(WaitStatus::Signaled(libc::WTERMSIG(status)))
        } else {
            None
        }
    }
}

/// waitpid for a terminated child; `nohang` returns None when none has exited.
pub fn waitpid(pid: i32, nohang: bool) -> io::Result<Option<(i32, WaitStatus)>> {
    loop {
        let mut status = 0;
        let flags = if nohang { libc::WNOHANG } else { 0 };
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
    check(unsafe { libc::prctl(option, arg2, 0u64, 0u64, 0u64) }).map(drop)
}

pub fn setsid() -> io::Result<()> {
    check(unsafe { libc::setsid() }).map(drop)
}

pub fn getpid() -> i32 {
    unsafe { libc::getpid() }
}

/// Blocks the given signals and returns the previous mask (to restore in the container).
pub fn block_signals(signals: &[i32]) -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t manipulated through libc.
    unsafe {
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        let mut old: libc::sigset_t = zeroed();
        let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(old)
    }
}

/// Unblocks every signal and resets every handler to its default, as a freshly exec'd process
/// expects (the runtime blocks signals it reads from a signalfd).
pub fn default_signals() {
    // SAFETY: plain libc calls on valid data.
    unsafe {
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

extern "C" fn exit_on_signal(sig: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(128 + sig) }
}

/// Unblocks every signal and makes each one that would end a process by default end this one,
/// through a handler: a pid namespace's init ignores signals it has no handler for, and a
/// created container must still die of `kill`. execve resets handled signals to their
/// defaults, so the container's program starts with a clean slate.
pub fn exit_on_signals() {
    // SAFETY: plain libc calls on valid data; the handler only calls _exit.
    unsafe {
        for sig in 1..libc::SIGRTMAX() {
            if matches!(
                sig,
                libc::SIGKILL
                    | libc::SIGSTOP
                    | libc::SIGCHLD
                    | libc::SIGCONT
                    | libc::SIGURG
                    | libc::SIGWINCH
                    | libc::SIGTSTP
                    | libc::SIGTTIN
                    | libc::SIGTTOU
            ) {
                continue;
            }
            libc::signal(sig, exit_on_signal as *const () as libc::sighandler_t);
        }
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

pub fn signalfd(signals: &[i32]) -> io::Result<OwnedFd> {
    // SAFETY: as above.
    unsafe {
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        owned(libc::signalfd(-1, &set, libc::SFD_CLOEXEC) as libc::c_long)
    }
}

/// Reads one signal from a signalfd: its number and the pid of the process that sent it.
pub fn read_signal(fd: RawFd) -> io::Result<(i32, i32)> {
    let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
    let n = retry(|| {
        check_long(
            unsafe { libc::read(fd, info.as_mut_ptr().cast(), size_of::<libc::signalfd_siginfo>()) } as libc::c_long
        )
    })?;
    if n as usize != size_of::<libc::signalfd_siginfo>() {
        return Err(io::Error::other("short read from signalfd"));
    }
    // SAFETY: fully initialised by the read above.
    let info = unsafe { info.assume_init() };
    Ok((info.ssi_signo as i32, info.ssi_pid as i32))
}

// ---------------------------------------------------------------------------------------- sockets

/// struct ifreq with the flags member of its union (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfreqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _rest: [u8; 22],
}

/// Brings a network interface of this process's network namespace up (SIOCSIFFLAGS IFF_UP).
pub fn link_up(name: &str) -> io::Result<()> {
    let sock = owned(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) } as libc::c_long)?;
    let mut req = IfreqFlags { name: [0; 16], flags: 0, _rest: [0; 22] };
    req.name[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    // SAFETY: ioctls on a socket we own with a buffer laid out as the kernel's struct ifreq.
    unsafe {
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req))?;
        req.flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req))?;
    }
    Ok(())
}

pub fn socketpair_seqpacket() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    check(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
    // SAFETY: fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends `data` with the descriptors `fds` attached (SCM_RIGHTS).
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let fd_bytes = std::mem::size_of_val(fds);
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut cmsg_buf = vec![0u8; space.max(1)];
    // SAFETY: msghdr/cmsghdr built in buffers we own, sized with CMSG_SPACE.
    unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = cmsg_buf.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg) as *mut RawFd, fds.len());
        }
        retry(|| check_long(libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) as libc::c_long)).map(drop)
    }
}

/// Descriptors one message may carry (more are dropped by the kernel).
const MAX_FDS_PER_MESSAGE: u32 = 8;

/// Receives one message and any descriptors attached to it. Returns 0 bytes at EOF.
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let space = unsafe { libc::CMSG_SPACE(MAX_FDS_PER_MESSAGE * size_of::<RawFd>() as u32) } as usize;
    let mut cmsg_buf = vec![0u8; space];
    // SAFETY: as in send_with_fds; descriptors received are taken into OwnedFd once.
    unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg_buf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let n = retry(|| check_long(libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) as libc::c_long))?;
        let mut fds = Vec::new();
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(*data.add(i)));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok((n as usize, fds))
    }
}

pub fn connect_unix(path: &Path) -> io::Result<OwnedFd> {
    let stream = std::os::unix::net::UnixStream::connect(path)?;
    Ok(OwnedFd::from(stream))
}

// ---------------------------------------------------------------------------------------- misc

pub fn borrow(fd: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    fd.as_fd()
}

pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}

pub fn makedev(major: u64, minor: u64) -> u64 {
    libc::makedev(major as u32, minor as u32)
}

pub fn major(dev: u64) -> u64 {
    libc::major(dev) as u64
}

pub fn minor(dev: u64) -> u64 {
    libc::minor(dev) as u64
}

pub fn c_string_lossy(s: &CStr) -> String {
    s.to_string_lossy().into_owned()
}

/// Marks every descriptor from `from` upwards close-on-exec (close_range(2)), so nothing the
/// runtime holds leaks into the container process while the runtime can use them until exec.
/// Marks every descriptor from `from` up close-on-exec: close_range(CLOSE_RANGE_CLOEXEC), or on
/// kernels without it (before 5.11) each descriptor /proc/self/fd lists.
pub fn cloexec_from(from: RawFd) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    match check_long(unsafe { libc::syscall(libc::SYS_close_range, from as u32, u32::MAX, CLOSE_RANGE_CLOEXEC) }) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) => {
            let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .filter(|fd| *fd >= from)
                .collect();
            for fd in fds {
                // The directory's own descriptor is gone by now: EBADF.
                match set_cloexec(fd, true) {
                    Err(e) if e.raw_os_error() != Some(libc::EBADF) => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}
