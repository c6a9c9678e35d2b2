//! `create`: everything checked before anything is made, then the record (the name is taken
//! from here on), the root filesystem, volumes and the bundle; a failure removes what was made.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use berth_image::spec::Overrides;
use berth_network::PortMapping;
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp};

use super::config::{self, ContainerConfig, MountSource, NamespaceMode, NetworkMode, Seccomp};
use super::*;
use crate::error::{bail, Context, Error, Kind, Result};
use crate::runtime;
use crate::spec::{self, MountInfo};
use crate::{random_id, time, Engine};

impl Engine {
    /// Everything about a create that can be checked before anything is made: the config
    /// itself, then what it names on this host (networks, profiles, programs). The
    /// capability set the container gets.
    pub(crate) fn validate(&self, c: &ContainerConfig) -> Result<Vec<String>> {
        config::validate(c)?;
        if let NetworkMode::Network(n) = &c.network {
            self.network_config(n)?;
        }
        let caps = spec::capabilities(c.security.privileged, &c.security.cap_add, &c.security.cap_drop)?;
        if let Seccomp::Profile(p) = &c.security.seccomp {
            let text = std::fs::read(p).map_err(|e| Error::invalid(format!("seccomp profile {}: {e}", p.display())))?;
            serde_json::from_slice::<LinuxSeccomp>(&text)
                .map_err(|e| Error::invalid(format!("seccomp profile {}: {e}", p.display())))?;
        }
        if c.init {
            self.init_path()?;
        }
        Ok(caps)
    }

    pub(crate) fn init_path(&self) -> Result<PathBuf> {
        crate::config::find_program("berth-init", self.config.init.as_deref()).filter(|p| p.is_file()).ok_or_else(
            || Error::not_found("init: berth-init not found (beside berth, on PATH, or engine.init in berth.toml)"),
        )
    }

    /// `create`: validates everything, records the container (its name is taken from here
    /// on), makes its root filesystem, volumes and bundle. Any failure removes what was made.
    pub fn create(&self, cfg: &ContainerConfig) -> Result<Container> {
        // A pod's container joins the pod's namespaces and shares its files.
        let mut cfg = cfg.clone();
        if let Some(pod) = cfg.sandbox.clone() {
            let s = self.sandbox_for_container(&pod)?;
            cfg.sandbox = Some(s.id.clone());
            apply_sandbox(&mut cfg, &s)?;
        }
        let cfg = &cfg;
        let caps = self.validate(cfg)?;
        let rt = self.runtime(cfg.runtime.as_deref())?;
        let img = self.store.resolve(&cfg.image).map_err(|e| {
            if e.is(Kind::NotFound) {
                Error::not_found(format!("{e} (pull, load or import it first)"))
            } else {
                e
            }
        })?;
        let (_, img_cfg) = self.store.image_config(&img)?;
        let id = random_id();
        let name = match &cfg.name {
            Some(n) => n.clone(),
            None => {
                let r = u64::from_str_radix(&id[..8], 16).unwrap_or(0) as usize;
                format!("{}_{}", ADJECTIVES[r % ADJECTIVES.len()], NOUNS[(r / 32) % NOUNS.len()])
            }
        };
        let hostname = match (&cfg.hostname, &cfg.network) {
            (Some(h), _) => h.clone(),
            (None, _) if cfg.sandbox.is_some() => {
                let file = self.sandbox_files(cfg.sandbox.as_deref().unwrap_or_default()).join("hostname");
                std::fs::read_to_string(&file).ctx(file.display())?.trim().to_string()
            }
            (None, NetworkMode::Host) => host_hostname(),
            (None, _) => id[..12].to_string(),
        };
        let mut c = Container {
            id: id.clone(),
            name,
            created: time::now_rfc3339(),
            image: cfg.image.clone(),
            image_id: img.id().to_string(),
            image_manifest: img.row.manifest_digest.clone(),
            config: cfg.clone(),
            legacy_options: None,
            legacy_restart: None,
            runtime: rt.name.clone(),
            args: Vec::new(),
            stop_signal: libc::SIGTERM,
            stop_timeout: cfg.stop_timeout.unwrap_or(10),
            hostname,
            mounts: Vec::new(),
            port_specs: Vec::new(),
            seccomp: String::new(),
            state: State { status: "creating".into(), ..Default::default() },
        };
        match self.insert(&c) {
            Ok(()) => {}
            Err(e) if e.is(crate::Kind::AlreadyExists) && cfg.name.is_none() => {
                c.name = format!("{}_{}", c.name, &id[..6]);
                self.insert(&c)?;
            }
            Err(e) => return Err(e),
        }
        crate::crash_point("created-record");
        let made = self.make(&mut c, &img, &img_cfg, &rt, &caps);
        if let Err(e) = made {
            let _ = self.destroy(&c, true);
            return Err(e);
        }
        self.event(&c, "create", &[]);
        Ok(c)
    }

