//! Files and descriptors: opening (with openat2's constrained resolution), stat, the *at
//! calls relative to a directory descriptor, extended attributes, renames, descriptor flags,
//! pipes, memfds, reads and writes. Nothing here follows a symlink unless its name or its
//! flags say so.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::{check, check_long, owned, raw, retry, Arg};

/// The working directory, as the directory descriptor of the *at calls (AT_FDCWD).
// SAFETY: AT_FDCWD is not -1, and the kernel takes it for the working directory, which always
// exists.
pub const CWD: BorrowedFd<'static> = unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) };

// ---------------------------------------------------------------------------------------- opening

pub const RESOLVE_NO_XDEV: u64 = 0x01;
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;
pub const RESOLVE_IN_ROOT: u64 = 0x10;

/// openat2(2): `path` resolved relative to `dir` as `resolve` constrains it (e.g.
/// [`RESOLVE_IN_ROOT`]). Retried when interrupted, and on EAGAIN (a rename or mount racing a
/// `..` lookup under RESOLVE_BENEATH or RESOLVE_IN_ROOT: the kernel asks to try again).
pub fn openat2<P: Arg + ?Sized>(dir: impl AsFd, path: &P, flags: i32, mode: u32, resolve: u64) -> io::Result<OwnedFd> {
    let c = path.to_c()?;
    // SAFETY: open_how is plain data.
    let mut how: libc::open_how = unsafe { zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = mode as u64;
    how.resolve = resolve;
    loop {
        // SAFETY: valid pointers for the duration of the call.
        let fd = owned(unsafe {
            libc::syscall(
                libc::SYS_openat2,
                raw(&dir),
                c.as_ptr(),
                &how as *const libc::open_how,
                size_of::<libc::open_how>(),
            )
        });
        match fd {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) => continue,
            other => return other,
        }
    }
}

/// Opens `path` (relative, several components allowed; empty for `dir` itself) beneath `dir`
/// without following any symlink and without crossing a mount point. A symlink anywhere on the
/// path gives ELOOP.
pub fn open_beneath<P: Arg + ?Sized>(dir: impl AsFd, path: &P, flags: i32) -> io::Result<OwnedFd> {
    let c = path.to_c()?;
    let path: &CStr = if c.is_empty() { c"." } else { &c };
    openat2(dir, path, flags, 0, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
}

/// Opens `path` as if `dir` were the root directory: absolute symlinks and `..` are clamped to
/// `dir`. For reading files such as /etc/passwd inside an image's root filesystem.
pub fn open_in_root<P: Arg + ?Sized>(dir: impl AsFd, path: &P, flags: i32) -> io::Result<OwnedFd> {
    openat2(dir, path, flags, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
}

/// openat(2), close-on-exec, retried when interrupted.
pub fn openat<P: Arg + ?Sized>(dir: impl AsFd, path: &P, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = path.to_c()?;
    // SAFETY: valid C string.
    retry(|| owned(unsafe { libc::openat(raw(&dir), c.as_ptr(), flags | libc::O_CLOEXEC, mode) } as libc::c_long))
}

pub fn open<P: Arg + ?Sized>(path: &P, flags: i32) -> io::Result<OwnedFd> {
    openat(CWD, path, flags, 0)
}

/// Takes an exclusive flock(2) on `fd`, waiting as long as another holds it (through EINTR).
/// The lock goes when the open file's last descriptor is closed.
pub fn lock_exclusive(fd: impl AsFd) -> io::Result<()> {
    // SAFETY: flock on a descriptor the caller holds.
    retry(|| check(unsafe { libc::flock(raw(&fd), libc::LOCK_EX) })).map(drop)
}

/// Takes an exclusive flock(2) on `fd` only if no one holds it: false when another does.
pub fn try_lock_exclusive(fd: impl AsFd) -> io::Result<bool> {
    // SAFETY: as above.
    match retry(|| check(unsafe { libc::flock(raw(&fd), libc::LOCK_EX | libc::LOCK_NB) })) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

/// A directory, for the *at calls below.
pub fn open_dir<P: Arg + ?Sized>(path: &P) -> io::Result<OwnedFd> {
    open(path, libc::O_RDONLY | libc::O_DIRECTORY)
}

/// Creates the file `name` in `dir` for writing, mode 0600 (for the caller to set its owner and
/// mode on the descriptor): never an existing file, never through a symlink.
pub fn create_file<P: Arg + ?Sized>(dir: impl AsFd, name: &P) -> io::Result<OwnedFd> {
    openat(dir, name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW, 0o600)
}

/// memfd_create(2) flags.
pub const MFD_CLOEXEC: u32 = 0x1;
pub const MFD_ALLOW_SEALING: u32 = 0x2;
pub const MFD_EXEC: u32 = 0x10;

pub fn memfd_create(name: &CStr, flags: u32) -> io::Result<OwnedFd> {
    // SAFETY: valid C string.
    owned(unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), flags) })
}

