//! Runtime handlers: OCI runtimes driven through runc's command line (berth-oci by default,
//! runc and crun as alternatives, others from berth.toml), each with its own state root
//! `<run-root>/runtimes/<name>`. What a runtime can do (seccomp, exec) is asked of the runtime
//! itself (`features`, `--version`, `exec --help`) and cached per binary, so a runtime that
//! gains a feature is used with it at once.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::config::{find_program, search_path, EngineConfig};
use crate::error::{bail, Error, Result};

#[derive(Debug, Clone)]
pub struct Runtime {
    pub name: String,
    pub path: PathBuf,
    /// Run it in a private mount namespace without the hybrid host's cgroup2 mount.
    pub hide_cgroup2: bool,
    pub root: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Features {
    pub seccomp: bool,
    pub exec: bool,
    #[serde(default)]
    pub version: String,
}

/// Whether this host has cgroup v1 controllers and the cgroup2 hierarchy at
/// /sys/fs/cgroup/unified (systemd's "hybrid" layout).
pub fn hybrid_cgroups() -> bool {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let magic = |p: &str| {
        let c = std::ffi::CString::new(p).unwrap();
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid path and out-pointer.
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 {
            st.f_type
        } else {
            0
        }
    };
    magic("/sys/fs/cgroup") != CGROUP2_SUPER_MAGIC && magic("/sys/fs/cgroup/unified") == CGROUP2_SUPER_MAGIC
}

pub fn cgroup_version() -> &'static str {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-pointer.
    if unsafe { libc::statfs(c"/sys/fs/cgroup".as_ptr(), &mut st) } == 0 && st.f_type == CGROUP2_SUPER_MAGIC {
        "2"
    } else if hybrid_cgroups() {
        "1 (hybrid: cgroup2 at /sys/fs/cgroup/unified)"
    } else {
        "1"
    }
}

/// Whether the kernel accounts swap per cgroup (v1's memory.memsw.* files; v2's
/// memory.swap.max, seen in this process's own cgroup), so a swap limit can be set.
pub fn swap_accounting() -> bool {
    if cgroup_version() == "2" {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let path = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/").trim_start_matches('/');
        let dir = Path::new("/sys/fs/cgroup").join(path);
        // The root cgroup has no memory.swap.max: look at a child of it then.
        dir.join("memory.swap.max").exists() || Path::new("/sys/fs/cgroup/init.scope/memory.swap.max").exists()
    } else {
        Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
    }
}

/// Creates the containers' parent cgroup in the v1 cpuset hierarchy with the CPUs and memory
/// nodes of its own parent: a new cpuset cgroup starts empty, and a container cgroup created
/// under an empty parent cannot take a task (ENOSPC). Done once, before runtimes race to it.
pub fn prepare_cgroup_parent(parent: &str) -> Result<()> {
    let base = Path::new("/sys/fs/cgroup/cpuset");
    if !base.join("cpuset.cpus").exists() {
        return Ok(());
    }
    let mut dir = base.to_path_buf();
    for comp in parent.split('/').filter(|c| !c.is_empty()) {
        let up = dir.clone();
        dir.push(comp);
        if let Err(e) = std::fs::create_dir(&dir) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                bail!(System, "cgroup parent {}: {e}", dir.display());
            }
        }
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let cur = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            if cur.trim().is_empty() {
                let v = std::fs::read_to_string(up.join(f)).unwrap_or_default();
                std::fs::write(dir.join(f), v.trim())
                    .map_err(|e| Error::msg(format!("cgroup parent {}/{f}: {e}", dir.display())))?;
            }
        }
    }
    Ok(())
}

pub const BUILTIN: [&str; 3] = ["berth-oci", "runc", "crun"];

/// Every configured and built-in handler name (built-ins whose binary is missing included).
pub fn handler_names(cfg: &EngineConfig) -> Vec<String> {
    let mut v: Vec<String> = BUILTIN.iter().map(|s| s.to_string()).collect();
    for k in cfg.runtimes.keys() {
        if !v.contains(k) {
            v.push(k.clone());
        }
    }
    v
}