    /// What `create` makes once the record exists: the snapshot, the volumes, the /etc files
    /// and the bundle's config.json.
    fn make(
        &self,
        c: &mut Container,
        img: &berth_image::store::Image,
        img_cfg: &berth_image::manifest::ImageConfig,
        rt: &runtime::Runtime,
        caps: &[String],
    ) -> Result<()> {
        let cfg = c.config.clone();
        let id = c.id.clone();
        let pod = match &cfg.sandbox {
            Some(p) => Some(self.sandbox_get(p)?),
            None => None,
        };
        // A pod with a user namespace of its own: the image's files, owned by the host's root,
        // are seen as its root's through ID-mapped layers.
        let idmap = pod
            .as_ref()
            .and_then(|p| p.config.userns.as_ref())
            .map(|u| berth_storage::snapshot::IdMapping { uids: u.uid_maps(), gids: u.gid_maps() });
        let rootfs = self.store.create_snapshot_mapped(&id, img, idmap.as_ref())?;
        crate::crash_point("snapshot");
        let ov = Overrides {
            entrypoint: cfg.entrypoint.clone(),
            cmd: cfg.command.clone(),
            user: cfg.user.as_ref().filter(|u| !u.user.is_empty()).map(|u| u.as_user_group()),
            workdir: cfg.workdir.clone(),
            env: cfg.env.clone(),
        };
        let d = berth_image::spec::runtime_defaults(img_cfg, &rootfs, &ov)?;
        // The primary group leads the list, as initgroups(3) makes it and as kubelet expects
        // to see it in the container's reported identity.
        let mut additional_gids = vec![d.gid];
        if !cfg.user.as_ref().is_some_and(|u| u.strict_groups) {
            additional_gids.extend(d.additional_gids.iter().filter(|g| **g != d.gid));
        }
        if let Some(u) = &cfg.user {
            for g in &u.additional_gids {
                berth_image::spec::check_process_id(*g, "supplementary gid")?;
                if !additional_gids.contains(g) {
                    additional_gids.push(*g);
                }
            }
        }
        c.args = d.args.clone();
        c.stop_signal = cfg.stop_signal.unwrap_or(d.stop_signal);
        // The image's VOLUMEs not covered by a mount become anonymous volumes; their keys
        // are container paths only (the image is not trusted with host paths or names).
        let mut mounts = cfg.mounts.clone();
        for v in &d.volumes {
            let volume = spec::image_volume(v)?;
            let dst = volume.destination.trim_end_matches('/').to_string();
            if !mounts.iter().any(|m| m.destination.trim_end_matches('/') == dst) {
                mounts.push(config::Mount {
                    source: MountSource::Anonymous,
                    destination: dst,
                    readonly: false,
                    recursive_readonly: false,
                    propagation: Default::default(),
                    options: Vec::new(),
                });
            }
        }
        let mut ports = cfg.ports.clone();
        if cfg.publish_all {
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
        // Each mount's host path, volumes made (or found) and filled from the image.
        let mut sources = Vec::new();
        let mut infos = Vec::new();
        let mut image_volumes = 0;
        for m in &mounts {
            let (kind, name, source) = match &m.source {
                MountSource::Image { reference, sub_path } => {
                    if !m.readonly {
                        bail!(InvalidInput, "image volume {reference} at {}: must be read-only", m.destination);
                    }
                    let volume_image = self
                        .store
                        .resolve(reference)
                        .map_err(|e| e.context(format!("image volume at {} (pull the image first)", m.destination)))?;
                    // A snapshot of its own, recorded as using the image (which then cannot be
                    // removed under it); mounted and unmounted with the container's.
                    let snapshot = image_volume_snapshot(&id, image_volumes);
                    image_volumes += 1;
                    let root = self.store.create_snapshot_mapped(&snapshot, &volume_image, idmap.as_ref())?;
                    let source = match sub_path {
                        Some(p) => resolve_in_image(&root, p)
                            .map_err(|e| e.context(format!("image volume {reference} at {}", m.destination)))?,
                        None => root,
                    };
                    ("image", volume_image.id().to_string(), source)
                }
                MountSource::Bind(p) => ("bind", String::new(), p.clone()),
                MountSource::Tmpfs => ("tmpfs", String::new(), PathBuf::from("tmpfs")),
                MountSource::Volume(_) | MountSource::Anonymous => {
                    let vol = match &m.source {
                        MountSource::Volume(n) => self.volume_get_or_create(n)?,
                        _ => self.volume_create(None, &BTreeMap::new(), true)?,
                    };
                    self.volume_copy_up(&vol, &rootfs, &m.destination)?;
                    ("volume", vol.name.clone(), vol.mountpoint.clone())
                }
            };
            let mut options = if kind == "tmpfs" { m.options.clone() } else { Vec::new() };
            options.insert(0, if m.readonly { "ro".into() } else { "rw".into() });
            infos.push(MountInfo {
                kind: kind.into(),
                name,
                source: if kind == "tmpfs" { String::new() } else { source.to_string_lossy().into_owned() },
                destination: m.destination.clone(),
                rw: !m.readonly,
                options,
                anonymous: matches!(m.source, MountSource::Anonymous),
            });
            sources.push(source);
        }
        c.mounts = infos;
        let seccomp = self.seccomp_profile(c, rt, caps)?;
        let dir = self.container_dir(&id);
        crate::private_dir(&dir)?;
        let mut env = d.env.clone();
        if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
            env.push(format!("HOSTNAME={}", c.hostname));
        }
        if cfg.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        let etc_files = match &pod {
            Some(p) => self.sandbox_files(&p.id),
            None => {
                std::fs::write(dir.join("hostname"), format!("{}\n", c.hostname)).ctx("write hostname")?;
                std::fs::write(dir.join("hosts"), spec::hosts_file(&c.hostname, None, &cfg.extra_hosts))
                    .ctx("write hosts")?;
                std::fs::write(dir.join("resolv.conf"), spec::resolv_conf(&cfg.dns, cfg.network == NetworkMode::Host))
                    .ctx("write resolv.conf")?;
                dir.clone()
            }
        };
        let cgroup_parent = pod
            .as_ref()
            .and_then(|p| p.config.cgroup_parent.clone())
            .unwrap_or_else(|| self.config.cgroup_parent().to_string());
        let init = if cfg.init { Some(self.init_path()?) } else { None };
        // Only the caller's labels and annotations: runtimes act on some annotations (crun's
        // `run.oci.*` opens host paths for hook output, berth-oci's `org.berth.*`), and an
        // image is not trusted to steer the runtime. The image's labels stay in its config.
        let mut annotations: HashMap<String, String> = cfg.labels.clone().into_iter().collect();
        annotations.extend(cfg.annotations.clone());
        let mut namespaces = self.namespaces(&cfg, &id)?;
        if let Some(userns) = pod.as_ref().and_then(|p| p.state.userns.clone()) {
            namespaces.insert(0, (LinuxNamespaceType::User, Some(userns)));
        }
        let resolved = crate::oci::Resolved {
            rootfs: &rootfs,
            args: d.args.clone(),
            env,
            cwd: d.cwd.clone(),
            uid: d.uid,
            gid: d.gid,
            additional_gids,
            hostname: c.hostname.clone(),
            caps: caps.to_vec(),
            seccomp,
            namespaces,
            etc_files: Some(&etc_files),
            shm: pod.as_ref().and_then(|p| p.state.shm.as_deref()),
            mount_sources: sources,
            init: init.as_deref(),
            cgroups_path: format!("{}/{}", cgroup_parent.trim_end_matches('/'), id),
            swap_accounting: cfg.resources.memory.is_some() && runtime::swap_accounting(),
            annotations,
        };
        // The image's volumes are mounts too, in the spec.
        let mut with_volumes = cfg.clone();
        with_volumes.mounts = mounts;
        let spec = crate::oci::build(&with_volumes, &resolved)?;
        crate::write_private(&dir.join("config.json"), &serde_json::to_vec_pretty(&spec).unwrap_or_default())?;
        // Unmounted until started: a created container holds no mount.
        self.store.snapshots.unmount(&id)?;
        for snapshot in image_volume_snapshots(c) {
            self.store.snapshots.unmount(&snapshot)?;
        }
        c.state.status = "created".into();
        self.save(c)
    }

