//! The container process itself: who it runs as, its limits and capabilities, and finding and
//! executing its program.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_sys::file;
use berth_sys::process::prctl;
use oci_spec::runtime::{PosixRlimitType, Process};

use crate::caps::CapSets;
use crate::error::{Context, Error, ErrorKind, Result};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to turn the prepared init into the container's process.
#[derive(Debug, Clone)]
pub struct ProcessPlan {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub caps: Option<CapSets>,
    pub no_new_privileges: bool,
    pub terminal: bool,
    pub console_size: Option<(u16, u16)>,
    pub rlimits: Vec<Rlimit>,
    pub oom_score_adj: Option<i32>,
    pub attrs: crate::attrs::ProcessAttrs,
}

#[derive(Debug, Clone, Copy)]
pub struct Rlimit {
    pub resource: u32,
    pub name: &'static str,
    pub soft: u64,
    pub hard: u64,
}

pub fn rlimit_resource(t: PosixRlimitType) -> (u32, &'static str) {
    use PosixRlimitType::*;
    let (r, n) = match t {
        RlimitCpu => (libc::RLIMIT_CPU, "RLIMIT_CPU"),
        RlimitFsize => (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE"),
        RlimitData => (libc::RLIMIT_DATA, "RLIMIT_DATA"),
        RlimitStack => (libc::RLIMIT_STACK, "RLIMIT_STACK"),
        RlimitCore => (libc::RLIMIT_CORE, "RLIMIT_CORE"),
        RlimitRss => (libc::RLIMIT_RSS, "RLIMIT_RSS"),
        RlimitNproc => (libc::RLIMIT_NPROC, "RLIMIT_NPROC"),
        RlimitNofile => (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
        RlimitMemlock => (libc::RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK"),
        RlimitAs => (libc::RLIMIT_AS, "RLIMIT_AS"),
        RlimitLocks => (libc::RLIMIT_LOCKS, "RLIMIT_LOCKS"),
        RlimitSigpending => (libc::RLIMIT_SIGPENDING, "RLIMIT_SIGPENDING"),
        RlimitMsgqueue => (libc::RLIMIT_MSGQUEUE, "RLIMIT_MSGQUEUE"),
        RlimitNice => (libc::RLIMIT_NICE, "RLIMIT_NICE"),
        RlimitRtprio => (libc::RLIMIT_RTPRIO, "RLIMIT_RTPRIO"),
        RlimitRttime => (libc::RLIMIT_RTTIME, "RLIMIT_RTTIME"),
    };
    (r, n)
}

impl ProcessPlan {
    pub fn from_spec(p: &Process, at: &str) -> Result<ProcessPlan> {
        let user = p.user();
        if user.username().as_deref().is_some_and(|u| !u.is_empty()) {
            return Err(Error::invalid(format!("{at}.user.username: is for Windows containers; use uid and gid")));
        }
        Ok(ProcessPlan {
            args: p.args().clone().unwrap_or_default(),
            env: p.env().clone().unwrap_or_default(),
            cwd: p.cwd().clone(),
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask(),
            caps: match p.capabilities() {
                Some(c) => Some(CapSets::from_spec(Some(c), at)?),
                None => None,
            },
            no_new_privileges: p.no_new_privileges().unwrap_or(false),
            terminal: p.terminal().unwrap_or(false),
            console_size: p.console_size().map(|b| (b.height() as u16, b.width() as u16)),
            rlimits: p
                .rlimits()
                .iter()
                .flatten()
                .map(|r| {
                    let (resource, name) = rlimit_resource(r.typ());
                    Rlimit { resource, name, soft: r.soft(), hard: r.hard() }
                })
                .collect(),
            oom_score_adj: p.oom_score_adj(),
            attrs: crate::attrs::ProcessAttrs::from_spec(p, at)?,
        })
    }

    fn path_env(&self) -> &str {
        self.env.iter().rev().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH)
    }
}

/// Names the step and the directory of a failed working directory: `process.cwd: chdir to /x:
/// no such file or directory`. A system error reads as the step's; one without an errno (an
/// escape through `..`) keeps its own words.
pub fn cwd_error(e: Error, cwd: &Path, creating: bool) -> Error {
    let step = if creating { "creating" } else { "chdir to" };
    let e = if e.errno().is_some() { Error::from_parts(e.kind(), String::new(), e.errno()) } else { e };
    e.context(format!("process.cwd: {step} {}", cwd.display()))
}

/// The environment with HOME added when it has none: the home of `uid` in the container's
/// /etc/passwd (resolved inside `root`, never following a link out of it), else `/`, as runc
/// and crun set it.
pub fn with_home(env: &[String], root: BorrowedFd<'_>, uid: u32) -> Vec<String> {
    let mut env = env.to_vec();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(root, uid).unwrap_or_else(|| "/".into())));
    }
    env
}