/// A pipe (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: valid array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: fresh descriptors from pipe2.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn mkfifo<P: Arg + ?Sized>(path: &P, mode: u32) -> io::Result<()> {
    let c = path.to_c()?;
    // SAFETY: valid C string.
    check(unsafe { libc::mkfifo(c.as_ptr(), mode) }).map(drop)
}

// ---------------------------------------------------------------------------------------- stat

pub fn fstat(fd: impl AsFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled by the kernel.
    let mut st: libc::stat = unsafe { zeroed() };
    check(unsafe { libc::fstat(raw(&fd), &mut st) })?;
    Ok(st)
}

pub fn fstatat<P: Arg + ?Sized>(dir: impl AsFd, path: &P, flags: i32) -> io::Result<libc::stat> {
    let c = path.to_c()?;
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { zeroed() };
    check(unsafe { libc::fstatat(raw(&dir), c.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

/// stat of a directory entry itself (a symlink is not followed).
pub fn lstatat<P: Arg + ?Sized>(dir: impl AsFd, name: &P) -> io::Result<libc::stat> {
    fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW)
}

pub fn fstatfs(fd: impl AsFd) -> io::Result<libc::statfs> {
    // SAFETY: plain data.
    let mut st: libc::statfs = unsafe { zeroed() };
    check(unsafe { libc::fstatfs(raw(&fd), &mut st) })?;
    Ok(st)
}

/// Free bytes for privileged writers on the filesystem of `fd`.
pub fn free_bytes(fd: impl AsFd) -> io::Result<u64> {
    // SAFETY: plain data.
    let mut st: libc::statvfs = unsafe { zeroed() };
    check(unsafe { libc::fstatvfs(raw(&fd), &mut st) })?;
    Ok(st.f_bfree as u64 * st.f_frsize as u64)
}

// ---------------------------------------------------------------------------------------- the *at calls

pub fn mkdirat<P: Arg + ?Sized>(dir: impl AsFd, name: &P, mode: u32) -> io::Result<()> {
    let c = name.to_c()?;
    // SAFETY: valid C string.
    check(unsafe { libc::mkdirat(raw(&dir), c.as_ptr(), mode as libc::mode_t) }).map(drop)
}

pub fn mknodat<P: Arg + ?Sized>(dir: impl AsFd, name: &P, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    let c = name.to_c()?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknodat(raw(&dir), c.as_ptr(), mode as libc::mode_t, dev) }).map(drop)
}

/// Creates the symlink `name` in `dir`, pointing at `target`.
pub fn symlinkat<T: Arg + ?Sized, P: Arg + ?Sized>(target: &T, dir: impl AsFd, name: &P) -> io::Result<()> {
    let (t, n) = (target.to_c()?, name.to_c()?);
    // SAFETY: valid C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), raw(&dir), n.as_ptr()) }).map(drop)
}

/// A hard link `new` in `new_dir` to `old` in `old_dir` (a symlink is linked, not followed).
pub fn linkat<O: Arg + ?Sized, N: Arg + ?Sized>(
    old_dir: impl AsFd,
    old: &O,
    new_dir: impl AsFd,
    new: &N,
) -> io::Result<()> {
    let (o, n) = (old.to_c()?, new.to_c()?);
    // SAFETY: valid C strings.
    check(unsafe { libc::linkat(raw(&old_dir), o.as_ptr(), raw(&new_dir), n.as_ptr(), 0) }).map(drop)
}

pub fn unlinkat<P: Arg + ?Sized>(dir: impl AsFd, name: &P, flags: i32) -> io::Result<()> {
    let c = name.to_c()?;
    // SAFETY: valid C string.
    check(unsafe { libc::unlinkat(raw(&dir), c.as_ptr(), flags) }).map(drop)
}

pub fn fchownat<P: Arg + ?Sized>(dir: impl AsFd, path: &P, uid: u32, gid: u32, flags: i32) -> io::Result<()> {
    let c = path.to_c()?;
    // SAFETY: valid C string.
    check(unsafe { libc::fchownat(raw(&dir), c.as_ptr(), uid, gid, flags) }).map(drop)
}

/// chown of a directory entry itself (a symlink is not followed).
pub fn lchownat<P: Arg + ?Sized>(dir: impl AsFd, name: &P, uid: u32, gid: u32) -> io::Result<()> {
    fchownat(dir, name, uid, gid, libc::AT_SYMLINK_NOFOLLOW)
}

pub fn fchown(fd: impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::fchown(raw(&fd), uid, gid) }).map(drop)
}

