//! CRI's messages into the engine's typed configuration, and the engine's records back into
//! CRI's statuses. Each refusal names the CRI field (`config.linux.security_context...`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use berth_engine::container::config::{
    ContainerConfig, DeviceMapping, DnsConfig, LogConfig, Mount, MountSource, NamespaceMode, Propagation, Resources,
    Seccomp, Security, UserSpec,
};
use berth_engine::sandbox::{IdMapping, PodNamespace, PodUserNamespace, SandboxConfig};
use berth_network::PortMapping;
use tonic::Status;

use crate::proto as pb;

/// Keys berthd keeps in a container's `extra` (the engine passes none of them on).
pub mod extra {
    pub const NAME: &str = "cri.name";
    pub const ATTEMPT: &str = "cri.attempt";
    pub const IMAGE: &str = "cri.image";
    pub const LOG_PATH: &str = "cri.log-path";
    pub const LABELS: &str = "cri.labels";
    pub const ANNOTATIONS: &str = "cri.annotations";
    pub const RESOURCES: &str = "cri.resources";
    pub const USER: &str = "cri.user";
}

fn invalid(field: &str, msg: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {msg}"))
}

fn btree(m: &HashMap<String, String>) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn namespace_mode(m: i32) -> PodNamespace {
    match pb::NamespaceMode::try_from(m).unwrap_or(pb::NamespaceMode::Pod) {
        pb::NamespaceMode::Pod => PodNamespace::Pod,
        pb::NamespaceMode::Node => PodNamespace::Node,
        pb::NamespaceMode::Container | pb::NamespaceMode::Target => PodNamespace::Container,
    }
}

fn ports(ps: &[pb::PortMapping], field: &str) -> Result<Vec<PortMapping>, Status> {
    let mut out = Vec::new();
    for (i, p) in ps.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let protocol = match pb::Protocol::try_from(p.protocol) {
            Ok(pb::Protocol::Tcp) => "tcp",
            Ok(pb::Protocol::Udp) => "udp",
            _ => return Err(Status::unimplemented(format!("{at}.protocol: only TCP and UDP can be mapped"))),
        };
        let container_port = u16::try_from(p.container_port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid(&format!("{at}.container_port"), format!("{} is not a port", p.container_port)))?;
        // A mapping without a host port only declares the port (kubelet sends those too).
        if p.host_port <= 0 {
            continue;
        }
        let host_port = u16::try_from(p.host_port)
            .map_err(|_| invalid(&format!("{at}.host_port"), format!("{} is not a port", p.host_port)))?;
        if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(invalid(&format!("{at}.host_ip"), format!("{:?} is not an IPv4 address", p.host_ip)));
        }
        out.push(PortMapping { host_port, container_port, protocol: protocol.into(), host_ip: p.host_ip.clone() });
    }
    Ok(out)
}

fn dns(d: &Option<pb::DnsConfig>) -> Result<DnsConfig, Status> {
    let Some(d) = d else { return Ok(DnsConfig::default()) };
    let mut servers = Vec::new();
    for (i, s) in d.servers.iter().enumerate() {
        servers
            .push(s.parse().map_err(|_| invalid(&format!("dns_config.servers[{i}]"), format!("{s:?} is not an IP")))?);
    }
    Ok(DnsConfig { servers, searches: d.searches.clone(), options: d.options.clone() })
}

