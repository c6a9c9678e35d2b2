//! Thin, fd-based wrappers over the system calls the extractor and the snapshotter use. Every
//! path given here is relative to a directory fd; nothing here follows a symlink unless its
//! name says so.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

pub fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

const RESOLVE_NO_XDEV: u64 = 0x01;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;
const RESOLVE_IN_ROOT: u64 = 0x10;

fn openat2_raw(dir: RawFd, path: &CStr, flags: libc::c_int, mode: u32, resolve: u64) -> io::Result<OwnedFd> {
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = mode as u64;
    how.resolve = resolve;
    loop {
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) && e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Opens `path` (relative, several components allowed) beneath `dir` without following any
/// symlink and without crossing a mount point. A symlink anywhere on the path gives ELOOP.
pub fn open_beneath(dir: BorrowedFd, path: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let p = if path.is_empty() { cstr(b".")? } else { cstr(path)? };
    openat2_raw(
        dir.as_raw_fd(),
        &p,
        flags,
        0,
        RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    )
}

/// Opens `path` as if `dir` were the root directory: absolute symlinks and `..` are clamped to
/// `dir`. For reading files such as /etc/passwd inside an image's root filesystem.
pub fn open_in_root(dir: BorrowedFd, path: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    openat2_raw(dir.as_raw_fd(), &p, flags, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
}

pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_encoded_bytes())?;
    let fd = check(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn create_file(dir: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn mkdirat(dir: BorrowedFd, name: &CStr, mode: u32) -> io::Result<()> {
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

pub fn mknodat(dir: BorrowedFd, name: &CStr, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, dev) }).map(drop)
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

pub fn linkat(old_dir: BorrowedFd, old: &CStr, new_dir: BorrowedFd, new: &CStr) -> io::Result<()> {
    check(unsafe { libc::linkat(old_dir.as_raw_fd(), old.as_ptr(), new_dir.as_raw_fd(), new.as_ptr(), 0) }).map(drop)
}

pub fn unlinkat(dir: BorrowedFd, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub fn fstatat(dir: BorrowedFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

pub fn fstat(fd: BorrowedFd) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub fn fchown(fd: BorrowedFd, uid: u32, gid: u32) -> io::Result<()> {
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

pub fn fchmod(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// chown of a directory entry itself (a symlink is not followed).
pub fn lchownat(dir: BorrowedFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    check(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) }).map(drop)
}

/// chmod of a directory entry that the caller just created and knows not to be a symlink.
pub fn fchmodat(dir: BorrowedFd, name: &CStr, mode: u32) -> io::Result<()> {
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, 0) }).map(drop)
}

fn timespec(secs: i64, nsec: u32) -> libc::timespec {
    libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: nsec as libc::c_long }
}

pub fn futimens(fd: BorrowedFd, secs: i64, nsec: u32) -> io::Result<()> {
    let t = [timespec(secs, nsec), timespec(secs, nsec)];
    check(unsafe { libc::futimens(fd.as_raw_fd(), t.as_ptr()) }).map(drop)
}

pub fn lutimensat(dir: BorrowedFd, name: &CStr, secs: i64, nsec: u32) -> io::Result<()> {
    let t = [timespec(secs, nsec), timespec(secs, nsec)];
    check(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) }).map(drop)
}

pub fn fsetxattr(fd: BorrowedFd, name: &CStr, value: &[u8]) -> io::Result<()> {
    check(unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) }).map(drop)
}

/// setxattr on a directory entry without following it, through /proc/self/fd of its parent.
pub fn lsetxattrat(dir: BorrowedFd, name: &CStr, attr: &CStr, value: &[u8]) -> io::Result<()> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    let p = cstr(&p)?;
    check(unsafe { libc::lsetxattr(p.as_ptr(), attr.as_ptr(), value.as_ptr().cast(), value.len(), 0) }).map(drop)
}

pub fn fgetxattr(fd: BorrowedFd, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    let n = unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
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

/// Lists the extended attribute names of an fd (a real file or directory, not an O_PATH fd).
pub fn flistxattr(fd: BorrowedFd) -> io::Result<Vec<CString>> {
    let n = unsafe { libc::flistxattr(fd.as_raw_fd(), std::ptr::null_mut(), 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOTSUP) { Ok(Vec::new()) } else { Err(e) };
    }
    let mut buf = vec![0u8; n as usize];
    let n = check(unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } as libc::c_int)?;
    buf.truncate(n as usize);
    Ok(buf.split(|b| *b == 0).filter(|s| !s.is_empty()).filter_map(|s| CString::new(s).ok()).collect())
}

pub fn readlinkat(dir: BorrowedFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Free bytes for unprivileged and privileged writers on the filesystem of `fd`.
pub fn free_bytes(fd: BorrowedFd) -> io::Result<u64> {
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st.f_bfree as u64 * st.f_frsize as u64)
}

fn renameat2(old: &CStr, new: &CStr, flags: libc::c_uint) -> libc::c_long {
    unsafe { libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, old.as_ptr(), libc::AT_FDCWD, new.as_ptr(), flags) }
}

