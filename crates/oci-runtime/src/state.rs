//! A container's on-disk state under the runtime root: `<root>/<id>/state.json`, the exec fifo,
//! and the lock that serialises operations on one container.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use berth_sys::file;
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;
use crate::error::{Context, Error, ErrorKind, Result};

pub const EXEC_FIFO: &str = "exec.fifo";
pub const STATE_FILE: &str = "state.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What the runtime remembers of a container between invocations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub pid: i32,
    /// The init's start time (clock ticks after boot): a reused pid is not our init.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 with nanoseconds, UTC.
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    pub cgroup: Cgroup,
    /// The container has its own pid namespace: its processes die with its init.
    pub own_pid_namespace: bool,
    /// The resources currently applied (config.json's, then each update's).
    #[serde(default)]
    pub resources: Option<LinuxResources>,
    /// config.json as it was at create: exec's defaults, its namespaces and seccomp, and the
    /// poststop hooks come from here, not from a bundle that may have changed since.
    pub spec: oci_spec::runtime::Spec,
}

/// A locked state directory. The lock (flock on the directory) is held until drop.
pub struct StateDir {
    pub path: PathBuf,
    pub fd: OwnedFd,
}

fn lock(fd: &OwnedFd, exclusive: bool, wait: bool) -> std::io::Result<()> {
    let mut op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
    if !wait {
        op |= libc::LOCK_NB;
    }
    file::flock(fd, op)
}

pub fn not_exist(id: &str) -> Error {
    Error::not_found(format!("container {id} does not exist"))
}

impl StateDir {
    /// Creates and locks the directory of a new container.
    pub fn create(root: &Path, id: &str) -> Result<StateDir> {
        ensure_root(root)?;
        let path = root.join(id);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::new(ErrorKind::AlreadyExists, format!("container {id} already exists")));
            }
            Err(e) => return Err(Error::from_io(e).context(format!("creating {}", path.display()))),
        }
        // 0711: the container's init, possibly an unprivileged user by then, opens the exec
        // fifo by name inside; nothing here can be listed.
        let fd = file::open(&path, libc::O_RDONLY | libc::O_DIRECTORY).with_ctx(|| path.display().to_string())?;
        file::fchmod(&fd, 0o711).with_ctx(|| path.display().to_string())?;
        lock(&fd, true, true).ctx("locking the container state")?;
        Ok(StateDir { path, fd })
    }

    /// Opens and locks an existing container's directory.
    pub fn open(root: &Path, id: &str, exclusive: bool) -> Result<StateDir> {
        crate::config::validate_id(id)?;
        let path = root.join(id);
        let fd = match file::open(&path, libc::O_RDONLY | libc::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(not_exist(id)),
            Err(e) => return Err(Error::from_io(e).context(path.display().to_string())),
        };
        lock(&fd, exclusive, true).ctx("locking the container state")?;
        // Deleted while we waited for the lock?
        if file::fstat(&fd)?.st_nlink == 0 {
            return Err(not_exist(id));
        }
        Ok(StateDir { path, fd })
    }

    /// True while another process holds the lock (a `create` still in progress).
    pub fn is_locked(root: &Path, id: &str) -> bool {
        match file::open(&root.join(id), libc::O_RDONLY | libc::O_DIRECTORY) {
            Ok(fd) => lock(&fd, false, false).is_err(),
            Err(_) => false,
        }
    }

    pub fn load(&self) -> Result<Option<State>> {
        let file = self.path.join(STATE_FILE);
        match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::new(ErrorKind::System, format!("{}: corrupt state: {e}", file.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::from_io(e).context(file.display().to_string())),
        }
    }

    pub fn save(&self, state: &State) -> Result<()> {
        let bytes = serde_json::to_vec(state).expect("state serialises");
        write_atomic(&self.path.join(STATE_FILE), &bytes)
    }

    pub fn fifo(&self) -> PathBuf {
        self.path.join(EXEC_FIFO)
    }

    /// Removes the directory and everything in it (state, fifo).
    pub fn remove(self) -> Result<()> {
        std::fs::remove_dir_all(&self.path).with_ctx(|| format!("removing {}", self.path.display()))
    }
}

/// Makes the state root (mode 0711) unless it exists; an existing non-directory is an error.
pub fn ensure_root(root: &Path) -> Result<()> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::invalid(format!("--root {} is not a directory", root.display()))),
        Err(_) => {
            std::fs::create_dir_all(root).with_ctx(|| format!("creating --root {}", root.display()))?;
            std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o711))
                .with_ctx(|| root.display().to_string())
        }
    }
}

/// Writes a file so readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_ctx(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, path).with_ctx(|| format!("renaming into {}", path.display()))
}

impl State {
    /// The init is alive (not a zombie) and is the process we started.
    pub fn init_alive(&self) -> bool {
        berth_sys::proc::alive(self.pid, self.pid_start)
    }

    pub fn status(&self, dir: &Path) -> Status {
        if !self.init_alive() {
            Status::Stopped
        } else if self.cgroup.is_frozen().unwrap_or(false) {
            Status::Paused
        } else if dir.join(EXEC_FIFO).exists() {
            Status::Created
        } else {
            Status::Running
        }
    }
}

/// RFC 3339 UTC time with nanoseconds, e.g. 2026-11-23T14:19:02.123456789Z.
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    berth_time::format_rfc3339(now.as_secs() as i64, now.subsec_nanos())
}
