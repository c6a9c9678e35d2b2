//! The harness: a suite directory with one shared busybox rootfs, containers on it, and the
//! leak check that ends the suite. The reaper (the harness is the subreaper of every container
//! it starts), waiting, terminals and the leak check's core are berth_testkit's, shared with
//! the other suites.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use berth_testkit::Bundle;
use serde_json::Value;

pub struct Suite {
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    /// Every test container's cgroup lives under /<cgroup_prefix>/ in each hierarchy.
    pub cgroup_prefix: String,
    /// The runtime under test: berth-oci, or the one `BERTH_OCI_TEST_RUNTIME` names.
    pub bin: PathBuf,
    pub runtime: Runtime,
}

/// Which runtime the suite drives. `BERTH_OCI_TEST_RUNTIME=runc|crun|/path/to/runtime` runs
/// the suite against another runtime with runc's command line, as a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Berth,
    Runc,
    Crun,
    /// Any other runtime given by path.
    Other,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Berth => "berth-oci",
            Runtime::Runc => "runc",
            Runtime::Crun => "crun",
            Runtime::Other => "other",
        }
    }
}

/// The runtime under test is berth-oci: assertions on berth-oci's own error texts and
/// warnings apply.
pub fn is_berth() -> bool {
    suite().runtime == Runtime::Berth
}

fn runtime_under_test() -> (PathBuf, Runtime) {
    let berth = PathBuf::from(env!("CARGO_BIN_EXE_berth-oci"));
    let Some(wanted) = std::env::var_os("BERTH_OCI_TEST_RUNTIME").filter(|v| !v.is_empty()) else {
        return (berth, Runtime::Berth);
    };
    let wanted = PathBuf::from(wanted);
    let path = if wanted.components().count() == 1 {
        let found = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|d| d.join(&wanted))
            .find(|p| p.is_file());
        found.unwrap_or_else(|| panic!("BERTH_OCI_TEST_RUNTIME={}: not found in PATH", wanted.display()))
    } else {
        wanted
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let runtime = match name.as_str() {
        "berth-oci" => Runtime::Berth,
        "runc" => Runtime::Runc,
        "crun" => Runtime::Crun,
        _ => Runtime::Other,
    };
    if runtime == Runtime::Crun && has_cgroup2_mount() && !is_cgroup2() {
        eprintln!(
            "BERTH_OCI_TEST_RUNTIME=crun: Debian's crun 1.8 refuses this hybrid cgroup host; run the suite through tools/test-oci-peers.sh (a private mount namespace without the cgroup2 mount)"
        );
        std::process::exit(1);
    }
    (path, runtime)
}

static SUITE: OnceLock<Suite> = OnceLock::new();

pub fn suite() -> &'static Suite {
    SUITE.get().expect("suite initialised in main")
}

pub fn init() {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("berth-oci-test-{pid}"));
    std::fs::create_dir_all(&dir).unwrap();
    let rootfs = dir.join("rootfs");
    build_rootfs(&rootfs);
    let (bin, runtime) = runtime_under_test();
    // Containers whose runtime exits (create, run -d) are re-parented to us: we reap them.
    berth_testkit::children::become_subreaper(&dir);
    let suite = Suite { dir, rootfs, cgroup_prefix: format!("berth-test-{pid}"), bin, runtime };
    SUITE.set(suite).ok().expect("init once");
}

/// Builds a busybox rootfs.
pub fn build_rootfs(dest: &Path) {
    berth_testkit::build_busybox_rootfs(dest).expect("building the busybox rootfs (is busybox-static installed?)");
}

// ------------------------------------------------------------------------------------- processes

pub use berth_testkit::check::{assert_contains, poll_every, poll_until, wait_until};
pub use berth_testkit::children::{run, spawn, Output};
pub use berth_testkit::host::{hierarchies, is_cgroup2, is_dead, processes_in_cgroups, write_script};
pub use berth_testkit::terminal::read_until_closed;

// ------------------------------------------------------------------------------------- containers

pub struct Ctr {
    pub id: String,
    pub root: PathBuf,
    pub dir: PathBuf,
    pub bundle: Bundle,
}

