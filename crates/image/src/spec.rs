//! Image config → the defaults of an OCI runtime spec: the process (args from Entrypoint and
//! Cmd, Env, WorkingDir, User resolved through the image's own /etc/passwd and /etc/group),
//! and what the engine needs besides (exposed ports, volumes, labels, stop signal). The
//! CLI and the CRI server both call `runtime_defaults`.
//!
//! /etc/passwd and /etc/group are opened inside the root filesystem with
//! openat2(RESOLVE_IN_ROOT): a symlinked /etc/passwd in a hostile image resolves inside the
//! image, never to the host's; and only a regular file is read (a FIFO would block, a device
//! node would be a host device).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{bail, Context, Result};
use crate::manifest::ImageConfig;

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuntimeDefaults {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: i32,
}

/// Overrides from the user (`berth run IMAGE CMD...`, CRI's command/args).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub env: Vec<String>,
}

/// Reads `path` of the image (/etc/passwd, /etc/group), resolved inside `rootfs`. Only a
/// regular file is read: it is opened O_PATH first (no device driver's open runs, no FIFO
/// blocks), checked with fstat, then reopened for reading through /proc/self/fd (the same
/// inode). Bytes that are not UTF-8 are replaced, not an error.
fn read_in_root(rootfs: &Path, path: &str) -> Result<Option<String>> {
    use berth_sys::file;
    let root = file::open_dir(rootfs).ctx(format!("open root filesystem {}", rootfs.display()))?;
    let fd = match file::open_in_root(root.as_fd(), path.as_bytes(), libc::O_PATH) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).ctx(format!("image {path}")),
    };
    let st = file::fstat(fd.as_fd()).ctx(format!("image {path}"))?;
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => None,
        libc::S_IFDIR => Some("a directory"),
        libc::S_IFCHR => Some("a character device"),
        libc::S_IFBLK => Some("a block device"),
        libc::S_IFIFO => Some("a FIFO"),
        libc::S_IFSOCK => Some("a socket"),
        _ => Some("of an unknown type"),
    };
    if let Some(kind) = kind {
        bail!("image {path}: not a regular file ({kind}); refusing to read it");
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ctx(format!("image {path}"))?;
    let mut bytes = Vec::new();
    file.take(4 << 20).read_to_end(&mut bytes).ctx(format!("image {path}"))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

pub fn signal_number(s: &str) -> Result<i32> {
    let up = s.trim().to_ascii_uppercase();
    if let Ok(n) = up.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        bail!("StopSignal {s:?}: out of range");
    }
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        "ABRT" => libc::SIGABRT,
        "ALRM" => libc::SIGALRM,
        _ => {
            let rt_offset = name.strip_prefix("RTMIN+").and_then(|x| x.parse::<i32>().ok());
            if let Some(off) = rt_offset.filter(|off| (0..=libc::SIGRTMAX() - libc::SIGRTMIN()).contains(off)) {
                libc::SIGRTMIN() + off
            } else if rt_offset.is_some() {
                bail!("StopSignal {s:?}: beyond SIGRTMAX")
            } else {
                bail!("StopSignal {s:?}: unknown signal")
            }
        }
    };
    Ok(n)
}

/// The largest uid or gid a container's process may run as: 4294967295 is -1 to
/// setresuid/setresgid ("leave unchanged", i.e. root), so as runc only 0 to 2^31 - 1.
pub const MAX_PROCESS_ID: u32 = i32::MAX as u32;

/// A uid or gid a process may run as: within 0..=MAX_PROCESS_ID.
pub fn check_process_id(id: u32, what: &str) -> Result<u32> {
    check_id(id, what)
}

