//! Path resolution inside a container's root filesystem, which is hostile: any component may be
//! a symlink an attacker planted, and may be swapped while we walk.
//!
//! [`resolve`] walks one component at a time with `O_PATH|O_NOFOLLOW` descriptors and reads
//! every symlink itself: absolute links restart at the container's root (as the container would
//! see them), `..` never climbs above the root (that is reported as an escape), and the kernel is
//! never asked to follow a link. Missing components can be created on the way, each created
//! relative to the descriptor of its verified parent.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use berth_sys::file;

use crate::error::{Error, ErrorKind, Result};

/// What to create when the final component is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Nothing,
    Dir,
    File,
}

#[derive(Debug, Clone, Copy)]
pub struct Resolve {
    pub create: Create,
    /// Refuse any symlink on the way (for /proc and /sys mount targets).
    pub no_symlinks: bool,
    /// Return the final component itself when it is a symlink.
    pub nofollow_final: bool,
}

impl Resolve {
    pub const EXISTING: Resolve = Resolve { create: Create::Nothing, no_symlinks: false, nofollow_final: false };

    pub fn create(create: Create) -> Resolve {
        Resolve { create, ..Resolve::EXISTING }
    }
}

const MAX_SYMLINKS: usize = 40;

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

fn readlinkat_fd(fd: BorrowedFd<'_>) -> std::io::Result<PathBuf> {
    // Up to PATH_MAX bytes; the empty path reads the link the O_PATH fd refers to.
    file::readlinkat(fd, c"").map(|target| PathBuf::from(OsString::from_vec(target)))
}

fn is_type(st: &libc::stat, ty: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == ty
}

/// Resolves `path` (taken as absolute inside the container) under the directory `root`.
/// Returns an `O_PATH` descriptor of the result. Errors name the path as the container sees it.
pub fn resolve(root: BorrowedFd<'_>, path: &Path, opts: Resolve) -> Result<OwnedFd> {
    let shown = || path.display().to_string();
    let mut remaining = components(path);
    let mut stack: Vec<OwnedFd> =
        vec![file::dup(root).map_err(|e| Error::from_io(e).context("duplicating the root descriptor"))?];
    let mut links = 0;
    // The path walked so far, for messages.
    let mut walked: Vec<OsString> = Vec::new();
    while let Some(name) = remaining.pop_front() {
        if name == ".." {
            if stack.len() == 1 {
                return Err(Error::invalid(format!(
                    "{}: resolves above the container's root through '..' (escape attempt)",
                    shown()
                )));
            }
            stack.pop();
            walked.pop();
            continue;
        }
        let is_last = remaining.is_empty();
        let parent = stack.last().expect("root stays on the stack").as_fd();
        let fd = match file::openat(parent, &name, libc::O_PATH | libc::O_NOFOLLOW, 0) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && opts.create != Create::Nothing => {
                let want_file = is_last && opts.create == Create::File;
                create_entry(parent, &name, want_file).map_err(|e| {
                    Error::from_io(e).context(format!("{}: creating /{}", shown(), join(&walked, &name)))
                })?;
                continue_with(&mut remaining, name);
                continue;
            }
            Err(e) => {
                return Err(Error::from_io(e).context(format!("{}: /{}", shown(), join(&walked, &name))));
            }
        };
        let st = file::fstat(&fd).map_err(Error::from_io)?;
        if is_type(&st, libc::S_IFLNK) {
            if is_last && opts.nofollow_final {
                return Ok(fd);
            }
            if opts.no_symlinks {
                return Err(Error::invalid(format!(
                    "{}: /{} is a symlink, which is not allowed here",
                    shown(),
                    join(&walked, &name)
                )));
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Error::from_errno(libc::ELOOP, shown()));
            }
            let target = readlinkat_fd(fd.as_fd()).map_err(Error::from_io)?;
            if target.is_absolute() {
                stack.truncate(1);
                walked.clear();
            }
            let mut next = components(&target);
            next.extend(remaining);
            remaining = next;
            continue;
        }
        if !is_last && !is_type(&st, libc::S_IFDIR) {
            return Err(Error::from_errno(libc::ENOTDIR, format!("{}: /{}", shown(), join(&walked, &name))));
        }
        walked.push(name);
        stack.push(fd);
    }
    Ok(stack.pop().expect("root stays on the stack"))
}

fn continue_with(remaining: &mut VecDeque<OsString>, name: OsString) {
    remaining.push_front(name);
}

fn join(walked: &[OsString], name: &OsString) -> String {
    let mut parts: Vec<String> = walked.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    parts.push(name.to_string_lossy().into_owned());
    parts.join("/")
}

fn create_entry(parent: BorrowedFd<'_>, name: &OsString, file: bool) -> std::io::Result<()> {
    let result = if file {
        file::openat(parent, name, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW, 0o644).map(drop)
    } else {
        file::mkdirat(parent, name, 0o755)
    };
    match result {
        // Someone else created it meanwhile: the next loop iteration inspects what is there.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Opens what an `O_PATH` descriptor refers to with real access flags, through the
/// /proc/self/fd magic link of this process (the descriptor, not a path, decides the file).
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> Result<OwnedFd> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    file::open(&link, flags).map_err(|e| Error::from_io(e).context("reopening a resolved path"))
}

/// The parent directory (resolved, created if asked) and the final name of `path`.
pub fn resolve_parent(root: BorrowedFd<'_>, path: &Path, create_dirs: bool) -> Result<(OwnedFd, OsString)> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{}: has no final name", path.display())))?
        .to_os_string();
    let parent = path.parent().unwrap_or(Path::new("/"));
    let create = if create_dirs { Create::Dir } else { Create::Nothing };
    let fd = resolve(root, parent, Resolve::create(create))?;
    let st = file::fstat(&fd)?;
    if !is_type(&st, libc::S_IFDIR) {
        return Err(Error::from_errno(libc::ENOTDIR, parent.display().to_string()));
    }
    Ok((fd, name))
}

pub fn is_dir(fd: BorrowedFd<'_>) -> Result<bool> {
    Ok(is_type(&file::fstat(fd)?, libc::S_IFDIR))
}

pub fn is_regular(fd: BorrowedFd<'_>) -> Result<bool> {
    Ok(is_type(&file::fstat(fd)?, libc::S_IFREG))
}

/// Lexically cleans a container path into an absolute one ("a/../b" is kept for [`resolve`] to
/// judge; only empty and "." components go).
pub fn absolute(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => out.push(".."),
            _ => {}
        }
    }
    out
}

pub fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

pub fn not_found(err: &Error) -> bool {
    err.kind() == ErrorKind::NotFound || err.errno() == Some(libc::ENOENT)
}
