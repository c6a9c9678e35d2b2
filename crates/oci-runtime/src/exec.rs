//! `exec`: a new process in an existing container. It joins every namespace of the container
//! (through a pidfd of the container's init, so the kernel checks it is still that process),
//! its cgroup, and gets the container's confinement (capabilities, no_new_privs) as its
//! process.json or config.json's process asks.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_sys::process::{self as sysprocess, Forked};
use berth_sys::{file, signal, socket};
use oci_spec::runtime::Process;

use crate::error::{Context, Error, ErrorKind, Result};
use crate::fs::{self, Resolve};
use crate::namespaces;
use crate::process::{self, ProcessPlan};
use crate::state::{self, StateDir, Status};
use crate::sync::{self, ChildEnd, ToRuntime};
use crate::terminal;

#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The process to run (from --process, or config.json's process with the command line's
    /// changes).
    pub process: Process,
    pub console_socket: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: i32,
    pub ignore_paused: bool,
}

/// Runs the process; returns its exit code in the foreground, 0 once it runs when detached.
pub fn exec(root: &Path, id: &str, opts: &ExecOptions) -> Result<i32> {
    let wants_realtime = ProcessPlan::from_spec(&opts.process, "process")
        .is_ok_and(|p| p.attrs.scheduler.is_some_and(|s| s.is_realtime()));
    if wants_realtime {
        give_realtime(root, id)?;
    }
    let dir = StateDir::open(root, id, false)?;
    let st = dir.load()?.ok_or_else(|| state::not_exist(id))?;
    match st.status(&dir.path) {
        Status::Stopped => return Err(Error::state(format!("cannot exec in a stopped container {id}"))),
        Status::Paused if !opts.ignore_paused => {
            return Err(Error::state(format!(
                "cannot exec in a paused container {id} (use --ignore-paused to override)"
            )))
        }
        _ => {}
    }
    crate::config::validate_process_fields(&opts.process, "process")?;
    let mut plan = ProcessPlan::from_spec(&opts.process, "process")?;
    if plan.terminal && opts.detach && opts.console_socket.is_none() {
        return Err(Error::invalid("process.terminal with --detach needs --console-socket"));
    }
    if !plan.terminal && opts.console_socket.is_some() {
        return Err(Error::invalid("--console-socket given but the process has no terminal"));
    }
    // The init, held by a pidfd: every namespace is entered through it, and a pid reused since
    // the status check cannot pass the start time check that follows.
    let init = sysprocess::pidfd_open(st.pid).ctx("opening the container's init")?;
    if !st.init_alive() {
        return Err(Error::state(format!("cannot exec in a stopped container {id}")));
    }
    // HOME from the container's /etc/passwd as the container sees it (its mounts included),
    // through the init's root.
    let proc = crate::procfs::Proc::open()?;
    let container_root = proc.root_of(st.pid).ctx("the container's root")?;
    plan.env = process::with_home(&plan.env, container_root.as_fd(), plan.uid);
    drop(proc);
    let linux = st.spec.linux().as_ref();
    // A container without a mount namespace of its own has its root by chroot: entering its
    // mount namespace (if it joined one) does not give it; the init's root does.
    let shared_root = linux.is_some_and(|l| !crate::config::owns_mount_namespace(l)).then_some(container_root);
    let mut ns_flags = 0;
    for ns in linux.and_then(|l| l.namespaces().as_ref()).into_iter().flatten() {
        ns_flags |= namespaces::clone_flag(ns.typ());
    }
    let in_userns = ns_flags & libc::CLONE_NEWUSER != 0;
    // The container's memory policy holds for its exec'd processes too.
    let memory_policy = linux.and_then(|l| l.memory_policy().as_ref()).map(crate::attrs::memory_policy).transpose()?;
    // The container's seccomp profile confines its exec'd processes too.
    let seccomp_config = linux.and_then(|l| l.seccomp().as_ref());
    let filter = seccomp_config.map(|s| crate::seccomp::compile(s, "linux.seccomp")).transpose()?;
    // pid and time namespaces apply to children: entered here, before the clone. Without
    // privilege, joining them needs CAP_SYS_ADMIN over their owner, which only comes from
    // entering the container's user namespace, in the same setns.
    let mut for_children = ns_flags & (libc::CLONE_NEWPID | libc::CLONE_NEWTIME);
    if for_children != 0 && in_userns && !sysprocess::is_root() {
        for_children |= libc::CLONE_NEWUSER;
    }
    if for_children != 0 {
        sysprocess::setns(&init, for_children).ctx("joining the container's pid and time namespaces")?;
    }
    let sigfd = if opts.detach { None } else { Some(crate::run::foreground_signals()?) };
    let (console, relay_end) = match (&opts.console_socket, plan.terminal) {
        (Some(path), _) => {
            (Some(socket::connect_unix(path).with_ctx(|| format!("--console-socket {}", path.display()))?), None)
        }
        (None, true) => {
            let (ours, theirs) = socket::socketpair_seqpacket().ctx("console socket pair")?;
            (Some(theirs), Some(ours))
        }
        (None, false) => (None, None),
    };
    let cgroup2 = st.cgroup.open_unified()?;
    let (runtime_end, child_end) = sync::pair()?;
    let lock_fd = dir.fd.as_raw_fd();
    let forked = sysprocess::clone3(0, cgroup2.as_ref().map(|fd| fd.as_fd())).ctx("creating the process (clone3)")?;
    let (pid, pidfd) = match forked {
        Forked::Child => {
            // SAFETY: the lock belongs to the runtime, not to the process we become.
            unsafe { libc::close(lock_fd) };
            drop(runtime_end);
            let sync = child_end;
            let err = child(
                shared_root,
                &st.cgroup,
                cgroup2.is_some(),
                &init,
                ns_flags & !for_children,
                in_userns,
                &plan,
                memory_policy.as_ref(),
                filter.as_ref(),
                opts,
                console,
                &sync,
            );
            sync.send_error(&err);
            crate::init::exit(255);
        }
        Forked::Parent { pid, pidfd } => (pid, pidfd),
    };
    drop(child_end);
    drop(console);
    drop(dir);
    let sync = runtime_end;
    let result = (|| -> Result<()> {
        process::apply_rlimits(pid, &plan.rlimits, "process")?;
        if let Some(adj) = plan.oom_score_adj {
            process::apply_oom_score_adj(pid, adj, "process")?;
        }
        sync.send(&sync::ToChild::Go { pid })?;
        let state = || {
            serde_json::json!({
                "ociVersion": crate::config::OCI_VERSION, "id": id, "status": "running", "pid": st.pid,
                "bundle": st.bundle, "annotations": st.annotations,
            })
        };
        sync.wait_ready("the exec process", pid, seccomp_config, state, || Ok(()))?;
        // Then EOF: the sync socket closed on exec; a Failed message: execve itself failed.
        match sync.next()? {
            None => Ok(()),
            Some((other, _)) => Err(Error::new(ErrorKind::System, format!("sync socket: unexpected {other:?}"))),
        }
    })();
    if let Err(e) = result {
        let _ = sysprocess::pidfd_send_signal(&pidfd, libc::SIGKILL);
        let _ = sysprocess::waitpid(pid, false);
        return Err(e);
    }
    if let Some(pid_file) = &opts.pid_file {
        let path = if pid_file.is_absolute() { pid_file.clone() } else { std::env::current_dir()?.join(pid_file) };
        state::write_atomic(&path, pid.to_string().as_bytes()).map_err(|e| e.context("--pid-file"))?;
    }
    let Some(sigfd) = sigfd else { return Ok(0) };
    let master = match relay_end {
        Some(sock) => Some(terminal::recv_master(sock.as_fd())?),
        None => None,
    };
    let status = crate::run::wait_loop(pid, pidfd.as_fd(), sigfd.as_fd(), master.as_ref())?;
    Ok(status.code())
}