/// The handler `name` (or the default one).
pub fn resolve(cfg: &EngineConfig, run_root: &Path, name: Option<&str>) -> Result<Runtime> {
    let name = name.or(cfg.default_runtime.as_deref()).unwrap_or("berth-oci");
    let (path, hide) = if let Some(r) = cfg.runtimes.get(name) {
        let p = if r.path.is_absolute() { Some(r.path.clone()) } else { search_path(&r.path.to_string_lossy()) };
        let hide = r.hide_cgroup2.unwrap_or(name == "crun" && hybrid_cgroups());
        (p, hide)
    } else {
        match name {
            "berth-oci" => (find_program("berth-oci", None), false),
            "runc" | "crun" => (search_path(name), name == "crun" && hybrid_cgroups()),
            _ => bail!(
                NotFound,
                "runtime handler {name:?} is not configured (known: {}; add [engine.runtimes.{name}] to berth.toml)",
                handler_names(cfg).join(", ")
            ),
        }
    };
    let Some(path) = path.filter(|p| p.is_file()) else {
        bail!(
            NotFound,
            "runtime handler {name:?}: its program is not installed (looked for {name} beside berth and on PATH)"
        )
    };
    Ok(Runtime { name: name.to_string(), path, hide_cgroup2: hide, root: run_root.join("runtimes").join(name) })
}

impl Runtime {
    /// `--root <state root>` and what goes before every command.
    pub fn global_args(&self) -> Vec<String> {
        vec!["--root".into(), self.root.to_string_lossy().into_owned()]
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.path);
        c.args(self.global_args());
        if self.hide_cgroup2 {
            // SAFETY: hide_cgroup2_unified is async-signal-safe (system calls on C string
            // literals, no allocation): fit for between fork and exec.
            unsafe { c.pre_exec(berth_sys::process::hide_cgroup2_unified) };
        }
        c
    }

    /// Runs a runtime command; its stderr is the error's text.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::msg(format!("runtime {} ({}): {e}", self.name, self.path.display())))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let err = err.trim();
            bail!(
                System,
                "runtime {} {}: {}",
                self.name,
                args.first().unwrap_or(&""),
                if err.is_empty() { "failed" } else { err }
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn kill(&self, id: &str, signal: i32) -> Result<()> {
        self.run(&["kill", id, &signal.to_string()]).map(|_| ())
    }

    pub fn delete_force(&self, id: &str) {
        let _ = self
            .command()
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// The container's processes (host pids), from `ps --format json`.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let out = self.run(&["ps", "--format", "json", id])?;
        serde_json::from_str::<Option<Vec<i32>>>(out.trim())
            .map(|v| v.unwrap_or_default())
            .map_err(|e| Error::msg(format!("runtime {} ps: {e}: {out}", self.name)))
    }

    /// What this runtime binary supports, asked once per binary (cached by path, size and
    /// modification time under `cache_dir`).
    pub fn features(&self, cache_dir: &Path) -> Features {
        let meta = std::fs::metadata(&self.path).ok();
        let key = format!(
            "{}:{}:{}",
            self.path.display(),
            meta.as_ref().map(|m| m.size()).unwrap_or(0),
            meta.as_ref().map(|m| m.mtime_nsec() + m.mtime() * 1_000_000_000).unwrap_or(0)
        );
        let cache = cache_dir.join(format!("{}.features.json", self.name));
        if let Ok(b) = std::fs::read(&cache) {
            if let Ok((k, f)) = serde_json::from_slice::<(String, Features)>(&b) {
                if k == key {
                    return f;
                }
            }
        }
        let run = |args: &[&str]| {
            Command::new(&self.path).args(args).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()
        };
        let version = run(&["--version"]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        let seccomp = match run(&["features"]).filter(|o| o.status.success()) {
            Some(o) => serde_json::from_slice::<serde_json::Value>(&o.stdout)
                .map(|v| v["linux"]["seccomp"]["enabled"] == true)
                .unwrap_or(false),
            // No `features` command (crun 1.8): its version line lists +SECCOMP.
            None => version.contains("+SECCOMP") || version.contains("libseccomp"),
        };
        let exec = run(&["exec", "--help"]).map(|o| o.status.success()).unwrap_or(false);
        let f = Features { seccomp, exec, version: version.lines().next().unwrap_or("").to_string() };
        let _ = std::fs::create_dir_all(cache_dir);
        let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, serde_json::to_vec(&(key, &f)).unwrap_or_default()).is_ok() {
            let _ = std::fs::rename(&tmp, &cache);
        }
        f
    }
}
