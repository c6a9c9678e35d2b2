//! A container's OCI runtime spec, built in typed steps (oci-spec's types, never JSON patched
//! by hand) from its configuration and what `create` resolved: the image's process defaults,
//! the namespaces to create or join, the mounts' host paths, the capabilities and the seccomp
//! profile. docker's defaults: masked and read-only /proc and /sys paths, /dev/shm of 64 MiB,
//! the device allowlist, per-container /etc/hosts, /etc/hostname and /etc/resolv.conf.
//!
//! oci-spec's `Default`s are populated (a shell, rlimits, default namespaces): every field this
//! builder hands to the runtime is set explicitly.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxCpu, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxHugepageLimit,
    LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxPids, LinuxResources, LinuxSeccomp, Mount, Process, Root,
    Spec, User,
};

use crate::container::config::{ContainerConfig, MountSource, Propagation};
use crate::error::{Error, Result};
use crate::spec::{MASKED_PATHS, MAX_MEMORY, READONLY_PATHS};

/// What `create` resolved for the spec.
pub struct Resolved<'a> {
    pub rootfs: &'a Path,
    /// the process: the image's Entrypoint/Cmd/Env/WorkingDir/User with the config's overrides
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    /// the capability set (docker's default, or every one the host allows for privileged)
    pub caps: Vec<String>,
    pub seccomp: Option<LinuxSeccomp>,
    /// namespaces: new (no path) or joined (a path)
    pub namespaces: Vec<(LinuxNamespaceType, Option<PathBuf>)>,
    /// where /etc/hosts, /etc/hostname and /etc/resolv.conf come from (the container's
    /// directory, or its pod's); None: the image's own
    pub etc_files: Option<&'a Path>,
    /// a /dev/shm shared with others (a pod's); None: a tmpfs of its own
    pub shm: Option<&'a Path>,
    /// the host path of each of the config's mounts (volumes resolved), in the same order
    pub mount_sources: Vec<PathBuf>,
    pub init: Option<&'a Path>,
    pub cgroups_path: String,
    /// the kernel accounts swap: a memory limit gets docker's default swap limit
    pub swap_accounting: bool,
    pub annotations: HashMap<String, String>,
}

pub fn build(c: &ContainerConfig, r: &Resolved) -> Result<Spec> {
    let mut spec = Spec::default();
    spec.set_version("1.0.2".into());
    // The hostname is the container's own only in a UTS namespace it gets or joins.
    let own_uts = r.namespaces.iter().any(|(t, _)| *t == LinuxNamespaceType::Uts);
    spec.set_hostname(if own_uts { Some(r.hostname.clone()) } else { None });
    spec.set_domainname(None);
    let mut root = Root::default();
    root.set_path(r.rootfs.to_path_buf());
    root.set_readonly(Some(c.security.read_only_rootfs));
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounts(c, r)?));
    spec.set_process(Some(process(c, r)?));
    spec.set_linux(Some(linux(c, r)?));
    spec.set_hooks(None);
    spec.set_annotations(if r.annotations.is_empty() { None } else { Some(r.annotations.clone()) });
    Ok(spec)
}