/// A real-time policy needs real-time CPU time in the container's cgroup where the kernel
/// budgets it per group: given from its parents, and recorded in the state (under the
/// container's lock) for delete to take back.
fn give_realtime(root: &Path, id: &str) -> Result<()> {
    let dir = StateDir::open(root, id, true)?;
    let Some(mut st) = dir.load()? else { return Err(state::not_exist(id)) };
    st.cgroup.ensure_realtime().map_err(|e| {
        e.context("process.scheduler.policy: a real-time policy needs real-time CPU time in the container's cgroup")
    })?;
    dir.save(&st)
}

/// The exec process before execve; returns only with what failed.
#[allow(clippy::too_many_arguments)]
fn child(
    shared_root: Option<OwnedFd>,
    cgroup: &crate::cgroups::Cgroup,
    cgroup2_joined: bool,
    init: &OwnedFd,
    ns_flags: i32,
    in_userns: bool,
    plan: &ProcessPlan,
    memory_policy: Option<&crate::attrs::MemoryPolicy>,
    filter: Option<&crate::seccomp::Filter>,
    opts: &ExecOptions,
    console: Option<OwnedFd>,
    sync: &ChildEnd,
) -> Error {
    let result = (|| -> Result<std::ffi::CString> {
        sysprocess::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as u64).ctx("PR_SET_PDEATHSIG")?;
        // A session of its own, as runc makes it (and a terminal needs it to become the
        // controlling one).
        sysprocess::setsid().ctx("setsid")?;
        // execCPUAffinity: "initial" before entering the cgroup, "final" once in it.
        if let Some(cpus) = &plan.attrs.cpus_initial {
            crate::attrs::set_affinity(cpus, "process.execCPUAffinity.initial")?;
        }
        let proc = crate::procfs::Proc::open()?;
        // As the host's root still: moving ourselves into the v1 hierarchies.
        cgroup.join_self(cgroup2_joined)?;
        if let Some(cpus) = &plan.attrs.cpus_final {
            crate::attrs::set_affinity(cpus, "process.execCPUAffinity.final")?;
        }
        if let Some(policy) = memory_policy {
            policy.apply()?;
        }
        if ns_flags != 0 {
            // All at once through the pidfd: the kernel enters the user namespace first.
            sysprocess::setns(init, ns_flags).ctx("joining the container's namespaces")?;
        }
        if in_userns {
            namespaces::become_namespace_root()?;
        }
        if let Some(root) = shared_root {
            crate::rootfs::enter_shared(root.as_fd())?;
        }
        let host_pid = sync.expect_go()?;
        // Not before Go: our /proc files would turn root's, and an unprivileged runtime writes
        // our oom_score_adj until then.
        sysprocess::prctl(libc::PR_SET_DUMPABLE, 0).ctx("PR_SET_DUMPABLE")?;
        // The mount namespace's root is the container's root now.
        let root = file::open("/", libc::O_PATH | libc::O_DIRECTORY).ctx("opening the container's root")?;
        let cwd = fs::resolve(root.as_fd(), &plan.cwd, Resolve::EXISTING)
            .map_err(|e| process::cwd_error(e, &plan.cwd, false))?;
        if plan.terminal {
            let socket = console.as_ref().expect("checked by the caller");
            let pty = terminal::open_in_root(root.as_fd())?;
            if let Some((rows, cols)) = plan.console_size {
                terminal::set_size(pty.master.as_fd(), rows, cols)?;
            }
            terminal::send_master(socket.as_fd(), &pty.master)?;
            terminal::become_controlling(&pty.slave)?;
        }
        drop(console);
        drop(root);
        // As in the init: all but the identity switch before the seccomp filter.
        let staged = process::stage(plan, cwd, in_userns, opts.preserve_fds)?;
        let labels = plan.attrs.open_labels(&proc, host_pid)?;
        drop(proc);
        signal::default_signals();
        crate::init::load_seccomp_early(filter, plan.no_new_privileges, sync)?;
        process::assume_identity(plan, &staged)?;
        if plan.no_new_privileges {
            sysprocess::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).ctx("process.noNewPrivileges")?;
        }
        labels.write()?;
        sysprocess::prctl(libc::PR_SET_PDEATHSIG, 0).ctx("PR_SET_PDEATHSIG")?;
        Ok(staged.executable)
    })();
    let executable = match result {
        Ok(e) => e,
        Err(e) => return e,
    };
    if let Err(e) = sync.send(&ToRuntime::Ready) {
        return e;
    }
    if let Err(e) = crate::init::load_seccomp_late(filter, plan.no_new_privileges) {
        return e;
    }
    process::execve(&executable, plan, &plan.env)
}

