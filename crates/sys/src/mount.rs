//! Mounts: the fd-based API (a filesystem context from fsopen, fsmount, open_tree clones,
//! move_mount, mount_setattr), and mount(2), umount2, pivot_root and chroot for what it does not
//! replace.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::file::{self, CWD};
use crate::{check, check_long, owned, raw, Arg};

const FSOPEN_CLOEXEC: u32 = 0x1;
const FSMOUNT_CLOEXEC: u32 = 0x1;
const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;
const OPEN_TREE_CLONE: u32 = 1;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

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

/// struct mount_attr of mount_setattr(2).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

/// A filesystem context (fsopen): parameters, then the superblock, then a detached mount.
pub struct FsContext(OwnedFd);

impl FsContext {
    /// fsopen(2). ENODEV: the kernel has no such filesystem type.
    pub fn open(fstype: &str) -> io::Result<FsContext> {
        let c = fstype.to_c()?;
        // SAFETY: valid C string.
        owned(unsafe { libc::syscall(libc::SYS_fsopen, c.as_ptr(), FSOPEN_CLOEXEC) }).map(FsContext)
    }

    /// A parameter without a value (`ro`, `newinstance`).
    pub fn set_flag(&self, key: &str) -> io::Result<()> {
        let k = key.to_c()?;
        // SAFETY: valid C string; a flag takes no value.
        check_long(unsafe {
            libc::syscall(libc::SYS_fsconfig, raw(&self.0), FSCONFIG_SET_FLAG, k.as_ptr(), std::ptr::null::<u8>(), 0)
        })
        .map(drop)
    }

    /// A parameter with a value (`size=64m`, `lowerdir+=/a/b`).
    pub fn set_string<V: Arg + ?Sized>(&self, key: &str, value: &V) -> io::Result<()> {
        let (k, v) = (key.to_c()?, value.to_c()?);
        // SAFETY: valid C strings.
        check_long(unsafe {
            libc::syscall(libc::SYS_fsconfig, raw(&self.0), FSCONFIG_SET_STRING, k.as_ptr(), v.as_ptr(), 0)
        })
        .map(drop)
    }

    /// Creates the superblock from the parameters given.
    pub fn create(&self) -> io::Result<()> {
        // SAFETY: the command takes no key or value.
        check_long(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                raw(&self.0),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<u8>(),
                std::ptr::null::<u8>(),
                0,
            )
        })
        .map(drop)
    }

    /// A detached mount of the created superblock, with the mount attributes `attrs`
    /// (MOUNT_ATTR_*; the atime mode given whole).
    pub fn mount(&self, attrs: u64) -> io::Result<OwnedFd> {
        // SAFETY: plain syscall.
        owned(unsafe { libc::syscall(libc::SYS_fsmount, raw(&self.0), FSMOUNT_CLOEXEC, attrs as u32) })
    }

    /// Creates the superblock and attaches a mount of it at `target`.
    pub fn mount_at<P: Arg + ?Sized>(&self, target: &P, attrs: u64) -> io::Result<()> {
        self.create()?;
        move_mount_to(self.mount(attrs)?, target)
    }

    /// The messages the kernel logged on this context (why a parameter or the creation
    /// failed: the kernel's own words), oldest first, joined with "; ". Reading consumes them.
    pub fn messages(&self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        // Each read returns one message ("e text", "w text" or "i text"); ENODATA when none is
        // left (it never blocks). The kernel keeps a handful at most.
        for _ in 0..16 {
            match file::read(&self.0, &mut buf) {
                Ok(n) if n > 0 => {
                    let line = String::from_utf8_lossy(&buf[..n]);
                    let text = line.get(2..).unwrap_or("").trim();
                    if !text.is_empty() {
                        out.push(text.to_string());
                    }
                }
                _ => break,
            }
        }
        out.join("; ")
    }
}

impl AsFd for FsContext {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// open_tree(2) with OPEN_TREE_CLONE: a detached copy of the mount at `path` relative to `dir`
/// (an empty path: the mount `dir` itself refers to), with the mounts below it if `recursive`.
pub fn open_tree_clone<P: Arg + ?Sized>(dir: impl AsFd, path: &P, recursive: bool) -> io::Result<OwnedFd> {
    let c = path.to_c()?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    if c.is_empty() {
        flags |= libc::AT_EMPTY_PATH as u32;
    }
    // SAFETY: valid C string.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, raw(&dir), c.as_ptr(), flags) })
}

/// Attaches the detached mount `from` on top of the object `to` refers to.
pub fn move_mount(from: impl AsFd, to: impl AsFd) -> io::Result<()> {
    let empty = c"";
    // SAFETY: empty paths with the EMPTY_PATH flags: the descriptors themselves.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            raw(&from),
            empty.as_ptr(),
            raw(&to),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// Attaches the detached mount `from` at the path `target`.
pub fn move_mount_to<P: Arg + ?Sized>(from: impl AsFd, target: &P) -> io::Result<()> {
    let t = target.to_c()?;
    // SAFETY: valid C strings.
    check_long(unsafe {
        libc::syscall(libc::SYS_move_mount, raw(&from), c"".as_ptr(), raw(&CWD), t.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH)
    })
    .map(drop)
}

/// mount_setattr(2) on the mount at `path` relative to `fd` (an empty path: `fd`'s own), and
/// on the mounts below it if `recursive`.
pub fn mount_setattr<P: Arg + ?Sized>(fd: impl AsFd, path: &P, recursive: bool, attr: &MountAttr) -> io::Result<()> {
    let c = path.to_c()?;
    let mut flags = 0u32;
    if c.is_empty() {
        flags |= libc::AT_EMPTY_PATH as u32;
    }
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    // SAFETY: valid C string and struct of the size given.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            raw(&fd),
            c.as_ptr(),
            flags,
            attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// mount(2), for the few operations the fd-based API does not replace (propagation of "/",
/// the rootfs bind, moving the rootfs for --no-pivot, an option string for older kernels).
pub fn mount<T: Arg + ?Sized>(
    source: Option<&Path>,
    target: &T,
    fstype: Option<&str>,
    flags: u64,
    data: Option<&str>,
) -> io::Result<()> {
    let src = source.map(Arg::to_c).transpose()?;
    let tgt = target.to_c()?;
    let ty = fstype.map(Arg::to_c).transpose()?;
    let dat = data.map(Arg::to_c).transpose()?;
    // SAFETY: valid C strings or null pointers.
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

pub fn umount2<P: Arg + ?Sized>(target: &P, flags: i32) -> io::Result<()> {
    let c = target.to_c()?;
    // SAFETY: valid C string.
    check(unsafe { libc::umount2(c.as_ptr(), flags) }).map(drop)
}

pub fn pivot_root<N: Arg + ?Sized, O: Arg + ?Sized>(new_root: &N, put_old: &O) -> io::Result<()> {
    let (n, o) = (new_root.to_c()?, put_old.to_c()?);
    // SAFETY: valid C strings.
    check_long(unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) }).map(drop)
}

pub fn chroot<P: Arg + ?Sized>(path: &P) -> io::Result<()> {
    let c = path.to_c()?;
    // SAFETY: valid C string.
    check(unsafe { libc::chroot(c.as_ptr()) }).map(drop)
}
