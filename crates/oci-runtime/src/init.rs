//! The container's init before it becomes the container's process: it runs in the child that
//! clone3 created (no re-exec of the runtime), sets up everything inside the namespaces, reports
//! Ready, and then blocks on the exec fifo until `start`.
//!
//! Until Ready, every failure is sent to the runtime as a typed message, so `create` reports
//! exactly which step failed; after it, the runtime has exited and failures go to stderr.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use berth_sys::process::{prctl, setsid, unshare};
use berth_sys::{file, signal, socket};
use oci_spec::runtime::LinuxNamespaceType;

use crate::error::{Context, Error, Result};
use crate::fs::{self, Create, Resolve};
use crate::hooks::{self, Kind};
use crate::namespaces::{self, NamespacePlan};
use crate::process::{self, ProcessPlan};
use crate::procfs::Proc as Procfs;
use crate::rootfs::{self, RootfsPlan};
use crate::sync::{ChildEnd, ToChild, ToRuntime};
use crate::terminal;

/// What the init does, computed and validated by the runtime before cloning.
#[derive(Debug)]
pub struct InitPlan {
    pub rootfs: RootfsPlan,
    pub process: ProcessPlan,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub sysctl: Vec<(String, String)>,
    /// linux.personality, as personality(2) takes it.
    pub personality: Option<u64>,
    /// linux.memoryPolicy, as set_mempolicy(2) takes it.
    pub memory_policy: Option<crate::attrs::MemoryPolicy>,
    pub namespaces: NamespacePlan,
    pub cgroup: crate::cgroups::Cgroup,
    /// clone3 placed the init in its cgroup2 directory (CLONE_INTO_CGROUP).
    pub cgroup2_joined_at_clone: bool,
    /// The container has a user namespace (new or joined).
    pub in_userns: bool,
    pub preserve_fds: i32,
    pub socket_activation: Option<process::SocketActivation>,
    /// Join a new session keyring of this name (unless --no-new-keyring), so the container does
    /// not share the caller's keys.
    pub session_keyring: Option<String>,
    pub seccomp: Option<crate::seccomp::Filter>,
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// id, bundle and annotations, for the hooks' state.
    pub hook_state: (String, std::path::PathBuf, std::collections::HashMap<String, String>),
}

/// Descriptors the init inherits and uses.
pub struct InitFds {
    pub sync: ChildEnd,
    /// The exec fifo, opened read-write by the runtime: the init blocks reading it until
    /// `start` writes.
    pub exec_fifo: OwnedFd,
    pub console_socket: Option<OwnedFd>,
}

/// How the init came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Cloned by the runtime with the new namespaces; still has to join the others.
    Direct,
    /// Cloned by the intermediate, which joined and created the namespaces already.
    FromIntermediate,
}

/// Never returns: execs the container process or exits.
pub fn run(plan: &InitPlan, fds: InitFds, stage: Stage) -> ! {
    let ready = match prepare(plan, &fds, stage) {
        Ok(ready) => ready,
        Err(e) => {
            fds.sync.send_error(&e);
            exit(1);
        }
    };
    let err = finish(plan, fds, ready);
    // The runtime is gone by now: stderr is all that is left to report to.
    let msg = format!("berth-oci init: {err}\n");
    let _ = file::write_all(std::io::stderr(), msg.as_bytes());
    exit(127);
}

pub fn exit(code: i32) -> ! {
    // SAFETY: _exit skips destructors and atexit handlers that belong to the runtime parent.
    unsafe { libc::_exit(code) }
}

struct Ready {
    executable: std::ffi::CString,
    /// process.env, with HOME from the container's /etc/passwd when it has none.
    env: Vec<String>,
    host_pid: i32,
    /// The LSM label files, opened, written just before execve.
    labels: crate::attrs::Labels,
}

