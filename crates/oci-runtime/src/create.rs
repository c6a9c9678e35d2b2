//! `create`, the runtime's side: from a bundle to an init that is fully set up and waits for
//! `start`. The processes it starts have files of their own: the init (`init.rs`) and, for
//! two-stage creates, the intermediate (`intermediate.rs`); they talk over the typed sync
//! socket (`sync.rs`).
//!
//! Order: validate everything and derive the plans (`plans.rs`), open the namespace paths →
//! state directory → cgroup with its limits → clone the init (or an intermediate, see
//! [`NamespacePlan::needs_intermediate`]) → id maps, rlimits, oom score, cgroup membership from
//! outside → Go → the init's Ready → state.json and pid file → Committed. Any failure undoes
//! every step before it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_sys::process::{self as sysprocess, Forked};
use berth_sys::{file, mount, socket};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::cgroups::{self, Cgroup, Layout, Mode};
use crate::config::{self, Bundle};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::init::{self, InitFds, InitPlan, Stage};
use crate::mounts::{self, MountSpec};
use crate::namespaces::{self, NamespacePlan};
use crate::plans::{derive_plans, Plans};
use crate::process;
use crate::rootfs::{CgroupMount, DeviceNode, RootfsPlan};
use crate::state::{self, State, StateDir};
use crate::sync::{self, RuntimeEnd, ToChild, ToRuntime};

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: i32,
    /// Descriptors from socket activation: 3.., before the preserved ones.
    pub socket_activation: Option<crate::process::SocketActivation>,
    /// --rootless: Some(true|false), or None for auto (rootless when not root).
    pub rootless: Option<bool>,
}

impl CreateOptions {
    /// Rootless mode: cgroups this user may not create are done without, if no limit needs them.
    pub fn is_rootless(&self) -> bool {
        self.rootless.unwrap_or_else(|| !sysprocess::is_root())
    }
}

/// A created container, as the process that created it sees it.
pub struct Created {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// The init is this process's child (it can be waited for).
    pub is_child: bool,
    /// What config.json asked for that could not be granted exactly (for the log).
    pub warnings: Vec<String>,
}

/// Where the console master goes: a socket path from --console-socket, or a socket `run`
/// already holds (its own end is the other half of a pair).
pub enum ConsoleTarget {
    None,
    Path(PathBuf),
    Fd(OwnedFd),
}

#[allow(clippy::too_many_arguments)]
fn build_rootfs_plan(
    bundle: &Bundle,
    opts: &CreateOptions,
    mounts: Vec<MountSpec>,
    devices: Vec<DeviceNode>,
    layout: &Layout,
    cgroup: &Cgroup,
    ns: &NamespacePlan,
    in_userns: bool,
) -> Result<RootfsPlan> {
    let spec = &bundle.spec;
    let linux = spec.linux().as_ref().expect("validated");
    let dev_bound = mounts.iter().any(|m| m.destination == Path::new("/dev") && m.is_bind());
    let cgroup_mounts = cgroup_mounts(layout, cgroup);
    Ok(RootfsPlan {
        rootfs: bundle.rootfs.clone(),
        readonly: spec.root().as_ref().is_some_and(|r| r.readonly().unwrap_or(false)),
        mounts,
        cgroup_mounts,
        cgroupns: ns.creates(LinuxNamespaceType::Cgroup),
        devices,
        default_devices: !dev_bound,
        masked_paths: linux.masked_paths().clone().unwrap_or_default(),
        readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
        propagation: linux.rootfs_propagation().as_deref().and_then(mounts::propagation_flag),
        no_pivot: opts.no_pivot,
        in_userns,
        prepared_root: None,
        shared_root: if config::owns_mount_namespace(linux) {
            None
        } else {
            Some(
                file::open(&bundle.rootfs, libc::O_PATH | libc::O_DIRECTORY)
                    .with_ctx(|| format!("root.path {}", bundle.rootfs.display()))?,
            )
        },
    })
}

/// What a "cgroup" mount shows: the container's directory in every hierarchy.
fn cgroup_mounts(layout: &Layout, cgroup: &Cgroup) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    if layout.mode == Mode::Unified {
        if let Some(dir) = &cgroup.unified {
            out.push(CgroupMount { name: String::new(), host_dir: dir.clone() });
        }
        return out;
    }
    for (h, (_, dir)) in layout.v1.iter().zip(&cgroup.v1) {
        let name = h.mountpoint.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        out.push(CgroupMount { name, host_dir: dir.clone() });
    }
    if let (Some((mp, _)), Some(dir)) = (&layout.unified, &cgroup.unified) {
        let name = mp.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "unified".into());
        out.push(CgroupMount { name, host_dir: dir.clone() });
    }
    out
}