fn check_id(id: u32, what: &str) -> Result<u32> {
    if id > MAX_PROCESS_ID {
        bail!("{what} {id} is out of range (0 to {MAX_PROCESS_ID})");
    }
    Ok(id)
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`, ...) against the image's
/// /etc/passwd and /etc/group. Returns (uid, gid, supplementary gids), each within
/// 0..=MAX_PROCESS_ID (a hostile /etc/passwd or /etc/group is checked too).
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>)> {
    let (uid, gid, extra) = resolve_user_unchecked(rootfs, user)?;
    check_id(uid, "uid")?;
    check_id(gid, "gid")?;
    for g in &extra {
        check_id(*g, "supplementary gid (from the image's /etc/group)")?;
    }
    Ok((uid, gid, extra))
}

fn resolve_user_unchecked(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>)> {
    if user.contains('\0') {
        bail!("contains a NUL byte");
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(rootfs, "/etc/passwd")?.unwrap_or_default();
    let group = read_in_root(rootfs, "/etc/group")?.unwrap_or_default();
    let pw: Vec<Vec<&str>> =
        passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 4).collect();
    let gr: Vec<Vec<&str>> = group.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 3).collect();
    let (uid, mut gid, name) = if u.is_empty() {
        (0, 0, Some("root".to_string()))
    } else if let Ok(n) = u.parse::<u32>() {
        match pw.iter().find(|f| f[2].parse::<u32>().ok() == Some(n)) {
            Some(f) => (n, f[3].parse().unwrap_or(0), Some(f[0].to_string())),
            None => (n, 0, None),
        }
    } else {
        match pw.iter().find(|f| f[0] == u) {
            Some(f) => {
                let uid = f[2].parse().ctx(format!("image /etc/passwd: user {u}: uid"))?;
                (uid, f[3].parse().ctx(format!("image /etc/passwd: user {u}: gid"))?, Some(u.to_string()))
            }
            None => bail!(NotFound, "user {u:?} not found in the image's /etc/passwd"),
        }
    };
    if let Some(g) = g {
        gid = if let Ok(n) = g.parse::<u32>() {
            n
        } else {
            match gr.iter().find(|f| f[0] == g) {
                Some(f) => f[2].parse().ctx(format!("image /etc/group: group {g}: gid"))?,
                None => bail!(NotFound, "group {g:?} not found in the image's /etc/group"),
            }
        };
    }
    let mut extra = Vec::new();
    if let (Some(name), None) = (&name, g) {
        for f in &gr {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(n) = f[2].parse::<u32>() {
                    if n != gid && !extra.contains(&n) {
                        extra.push(n);
                    }
                }
            }
        }
    }
    Ok((uid, gid, extra))
}

/// The runtime defaults of an image whose root filesystem is at `rootfs` (mounted, or a
/// layer stack copy), with the user's overrides applied.
pub fn runtime_defaults(config: &ImageConfig, rootfs: &Path, o: &Overrides) -> Result<RuntimeDefaults> {
    let c = config.config.clone().unwrap_or_default();
    let entrypoint = o.entrypoint.clone().or(c.entrypoint.clone()).unwrap_or_default();
    // Docker: an explicit entrypoint override drops the image's Cmd.
    let cmd = match (&o.cmd, &o.entrypoint) {
        (Some(cmd), _) => cmd.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => c.cmd.clone().unwrap_or_default(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        bail!("the image has neither Entrypoint nor Cmd, and no command was given");
    }
    for (i, e) in c.env.iter().flatten().enumerate() {
        if e.split('=').next().is_none_or(str::is_empty) || !e.contains('=') {
            bail!("image config Env[{i}] {e:?} is not of the form KEY=value");
        }
    }
    // The image's strings become C strings in the container's process: a NUL would cut them.
    for (field, list) in [("Entrypoint", &c.entrypoint), ("Cmd", &c.cmd), ("Env", &c.env)] {
        for (i, v) in list.iter().flatten().enumerate() {
            if v.contains('\0') {
                bail!("image config {field}[{i}] {v:?} contains a NUL byte");
            }
        }
    }
    for e in &o.env {
        if e.contains('\0') {
            bail!("environment variable {e:?} contains a NUL byte");
        }
    }
    let mut env: Vec<String> = c.env.clone().unwrap_or_default();
    for e in &o.env {
        let key = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let cwd_origin = if o.workdir.is_some() { "working directory" } else { "image config WorkingDir" };
    let cwd = o.workdir.clone().or(c.working_dir.clone()).filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        bail!("{cwd_origin} {cwd:?} is not an absolute path");
    }
    if cwd.contains('\0') {
        bail!("{cwd_origin} {cwd:?} contains a NUL byte");
    }
    let user_origin = if o.user.is_some() { "user" } else { "image config User" };
    let user = o.user.clone().or(c.user.clone()).unwrap_or_default();
    let (uid, gid, additional_gids) =
        resolve_user(rootfs, &user).map_err(|e| e.context(format!("{user_origin} {user:?}")))?;
    let stop_signal = match &c.stop_signal {
        Some(s) if !s.is_empty() => signal_number(s)?,
        _ => libc::SIGTERM,
    };
    Ok(RuntimeDefaults {
        args,
        env,
        cwd,
        uid,
        gid,
        additional_gids,
        exposed_ports: c.exposed_ports.map(|m| m.into_keys().collect()).unwrap_or_default(),
        volumes: c.volumes.map(|m| m.into_keys().collect()).unwrap_or_default(),
        labels: c.labels.unwrap_or_default(),
        stop_signal,
    })
}

impl RuntimeDefaults {
    /// Writes the process defaults into a runtime spec (process.args, env, cwd, user) and the
    /// image's labels into its annotations.
    pub fn apply(&self, spec: &mut oci_spec::runtime::Spec) -> Result<()> {
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(self.args.clone()));
        process.set_env(Some(self.env.clone()));
        process.set_cwd(self.cwd.clone().into());
        let mut user = process.user().clone();
        user.set_uid(self.uid);
        user.set_gid(self.gid);
        user.set_additional_gids(if self.additional_gids.is_empty() {
            None
        } else {
            Some(self.additional_gids.clone())
        });
        process.set_user(user);
        spec.set_process(Some(process));
        if !self.labels.is_empty() {
            let mut ann = spec.annotations().clone().unwrap_or_default();
            for (k, v) in &self.labels {
                ann.entry(k.clone()).or_insert_with(|| v.clone());
            }
            spec.set_annotations(Some(ann));
        }
        Ok(())
    }
}
