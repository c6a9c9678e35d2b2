//! CVE-2019-5736: a container must not be able to reach, and overwrite, the runtime's binary.
//!
//! The container's init is a clone of the runtime until it execs; if the container's program is
//! `#!/proc/self/exe`, the kernel starts the runtime's binary inside the container, where another
//! container process can open it through /proc/PID/exe and write to it. So before creating or
//! entering a container the runtime re-executes itself from a file no one can write: /proc/self/exe
//! then names that file, and the binary on disk is out of reach.
//!
//! That file is the binary seen through a detached, read-only overlayfs mount of its directory
//! (as runc 1.2 does): it costs one mount, which no mount table shows and which goes away with
//! the last process running from it. Where that mount cannot be made (no CAP_SYS_ADMIN over our
//! mount namespace, no overlayfs, a directory name overlayfs options cannot carry) or its exec
//! fails, it is a sealed memfd copy, which costs a copy of the binary on every create, run and
//! exec.
//!
//! A process trusts only protection it made itself: a memfd with every seal (which cannot be
//! undone), or, when it re-executed itself from a view, an overlayfs that is read-only and on a
//! mount missing from its mount table (detached, so no one can remount it read-write). A
//! read-only overlayfs it was merely started from may be remounted read-write later.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use berth_sys::file;
use berth_sys::mount::{self, FsContext};

use crate::error::{Context, Error, Result};

/// In the re-executed program's environment: how it was re-executed (`VIEW` or `MEMFD`), so it
/// knows what to check and does not re-exec again. Removed once read, so nothing it starts
/// inherits it.
const MARKER: &str = "_BERTH_OCI_SEALED";
const VIEW: &str = "overlay";
const MEMFD: &str = "memfd";

const F_ADD_SEALS: i32 = 1033;
const F_GET_SEALS: i32 = 1034;
const F_SEAL_SEAL: i32 = 0x0001;
const F_SEAL_SHRINK: i32 = 0x0002;
const F_SEAL_GROW: i32 = 0x0004;
const F_SEAL_WRITE: i32 = 0x0008;
const SEALS: i32 = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
const OVERLAYFS_SUPER_MAGIC: libc::c_long = 0x794c_7630;

fn is_sealed_memfd(exe: BorrowedFd<'_>) -> bool {
    // SAFETY: fcntl on a descriptor the caller owns.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// A read-only overlayfs on a detached mount: the view `read_only_view` makes.
fn is_detached_read_only_view(exe: BorrowedFd<'_>) -> bool {
    let overlayfs = file::fstatfs(exe).is_ok_and(|fs| fs.f_type as libc::c_long == OVERLAYFS_SUPER_MAGIC);
    // SAFETY: statvfs is plain data, filled by the kernel.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    let read_only =
        overlayfs && unsafe { libc::fstatvfs(exe.as_raw_fd(), &mut vfs) } == 0 && vfs.f_flag & libc::ST_RDONLY != 0;
    read_only && mount_id(exe).is_some_and(|id| !in_mount_table(id))
}

/// The mount id of an open file, from fdinfo (every kernel this runtime supports).
fn mount_id(fd: BorrowedFd<'_>) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/thread-self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines().find_map(|l| l.strip_prefix("mnt_id:")).and_then(|v| v.trim().parse().ok())
}

/// Whether mount `id` is in the calling thread's mount namespace's table.
fn in_mount_table(id: u64) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/thread-self/mountinfo") else { return true };
    table.lines().any(|l| l.split(' ').next().and_then(|f| f.parse::<u64>().ok()) == Some(id))
}

/// Re-executes this program from a read-only view or a sealed copy of itself, unless it already
/// runs from one it made. Returns only when running so (or on error). `spare_dir` is an
/// existing directory, neither inside nor above the binary's, that the view's overlayfs can use
/// as its bottom layer (the runtime's state root): overlayfs accepts no detached mount as a layer.
pub fn ensure_running_unwritable(spare_dir: &Path) -> Result<()> {
    let marker = std::env::var(MARKER).ok();
    // Read before anything else runs: no other thread exists yet.
    std::env::remove_var(MARKER);
    let exe = file::open("/proc/self/exe", libc::O_RDONLY).ctx("opening /proc/self/exe")?;
    if is_sealed_memfd(exe.as_fd()) {
        return Ok(());
    }
    match marker.as_deref() {
        Some(VIEW) if is_detached_read_only_view(exe.as_fd()) => return Ok(()),
        Some(MEMFD) => {
            return Err(Error::unsupported(
                "re-executed from a sealed memfd copy of berth-oci, but its seals are not visible (memfd sealing unsupported?)",
            ))
        }
        _ => {}
    }
    // A view not seen as one after the re-exec (it should be) gets the memfd, not another view.
    if marker.as_deref() != Some(VIEW) {
        if let Some(view) = read_only_view(&exe, spare_dir) {
            // Only returns if the exec failed (an LSM may refuse it): then the memfd.
            let _ = reexec(&view, VIEW);
        }
    }
    let copy = sealed_copy(&exe)?;
    Err(reexec(&copy, MEMFD))
}

