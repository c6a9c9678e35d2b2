//! Pods (CRI's sandboxes), without a pause container: a pod owns pinned network, IPC and UTS
//! namespaces (bind mounts of nsfs files, as CRI-O's pinns does), its hostname, /etc/hosts,
//! /etc/resolv.conf and /dev/shm, its sysctls, its cgroup parent, its CNI attachment (one ADD
//! per pod, DEL when it stops, results cached) and its port mappings. Its containers join its
//! namespaces by path and share its files.
//!
//! ```text
//! <root>/sandboxes/<id>/          hostname, hosts, resolv.conf (0700 directory)
//! <run>/sandboxes/<id>/           ipc, uts, user (pinned namespaces), shm/ (a tmpfs)
//! <run>/netns/<id>                the pod's network namespace (as a container's)
//! ```
//!
//! Where the pod's containers share one PID namespace, its PID 1 is a reaper (`berth-init
//! --pause`, a few kilobytes and no C library), started by the engine, that reaps the orphans
//! they leave; containers join it by /proc/PID/ns/pid. It is the only process a pod has of its
//! own.
//!
//! A pod is `ready` from RunPodSandbox until StopPodSandbox (which stops its containers and
//! releases its network), `notready` after; RemovePodSandbox removes its containers and all
//! it holds. Records live in the store's `sandboxes` table beside the containers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_network::netns::{self, Kind as NsKind};
use berth_network::PortMapping;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::container::config::{DnsConfig, Resources};
use crate::error::{bail, Context, Result};
use crate::{random_id, spec, time, Engine};

/// Where a pod's namespace of one kind comes from.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum PodNamespace {
    /// the pod's own, shared by its containers
    #[default]
    Pod,
    /// the node's (the host's)
    Node,
    /// each container its own (PID only)
    Container,
}

/// `length` IDs from `container_id` in the pod map to `host_id` on the host.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdMapping {
    fn sys(&self) -> berth_sys::userns::IdMap {
        berth_sys::userns::IdMap { container_id: self.container_id, host_id: self.host_id, length: self.length }
    }
}

/// A pod's own user namespace (Kubernetes' `hostUsers: false`): one range of user IDs and one
/// of group IDs, each mapping the pod's root (0) to an unprivileged host ID.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct PodUserNamespace {
    pub uids: Vec<IdMapping>,
    pub gids: Vec<IdMapping>,
}

impl PodUserNamespace {
    /// Checks the mappings: one range each, starting at the pod's root, within 32-bit IDs.
    fn validate(&self) -> Result<()> {
        for (field, maps) in [("uids", &self.uids), ("gids", &self.gids)] {
            let [m] = maps.as_slice() else {
                bail!(InvalidInput, "userns_options.{field}: one mapping is needed, {} given", maps.len());
            };
            if m.container_id != 0 {
                bail!(
                    InvalidInput,
                    "userns_options.{field}[0].container_id: {} (the pod's root, ID 0, must be mapped)",
                    m.container_id
                );
            }
            if m.host_id == 0 {
                bail!(InvalidInput, "userns_options.{field}[0].host_id: 0 (the host's root is not a pod's)");
            }
            if m.length == 0 || u64::from(m.host_id) + u64::from(m.length) > u64::from(u32::MAX) {
                bail!(
                    InvalidInput,
                    "userns_options.{field}[0]: host IDs {} to {} (length {}) do not fit in 32-bit IDs",
                    m.host_id,
                    u64::from(m.host_id) + u64::from(m.length),
                    m.length
                );
            }
        }
        Ok(())
    }

    pub fn uid_maps(&self) -> Vec<berth_sys::userns::IdMap> {
        self.uids.iter().map(IdMapping::sys).collect()
    }

    pub fn gid_maps(&self) -> Vec<berth_sys::userns::IdMap> {
        self.gids.iter().map(IdMapping::sys).collect()
    }

