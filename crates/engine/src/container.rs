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

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_image::spec::Overrides;
use berth_network::PortMapping;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{bail, Context, Error, Result};
use crate::runtime::{self, Runtime};
use crate::spec::{self, MountInfo};
use crate::{random_id, time, Engine};

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
            _ if max != 0 => bail!(Invalid, "--restart {s:?}: only on-failure takes a retry count"),
            _ => bail!(Invalid, "--restart {s:?}: expected no, on-failure[:N], always or unless-stopped"),
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

/// The exit code recorded when no one saw the container exit (its monitor was killed): no
/// process exits with it, so it never reads as a real status (255 does: `exit 255`).
pub const EXIT_UNKNOWN: i32 = -1;

/// The monitor's exit file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExitFile {
    exit_code: i32,
    #[serde(default)]
    oom_killed: bool,
    #[serde(default)]
    finished_at: String,
}

/// A process's start time (field 22 of /proc/PID/stat); None if it is gone or a zombie.
pub fn process_start(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.first() == Some(&"Z") || f.first() == Some(&"X") {
        return None;
    }
    f.get(19)?.parse().ok()
}

fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && process_start(pid) == Some(start)
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

impl Engine {
    pub fn runtime(&self, name: Option<&str>) -> Result<Runtime> {
        runtime::resolve(&self.config, &self.run_root, name)
    }

    fn monitor_path(&self) -> Result<PathBuf> {
        crate::config::find_program("berth-monitor", self.config.monitor.as_deref()).filter(|p| p.is_file()).ok_or_else(
            || Error::not_found("berth-monitor not found (beside berth, on PATH, or engine.monitor in berth.toml)"),
        )
    }

    /// Everything about a create that can be checked before anything is made.
    #[allow(clippy::type_complexity)]
    fn validate(&self, o: &CreateOptions) -> Result<(Vec<MountInfo>, Vec<PortMapping>, RestartPolicy, Vec<String>)> {
        if let Some(n) = &o.name {
            if !valid_name(n) {
                bail!(
                    Invalid,
                    "invalid container name {n:?}: letters, digits, '_', '.' and '-', starting with a letter or digit"
                );
            }
        }
        let mut mounts = Vec::new();
        for v in &o.volumes {
            mounts.push(spec::parse_volume(v)?);
        }
        for t in &o.tmpfs {
            mounts.push(spec::parse_tmpfs(t)?);
        }
        let mut seen = std::collections::HashSet::new();
        for m in &mounts {
            if !seen.insert(m.destination.trim_end_matches('/').to_string()) {
                bail!(Invalid, "duplicate mount point {}", m.destination);
            }
        }
        let mut ports = Vec::new();
        for p in &o.publish {
            ports.extend(berth_network::ports::parse(p).map_err(|e| Error::invalid(e.to_string()))?);
        }
        let network = o.network.as_deref().unwrap_or("bridge");
        if !ports.is_empty() && matches!(network, "host" | "none") {
            bail!(Invalid, "ports cannot be published with --network {network}");
        }
        if !matches!(network, "host" | "none" | "bridge") {
            self.network_config(network)?;
        }
        let restart = RestartPolicy::parse(o.restart.as_deref())?;
        if o.auto_remove && restart.name != "no" {
            bail!(Invalid, "--rm and --restart {} cannot be combined", restart.name);
        }
        let caps = spec::capabilities(o.privileged, &o.cap_add, &o.cap_drop)?;
        if let Some(h) = &o.hostname {
            if !spec::valid_hostname(h) {
                bail!(Invalid, "invalid hostname {h:?}");
            }
        }
        for h in &o.add_hosts {
            spec::check_add_host(h)?;
        }
        for d in &o.dns {
            if d.parse::<std::net::IpAddr>().is_err() {
                bail!(Invalid, "--dns {d:?} is not an IP address");
            }
        }
        if let Some(m) = o.memory {
            if m < 6 << 20 {
                bail!(Invalid, "memory limit {m} is too small: the minimum is 6m");
            }
            if m > spec::MAX_MEMORY {
                bail!(Invalid, "memory limit {m} is larger than the kernel can enforce");
            }
        }
        if let Some(c) = o.cpus {
            let max = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
            // The CFS quota is cpus × a 100 ms period, and the kernel's smallest quota is 1 ms.
            if !(c.is_finite() && c >= spec::MIN_CPUS) || c > max {
                bail!(Invalid, "--cpus {c}: must be from {} to the {max} CPUs of this host", spec::MIN_CPUS);
            }
        }
        if let Some(p) = o.pids_limit {
            if p == 0 || p < -1 {
                bail!(Invalid, "--pids-limit {p}: must be positive (or -1 for unlimited)");
            }
            if p > spec::MAX_PIDS_LIMIT {
                bail!(Invalid, "--pids-limit {p}: the kernel's limit is at most {}", spec::MAX_PIDS_LIMIT);
            }
        }
        for e in &o.env {
            if e.is_empty() || e.starts_with('=') {
                bail!(Invalid, "invalid environment variable {e:?}");
            }
            if e.contains('\0') {
                let name = e.split('=').next().unwrap_or_default();
                bail!(Invalid, "environment variable {name}: its value contains a NUL byte");
            }
        }
        if let Some(s) = &o.stop_signal {
            berth_image::spec::signal_number(s).map_err(|e| Error::invalid(format!("--stop-signal: {e}")))?;
        }
        if let Some(s) = &o.seccomp {
            if s != "unconfined" {
                let text = std::fs::read(s).map_err(|e| Error::invalid(format!("seccomp profile {s}: {e}")))?;
                serde_json::from_slice::<Value>(&text)
                    .map_err(|e| Error::invalid(format!("seccomp profile {s}: {e}")))?;
            }
        }
        if o.init {
            self.init_path()?;
        }
        Ok((mounts, ports, restart, caps))
    }