/// RunPodSandbox's configuration.
pub fn sandbox_config(c: &pb::PodSandboxConfig, handler: &str) -> Result<SandboxConfig, Status> {
    let md = super::required(&c.metadata, "config.metadata")?;
    let linux = c.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let ns = sc.namespace_options.clone().unwrap_or_default();
    let userns = pod_userns(ns.userns_options.as_ref())?;
    let selinux_label = selinux_label(sc.selinux_options.as_ref(), "config.linux.security_context.selinux_options")?;
    Ok(SandboxConfig {
        name: md.name.clone(),
        namespace: md.namespace.clone(),
        uid: md.uid.clone(),
        attempt: md.attempt,
        hostname: c.hostname.clone(),
        log_directory: if c.log_directory.is_empty() { None } else { Some(PathBuf::from(&c.log_directory)) },
        dns: dns(&c.dns_config).map_err(|e| Status::invalid_argument(format!("config.{}", e.message())))?,
        ports: ports(&c.port_mappings, "config.port_mappings")?,
        labels: btree(&c.labels),
        annotations: btree(&c.annotations),
        cgroup_parent: if linux.cgroup_parent.is_empty() { None } else { Some(linux.cgroup_parent.clone()) },
        network: namespace_mode(ns.network),
        ipc: namespace_mode(ns.ipc),
        pid: namespace_mode(ns.pid),
        userns,
        selinux_label,
        sysctls: btree(&linux.sysctls),
        runtime: if handler.is_empty() { None } else { Some(handler.to_string()) },
        privileged: sc.privileged,
        overhead: linux.overhead.as_ref().map(|r| resources(r, "config.linux.overhead")).transpose()?,
        resources: linux.resources.as_ref().map(|r| resources(r, "config.linux.resources")).transpose()?,
    })
}

const USERNS_FIELD: &str = "config.linux.security_context.namespace_options.userns_options";

/// A pod's user namespace: POD with one mapping each for users and groups that maps the pod's
/// root (Kubernetes' `hostUsers: false`), NODE or none for the node's.
fn pod_userns(u: Option<&pb::UserNamespace>) -> Result<Option<PodUserNamespace>, Status> {
    let Some(u) = u else { return Ok(None) };
    match pb::NamespaceMode::try_from(u.mode) {
        Ok(pb::NamespaceMode::Node) => {
            if !u.uids.is_empty() || !u.gids.is_empty() {
                return Err(invalid(USERNS_FIELD, "mappings are given for the node's user namespace (mode NODE)"));
            }
            Ok(None)
        }
        Ok(pb::NamespaceMode::Pod) => {
            let maps = |field: &str, ms: &[pb::IdMapping]| -> Result<Vec<IdMapping>, Status> {
                let [m] = ms else {
                    return Err(invalid(
                        &format!("{USERNS_FIELD}.{field}"),
                        format!("one mapping is needed, {} given", ms.len()),
                    ));
                };
                if m.container_id != 0 {
                    return Err(invalid(
                        &format!("{USERNS_FIELD}.{field}[0].container_id"),
                        format!("{} (the pod's root, ID 0, must be mapped)", m.container_id),
                    ));
                }
                if m.host_id == 0 {
                    return Err(invalid(
                        &format!("{USERNS_FIELD}.{field}[0].host_id"),
                        "0: the host's root is not a pod's",
                    ));
                }
                if m.length == 0 || u64::from(m.host_id) + u64::from(m.length) > u64::from(u32::MAX) {
                    return Err(invalid(
                        &format!("{USERNS_FIELD}.{field}[0]"),
                        format!("host IDs from {} with length {} do not fit in 32-bit IDs", m.host_id, m.length),
                    ));
                }
                Ok(vec![IdMapping { container_id: m.container_id, host_id: m.host_id, length: m.length }])
            };
            Ok(Some(PodUserNamespace { uids: maps("uids", &u.uids)?, gids: maps("gids", &u.gids)? }))
        }
        _ => Err(invalid(&format!("{USERNS_FIELD}.mode"), format!("{}: only POD or NODE", mode_name(u.mode)))),
    }
}

fn mode_name(m: i32) -> String {
    pb::NamespaceMode::try_from(m).map(|m| m.as_str_name().to_string()).unwrap_or_else(|_| m.to_string())
}

