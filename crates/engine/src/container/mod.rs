//! Containers and their state machine:
//!
//! ```text
//! creating ──► created ──start──► running ──(exit)──► exited ──start──► running ...
//!    │            │                                      │
//!    └────────────┴────────────── rm ───────────────────┘
//! ```
//!
//! `creating` is the record inserted before anything else exists (so a name is taken at once
//! and a command killed midway leaves something `ps` shows and `rm -f` removes). `running` is
//! checked against the truth on every read: the monitor's exit file, else the monitor's and
//! the container's processes (pid and start time). A container found dead with its resources
//! still up (its monitor was killed) is cleaned up then: runtime state, cgroups, network
//! namespace and CNI attachments, root filesystem mount.

pub mod config;
mod copy;
mod create;

pub(crate) use create::host_hostname;
mod exit;
pub mod health;
mod manage;
mod start;
mod state;
mod stop;
mod update;

use std::path::{Path, PathBuf};

use berth_network::PortMapping;
use serde::{Deserialize, Serialize};

use crate::spec::MountInfo;
use crate::Engine;

pub use config::{ContainerConfig, RestartPolicy};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct State {
    /// creating, created, running, exited
    pub status: String,
    pub pid: i32,
    pub pid_start: u64,
    pub monitor_pid: i32,
    pub monitor_start: u64,
    pub started_at: String,
    pub finished_at: String,
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub error: String,
    pub restart_count: u32,
    /// stopped by `stop`/`kill`/`rm`: no restart
    pub stopped_by_user: bool,
    /// the exit's cleanup (network, mounts, runtime state) is done
    pub cleaned: bool,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    pub gateway: String,
    pub ports: Vec<PortMapping>,
    /// frozen by `pause` (until `unpause`, or the container's end)
    #[serde(default)]
    pub paused: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Container {
    pub id: String,
    pub name: String,
    pub created: String,
    /// the image as the user named it, its ID and manifest digest
    pub image: String,
    pub image_id: String,
    pub image_manifest: String,
    #[serde(default)]
    pub config: ContainerConfig,
    /// a record of an earlier version (docker-style options), turned into `config` on load
    #[serde(default, rename = "Options", skip_serializing)]
    pub(crate) legacy_options: Option<serde_json::Value>,
    #[serde(default, rename = "RestartPolicy", skip_serializing)]
    pub(crate) legacy_restart: Option<RestartPolicy>,
    pub runtime: String,
    pub args: Vec<String>,
    pub stop_signal: i32,
    pub stop_timeout: u32,
    pub hostname: String,
    pub mounts: Vec<MountInfo>,
    /// requested port mappings (host port 0: chosen at start)
    pub port_specs: Vec<PortMapping>,
    /// the seccomp profile applied: default, unconfined, a file, or why none
    pub seccomp: String,
    pub state: State,
}

impl State {
    /// The container exited as the monitor recorded.
    pub(crate) fn record_exit(&mut self, x: ExitRecord) {
        self.status = "exited".into();
        self.paused = false;
        self.exit_code = Some(x.exit_code);
        self.oom_killed = x.oom_killed;
        self.finished_at = x.finished_at;
    }
}

impl Container {
    /// A record written by an earlier version keeps docker's options: what the engine still
    /// needs of them (network, terminal, labels, extra hosts, removal, restarts) becomes the
    /// typed configuration.
    pub(crate) fn upgrade(mut self) -> Container {
        let Some(o) = self.legacy_options.take() else { return self };
        let text = |k: &str| o[k].as_str().map(str::to_string);
        let cfg = &mut self.config;
        cfg.image = text("image").unwrap_or_else(|| self.image.clone());
        cfg.name = Some(self.name.clone());
        cfg.network = match text("network").as_deref() {
            None | Some("bridge") => config::NetworkMode::Bridge,
            Some("host") => config::NetworkMode::Host,
            Some("none") => config::NetworkMode::None,
            Some(n) => config::NetworkMode::Network(n.to_string()),
        };
        cfg.tty = o["tty"].as_bool().unwrap_or(false);
        cfg.stdin = o["stdin"].as_bool().unwrap_or(false);
        cfg.auto_remove = o["autoRemove"].as_bool().unwrap_or(false);
        cfg.init = o["init"].as_bool().unwrap_or(false);
        cfg.runtime = text("runtime");
        cfg.labels = serde_json::from_value(o["labels"].clone()).unwrap_or_default();
        cfg.extra_hosts = o["addHosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str()?.split_once(':'))
            .filter_map(|(name, ip)| Some(config::HostEntry { name: name.into(), ip: ip.parse().ok()? }))
            .collect();
        cfg.restart = self.legacy_restart.take().unwrap_or_default();
        self
    }

    /// Where the container's CRI log is written.
    pub fn log_path(&self, e: &Engine) -> PathBuf {
        e.log_path(self)
    }

    /// The CNI network this container attaches to (None for host and none).
    pub fn network_name(&self, e: &Engine) -> Option<String> {
        self.config.network.cni_network(e.config.default_network())
    }

    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    pub fn running(&self) -> bool {
        self.state.status == "running"
    }
}

pub use berth_monitor::protocol::{ExitRecord, EXIT_UNKNOWN};

/// The exit record the monitor wrote in `file`; None when there is none (yet) or it is torn.
fn read_exit_record(file: &Path) -> Option<ExitRecord> {
    ExitRecord::parse(&std::fs::read_to_string(file).ok()?)
}

impl Engine {
    /// Where a container's CRI log is written: the path its configuration gives, else
    /// `ctr.log` in its directory.
    pub fn log_path(&self, c: &Container) -> PathBuf {
        c.config.log.path.clone().unwrap_or_else(|| self.container_dir(&c.id).join("ctr.log"))
    }

    /// The monitor's exit record in the container's run directory.
    pub(crate) fn exit_file(&self, id: &str) -> PathBuf {
        self.run_dir(id).join(berth_monitor::protocol::EXIT_FILE)
    }
}

pub use berth_sys::proc::{alive, process_start};

/// Waits until the recorded process (pid and start time) has ended or `timeout` passes;
/// whether it ended. On a pidfd: the wake-up is the exit itself, not a timer.
pub(crate) fn wait_ended(pid: i32, start: u64, timeout: std::time::Duration) -> bool {
    use std::os::fd::AsFd;
    if pid <= 0 {
        return true;
    }
    let deadline = std::time::Instant::now() + timeout;
    let fd = match berth_sys::process::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return true,
        // No pidfd (out of descriptors): asked again every 10 ms.
        Err(_) => {
            while alive(pid, start) {
                if std::time::Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            return true;
        }
    };
    // Opened first, checked after: a pid reused before the open shows another start time.
    if !alive(pid, start) {
        return true;
    }
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    match berth_sys::process::poll_readable(&[fd.as_fd()], ms) {
        Ok(ready) => ready[0],
        Err(_) => !alive(pid, start),
    }
}

const ADJECTIVES: &[&str] = &[
    "amber", "brave", "calm", "deft", "eager", "fair", "gentle", "happy", "idle", "jolly", "keen", "lucid", "merry",
    "noble", "quiet", "rapid", "steady", "tidy", "vivid", "witty",
];
const NOUNS: &[&str] = &[
    "anchor", "barge", "buoy", "cove", "dock", "ferry", "harbor", "hull", "jetty", "keel", "lock", "mast", "pier",
    "quay", "raft", "sail", "skiff", "tide", "wharf", "yawl",
];

pub fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}
