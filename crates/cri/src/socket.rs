//! berthd's listening socket.
//!
//! - Only root (and its group, as containerd's socket) talks to berthd: the socket is created
//!   0660 (under a 0117 umask, so it is never reachable by others, not even between bind and
//!   chmod) in a directory made 0700 if berthd creates it.
//! - One berthd per socket: `<socket>.lock` is held (flock) for berthd's lifetime. A second
//!   berthd on the same socket finds it locked and refuses to start.
//! - A socket left by a berthd that died (kill -9, power loss) is replaced: with the lock held,
//!   an existing socket nobody accepts on (connect: ECONNREFUSED) is stale. One that still
//!   accepts belongs to a process that does not hold the lock (not a berthd): refused, as is
//!   any path that is not a socket.
//! - On shutdown [`SocketGuard`] removes the socket, if it is still the one bound, then the lock
//!   file, while still holding the lock.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Removes the socket and its lock file when dropped (see the module's documentation).
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    lock_path: PathBuf,
    /// Held for as long as the guard lives; closing it releases the flock.
    lock: Option<File>,
    /// The socket bound, so that a socket some other process put at the path since is never
    /// removed.
    id: Identity,
}

impl SocketGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket and the lock file, then releases the lock. Errors name the path.
    pub fn remove(mut self) -> Result<()> {
        self.cleanup()
    }

    fn cleanup(&mut self) -> Result<()> {
        let Some(lock) = self.lock.take() else { return Ok(()) };
        let mut first_error = None;
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if Identity::of(&m) == self.id => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    first_error.get_or_insert(Error::io(format!("remove socket {}", self.path.display()), e));
                }
            }
            // Replaced or removed by someone else: not ours to remove.
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                first_error.get_or_insert(Error::io(format!("socket {}", self.path.display()), e));
            }
        }
        // Removed while still locked: a berthd starting now either opened this file before
        // (its flock fails: this one still runs) or creates a new one after (nothing to wait
        // for); `lock` checks the inode it locked is still the one at the path.
        if let Err(e) = std::fs::remove_file(&self.lock_path) {
            if e.kind() != ErrorKind::NotFound {
                first_error.get_or_insert(Error::io(format!("remove lock file {}", self.lock_path.display()), e));
            }
        }
        drop(lock);
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("berthd: {e}");
        }
    }
}

/// Which file a path named when it was looked at. Device and inode alone are not enough: a
/// socket made after ours was removed may get the same inode number; its creation time
/// differs (where the filesystem records none, its change time, so a socket whose mode was
/// changed since is left in place, to be replaced as stale by the next berthd).
#[derive(Debug, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    born: Option<std::time::SystemTime>,
    changed: Option<(i64, i64)>,
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Identity {
        let born = m.created().ok();
        let changed = if born.is_none() { Some((m.ctime(), m.ctime_nsec())) } else { None };
        Identity { dev: m.dev(), ino: m.ino(), born, changed }
    }
}

/// The lock file of the socket at `path`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Binds the socket at `path` (absolute) as described in the module's documentation.
///
/// Sets the process's umask for the duration of the bind: call it before any other thread
/// creates files (berthd does so before starting its async runtime).
pub fn bind(path: &Path) -> Result<(UnixListener, SocketGuard)> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| Error::new(format!("socket {}: not an absolute path", path.display())))?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("create the socket's directory {}", dir.display()), e))?;
    }
    let lock_path = lock_path(path);
    let lock = lock(&lock_path, path)?;

    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::new(format!(
                    "{} is served by another process that does not hold {} (not a berthd?); refusing to replace it",
                    path.display(),
                    lock_path.display()
                )))
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)
                    .map_err(|e| Error::io(format!("remove stale socket {}", path.display()), e))?;
                eprintln!("berthd: removed stale socket {} (no process was listening on it)", path.display());
            }
            Err(e) => return Err(Error::io(format!("probe existing socket {}", path.display()), e)),
        },
        Ok(m) => {
            return Err(Error::new(format!(
                "{} exists and is not a socket ({}); refusing to replace it",
                path.display(),
                describe(&m)
            )))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("socket {}", path.display()), e)),
    }

    // SAFETY: umask only swaps the process's file mode creation mask.
    let old = unsafe { libc::umask(0o117) };
    let bound = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| Error::io(format!("bind {}", path.display()), e))?;
    // 0660 whatever the umask was (a thread creating a file meanwhile could not widen it, but
    // state it once more).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| Error::io(format!("chmod 0660 {}", path.display()), e))?;
    let m = std::fs::symlink_metadata(path).map_err(|e| Error::io(format!("socket {}", path.display()), e))?;
    let guard = SocketGuard { path: path.to_path_buf(), lock_path, lock: Some(lock), id: Identity::of(&m) };
    Ok((listener, guard))
}