/// The signal number of CRI's `Signal` (0: the image's or the runtime's default).
pub fn signal_number(s: i32) -> Option<i32> {
    use pb::Signal as S;
    let n = match S::try_from(s).ok()? {
        S::RuntimeDefault => return None,
        S::Sigabrt | S::Sigiot => libc::SIGABRT,
        S::Sigalrm => libc::SIGALRM,
        S::Sigbus => libc::SIGBUS,
        S::Sigchld | S::Sigcld => libc::SIGCHLD,
        S::Sigcont => libc::SIGCONT,
        S::Sigfpe => libc::SIGFPE,
        S::Sighup => libc::SIGHUP,
        S::Sigill => libc::SIGILL,
        S::Sigint => libc::SIGINT,
        S::Sigio | S::Sigpoll => libc::SIGIO,
        S::Sigkill => libc::SIGKILL,
        S::Sigpipe => libc::SIGPIPE,
        S::Sigprof => libc::SIGPROF,
        S::Sigpwr => libc::SIGPWR,
        S::Sigquit => libc::SIGQUIT,
        S::Sigsegv => libc::SIGSEGV,
        S::Sigstkflt => libc::SIGSTKFLT,
        S::Sigstop => libc::SIGSTOP,
        S::Sigsys => libc::SIGSYS,
        S::Sigterm => libc::SIGTERM,
        S::Sigtrap => libc::SIGTRAP,
        S::Sigtstp => libc::SIGTSTP,
        S::Sigttin => libc::SIGTTIN,
        S::Sigttou => libc::SIGTTOU,
        S::Sigurg => libc::SIGURG,
        S::Sigusr1 => libc::SIGUSR1,
        S::Sigusr2 => libc::SIGUSR2,
        S::Sigvtalrm => libc::SIGVTALRM,
        S::Sigwinch => libc::SIGWINCH,
        S::Sigxcpu => libc::SIGXCPU,
        S::Sigxfsz => libc::SIGXFSZ,
        other => {
            // SIGRTMIN+n and SIGRTMAX-n, in their enum order.
            let v = other as i32;
            if (35..=50).contains(&v) {
                libc::SIGRTMIN() + (v - 35)
            } else {
                libc::SIGRTMAX() - (65 - v)
            }
        }
    };
    Some(n)
}

/// CRI's `Signal` of a signal number (RUNTIME_DEFAULT for one it does not name).
pub fn signal_enum(n: i32) -> i32 {
    (0..=65).find(|v| signal_number(*v) == Some(n)).unwrap_or(0)
}

fn security_profile(p: &Option<pb::SecurityProfile>, deprecated_path: &str, field: &str) -> Result<Seccomp, Status> {
    if let Some(p) = p {
        return match pb::security_profile::ProfileType::try_from(p.profile_type) {
            Ok(pb::security_profile::ProfileType::RuntimeDefault) => Ok(Seccomp::Default),
            Ok(pb::security_profile::ProfileType::Unconfined) => Ok(Seccomp::Unconfined),
            Ok(pb::security_profile::ProfileType::Localhost) => {
                let path = PathBuf::from(&p.localhost_ref);
                if !path.is_absolute() {
                    return Err(invalid(
                        &format!("{field}.localhost_ref"),
                        format!("{:?} is not absolute", p.localhost_ref),
                    ));
                }
                Ok(Seccomp::Profile(path))
            }
            Err(_) => Err(invalid(&format!("{field}.profile_type"), format!("unknown type {}", p.profile_type))),
        };
    }
    // Neither field: unconfined, as the CRI defines it (kubelet sends RuntimeDefault when the
    // pod asks for it).
    match deprecated_path {
        "runtime/default" | "docker/default" => Ok(Seccomp::Default),
        "" | "unconfined" => Ok(Seccomp::Unconfined),
        p => match p.strip_prefix("localhost/") {
            Some(path) => Ok(Seccomp::Profile(PathBuf::from(path))),
            None => {
                Err(invalid(field, format!("seccomp profile {p:?}: runtime/default, unconfined or localhost/PATH")))
            }
        },
    }
}