fn home_of(root: BorrowedFd<'_>, uid: u32) -> Option<String> {
    use std::io::Read;
    let file = crate::fs::resolve(root, Path::new("/etc/passwd"), crate::fs::Resolve::EXISTING).ok()?;
    if !crate::fs::is_regular(file.as_fd()).ok()? {
        return None;
    }
    let file = crate::fs::reopen(file.as_fd(), libc::O_RDONLY | libc::O_CLOEXEC).ok()?;
    let mut text = Vec::new();
    // A passwd file is small; a huge one is not read whole.
    std::fs::File::from(file).take(4 << 20).read_to_end(&mut text).ok()?;
    passwd_home(&String::from_utf8_lossy(&text), uid)
}

/// The home directory of `uid` in passwd(5) text.
fn passwd_home(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 7 && fields[2].parse() == Ok(uid) && !fields[5].is_empty()).then(|| fields[5].to_string())
    })
}

/// Whether this process has a capability in its effective set (in its own user namespace).
pub fn have_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| u64::from_str_radix(v.trim(), 16).unwrap_or(0)))
        })
        .is_some_and(|mask| mask & (1 << cap) != 0)
}

const CAP_SYS_RESOURCE: u32 = 24;

/// Sets the container process's rlimits from outside (prlimit), so the runtime's own privileges,
/// not the container's user namespace, decide what can be raised.
pub fn apply_rlimits(pid: i32, rlimits: &[Rlimit], at: &str) -> Result<()> {
    for (i, r) in rlimits.iter().enumerate() {
        let new = libc::rlimit64 { rlim_cur: r.soft, rlim_max: r.hard };
        let mut old = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: valid rlimit structs.
        let ret = unsafe { libc::prlimit64(pid, r.resource as _, &new, &mut old) };
        if ret != 0 {
            let err = std::io::Error::last_os_error();
            let mut current = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
            unsafe { libc::prlimit64(pid, r.resource as _, std::ptr::null(), &mut current) };
            let why = if err.raw_os_error() == Some(libc::EPERM)
                && r.hard > current.rlim_max
                && !have_capability(CAP_SYS_RESOURCE)
            {
                format!(
                    ": raising the hard limit above {} needs CAP_SYS_RESOURCE, which berth-oci does not have on this host",
                    current.rlim_max
                )
            } else {
                String::new()
            };
            return Err(Error::from_io(err)
                .context(format!("{at}.rlimits[{i}]: setting {} to soft {} hard {}{why}", r.name, r.soft, r.hard))
                .with_kind(ErrorKind::Unsupported));
        }
    }
    Ok(())
}