/// Takes the exclusive lock on `lock_path` without waiting, or says which berthd holds it.
fn lock(lock_path: &Path, socket: &Path) -> Result<File> {
    // A berthd shutting down removes the lock file while holding it: a file opened just before
    // that may be locked just after, by which time another berthd may hold a new file at the
    // path. Lock, then check the path still names the file locked; else start over.
    for _ in 0..20 {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(lock_path)
            .map_err(|e| Error::io(format!("open lock file {}", lock_path.display()), e))?;
        let free = berth_sys::file::try_lock_exclusive(&f)
            .map_err(|e| Error::io(format!("lock {}", lock_path.display()), e))?;
        if !free {
            return Err(Error::new(format!(
                "another berthd is serving {} (it holds {}); stop it first",
                socket.display(),
                lock_path.display()
            )));
        }
        let held = f.metadata().map_err(|e| Error::io(format!("lock file {}", lock_path.display()), e))?;
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if held.uid() != euid {
            // Someone else's file (in a directory others can write) could be locked by them
            // at will, keeping every berthd out.
            return Err(Error::new(format!(
                "lock file {} belongs to uid {}, not to berthd's uid {euid}; remove it or choose another socket path",
                lock_path.display(),
                held.uid()
            )));
        }
        match std::fs::symlink_metadata(lock_path) {
            Ok(m) if (m.dev(), m.ino()) == (held.dev(), held.ino()) => {
                // Kept private whatever mode an older file had.
                f.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| Error::io(format!("chmod 0600 {}", lock_path.display()), e))?;
                return Ok(f);
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("lock file {}", lock_path.display()), e)),
        }
    }
    Err(Error::new(format!(
        "lock file {} keeps being replaced; is another berthd starting and stopping?",
        lock_path.display()
    )))
}

fn describe(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_fifo() {
        "a FIFO"
    } else {
        "a device"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_lock_stale_and_cleanup() {
        let _serial = crate::FS_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sub/berthd.sock");
        let (listener, guard) = bind(&sock).unwrap();
        let m = std::fs::symlink_metadata(&sock).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.mode() & 0o7777, 0o660);
        assert_eq!(std::fs::metadata(dir.path().join("sub")).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(std::fs::metadata(lock_path(&sock)).unwrap().mode() & 0o7777, 0o600);

        // A second bind on the same socket: refused while the first holds the lock.
        let e = bind(&sock).unwrap_err().to_string();
        assert!(e.contains("another berthd is serving") && e.contains("berthd.sock.lock"), "{e}");

        drop(listener);
        guard.remove().unwrap();
        assert!(!sock.exists());
        assert!(!lock_path(&sock).exists());

        // What a killed berthd leaves: its socket (nobody accepts on it) and its lock file
        // (unlocked: the kernel released the flock). Both are taken over.
        let stale = dir.path().join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        std::fs::write(lock_path(&stale), b"").unwrap();
        let (_l, g) = bind(&stale).unwrap();
        assert!(UnixStream::connect(&stale).is_ok());
        g.remove().unwrap();
        assert!(!stale.exists());
        assert!(!lock_path(&stale).exists());

        // A lock file of another user (who could hold its flock at will): refused.
        if unsafe { libc::geteuid() } == 0 {
            let theirs = dir.path().join("theirs.sock");
            std::fs::write(lock_path(&theirs), b"").unwrap();
            std::os::unix::fs::chown(lock_path(&theirs), Some(65534), Some(65534)).unwrap();
            let e = bind(&theirs).unwrap_err().to_string();
            assert!(e.contains("belongs to uid 65534"), "{e}");
            assert!(!theirs.exists());
        }

        // Not a socket: refused and left alone.
        let file = dir.path().join("file.sock");
        std::fs::write(&file, b"x").unwrap();
        let e = bind(&file).unwrap_err().to_string();
        assert!(e.contains("not a socket (a regular file)"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"x");

        // A live socket of a process without the lock: refused, left alone.
        let live = dir.path().join("live.sock");
        let _other = UnixListener::bind(&live).unwrap();
        let e = bind(&live).unwrap_err().to_string();
        assert!(e.contains("another process that does not hold"), "{e}");
        assert!(live.exists());
    }

    #[test]
    fn guard_leaves_a_replaced_socket_alone() {
        let _serial = crate::FS_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("b.sock");
        let (l, guard) = bind(&sock).unwrap();
        drop(l);
        std::fs::remove_file(&sock).unwrap();
        let _someone_else = UnixListener::bind(&sock).unwrap();
        guard.remove().unwrap();
        assert!(sock.exists(), "a socket berthd did not bind was removed");
        assert!(!lock_path(&sock).exists());
    }
}