/// The host's AppArmor (and whether it is on): a profile the pod asks for is applied where
/// the host has AppArmor; RuntimeDefault without AppArmor is no profile (as containerd does);
/// Localhost without AppArmor is a clear error.
fn apparmor(p: &Option<pb::SecurityProfile>, deprecated: &str, field: &str) -> Result<Option<String>, Status> {
    let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.trim() == "Y");
    let (kind, name) = match p {
        Some(p) => (pb::security_profile::ProfileType::try_from(p.profile_type).ok(), p.localhost_ref.clone()),
        None => match deprecated {
            "" | "runtime/default" => (Some(pb::security_profile::ProfileType::RuntimeDefault), String::new()),
            "unconfined" => (Some(pb::security_profile::ProfileType::Unconfined), String::new()),
            p => (Some(pb::security_profile::ProfileType::Localhost), p.trim_start_matches("localhost/").to_string()),
        },
    };
    match kind {
        Some(pb::security_profile::ProfileType::Localhost) if !enabled => Err(Status::failed_precondition(format!(
            "{field}: AppArmor profile {name:?} asked for, but AppArmor is not enabled on this host"
        ))),
        Some(pb::security_profile::ProfileType::Localhost) => Ok(Some(name)),
        // berth has no AppArmor profile of its own yet: the default is none, as on hosts
        // without AppArmor.
        _ => Ok(None),
    }
}