fn prepare(plan: &InitPlan, fds: &InitFds, stage: Stage) -> Result<Ready> {
    // Die with the runtime while it still has to hear from us.
    prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as u64).ctx("PR_SET_PDEATHSIG")?;
    // A session of its own, as runc's and crun's container processes lead: not the caller's
    // (its terminal's signals, its job control).
    setsid().ctx("setsid")?;
    if stage == Stage::Direct {
        // Still the host's root here (no id switch yet): allowed to move ourselves. (The
        // intermediate joined before it entered a user namespace, and we inherited that.)
        plan.cgroup.join_self(plan.cgroup2_joined_at_clone)?;
    }
    let host_pid = fds.sync.expect_go()?;
    // Non-dumpable from now on, so nothing in the container can open this process's memory or
    // descriptors through /proc. Not earlier: that makes our /proc files root's, and an
    // unprivileged runtime writes our uid_map before Go.
    prctl(libc::PR_SET_DUMPABLE, 0).ctx("PR_SET_DUMPABLE")?;

    let ns = &plan.namespaces;
    if stage == Stage::Direct {
        if ns.creates(LinuxNamespaceType::User) {
            namespaces::become_namespace_root()?;
        }
        ns.join_late()?;
    }
    if ns.creates(LinuxNamespaceType::Cgroup) {
        // Now that we are in the container's cgroup, it becomes the namespace's root.
        unshare(libc::CLONE_NEWCGROUP).ctx("creating the cgroup namespace")?;
    }
    if ns.creates(LinuxNamespaceType::Network) {
        // A new network namespace starts with its loopback down; runc and crun bring it up.
        socket::link_up("lo").ctx("linux.namespaces: bringing up the new network namespace's loopback")?;
    }
    // The host's procfs, verified, opened while the host's mounts are still all we see: sysctls
    // land in this process's namespaces, LSM labels on this process.
    let proc = Procfs::open()?;
    for (key, value) in &plan.sysctl {
        proc.write(Path::new("sys").join(key.replace('.', "/")), value.as_bytes())
            .map_err(|e| e.context(format!("linux.sysctl.{key}: writing '{value}'")))?;
    }
    if let Some(h) = plan.hostname.as_deref().filter(|h| !h.is_empty()) {
        // SAFETY: valid buffer and length.
        if unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) } != 0 {
            return Err(Error::last_os(format!("hostname: setting '{h}'")));
        }
    }
    if let Some(d) = plan.domainname.as_deref().filter(|d| !d.is_empty()) {
        // SAFETY: as above.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(Error::last_os(format!("domainname: setting '{d}'")));
        }
    }

    if let Some(name) = &plan.session_keyring {
        join_session_keyring(name)?;
    }
    // A container sharing a mount table (no mount namespace of its own) gets no mounts.
    let asm = match &plan.rootfs.shared_root {
        None => Some(rootfs::prepare(&plan.rootfs)?),
        Some(_) => None,
    };
    let root_fd = match (&asm, &plan.rootfs.shared_root) {
        (Some(asm), _) => asm.root.as_fd(),
        (None, Some(root)) => root.as_fd(),
        (None, None) => unreachable!("one of the two"),
    };
    // Read with the config's mounts in place (a caller may bind its own /etc/passwd).
    let env = process::with_home(&plan.process.env, root_fd, plan.process.uid);
    let pty = if plan.process.terminal {
        let socket = fds
            .console_socket
            .as_ref()
            .ok_or_else(|| Error::invalid("process.terminal is true but no --console-socket was given"))?;
        let pty = terminal::open_in_root(root_fd)?;
        if let Some((rows, cols)) = plan.process.console_size {
            terminal::set_size(pty.master.as_fd(), rows, cols)?;
        }
        terminal::send_master(socket.as_fd(), &pty.master)?;
        Some(pty.slave)
    } else {
        None
    };
    if plan.hooks.as_ref().is_some_and(|h| !Kind::Prestart.of(h).is_empty() || !Kind::CreateRuntime.of(h).is_empty()) {
        fds.sync.send(&ToRuntime::RuntimeHooks)?;
        fds.sync.expect("HooksDone", "berth-oci", |m| matches!(m, ToChild::HooksDone))?;
    }
    let (id, bundle, annotations) = &plan.hook_state;
    hooks::run_all(
        plan.hooks.as_ref(),
        Kind::CreateContainer,
        &hooks::state(id, "created", host_pid, bundle, annotations),
        Some(&env),
    )?;
    // The working directory is created now, as root, the way runc and docker do.
    // Kept as a descriptor and entered with fchdir: a path would be walked by the kernel, which
    // follows /proc/self/fd/N magic links to whatever the runtime holds open (CVE-2024-21626).
    let cwd = fs::resolve(root_fd, &plan.process.cwd, Resolve::create(Create::Dir))
        .map_err(|e| process::cwd_error(e, &plan.process.cwd, true))?;
    match asm {
        Some(asm) => rootfs::finish(&plan.rootfs, asm, pty.as_ref())?,
        None => rootfs::enter_shared(root_fd)?,
    }
    if let Some(slave) = &pty {
        terminal::become_controlling(slave)?;
    }
    drop(pty);

    if let Some(persona) = plan.personality {
        crate::attrs::set_personality(persona)?;
    }
    if let Some(policy) = &plan.memory_policy {
        policy.apply()?;
    }
    // Everything but the identity switch happens before the seccomp filter, which without
    // no_new_privs is loaded next: the runtime's own work must not depend on what the
    // container's profile allows (close_range, openat, fcntl, getdents64, ...).
    let inherited_fds = plan.socket_activation.as_ref().map_or(0, |a| a.fds) + plan.preserve_fds;
    let staged = process::stage(&plan.process, cwd, plan.in_userns, inherited_fds)?;
    let labels = plan.process.attrs.open_labels(&proc, host_pid)?;
    drop(proc);
    signal::exit_on_signals();
    load_seccomp_early(plan.seccomp.as_ref(), plan.process.no_new_privileges, &fds.sync)?;
    process::assume_identity(&plan.process, &staged)?;
    // From here the runtime may exit at any moment (after Committed): the death signal would
    // kill us then. Should it die before Committed instead, the sync socket reads EOF and we exit.
    prctl(libc::PR_SET_PDEATHSIG, 0).ctx("PR_SET_PDEATHSIG")?;
    Ok(Ready { executable: staged.executable, env, host_pid, labels })
}