    /// The container's namespaces: new ones, or ones joined by path.
    fn namespaces(&self, cfg: &ContainerConfig, id: &str) -> Result<Vec<(LinuxNamespaceType, Option<PathBuf>)>> {
        let join = |mode: &NamespaceMode,
                    typ: LinuxNamespaceType,
                    what: &str|
         -> Result<Option<(LinuxNamespaceType, Option<PathBuf>)>> {
            Ok(match mode {
                NamespaceMode::Private => Some((typ, None)),
                NamespaceMode::Host => None,
                NamespaceMode::Path(p) => Some((typ, Some(p.clone()))),
                NamespaceMode::Container(other) => Some((typ, Some(self.namespace_of(other, what)?))),
                // A pod's container had it replaced by the pod's namespace (apply_sandbox).
                NamespaceMode::Pod => {
                    bail!(InvalidInput, "{what}: the pod's namespace, but the container is in no pod")
                }
            })
        };
        let mut out = Vec::new();
        out.extend(join(&cfg.pid, LinuxNamespaceType::Pid, "pid")?);
        out.extend(join(&cfg.ipc, LinuxNamespaceType::Ipc, "ipc")?);
        out.extend(join(&cfg.uts, LinuxNamespaceType::Uts, "uts")?);
        out.push((LinuxNamespaceType::Mount, None));
        match &cfg.network {
            NetworkMode::Host => {}
            NetworkMode::Path(p) => out.push((LinuxNamespaceType::Network, Some(p.clone()))),
            NetworkMode::Container(other) => {
                out.push((LinuxNamespaceType::Network, Some(self.namespace_of(other, "net")?)))
            }
            _ => out.push((LinuxNamespaceType::Network, Some(self.netns_path(id)))),
        }
        if runtime::cgroup_version() == "2" {
            out.push((LinuxNamespaceType::Cgroup, None));
        }
        Ok(out)
    }

