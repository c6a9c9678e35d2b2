//! berth-oci run by an unprivileged user (uid 12345, which needs no passwd entry), with the
//! user namespace `spec --rootless` sets up, as rootless podman would.

use std::ffi::CString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::support::*;

const UID: u32 = 12345;

struct Rootless {
    run: PathBuf,
    bundle: PathBuf,
    id: String,
}

impl Rootless {
    fn new(name: &str, args: &[&str]) -> Rootless {
        let dir = suite().dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let run = dir.join("run");
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::create_dir_all(&bundle).unwrap();
        for d in [&dir, &run, &bundle] {
            std::os::unix::fs::chown(d, Some(UID), Some(UID)).unwrap();
        }
        let r = Rootless { run, bundle, id: format!("t{}-{name}", std::process::id()) };
        r.oci(&["spec", "--rootless", "--bundle", r.bundle.to_str().unwrap()]).ok("spec --rootless as the user");
        let mut config: Value = serde_json::from_str(&read(r.bundle.join("config.json"))).unwrap();
        assert_eq!(config["linux"]["uidMappings"][0]["hostID"], UID, "spec --rootless maps the user's own id");
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        config["root"]["path"] = json!(suite().rootfs);
        r.write(&config);
        r
    }

    fn write(&self, config: &Value) {
        std::fs::write(self.bundle.join("config.json"), serde_json::to_vec_pretty(config).unwrap()).unwrap();
    }

    fn config(&self) -> Value {
        serde_json::from_str(&read(self.bundle.join("config.json"))).unwrap()
    }

    /// berth-oci as the user, with its own XDG_RUNTIME_DIR (so the default state root).
    fn command(&self, args: &[&str]) -> Command {
        self.command_in_cgroup(None, args)
    }

    /// The same, first moved (while still root) into the cgroup v2 directory `cgroup`.
    fn command_in_cgroup(&self, cgroup: Option<&Path>, args: &[&str]) -> Command {
        let mut cmd = Command::new(&suite().bin);
        cmd.args(args).env("XDG_RUNTIME_DIR", &self.run);
        let procs = cgroup.map(|c| CString::new(c.join("cgroup.procs").into_os_string().into_vec()).unwrap());
        // SAFETY: between fork and exec only async-signal-safe calls, on memory prepared before.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(procs) = &procs {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
                if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(UID) != 0 || libc::setuid(UID) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    fn oci(&self, args: &[&str]) -> Output {
        run(&mut self.command(args))
    }

    fn bundle_args<'a>(&'a self, cmd: &'a str) -> Vec<&'a str> {
        vec![cmd, "--bundle", self.bundle.to_str().unwrap(), &self.id]
    }
}

impl Drop for Rootless {
    fn drop(&mut self) {
        let _ = run(&mut self.command(&["delete", "--force", &self.id]));
    }
}

pub fn rootless_lifecycle() {
    let r = Rootless::new(
        "rootless",
        &["sh", "-c", "id -u; cat /proc/self/uid_map; echo x > /dev/null && echo dev-ok; sleep 1000"],
    );
    let args = r.bundle_args("create");
    r.oci(&args).ok("create as an unprivileged user");
    // The state lives under the user's runtime directory.
    assert!(r.run.join("berth-oci").join(&r.id).join("state.json").exists());
    let state: Value = serde_json::from_str(&r.oci(&["state", &r.id]).ok("state").stdout).unwrap();
    let pid = state["pid"].as_i64().unwrap();
    let status = read(format!("/proc/{pid}/status"));
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == UID.to_string()),
        "the container runs as the user on the host: {uid}"
    );
    r.oci(&["start", &r.id]).ok("start");
    let out = r.oci(&["exec", &r.id, "sh", "-c", "id -u; readlink /proc/self/ns/user"]).ok("exec as the user");
    assert_eq!(out.stdout.lines().next(), Some("0"));
    let init_userns = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    assert_eq!(out.stdout.lines().nth(1), init_userns.to_str(), "exec joins the container's user namespace");
    let list = r.oci(&["list"]).ok("list").stdout;
    assert_contains(&list, &format!("#{UID}"));
    // Without a cgroup of its own, what needs one says so.
    assert_contains(&r.oci(&["pause", &r.id]).failed("pause without a cgroup").stderr, "delegated cgroup");
    r.oci(&["kill", &r.id, "KILL"]).ok("kill");
    r.oci(&["delete", "--force", &r.id]).ok("delete");
    assert!(!r.run.join("berth-oci").join(&r.id).exists());
    assert!(processes_in_cgroups(&r.id).is_empty());
}

pub fn rootless_limits_need_a_delegated_cgroup() {
    let r = Rootless::new("rootlesslimits", &["cat", "/sys/fs/cgroup/memory.max"]);
    let mut config = r.config();
    config["linux"]["resources"] = json!({"memory": {"limit": 32 << 20}});
    if !is_cgroup2() {
        // No delegation on cgroup v1: asking for a limit is refused, naming it.
        config["linux"]["cgroupsPath"] = json!(r.id);
        r.write(&config);
        let out = r.oci(&r.bundle_args("run")).failed("a limit without a cgroup");
        assert_contains(&out.stderr, "linux.resources.memory");
        assert_contains(&out.stderr, "delegated");
        return;
    }
    // cgroup v2: a subtree delegated to the user (owned by it, as systemd delegates), with the
    // runtime started in a leaf of it; the container's cgroup goes beside that leaf.
    let deleg = Path::new("/sys/fs/cgroup").join(&suite().cgroup_prefix).join("rootless-deleg");
    let leaf = deleg.join("runtime");
    std::fs::create_dir_all(&leaf).unwrap();
    struct RemoveOnDrop<'a>(&'a [&'a Path]);
    impl Drop for RemoveOnDrop<'_> {
        fn drop(&mut self) {
            for dir in self.0 {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
    let _cleanup = RemoveOnDrop(&[&leaf, &deleg]);
    // The administrator's part of delegation: the controllers enabled down to the subtree.
    for level in [Path::new("/sys/fs/cgroup").to_path_buf(), deleg.parent().unwrap().to_path_buf()] {
        std::fs::write(level.join("cgroup.subtree_control"), "+memory +pids").unwrap();
    }
    for f in ["", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"] {
        std::os::unix::fs::chown(deleg.join(f), Some(UID), Some(UID)).unwrap();
    }
    std::os::unix::fs::chown(leaf.join("cgroup.procs"), Some(UID), Some(UID)).unwrap();
    std::fs::set_permissions(&deleg, std::fs::Permissions::from_mode(0o755)).unwrap();
    config["linux"]["cgroupsPath"] = json!(r.id);
    r.write(&config);
    let mut cmd = r.command_in_cgroup(Some(&leaf), &r.bundle_args("run"));
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), (32u64 << 20).to_string(), "the limit applies, in the delegated cgroup");
}