/// Executes `exe` with our arguments and environment, `MARKER` set to `how`. Returns the error
/// if the exec fails.
fn reexec(exe: &OwnedFd, how: &str) -> Error {
    match reexec_args() {
        Ok((args, env)) => {
            let mut env = env;
            env.push(CString::new(format!("{MARKER}={how}")).expect("no NUL"));
            let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
            argv.push(std::ptr::null());
            let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
            envp.push(std::ptr::null());
            // SAFETY: NUL-terminated arrays of valid C strings; on success this does not return.
            unsafe {
                libc::syscall(
                    libc::SYS_execveat,
                    exe.as_raw_fd(),
                    c"".as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
            }
            Error::last_os(format!(
                "re-executing berth-oci from its {}",
                if how == VIEW { "read-only view" } else { "sealed copy" }
            ))
        }
        Err(e) => e,
    }
}

type ArgsAndEnv = (Vec<CString>, Vec<CString>);

fn reexec_args() -> Result<ArgsAndEnv> {
    let args: Vec<CString> = std::env::args_os().map(|a| berth_sys::cstring(&a)).collect::<std::io::Result<_>>()?;
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            berth_sys::cstring(&kv)
        })
        .collect::<std::io::Result<_>>()?;
    Ok((args, env))
}

/// The binary `exe` seen through a new detached overlayfs mount with no upper layer (so
/// read-only): its directory on top of `spare_dir` (overlayfs needs two layers then, and refuses
/// the same directory twice). None when that cannot be made here, or does not show the same file.
fn read_only_view(exe: &OwnedFd, spare_dir: &Path) -> Option<OwnedFd> {
    let path = std::fs::read_link("/proc/self/exe").ok()?;
    let (dir, name) = (path.parent()?, path.file_name()?);
    let layer = |p: &Path| {
        // ':' separates layers and ',' options; a binary replaced since it started reads
        // "NAME (deleted)", which names nothing.
        p.to_str().filter(|d| d.starts_with('/') && !d.contains([':', ',', '\\', '='])).map(str::to_string)
    };
    // Checked first: overlayfs logs every layer it cannot resolve to the kernel log.
    if !spare_dir.is_dir() {
        return None;
    }
    let lowerdir = format!("{}:{}", layer(dir)?, layer(spare_dir)?);
    let fs = FsContext::open("overlay").ok()?;
    fs.set_string("lowerdir", &lowerdir).ok()?;
    // Layers on two filesystems would otherwise turn on inode number mapping, which changes
    // st_ino (compared below) and logs a kernel warning.
    let _ = fs.set_string("xino", "off");
    fs.create().ok()?;
    let attrs = mount::MOUNT_ATTR_RDONLY | mount::MOUNT_ATTR_NODEV | mount::MOUNT_ATTR_NOSUID;
    let mount = fs.mount(attrs).ok()?;
    let view = file::openat(&mount, name, libc::O_PATH | libc::O_NOFOLLOW, 0).ok()?;
    let (ours, theirs) = (file::fstat(exe).ok()?, file::fstat(&view).ok()?);
    let same = theirs.st_mode & libc::S_IFMT == libc::S_IFREG
        && (ours.st_ino, ours.st_size) == (theirs.st_ino, theirs.st_size);
    same.then_some(view)
}

/// A sealed memfd copy of `exe`. Adding the write seal fails with EBUSY while the kernel still
/// holds extra references to the copy's pages (seen under load, after it has waited about
/// 150 ms for them): a fresh copy gets fresh pages.
fn sealed_copy(exe: &OwnedFd) -> Result<OwnedFd> {
    const ATTEMPTS: usize = 5;
    for attempt in 1.. {
        let memfd = copy_to_memfd(exe)?;
        // SAFETY: fcntl on our memfd.
        if unsafe { libc::fcntl(memfd.as_raw_fd(), F_ADD_SEALS, SEALS) } == 0 {
            return Ok(memfd);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) || attempt == ATTEMPTS {
            return Err(Error::from_io(err).context(format!("sealing the memfd copy of berth-oci (attempt {attempt})")));
        }
    }
    unreachable!("the loop returns by its last attempt")
}