/// An SELinux process label from the CRI's options (the container's, else the pod's): applied
/// where the host has SELinux, each part absent taken from the usual container context
/// (`system_u:system_r:container_t:s0`); a clear error where the host has none. Relabeling
/// volumes (`selinux_relabel`, which kubelet asks for whatever the host) means nothing
/// without SELinux and is not an error.
fn selinux_label(o: Option<&pb::SeLinuxOption>, field: &str) -> Result<Option<String>, Status> {
    let given =
        |o: &&pb::SeLinuxOption| !(o.user.is_empty() && o.role.is_empty() && o.r#type.is_empty() && o.level.is_empty());
    let Some(o) = o.filter(given) else { return Ok(None) };
    if !Path::new("/sys/fs/selinux/enforce").exists() {
        return Err(Status::failed_precondition(format!(
            "{field}: an SELinux label is asked for, but SELinux is not enabled on this host"
        )));
    }
    let part = |v: &str, default: &str| if v.is_empty() { default.to_string() } else { v.to_string() };
    for (name, v) in [("user", &o.user), ("role", &o.role), ("type", &o.r#type), ("level", &o.level)] {
        if v.chars().any(|c| c.is_whitespace() || c == '\0') || (name != "level" && v.contains(':')) {
            return Err(invalid(&format!("{field}.{name}"), format!("{v:?} is not a label part")));
        }
    }
    Ok(Some(format!(
        "{}:{}:{}:{}",
        part(&o.user, "system_u"),
        part(&o.role, "system_r"),
        part(&o.r#type, "container_t"),
        part(&o.level, "s0")
    )))
}

/// The host path of a hostPath mount: symbolic links followed (kubelet passes them as the
/// volume gives them; the runtime must not follow a link inside the container's root).
fn host_path(p: &str, field: &str) -> Result<PathBuf, Status> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(invalid(field, format!("{p:?} is not an absolute path")));
    }
    std::fs::canonicalize(path).map_err(|e| Status::not_found(format!("{field}: {p}: {e} (the host path must exist)")))
}

/// CreateContainer's configuration, in the pod `pod_id` whose configuration is `pod`.
pub fn container_config(
    pod_id: &str,
    c: &pb::ContainerConfig,
    pod: &SandboxConfig,
    settings: &super::Settings,
) -> Result<ContainerConfig, Status> {
    let restrict_oom_score_adj = settings.restrict_oom_score_adj;
    let md = super::required(&c.metadata, "config.metadata")?;
    if md.name.is_empty() {
        return Err(invalid("config.metadata.name", "empty"));
    }
    let image = super::required(&c.image, "config.image")?;
    if image.image.is_empty() {
        return Err(invalid("config.image.image", "empty"));
    }
    let linux = c.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let ns = sc.namespace_options.clone().unwrap_or_default();
    let pid = match pb::NamespaceMode::try_from(ns.pid).unwrap_or(pb::NamespaceMode::Pod) {
        pb::NamespaceMode::Node => NamespaceMode::Host,
        pb::NamespaceMode::Container => NamespaceMode::Private,
        pb::NamespaceMode::Target => {
            if ns.target_id.is_empty() {
                return Err(invalid("config.linux.security_context.namespace_options.target_id", "empty"));
            }
            NamespaceMode::Container(ns.target_id.clone())
        }
        // The pod's: the node's for a pod on the host's PID namespace, else the one its
        // reaper is PID 1 of (an error from the engine when the pod shares none).
        pb::NamespaceMode::Pod => match pod.pid {
            PodNamespace::Node => NamespaceMode::Host,
            _ => NamespaceMode::Pod,
        },
    };
    // A container is in its pod's user namespace; kubelet repeats the pod's options here.
    if let Some(u) = ns.userns_options.as_ref() {
        let field = "config.linux.security_context.namespace_options.userns_options";
        let consistent = match (pb::NamespaceMode::try_from(u.mode), &pod.userns) {
            (Ok(pb::NamespaceMode::Node), None) => u.uids.is_empty() && u.gids.is_empty(),
            (Ok(pb::NamespaceMode::Pod), Some(p)) => {
                let same = |ms: &[pb::IdMapping], ps: &[IdMapping]| {
                    ms.is_empty()
                        || (ms.len() == ps.len()
                            && ms.iter().zip(ps).all(|(m, p)| {
                                (m.container_id, m.host_id, m.length) == (p.container_id, p.host_id, p.length)
                            }))
                };
                same(&u.uids, &p.uids) && same(&u.gids, &p.gids)
            }
            _ => false,
        };
        if !consistent {
            return Err(invalid(
                field,
                format!(
                    "mode {} and its mappings differ from the pod's (a container is in its pod's user namespace)",
                    mode_name(u.mode)
                ),
            ));
        }
    }
    let mut env = Vec::new();
    for (i, kv) in c.envs.iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains('=') {
            return Err(invalid(&format!("config.envs[{i}].key"), format!("{:?} is not a variable name", kv.key)));
        }
        env.push(format!("{}={}", kv.key, kv.value));
    }
    let mut mounts = Vec::new();
    for (i, m) in c.mounts.iter().enumerate() {
        let at = format!("config.mounts[{i}]");
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(Status::unimplemented(format!(
                "{at}.uidMappings: id-mapped mounts are not supported by berthd yet"
            )));
        }
        if let Some(image) = &m.image {
            // An image volume: the image's files, read-only (kubelet has pulled it).
            if image.image.is_empty() {
                return Err(invalid(&format!("{at}.image.image"), "empty"));
            }
            if !m.readonly {
                return Err(invalid(&format!("{at}.readonly"), "an image volume is read-only"));
            }
            let sub_path = m.image_sub_path.trim_end_matches('/');
            if sub_path.starts_with('/') || sub_path.split('/').any(|c| c == "..") {
                return Err(invalid(
                    &format!("{at}.image_sub_path"),
                    format!("{sub_path:?}: a relative path without '..'"),
                ));
            }
            mounts.push(Mount {
                source: MountSource::Image {
                    reference: image.image.clone(),
                    sub_path: if sub_path.is_empty() { None } else { Some(sub_path.to_string()) },
                },
                destination: m.container_path.clone(),
                readonly: true,
                recursive_readonly: false,
                propagation: Propagation::Private,
                options: Vec::new(),
            });
            continue;
        }
        if !m.image_sub_path.is_empty() {
            return Err(invalid(&format!("{at}.image_sub_path"), "given without an image"));
        }
        let propagation =
            match pb::MountPropagation::try_from(m.propagation).unwrap_or(pb::MountPropagation::PropagationPrivate) {
                pb::MountPropagation::PropagationPrivate => Propagation::Private,
                pb::MountPropagation::PropagationHostToContainer => Propagation::Slave,
                pb::MountPropagation::PropagationBidirectional => Propagation::Shared,
            };
        mounts.push(Mount {
            source: MountSource::Bind(host_path(&m.host_path, &format!("{at}.host_path"))?),
            destination: m.container_path.clone(),
            readonly: m.readonly,
            recursive_readonly: m.recursive_read_only,
            propagation,
            options: Vec::new(),
        });
    }
    let devices = c
        .devices
        .iter()
        .map(|d| DeviceMapping {
            host_path: PathBuf::from(&d.host_path),
            container_path: d.container_path.clone(),
            permissions: if d.permissions.is_empty() { "rwm".into() } else { d.permissions.clone() },
        })
        .collect();
    let caps = sc.capabilities.clone().unwrap_or_default();
    if !caps.add_ambient_capabilities.is_empty() {
        return Err(Status::unimplemented(
            "config.linux.security_context.capabilities.add_ambient_capabilities: ambient capabilities are not supported by berthd yet",
        ));
    }
    let r = linux.resources.clone().unwrap_or_default();
    let oom_score_adj =
        if r.oom_score_adj != 0 { Some(oom_adj(r.oom_score_adj, restrict_oom_score_adj)?) } else { None };
    let security = Security {
        privileged: sc.privileged,
        cap_add: caps.add_capabilities.clone(),
        cap_drop: caps.drop_capabilities.clone(),
        no_new_privileges: sc.no_new_privs,
        read_only_rootfs: sc.readonly_rootfs,
        // The deprecated string forms are what kubelets before 1.19's profile fields send.
        #[allow(deprecated)]
        seccomp: if sc.privileged {
            Seccomp::Unconfined
        } else {
            security_profile(&sc.seccomp, &sc.seccomp_profile_path, "config.linux.security_context.seccomp")?
        },
        #[allow(deprecated)]
        apparmor: if sc.privileged {
            None
        } else {
            apparmor(&sc.apparmor, &sc.apparmor_profile, "config.linux.security_context.apparmor")?
        },
        selinux_label: match selinux_label(
            sc.selinux_options.as_ref(),
            "config.linux.security_context.selinux_options",
        )? {
            Some(label) => Some(label),
            None => pod.selinux_label.clone(),
        },
        masked_paths: if sc.privileged { None } else { Some(sc.masked_paths.clone()) },
        readonly_paths: if sc.privileged { None } else { Some(sc.readonly_paths.clone()) },
        oom_score_adj,
    };
    let resources = resources(&r, "config.linux.resources")?;
    let user = user(&sc)?;
    let log_path = match (&pod.log_directory, c.log_path.is_empty()) {
        (Some(dir), false) => {
            if Path::new(&c.log_path).is_absolute() || c.log_path.split('/').any(|p| p == "..") {
                return Err(invalid(
                    "config.log_path",
                    format!("{:?}: relative to the pod's log directory, without '..'", c.log_path),
                ));
            }
            Some(dir.join(&c.log_path))
        }
        _ => None,
    };
    let mut extra = BTreeMap::new();
    extra.insert(extra::NAME.into(), md.name.clone());
    extra.insert(extra::ATTEMPT.into(), md.attempt.to_string());
    extra.insert(extra::IMAGE.into(), serde_json::to_string(&image_spec_json(image)).unwrap_or_default());
    extra.insert(extra::LOG_PATH.into(), c.log_path.clone());
    extra.insert(extra::LABELS.into(), serde_json::to_string(&c.labels).unwrap_or_default());
    extra.insert(extra::ANNOTATIONS.into(), serde_json::to_string(&c.annotations).unwrap_or_default());
    let mut annotations = BTreeMap::new();
    annotations.insert("io.kubernetes.cri.container-type".to_string(), "container".to_string());
    annotations.insert("io.kubernetes.cri.sandbox-id".to_string(), pod_id.to_string());
    annotations.insert("io.kubernetes.cri.container-name".to_string(), md.name.clone());
    Ok(ContainerConfig {
        name: Some(container_name(pod_id, &md.name, md.attempt)),
        image: image.image.clone(),
        sandbox: Some(pod_id.to_string()),
        entrypoint: if c.command.is_empty() { None } else { Some(c.command.clone()) },
        command: if c.args.is_empty() { None } else { Some(c.args.clone()) },
        env,
        workdir: if c.working_dir.is_empty() { None } else { Some(c.working_dir.clone()) },
        user,
        tty: c.tty,
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        pid,
        mounts,
        devices,
        security,
        resources,
        annotations,
        log: LogConfig { path: log_path, max_size: Some(0), max_line: Some(settings.max_log_line) },
        stop_signal: signal_number(c.stop_signal),
        extra,
        ..Default::default()
    })
}

