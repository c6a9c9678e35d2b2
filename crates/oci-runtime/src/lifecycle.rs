//! The operations on an existing container: start, state, kill, delete, pause, resume, ps,
//! update, list. Each takes the container's lock; status is derived from the system (is the
//! init alive, does the exec fifo exist, is the cgroup frozen), never trusted from disk.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_sys::{file, process};
use oci_spec::runtime::LinuxResources;
use serde::Serialize;

use crate::config::OCI_VERSION;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::state::{self, State, StateDir, Status};

/// The OCI state document (runtime-spec "state"), with runc's extra fields.
#[derive(Debug, Clone, Serialize)]
pub struct StateReport {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    /// Filled by `list` (the state directory's owner), empty in `state`, as runc does.
    pub owner: String,
}

fn report(state: &State, status: Status) -> StateReport {
    StateReport {
        oci_version: OCI_VERSION.to_string(),
        id: state.id.clone(),
        pid: if status == Status::Stopped { 0 } else { state.pid },
        status,
        bundle: state.bundle.clone(),
        rootfs: state.rootfs.clone(),
        created: state.created.clone(),
        annotations: state.annotations.clone(),
        owner: String::new(),
    }
}

/// Opens the container, loads its state, and computes its status.
fn open(root: &Path, id: &str, exclusive: bool) -> Result<(StateDir, State, Status)> {
    let dir = StateDir::open(root, id, exclusive)?;
    let Some(state) = dir.load()? else {
        // A create that died before saving its state left only the directory.
        return Err(crate::state::not_exist(id));
    };
    let status = state.status(&dir.path);
    Ok((dir, state, status))
}

pub fn state(root: &Path, id: &str) -> Result<StateReport> {
    crate::config::validate_id(id)?;
    if StateDir::is_locked(root, id) && !root.join(id).join(state::STATE_FILE).exists() {
        return Err(Error::state(format!("container {id} is still being created")));
    }
    let (_dir, state, status) = open(root, id, false)?;
    Ok(report(&state, status))
}

pub fn list(root: &Path) -> Result<Vec<StateReport>> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::from_io(e).context(root.display().to_string())),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if crate::config::validate_id(&name).is_err() || !entry.path().is_dir() {
            continue;
        }
        // A container being created or deleted right now is skipped, not waited for.
        match open(root, &name, false) {
            Ok((_, state, status)) => {
                let mut r = report(&state, status);
                r.owner = state.owner.clone();
                out.push(r);
            }
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidState) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Starts the container's program; returns the warnings of failed poststart hooks.
pub fn start(root: &Path, id: &str) -> Result<Vec<String>> {
    let (dir, state, status) = open(root, id, true)?;
    match status {
        Status::Created => {}
        Status::Stopped => return Err(Error::state(format!("cannot start a container that has stopped: {id}"))),
        other => return Err(Error::state(format!("cannot start an already {} container {id}", other.as_str()))),
    }
    // The init holds the fifo open to read it; with no reader left it has exited (ENXIO).
    let fifo = match file::open(&dir.fifo(), libc::O_WRONLY | libc::O_NONBLOCK) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(Error::state(format!("container {id}'s init exited before it could start")));
        }
        Err(e) => return Err(Error::from_io(e).context("opening the exec fifo")),
    };
    file::write_all(&fifo, b"0").ctx("writing to the exec fifo")?;
    std::fs::remove_file(dir.fifo()).ctx("removing the exec fifo")?;
    let hook_state = crate::hooks::state(id, "running", state.pid, &state.bundle, &state.annotations);
    Ok(crate::hooks::run_all_warn(state.spec.hooks().as_ref(), crate::hooks::Kind::Poststart, &hook_state))
}

/// Sends `signal` to the init, or with `all` to every process of the container.
pub fn kill(root: &Path, id: &str, signal: i32, all: bool) -> Result<()> {
    let (_dir, state, status) = open(root, id, true)?;
    if status == Status::Stopped {
        if all && !state.own_pid_namespace && !state.cgroup.pids()?.is_empty() {
            return state.cgroup.signal_all(signal);
        }
        return Err(Error::state(format!("cannot signal {id}: container not running")));
    }
    if all {
        return state.cgroup.signal_all(signal);
    }
    let pidfd = process::pidfd_open(state.pid).ctx("opening the container's init")?;
    // The pid could have been reused between the status check and pidfd_open.
    if !state.init_alive() {
        return Err(Error::state(format!("cannot signal {id}: container not running")));
    }
    process::pidfd_send_signal(&pidfd, signal).with_ctx(|| format!("sending signal {signal} to container {id}"))?;
    // A frozen process only acts on SIGKILL once thawed.
    if status == Status::Paused && signal == libc::SIGKILL {
        state.cgroup.thaw()?;
    }
    Ok(())
}