/// rename(2) that fails with EEXIST instead of replacing an existing `new` (RENAME_NOREPLACE;
/// on filesystems without it, an existence check first).
pub fn rename_noreplace(old: &Path, new: &Path) -> io::Result<()> {
    let (o, n) = (cstr(old.as_os_str().as_encoded_bytes())?, cstr(new.as_os_str().as_encoded_bytes())?);
    let r = renameat2(&o, &n, libc::RENAME_NOREPLACE);
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) {
        return Err(e);
    }
    if std::fs::symlink_metadata(new).is_ok() {
        return Err(io::Error::from_raw_os_error(libc::EEXIST));
    }
    std::fs::rename(old, new)
}

/// Swaps two existing paths atomically (RENAME_EXCHANGE), so that `b` never disappears. On
/// filesystems without it: `b` is moved to `b_aside` first, then `a` to `b`, then `b_aside` to `a`.
pub fn rename_exchange(a: &Path, b: &Path, b_aside: &Path) -> io::Result<()> {
    let (ca, cb) = (cstr(a.as_os_str().as_encoded_bytes())?, cstr(b.as_os_str().as_encoded_bytes())?);
    let r = renameat2(&ca, &cb, libc::RENAME_EXCHANGE);
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) {
        return Err(e);
    }
    std::fs::rename(b, b_aside)?;
    std::fs::rename(a, b)?;
    std::fs::rename(b_aside, a)
}

pub fn fsync_dir(path: &Path) -> io::Result<()> {
    let fd = open_dir(path)?;
    check(unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

/// Lists the names in a directory fd (without `.` and `..`).
pub fn read_dir_names(dir: BorrowedFd) -> io::Result<Vec<CString>> {
    let dup = check(unsafe {
        libc::openat(dir.as_raw_fd(), c".".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)
    })?;
    let dirp = unsafe { libc::fdopendir(dup) };
    if dirp.is_null() {
        let e = io::Error::last_os_error();
        unsafe { libc::close(dup) };
        return Err(e);
    }
    let mut names = Vec::new();
    loop {
        unsafe { *libc::__errno_location() = 0 };
        let ent = unsafe { libc::readdir64(dirp) };
        if ent.is_null() {
            let errno = unsafe { *libc::__errno_location() };
            unsafe { libc::closedir(dirp) };
            if errno != 0 {
                return Err(io::Error::from_raw_os_error(errno));
            }
            return Ok(names);
        }
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b != b"." && b != b".." {
            names.push(name.to_owned());
        }
    }
}

/// Removes `name` inside `dir` whatever it is; directories recursively, through fds only.
pub fn remove_all_at(dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    let st = match fstatat(dir, name) {
        Ok(st) => st,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let sub = check(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })?;
        let sub = unsafe { OwnedFd::from_raw_fd(sub) };
        use std::os::fd::AsFd;
        for child in read_dir_names(sub.as_fd())? {
            remove_all_at(sub.as_fd(), &child)?;
        }
        unlinkat(dir, name, libc::AT_REMOVEDIR)
    } else {
        unlinkat(dir, name, 0)
    }
}

// The new mount API, for overlay mounts with any number of lower directories ("lowerdir+").
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

pub struct FsContext(OwnedFd);

impl FsContext {
    pub fn open(fstype: &str) -> io::Result<FsContext> {
        let t = cstr(fstype.as_bytes())?;
        let fd = unsafe { libc::syscall(libc::SYS_fsopen, t.as_ptr(), FSOPEN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FsContext(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    pub fn set_string(&self, key: &str, value: &[u8]) -> io::Result<()> {
        let k = cstr(key.as_bytes())?;
        let v = cstr(value)?;
        let r = unsafe {
            libc::syscall(libc::SYS_fsconfig, self.0.as_raw_fd(), FSCONFIG_SET_STRING, k.as_ptr(), v.as_ptr(), 0)
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The messages the kernel logged on this context (why a parameter or the creation
    /// failed), oldest first, joined with "; ". Reading consumes them.
    pub fn messages(&self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        // Each read returns one message ("e text", "w text" or "i text"); ENODATA when none
        // is left. The kernel keeps a handful at most.
        for _ in 0..16 {
            let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let line = String::from_utf8_lossy(&buf[..n as usize]);
            let text = line.get(2..).unwrap_or("").trim();
            if !text.is_empty() {
                out.push(text.to_string());
            }
        }
        out.join("; ")
    }

    /// Creates the superblock and attaches the mount at `target`.
    pub fn mount_at(&self, target: &Path, attr_flags: libc::c_uint) -> io::Result<()> {
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.0.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_char>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let m = unsafe { libc::syscall(libc::SYS_fsmount, self.0.as_raw_fd(), FSMOUNT_CLOEXEC, attr_flags) };
        if m < 0 {
            return Err(io::Error::last_os_error());
        }
        let m = unsafe { OwnedFd::from_raw_fd(m as RawFd) };
        let t = cstr(target.as_os_str().as_encoded_bytes())?;
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                m.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

pub fn umount(target: &Path) -> io::Result<()> {
    let t = cstr(target.as_os_str().as_encoded_bytes())?;
    check(unsafe { libc::umount2(t.as_ptr(), libc::UMOUNT_NOFOLLOW) }).map(drop)
}

pub fn is_mountpoint(path: &Path) -> io::Result<bool> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = path.as_os_str().as_encoded_bytes();
    Ok(mounts.lines().any(|l| l.split(' ').nth(4).map(|m| unescape_mountinfo(m) == want).unwrap_or(false)))
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}
