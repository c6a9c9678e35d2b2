//! User namespaces made by a privileged caller for others: one with given ID mappings (a
//! pod's, or one to ID-map a mount with), and namespaces owned by it (a pod's network, IPC and
//! UTS namespaces, so its containers' root has power over them and nothing else).
//!
//! The caller may have threads: the helper children are forked and only make system calls
//! (with buffers made before the fork) until they exit.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::file;

/// `length` IDs from `container_id` inside map to `host_id` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

/// The text of a /proc/PID/uid_map (or gid_map) with these lines.
pub fn render(maps: &[IdMap]) -> String {
    maps.iter().map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.length)).collect()
}

/// Forks a child that runs `in_child` (system calls only: no allocation, no locks), then
/// waits for one byte from the parent on a pipe and exits. The parent gets the child's pid
/// and the pipe's write end (dropping it ends the child) and must reap the child.
fn fork_holder(flags: i32, in_child: impl Fn() -> i32) -> io::Result<(i32, OwnedFd, OwnedFd)> {
    let (hold_r, hold_w) = file::pipe()?;
    let (ready_r, ready_w) = file::pipe()?;
    // SAFETY: fork semantics (no CLONE_VM); the child only makes system calls below.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD, 0, 0, 0, 0) };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child: read, write, close and _exit on descriptors made before the fork.
        unsafe {
            // The parent's ends: with them closed here, the parent's drop ends the wait below.
            libc::close(hold_w.as_raw_fd());
            libc::close(ready_r.as_raw_fd());
            let mut b = [0u8; 1];
            // The parent's go-ahead (after it wrote the mappings of a new user namespace).
            libc::read(hold_r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
            let errno = in_child();
            libc::write(ready_w.as_raw_fd(), (&errno as *const i32).cast(), 4);
            // Held until the parent has what it needs (it closes its end).
            libc::read(hold_r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(hold_r);
    Ok((pid as i32, hold_w, ready_r))
}

/// Lets the child run its part; its errno (0: done).
fn child_result(hold_w: &OwnedFd, ready_r: &OwnedFd) -> io::Result<()> {
    file::write(hold_w, b"g")?;
    let mut report = [0u8; 4];
    let n = file::read(ready_r, &mut report)?;
    match (n, i32::from_ne_bytes(report)) {
        (4, 0) => Ok(()),
        (4, errno) => Err(io::Error::from_raw_os_error(errno)),
        _ => Err(io::Error::other("the helper process ended early")),
    }
}

fn end(pid: i32, hold_w: OwnedFd) {
    drop(hold_w);
    let _ = crate::process::kill(pid, libc::SIGKILL);
    let _ = crate::process::waitpid(pid, false);
}

/// A new user namespace with these mappings, held by a descriptor (no process stays in it).
pub fn create(uid: &[IdMap], gid: &[IdMap]) -> io::Result<OwnedFd> {
    let (pid, hold_w, ready_r) = fork_holder(libc::CLONE_NEWUSER, || 0)?;
    let result = (|| {
        std::fs::write(format!("/proc/{pid}/uid_map"), render(uid))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), render(gid))?;
        child_result(&hold_w, &ready_r)?;
        file::open(&format!("/proc/{pid}/ns/user"), libc::O_RDONLY)
    })();
    end(pid, hold_w);
    result
}

/// New namespaces of `kinds` (CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS...) owned by the user
/// namespace `userns`, in that order; a new UTS namespace gets `hostname`.
pub fn unshare_in(userns: impl AsFd, kinds: &[i32], hostname: Option<&[u8]>) -> io::Result<Vec<OwnedFd>> {
    let flags = kinds.iter().fold(0, |a, k| a | k);
    let userns = userns.as_fd().as_raw_fd();
    let hostname = hostname.map(<[u8]>::to_vec);
    let in_child = || -> i32 {
        // SAFETY: system calls with values and buffers made before the fork.
        unsafe {
            let errno = || *libc::__errno_location();
            if libc::setns(userns, libc::CLONE_NEWUSER) != 0 || libc::unshare(flags) != 0 {
                return errno();
            }
            if let Some(h) = &hostname {
                if flags & libc::CLONE_NEWUTS != 0 && libc::sethostname(h.as_ptr().cast(), h.len()) != 0 {
                    return errno();
                }
            }
        }
        0
    };
    let (pid, hold_w, ready_r) = fork_holder(0, in_child)?;
    let result = (|| {
        child_result(&hold_w, &ready_r)?;
        kinds
            .iter()
            .map(|k| {
                let name = match *k {
                    libc::CLONE_NEWNET => "net",
                    libc::CLONE_NEWIPC => "ipc",
                    libc::CLONE_NEWUTS => "uts",
                    libc::CLONE_NEWCGROUP => "cgroup",
                    _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
                };
                file::open(&format!("/proc/{pid}/ns/{name}"), libc::O_RDONLY)
            })
            .collect()
    })();
    end(pid, hold_w);
    result
}

/// Pins the namespace `ns` (a descriptor of an nsfs file) at `path`, a new file: a bind mount
/// keeps it alive without a process or descriptor.
pub fn pin(ns: impl AsFd, path: &std::path::Path) -> io::Result<()> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    let source = format!("/proc/self/fd/{}", ns.as_fd().as_raw_fd());
    let r = crate::mount::mount(Some(std::path::Path::new(&source)), path, None, libc::MS_BIND, None);
    if r.is_err() {
        let _ = std::fs::remove_file(path);
    }
    r
}