    /// `/proc/<init>/ns/<what>` of another running container.
    fn namespace_of(&self, other: &str, what: &str) -> Result<PathBuf> {
        let o = self.get(other)?;
        if !o.running() {
            bail!(InvalidState, "container {}: not running, its {what} namespace cannot be joined", o.name);
        }
        Ok(PathBuf::from(format!("/proc/{}/ns/{what}", o.state.pid)))
    }

    /// The seccomp profile the container gets, where its runtime can apply one.
    fn seccomp_profile(
        &self,
        c: &mut Container,
        rt: &runtime::Runtime,
        caps: &[String],
    ) -> Result<Option<LinuxSeccomp>> {
        let features = rt.features(&self.run_root.join("runtimes"));
        let sec = &c.config.security;
        Ok(match &sec.seccomp {
            Seccomp::Unconfined => {
                c.seccomp = "unconfined".into();
                None
            }
            Seccomp::Profile(file) => {
                if !features.seccomp {
                    bail!(
                        Unsupported,
                        "seccomp profile {}: runtime {} cannot apply seccomp profiles (its features say seccomp is not enabled)",
                        file.display(),
                        rt.name
                    );
                }
                c.seccomp = file.display().to_string();
                let text = std::fs::read(file).ctx(file.display())?;
                Some(serde_json::from_slice(&text).ctx(file.display())?)
            }
            Seccomp::Default if sec.privileged => {
                c.seccomp = "unconfined (privileged)".into();
                None
            }
            Seccomp::Default if !features.seccomp => {
                c.seccomp = format!("none: runtime {} does not support seccomp yet", rt.name);
                None
            }
            Seccomp::Default => {
                c.seccomp = "default".into();
                Some(serde_json::from_value(crate::seccomp::default_profile(caps)).ctx("the default seccomp profile")?)
            }
        })
    }
}