/// Annotation asking for the rootfs to be ID-mapped with the container's user namespace
/// mappings: a rootfs owned by the host's root then appears owned by the container's root
/// (the runtime-spec leaves the rootfs's ownership to the caller; this is berth's way to do it
/// without chowning, as Kubernetes' user-namespaced pods need).
pub const ROOTFS_IDMAP_ANNOTATION: &str = "org.berth.rootfs.idmap";

/// Prepares, with the runtime's privileges, the ID-mapped bind mounts (and rootfs).
fn prepare_idmapped(rootfs: &mut RootfsPlan, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref().expect("validated");
    let container_maps = match (linux.uid_mappings(), linux.gid_mappings()) {
        (Some(u), Some(g)) if !u.is_empty() => Some((u.clone(), g.clone())),
        _ => None,
    };
    // One user namespace per distinct mapping.
    let mut namespaces: Vec<(String, OwnedFd)> = Vec::new();
    fn userns_for<'a>(
        namespaces: &'a mut Vec<(String, OwnedFd)>,
        maps: &(Vec<LinuxIdMapping>, Vec<LinuxIdMapping>),
    ) -> Result<BorrowedFd<'a>> {
        let key = format!("{maps:?}");
        let i = match namespaces.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                namespaces.push((key, namespaces::idmap_userns(&maps.0, &maps.1)?));
                namespaces.len() - 1
            }
        };
        Ok(namespaces[i].1.as_fd())
    }
    for m in rootfs.mounts.iter_mut().filter(|m| m.options.idmap.is_some()) {
        let maps = m.id_mappings.clone().or_else(|| container_maps.clone()).ok_or_else(|| {
            Error::invalid(format!("{}: 'idmap' without uidMappings needs the container's linux.uidMappings", m.at))
        })?;
        let userns = userns_for(&mut namespaces, &maps)?;
        m.prepared = Some(mounts::prepare_idmapped(m, userns)?);
    }
    let wanted = spec.annotations().as_ref().and_then(|a| a.get(ROOTFS_IDMAP_ANNOTATION)).map(String::as_str);
    match wanted {
        None | Some("false") => {}
        Some("true") => {
            let maps = container_maps.clone().ok_or_else(|| {
                Error::invalid(format!(
                    "annotations.{ROOTFS_IDMAP_ANNOTATION}: needs a user namespace with linux.uidMappings"
                ))
            })?;
            let userns = userns_for(&mut namespaces, &maps)?;
            let tree = mount::open_tree_clone(file::CWD, &rootfs.rootfs, true)
                .with_ctx(|| format!("rootfs {}", rootfs.rootfs.display()))?;
            let attr = mount::MountAttr {
                attr_set: mount::MOUNT_ATTR_IDMAP,
                userns_fd: userns.as_raw_fd() as u64,
                ..Default::default()
            };
            mount::mount_setattr(&tree, "", true, &attr)
                .with_ctx(|| format!("annotations.{ROOTFS_IDMAP_ANNOTATION}: ID-mapping the rootfs"))?;
            rootfs.prepared_root = Some(tree);
        }
        Some(other) => {
            return Err(Error::invalid(format!(
                "annotations.{ROOTFS_IDMAP_ANNOTATION}: '{other}' is not true or false"
            )));
        }
    }
    Ok(())
}

/// Undoes a failed create, whatever step it reached.
struct Undo {
    dir: Option<StateDir>,
    cgroup: Option<Cgroup>,
    children: Vec<(i32, OwnedFd, bool)>,
    /// Once the container's process existed, a failed create ends like a delete: with the
    /// poststop hooks (their state).
    poststop: Option<serde_json::Value>,
    hooks: Option<oci_spec::runtime::Hooks>,
}

impl Undo {
    /// Success: keep everything (dropping the state directory only releases its lock).
    fn disarm(mut self) {
        self.children.clear();
        self.cgroup = None;
        self.dir = None;
        self.poststop = None;
    }

    fn run(mut self) {
        for (pid, pidfd, is_child) in self.children.drain(..) {
            let _ = sysprocess::pidfd_send_signal(&pidfd, libc::SIGKILL);
            if is_child {
                let _ = sysprocess::waitpid(pid, false);
            } else {
                let _ = sysprocess::poll_readable(&[pidfd.as_fd()], 5000);
            }
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.kill_all_and_wait(std::time::Duration::from_secs(5));
            let _ = cg.destroy();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.remove();
        }
        if let Some(state) = self.poststop.take() {
            let _ = crate::hooks::run_all_warn(self.hooks.as_ref(), crate::hooks::Kind::Poststop, &state);
        }
    }
}