/// Who the container runs as: run_as_user or run_as_username (with run_as_group), else the
/// image's user; supplemental groups either way (CRI: a group without a user is an error).
fn user(sc: &pb::LinuxContainerSecurityContext) -> Result<Option<UserSpec>, Status> {
    const FIELD: &str = "config.linux.security_context";
    let user = match (&sc.run_as_user, sc.run_as_username.as_str()) {
        (Some(u), _) => check_id(u.value, &format!("{FIELD}.run_as_user"))?.to_string(),
        (None, "") => String::new(),
        (None, name) => name.to_string(),
    };
    if user.is_empty() && sc.run_as_group.is_some() {
        return Err(invalid(&format!("{FIELD}.run_as_group"), "set without run_as_user or run_as_username"));
    }
    let group = match &sc.run_as_group {
        Some(g) => Some(check_id(g.value, &format!("{FIELD}.run_as_group"))?.to_string()),
        None => None,
    };
    let additional_gids = groups(&sc.supplemental_groups)?;
    let strict_groups = pb::SupplementalGroupsPolicy::try_from(sc.supplemental_groups_policy)
        == Ok(pb::SupplementalGroupsPolicy::Strict);
    if user.is_empty() && additional_gids.is_empty() && !strict_groups {
        return Ok(None);
    }
    Ok(Some(UserSpec { user, group, additional_gids, strict_groups }))
}