pub fn fchmod(fd: impl AsFd, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::fchmod(raw(&fd), mode as libc::mode_t) }).map(drop)
}

/// chmod of a directory entry that the caller just created and knows not to be a symlink.
pub fn fchmodat<P: Arg + ?Sized>(dir: impl AsFd, name: &P, mode: u32) -> io::Result<()> {
    let c = name.to_c()?;
    // SAFETY: valid C string.
    check(unsafe { libc::fchmodat(raw(&dir), c.as_ptr(), mode as libc::mode_t, 0) }).map(drop)
}

/// chmod through an O_PATH descriptor (fchmod refuses those): via its /proc/self/fd magic link.
pub fn fchmod_path_fd(fd: impl AsFd, mode: u32) -> io::Result<()> {
    let path = format!("/proc/self/fd/{}", raw(&fd));
    let c = path.to_c()?;
    // SAFETY: valid C string.
    check(unsafe { libc::chmod(c.as_ptr(), mode) }).map(drop)
}

fn timespec(secs: i64, nsec: u32) -> libc::timespec {
    libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: nsec as libc::c_long }
}

/// Sets a file's access and modification times both to `secs`.`nsec`.
pub fn futimens(fd: impl AsFd, secs: i64, nsec: u32) -> io::Result<()> {
    let t = [timespec(secs, nsec), timespec(secs, nsec)];
    // SAFETY: two valid timespecs.
    check(unsafe { libc::futimens(raw(&fd), t.as_ptr()) }).map(drop)
}

/// [`futimens`] of a directory entry itself (a symlink is not followed).
pub fn lutimensat<P: Arg + ?Sized>(dir: impl AsFd, name: &P, secs: i64, nsec: u32) -> io::Result<()> {
    let c = name.to_c()?;
    let t = [timespec(secs, nsec), timespec(secs, nsec)];
    // SAFETY: valid C string and timespecs.
    check(unsafe { libc::utimensat(raw(&dir), c.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) }).map(drop)
}

/// The target of the symlink `name` in `dir` (an empty name: the symlink an O_PATH descriptor
/// refers to). Up to PATH_MAX bytes.
pub fn readlinkat<P: Arg + ?Sized>(dir: impl AsFd, name: &P) -> io::Result<Vec<u8>> {
    let c = name.to_c()?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: a buffer of the size given.
    let n = check_long(unsafe { libc::readlinkat(raw(&dir), c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) } as _)?;
    buf.truncate(n as usize);
    Ok(buf)
}

// ---------------------------------------------------------------------------------------- xattrs

pub fn fsetxattr(fd: impl AsFd, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: valid C string and buffer.
    check(unsafe { libc::fsetxattr(raw(&fd), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) }).map(drop)
}

/// setxattr on a directory entry without following it, through /proc/self/fd of its parent.
pub fn lsetxattrat(dir: impl AsFd, name: &CStr, attr: &CStr, value: &[u8]) -> io::Result<()> {
    let mut p = format!("/proc/self/fd/{}/", raw(&dir)).into_bytes();
    p.extend_from_slice(name.to_bytes());
    let p = p.to_c()?;
    // SAFETY: valid C strings and buffer.
    check(unsafe { libc::lsetxattr(p.as_ptr(), attr.as_ptr(), value.as_ptr().cast(), value.len(), 0) }).map(drop)
}

