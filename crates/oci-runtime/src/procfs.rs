//! A verified handle on the host's procfs, for every write the runtime makes to /proc
//! (sysctls, LSM labels, id maps).
//!
//! The handle is opened while the process still sees the host's mounts and checked to be a
//! procfs; files are then opened beneath it without following symlinks or crossing mounts, so
//! nothing a container mounts or links can redirect a write (CVE-2025-52881).

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::error::{Context, Error, Result};
use berth_sys::file;

const PROC_SUPER_MAGIC: i64 = 0x9fa0;

#[derive(Debug)]
pub struct Proc(OwnedFd);

impl Proc {
    /// Opens /proc and checks that it is a procfs.
    pub fn open() -> Result<Proc> {
        let fd = file::open(Path::new("/proc"), libc::O_PATH | libc::O_DIRECTORY).ctx("opening /proc")?;
        let st = file::fstatfs(&fd).ctx("/proc")?;
        if st.f_type != PROC_SUPER_MAGIC {
            return Err(Error::invalid("/proc is not a procfs"));
        }
        Ok(Proc(fd))
    }

    fn file(&self, rel: &Path, flags: i32) -> Result<OwnedFd> {
        let resolve = file::RESOLVE_BENEATH | file::RESOLVE_NO_SYMLINKS | file::RESOLVE_NO_XDEV;
        file::openat2(&self.0, rel, flags | libc::O_NOFOLLOW, 0, resolve)
            .with_ctx(|| format!("/proc/{}", rel.display()))
    }

    /// A /proc file opened for writing, to write later.
    pub fn open_write(&self, rel: impl AsRef<Path>) -> Result<OwnedFd> {
        self.file(rel.as_ref(), libc::O_WRONLY)
    }

    pub fn write(&self, rel: impl AsRef<Path>, data: &[u8]) -> Result<()> {
        let rel = rel.as_ref();
        let fd = self.file(rel, libc::O_WRONLY)?;
        file::write_all(&fd, data).with_ctx(|| format!("writing /proc/{}", rel.display()))
    }

    /// The root directory of process `pid` (the kernel's magic link `<pid>/root`, followed
    /// from this verified procfs: nothing in a container can stand in for it).
    pub fn root_of(&self, pid: i32) -> Result<OwnedFd> {
        let dir = self.file(Path::new(&pid.to_string()), libc::O_PATH | libc::O_DIRECTORY)?;
        file::openat(&dir, "root", libc::O_PATH | libc::O_DIRECTORY, 0).with_ctx(|| format!("/proc/{pid}/root"))
    }

    pub fn read(&self, rel: impl AsRef<Path>) -> Result<String> {
        let rel = rel.as_ref();
        let fd = self.file(rel, libc::O_RDONLY)?;
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut out)
            .with_ctx(|| format!("reading /proc/{}", rel.display()))?;
        Ok(out)
    }
}