/// The name a pod's container gets in the store: one per pod, name and attempt (kubelet
/// expects a second CreateContainer of the same to fail), short enough for any pod name.
pub fn container_name(pod_id: &str, name: &str, attempt: u32) -> String {
    format!("k8s_{name}_{attempt}_{}", &pod_id[..16.min(pod_id.len())])
}

fn check_id(v: i64, field: &str) -> Result<u32, Status> {
    u32::try_from(v)
        .ok()
        .filter(|v| *v <= berth_image::spec::MAX_PROCESS_ID)
        .ok_or_else(|| invalid(field, format!("{v} is out of range (0 to {})", berth_image::spec::MAX_PROCESS_ID)))
}

fn groups(g: &[i64]) -> Result<Vec<u32>, Status> {
    g.iter()
        .enumerate()
        .map(|(i, v)| check_id(*v, &format!("config.linux.security_context.supplemental_groups[{i}]")))
        .collect()
}

/// An OOM score adjustment: from -1000 to 1000; with `restrict`, one below this process's own
/// (which root without CAP_SYS_RESOURCE cannot set) is raised to it.
fn oom_adj(v: i64, restrict: bool) -> Result<i32, Status> {
    let v = i32::try_from(v)
        .ok()
        .filter(|v| (-1000..=1000).contains(v))
        .ok_or_else(|| invalid("config.linux.resources.oom_score_adj", format!("{v} is not from -1000 to 1000")))?;
    if restrict {
        let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(-1000);
        if v < own {
            eprintln!("berthd: oom_score_adj {v} raised to {own}, berthd's own (lower values need CAP_SYS_RESOURCE)");
            return Ok(own);
        }
    }
    Ok(v)
}