/// An extended attribute's value (up to 256 bytes), None when the file has none of that name.
pub fn fgetxattr(fd: impl AsFd, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    // SAFETY: a buffer of the size given.
    let n = unsafe { libc::fgetxattr(raw(&fd), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

/// The extended attribute names of a file (a real file or directory, not an O_PATH
/// descriptor); none where the filesystem has no xattrs.
pub fn flistxattr(fd: impl AsFd) -> io::Result<Vec<CString>> {
    // SAFETY: a size query.
    let n = unsafe { libc::flistxattr(raw(&fd), std::ptr::null_mut(), 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOTSUP) { Ok(Vec::new()) } else { Err(e) };
    }
    let mut buf = vec![0u8; n as usize];
    // SAFETY: a buffer of the size given.
    let n = check_long(unsafe { libc::flistxattr(raw(&fd), buf.as_mut_ptr().cast(), buf.len()) } as _)?;
    buf.truncate(n as usize);
    Ok(buf.split(|b| *b == 0).filter(|s| !s.is_empty()).filter_map(|s| CString::new(s).ok()).collect())
}

/// Removes an extended attribute (a real file or directory, not an O_PATH descriptor).
pub fn fremovexattr(fd: impl AsFd, name: &CStr) -> io::Result<()> {
    // SAFETY: a valid C string.
    check(unsafe { libc::fremovexattr(raw(&fd), name.as_ptr()) }).map(drop)
}

/// Every extended attribute of a file (a real file or directory, not an O_PATH descriptor),
/// values whole whatever their size.
pub fn fxattrs(fd: impl AsFd) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in flistxattr(&fd)? {
        // The size, then the value; a value that grows in between is asked for again.
        loop {
            // SAFETY: a size query.
            let n = unsafe { libc::fgetxattr(raw(&fd), name.as_ptr(), std::ptr::null_mut(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENODATA) {
                    break;
                }
                return Err(e);
            }
            let mut buf = vec![0u8; n as usize];
            // SAFETY: a buffer of the size given.
            let got = unsafe { libc::fgetxattr(raw(&fd), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if got < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ERANGE) => continue,
                    Some(libc::ENODATA) => break,
                    _ => return Err(e),
                }
            }
            buf.truncate(got as usize);
            out.push((name, buf));
            break;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------- directories

/// The names in a directory (without `.` and `..`).
pub fn read_dir_names(dir: impl AsFd) -> io::Result<Vec<CString>> {
    // readdir moves the descriptor's offset: a descriptor of our own, which closedir closes.
    let dup = openat(&dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    // SAFETY: fdopendir takes over the descriptor.
    let dirp = unsafe { libc::fdopendir(dup.as_raw_fd()) };
    if dirp.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(dup);
    let mut names = Vec::new();
    loop {
        // SAFETY: errno is thread-local; readdir64 on the stream we opened.
        unsafe { *libc::__errno_location() = 0 };
        let ent = unsafe { libc::readdir64(dirp) };
        if ent.is_null() {
            let errno = unsafe { *libc::__errno_location() };
            // SAFETY: the stream is ours; this closes its descriptor.
            unsafe { libc::closedir(dirp) };
            if errno != 0 {
                return Err(io::Error::from_raw_os_error(errno));
            }
            return Ok(names);
        }
        // SAFETY: readdir returned an entry with a NUL-terminated name.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b != b"." && b != b".." {
            names.push(name.to_owned());
        }
    }
}

/// Removes `name` inside `dir` whatever it is; directories recursively, through descriptors
/// only. A missing `name` is no error.
pub fn remove_all_at(dir: impl AsFd, name: &CStr) -> io::Result<()> {
    let dir = dir.as_fd();
    let st = match lstatat(dir, name) {
        Ok(st) => st,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let sub = openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
        for child in read_dir_names(&sub)? {
            remove_all_at(&sub, &child)?;
        }
        unlinkat(dir, name, libc::AT_REMOVEDIR)
    } else {
        unlinkat(dir, name, 0)
    }
}

pub fn fchdir(fd: impl AsFd) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::fchdir(raw(&fd)) }).map(drop)
}

pub fn chdir<P: Arg + ?Sized>(path: &P) -> io::Result<()> {
    let c = path.to_c()?;
    // SAFETY: valid C string.
    check(unsafe { libc::chdir(c.as_ptr()) }).map(drop)
}

pub fn fsync_dir<P: Arg + ?Sized>(path: &P) -> io::Result<()> {
    let fd = open_dir(path)?;
    // SAFETY: plain syscall.
    check(unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

// ---------------------------------------------------------------------------------------- renames

fn renameat2(old: &CStr, new: &CStr, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: valid C strings.
    check_long(unsafe {
        libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, old.as_ptr(), libc::AT_FDCWD, new.as_ptr(), flags)
    })
    .map(drop)
}

/// rename(2) that fails with EEXIST instead of replacing an existing `new` (RENAME_NOREPLACE;
/// on filesystems without it, an existence check first).
pub fn rename_noreplace(old: &Path, new: &Path) -> io::Result<()> {
    match renameat2(&old.to_c()?, &new.to_c()?, libc::RENAME_NOREPLACE) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        other => return other,
    }
    if std::fs::symlink_metadata(new).is_ok() {
        return Err(io::Error::from_raw_os_error(libc::EEXIST));
    }
    std::fs::rename(old, new)
}

/// Swaps two existing paths atomically (RENAME_EXCHANGE), so that `b` never disappears. On
/// filesystems without it: `b` is moved to `b_aside` first, then `a` to `b`, then `b_aside` to `a`.
pub fn rename_exchange(a: &Path, b: &Path, b_aside: &Path) -> io::Result<()> {
    match renameat2(&a.to_c()?, &b.to_c()?, libc::RENAME_EXCHANGE) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        other => return other,
    }
    std::fs::rename(b, b_aside)?;
    std::fs::rename(a, b)?;
    std::fs::rename(b_aside, a)
}

// ---------------------------------------------------------------------------------------- descriptors

/// A duplicate of `fd` (numbered 3 or above, close-on-exec).
pub fn dup(fd: impl AsFd) -> io::Result<OwnedFd> {
    // SAFETY: plain fcntl.
    owned(unsafe { libc::fcntl(raw(&fd), libc::F_DUPFD_CLOEXEC, 3) } as libc::c_long)
}

pub fn set_cloexec(fd: impl AsFd, on: bool) -> io::Result<()> {
    let fd = raw(&fd);
    // SAFETY: plain fcntl.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    let flags = if on { flags | libc::FD_CLOEXEC } else { flags & !libc::FD_CLOEXEC };
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags) }).map(drop)
}