fn test_dir(name: &str) -> PathBuf {
    let d = suite().dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Ctr {
    /// A container on the suite's shared (read-only) rootfs, in its own cgroup.
    pub fn new(name: &str, args: &[&str]) -> Ctr {
        let dir = test_dir(name);
        let mut bundle = Bundle::with_rootfs(&dir.join("bundle"), suite().rootfs.to_str().unwrap(), args);
        let id = format!("t{}-{name}", std::process::id());
        bundle.config["linux"]["cgroupsPath"] = Value::String(format!("/{}/{id}", suite().cgroup_prefix));
        Ctr { id, root: dir.join("state"), dir, bundle }
    }

    /// A container with a rootfs of its own, for tests that change the rootfs.
    pub fn with_own_rootfs(name: &str, args: &[&str]) -> Ctr {
        let mut c = Ctr::new(name, args);
        let rootfs = c.dir.join("rootfs");
        build_rootfs(&rootfs);
        c.bundle.config["root"]["path"] = Value::String(rootfs.to_str().unwrap().to_string());
        c.bundle.config["root"]["readonly"] = Value::Bool(false);
        c
    }

    pub fn config(&mut self) -> &mut Value {
        &mut self.bundle.config
    }

    /// config.json's linux.namespaces.
    pub fn namespaces(&mut self) -> &mut Vec<Value> {
        self.config()["linux"]["namespaces"].as_array_mut().unwrap()
    }

    /// Leaves the namespace of type `typ` out of linux.namespaces (the container shares the
    /// runtime's).
    pub fn without_namespace(&mut self, typ: &str) {
        self.namespaces().retain(|n| n["type"] != typ);
    }

    /// config.json's mounts.
    pub fn mounts(&mut self) -> &mut Vec<Value> {
        self.config()["mounts"].as_array_mut().unwrap()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.bundle.rootfs()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&suite().bin);
        cmd.arg("--root").arg(&self.root).args(args);
        cmd
    }

    pub fn oci(&self, args: &[&str]) -> Output {
        run(&mut self.command(args))
    }

    /// Writes config.json. crun 1.8 refuses runtime-spec versions newer than it knows (1.1):
    /// for it the bundle claims 1.1.0; the fields the tests use are read all the same.
    pub fn write_bundle(&self) {
        if suite().runtime == Runtime::Crun {
            let mut config = self.bundle.config.clone();
            config["ociVersion"] = Value::String("1.1.0".into());
            let b = Bundle { dir: self.bundle.dir.clone(), config };
            b.write().unwrap();
        } else {
            self.bundle.write().unwrap();
        }
    }

    pub fn create_raw(&self) -> Output {
        self.write_bundle();
        self.oci(&["create", "--bundle", self.bundle.dir.to_str().unwrap(), &self.id])
    }

    pub fn create(&self) -> i32 {
        self.create_raw().ok("create");
        self.pid()
    }

    pub fn start(&self) {
        self.oci(&["start", &self.id]).ok("start");
    }

    pub fn state(&self) -> Value {
        let out = self.oci(&["state", &self.id]).ok("state");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("state JSON: {e}: {}", out.stdout))
    }

    pub fn status(&self) -> String {
        self.state()["status"].as_str().unwrap().to_string()
    }

    pub fn pid(&self) -> i32 {
        self.state()["pid"].as_i64().unwrap() as i32
    }

    /// `run` in the foreground: the container's output and exit code.
    pub fn run(&self) -> Output {
        self.write_bundle();
        self.oci(&["run", "--bundle", self.bundle.dir.to_str().unwrap(), &self.id])
    }

    /// Runs the container and returns its stdout, asserting success.
    pub fn output(&self) -> String {
        self.run().ok("run").stdout
    }

    pub fn delete(&self) {
        self.oci(&["delete", "--force", &self.id]).ok("delete");
    }

    /// The container's cgroup directory in a v1 hierarchy (or the unified one).
    pub fn cgroup_dir(&self, hierarchy: &str) -> PathBuf {
        berth_testkit::host::cgroup_path(hierarchy, self.bundle.config["linux"]["cgroupsPath"].as_str().unwrap())
    }

    /// Waits until the status is `want` (the container acts on its own; while `run` is still
    /// creating it, `state` says so and is asked again).
    pub fn wait_status(&self, want: &str) {
        let mut s = String::new();
        let reached = poll_until(Duration::from_secs(20), || {
            let out = self.oci(&["state", &self.id]);
            s = if out.code == 0 {
                serde_json::from_str::<Value>(&out.stdout).unwrap()["status"].as_str().unwrap().to_string()
            } else {
                out.stderr.trim().to_string()
            };
            s == want
        });
        assert!(reached, "container {} stayed {s}, expected {want}", self.id);
    }

    /// Asserts nothing of this container remains: state, cgroups, processes, mounts.
    pub fn assert_gone(&self) {
        assert!(!self.root.join(&self.id).exists(), "state directory of {} remains", self.id);
        for h in hierarchies() {
            let d = self.cgroup_dir(&h);
            assert!(!d.exists(), "cgroup {} remains", d.display());
        }
        assert!(processes_in_cgroups(&self.id).is_empty(), "processes of {} remain", self.id);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(self.dir.to_str().unwrap()), "mounts of {} remain", self.id);
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = run(&mut self.command(&["delete", "--force", &self.id]));
    }
}