/// Loads the seccomp filter now if it cannot wait until right before execve: without
/// no_new_privs only a process with CAP_SYS_ADMIN may load one (so before the capabilities
/// go), and a notifying filter's fd must reach the runtime while it still listens.
pub(crate) fn load_seccomp_early(
    filter: Option<&crate::seccomp::Filter>,
    no_new_privileges: bool,
    sync: &ChildEnd,
) -> Result<()> {
    let Some(f) = filter.filter(|f| f.notify || !no_new_privileges) else { return Ok(()) };
    if let Some(fd) = f.load().map_err(|e| e.context("linux.seccomp"))? {
        sync.send_with_fds(&ToRuntime::SeccompNotify, &[fd.as_fd()])?;
    }
    Ok(())
}

/// The filter's place when it is not loaded early: the last step before execve.
pub(crate) fn load_seccomp_late(filter: Option<&crate::seccomp::Filter>, no_new_privileges: bool) -> Result<()> {
    match filter.filter(|f| !f.notify && no_new_privileges) {
        Some(f) => f.load().map(drop).map_err(|e| e.context("linux.seccomp")),
        None => Ok(()),
    }
}

fn join_session_keyring(name: &str) -> Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let c = berth_sys::cstring(name)?;
    // SAFETY: keyctl with a valid C string.
    if unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, c.as_ptr()) } < 0 {
        let err = std::io::Error::last_os_error();
        // A kernel without keyrings has none to share.
        if err.raw_os_error() != Some(libc::ENOSYS) {
            return Err(
                Error::from_io(err).context("joining a new session keyring (--no-new-keyring keeps the caller's)")
            );
        }
    }
    Ok(())
}

/// After Ready: from here on a seccomp filter may be loaded (without no_new_privs), and this
/// process makes only the calls that cannot come before it: reads and writes on descriptors
/// it holds, the identity switch, the startContainer hooks (run as the container's process,
/// as runc runs them) and execve.
fn finish(plan: &InitPlan, fds: InitFds, ready: Ready) -> Error {
    if let Err(e) = fds.sync.send(&ToRuntime::Ready) {
        return e;
    }
    if let Err(e) = fds.sync.expect_plain("Committed", "berth-oci", |m| matches!(m, ToChild::Committed)) {
        // The runtime failed after we were ready and is tearing the container down.
        return e;
    }
    drop(fds.sync);
    if plan.process.no_new_privileges {
        if let Err(e) = prctl(libc::PR_SET_NO_NEW_PRIVS, 1) {
            return Error::from_io(e).context("process.noNewPrivileges");
        }
    }
    if let Err(e) = wait_for_start(fds.exec_fifo.as_fd()) {
        return e;
    }
    drop(fds.exec_fifo);
    let (id, bundle, annotations) = &plan.hook_state;
    let state = hooks::state(id, "created", ready.host_pid, bundle, annotations);
    if let Err(e) = hooks::run_all(plan.hooks.as_ref(), Kind::StartContainer, &state, Some(&ready.env)) {
        return e;
    }
    if let Err(e) = ready.labels.write() {
        return e;
    }
    if let Err(e) = load_seccomp_late(plan.seccomp.as_ref(), plan.process.no_new_privileges) {
        return e;
    }
    match &plan.socket_activation {
        // SAFETY: getpid cannot fail; it names us as the container sees us.
        Some(activation) => {
            process::execve(&ready.executable, &plan.process, &activation.env(&ready.env, unsafe { libc::getpid() }))
        }
        None => process::execve(&ready.executable, &plan.process, &ready.env),
    }
}

/// Blocks until `start` writes to the exec fifo (which the runtime opened read-write for us
/// before cloning: no open after the seccomp filter, and a reader `start` can see).
fn wait_for_start(fifo: BorrowedFd<'_>) -> Result<()> {
    let mut byte = [0u8; 1];
    loop {
        match file::read(fifo, &mut byte) {
            Ok(1) => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(Error::from_io(e).context("waiting on the exec fifo")),
        }
    }
}