fn mount(destination: &str, typ: &str, source: impl Into<PathBuf>, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(destination.into());
    m.set_typ(Some(typ.into()));
    m.set_source(Some(source.into()));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

/// The standard filesystems, the /etc files, the config's mounts, berth-init.
fn mounts(c: &ContainerConfig, r: &Resolved) -> Result<Vec<Mount>> {
    let privileged = c.security.privileged;
    let mut out = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            if privileged { &["nosuid", "noexec", "nodev"] } else { &["nosuid", "noexec", "nodev", "ro"] },
        ),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", "ro"]),
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
    ];
    let covered = |dst: &str| c.mounts.iter().any(|m| m.destination.trim_end_matches('/') == dst);
    if !covered("/dev/shm") {
        match r.shm {
            Some(shared) => {
                out.push(mount("/dev/shm", "bind", shared, &["rbind", "rprivate", "nosuid", "noexec", "nodev"]))
            }
            None => out.push(mount(
                "/dev/shm",
                "tmpfs",
                "shm",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"],
            )),
        }
    }
    if let Some(dir) = r.etc_files {
        for f in ["hosts", "hostname", "resolv.conf"] {
            let dst = format!("/etc/{f}");
            if covered(&dst) {
                continue;
            }
            let opts: &[&str] =
                if c.security.read_only_rootfs { &["bind", "rprivate", "ro"] } else { &["bind", "rprivate"] };
            out.push(mount(&dst, "bind", dir.join(f), opts));
        }
    }
    for (i, (m, src)) in c.mounts.iter().zip(&r.mount_sources).enumerate() {
        let mut opts: Vec<String> = match m.source {
            MountSource::Tmpfs => m.options.clone(),
            _ => vec!["rbind".into(), m.propagation.option().into()],
        };
        if m.readonly && !matches!(m.source, MountSource::Tmpfs) {
            opts.push("ro".into());
        }
        if m.recursive_readonly {
            if !m.readonly {
                return Err(Error::invalid(format!("mounts[{i}]: recursive read-only needs a read-only mount")));
            }
            if m.propagation != Propagation::Private {
                return Err(Error::invalid(format!(
                    "mounts[{i}]: recursive read-only needs private propagation (submounts must not come later)"
                )));
            }
            opts.push("rro".into());
        }
        if matches!(m.source, MountSource::Bind(_)) && m.propagation != Propagation::Private {
            check_source_propagation(i, m.propagation, src)?;
        }
        let typ = if matches!(m.source, MountSource::Tmpfs) { "tmpfs" } else { "bind" };
        let mut om = Mount::default();
        om.set_destination(m.destination.clone().into());
        om.set_typ(Some(typ.into()));
        om.set_source(Some(src.clone()));
        om.set_options(Some(opts));
        out.push(om);
    }
    if let Some(init) = r.init {
        out.push(mount("/dev/init", "bind", init, &["bind", "ro", "rprivate"]));
    }
    Ok(out)
}

/// Propagation to or from the host needs the host path on a mount that propagates: a shared
/// one for both ways, a shared or slave one for host to container (what runc would otherwise
/// set up silently without effect).
fn check_source_propagation(i: usize, p: Propagation, src: &std::path::Path) -> Result<()> {
    let canonical = std::fs::canonicalize(src)
        .map_err(|e| Error::invalid(format!("mounts[{i}]: source {}: {e}", src.display())))?;
    let on = berth_sys::proc::mount_propagation(&canonical)
        .map_err(|e| Error::invalid(format!("mounts[{i}]: source {}: {e}", src.display())))?;
    let ok = match p {
        Propagation::Shared => on.shared,
        Propagation::Slave => on.shared || on.slave,
        Propagation::Private => true,
    };
    if !ok {
        return Err(Error::invalid(format!(
            "mounts[{i}]: {} propagation needs the source {} on a {} mount; {} is not",
            p.option(),
            src.display(),
            if p == Propagation::Shared { "shared" } else { "shared or slave" },
            on.mount_point.display()
        )));
    }
    Ok(())
}

fn capability_set(names: &[String]) -> Result<HashSet<Capability>> {
    names
        .iter()
        // serde, not FromStr: the OCI names (`CAP_CHOWN`) are the serialized ones
        .map(|n| {
            serde_json::from_value::<Capability>(serde_json::Value::String(n.clone()))
                .map_err(|_| Error::invalid(format!("capability {n}: not known to the OCI types")))
        })
        .collect()
}

fn process(c: &ContainerConfig, r: &Resolved) -> Result<Process> {
    let mut p = Process::default();
    p.set_terminal(Some(c.tty));
    if c.tty {
        let size = oci_spec::runtime::BoxBuilder::default()
            .height(24u64)
            .width(80u64)
            .build()
            .map_err(|e| Error::msg(format!("process.consoleSize: {e}")))?;
        p.set_console_size(Some(size));
    } else {
        p.set_console_size(None);
    }
    let mut user = User::default();
    user.set_uid(r.uid);
    user.set_gid(r.gid);
    user.set_umask(None);
    user.set_additional_gids(if r.additional_gids.is_empty() { None } else { Some(r.additional_gids.clone()) });
    p.set_user(user);
    let mut args = r.args.clone();
    if r.init.is_some() {
        args.splice(0..0, ["/dev/init".to_string(), "--".to_string()]);
    }
    p.set_args(Some(args));
    p.set_env(Some(r.env.clone()));
    p.set_cwd(r.cwd.clone().into());
    let set = capability_set(&r.caps)?;
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    caps.set_inheritable(None);
    caps.set_ambient(None);
    p.set_capabilities(Some(caps));
    p.set_no_new_privileges(Some(c.security.no_new_privileges));
    p.set_rlimits(None);
    p.set_oom_score_adj(c.security.oom_score_adj);
    p.set_apparmor_profile(c.security.apparmor.clone());
    p.set_selinux_label(c.security.selinux_label.clone());
    Ok(p)
}