pub fn set_nonblocking(fd: impl AsFd, on: bool) -> io::Result<()> {
    let fd = raw(&fd);
    // SAFETY: plain fcntl.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(drop)
}

/// Marks every descriptor numbered `from` and up close-on-exec: close_range(CLOSE_RANGE_CLOEXEC),
/// or on kernels without it (before 5.11) each descriptor /proc/self/fd lists. So nothing this
/// process holds leaks into the program it execs, while it can still use them until then.
pub fn cloexec_from(from: RawFd) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    // SAFETY: plain syscall.
    match check_long(unsafe { libc::syscall(libc::SYS_close_range, from as u32, u32::MAX, CLOSE_RANGE_CLOEXEC) }) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) => {
            let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .filter(|fd| *fd >= from)
                .collect();
            for fd in fds {
                // SAFETY: only flags are changed; a number that is not open (the directory's own
                // descriptor is gone by now) fails with EBADF.
                match set_cloexec(unsafe { BorrowedFd::borrow_raw(fd) }, true) {
                    Err(e) if e.raw_os_error() != Some(libc::EBADF) => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// flock(2), retried when interrupted.
pub fn flock(fd: impl AsFd, op: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    retry(|| check(unsafe { libc::flock(raw(&fd), op) }).map(drop))
}

// ---------------------------------------------------------------------------------------- I/O

/// read(2), retried when interrupted; 0 at end of file.
pub fn read(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: a buffer of the size given.
    retry(|| check_long(unsafe { libc::read(raw(&fd), buf.as_mut_ptr().cast(), buf.len()) } as libc::c_long))
        .map(|n| n as usize)
}

/// write(2), retried when interrupted: how much of `buf` was written.
pub fn write(fd: impl AsFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: a buffer of the size given.
    retry(|| check_long(unsafe { libc::write(raw(&fd), buf.as_ptr().cast(), buf.len()) } as libc::c_long))
        .map(|n| n as usize)
}

/// Writes all of `data` (retried when interrupted or short).
pub fn write_all(fd: impl AsFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = write(&fd, data)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
        }
        data = &data[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-sys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn names_with_a_nul_are_refused() {
        let e = open("a\0b", libc::O_RDONLY).unwrap_err();
        assert_eq!((e.kind(), e.to_string().as_str()), (io::ErrorKind::InvalidInput, "path contains a NUL byte"));
        let e = mkdirat(CWD, b"a\0b", 0o700).unwrap_err();
        assert_eq!(e.to_string(), "name contains a NUL byte");
    }

    #[test]
    fn beneath_follows_no_symlink_and_stays_below() {
        let base = temp_dir("beneath");
        std::fs::create_dir(base.join("d")).unwrap();
        std::fs::write(base.join("d/f"), b"x").unwrap();
        std::os::unix::fs::symlink("d", base.join("link")).unwrap();
        let dir = open_dir(&base).unwrap();
        assert!(open_beneath(&dir, "d/f", libc::O_RDONLY).is_ok());
        assert!(open_beneath(&dir, "", libc::O_RDONLY | libc::O_DIRECTORY).is_ok(), "the directory itself");
        assert_eq!(open_beneath(&dir, "link/f", libc::O_RDONLY).unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(open_beneath(&dir, "../x", libc::O_RDONLY).unwrap_err().raw_os_error(), Some(libc::EXDEV));
        // In the root, the absolute link and `..` stay inside it.
        std::os::unix::fs::symlink("/d/f", base.join("abs")).unwrap();
        assert!(open_in_root(&dir, "abs", libc::O_RDONLY).is_ok());
        assert!(open_in_root(&dir, "../../d/f", libc::O_RDONLY).is_ok());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn entries_by_directory_descriptor() {
        let base = temp_dir("at");
        let dir = open_dir(&base).unwrap();
        mkdirat(&dir, "sub", 0o700).unwrap();
        symlinkat("sub", &dir, "link").unwrap();
        assert_eq!(readlinkat(&dir, "link").unwrap(), b"sub");
        assert_eq!(lstatat(&dir, "link").unwrap().st_mode & libc::S_IFMT, libc::S_IFLNK);
        assert_eq!(fstatat(&dir, "link", 0).unwrap().st_mode & libc::S_IFMT, libc::S_IFDIR);
        let f = create_file(&dir, "file").unwrap();
        write_all(&f, b"abc").unwrap();
        assert_eq!(create_file(&dir, "file").unwrap_err().raw_os_error(), Some(libc::EEXIST));
        assert_eq!(create_file(&dir, "link").unwrap_err().raw_os_error(), Some(libc::EEXIST));
        linkat(&dir, "file", &dir, "hard").unwrap();
        assert_eq!(fstat(&f).unwrap().st_nlink, 2);
        let mut names: Vec<_> = read_dir_names(&dir).unwrap().into_iter().map(|n| n.into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["file", "hard", "link", "sub"]);
        mkdirat(&dir, "sub/deeper", 0o700).unwrap();
        remove_all_at(&dir, c"sub").unwrap();
        remove_all_at(&dir, c"gone").unwrap();
        assert!(!base.join("sub").exists() && base.join("link").is_symlink());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn renames_without_replacing() {
        let base = temp_dir("rename");
        let (a, b, aside) = (base.join("a"), base.join("b"), base.join("aside"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        assert_eq!(rename_noreplace(&a, &b).unwrap_err().raw_os_error(), Some(libc::EEXIST));
        rename_exchange(&a, &b, &aside).unwrap();
        assert_eq!((std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap()), (b"b".to_vec(), b"a".to_vec()));
        rename_noreplace(&a, &base.join("c")).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn descriptor_flags() {
        let (r, w) = pipe().unwrap();
        let copy = dup(&w).unwrap();
        assert!(copy.as_raw_fd() >= 3);
        // SAFETY: plain fcntl.
        let cloexec = |fd: &OwnedFd| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) } & libc::FD_CLOEXEC != 0;
        assert!(cloexec(&r) && cloexec(&copy));
        set_cloexec(&copy, false).unwrap();
        assert!(!cloexec(&copy));
        set_nonblocking(&r, true).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(read(&r, &mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        write_all(&copy, b"z").unwrap();
        assert_eq!(read(&r, &mut buf).unwrap(), 1);
    }

    #[test]
    fn an_exclusive_lock_keeps_others_out_until_closed() {
        let path = std::env::temp_dir().join(format!("berth-sys-lock-{}", std::process::id()));
        let open = || std::fs::File::options().create(true).truncate(false).write(true).open(&path).unwrap();
        let (first, second) = (open(), open());
        lock_exclusive(&first).unwrap();
        assert!(!try_lock_exclusive(&second).unwrap(), "a second open file took a held lock");
        drop(first);
        assert!(try_lock_exclusive(&second).unwrap(), "the lock outlived its file");
        std::fs::remove_file(&path).unwrap();
    }
}