fn copy_to_memfd(exe: &OwnedFd) -> Result<OwnedFd> {
    let name = c"berth-oci";
    use file::{MFD_ALLOW_SEALING, MFD_CLOEXEC, MFD_EXEC};
    // MFD_EXEC keeps the copy executable where vm.memfd_noexec makes memfds non-executable by
    // default; kernels before 6.3 do not know the flag and refuse it.
    let memfd = match file::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => file::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING),
        other => other,
    }
    .ctx("creating a memfd for a sealed copy of berth-oci")?;
    let size = file::fstat(exe)?.st_size as usize;
    // An explicit offset: a second attempt copies from the start again.
    let mut offset: libc::off_t = 0;
    let mut copied = 0;
    while copied < size {
        // SAFETY: in-kernel copy between two descriptors we own (copy_file_range refuses to
        // cross filesystems; sendfile does not).
        let n = unsafe { libc::sendfile(memfd.as_raw_fd(), exe.as_raw_fd(), &mut offset, size - copied) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(Error::from_io(err).context("copying berth-oci into a memfd"));
        }
        if n == 0 {
            break;
        }
        copied += n as usize;
    }
    if copied != size {
        return Err(Error::new(
            crate::error::ErrorKind::System,
            format!("copying berth-oci into a memfd: {copied} of its {size} bytes copied"),
        ));
    }
    Ok(memfd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(fd: &OwnedFd) -> Vec<u8> {
        std::fs::read(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    fn write_error(fd: &OwnedFd) -> Option<i32> {
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let result = std::fs::OpenOptions::new().append(true).open(path).and_then(|mut f| {
            use std::io::Write;
            f.write_all(b"pwned")
        });
        result.err().and_then(|e| e.raw_os_error())
    }

    #[test]
    fn the_sealed_copy_is_the_binary_and_refuses_writes() {
        let exe = file::open("/proc/self/exe", libc::O_RDONLY).unwrap();
        // Twice: the second copy must start from the binary's first byte too.
        for _ in 0..2 {
            let copy = sealed_copy(&exe).unwrap();
            assert!(contents(&copy) == contents(&exe), "the copy differs from the binary");
            assert_eq!(write_error(&copy), Some(libc::EPERM));
        }
    }

    /// Needs root (CAP_SYS_ADMIN for the mount), as the suite runs in CI.
    #[test]
    fn the_read_only_view_is_the_binary_and_refuses_writes() {
        let spare = std::env::temp_dir().join(format!("berth-selfexe-{}", std::process::id()));
        std::fs::create_dir(&spare).unwrap();
        let exe = file::open("/proc/self/exe", libc::O_RDONLY).unwrap();
        let view = read_only_view(&exe, &spare);
        std::fs::remove_dir(&spare).unwrap();
        let view = view.expect("a read-only overlayfs view of the test binary (run as root)");
        assert!(contents(&view) == contents(&exe), "the view differs from the binary");
        assert_eq!(write_error(&view), Some(libc::EROFS));
        assert!(is_detached_read_only_view(view.as_fd()));
        // The same directory twice is refused by overlayfs, and then there is no view.
        let dir = std::fs::read_link("/proc/self/exe").unwrap().parent().unwrap().to_path_buf();
        assert!(read_only_view(&exe, &dir).is_none());
    }

    /// A read-only overlayfs someone mounted (which its owner may remount read-write) is not
    /// the runtime's own view, and is not trusted. In a thread with a mount namespace of its
    /// own, gone with the thread.
    #[test]
    fn a_read_only_overlayfs_in_the_mount_table_is_not_trusted() {
        std::thread::spawn(|| {
            // SAFETY: unshare and mount with valid C strings; this thread's namespace only.
            unsafe {
                assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "{}", std::io::Error::last_os_error());
                assert_eq!(
                    libc::mount(
                        c"none".as_ptr(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null()
                    ),
                    0
                );
            }
            let base = std::env::temp_dir().join(format!("berth-selfexe-mounted-{}", std::process::id()));
            for d in ["upper", "lower", "merged"] {
                std::fs::create_dir_all(base.join(d)).unwrap();
            }
            std::fs::write(base.join("upper/prog"), b"#!/bin/sh\n").unwrap();
            let options = format!("lowerdir={}:{}", base.join("upper").display(), base.join("lower").display());
            let (merged, options) =
                (berth_sys::cstring(base.join("merged").as_os_str()).unwrap(), CString::new(options).unwrap());
            // SAFETY: as above.
            let mounted = unsafe {
                libc::mount(
                    c"overlay".as_ptr(),
                    merged.as_ptr(),
                    c"overlay".as_ptr(),
                    libc::MS_RDONLY,
                    options.as_ptr().cast(),
                )
            };
            assert_eq!(mounted, 0, "{}", std::io::Error::last_os_error());
            let prog = file::open(&base.join("merged/prog"), libc::O_RDONLY).unwrap();
            let trusted = is_detached_read_only_view(prog.as_fd());
            drop(prog);
            // SAFETY: as above.
            unsafe { libc::umount2(merged.as_ptr(), libc::MNT_DETACH) };
            std::fs::remove_dir_all(&base).unwrap();
            assert!(!trusted, "a mounted read-only overlayfs was taken for the runtime's own view");
        })
        .join()
        .unwrap();
    }
}