fn device_rule(allow: bool, typ: Option<LinuxDeviceType>, major: Option<i64>, minor: Option<i64>) -> LinuxDeviceCgroup {
    let mut d = LinuxDeviceCgroup::default();
    d.set_allow(allow);
    d.set_typ(typ);
    d.set_major(major);
    d.set_minor(minor);
    d.set_access(Some("rwm".into()));
    d
}

/// The host devices the container is given, as device nodes the runtime makes and the rules
/// that let the container use them. A host path must be a character or block device
/// (followed if a symbolic link).
fn devices(c: &ContainerConfig) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let (mut nodes, mut rules) = (Vec::new(), Vec::new());
    for (i, d) in c.devices.iter().enumerate() {
        let at = format!("devices[{i}].hostPath {}", d.host_path.display());
        let md = std::fs::metadata(&d.host_path).map_err(|e| Error::from_io(e).context(&at))?;
        let typ = if md.file_type().is_char_device() {
            LinuxDeviceType::C
        } else if md.file_type().is_block_device() {
            LinuxDeviceType::B
        } else {
            return Err(Error::invalid(format!("{at}: not a character or block device")));
        };
        let (major, minor) = (libc::major(md.rdev()) as i64, libc::minor(md.rdev()) as i64);
        let mut node = LinuxDevice::default();
        node.set_path(PathBuf::from(&d.container_path));
        node.set_typ(typ);
        node.set_major(major);
        node.set_minor(minor);
        node.set_file_mode(Some(md.mode() & 0o7777));
        node.set_uid(Some(0));
        node.set_gid(Some(0));
        nodes.push(node);
        let mut rule = device_rule(true, Some(typ), Some(major), Some(minor));
        rule.set_access(Some(d.permissions.clone()));
        rules.push(rule);
    }
    if c.security.privileged {
        // A privileged container gets the host's devices (docker's --privileged, containerd's
        // privileged pods); the cgroup already allows them all.
        let taken: HashSet<PathBuf> = nodes.iter().map(|n| n.path().clone()).collect();
        host_devices(Path::new("/dev"), &taken, &mut nodes);
    }
    Ok((nodes, rules))
}

/// The character and block devices under `dir` (the host's /dev), recursively, as nodes at
/// the same paths; not the directories of other mounts made there (pts, shm, mqueue), the
/// console (the container's is its own terminal) or symbolic links.
fn host_devices(dir: &Path, taken: &HashSet<PathBuf>, out: &mut Vec<LinuxDevice>) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else { continue };
        let ft = md.file_type();
        if ft.is_dir() {
            let skip = ["pts", "shm", "mqueue", "fd", "hugepages"];
            if !(dir == Path::new("/dev") && skip.iter().any(|s| e.file_name() == *s)) {
                host_devices(&path, taken, out);
            }
            continue;
        }
        let typ = if ft.is_char_device() {
            LinuxDeviceType::C
        } else if ft.is_block_device() {
            LinuxDeviceType::B
        } else {
            continue;
        };
        if path == Path::new("/dev/console") || taken.contains(&path) {
            continue;
        }
        let mut node = LinuxDevice::default();
        node.set_path(path);
        node.set_typ(typ);
        node.set_major(libc::major(md.rdev()) as i64);
        node.set_minor(libc::minor(md.rdev()) as i64);
        node.set_file_mode(Some(md.mode() & 0o7777));
        node.set_uid(Some(md.uid()));
        node.set_gid(Some(md.gid()));
        out.push(node);
    }
}

