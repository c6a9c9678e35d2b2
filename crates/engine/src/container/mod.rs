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

mod copy;
mod create;
mod exit;
mod start;
mod state;
mod stop;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_network::PortMapping;
use serde::{Deserialize, Serialize};

use crate::error::{bail, Error, Result};
use crate::spec::MountInfo;
use crate::Engine;

/// What `berth create`/`run` (or the CRI server) asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CreateOptions {
    pub image: String,
    pub name: Option<String>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub tty: bool,
    pub stdin: bool,
    pub volumes: Vec<String>,
    pub tmpfs: Vec<String>,
    pub publish: Vec<String>,
    pub publish_all: bool,
    /// bridge (default), host, none, or a network's name
    pub network: Option<String>,
    pub hostname: Option<String>,
    pub dns: Vec<String>,
    pub add_hosts: Vec<String>,
    pub memory: Option<i64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub read_only: bool,
    /// `unconfined` or a profile file's path; None: the default profile
    pub seccomp: Option<String>,
    pub no_new_privileges: bool,
    pub init: bool,
    pub restart: Option<String>,
    pub runtime: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<u32>,
    pub auto_remove: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    pub name: String,
    pub maximum_retry_count: u32,
}

impl RestartPolicy {
    pub fn parse(s: Option<&str>) -> Result<RestartPolicy> {
        let s = s.unwrap_or("no");
        let (name, max) = s.split_once(':').map(|(a, b)| (a, Some(b))).unwrap_or((s, None));
        let max = match max {
            None => 0,
            Some(m) => {
                m.parse::<u32>().map_err(|_| Error::invalid(format!("--restart {s:?}: {m:?} is not a retry count")))?
            }
        };
        match name {
            "no" | "always" | "unless-stopped" if max == 0 => {}
            "on-failure" => {}
            _ if max != 0 => bail!(InvalidInput, "--restart {s:?}: only on-failure takes a retry count"),
            _ => bail!(InvalidInput, "--restart {s:?}: expected no, on-failure[:N], always or unless-stopped"),
        }
        Ok(RestartPolicy { name: name.into(), maximum_retry_count: max })
    }
}

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
    pub options: CreateOptions,
    pub runtime: String,
    pub args: Vec<String>,
    pub stop_signal: i32,
    pub stop_timeout: u32,
    pub restart_policy: RestartPolicy,
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
        self.exit_code = Some(x.exit_code);
        self.oom_killed = x.oom_killed;
        self.finished_at = x.finished_at;
    }
}

impl Container {
    /// The CNI network this container attaches to (None for host and none).
    pub fn network_name(&self, e: &Engine) -> Option<String> {
        match self.options.network.as_deref().unwrap_or("bridge") {
            "host" | "none" => None,
            "bridge" => Some(e.config.default_network().to_string()),
            n => Some(n.to_string()),
        }
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
    /// The monitor's exit record in the container's run directory.
    pub(crate) fn exit_file(&self, id: &str) -> PathBuf {
        self.run_dir(id).join(berth_monitor::protocol::EXIT_FILE)
    }
}

pub use berth_sys::proc::{alive, process_start};

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