/// The snapshot of a container's `n`th image volume.
fn image_volume_snapshot(id: &str, n: usize) -> String {
    format!("{id}-iv{n}")
}

/// The directory `sub_path` of an image volume's root filesystem, resolved inside it (its
/// symbolic links cannot lead out); it must exist.
fn resolve_in_image(root: &Path, sub_path: &str) -> Result<PathBuf> {
    if sub_path.starts_with('/') || sub_path.split('/').any(|c| c == "..") {
        bail!(InvalidInput, "sub path {sub_path:?}: a relative path without '..'");
    }
    let dir = berth_sys::file::open_dir(root).ctx(root.display())?;
    let fd = berth_sys::file::open_in_root(&dir, sub_path, libc::O_PATH | libc::O_CLOEXEC)
        .map_err(|e| Error::from(e).context(format!("sub path {sub_path:?} in the image")))?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)))
        .ctx(format!("sub path {sub_path:?}"))?;
    if !real.starts_with(root) {
        bail!(InvalidInput, "sub path {sub_path:?}: leads out of the image ({})", real.display());
    }
    Ok(real)
}

/// The snapshots of a container's image volumes, one per image mount of its configuration in
/// order (recorded before any is made, so a create that failed half-way is undone by it too).
pub(crate) fn image_volume_snapshots(c: &crate::Container) -> Vec<String> {
    let images = c.config.mounts.iter().filter(|m| matches!(m.source, MountSource::Image { .. })).count();
    (0..images).map(|n| image_volume_snapshot(&c.id, n)).collect()
}

/// A pod's container: the pod's network, IPC and UTS namespaces (or the node's), its PID
/// namespace when asked for, its sysctls under the container's own.
fn apply_sandbox(cfg: &mut ContainerConfig, s: &crate::sandbox::Sandbox) -> Result<()> {
    if cfg.pid == NamespaceMode::Pod {
        cfg.pid = match &s.state.pid_ns {
            Some(p) => NamespaceMode::Path(p.clone()),
            None => bail!(InvalidInput, "pid: the pod's PID namespace, but pod {} shares none", s.name),
        };
    }
    cfg.network = match &s.state.netns {
        Some(p) => NetworkMode::Path(p.clone()),
        None => NetworkMode::Host,
    };
    cfg.ipc = match &s.state.ipc {
        Some(p) => NamespaceMode::Path(p.clone()),
        None => NamespaceMode::Host,
    };
    cfg.uts = match &s.state.uts {
        Some(p) => NamespaceMode::Path(p.clone()),
        None => NamespaceMode::Host,
    };
    cfg.ports.clear();
    cfg.publish_all = false;
    let mut sysctls = s.config.sysctls.clone();
    sysctls.extend(std::mem::take(&mut cfg.sysctls));
    cfg.sysctls = sysctls;
    if cfg.runtime.is_none() {
        cfg.runtime = s.config.runtime.clone();
    }
    Ok(())
}

pub(crate) fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