/// Writes /proc/<pid>/oom_score_adj for the container process.
pub fn apply_oom_score_adj(pid: i32, value: i32, at: &str) -> Result<()> {
    let proc = crate::procfs::Proc::open()?;
    let path = format!("{pid}/oom_score_adj");
    let current: i32 = proc.read(&path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    match proc.write(&path, value.to_string().as_bytes()) {
        Ok(()) => Ok(()),
        Err(e) => {
            let why = if value < current && !have_capability(CAP_SYS_RESOURCE) {
                format!(": lowering it below the current {current} needs CAP_SYS_RESOURCE, which berth-oci does not have on this host")
            } else {
                String::new()
            };
            Err(e.context(format!("{at}.oomScoreAdj: setting {value}{why}")).with_kind(ErrorKind::Unsupported))
        }
    }
}

/// Finds the program as the container's user will run it, while this process is still root:
/// with the user's groups and file system ids (the effective ids, and so the capabilities the
/// seccomp filter's loading needs, stay), then the file system ids back to root's.
fn find_executable_as(plan: &ProcessPlan, setgroups_allowed: bool) -> Result<CString> {
    if setgroups_allowed {
        // SAFETY: valid slice of gids.
        if unsafe { libc::setgroups(plan.additional_gids.len(), plan.additional_gids.as_ptr()) } != 0 {
            return Err(Error::last_os(format!("process.user.additionalGids: setgroups({:?})", plan.additional_gids)));
        }
    }
    // SAFETY: plain syscalls; setfs*id report nothing, the lookup just runs as root if refused.
    unsafe {
        libc::setfsgid(plan.gid);
        libc::setfsuid(plan.uid);
    }
    let found = find_executable(plan);
    unsafe {
        libc::setfsuid(0);
        libc::setfsgid(0);
    }
    found
}

/// Finds the program to run: args[0] if it has a '/', else the first executable file on the
/// process's PATH. Runs inside the container's root, after pivot_root.
pub fn find_executable(plan: &ProcessPlan) -> Result<CString> {
    let name = &plan.args[0];
    let candidates: Vec<PathBuf> = if name.contains('/') {
        vec![if Path::new(name).is_absolute() { PathBuf::from(name) } else { plan.cwd.join(name) }]
    } else {
        plan.path_env().split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join(name)).collect()
    };
    for path in &candidates {
        let c = berth_sys::cstring(path)?;
        // SAFETY: valid C string; AT_EACCESS checks with the file system ids, which
        // find_executable_as set to the container user's.
        if unsafe { libc::syscall(libc::SYS_faccessat2, libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) } == 0
        {
            if let Ok(m) = std::fs::metadata(path) {
                if m.is_file() {
                    return Ok(c);
                }
            }
        }
    }
    if name.contains('/') {
        let err = std::fs::metadata(&candidates[0])
            .err()
            .map(Error::from_io)
            .unwrap_or_else(|| Error::from_errno(libc::EACCES, ""));
        Err(err.context(format!("process.args[0]: {name}")).with_kind(ErrorKind::InvalidInput))
    } else {
        Err(Error::invalid(format!(
            "process.args[0]: exec: \"{name}\": executable file not found in $PATH ({})",
            plan.path_env()
        )))
    }
}

/// Switches to the container user: supplementary groups, gid, uid. Capabilities survive the
/// switch (KEEPCAPS) so the configured sets can be applied after it.
pub fn switch_user(plan: &ProcessPlan, setgroups_allowed: bool) -> Result<()> {
    prctl(libc::PR_SET_KEEPCAPS, 1).ctx("PR_SET_KEEPCAPS")?;
    if setgroups_allowed {
        // SAFETY: valid slice of gids.
        if unsafe { libc::setgroups(plan.additional_gids.len(), plan.additional_gids.as_ptr()) } != 0 {
            return Err(Error::last_os(format!("process.user.additionalGids: setgroups({:?})", plan.additional_gids)));
        }
    } else if !plan.additional_gids.is_empty() {
        return Err(Error::invalid("process.user.additionalGids: setgroups is denied in this user namespace"));
    }
    // SAFETY: plain syscalls.
    if unsafe { libc::setresgid(plan.gid, plan.gid, plan.gid) } != 0 {
        return Err(Error::last_os(format!(
            "process.user.gid: setting gid {} (is it mapped in the user namespace?)",
            plan.gid
        )));
    }
    if unsafe { libc::setresuid(plan.uid, plan.uid, plan.uid) } != 0 {
        return Err(Error::last_os(format!(
            "process.user.uid: setting uid {} (is it mapped in the user namespace?)",
            plan.uid
        )));
    }
    prctl(libc::PR_SET_KEEPCAPS, 0).ctx("PR_SET_KEEPCAPS")?;
    Ok(())
}

/// Applies the capability sets (after [`switch_user`]; the bounding set was dropped before it).
/// Without a capabilities object the process gets none, as with runc.
pub fn apply_caps(plan: &ProcessPlan) -> Result<()> {
    let caps = plan.caps.unwrap_or_default();
    crate::caps::set_process_caps(&caps)?;
    crate::caps::set_ambient(caps.ambient & !caps.unraisable_ambient())
}

pub fn execve(path: &CString, plan: &ProcessPlan, env: &[String]) -> Error {
    let args: Vec<CString> = plan.args.iter().map(|a| CString::new(a.as_bytes()).unwrap_or_default()).collect();
    let env: Vec<CString> = env.iter().map(|e| CString::new(e.as_bytes()).unwrap_or_default()).collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: NUL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Error::last_os(format!("exec {}", String::from_utf8_lossy(path.as_bytes())))
}

