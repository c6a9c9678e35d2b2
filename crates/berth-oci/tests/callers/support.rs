//! The harness: a suite directory, a reaper (the harness is the subreaper of conmon, the shims
//! and every container they leave behind), command helpers with output in files, terminals,
//! and the checks that a container left nothing behind.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct Suite {
    pub dir: PathBuf,
    /// Every container's cgroup lives under /<cgroup_prefix>/ in each hierarchy (podman's
    /// --cgroup-parent, ctr's --cgroup).
    pub cgroup_prefix: String,
    /// berth-oci, as built for this test.
    pub bin: PathBuf,
    /// Test-unique names start with this.
    pub tag: String,
}

static SUITE: OnceLock<Suite> = OnceLock::new();

pub fn suite() -> &'static Suite {
    SUITE.get().expect("suite initialised in main")
}

/// The runtime's default state root, which podman uses (inside our private /run).
pub const PODMAN_RUNTIME_ROOT: &str = "/run/berth-oci";

pub fn init() {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("berth-callers-test-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let suite = Suite {
        dir,
        cgroup_prefix: format!("berth-callers-{pid}"),
        bin: PathBuf::from(env!("CARGO_BIN_EXE_berth-oci")),
        tag: format!("bt{pid}"),
    };
    SUITE.set(suite).ok().expect("init once");
}

/// Makes the suite the subreaper of what it starts, with a thread that reaps them: conmon
/// double-forks and the shims daemonize.
pub fn start_reaper() {
    berth_testkit::children::become_subreaper(&suite().dir);
}

/// A name unique to this suite run and test.
pub fn unique(name: &str) -> String {
    format!("{}-{name}", suite().tag)
}

// ------------------------------------------------------------------------------------- commands

pub use berth_testkit::children::{Output, Spawned};
pub use berth_testkit::host::{hierarchies, processes_in_cgroups};
pub use berth_testkit::leaks::{mounts_containing, processes_mentioning};

pub fn spawn(cmd: &mut Command, stdin: Option<Vec<u8>>) -> Spawned {
    berth_testkit::children::spawn(cmd, stdin)
}

/// Spawns with stdin a pipe whose writing end the caller holds (input that must wait for
/// something, and its end, which comes when the caller drops it).
pub fn spawn_with_stdin_pipe(cmd: &mut Command) -> (Spawned, ChildStdin) {
    berth_testkit::children::spawn_with_stdin_pipe(cmd)
}

/// Writes `data` and closes the pipe.
pub fn write_and_close(mut input: ChildStdin, data: &[u8]) {
    let _ = input.write_all(data);
}

pub fn run(cmd: &mut Command) -> Output {
    spawn(cmd, None).wait(Duration::from_secs(120))
}

pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    spawn(cmd, Some(stdin.to_vec())).wait(Duration::from_secs(120))
}

/// berth-oci itself, with a state root.
pub fn berth_oci(root: &Path, args: &[&str]) -> Output {
    run(Command::new(&suite().bin).arg("--root").arg(root).args(args))
}

/// `berth-oci state`: the status and pid berth-oci records for a container.
pub fn runtime_state(root: &Path, id: &str) -> Option<(String, i64)> {
    let out = berth_oci(root, &["state", id]);
    if out.code != 0 {
        return None;
    }
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("state: {e}: {}", out.stdout));
    Some((v["status"].as_str().unwrap_or_default().to_string(), v["pid"].as_i64().unwrap_or(0)))
}

// ------------------------------------------------------------------------------------- terminals

/// A command whose stdin, stdout and stderr are the slave of a pty we hold the master of, in a
/// session of its own with the pty as its controlling terminal: what a person at a terminal
/// gives `podman run -it` or `ctr run -t`.
pub struct Terminal {
    master: OwnedFd,
    output: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    child: Option<Spawned>,
}

fn winsize(rows: u16, cols: u16) -> libc::winsize {
    libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 }
}

impl Terminal {
    pub fn spawn(cmd: Command, rows: u16, cols: u16) -> Terminal {
        let (child, master) = berth_testkit::children::spawn_on_pty(cmd, rows, cols);
        let master = OwnedFd::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let fd = master.try_clone().unwrap();
            let (output, stop) = (output.clone(), stop.clone());
            std::thread::spawn(move || read_master(fd, &output, &stop))
        };
        Terminal { master, output, stop, reader: Some(reader), child: Some(child) }
    }

    pub fn write(&self, text: &str) {
        let mut f = std::fs::File::from(self.master.try_clone().unwrap());
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Changes the window size (the kernel sends SIGWINCH to the terminal's foreground group).
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ with a valid winsize.
        assert_eq!(unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) }, 0);
    }

    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output contains `text`.
    #[track_caller]
    pub fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.output().contains(text) {
            assert!(Instant::now() < deadline, "{text:?} never appeared on the terminal: {:?}", self.output());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the command to exit; its exit code and everything the terminal showed.
    pub fn wait(mut self) -> (i32, String) {
        let out = self.child.take().unwrap().wait(Duration::from_secs(120));
        // Output written just before the exit is still in the pty: read until the slave's last
        // holder is gone (EIO) or nothing came for a while.
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (out.code, self.output())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(child) = self.child.take() {
            // A failed test: the command must not outlive it.
            // SAFETY: our own child, by pid.
            unsafe { libc::kill(child.pid as i32, libc::SIGKILL) };
            let _ = child.wait(Duration::from_secs(30));
        }
    }
}

fn read_master(fd: OwnedFd, output: &Mutex<Vec<u8>>, stop: &AtomicBool) {
    let mut idle_after_stop = 0;
    loop {
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on our descriptor.
        let r = unsafe { libc::poll(&mut p, 1, 50) };
        if r == 0 {
            if stop.load(Ordering::SeqCst) {
                idle_after_stop += 1;
                if idle_after_stop > 20 {
                    return;
                }
            }
            continue;
        }
        let mut buf = [0u8; 4096];
        // SAFETY: reading into our buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return; // EIO: no process holds the slave any more
        }
        output.lock().unwrap().extend_from_slice(&buf[..n as usize]);
    }
}

// ------------------------------------------------------------------------------------- leaks

/// The cgroup directories named `name` directly under the suite's prefix, in any hierarchy.
pub fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    hierarchies()
        .iter()
        .map(|h| Path::new("/sys/fs/cgroup").join(h).join(&suite().cgroup_prefix).join(name))
        .filter(|d| d.exists())
        .collect()
}

/// Waits until `cond` holds (things the callers do after the command returned: podman's
/// cleanup process, a shim's exit).
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not so after 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that nothing of container `id` remains: berth-oci state under `runtime_root`, its
/// cgroup `cgroup_name` under the suite's prefix, processes in it, and mounts naming the id.
#[track_caller]
pub fn assert_container_gone(runtime_root: &Path, id: &str, cgroup_name: &str) {
    let state = runtime_root.join(id);
    eventually(&format!("berth-oci state {} removed", state.display()), || !state.exists());
    eventually(&format!("cgroups of {id} removed"), || cgroup_dirs(cgroup_name).is_empty());
    let procs = processes_in_cgroups(cgroup_name);
    assert!(procs.is_empty(), "processes of {id} remain: {procs:?}");
    let mounts = mounts_containing(id);
    assert!(mounts.is_empty(), "mounts of {id} remain: {mounts:?}");
}

#[track_caller]
pub fn assert_contains(haystack: &str, needle: &str) {
    assert!(haystack.contains(needle), "expected {needle:?} in:\n{haystack}");
}