fn linux(c: &ContainerConfig, r: &Resolved) -> Result<oci_spec::runtime::Linux> {
    let mut l = oci_spec::runtime::Linux::default();
    let namespaces = r
        .namespaces
        .iter()
        .map(|(typ, path)| {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(*typ);
            ns.set_path(path.clone());
            ns
        })
        .collect();
    l.set_namespaces(Some(namespaces));
    l.set_uid_mappings(None);
    l.set_gid_mappings(None);
    l.set_cgroups_path(Some(r.cgroups_path.clone().into()));
    l.set_resources(Some(resources(c, r)?));
    let privileged = c.security.privileged;
    let masked =
        c.security.masked_paths.clone().unwrap_or_else(|| MASKED_PATHS.iter().map(|s| s.to_string()).collect());
    let readonly =
        c.security.readonly_paths.clone().unwrap_or_else(|| READONLY_PATHS.iter().map(|s| s.to_string()).collect());
    l.set_masked_paths(if privileged { None } else { Some(masked) });
    l.set_readonly_paths(if privileged { None } else { Some(readonly) });
    l.set_seccomp(r.seccomp.clone());
    l.set_sysctl(if c.sysctls.is_empty() { None } else { Some(c.sysctls.clone().into_iter().collect()) });
    let (nodes, _) = devices(c)?;
    l.set_devices(if nodes.is_empty() { None } else { Some(nodes) });
    // A mount shared with the host needs a root that passes mount events on: rshared, as
    // containerd sets it. One that receives the host's needs a root that stays the host's
    // slave: rslave, said explicitly (berth-oci and runc default to it, crun to rprivate,
    // which cuts the link before the mount is made).
    let shares = c.mounts.iter().any(|m| m.propagation == Propagation::Shared);
    let receives = c.mounts.iter().any(|m| m.propagation == Propagation::Slave);
    l.set_rootfs_propagation(match (shares, receives) {
        (true, _) => Some("rshared".into()),
        (false, true) => Some("rslave".into()),
        (false, false) => None,
    });
    Ok(l)
}

fn resources(c: &ContainerConfig, r: &Resolved) -> Result<LinuxResources> {
    let devices = if c.security.privileged {
        vec![device_rule(true, None, None, None)]
    } else {
        let mut d = vec![device_rule(false, None, None, None)];
        for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)] {
            d.push(device_rule(true, Some(LinuxDeviceType::C), Some(major), Some(minor)));
        }
        d.push(device_rule(true, Some(LinuxDeviceType::C), Some(136), None));
        d.extend(devices(c)?.1);
        d
    };
    let mut res = limits(&c.resources, r.swap_accounting);
    res.set_devices(Some(devices));
    Ok(res)
}

/// The cgroup limits of `cr` (no device rules): for create, and for `update` on a running
/// container.
pub fn limits(cr: &crate::container::config::Resources, swap_accounting: bool) -> LinuxResources {
    let mut res = LinuxResources::default();
    if let Some(limit) = cr.memory {
        let mut m = LinuxMemory::default();
        m.set_limit(Some(limit));
        let swap = match cr.memory_swap {
            Some(s) => Some(s),
            // docker's default: as much swap as memory (the OCI swap value is memory + swap),
            // so a container over its limit is OOM-killed instead of swapping without bound
            None if swap_accounting => Some(limit.saturating_mul(2).min(MAX_MEMORY)),
            None => None,
        };
        m.set_swap(swap);
        res.set_memory(Some(m));
    }
    if cr.cpu_shares.is_some()
        || cr.cpu_quota.is_some()
        || cr.cpu_period.is_some()
        || cr.cpuset_cpus.is_some()
        || cr.cpuset_mems.is_some()
    {
        let mut cpu = LinuxCpu::default();
        cpu.set_shares(cr.cpu_shares);
        cpu.set_quota(cr.cpu_quota);
        cpu.set_period(cr.cpu_period);
        cpu.set_cpus(cr.cpuset_cpus.clone());
        cpu.set_mems(cr.cpuset_mems.clone());
        res.set_cpu(Some(cpu));
    }
    if let Some(limit) = cr.pids_limit.filter(|p| *p > 0) {
        let mut p = LinuxPids::default();
        p.set_limit(limit);
        res.set_pids(Some(p));
    }
    if !cr.hugepage_limits.is_empty() {
        let limits = cr
            .hugepage_limits
            .iter()
            .map(|(size, limit)| {
                let mut h = LinuxHugepageLimit::default();
                h.set_page_size(size.clone());
                h.set_limit(*limit as i64);
                h
            })
            .collect();
        res.set_hugepage_limits(Some(limits));
    }
    if !cr.unified.is_empty() {
        res.set_unified(Some(cr.unified.clone().into_iter().collect()));
    }
    res
}