/// The process exec runs without --process: config.json's, with the command line's changes.
#[derive(Debug, Clone, Default)]
pub struct ProcessOverrides {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub user: Option<(u32, Option<u32>)>,
    pub additional_gids: Vec<u32>,
    pub caps: Vec<String>,
    pub no_new_privileges: bool,
    pub tty: bool,
}

/// Builds the exec process from the container's config.json process and the overrides.
pub fn process_from_config(root: &Path, id: &str, o: &ProcessOverrides) -> Result<Process> {
    let dir = StateDir::open(root, id, false)?;
    let st = dir.load()?.ok_or_else(|| state::not_exist(id))?;
    let mut value = serde_json::to_value(st.spec.process().clone().unwrap_or_default()).expect("process serialises");
    if o.args.is_empty() {
        return Err(Error::invalid("exec: no command given (and no --process)"));
    }
    value["args"] = serde_json::json!(o.args);
    if !o.env.is_empty() {
        let env = value["env"].as_array_mut().map(std::mem::take).unwrap_or_default();
        let mut env: Vec<serde_json::Value> = env;
        env.extend(o.env.iter().map(|e| serde_json::json!(e)));
        value["env"] = serde_json::Value::Array(env);
    }
    if let Some(cwd) = &o.cwd {
        value["cwd"] = serde_json::json!(cwd);
    }
    if let Some((uid, gid)) = o.user {
        value["user"]["uid"] = serde_json::json!(uid);
        if let Some(gid) = gid {
            value["user"]["gid"] = serde_json::json!(gid);
        }
    }
    if !o.additional_gids.is_empty() {
        value["user"]["additionalGids"] = serde_json::json!(o.additional_gids);
    }
    if !o.caps.is_empty() {
        for set in ["bounding", "effective", "permitted"] {
            let list = value["capabilities"][set].as_array_mut().map(std::mem::take).unwrap_or_default();
            let mut list: Vec<serde_json::Value> = list;
            for cap in &o.caps {
                let cap = if cap.starts_with("CAP_") { cap.clone() } else { format!("CAP_{cap}") };
                if !list.iter().any(|c| c == cap.as_str()) {
                    list.push(serde_json::json!(cap));
                }
            }
            value["capabilities"][set] = serde_json::Value::Array(list);
        }
    }
    if o.no_new_privileges {
        value["noNewPrivileges"] = serde_json::json!(true);
    }
    value["terminal"] = serde_json::json!(o.tty);
    let de = serde_json::to_vec(&value).expect("process serialises");
    let d = &mut serde_json::Deserializer::from_slice(&de);
    serde_path_to_error::deserialize(d)
        .map_err(|e| Error::invalid(format!("exec process: {}: {}", e.path(), e.inner())))
}

/// Reads a process.json given with --process.
pub fn process_from_file(path: &Path) -> Result<Process> {
    let bytes = std::fs::read(path).with_ctx(|| format!("--process {}", path.display()))?;
    crate::config::parse_process(&bytes, &format!("--process {}", path.display()))
}
