//! CVE-2019-5736: a container must not be able to reach, and overwrite, the runtime's binary.
//!
//! The container's init is a clone of the runtime until it execs; if the container's program is
//! `#!/proc/self/exe`, the kernel starts the runtime's binary inside the container, where another
//! container process can open it through /proc/PID/exe and write to it. So before creating or
//! entering a container the runtime re-executes itself from a sealed memfd copy: /proc/self/exe
//! then names that copy, which no one can write, and the binary on disk is out of reach.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::error::{Context, Error, Result};
use crate::sys;

/// Set in the copy's environment: a copy that cannot see its seals must not re-exec again.
const MARKER: &str = "_BERTH_OCI_SEALED";

const F_ADD_SEALS: i32 = 1033;
const F_GET_SEALS: i32 = 1034;
const F_SEAL_SEAL: i32 = 0x0001;
const F_SEAL_SHRINK: i32 = 0x0002;
const F_SEAL_GROW: i32 = 0x0004;
const F_SEAL_WRITE: i32 = 0x0008;
const SEALS: i32 = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;

/// True if this process runs from a memfd carrying all the seals.
pub fn running_sealed() -> bool {
    let Ok(exe) = sys::open(Path::new("/proc/self/exe"), libc::O_RDONLY) else { return false };
    // SAFETY: fcntl on a descriptor we own.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// Re-executes this program from a sealed memfd copy, unless it already runs from one. Returns
/// only when already sealed (or on error).
pub fn ensure_sealed() -> Result<()> {
    if running_sealed() {
        return Ok(());
    }
    if std::env::var_os(MARKER).is_some() {
        return Err(Error::unsupported(
            "re-executed from a sealed copy of berth-oci, but its seals are not visible (memfd sealing unsupported?)",
        ));
    }
    let exe = sys::open(Path::new("/proc/self/exe"), libc::O_RDONLY).ctx("opening /proc/self/exe")?;
    let memfd = sealed_copy(&exe)?;
    let args: Vec<CString> = std::env::args_os().map(|a| sys::cstr(&a)).collect::<std::io::Result<_>>()?;
    let mut env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            sys::cstr(&kv)
        })
        .collect::<std::io::Result<_>>()?;
    env.push(CString::new(format!("{MARKER}=1")).expect("no NUL"));
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: NUL-terminated arrays of valid C strings; on success this does not return.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            memfd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    Err(Error::last_os("re-executing berth-oci from its sealed copy"))
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
    const MFD_CLOEXEC: u32 = 0x1;
    const MFD_ALLOW_SEALING: u32 = 0x2;
    const MFD_EXEC: u32 = 0x10;
    // MFD_EXEC keeps the copy executable where vm.memfd_noexec makes memfds non-executable by
    // default; kernels before 6.3 do not know the flag and refuse it.
    let mut fd =
        unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC) };
    if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        fd = unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), MFD_CLOEXEC | MFD_ALLOW_SEALING) };
    }
    if fd < 0 {
        return Err(Error::last_os("creating a memfd for a sealed copy of berth-oci"));
    }
    // SAFETY: a fresh descriptor.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let size = sys::fstat(exe.as_raw_fd())?.st_size as usize;
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
    Ok(memfd)
}
