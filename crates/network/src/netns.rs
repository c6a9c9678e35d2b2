//! Network namespaces pinned by a bind mount of `/proc/thread-self/ns/net` onto a file, so
//! they live without a process in them (as `ip netns` does), and are joined by the OCI runtime
//! through `linux.namespaces[].path`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("path contains NUL"))
}

/// Creates a new network namespace pinned at `path` (a new file).
pub fn create(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    let target = cpath(path)?;
    // A fresh thread enters the new namespace, so the caller's own namespace stays.
    let r = std::thread::spawn(move || -> io::Result<()> {
        // SAFETY: unshare and mount with valid arguments, on this thread only.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::mount(
                c"/proc/thread-self/ns/net".as_ptr(),
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
    .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")));
    if let Err(e) = r {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Whether `path` is a pinned network namespace (a bind mount of an nsfs inode).
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