/// Deletes the container; returns the warnings of failed poststop hooks.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<Vec<String>> {
    let dir = StateDir::open(root, id, true)?;
    let Some(state) = dir.load()? else {
        // A create that died before saving its state left only the directory: remove it.
        dir.remove()?;
        return Err(crate::state::not_exist(id));
    };
    let status = state.status(&dir.path);
    match status {
        Status::Stopped => {}
        Status::Created => kill_init(&state)?,
        Status::Running | Status::Paused if force => {
            state.cgroup.kill_all_and_wait(Duration::from_secs(10))?;
            kill_init(&state)?;
        }
        other => {
            return Err(Error::state(format!("cannot delete container {id} that is not stopped: {}", other.as_str())));
        }
    }
    destroy(dir, &state)?;
    let hook_state = crate::hooks::state(id, "stopped", 0, &state.bundle, &state.annotations);
    Ok(crate::hooks::run_all_warn(state.spec.hooks().as_ref(), crate::hooks::Kind::Poststop, &hook_state))
}

fn kill_init(state: &State) -> Result<()> {
    let pidfd = match process::pidfd_open(state.pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if !state.init_alive() {
        return Ok(());
    }
    let _ = process::pidfd_send_signal(&pidfd, libc::SIGKILL);
    if state.cgroup.is_frozen().unwrap_or(false) {
        state.cgroup.thaw()?;
    }
    process::poll_readable(&[pidfd.as_fd()], 10_000)?;
    Ok(())
}

/// Releases what a stopped container still holds: stray processes (when it shares the host's
/// pid namespace they outlive the init), its cgroup, its state.
fn destroy(dir: StateDir, state: &State) -> Result<()> {
    if state.cgroup.exists() {
        state.cgroup.kill_all_and_wait(Duration::from_secs(10))?;
        state.cgroup.destroy()?;
    }
    dir.remove()
}

pub fn pause(root: &Path, id: &str) -> Result<()> {
    let (_dir, state, status) = open(root, id, true)?;
    if !matches!(status, Status::Running | Status::Created) {
        return Err(Error::state(format!("container not running: {id} is {}", status.as_str())));
    }
    state.cgroup.freeze()
}

pub fn resume(root: &Path, id: &str) -> Result<()> {
    let (_dir, state, status) = open(root, id, true)?;
    if status != Status::Paused {
        return Err(Error::state(format!("container not paused: {id} is {}", status.as_str())));
    }
    state.cgroup.thaw()
}

pub fn pids(root: &Path, id: &str) -> Result<Vec<i32>> {
    let (_dir, state, _) = open(root, id, false)?;
    state.cgroup.pids()
}

/// Applies new resources to a running (or created) container and remembers them; returns what
/// was accepted but not applied (for the log).
pub fn update(root: &Path, id: &str, resources: &LinuxResources) -> Result<Vec<String>> {
    crate::cgroups::validate_resources(resources).map_err(|e| e.context("resources"))?;
    let (dir, mut state, status) = open(root, id, true)?;
    if status == Status::Stopped {
        return Err(Error::state(format!("cannot update {id}: container not running")));
    }
    // Device rules are replaced whole; other resources are applied as given.
    state.cgroup.apply(resources, &crate::cgroups::default_device_rules(), true)?;
    let warnings = crate::cgroups::resource_warnings(resources, &state.cgroup, "resources");
    state.resources = Some(merge_resources(state.resources.take().unwrap_or_default(), resources));
    dir.save(&state)?;
    Ok(warnings)
}

/// Overlays the fields set in `new` onto `old` (JSON object merge), as later `update`s see it.
fn merge_resources(old: LinuxResources, new: &LinuxResources) -> LinuxResources {
    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }
    let mut base = serde_json::to_value(old).unwrap_or_default();
    merge(&mut base, serde_json::to_value(new).unwrap_or_default());
    serde_json::from_value(base).unwrap_or_else(|_| new.clone())
}

/// The container's cgroup, for stats and events.
pub fn cgroup(root: &Path, id: &str) -> Result<(crate::cgroups::Cgroup, Status)> {
    let (_dir, state, status) = open(root, id, false)?;
    Ok((state.cgroup, status))
}