    /// The host IDs of the pod's root.
    pub fn root(&self) -> (u32, u32) {
        (self.uids.first().map_or(0, |m| m.host_id), self.gids.first().map_or(0, |m| m.host_id))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SandboxConfig {
    /// Kubernetes' pod name, namespace, uid and attempt
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub hostname: String,
    /// where the containers' logs go (kubelet's `log_directory`)
    pub log_directory: Option<PathBuf>,
    pub dns: DnsConfig,
    pub ports: Vec<PortMapping>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// the cgroup the pod's containers go under (kubelet's `cgroup_parent`)
    pub cgroup_parent: Option<String>,
    pub network: PodNamespace,
    pub ipc: PodNamespace,
    pub pid: PodNamespace,
    /// a user namespace of the pod's own (None: the node's); it owns the pod's other
    /// namespaces, and its containers' root filesystems are ID-mapped to it
    pub userns: Option<PodUserNamespace>,
    /// the SELinux label its containers get when they ask for none
    pub selinux_label: Option<String>,
    /// namespaced sysctls every container of the pod gets
    pub sysctls: BTreeMap<String, String>,
    /// the runtime handler (Kubernetes' RuntimeClass)
    pub runtime: Option<String>,
    pub privileged: bool,
    /// the pod's overhead (RuntimeClass overhead), as kubelet last gave it; recorded only:
    /// kubelet owns the pod's cgroup and sets its limits itself
    pub overhead: Option<Resources>,
    /// the pod's resources (its containers' together), as kubelet last gave them
    /// (RunPodSandbox, UpdatePodSandboxResources); recorded only, as `overhead` is
    pub resources: Option<Resources>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SandboxState {
    /// `ready` or `notready`
    pub status: String,
    /// the pod's address on its network
    pub ip: String,
    /// namespaces its containers join (None: the node's)
    pub netns: Option<PathBuf>,
    /// the pod's user namespace (pinned), when it has one
    pub userns: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// its /dev/shm (None: the node's)
    pub shm: Option<PathBuf>,
    /// the PID namespace its containers share (`/proc/PID/ns/pid` of its reaper), when they do
    pub pid_ns: Option<PathBuf>,
    /// the reaper (berth-init --pause) that is PID 1 of that namespace: pid, start time
    pub reaper_pid: i32,
    pub reaper_start: u64,
    /// a CNI attachment exists (DEL due)
    pub network_attached: bool,
    /// the CNI network it is attached to
    pub network: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    pub id: String,
    /// unique: `<name>_<namespace>_<uid>_<attempt>`
    pub name: String,
    /// nanoseconds since the epoch
    pub created_at: i64,
    pub config: SandboxConfig,
    pub state: SandboxState,
}

/// A pod's status from its record until RunPodSandbox has made all of it.
const CREATING: &str = "creating";

impl Sandbox {
    pub fn ready(&self) -> bool {
        self.state.status == "ready"
    }
}

pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS sandboxes (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    record      TEXT NOT NULL
);
"#;

/// Sysctls a pod may set: those kubelet calls safe (namespaced, isolated from the host and
/// other pods), and other namespaced ones when the pod has that namespace of its own.
fn check_sysctl(key: &str, c: &SandboxConfig) -> Result<()> {
    let k = key.replace('/', ".");
    let ipc =
        k.starts_with("kernel.shm") || k.starts_with("kernel.msg") || k == "kernel.sem" || k.starts_with("fs.mqueue.");
    let net = k.starts_with("net.");
    if ipc && c.ipc != PodNamespace::Pod {
        bail!(InvalidInput, "sysctls: {key} needs the pod's own IPC namespace (it would change the host's)");
    }
    if net && c.network != PodNamespace::Pod {
        bail!(InvalidInput, "sysctls: {key} needs the pod's own network namespace (it would change the host's)");
    }
    if !ipc && !net {
        bail!(InvalidInput, "sysctls: {key} is not namespaced: a pod cannot set it");
    }
    Ok(())
}

/// A pod's overhead and total resources are limits the kernel could enforce (as a
/// container's), the refusal naming which.
fn check_pod_resources(overhead: Option<&Resources>, resources: Option<&Resources>) -> Result<()> {
    if let Some(o) = overhead {
        o.validate().map_err(|e| e.context("overhead"))?;
    }
    if let Some(r) = resources {
        r.validate().map_err(|e| e.context("resources"))?;
    }
    Ok(())
}

impl Engine {
    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join("sandboxes").join(id)
    }

    fn sandbox_run_dir(&self, id: &str) -> PathBuf {
        self.run_root.join("sandboxes").join(id)
    }

    fn sandbox_insert(&self, s: &Sandbox) -> Result<()> {
        let rec = serde_json::to_string(s).ctx("serialize sandbox")?;
        let clash = self.store.db().write(|tx| {
            let clash: Option<String> =
                tx.query_row("SELECT id FROM sandboxes WHERE name = ?1", [&s.name], |r| r.get(0)).optional()?;
            if clash.is_none() {
                tx.execute(
                    "INSERT INTO sandboxes (id, name, created_at, record) VALUES (?1, ?2, ?3, ?4)",
                    params![s.id, s.name, s.created_at, rec],
                )?;
            }
            Ok(clash)
        })?;
        if let Some(other) = clash {
            bail!(AlreadyExists, "pod {}: the name is in use by pod {}", s.name, &other[..12]);
        }
        Ok(())
    }

    pub(crate) fn sandbox_save(&self, s: &Sandbox) -> Result<()> {
        let rec = serde_json::to_string(s).ctx("serialize sandbox")?;
        self.store.db().write(|tx| {
            tx.execute("UPDATE sandboxes SET record = ?2 WHERE id = ?1", params![s.id, rec])?;
            Ok(())
        })?;
        Ok(())
    }

    /// A pod by id or unique id prefix.
    pub fn sandbox_get(&self, id: &str) -> Result<Sandbox> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(NotFound, "pod {id:?} not found");
        }
        let db = self.store.db();
        let mut st = db.conn.prepare("SELECT record FROM sandboxes WHERE id LIKE ?1 LIMIT 2")?;
        let recs: Vec<String> =
            st.query_map([format!("{}%", id.to_ascii_lowercase())], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        match recs.as_slice() {
            [one] => serde_json::from_str(one).ctx(format!("pod {id}: stored record")),
            [] => bail!(NotFound, "pod {id} not found"),
            _ => bail!(Ambiguous, "pod id prefix {id} matches several pods"),
        }
    }

    /// Every pod, oldest first.
    pub fn sandbox_list(&self) -> Result<Vec<Sandbox>> {
        let db = self.store.db();
        let mut st = db.conn.prepare("SELECT id, record FROM sandboxes ORDER BY created_at, id")?;
        let rows: Vec<(String, String)> =
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        rows.into_iter().map(|(id, r)| serde_json::from_str(&r).ctx(format!("pod {id}: stored record"))).collect()
    }

    /// RunPodSandbox: validates, records the pod (its name is taken from here on), then makes
    /// its files, namespaces, /dev/shm and network. Any failure removes what was made.
    pub fn sandbox_run(&self, cfg: &SandboxConfig) -> Result<Sandbox> {
        if cfg.name.is_empty() || cfg.namespace.is_empty() || cfg.uid.is_empty() {
            bail!(InvalidInput, "metadata: a pod needs a name, a namespace and a uid");
        }
        if !cfg.hostname.is_empty() && !spec::valid_hostname(&cfg.hostname) {
            bail!(InvalidInput, "hostname {:?}: letters, digits, '-', '.' and '_', at most 64", cfg.hostname);
        }
        for k in cfg.sysctls.keys() {
            check_sysctl(k, cfg)?;
        }
        if !cfg.ports.is_empty() && cfg.network != PodNamespace::Pod {
            bail!(InvalidInput, "port_mappings: a pod on the node's network cannot map ports");
        }
        check_pod_resources(cfg.overhead.as_ref(), cfg.resources.as_ref())?;
        if let Some(u) = &cfg.userns {
            u.validate()?;
            // The node's namespaces belong to the node's user namespace: the pod's root
            // would have no power in them, and a privileged pod is the node's root.
            for (field, mode) in [("network", cfg.network), ("pid", cfg.pid), ("ipc", cfg.ipc)] {
                if mode == PodNamespace::Node {
                    bail!(InvalidInput, "namespace_options.{field}: NODE, with a user namespace of the pod's own");
                }
            }
            if cfg.privileged {
                bail!(InvalidInput, "privileged: a pod with a user namespace of its own cannot be privileged");
            }
        }
        if let Some(p) = &cfg.cgroup_parent {
            if p.split('/').any(|c| c == "..") {
                bail!(InvalidInput, "cgroup_parent {p:?}: contains '..'");
            }
        }
        // The runtime handler must exist before anything is made.
        let runtime = self.runtime(cfg.runtime.as_deref())?;
        if cfg.userns.is_some() {
            if !self.pod_userns_supported() {
                bail!(
                    Unsupported,
                    "userns_options: pods with a user namespace of their own need ID-mapped mounts of the store's \
                     filesystem ({}) and overlayfs with ID-mapped layers (Linux 5.19+)",
                    self.root.display()
                );
            }
            // The runtime mounts the pod's files and root filesystems as the pod's root, an
            // unprivileged host user: the store and run root must be reachable by path.
            for dir in [&self.root, &self.run_root] {
                for d in dir.ancestors() {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(d).ctx(d.display())?.permissions().mode();
                    if mode & 0o001 == 0 {
                        bail!(
                            InvalidState,
                            "userns_options: {} (mode {:o}) is not traversable by other users, and the pod's root \
                             (host user {}) must reach {} through it",
                            d.display(),
                            mode & 0o7777,
                            cfg.userns.as_ref().map_or(0, |u| u.root().0),
                            dir.display()
                        );
                    }
                }
            }
            if runtime.name != "berth-oci" {
                bail!(
                    Unsupported,
                    "userns_options: pods with a user namespace of their own run with berth-oci, not {}",
                    runtime.name
                );
            }
        }
        let id = random_id();
        let mut s = Sandbox {
            id: id.clone(),
            name: format!("{}_{}_{}_{}", cfg.name, cfg.namespace, cfg.uid, cfg.attempt),
            created_at: time::now_nanos() as i64,
            config: cfg.clone(),
            state: SandboxState { status: CREATING.into(), ..Default::default() },
        };
        self.sandbox_insert(&s)?;
        crate::crash_point("sandbox-record");
        if let Err(e) = self.sandbox_make(&mut s) {
            let _ = self.sandbox_release(&mut s);
            let _ = self.sandbox_delete_record(&id);
            return Err(e);
        }
        Ok(s)
    }

    fn sandbox_make(&self, s: &mut Sandbox) -> Result<()> {
        let cfg = s.config.clone();
        let dir = self.sandbox_dir(&s.id);
        let run = self.sandbox_run_dir(&s.id);
        crate::private_dir(&dir)?;
        crate::private_dir(&run)?;
        if let Some(u) = &cfg.userns {
            // Its root mounts its files from here, as the host user it maps to: searchable by
            // the pod's group, the files still root's (0710 root:<the pod's host gid>).
            let gid = u.root().1;
            for d in [&dir, &run] {
                use std::os::unix::fs::PermissionsExt;
                std::os::unix::fs::lchown(d, None, Some(gid)).ctx(format!("chown {}", d.display()))?;
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o710)).ctx(d.display())?;
            }
        }
        // No hostname asked for: the node's, which the new UTS namespace starts with (as in
        // containerd and CRI-O; a pod's name may be longer than a hostname can be).
        let hostname = if cfg.network == PodNamespace::Node || cfg.hostname.is_empty() {
            crate::container::host_hostname()
        } else {
            cfg.hostname.clone()
        };
        std::fs::write(dir.join("hostname"), format!("{hostname}\n")).ctx("write the pod's hostname")?;
        std::fs::write(dir.join("resolv.conf"), spec::resolv_conf(&cfg.dns, cfg.network == PodNamespace::Node))
            .ctx("write the pod's resolv.conf")?;
        // A user namespace of its own comes first: it owns the namespaces made after it.
        let userns = match &cfg.userns {
            Some(u) => {
                let fd = berth_sys::userns::create(&u.uid_maps(), &u.gid_maps()).ctx("the pod's user namespace")?;
                let path = run.join("user");
                berth_sys::userns::pin(&fd, &path).ctx("pinning the pod's user namespace")?;
                s.state.userns = Some(path);
                Some(fd)
            }
            None => None,
        };
        let pin = |path: &Path, kind: NsKind, hostname: Option<&str>| -> std::io::Result<()> {
            match &userns {
                Some(u) => {
                    let flag = match kind {
                        NsKind::Ipc => libc::CLONE_NEWIPC,
                        NsKind::Uts => libc::CLONE_NEWUTS,
                        NsKind::Net => libc::CLONE_NEWNET,
                    };
                    let fds = berth_sys::userns::unshare_in(u, &[flag], hostname.map(str::as_bytes))?;
                    berth_sys::userns::pin(&fds[0], path)
                }
                None => netns::pin(path, kind, hostname),
            }
        };
        if cfg.network == PodNamespace::Node && Path::new("/etc/hosts").exists() {
            std::fs::copy("/etc/hosts", dir.join("hosts")).ctx("copy the node's /etc/hosts")?;
        } else if cfg.network == PodNamespace::Node {
            // A node without /etc/hosts (a minimal host): the loopback names at least.
            std::fs::write(dir.join("hosts"), spec::hosts_file(&hostname, None, &[])).ctx("write the pod's hosts")?;
        } else {
            std::fs::write(dir.join("hosts"), spec::hosts_file(&hostname, None, &[])).ctx("write the pod's hosts")?;
            let uts = run.join("uts");
            pin(&uts, NsKind::Uts, Some(&hostname)).ctx("the pod's UTS namespace")?;
            s.state.uts = Some(uts);
        }
        if cfg.ipc == PodNamespace::Pod {
            let ipc = run.join("ipc");
            pin(&ipc, NsKind::Ipc, None).ctx("the pod's IPC namespace")?;
            s.state.ipc = Some(ipc);
            let shm = run.join("shm");
            crate::private_dir(&shm)?;
            mount_tmpfs(&shm, "mode=1777,size=67108864").ctx("the pod's /dev/shm")?;
            s.state.shm = Some(shm);
        }
        if cfg.pid == PodNamespace::Pod {
            let (pid, start) = start_reaper(&self.init_path()?, userns.as_ref(), &self.run_root.join("empty"))
                .ctx("the pod's PID namespace")?;
            s.state.reaper_pid = pid;
            s.state.reaper_start = start;
            s.state.pid_ns = Some(PathBuf::from(format!("/proc/{pid}/ns/pid")));
            // Recorded at once: a failure further on must stop it.
            self.sandbox_save(s)?;
        }
        crate::crash_point("sandbox-namespaces");
        if cfg.network == PodNamespace::Pod {
            // The CNI attachment is recorded before it is made: a crash midway is then undone.
            s.state.network_attached = true;
            self.sandbox_save(s)?;
            let conf = match &self.pod_cni_conf_dir {
                Some(dir) => match Engine::pod_network_config(dir)? {
                    Some((_, conf)) => conf,
                    None => bail!(
                        InvalidState,
                        "no CNI network configuration in {} yet (the network is not ready)",
                        dir.display()
                    ),
                },
                None => self.network_config(self.config.default_network())?,
            };
            s.state.network = conf["name"].as_str().unwrap_or_default().to_string();
            let result = self.network_setup_with(&s.id, Some(&conf), &cfg.ports, s.state.userns.as_deref())?;
            s.state.netns = Some(self.netns_path(&s.id));
            if let Some((ip, _)) = result.as_ref().and_then(berth_network::cni::ipv4_of) {
                s.state.ip = ip;
                std::fs::write(dir.join("hosts"), spec::hosts_file(&hostname, Some(&s.state.ip), &[]))
                    .ctx("write the pod's hosts")?;
            }
        }
        crate::crash_point("sandbox-network");
        s.state.status = "ready".into();
        self.sandbox_save(s)
    }

    /// Releases what a pod holds (its network, namespaces, /dev/shm), idempotently; the
    /// errors, if any, for the record.
    fn sandbox_release(&self, s: &mut Sandbox) -> Vec<String> {
        let mut errors = self.sandbox_release_network(s);
        let run = self.sandbox_run_dir(&s.id);
        for ns in ["ipc", "uts", "user"] {
            if let Err(e) = netns::remove(&run.join(ns)) {
                errors.push(format!("the pod's {ns} namespace: {e}"));
            }
        }
        s.state.ipc = None;
        s.state.uts = None;
        s.state.userns = None;
        let shm = run.join("shm");
        if berth_sys::proc::is_mountpoint(&shm).unwrap_or(false) {
            if let Err(e) = berth_sys::mount::umount2(&shm, libc::MNT_DETACH) {
                errors.push(format!("the pod's /dev/shm: {e}"));
            }
        }
        s.state.shm = None;
        stop_reaper(s);
        errors
    }

    fn sandbox_delete_record(&self, id: &str) -> Result<()> {
        let _ = std::fs::remove_dir_all(self.sandbox_dir(id));
        let _ = std::fs::remove_dir_all(self.sandbox_run_dir(id));
        self.store.db().write(|tx| {
            tx.execute("DELETE FROM sandboxes WHERE id = ?1", [id])?;
            Ok(())
        })?;
        Ok(())
    }

    /// The pod's containers.
    pub fn sandbox_containers(&self, id: &str) -> Result<Vec<crate::Container>> {
        Ok(self.load_all()?.into_iter().filter(|c| c.config.sandbox.as_deref() == Some(id)).collect())
    }

    /// StopPodSandbox: kills its containers (kubelet stops them gracefully before, with their
    /// grace periods) and releases its network; idempotent, and a pod already gone is fine.
    pub fn sandbox_stop(&self, id: &str) -> Result<()> {
        let Some((mut s, _lock)) = self.sandbox_locked(id)? else { return Ok(()) };
        for c in self.sandbox_containers(&s.id)? {
            self.stop(&c.id, Some(0)).map_err(|e| e.context(format!("stopping container {}", c.name)))?;
        }
        let errors = self.sandbox_release_network(&mut s);
        // With its containers stopped, the PID namespace ends with its reaper.
        stop_reaper(&mut s);
        s.state.status = "notready".into();
        s.state.error = errors.join("; ");
        self.sandbox_save(&s)?;
        if !errors.is_empty() {
            bail!(System, "stopping pod {}: {}", s.name, errors.join("; "));
        }
        Ok(())
    }

    /// The pod and its lock; None for a pod that is gone (stop and remove are idempotent).
    fn sandbox_locked(&self, id: &str) -> Result<Option<(Sandbox, crate::Lock)>> {
        let s = match self.sandbox_get(id) {
            Ok(s) => s,
            Err(e) if e.is(crate::Kind::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let lock = self.lock(&s.id)?;
        Ok(Some((s, lock)))
    }

    /// Releases the pod's CNI attachment and network namespace. Still attached (and tried
    /// again by the next stop or remove) while a DEL fails: its cached result is what frees
    /// the address, also after a reboot took the namespace.
    fn sandbox_release_network(&self, s: &mut Sandbox) -> Vec<String> {
        if !s.state.network_attached && !self.netns_path(&s.id).exists() && self.cni().cached(&s.id).is_empty() {
            return Vec::new();
        }
        let errors = self.network_teardown(&s.id);
        s.state.network_attached = !errors.is_empty();
        s.state.netns = None;
        errors
    }

    /// RemovePodSandbox: removes its containers (killed if need be) and everything the pod
    /// holds; idempotent.
    pub fn sandbox_remove(&self, id: &str) -> Result<()> {
        let Some((mut s, _lock)) = self.sandbox_locked(id)? else { return Ok(()) };
        for c in self.sandbox_containers(&s.id)? {
            self.remove(&c.id, true, true).map_err(|e| e.context(format!("removing container {}", c.name)))?;
        }
        let errors = self.sandbox_release(&mut s);
        if !errors.is_empty() {
            s.state.error = errors.join("; ");
            let _ = self.sandbox_save(&s);
            bail!(System, "removing pod {}: {}", s.name, errors.join("; "));
        }
        self.sandbox_delete_record(&s.id)?;
        Ok(())
    }

    /// UpdatePodSandboxResources: records the pod's new overhead and total resources (None:
    /// unchanged). Kubelet has already set them on the pod's cgroup, which is its own: the
    /// engine changes no cgroup here, and its containers' limits are UpdateContainerResources'.
    /// Idempotent; a stopped pod's record is updated too.
    pub fn sandbox_update_resources(
        &self,
        id: &str,
        overhead: Option<&Resources>,
        resources: Option<&Resources>,
    ) -> Result<Sandbox> {
        check_pod_resources(overhead, resources)?;
        let s = self.sandbox_get(id)?;
        let _lock = self.lock(&s.id)?;
        // Read again under the lock: a concurrent stop saved its own state meanwhile.
        let mut s = self.sandbox_get(&s.id)?;
        if let Some(o) = overhead {
            s.config.overhead = Some(o.clone());
        }
        if let Some(r) = resources {
            s.config.resources = Some(r.clone());
        }
        self.sandbox_save(&s)?;
        Ok(s)
    }

    /// After a crash of the server that was creating them: removes the pods RunPodSandbox
    /// did not finish and the pods' containers CreateContainer did not finish, with all they
    /// hold. Their ids never reached a client (the call did not return), and a retry of the
    /// same call must not find their names taken. After a reboot: ready pods whose namespaces
    /// are gone become not ready. One line per object for the log.
    pub fn sandbox_recover(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for c in self.load_all().unwrap_or_default() {
            if c.config.sandbox.is_some() && c.state.status == "creating" {
                match self.remove(&c.id, true, true) {
                    Ok(()) => notes.push(format!("removed container {} (its creation was interrupted)", c.name)),
                    Err(e) => notes.push(format!("container {} (its creation was interrupted): {e}", c.name)),
                }
            }
        }
        for mut s in self.sandbox_list().unwrap_or_default() {
            if s.ready() && !self.sandbox_intact(&s) {
                // The node restarted (the run directory is empty) or someone ended the pod's
                // reaper: its containers are dead with its namespaces. The pod is kept, not
                // ready, for kubelet to see and replace; what is left of it is released.
                let Ok(_lock) = self.lock(&s.id) else { continue };
                let mut errors = self.sandbox_release_network(&mut s);
                stop_reaper(&mut s);
                s.state.status = "notready".into();
                errors.insert(0, "its namespaces were gone when the server started (did the node restart?)".into());
                s.state.error = errors.join("; ");
                match self.sandbox_save(&s) {
                    Ok(()) => notes.push(format!("pod {} is not ready: {}", s.name, s.state.error)),
                    Err(e) => notes.push(format!("pod {}: {e}", s.name)),
                }
                continue;
            }
            if s.state.status != CREATING {
                continue;
            }
            let Ok(_lock) = self.lock(&s.id) else { continue };
            let errors = self.sandbox_release(&mut s);
            if errors.is_empty() {
                let _ = self.sandbox_delete_record(&s.id);
                notes.push(format!("removed pod {} (its creation was interrupted)", s.name));
            } else {
                notes.push(format!("pod {} (its creation was interrupted): {}", s.name, errors.join("; ")));
            }
        }
        notes
    }

    /// Whether what a ready pod's containers join is still there: its pinned namespaces and
    /// its reaper (gone after a reboot, which empties the run directory).
    fn sandbox_intact(&self, s: &Sandbox) -> bool {
        let pinned = |p: &Option<PathBuf>| p.as_deref().is_none_or(netns::is_pinned);
        pinned(&s.state.netns)
            && pinned(&s.state.ipc)
            && pinned(&s.state.uts)
            && pinned(&s.state.userns)
            && (s.state.reaper_pid <= 0 || crate::container::alive(s.state.reaper_pid, s.state.reaper_start))
    }

    /// The files and namespaces a container of pod `id` uses.
    pub(crate) fn sandbox_for_container(&self, id: &str) -> Result<Sandbox> {
        let s = self.sandbox_get(id)?;
        if !s.ready() {
            bail!(InvalidState, "pod {} is not ready (it was stopped): no container can be created in it", s.name);
        }
        Ok(s)
    }

    /// Whether pods can have user namespaces of their own here: the store's filesystem takes
    /// ID-mapped mounts (its layers are mounted through them) and overlayfs takes ID-mapped
    /// layers (Linux 5.19). Probed once.
    pub fn pod_userns_supported(&self) -> bool {
        static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *SUPPORTED.get_or_init(|| {
            let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            let mut v = uname.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
            let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
            if (major, minor) < (5, 19) || self.store.config.driver() != berth_storage::Driver::Overlay {
                return false;
            }
            let probe = || -> std::io::Result<()> {
                use std::os::fd::AsRawFd;
                let map = [berth_sys::userns::IdMap { container_id: 0, host_id: 65536, length: 65536 }];
                let userns = berth_sys::userns::create(&map, &map)?;
                let tree = berth_sys::mount::open_tree_clone(berth_sys::file::CWD, &self.root, false)?;
                let attr = berth_sys::mount::MountAttr {
                    attr_set: berth_sys::mount::MOUNT_ATTR_IDMAP,
                    userns_fd: userns.as_raw_fd() as u64,
                    ..Default::default()
                };
                berth_sys::mount::mount_setattr(&tree, "", false, &attr)
            };
            probe().is_ok()
        })
    }

    /// The directory with a pod's hostname, hosts and resolv.conf.
    pub(crate) fn sandbox_files(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id)
    }
}