/// A cgroup2 hierarchy is mounted (pure v2, or hybrid's unified mount).
pub fn has_cgroup2_mount() -> bool {
    read("/proc/self/mountinfo").lines().any(|l| l.split(" - ").nth(1).is_some_and(|f| f.starts_with("cgroup2 ")))
}

/// The suite's closing check: nothing any test started or made remains on the host. The
/// shared check (processes in the suite's cgroups or naming its directory, mounts under it,
/// cgroups under its parent in every hierarchy, the tests' runtime state), and mounts made
/// elsewhere from something in its directory. The suite's cgroups are removed after (a peer
/// runtime's failed creates leave empty ones), so the host is left clean all the same.
pub fn check_leaks() -> Vec<String> {
    let s = suite();
    let state_roots = std::fs::read_dir(&s.dir).unwrap().flatten().map(|e| e.path().join("state")).collect();
    let scope = berth_testkit::leaks::Scope {
        dir: s.dir.clone(),
        cgroup: s.cgroup_prefix.clone(),
        state_roots,
        settle: Duration::from_secs(10),
        ..Default::default()
    };
    let mut leaks = berth_testkit::leaks::leaks(&scope);
    let dir = s.dir.to_str().unwrap();
    for line in read("/proc/self/mountinfo").lines().filter(|l| l.contains(dir)) {
        if !line.split(' ').nth(4).is_some_and(|point| point.contains(dir)) {
            leaks.push(format!("mount from the suite's directory: {line}"));
        }
    }
    berth_testkit::host::remove_cgroups(&s.cgroup_prefix);
    leaks
}

/// Held by the tests that give containers real-time CPU time: a container asking for a
/// real-time policy takes all its parents can spare, so two at once would starve each other.
pub static REALTIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The suite's static probe (probe.c), built once with the C compiler every Rust build has
/// (or `BERTH_OCI_TEST_PROBE`, one built already: the cgroup v2 guest has no compiler).
pub fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        if let Some(built) = std::env::var_os("BERTH_OCI_TEST_PROBE") {
            return PathBuf::from(built);
        }
        let dir = suite().dir.join("probe");
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("probe.c");
        std::fs::write(&source, include_str!("probe.c")).unwrap();
        let bin = dir.join("probe");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let out = run(Command::new(&cc).args(["-static", "-Os", "-o"]).arg(&bin).arg(&source));
        assert_eq!(out.code, 0, "building the probe with `{cc} -static` (libc6-dev's libc.a): {}", out.stderr);
        bin
    })
}

impl Ctr {
    /// Bind-mounts the probe at /probe.
    pub fn with_probe(&mut self) -> &mut Ctr {
        let probe = probe().to_path_buf();
        self.mounts().push(
            serde_json::json!({"destination": "/probe", "type": "bind", "source": probe, "options": ["bind", "ro"]}),
        );
        self
    }
}

pub fn cleanup_suite_dir() {
    let _ = std::fs::remove_dir_all(&suite().dir);
}

// ------------------------------------------------------------------------------------- helpers

pub fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

/// Listens on a Unix socket at `path` for one connection (the runtime's --console-socket, a
/// seccomp listenerPath) and receives, on a thread, its message and the descriptor it carries.
pub fn receive_fd(path: &Path) -> std::thread::JoinHandle<(Vec<u8>, std::os::fd::OwnedFd)> {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let (n, mut fds) = berth_sys::socket::recv_with_fds(&conn, &mut buf).unwrap();
        buf.truncate(n);
        (buf, fds.pop().expect("a descriptor in the message"))
    })
}

/// Waits until process `pid` has a handler for `sig` (a shell's trap is installed): sending it
/// before then would kill the process instead.
pub fn wait_for_handler(pid: i32, sig: i32) {
    wait_until(&format!("process {pid} to catch signal {sig}"), Duration::from_secs(30), || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .map(|m| u64::from_str_radix(m.trim(), 16).unwrap_or(0))
            .unwrap_or(0);
        caught & (1 << (sig - 1)) != 0
    });
}