    fn init_path(&self) -> Result<PathBuf> {
        crate::config::find_program("berth-init", self.config.init.as_deref()).filter(|p| p.is_file()).ok_or_else(
            || Error::not_found("--init: berth-init not found (beside berth, on PATH, or engine.init in berth.toml)"),
        )
    }

    /// `create`: validates everything, records the container (its name is taken from here
    /// on), makes its root filesystem, volumes and bundle. Any failure removes what was made.
    pub fn create(&self, o: &CreateOptions) -> Result<Container> {
        let (mut mounts, port_specs, restart, caps) = self.validate(o)?;
        let rt = self.runtime(o.runtime.as_deref())?;
        let img = self
            .store
            .resolve(&o.image)
            .map_err(|e| Error::not_found(format!("{} (pull, load or import it first)", e.message())))?;
        let (_, img_cfg) = self.store.image_config(&img)?;
        let id = random_id();
        let name = match &o.name {
            Some(n) => n.clone(),
            None => {
                let r = u64::from_str_radix(&id[..8], 16).unwrap_or(0) as usize;
                format!("{}_{}", ADJECTIVES[r % ADJECTIVES.len()], NOUNS[(r / 32) % NOUNS.len()])
            }
        };
        let mut c = Container {
            id: id.clone(),
            name,
            created: time::now_rfc3339(),
            image: o.image.clone(),
            image_id: img.id().to_string(),
            image_manifest: img.row.manifest_digest.clone(),
            options: o.clone(),
            runtime: rt.name.clone(),
            args: Vec::new(),
            stop_signal: libc::SIGTERM,
            stop_timeout: o.stop_timeout.unwrap_or(10),
            restart_policy: restart,
            hostname: o.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
            mounts: Vec::new(),
            port_specs: Vec::new(),
            seccomp: String::new(),
            state: State { status: "creating".into(), ..Default::default() },
        };
        if o.network.as_deref() == Some("host") && o.hostname.is_none() {
            c.hostname = host_hostname();
        }
        match self.insert(&c) {
            Ok(()) => {}
            Err(e) if e.kind == crate::Kind::Conflict && o.name.is_none() => {
                c.name = format!("{}_{}", c.name, &id[..6]);
                self.insert(&c)?;
            }
            Err(e) => return Err(e),
        }
        crate::crash_point("created-record");
        let made = (|| -> Result<()> {
            let rootfs = self.store.create_snapshot(&id, &img)?;
            crate::crash_point("snapshot");
            let ov = Overrides {
                entrypoint: o.entrypoint.clone(),
                cmd: o.command.clone(),
                user: o.user.clone(),
                workdir: o.workdir.clone(),
                env: o.env.clone(),
            };
            let d = berth_image::spec::runtime_defaults(&img_cfg, &rootfs, &ov)?;
            c.args = d.args.clone();
            c.stop_signal = match &o.stop_signal {
                Some(s) => berth_image::spec::signal_number(s)?,
                None => d.stop_signal,
            };
            // The image's VOLUMEs not covered by a mount become anonymous volumes; their keys
            // are container paths only (the image is not trusted with host paths or names).
            for v in &d.volumes {
                let volume = spec::image_volume(v)?;
                let dst = volume.destination.trim_end_matches('/');
                if !mounts.iter().any(|m| m.destination.trim_end_matches('/') == dst) {
                    mounts.push(volume);
                }
            }
            let mut ports = port_specs.clone();
            if o.publish_all {
                for e in &d.exposed_ports {
                    let (p, proto) = berth_network::ports::parse_exposed(e)
                        .map_err(|err| Error::invalid(format!("image config ExposedPorts key {err}")))?;
                    if !ports.iter().any(|m| m.container_port == p && m.protocol == proto) {
                        ports.push(PortMapping {
                            host_port: 0,
                            container_port: p,
                            protocol: proto,
                            host_ip: String::new(),
                        });
                    }
                }
            }
            c.port_specs = ports;
            let mut sources = Vec::new();
            for m in mounts.iter_mut() {
                match m.kind.as_str() {
                    "volume" => {
                        let vol = if m.anonymous {
                            self.volume_create(None, &BTreeMap::new(), true)?
                        } else {
                            self.volume_get_or_create(&m.name)?
                        };
                        m.name = vol.name.clone();
                        m.source = vol.mountpoint.to_string_lossy().into_owned();
                        self.volume_copy_up(&vol, &rootfs, &m.destination)?;
                        sources.push(m.source.clone());
                    }
                    _ => sources.push(m.source.clone()),
                }
            }
            c.mounts = mounts.clone();
            // Seccomp: the default profile where the runtime can apply it.
            let features = rt.features(&self.run_root.join("runtimes"));
            let seccomp = match o.seccomp.as_deref() {
                Some("unconfined") => {
                    c.seccomp = "unconfined".into();
                    None
                }
                Some(file) => {
                    if !features.seccomp {
                        bail!(Unsupported, "--security-opt seccomp={file}: runtime {} cannot apply seccomp profiles (its features say seccomp is not enabled); use --runtime runc or crun", rt.name);
                    }
                    c.seccomp = file.to_string();
                    Some(serde_json::from_slice(&std::fs::read(file).ctx(file)?).ctx(file)?)
                }
                None if o.privileged => {
                    c.seccomp = "unconfined (privileged)".into();
                    None
                }
                None if !features.seccomp => {
                    c.seccomp = format!("none: runtime {} does not support seccomp yet", rt.name);
                    None
                }
                None => {
                    c.seccomp = "default".into();
                    Some(crate::seccomp::default_profile(&caps))
                }
            };
            let dir = self.container_dir(&id);
            crate::private_dir(&dir)?;
            let mut env = d.env.clone();
            if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
                env.push(format!("HOSTNAME={}", c.hostname));
            }
            if o.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
                env.push("TERM=xterm".into());
            }
            std::fs::write(dir.join("hostname"), format!("{}\n", c.hostname)).ctx("write hostname")?;
            std::fs::write(dir.join("hosts"), spec::hosts_file(&c.hostname, None, &o.add_hosts)).ctx("write hosts")?;
            std::fs::write(dir.join("resolv.conf"), spec::resolv_conf(&o.dns, o.network.as_deref() == Some("host")))
                .ctx("write resolv.conf")?;
            let init = if o.init { Some(self.init_path()?) } else { None };
            let netns = self.netns_path(&id);
            let mut annotations = serde_json::Map::new();
            // Only the user's labels: runtimes act on some annotations (crun's `run.oci.*`
            // opens host paths for hook output, berth-oci's `org.berth.*`), and an image is
            // not trusted to steer the runtime. The image's labels stay in its config.
            for (k, v) in o.labels.iter() {
                annotations.insert(k.clone(), Value::String(v.clone()));
            }
            let cgroup_v2 = runtime::cgroup_version() == "2";
            let input = spec::SpecInput {
                rootfs: &rootfs,
                read_only: o.read_only,
                terminal: o.tty,
                args: d.args.clone(),
                env,
                cwd: d.cwd.clone(),
                uid: d.uid,
                gid: d.gid,
                additional_gids: d.additional_gids.clone(),
                hostname: c.hostname.clone(),
                caps: caps.clone(),
                privileged: o.privileged,
                no_new_privileges: o.no_new_privileges,
                seccomp,
                netns: if o.network.as_deref() == Some("host") { None } else { Some(&netns) },
                etc_files: &dir,
                mounts: &mounts,
                sources: &sources,
                init: init.as_deref(),
                memory: o.memory,
                swap_accounting: o.memory.is_some() && runtime::swap_accounting(),
                cpus: o.cpus,
                pids_limit: o.pids_limit.filter(|p| *p > 0),
                cgroups_path: format!("{}/{}", self.config.cgroup_parent().trim_end_matches('/'), id),
                cgroup_ns: cgroup_v2,
                annotations,
            };
            let spec = spec::build(&input);
            crate::write_private(&dir.join("config.json"), &serde_json::to_vec_pretty(&spec).unwrap_or_default())?;
            // Unmounted until started: a created container holds no mount.
            self.store.snapshots.unmount(&id)?;
            c.state.status = "created".into();
            self.save(&c)
        })();
        if let Err(e) = made {
            let _ = self.destroy(&c, true);
            return Err(e);
        }
        Ok(c)
    }

    /// A container with its current state (refreshed from the monitor's files and processes).
    pub fn get(&self, name_or_id: &str) -> Result<Container> {
        let id = self.resolve_id(name_or_id)?;
        let mut c = self.load(&id)?.ok_or_else(|| Error::not_found(format!("no such container: {name_or_id}")))?;
        self.refresh(&mut c)?;
        Ok(c)
    }

    /// Every container with its current state, newest first.
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut all = self.load_all()?;
        for c in all.iter_mut() {
            self.refresh(c)?;
        }
        // Containers removed by a lazy cleanup (--rm whose monitor died) are gone.
        all.retain(|c| c.state.status != "removed");
        Ok(all)
    }

    /// Brings a `running` record up to date; a container found dead with its cleanup not done
    /// is cleaned up now (if no one else holds its lock).
    fn refresh(&self, c: &mut Container) -> Result<()> {
        if c.state.status != "running" {
            if c.state.status == "exited" && !c.state.cleaned {
                self.try_cleanup(c)?;
            }
            return Ok(());
        }
        let run = self.run_dir(&c.id);
        if let Ok(b) = std::fs::read(run.join("exit")) {
            if let Ok(x) = serde_json::from_slice::<ExitFile>(&b) {
                c.state.status = "exited".into();
                c.state.exit_code = Some(x.exit_code);
                c.state.oom_killed = x.oom_killed;
                c.state.finished_at = x.finished_at;
                self.save(c)?;
                if !alive(c.state.monitor_pid, c.state.monitor_start) {
                    self.try_cleanup(c)?;
                }
                return Ok(());
            }
        }
        if alive(c.state.monitor_pid, c.state.monitor_start) || alive(c.state.pid, c.state.pid_start) {
            return Ok(());
        }
        // Re-read: the exit file may have been written between the two checks.
        if run.join("exit").exists() {
            return self.refresh(c);
        }
        c.state.status = "exited".into();
        c.state.exit_code = Some(EXIT_UNKNOWN);
        c.state.finished_at = time::now_rfc3339();
        c.state.error =
            "the container's monitor died before the container's exit was recorded; exit status unknown".into();
        self.save(c)?;
        self.try_cleanup(c)
    }

    fn try_cleanup(&self, c: &mut Container) -> Result<()> {
        let p = self.run_root.join("locks").join(&c.id);
        let Ok(f) = std::fs::File::options().create(true).truncate(false).write(true).open(&p) else { return Ok(()) };
        // SAFETY: flock on our descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Ok(());
        }
        if let Some(fresh) = self.load(&c.id)? {
            *c = fresh;
        }
        if c.state.status == "exited" && !c.state.cleaned {
            self.cleanup_locked(c);
            if c.options.auto_remove {
                self.destroy(c, true)?;
                c.state.status = "removed".into();
            }
        }
        Ok(())
    }

    /// Releases what a stopped container holds: runtime state and cgroups, CNI attachments and
    /// network namespace, root filesystem mount. Idempotent; errors are recorded, not fatal.
    fn cleanup_locked(&self, c: &mut Container) {
        self.cleanup_locked_with(c, false)
    }

    /// `runtime_deleted`: the monitor already ran the runtime's `delete` (the exit hook).
    fn cleanup_locked_with(&self, c: &mut Container, runtime_deleted: bool) {
        let mut errors = Vec::new();
        if !runtime_deleted {
            if let Ok(rt) = self.runtime(Some(&c.runtime)) {
                rt.delete_force(&c.id);
            }
        }
        errors.extend(self.network_teardown(&c.id));
        if let Err(e) = self.store.snapshots.unmount(&c.id) {
            errors.push(e.to_string());
        }
        c.state.cleaned = true;
        c.state.pid = 0;
        if !errors.is_empty() {
            c.state.error = format!("cleanup: {}", errors.join("; "));
        }
        let _ = self.save(c);
    }

    /// Removes everything a container has and its record. `anonymous_volumes`: also its
    /// anonymous volumes.
    fn destroy(&self, c: &Container, anonymous_volumes: bool) -> Result<()> {
        // A cleaned-up container has no runtime state left; any other may (a crash midway).
        if !c.state.cleaned {
            if let Ok(rt) = self.runtime(Some(&c.runtime)) {
                rt.delete_force(&c.id);
            }
        }
        let mut errors = self.network_teardown(&c.id);
        crate::crash_point("rm-network");
        if let Err(e) = self.store.remove_snapshot(&c.id) {
            errors.push(e.to_string());
        }
        // The exit of a --rm container outlives it briefly, for the `run` that waits for it.
        let exit = self.run_dir(&c.id).join("exit");
        if c.options.auto_remove && exit.exists() {
            let _ = std::fs::rename(&exit, self.kept_exit(&c.id));
        }
        self.sweep_kept_exits();
        for d in [self.container_dir(&c.id), self.run_dir(&c.id)] {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    errors.push(format!("{}: {e}", d.display()));
                }
            }
        }
        crate::crash_point("rm-files");
        self.delete_record(&c.id)?;
        if anonymous_volumes {
            for m in c.mounts.iter().filter(|m| m.kind == "volume" && m.anonymous) {
                let _ = self.volume_remove(&m.name, false);
            }
        }
        let _ = std::fs::remove_file(self.run_root.join("locks").join(&c.id));
        if !errors.is_empty() {
            bail!(System, "removing container {}: {}", c.short_id(), errors.join("; "));
        }
        Ok(())
    }

    /// `start`: network, monitor, runtime create; `before_start` runs once the container is
    /// created and the attach socket is up (to attach before the first output), then the
    /// monitor starts it. Starting a running container does nothing.
    pub fn start_with<T>(&self, name_or_id: &str, before_start: impl FnOnce(&Path) -> Result<T>) -> Result<Option<T>> {
        let id = self.resolve_id(name_or_id)?;
        let _lock = self.lock(&id)?;
        let mut c = self.load(&id)?.ok_or_else(|| Error::not_found(format!("no such container: {name_or_id}")))?;
        self.refresh(&mut c)?;
        match c.state.status.as_str() {
            "running" => return Ok(None),
            "creating" => bail!(Conflict, "container {} was not completely created (the command creating it was interrupted): remove it with rm -f", c.name),
            _ => {}
        }
        if !c.state.cleaned && c.state.status == "exited" {
            self.cleanup_locked(&mut c);
        }
        self.start_locked(&mut c, before_start)
    }

    pub fn start(&self, name_or_id: &str) -> Result<()> {
        self.start_with(name_or_id, |_| Ok(())).map(|_| ())
    }

    fn start_locked<T>(&self, c: &mut Container, before_start: impl FnOnce(&Path) -> Result<T>) -> Result<Option<T>> {
        let rt = self.runtime(Some(&c.runtime))?;
        let monitor = self.monitor_path()?;
        let id = c.id.clone();
        crate::runtime::prepare_cgroup_parent(self.config.cgroup_parent())?;
        self.store.mount_snapshot(&id)?;
        // Ports: host port 0 is chosen now.
        let mut ports = c.port_specs.clone();
        for p in ports.iter_mut() {
            if p.host_port == 0 {
                p.host_port = berth_network::ports::free_port(&p.protocol)?;
            }
        }
        let host_net = c.options.network.as_deref() == Some("host");
        // A container that never ran stays `created` when its start fails.
        let ran_before = !c.state.started_at.is_empty();
        let fail = |e: Error, c: &mut Container, s: &Engine| -> Error {
            s.cleanup_locked(c);
            if !ran_before {
                c.state.started_at.clear();
            }
            c.state.status = if ran_before { "exited".into() } else { "created".into() };
            c.state.error = e.to_string();
            let _ = s.save(c);
            e
        };
        c.state.ip_address.clear();
        c.state.gateway.clear();
        if !host_net {
            match self.network_setup(&id, c.network_name(self).as_deref(), &ports) {
                Ok(Some(result)) => {
                    if let Some((ip, gw)) = berth_network::cni::ipv4_of(&result) {
                        c.state.ip_address = ip;
                        c.state.gateway = gw.unwrap_or_default();
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(fail(e, c, self)),
            }
        }
        c.state.ports = ports;
        crate::crash_point("network");
        let dir = self.container_dir(&id);
        let ip = if c.state.ip_address.is_empty() { None } else { Some(c.state.ip_address.as_str()) };
        if !host_net {
            if let Err(e) = std::fs::write(dir.join("hosts"), spec::hosts_file(&c.hostname, ip, &c.options.add_hosts)) {
                return Err(fail(e.into(), c, self));
            }
        }
        let run = self.run_dir(&id);
        let _ = std::fs::remove_dir_all(&run);
        if let Err(e) = crate::private_dir(&run) {
            return Err(fail(e, c, self));
        }
        let spawned = self.spawn_monitor(c, &rt, &monitor);
        let (mut reader, mut sock, monitor_pid, ctr_pid) = match spawned {
            Ok(v) => v,
            Err(e) => return Err(fail(e, c, self)),
        };
        c.state.status = "running".into();
        c.state.pid = ctr_pid;
        c.state.pid_start = process_start(ctr_pid).unwrap_or(0);
        c.state.monitor_pid = monitor_pid;
        c.state.monitor_start = process_start(monitor_pid).unwrap_or(0);
        c.state.cleaned = false;
        c.state.stopped_by_user = false;
        c.state.exit_code = None;
        c.state.oom_killed = false;
        c.state.error.clear();
        c.state.finished_at.clear();
        c.state.started_at = time::now_rfc3339();
        if let Err(e) = self.save(c) {
            return Err(fail(e, c, self));
        }
        crate::crash_point("monitor");
        let hook = match before_start(&run) {
            Ok(v) => v,
            Err(e) => {
                drop(sock);
                drop(reader);
                self.wait_monitor_gone(c, Duration::from_secs(10));
                return Err(fail(e, c, self));
            }
        };
        const GONE: &str = "the monitor exited without starting the container";
        let started = sock.write_all(b"start\n").map_err(|e| Error::msg(format!("{GONE} ({e})"))).and_then(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|e| Error::msg(format!("{GONE} ({e})")))?;
            match line.trim() {
                "started" => Ok(()),
                l => Err(Error::msg(l.strip_prefix("error ").unwrap_or(GONE).to_string())),
            }
        });
        if let Err(e) = started {
            self.wait_monitor_gone(c, Duration::from_secs(10));
            return Err(fail(e.context(format!("starting container {}", c.name)), c, self));
        }
        Ok(Some(hook))
    }

    #[allow(clippy::type_complexity)]
    fn spawn_monitor(
        &self,
        c: &Container,
        rt: &Runtime,
        monitor: &Path,
    ) -> Result<(BufReader<UnixStream>, UnixStream, i32, i32)> {
        let run = self.run_dir(&c.id);
        let (ours, theirs) = UnixStream::pair().ctx("socketpair")?;
        let theirs: OwnedFd = theirs.into();
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(monitor);
        cmd.arg("--id").arg(&c.id).arg("--runtime").arg(&rt.path);
        for a in rt.global_args() {
            cmd.arg("--runtime-arg").arg(a);
        }
        if rt.hide_cgroup2 {
            cmd.arg("--hide-cgroup2");
        }
        cmd.arg("--bundle").arg(self.container_dir(&c.id));
        cmd.arg("--dir").arg(&run);
        cmd.arg("--log").arg(self.container_dir(&c.id).join("ctr.log"));
        cmd.arg("--log-max-size").arg(self.config.log_max_size.unwrap_or(crate::config::DEFAULT_LOG_MAX).to_string());
        if c.options.stdin {
            cmd.arg("--stdin");
        }
        if c.options.tty {
            cmd.arg("--terminal");
        }
        cmd.arg("--sync-fd").arg(fd.to_string());
        if let Some(exit) = &self.exit_command {
            cmd.arg("--exit-command").arg(&exit[0]);
            for a in &exit[1..] {
                cmd.arg("--exit-arg").arg(a);
            }
            cmd.arg("--exit-arg").arg(&c.id);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // SAFETY: clearing FD_CLOEXEC on the monitor's end of the socket in the child.
        unsafe {
            cmd.pre_exec(move || {
                let fl = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
                Ok(())
            });
        }
        let out = cmd.output().map_err(|e| Error::msg(format!("{}: {e}", monitor.display())))?;
        drop(theirs);
        if !out.status.success() {
            bail!(System, "berth-monitor: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let mut reader = BufReader::new(ours.try_clone().ctx("socket")?);
        let mut monitor_pid = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).ctx("monitor")? == 0 {
                bail!(System, "berth-monitor exited without a word");
            }
            let line = line.trim();
            if let Some(p) = line.strip_prefix("monitor ") {
                monitor_pid = p.parse().unwrap_or(0);
            } else if let Some(p) = line.strip_prefix("created ") {
                let pid: i32 = p.parse().unwrap_or(0);
                return Ok((reader, ours, monitor_pid, pid));
            } else if let Some(e) = line.strip_prefix("error ") {
                bail!(System, "{e}");
            }
        }
    }

    fn wait_monitor_gone(&self, c: &Container, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while alive(c.state.monitor_pid, c.state.monitor_start) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    fn wait_exit(&self, id: &str, c: &Container, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let exit = self.run_dir(id).join("exit");
        loop {
            if exit.exists() {
                return true;
            }
            if !alive(c.state.monitor_pid, c.state.monitor_start) && !alive(c.state.pid, c.state.pid_start) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the container's init (through the runtime; directly when the
    /// runtime's state is gone but the process lives on).
    fn signal(&self, c: &Container, signal: i32) -> Result<()> {
        let rt = self.runtime(Some(&c.runtime))?;
        match rt.kill(&c.id, signal) {
            Ok(()) => Ok(()),
            Err(e) => {
                if alive(c.state.pid, c.state.pid_start) {
                    // SAFETY: signalling the container's init, verified by its start time.
                    if unsafe { libc::kill(c.state.pid, signal) } == 0 {
                        return Ok(());
                    }
                }
                if !alive(c.state.pid, c.state.pid_start) {
                    return Ok(());
                }
                Err(e)
            }
        }
    }

    /// `stop`: the stop signal, then SIGKILL after `timeout` seconds (default: the
    /// container's --stop-timeout, else 10). Waits for the exit and its cleanup.
    pub fn stop(&self, name_or_id: &str, timeout: Option<u32>) -> Result<Container> {
        let mut c = self.get(name_or_id)?;
        // Marked first, under the lock: an exit being handled now restarts nothing after this.
        self.mark_stopped_by_user(&mut c)?;
        self.refresh(&mut c)?;
        if !c.running() {
            return Ok(c);
        }
        let timeout = timeout.unwrap_or(c.stop_timeout);
        if timeout > 0 {
            self.signal(&c, c.stop_signal)?;
        }
        if timeout == 0 || !self.wait_exit(&c.id, &c, Duration::from_secs(timeout as u64)) {
            self.signal(&c, libc::SIGKILL)?;
            if !self.wait_exit(&c.id, &c, Duration::from_secs(30)) {
                bail!(System, "container {} did not exit after SIGKILL", c.name);
            }
        }
        self.wait_monitor_gone(&c, Duration::from_secs(30));
        self.get(&c.id)
    }

    fn mark_stopped_by_user(&self, c: &mut Container) -> Result<()> {
        let _l = self.lock(&c.id)?;
        if let Some(fresh) = self.load(&c.id)? {
            *c = fresh;
        }
        c.state.stopped_by_user = true;
        self.save(c)
    }

    /// `kill`: a signal to a running container.
    pub fn kill(&self, name_or_id: &str, signal: i32) -> Result<()> {
        let mut c = self.get(name_or_id)?;
        if !c.running() {
            bail!(Conflict, "container {} is not running", c.name);
        }
        if matches!(signal, libc::SIGKILL | libc::SIGTERM | libc::SIGINT) || signal == c.stop_signal {
            self.mark_stopped_by_user(&mut c)?;
        }
        self.signal(&c, signal)
    }

    /// `restart`: stop (if running), then start.
    pub fn restart(&self, name_or_id: &str, timeout: Option<u32>) -> Result<()> {
        let c = self.stop(name_or_id, timeout)?;
        self.start(&c.id)
    }

    /// `rm`: a running container needs `force` (it is killed). `volumes`: its anonymous
    /// volumes go too.
    pub fn remove(&self, name_or_id: &str, force: bool, volumes: bool) -> Result<()> {
        let c = self.get(name_or_id)?;
        if c.running() {
            if !force {
                bail!(Conflict, "container {} is running: stop it first, or remove it with -f", c.name);
            }
            self.stop(&c.id, Some(0))?;
        }
        let _l = self.lock(&c.id)?;
        let Some(c) = self.load(&c.id)? else { return Ok(()) };
        if c.running() && !force {
            bail!(Conflict, "container {} was started again meanwhile", c.name);
        }
        self.destroy(&c, volumes || c.options.auto_remove)
    }

    /// `wait`: blocks until the container is not running; its exit code.
    pub fn wait(&self, name_or_id: &str) -> Result<i32> {
        let id = self.resolve_id(name_or_id)?;
        loop {
            let c = match self.get(&id) {
                Ok(c) => c,
                Err(e) if e.kind == crate::Kind::NotFound => {
                    bail!(NotFound, "container {name_or_id} was removed while waiting")
                }
                Err(e) => return Err(e),
            };
            if !c.running() && c.state.status != "creating" {
                return Ok(c.state.exit_code.unwrap_or(0));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The monitor's exit command: records the exit, releases the container's resources,
    /// then removes it (`--rm`) or restarts it (`--restart`).
    pub fn on_exit(&self, name_or_id: &str) -> Result<()> {
        let id = self.resolve_id(name_or_id)?;
        let lock = self.lock(&id)?;
        let Some(mut c) = self.load(&id)? else { return Ok(()) };
        if c.running() {
            let run = self.run_dir(&id);
            if let Ok(b) = std::fs::read(run.join("exit")) {
                if let Ok(x) = serde_json::from_slice::<ExitFile>(&b) {
                    c.state.status = "exited".into();
                    c.state.exit_code = Some(x.exit_code);
                    c.state.oom_killed = x.oom_killed;
                    c.state.finished_at = x.finished_at;
                }
            }
        }
        if c.state.status != "exited" {
            return Ok(());
        }
        // Run by the monitor after its own `runtime delete`.
        self.cleanup_locked_with(&mut c, true);
        if c.options.auto_remove {
            return self.destroy(&c, true);
        }
        let p = &c.restart_policy;
        let code = c.state.exit_code.unwrap_or(0);
        let again = !c.state.stopped_by_user
            && match p.name.as_str() {
                "always" | "unless-stopped" => true,
                "on-failure" => {
                    code != 0 && (p.maximum_retry_count == 0 || c.state.restart_count < p.maximum_retry_count)
                }
                _ => false,
            };
        if again {
            // Saved by the start (as running, or with its failure): the record never reads
            // as the old exit with the new count.
            c.state.restart_count += 1;
            let r = self.start_locked(&mut c, |_| Ok(()));
            drop(lock);
            r?;
        }
        Ok(())
    }

    fn kept_exit(&self, id: &str) -> PathBuf {
        self.run_root.join("containers").join(format!("{id}.exit"))
    }

    /// Kept exit files older than a minute: no one waits for them any more.
    fn sweep_kept_exits(&self) {
        for e in std::fs::read_dir(self.run_root.join("containers")).into_iter().flatten().flatten() {
            let old = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .map(|d| d.as_secs() > 60);
            if e.file_name().to_string_lossy().ends_with(".exit") && old == Some(true) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// The exit code the monitor recorded (also for a `--rm` container just removed; its
    /// kept copy is consumed).
    pub fn exit_code_of(&self, id: &str) -> Option<i32> {
        let kept = self.kept_exit(id);
        for p in [self.run_dir(id).join("exit"), kept.clone()] {
            if let Ok(b) = std::fs::read(&p) {
                if let Ok(x) = serde_json::from_slice::<ExitFile>(&b) {
                    if p == kept {
                        let _ = std::fs::remove_file(&kept);
                    }
                    return Some(x.exit_code);
                }
            }
        }
        None
    }

    /// Waits until the container's record is gone (a `--rm` container's removal).
    pub fn wait_removed(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while matches!(self.load(id), Ok(Some(_))) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(self.kept_exit(id));
        true
    }

    /// The container's root filesystem, mounted (a stopped container's is mounted again).
    fn rootfs_for_copy(&self, c: &Container) -> Result<PathBuf> {
        if c.state.status == "creating" {
            bail!(Conflict, "container {} is not completely created", c.name);
        }
        Ok(self.store.mount_snapshot(&c.id)?)
    }

    /// `cp CONTAINER:PATH HOST_PATH`
    pub fn copy_from(&self, name_or_id: &str, path: &str, host: &Path) -> Result<()> {
        let c = self.get(name_or_id)?;
        let _l = if c.running() { None } else { Some(self.lock(&c.id)?) };
        let rootfs = self.rootfs_for_copy(&c)?;
        let r = crate::cp::copy_from_root(&rootfs, path, host, false)
            .map_err(|e| Error::msg(format!("cp {}:{path}: {e}", c.name)));
        if !c.running() {
            let _ = self.store.snapshots.unmount(&c.id);
        }
        r
    }

    /// `cp HOST_PATH CONTAINER:PATH`
    pub fn copy_to(&self, host: &Path, name_or_id: &str, path: &str) -> Result<()> {
        let c = self.get(name_or_id)?;
        let _l = if c.running() { None } else { Some(self.lock(&c.id)?) };
        let rootfs = self.rootfs_for_copy(&c)?;
        let r = crate::cp::copy_to_root(host, &rootfs, path)
            .map_err(|e| Error::msg(format!("cp to {}:{path}: {e}", c.name)));
        if !c.running() {
            let _ = self.store.snapshots.unmount(&c.id);
        }
        r
    }

    /// `system prune`'s container part: removes every container that is not running.
    pub fn prune_containers(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for c in self.list()? {
            if !c.running() && c.state.status != "creating" {
                self.remove(&c.id, false, false)?;
                out.push(c.id);
            }
        }
        Ok(out)
    }
}

fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
