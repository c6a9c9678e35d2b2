//! The container configuration both front ends translate into: the CLI from docker's flags,
//! berthd from CRI's `ContainerConfig` and `PodSandboxConfig`. Typed, in the engine's own terms
//! (namespace modes, mounts with propagation, security settings, resources); the OCI spec is
//! built from it step by step (`crate::oci`). Validation here names the field, never a flag.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use berth_network::PortMapping;
use serde::{Deserialize, Serialize};

use crate::error::{bail, Error, Result};
use crate::spec;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerConfig {
    /// None: a generated name
    pub name: Option<String>,
    /// an image reference or id, resolved in the store
    pub image: String,
    /// the pod (sandbox) this container belongs to
    pub sandbox: Option<String>,
    /// Some: replaces the image's Entrypoint (empty clears it); None: the image's
    pub entrypoint: Option<Vec<String>>,
    /// Some: replaces the image's Cmd; None: the image's (dropped when `entrypoint` is given)
    pub command: Option<Vec<String>>,
    /// `KEY=value`, over the image's Env
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// None: the image's User
    pub user: Option<UserSpec>,
    pub tty: bool,
    /// the container's stdin is kept open for attaching clients
    pub stdin: bool,
    /// stdin is closed after the first attached client detaches
    pub stdin_once: bool,
    /// None: the first 12 digits of the id (the host's name with the host's network)
    pub hostname: Option<String>,
    pub network: NetworkMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
    pub uts: NamespaceMode,
    /// published ports (host port 0: chosen at start); only on a bridge network
    pub ports: Vec<PortMapping>,
    /// the image's ExposedPorts are published too
    pub publish_all: bool,
    pub dns: DnsConfig,
    pub extra_hosts: Vec<HostEntry>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<DeviceMapping>,
    pub security: Security,
    pub resources: Resources,
    /// namespaced kernel parameters (`net.ipv4.ip_forward`)
    pub sysctls: BTreeMap<String, String>,
    /// the caller's labels (shown, filtered on; also handed to the runtime as annotations)
    pub labels: BTreeMap<String, String>,
    /// annotations for the runtime, beyond the labels
    pub annotations: BTreeMap<String, String>,
    pub log: LogConfig,
    pub restart: RestartPolicy,
    /// removed (with its anonymous volumes) when it exits
    pub auto_remove: bool,
    /// None: the image's StopSignal, else SIGTERM
    pub stop_signal: Option<i32>,
    /// seconds between the stop signal and SIGKILL; None: 10
    pub stop_timeout: Option<u32>,
    /// berth-init as PID 1
    pub init: bool,
    /// the runtime handler; None: the configured default
    pub runtime: Option<String>,
    /// what a front end keeps with the record and reads back (berthd: Kubernetes' names,
    /// labels and annotations); the engine neither uses nor passes it on
    pub extra: BTreeMap<String, String>,
    /// docker's health check (`--health-*`, else the image's HEALTHCHECK); None: none
    pub healthcheck: Option<Healthcheck>,
}

/// A health check: the command, run in the container every `interval` (each run given
/// `timeout`); `retries` failures in a row make the container unhealthy, failures within
/// `start_period` of the start do not count.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Healthcheck {
    /// the command as run (`CMD-SHELL` already made a shell command)
    pub command: Vec<String>,
    pub interval_ns: u64,
    pub timeout_ns: u64,
    pub start_period_ns: u64,
    pub retries: u32,
}

impl Healthcheck {
    pub const DEFAULT_INTERVAL_NS: u64 = 30_000_000_000;
    pub const DEFAULT_TIMEOUT_NS: u64 = 30_000_000_000;
    pub const DEFAULT_RETRIES: u32 = 3;

    /// From an image config's (or docker's) form: `Test` is `["CMD", args...]`,
    /// `["CMD-SHELL", command]` or `["NONE"]` (None then); zero durations and retries take
    /// the defaults.
    pub fn from_test(
        test: &[String],
        interval_ns: u64,
        timeout_ns: u64,
        start_period_ns: u64,
        retries: u32,
    ) -> Result<Option<Healthcheck>> {
        let command = match test.split_first() {
            None => return Ok(None),
            Some((kind, _)) if kind == "NONE" => return Ok(None),
            Some((kind, args)) if kind == "CMD" && !args.is_empty() => args.to_vec(),
            Some((kind, args)) if kind == "CMD-SHELL" && args.len() == 1 => {
                vec!["/bin/sh".into(), "-c".into(), args[0].clone()]
            }
            Some(_) => {
                bail!(InvalidInput, "healthcheck test {test:?}: [\"CMD\", ...], [\"CMD-SHELL\", command] or [\"NONE\"]")
            }
        };
        let or = |v: u64, d: u64| if v == 0 { d } else { v };
        Ok(Some(Healthcheck {
            command,
            interval_ns: or(interval_ns, Self::DEFAULT_INTERVAL_NS),
            timeout_ns: or(timeout_ns, Self::DEFAULT_TIMEOUT_NS),
            start_period_ns,
            retries: if retries == 0 { Self::DEFAULT_RETRIES } else { retries },
        }))
    }
}