/// CRI's resources at `field` (0 meaning "not set", as kubelet sends them), checked to be
/// limits the kernel can enforce: the engine's check (`Resources::validate`), its refusal
/// naming the CRI field (`linux.cpu_shares 1: from 2 to 262144`).
pub fn resources(r: &pb::LinuxContainerResources, field: &str) -> Result<Resources, Status> {
    let out = unchecked_resources(r);
    out.validate().map_err(|e| {
        let msg = e.to_string();
        // The engine names its own fields: `resources.cpuShares 1: ...`.
        let renamed = msg.strip_prefix("resources.").and_then(|rest| {
            let (name, detail) = rest.split_once(' ')?;
            let cri = match name {
                "memory" => "memory_limit_in_bytes",
                "memorySwap" => "memory_swap_limit_in_bytes",
                "cpuShares" => "cpu_shares",
                "cpuQuota" => "cpu_quota",
                "cpuPeriod" => "cpu_period",
                _ => return None,
            };
            Some(Status::invalid_argument(format!("{field}.{cri} {detail}")))
        });
        renamed.unwrap_or_else(|| invalid(field, msg))
    })?;
    Ok(out)
}

fn unchecked_resources(r: &pb::LinuxContainerResources) -> Resources {
    let pos = |v: i64| if v > 0 { Some(v) } else { None };
    Resources {
        memory: pos(r.memory_limit_in_bytes),
        memory_swap: if r.memory_swap_limit_in_bytes != 0 { Some(r.memory_swap_limit_in_bytes) } else { None },
        cpu_shares: pos(r.cpu_shares).map(|v| v as u64),
        cpu_quota: pos(r.cpu_quota),
        cpu_period: pos(r.cpu_period).map(|v| v as u64),
        cpuset_cpus: if r.cpuset_cpus.is_empty() { None } else { Some(r.cpuset_cpus.clone()) },
        cpuset_mems: if r.cpuset_mems.is_empty() { None } else { Some(r.cpuset_mems.clone()) },
        pids_limit: None,
        hugepage_limits: r.hugepage_limits.iter().map(|h| (h.page_size.clone(), h.limit)).collect(),
        unified: btree(&r.unified),
    }
}

/// The engine's resources as CRI reports them.
pub fn resources_back(r: &Resources, oom: Option<i32>) -> pb::LinuxContainerResources {
    pb::LinuxContainerResources {
        cpu_period: r.cpu_period.unwrap_or(0) as i64,
        cpu_quota: r.cpu_quota.unwrap_or(0),
        cpu_shares: r.cpu_shares.unwrap_or(0) as i64,
        memory_limit_in_bytes: r.memory.unwrap_or(0),
        oom_score_adj: oom.unwrap_or(0) as i64,
        cpuset_cpus: r.cpuset_cpus.clone().unwrap_or_default(),
        cpuset_mems: r.cpuset_mems.clone().unwrap_or_default(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|(page_size, limit)| pb::HugepageLimit { page_size: page_size.clone(), limit: *limit })
            .collect(),
        unified: r.unified.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        memory_swap_limit_in_bytes: r.memory_swap.unwrap_or(0),
    }
}

fn image_spec_json(i: &pb::ImageSpec) -> serde_json::Value {
    serde_json::json!({
        "image": i.image,
        "annotations": i.annotations,
        "userSpecifiedImage": i.user_specified_image,
        "runtimeHandler": i.runtime_handler,
        "imageRef": i.image_ref,
    })
}

/// The ImageSpec a container was created with.
pub fn image_spec(extra: &BTreeMap<String, String>, fallback: &str) -> pb::ImageSpec {
    let v: serde_json::Value =
        extra.get(extra::IMAGE).and_then(|s| serde_json::from_str(s).ok()).unwrap_or(serde_json::Value::Null);
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    pb::ImageSpec {
        image: if s("image").is_empty() { fallback.to_string() } else { s("image") },
        annotations: serde_json::from_value(v["annotations"].clone()).unwrap_or_default(),
        user_specified_image: s("userSpecifiedImage"),
        runtime_handler: s("runtimeHandler"),
        image_ref: s("imageRef"),
    }
}

/// A map kept as JSON in `extra`.
pub fn extra_map(extra: &BTreeMap<String, String>, key: &str) -> HashMap<String, String> {
    extra.get(key).and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default()
}
