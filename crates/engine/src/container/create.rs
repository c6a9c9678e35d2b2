//! `create`: everything checked before anything is made, then the record (the name is taken
//! from here on), the root filesystem, volumes and the bundle; a failure removes what was made.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_image::spec::Overrides;
use berth_network::PortMapping;
use serde_json::Value;

use super::*;
use crate::error::{bail, Context, Error, Kind, Result};
use crate::runtime::{self};
use crate::spec::{self, MountInfo};
use crate::{random_id, time, Engine};

impl Engine {
    /// Everything about a create that can be checked before anything is made.
    #[allow(clippy::type_complexity)]
    pub(crate) fn validate(
        &self,
        o: &CreateOptions,
    ) -> Result<(Vec<MountInfo>, Vec<PortMapping>, RestartPolicy, Vec<String>)> {
        if let Some(n) = &o.name {
            if !valid_name(n) {
                bail!(
                    InvalidInput,
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
                bail!(InvalidInput, "duplicate mount point {}", m.destination);
            }
        }
        let mut ports = Vec::new();
        for p in &o.publish {
            ports.extend(berth_network::ports::parse(p).map_err(|e| Error::invalid(e.to_string()))?);
        }
        let network = o.network.as_deref().unwrap_or("bridge");
        if !ports.is_empty() && matches!(network, "host" | "none") {
            bail!(InvalidInput, "ports cannot be published with --network {network}");
        }
        if !matches!(network, "host" | "none" | "bridge") {
            self.network_config(network)?;
        }
        let restart = RestartPolicy::parse(o.restart.as_deref())?;
        if o.auto_remove && restart.name != "no" {
            bail!(InvalidInput, "--rm and --restart {} cannot be combined", restart.name);
        }
        let caps = spec::capabilities(o.privileged, &o.cap_add, &o.cap_drop)?;
        if let Some(h) = &o.hostname {
            if !spec::valid_hostname(h) {
                bail!(InvalidInput, "invalid hostname {h:?}");
            }
        }
        for h in &o.add_hosts {
            spec::check_add_host(h)?;
        }
        for d in &o.dns {
            if d.parse::<std::net::IpAddr>().is_err() {
                bail!(InvalidInput, "--dns {d:?} is not an IP address");
            }
        }
        if let Some(m) = o.memory {
            if m < 6 << 20 {
                bail!(InvalidInput, "memory limit {m} is too small: the minimum is 6m");
            }
            if m > spec::MAX_MEMORY {
                bail!(InvalidInput, "memory limit {m} is larger than the kernel can enforce");
            }
        }
        if let Some(c) = o.cpus {
            let max = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
            // The CFS quota is cpus × a 100 ms period, and the kernel's smallest quota is 1 ms.
            if !(c.is_finite() && c >= spec::MIN_CPUS) || c > max {
                bail!(InvalidInput, "--cpus {c}: must be from {} to the {max} CPUs of this host", spec::MIN_CPUS);
            }
        }
        if let Some(p) = o.pids_limit {
            if p == 0 || p < -1 {
                bail!(InvalidInput, "--pids-limit {p}: must be positive (or -1 for unlimited)");
            }
            if p > spec::MAX_PIDS_LIMIT {
                bail!(InvalidInput, "--pids-limit {p}: the kernel's limit is at most {}", spec::MAX_PIDS_LIMIT);
            }
        }
        for e in &o.env {
            if e.is_empty() || e.starts_with('=') {
                bail!(InvalidInput, "invalid environment variable {e:?}");
            }
            if e.contains('\0') {
                let name = e.split('=').next().unwrap_or_default();
                bail!(InvalidInput, "environment variable {name}: its value contains a NUL byte");
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

    pub(crate) fn init_path(&self) -> Result<PathBuf> {
        crate::config::find_program("berth-init", self.config.init.as_deref()).filter(|p| p.is_file()).ok_or_else(
            || Error::not_found("--init: berth-init not found (beside berth, on PATH, or engine.init in berth.toml)"),
        )
    }

    /// `create`: validates everything, records the container (its name is taken from here
    /// on), makes its root filesystem, volumes and bundle. Any failure removes what was made.
    pub fn create(&self, o: &CreateOptions) -> Result<Container> {
        let (mut mounts, port_specs, restart, caps) = self.validate(o)?;
        let rt = self.runtime(o.runtime.as_deref())?;
        let img = self.store.resolve(&o.image).map_err(|e| {
            if e.is(Kind::NotFound) {
                Error::not_found(format!("{e} (pull, load or import it first)"))
            } else {
                e
            }
        })?;
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
            Err(e) if e.is(crate::Kind::AlreadyExists) && o.name.is_none() => {
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
}

fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