/// Who the container's process runs as, resolved against the image's /etc/passwd and
/// /etc/group.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct UserSpec {
    /// a name or a numeric uid; empty: the image's User (with `additional_gids`)
    pub user: String,
    /// a name or a numeric gid; None: the user's primary group (0 for an unknown uid)
    pub group: Option<String>,
    /// more supplementary groups
    pub additional_gids: Vec<u32>,
    /// only `additional_gids`, not the groups the image's /etc/group gives the user
    pub strict_groups: bool,
}

impl UserSpec {
    /// `user[:group]`
    pub fn parse(s: &str) -> UserSpec {
        match s.split_once(':') {
            Some((u, g)) => UserSpec { user: u.into(), group: Some(g.into()), ..Default::default() },
            None => UserSpec { user: s.into(), ..Default::default() },
        }
    }

    /// The `user[:group]` form the image's resolver takes.
    pub fn as_user_group(&self) -> String {
        match &self.group {
            Some(g) => format!("{}:{g}", self.user),
            None => self.user.clone(),
        }
    }
}

/// Which network namespace the container gets.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum NetworkMode {
    /// its own namespace on the default bridge network
    #[default]
    Bridge,
    /// its own namespace on a named network
    Network(String),
    /// the host's namespace
    Host,
    /// its own namespace with only loopback
    None,
    /// an existing namespace (a pod's pinned one)
    Path(PathBuf),
    /// another container's
    Container(String),
}

impl NetworkMode {
    /// The CNI network this mode attaches to, given the default one's name.
    pub fn cni_network(&self, default: &str) -> Option<String> {
        match self {
            NetworkMode::Bridge => Some(default.to_string()),
            NetworkMode::Network(n) => Some(n.clone()),
            _ => None,
        }
    }

    /// The container gets a namespace of its own that the engine pins and sets up.
    pub fn own_namespace(&self) -> bool {
        matches!(self, NetworkMode::Bridge | NetworkMode::Network(_) | NetworkMode::None)
    }

    /// docker's name for it (`bridge`, `host`, `none`, a network's name, `container:ID`).
    pub fn display(&self) -> String {
        match self {
            NetworkMode::Bridge => "bridge".into(),
            NetworkMode::Network(n) => n.clone(),
            NetworkMode::Host => "host".into(),
            NetworkMode::None => "none".into(),
            NetworkMode::Path(p) => format!("ns:{}", p.display()),
            NetworkMode::Container(c) => format!("container:{c}"),
        }
    }
}