/// Sockets handed to the runtime by systemd-style socket activation (LISTEN_FDS), passed on to
/// the container's init as descriptors 3 and up, before any --preserve-fds ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketActivation {
    pub fds: i32,
    /// LISTEN_FDNAMES, passed on as given.
    pub names: Option<String>,
}

impl SocketActivation {
    /// The process environment with the activation variables of the process `pid` (as the
    /// container sees it) in place of any it had.
    pub fn env(&self, env: &[String], pid: i32) -> Vec<String> {
        let ours = |e: &String| ["LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES="].iter().any(|k| e.starts_with(k));
        let mut out: Vec<String> = env.iter().filter(|e| !ours(e)).cloned().collect();
        out.push(format!("LISTEN_FDS={}", self.fds));
        out.push(format!("LISTEN_PID={pid}"));
        if let Some(names) = &self.names {
            out.push(format!("LISTEN_FDNAMES={names}"));
        }
        out
    }
}

pub fn path_of(c: &CString) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(c.as_bytes()))
}

fn setgroups_allowed(in_userns: bool) -> bool {
    !in_userns || std::fs::read_to_string("/proc/self/setgroups").map(|s| s.trim() == "allow").unwrap_or(true)
}

/// The container's process, half made: what [`stage`] did before the seccomp filter.
#[derive(Debug)]
pub struct Staged {
    pub executable: CString,
    setgroups_allowed: bool,
}

/// Turns the calling process into the container's process but for who it is: I/O priority and
/// scheduler, the bounding set, umask, the working directory (a descriptor resolved inside the
/// root), the program (looked up as the user), and descriptors (stdio and `inherited_fds` from 3
/// up survive execve). Runs before the seccomp filter is loaded: none of the runtime's own work
/// may depend on what the container's profile allows. [`assume_identity`] does the rest.
pub fn stage(p: &ProcessPlan, cwd: std::os::fd::OwnedFd, in_userns: bool, inherited_fds: i32) -> Result<Staged> {
    p.attrs.apply_early()?;
    crate::caps::drop_bounding(p.caps.map_or(0, |c| c.bounding))?;
    if let Some(mask) = p.umask {
        // SAFETY: plain syscall.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    // fchdir, never chdir(path): the kernel would follow /proc/self/fd/N magic links to
    // whatever the runtime holds open (CVE-2024-21626). As root, as runc enters it: the user
    // may start in a directory it cannot search.
    file::fchdir(&cwd).map_err(|e| cwd_error(e.into(), &p.cwd, false))?;
    drop(cwd);
    let setgroups_allowed = setgroups_allowed(in_userns);
    let executable = find_executable_as(p, setgroups_allowed)?;
    let inherited_end = 3 + inherited_fds;
    for fd in 3..inherited_end {
        // SAFETY: only the flag changes; a number not open (a descriptor the caller did not
        // pass) fails with EBADF.
        let inherited = unsafe { BorrowedFd::borrow_raw(fd) };
        file::set_cloexec(inherited, false)
            .with_ctx(|| format!("passing descriptor {fd} (LISTEN_FDS, --preserve-fds)"))?;
    }
    file::cloexec_from(inherited_end).ctx("closing the runtime's descriptors on exec")?;
    Ok(Staged { executable, setgroups_allowed })
}

/// Who the process is: groups, gid, uid, capabilities. Without no_new_privs these follow the
/// seccomp filter (loading one then needs CAP_SYS_ADMIN, which they give up): these calls
/// (setgroups, setresgid, setresuid, capset, prctl) are the profile's business, as in runc and
/// crun.
pub fn assume_identity(p: &ProcessPlan, staged: &Staged) -> Result<()> {
    switch_user(p, staged.setgroups_allowed)?;
    apply_caps(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_home_by_uid() {
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\n# comment\nuser:x:1000:1000::/home/user:/bin/sh\nnohome:x:7:7:::/bin/sh\n";
        assert_eq!(passwd_home(passwd, 0).as_deref(), Some("/root"));
        assert_eq!(passwd_home(passwd, 1000).as_deref(), Some("/home/user"));
        assert_eq!(passwd_home(passwd, 7), None);
        assert_eq!(passwd_home(passwd, 4242), None);
    }
}
