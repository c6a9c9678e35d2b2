//! The layer every berth crate builds on, with libc as its only dependency (the monitor's size
//! is measured): one error type for the whole stack, the system calls std does not wrap, and
//! /proc.
//!
//! The system calls are thin: descriptors go in as [`AsFd`](std::os::fd::AsFd) (borrowed) and
//! come out as [`OwnedFd`](std::os::fd::OwnedFd), paths and names as anything [`Arg`] takes,
//! and each returns `io::Result` with the errno, for the caller to say what it was doing with
//! `.ctx(..)` (which keeps the errno in a [`Error`]). Every descriptor they create is
//! close-on-exec. None allocates but to turn a Rust path into a C string (a `&CStr` is passed as
//! it is), so what runs between fork and exec can use them with C strings made beforehand.
//!
//! - [`file`]: opening (openat2's constrained resolution), stat, the *at calls, xattrs,
//!   renames, descriptors' flags, pipes, memfds, reads and writes.
//! - [`mount`]: the fd-based mount API (fsopen, fsmount, open_tree, move_mount,
//!   mount_setattr), mount(2), pivot_root, chroot.
//! - [`process`]: clone3, namespaces, pidfds, waiting, prctl.
//! - [`signal`]: masks, handlers, signalfd.
//! - [`socket`]: socket pairs, SCM_RIGHTS, unix sockets, a link's flags.
//! - [`userns`]: user namespaces with given mappings, and namespaces owned by them.
//! - [`proc`]: what /proc says (a process's stat line, mountinfo, a pidfd's pid).

use std::borrow::Cow;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub mod error;
pub mod file;
pub mod mount;
pub mod proc;
pub mod process;
pub mod signal;
pub mod socket;
pub mod userns;

pub use error::{strerror, Context, Error, Kind, Result};

/// A path or a name as a system call takes it: a C string. `&CStr` and `CString` are passed
/// as they are; anything else is copied once, and refused with `InvalidInput` if it holds a
/// NUL byte.
pub trait Arg {
    fn to_c(&self) -> io::Result<Cow<'_, CStr>>;
}

fn nul_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{what} contains a NUL byte"))
}

impl Arg for CStr {
    fn to_c(&self) -> io::Result<Cow<'_, CStr>> {
        Ok(Cow::Borrowed(self))
    }
}

impl Arg for CString {
    fn to_c(&self) -> io::Result<Cow<'_, CStr>> {
        Ok(Cow::Borrowed(self.as_c_str()))
    }
}

/// Bytes are a name inside a directory (a layer's entry, a link's target).
impl Arg for [u8] {
    fn to_c(&self) -> io::Result<Cow<'_, CStr>> {
        CString::new(self).map(Cow::Owned).map_err(|_| nul_error("name"))
    }
}

impl<const N: usize> Arg for [u8; N] {
    fn to_c(&self) -> io::Result<Cow<'_, CStr>> {
        self.as_slice().to_c()
    }
}

impl<T: Arg + ?Sized> Arg for &T {
    fn to_c(&self) -> io::Result<Cow<'_, CStr>> {
        (**self).to_c()
    }
}

impl Arg for Vec<u8> {
    fn to_c(&self) -> io::Result<Cow<'_, CStr>> {
        self.as_slice().to_c()
    }
}

impl Arg for OsStr {
    fn to_c(&self) -> io::Result<Cow<'_, CStr>> {
        CString::new(self.as_bytes()).map(Cow::Owned).map_err(|_| nul_error("path"))
    }
}

impl Arg for OsString {
    fn to_c(&self) -> io::Result<Cow<'_, CStr>> {
        self.as_os_str().to_c()
    }
}

impl Arg for Path {
    fn to_c(&self) -> io::Result<Cow<'_, CStr>> {
        self.as_os_str().to_c()
    }
}

impl Arg for PathBuf {
    fn to_c(&self) -> io::Result<Cow<'_, CStr>> {
        self.as_os_str().to_c()
    }
}

impl Arg for str {
    fn to_c(&self) -> io::Result<Cow<'_, CStr>> {
        OsStr::new(self).to_c()
    }
}

impl Arg for String {
    fn to_c(&self) -> io::Result<Cow<'_, CStr>> {
        OsStr::new(self).to_c()
    }
}

/// An owned C string of a path or name (for argument vectors and strings kept for later).
pub fn cstring<P: Arg + ?Sized>(p: &P) -> io::Result<CString> {
    p.to_c().map(Cow::into_owned)
}

/// Retries a call interrupted by a signal.
pub fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// A libc call's result: the value, or the errno.
pub(crate) fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A syscall(2)'s or a ssize_t call's result: the value, or the errno.
pub(crate) fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A descriptor's number, for the libc call.
pub(crate) fn raw(fd: &impl AsFd) -> RawFd {
    fd.as_fd().as_raw_fd()
}

/// A descriptor the kernel just returned (or the errno).
pub(crate) fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check_long(fd)?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