/// Starts `berth-init --pause` as PID 1 of a new PID namespace, in a session of its own with
/// nothing of this process's open but /dev/null, confined (chrooted to an empty directory,
/// without capabilities; the pod's root in its user namespace when it has one): its
/// containers may ptrace it when they share its PID namespace. Returns its pid and start time
/// once it runs the program (an exec failure is reported as such).
fn start_reaper(init: &Path, userns: Option<&std::os::fd::OwnedFd>, root: &Path) -> std::io::Result<(i32, u64)> {
    use std::os::fd::AsFd;
    let pid = berth_sys::process::spawn_pid1(init, &[c"berth-init", c"--pause"], userns.map(|u| u.as_fd()), root)?;
    Ok((pid, crate::container::process_start(pid).unwrap_or(0)))
}

/// Ends a pod's reaper (and with it the PID namespace), and reaps it when it is this
/// process's child (berthd started it); one that is gone already is fine.
fn stop_reaper(s: &mut Sandbox) {
    let (pid, start) = (s.state.reaper_pid, s.state.reaper_start);
    if pid > 0 && crate::container::alive(pid, start) {
        // The recorded pid, checked against its start time just now.
        let _ = berth_sys::process::kill(pid, libc::SIGKILL);
        // Reaped when it is this process's child (ECHILD otherwise).
        let _ = berth_sys::process::waitpid(pid, false);
    }
    s.state.reaper_pid = 0;
    s.state.reaper_start = 0;
    s.state.pid_ns = None;
}

fn mount_tmpfs(target: &Path, options: &str) -> std::io::Result<()> {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    berth_sys::mount::mount(Some(Path::new("shm")), target, Some("tmpfs"), flags, Some(options))
}