pub fn create(root: &Path, id: &str, opts: &CreateOptions, console: ConsoleTarget) -> Result<Created> {
    config::validate_id(id)?;
    let bundle = config::load_bundle(&opts.bundle)?;
    let spec = &bundle.spec;
    let mut plans = derive_plans(spec, &bundle.dir)?;
    let linux = spec.linux().as_ref().expect("validated");
    let ns = NamespacePlan::from_spec(linux).map_err(|e| e.context("config.json"))?;
    let in_userns = ns.creates(LinuxNamespaceType::User) || ns.joins(LinuxNamespaceType::User);
    if plans.process.terminal && matches!(console, ConsoleTarget::None) {
        return Err(Error::invalid("process.terminal is true: --console-socket is required"));
    }
    if !plans.process.terminal && !matches!(console, ConsoleTarget::None) {
        return Err(Error::invalid("--console-socket given but process.terminal is false"));
    }
    let layout = Layout::detect()?;
    let cgroups_path = linux.cgroups_path().clone().unwrap_or_else(|| cgroups::default_cgroups_path(id));
    let mut cgroup = Cgroup::plan(&layout, &cgroups_path)?;
    let (mounts, devices) = (std::mem::take(&mut plans.mounts), std::mem::take(&mut plans.devices));
    let mut rootfs = build_rootfs_plan(&bundle, opts, mounts, devices, &layout, &cgroup, &ns, in_userns)
        .map_err(|e| e.context("config.json"))?;
    prepare_idmapped(&mut rootfs, spec).map_err(|e| e.context("config.json"))?;

    let mut warnings = config_warnings(&rootfs);
    if let Some(resources) = linux.resources() {
        warnings.extend(cgroups::resource_warnings(resources, &cgroup, "linux.resources"));
    }

    let dir = StateDir::create(root, id)?;
    let mut undo =
        Undo { dir: Some(dir), cgroup: None, children: Vec::new(), poststop: None, hooks: spec.hooks().clone() };
    let created =
        create_steps(&bundle, id, opts, console, ns, in_userns, plans, rootfs, &mut cgroup, &mut undo, warnings);
    match created {
        Ok(created) => {
            undo.disarm();
            Ok(created)
        }
        Err(e) => {
            undo.run();
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn create_steps(
    bundle: &Bundle,
    id: &str,
    opts: &CreateOptions,
    console: ConsoleTarget,
    ns: NamespacePlan,
    in_userns: bool,
    plans: Plans,
    mut rootfs: RootfsPlan,
    cgroup: &mut Cgroup,
    undo: &mut Undo,
    mut warnings: Vec<String>,
) -> Result<Created> {
    let Plans { process, sysctl, personality, memory_policy, seccomp, device_rules, requested_resource, .. } = plans;
    let spec = &bundle.spec;
    let linux = spec.linux().as_ref().expect("validated");
    let dir = undo.dir.as_ref().expect("set by caller");
    // Only the runtime opens it by name (the init inherits its end): its owner's alone.
    file::mkfifo(&dir.fifo(), 0o600).ctx("creating the exec fifo")?;

    let created_result = cgroup.create();
    // Registered even on partial failure: destroy removes whatever was made.
    undo.cgroup = Some(cgroup.clone());
    if let Err(e) = created_result {
        let refused = matches!(e.errno(), Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS));
        if !(refused && opts.is_rootless()) {
            return Err(e);
        }
        // Rootless without a delegated cgroup: the container runs in the caller's cgroups,
        // which is fine as long as nothing was asked of them.
        if let Some(field) = requested_resource {
            return Err(e.context(format!(
                "config.json: linux.resources.{field}: limits need a cgroup this user may create (a delegated one)"
            )));
        }
        undo.cgroup.take().map(|cg| cg.destroy());
        let layout = Layout::detect()?;
        *cgroup = Cgroup::plan(&layout, Path::new(""))?;
        cgroup.shared = true;
        // A "cgroup" mount then shows the cgroups the container shares, read-only as ever.
        rootfs.cgroup_mounts = cgroup_mounts(&layout, cgroup);
    }
    if let Some(resources) = linux.resources().as_ref().filter(|_| !cgroup.shared) {
        let applied = cgroup.apply(resources, &device_rules, false);
        // What apply gave the parents (real-time runtime) is undone with the cgroup.
        undo.cgroup = Some(cgroup.clone());
        applied.map_err(|e| e.context("config.json"))?;
    }
    if let Some(sched) = process.attrs.scheduler.filter(|s| s.is_realtime()) {
        let given = cgroup.ensure_realtime();
        undo.cgroup = Some(cgroup.clone());
        given.map_err(|e| {
            e.context(format!(
                "config.json: process.scheduler.policy: {} needs real-time CPU time in the container's cgroup",
                sched.policy_name()
            ))
        })?;
    }

    let console_socket = match console {
        ConsoleTarget::None => None,
        ConsoleTarget::Path(p) => {
            Some(socket::connect_unix(&p).with_ctx(|| format!("--console-socket {}", p.display()))?)
        }
        ConsoleTarget::Fd(fd) => Some(fd),
    };
    let (runtime_end, child_end) = sync::pair()?;
    // The init's end of the exec fifo, read-write (never blocks to open): it waits reading it,
    // and `start`, opening it for writing, sees whether any init is still there to read.
    let exec_fifo = file::open(&dir.fifo(), libc::O_RDWR).ctx("opening the exec fifo")?;
    ns.enter_for_children()?;

    let mut plan = InitPlan {
        rootfs,
        process,
        hostname: spec.hostname().clone(),
        domainname: spec.domainname().clone(),
        sysctl,
        namespaces: ns,
        cgroup: cgroup.clone(),
        cgroup2_joined_at_clone: false,
        in_userns,
        preserve_fds: opts.preserve_fds,
        socket_activation: opts.socket_activation.clone(),
        session_keyring: (!opts.no_new_keyring).then(|| id.to_string()),
        personality,
        memory_policy,
        hooks: spec.hooks().clone(),
        hook_state: (id.to_string(), bundle.dir.clone(), spec.annotations().clone().unwrap_or_default()),
        seccomp,
    };
    let two_stage = plan.namespaces.needs_intermediate();
    let lock_fd = dir.fd.as_raw_fd();
    let clone_flags = if two_stage { 0 } else { plan.namespaces.clone_flags() };
    // The first process (init, or the intermediate whose child it will be) starts in the
    // container's cgroup2 directory; the v1 ones it joins itself (see Cgroup::join_self).
    let cgroup2_fd = cgroup.open_unified()?;
    plan.cgroup2_joined_at_clone = cgroup2_fd.is_some();
    let forked = sysprocess::clone3(clone_flags as u64, cgroup2_fd.as_ref().map(|fd| fd.as_fd()))
        .ctx("creating the container process (clone3)")?;
    let (pid, pidfd) = match forked {
        Forked::Child => {
            // The lock belongs to the runtime; the init must not keep it while it waits for start.
            // SAFETY: closing a descriptor number this process no longer uses.
            unsafe { libc::close(lock_fd) };
            drop(runtime_end);
            let fds = InitFds { sync: child_end, exec_fifo, console_socket };
            if two_stage {
                crate::intermediate::run(&plan, fds);
            }
            init::run(&plan, fds, Stage::Direct);
        }
        Forked::Parent { pid, pidfd } => (pid, pidfd),
    };
    drop(child_end);
    drop(console_socket);
    // Only the init may hold the fifo: `start` takes any holder for a live init.
    drop(exec_fifo);
    let sync = runtime_end;
    undo.children.push((pid, pidfd, true));
    undo.poststop =
        Some(crate::hooks::state(id, "stopped", 0, &bundle.dir, &spec.annotations().clone().unwrap_or_default()));

    let (init_pid, init_pidfd, is_child) = if two_stage {
        let (init_pid, init_pidfd) = drive_intermediate(&sync, pid, linux)?;
        let (ipid, ipidfd, _) = undo.children.pop().expect("pushed above");
        let _ = sysprocess::waitpid(ipid, false);
        drop(ipidfd);
        // CLONE_PARENT made the init our child, not the intermediate's.
        undo.children.push((init_pid, file::dup(&init_pidfd)?, true));
        (init_pid, init_pidfd, true)
    } else {
        if plan.namespaces.creates(LinuxNamespaceType::User) {
            namespaces::write_id_maps(pid, linux)?;
        }
        let pidfd = file::dup(&undo.children[0].1)?;
        (pid, pidfd, true)
    };

    process::apply_rlimits(init_pid, &plan.process.rlimits, "config.json: process")?;
    if let Some(adj) = plan.process.oom_score_adj {
        process::apply_oom_score_adj(init_pid, adj, "config.json: process")?;
    }
    sync.send(&ToChild::Go { pid: init_pid })?;
    let state_for_listener = || {
        serde_json::json!({
            "ociVersion": crate::config::OCI_VERSION, "id": id, "status": "creating", "pid": init_pid,
            "bundle": bundle.dir, "annotations": spec.annotations().clone().unwrap_or_default(),
        })
    };
    // By the time these hooks run the container's environment is complete (the spec's
    // lifecycle, step 2 before the hooks): its state is `created`.
    let runtime_hooks = || -> Result<()> {
        let state =
            crate::hooks::state(id, "created", init_pid, &bundle.dir, &spec.annotations().clone().unwrap_or_default());
        crate::hooks::run_all(spec.hooks().as_ref(), crate::hooks::Kind::Prestart, &state, None)?;
        crate::hooks::run_all(spec.hooks().as_ref(), crate::hooks::Kind::CreateRuntime, &state, None)
    };
    sync.wait_ready("the container's init", init_pid, linux.seccomp().as_ref(), state_for_listener, runtime_hooks)
        .map_err(|e| e.context("creating the container"))?;

    let pid_start = berth_sys::proc::stat(init_pid)
        .map(|s| s.start)
        .ok_or_else(|| Error::new(ErrorKind::System, "the container's init vanished"))?;
    let state = State {
        id: id.to_string(),
        pid: init_pid,
        pid_start,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: state::rfc3339_now(),
        owner: owner_name(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        cgroup: cgroup.clone(),
        own_pid_namespace: plan.namespaces.creates(LinuxNamespaceType::Pid),
        resources: linux.resources().clone(),
        spec: spec.clone(),
    };
    dir.save(&state)?;
    if let Some(pid_file) = &opts.pid_file {
        let path = if pid_file.is_absolute() { pid_file.clone() } else { std::env::current_dir()?.join(pid_file) };
        state::write_atomic(&path, init_pid.to_string().as_bytes()).map_err(|e| e.context("--pid-file"))?;
    }
    sync.send(&ToChild::Committed)?;
    if let Some(f) = plan.seccomp.as_ref().filter(|f| !f.unknown_syscalls.is_empty()) {
        warnings.push(format!(
            "linux.seccomp: syscalls unknown to libseccomp here, skipped: {}",
            f.unknown_syscalls.join(", ")
        ));
    }
    if let Some(caps) = plan.process.caps.filter(|c| c.unraisable_ambient() != 0) {
        warnings.push(format!(
            "process.capabilities.ambient: {} not in both the permitted and inheritable sets, so the kernel cannot raise them; left out",
            crate::caps::names(caps.unraisable_ambient()).join(", ")
        ));
    }
    Ok(Created { pid: init_pid, pidfd: init_pidfd, is_child, warnings })
}

/// What config.json asks that is accepted but not applied (for the log).
fn config_warnings(rootfs: &RootfsPlan) -> Vec<String> {
    let mut warnings = Vec::new();
    for m in &rootfs.mounts {
        for option in &m.ignored_options {
            warnings.push(format!(
                "{}.options: '{option}' does not apply to a bind mount (it is the filesystem's, and a bind makes no new filesystem); ignored",
                m.at
            ));
        }
    }
    warnings
}

fn owner_name() -> String {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("#{uid}"))
}

/// Runtime side of a two-stage create: writes the id maps when asked, returns the init.
fn drive_intermediate(
    sync: &RuntimeEnd,
    intermediate_pid: i32,
    linux: &oci_spec::runtime::Linux,
) -> Result<(i32, OwnedFd)> {
    loop {
        match sync.next()? {
            Some((ToRuntime::MapRequest, _)) => {
                namespaces::write_id_maps(intermediate_pid, linux)?;
                sync.send(&ToChild::MapDone)?;
            }
            Some((ToRuntime::InitPidfd, mut fds)) => {
                let pidfd = fds.pop().ok_or_else(|| Error::new(ErrorKind::System, "the intermediate sent no pidfd"))?;
                let pid = berth_sys::proc::pidfd_pid(&pidfd)
                    .ctx("reading pidfd info")?
                    .ok_or_else(|| Error::new(ErrorKind::System, "pidfd without a pid"))?;
                return Ok((pid, pidfd));
            }
            Some((other, _)) => {
                return Err(Error::new(
                    ErrorKind::System,
                    format!("sync socket: unexpected {other:?} from the intermediate"),
                ))
            }
            None => return Err(Error::new(ErrorKind::System, "the intermediate process exited early")),
        }
    }
}
