//! Namespaces pinned by a bind mount of `/proc/thread-self/ns/<kind>` onto a file, so they live
//! without a process in them (as `ip netns` does, and CRI-O's pinns for pods), and are joined by
//! the OCI runtime through `linux.namespaces[].path`: a container's network namespace, and a
//! pod's network, IPC and UTS namespaces.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("path contains NUL"))
}

/// Creates a new network namespace pinned at `path` (a new file).
pub fn create(path: &Path) -> io::Result<()> {
    pin(path, Kind::Net, None)
}

/// The kinds of namespace a pod pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Net,
    Ipc,
    Uts,
}

impl Kind {
    fn flag(self) -> libc::c_int {
        match self {
            Kind::Net => libc::CLONE_NEWNET,
            Kind::Ipc => libc::CLONE_NEWIPC,
            Kind::Uts => libc::CLONE_NEWUTS,
        }
    }

    fn proc_name(self) -> &'static std::ffi::CStr {
        match self {
            Kind::Net => c"/proc/thread-self/ns/net",
            Kind::Ipc => c"/proc/thread-self/ns/ipc",
            Kind::Uts => c"/proc/thread-self/ns/uts",
        }
    }
}

/// Creates a new namespace of `kind` pinned at `path` (a new file), so it lives without a
/// process in it. A UTS namespace gets `hostname` first.
pub fn pin(path: &Path, kind: Kind, hostname: Option<&str>) -> io::Result<()> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    let target = cpath(path)?;
    let hostname = hostname.map(|h| h.as_bytes().to_vec());
    // A fresh thread enters the new namespace, so the caller's own namespaces stay.
    let r = std::thread::spawn(move || -> io::Result<()> {
        // SAFETY: unshare, sethostname and mount with valid arguments, on this thread only.
        unsafe {
            if libc::unshare(kind.flag()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(h) = &hostname {
                if libc::sethostname(h.as_ptr().cast(), h.len()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::mount(
                kind.proc_name().as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
    if let Err(e) = r {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Whether `path` is a pinned namespace (a bind mount of an nsfs inode).
pub fn is_pinned(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let Ok(c) = cpath(path) else { return false };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-pointer.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == NSFS_MAGIC }
}

/// Unpins and removes the namespace file; a missing file is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    while is_pinned(path) {
        // SAFETY: unmounting our pin.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
            break;
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A TCP connection to `port` on the loopback of the network namespace pinned at `path`
/// (IPv4, else IPv6), as a pod's port-forward reaches its server. The socket is made by a
/// fresh thread that joins the namespace and ends: a socket belongs to the namespace it was
/// made in, whichever thread uses it afterwards.
pub fn connect_loopback(path: &Path, port: u16, timeout: std::time::Duration) -> io::Result<std::net::TcpStream> {
    let ns = std::fs::File::open(path)?;
    std::thread::spawn(move || -> io::Result<std::net::TcpStream> {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this thread only, with the descriptor of a network namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        connect_loopback_here(port, timeout)
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
}

/// A TCP connection to `port` on this thread's loopback (IPv4, else IPv6).
pub fn connect_loopback_here(port: u16, timeout: std::time::Duration) -> io::Result<std::net::TcpStream> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
    let v4 = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), timeout);
    match v4 {
        Ok(s) => Ok(s),
        Err(e4) => TcpStream::connect_timeout(&SocketAddr::from((Ipv6Addr::LOCALHOST, port)), timeout).map_err(|_| e4),
    }
}