/// A PID, IPC or UTS namespace.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum NamespaceMode {
    /// a new one of its own
    #[default]
    Private,
    /// the host's
    Host,
    /// an existing one, by path (a pod's pinned namespace, /proc/PID/ns/...)
    Path(PathBuf),
    /// another container's
    Container(String),
    /// its pod's (PID: the namespace the pod's reaper is PID 1 of); only in a pod
    Pod,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct DnsConfig {
    /// name servers; empty: the host's (without loopback ones, unreachable from a namespace)
    pub servers: Vec<IpAddr>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HostEntry {
    pub name: String,
    pub ip: IpAddr,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub source: MountSource,
    /// an absolute path in the container
    pub destination: String,
    #[serde(default)]
    pub readonly: bool,
    /// read-only all the way down (submounts too), where the kernel can
    #[serde(default)]
    pub recursive_readonly: bool,
    #[serde(default)]
    pub propagation: Propagation,
    /// a tmpfs's options (`size=64m`, `mode=1777`, `exec`, ...)
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum MountSource {
    /// a host path (it must exist)
    Bind(PathBuf),
    /// a named volume (made if missing)
    Volume(String),
    /// a new anonymous volume
    Anonymous,
    Tmpfs,
    /// an image's files, read-only (Kubernetes' image volumes): the image by name or ID, and
    /// a directory in it to mount instead of its root
    Image {
        reference: String,
        sub_path: Option<String>,
    },
}

/// Mount propagation, applied recursively.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Propagation {
    #[default]
    Private,
    /// mounts made on the host later appear in the container
    Slave,
    /// and the container's appear on the host
    Shared,
}

impl Propagation {
    pub fn option(self) -> &'static str {
        match self {
            Propagation::Private => "rprivate",
            Propagation::Slave => "rslave",
            Propagation::Shared => "rshared",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceMapping {
    pub host_path: PathBuf,
    pub container_path: String,
    /// a combination of r, w and m
    pub permissions: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Security {
    /// every capability, every device, no seccomp, no masked or read-only paths
    pub privileged: bool,
    /// capabilities added to docker's default set (names with or without CAP_, or ALL)
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    pub read_only_rootfs: bool,
    pub seccomp: Seccomp,
    /// an AppArmor profile; None: none
    pub apparmor: Option<String>,
    /// an SELinux process label; None: none
    pub selinux_label: Option<String>,
    /// None: docker's defaults
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
    pub oom_score_adj: Option<i32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Seccomp {
    /// the default profile (where the runtime can apply one)
    #[default]
    Default,
    Unconfined,
    /// a profile file (JSON, the OCI `linux.seccomp` form)
    Profile(PathBuf),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Resources {
    /// bytes
    pub memory: Option<i64>,
    /// memory + swap in bytes (-1: unlimited swap); None: as much swap as memory where the
    /// kernel accounts swap (docker's default)
    pub memory_swap: Option<i64>,
    pub cpu_shares: Option<u64>,
    /// microseconds per period
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// None or -1: no limit
    pub pids_limit: Option<i64>,
    /// page size (`2MB`) → bytes
    pub hugepage_limits: BTreeMap<String, u64>,
    /// cgroup v2 files → values
    pub unified: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct LogConfig {
    /// where the CRI log goes; None: `ctr.log` in the container's directory
    pub path: Option<PathBuf>,
    /// rotate at this size; None: the engine's `log-max-size`; Some(0): never (the caller
    /// rotates it, as kubelet does, and asks the monitor to reopen it)
    pub max_size: Option<u64>,
    /// a record holds at most this many bytes of a line (longer ones are split into partial
    /// records); None or 0: no limit
    #[serde(default)]
    pub max_line: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    /// no, always, unless-stopped, on-failure
    pub name: String,
    pub maximum_retry_count: u32,
}

impl Default for RestartPolicy {
    fn default() -> RestartPolicy {
        RestartPolicy { name: "no".into(), maximum_retry_count: 0 }
    }
}

impl RestartPolicy {
    /// `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    pub fn parse(s: &str) -> Result<RestartPolicy> {
        let (name, max) = s.split_once(':').map(|(a, b)| (a, Some(b))).unwrap_or((s, None));
        let max = match max {
            None => 0,
            Some(m) => m
                .parse::<u32>()
                .map_err(|_| Error::invalid(format!("restart policy {s:?}: {m:?} is not a retry count")))?,
        };
        match name {
            "no" | "always" | "unless-stopped" if max == 0 => {}
            "on-failure" => {}
            _ if max != 0 => bail!(InvalidInput, "restart policy {s:?}: only on-failure takes a retry count"),
            _ => bail!(InvalidInput, "restart policy {s:?}: expected no, on-failure[:N], always or unless-stopped"),
        }
        Ok(RestartPolicy { name: name.into(), maximum_retry_count: max })
    }
}

/// Checks what needs no system access: names, paths, ranges. Each error names the field.
pub fn validate(c: &ContainerConfig) -> Result<()> {
    if let Some(n) = &c.name {
        if !super::valid_name(n) {
            bail!(
                InvalidInput,
                "name {n:?}: letters, digits, '_', '.' and '-', starting with a letter or digit (at most 128)"
            );
        }
    }
    if c.image.is_empty() {
        bail!(InvalidInput, "image: empty");
    }
    for (field, list) in [("entrypoint", &c.entrypoint), ("command", &c.command)] {
        for (i, a) in list.iter().flatten().enumerate() {
            if a.contains('\0') {
                bail!(InvalidInput, "{field}[{i}]: contains a NUL byte");
            }
        }
    }
    for (i, e) in c.env.iter().enumerate() {
        let name = e.split('=').next().unwrap_or_default();
        if e.is_empty() || name.is_empty() {
            bail!(InvalidInput, "env[{i}] {e:?}: not of the form KEY=value");
        }
        if e.contains('\0') {
            bail!(InvalidInput, "env[{i}]: variable {name}: its value contains a NUL byte");
        }
    }
    if let Some(w) = &c.workdir {
        if !w.starts_with('/') || w.contains('\0') {
            bail!(InvalidInput, "working directory {w:?}: not an absolute path");
        }
    }
    if let Some(h) = &c.hostname {
        if !spec::valid_hostname(h) {
            bail!(InvalidInput, "hostname {h:?}: letters, digits, '-', '.' and '_', at most 64");
        }
    }
    if !c.ports.is_empty() && !matches!(c.network, NetworkMode::Bridge | NetworkMode::Network(_)) {
        bail!(
            InvalidInput,
            "ports: can be published only on a bridge network, not with network {}",
            c.network.display()
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, m) in c.mounts.iter().enumerate() {
        spec::check_container_path(&m.destination).map_err(|e| e.context(format!("mounts[{i}].destination")))?;
        if !seen.insert(m.destination.trim_end_matches('/').to_string()) {
            bail!(InvalidInput, "mounts[{i}].destination {}: mounted twice", m.destination);
        }
        match &m.source {
            MountSource::Bind(p) => {
                if !p.is_absolute() {
                    bail!(InvalidInput, "mounts[{i}].source {}: the host path must be absolute", p.display());
                }
                if !p.exists() {
                    bail!(NotFound, "mounts[{i}].source {}: the host path does not exist", p.display());
                }
            }
            MountSource::Volume(n) if !spec::valid_volume_name(n) => {
                bail!(InvalidInput, "mounts[{i}].source {n:?}: not a valid volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)")
            }
            _ => {}
        }
    }
    for (i, d) in c.devices.iter().enumerate() {
        spec::check_container_path(&d.container_path).map_err(|e| e.context(format!("devices[{i}].containerPath")))?;
        if !d.permissions.chars().all(|p| matches!(p, 'r' | 'w' | 'm')) {
            bail!(InvalidInput, "devices[{i}].permissions {:?}: a combination of r, w and m", d.permissions);
        }
    }
    c.resources.validate()?;
    if let Some(o) = c.security.oom_score_adj {
        if !(-1000..=1000).contains(&o) {
            bail!(InvalidInput, "security.oomScoreAdj {o}: from -1000 to 1000");
        }
    }
    if let Some(s) = c.stop_signal {
        if !(1..=64).contains(&s) {
            bail!(InvalidInput, "stopSignal {s}: not a signal number");
        }
    }
    if c.auto_remove && c.restart.name != "no" {
        bail!(InvalidInput, "a container removed when it exits cannot have the restart policy {}", c.restart.name);
    }
    Ok(())
}

impl Resources {
    /// The limits are ones the kernel can enforce (for create and for updates).
    pub fn validate(&self) -> Result<()> {
        let r = self;
        if let Some(m) = r.memory {
            if m < 6 << 20 {
                bail!(InvalidInput, "resources.memory {m}: too small, the minimum is 6 MiB");
            }
            if m > spec::MAX_MEMORY {
                bail!(InvalidInput, "resources.memory {m}: larger than the kernel can enforce");
            }
        }
        if let Some(s) = r.memory_swap {
            if s != -1 && (s < r.memory.unwrap_or(0) || s > spec::MAX_MEMORY) {
                bail!(
                    InvalidInput,
                    "resources.memorySwap {s}: memory + swap must be at least the memory limit (or -1)"
                );
            }
        }
        if let Some(q) = r.cpu_quota {
            // The kernel's smallest quota is 1 ms.
            if q != -1 && q < 1000 {
                bail!(InvalidInput, "resources.cpuQuota {q}: at least 1000 microseconds (or -1 for none)");
            }
        }
        if let Some(p) = r.cpu_period {
            if !(1000..=1_000_000).contains(&p) {
                bail!(InvalidInput, "resources.cpuPeriod {p}: from 1000 to 1000000 microseconds");
            }
        }
        if let Some(s) = r.cpu_shares {
            if !(2..=262_144).contains(&s) {
                bail!(InvalidInput, "resources.cpuShares {s}: from 2 to 262144");
            }
        }
        if let Some(p) = r.pids_limit {
            if p == 0 || !(-1..=spec::MAX_PIDS_LIMIT).contains(&p) {
                bail!(InvalidInput, "resources.pidsLimit {p}: from 1 to {} (or -1 for no limit)", spec::MAX_PIDS_LIMIT);
            }
        }
        Ok(())
    }
}
