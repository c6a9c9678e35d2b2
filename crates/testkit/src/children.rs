//! Processes the integration suites start, as their subreaper.
//!
//! The suites spawn runtimes that leave containers (and monitors, shims, conmon) behind, which
//! are re-parented to the suite: one reaper thread waits for every child, and a test gets its
//! own command's status from it. stdout and stderr go to files in the suite's directory, not
//! pipes: a container or monitor inherits them and may keep them open long after the command
//! exits.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::check::{poll_until, wait_until};

/// Held while spawning (and while creating descriptors that must not leak into children), so
/// the reaper cannot reap a new child before its pid is registered.
pub static SPAWN_LOCK: Mutex<()> = Mutex::new(());
static REAPED: Mutex<Option<HashMap<u32, ExitStatus>>> = Mutex::new(None);
static REAPED_CV: Condvar = Condvar::new();
static OUTPUT_SEQ: AtomicU64 = AtomicU64::new(0);
static OUTPUT_DIR: OnceLock<PathBuf> = OnceLock::new();

/// How long `run` lets a command take before it kills it and fails the test.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Makes this process the subreaper of everything it starts, and starts the reaper thread;
/// the output of what it spawns goes to files in `dir` (the suite's directory). Once per
/// process.
pub fn become_subreaper(dir: &Path) {
    OUTPUT_DIR.set(dir.to_path_buf()).expect("become_subreaper once per process");
    // SAFETY: plain prctl.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0, "PR_SET_CHILD_SUBREAPER");
    std::thread::spawn(reaper);
}

fn reaper() {
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with WNOWAIT only reports which child is waitable.
        if unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) } != 0 {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let pid = unsafe { info.si_pid() };
        let _g = SPAWN_LOCK.lock().unwrap();
        let mut status = 0;
        // SAFETY: reaping the child waitid reported.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            let mut map = REAPED.lock().unwrap();
            map.get_or_insert_with(HashMap::new).insert(pid as u32, ExitStatus::from_raw(status));
            REAPED_CV.notify_all();
        }
    }
}

fn wait_reaped(pid: u32, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut map = REAPED.lock().unwrap();
    loop {
        if let Some(s) = map.get_or_insert_with(HashMap::new).remove(&pid) {
            return Some(s);
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        map = REAPED_CV.wait_timeout(map, left).unwrap().0;
    }
}

fn has_exited(pid: u32) -> bool {
    REAPED.lock().unwrap().get_or_insert_with(HashMap::new).contains_key(&pid)
}

/// Spawns `cmd` under the spawn lock, forgetting any status of an earlier process with its pid.
fn spawn_registered(cmd: &mut Command) -> Child {
    let spawned = {
        let _g = SPAWN_LOCK.lock().unwrap();
        let spawned = cmd.spawn();
        if let Ok(child) = &spawned {
            REAPED.lock().unwrap().get_or_insert_with(HashMap::new).remove(&child.id());
        }
        spawned
    };
    // Not while holding the lock: a panic there would poison it for every other test.
    spawned.unwrap_or_else(|e| panic!("spawning {}: {e}", describe(cmd)))
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    #[track_caller]
    pub fn ok(self, what: &str) -> Output {
        assert_eq!(self.code, 0, "{what} failed: stdout: {} stderr: {}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn failed(self, what: &str) -> Output {
        assert_ne!(self.code, 0, "{what} should have failed: stdout: {} stderr: {}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn code(self, what: &str, code: i32) -> Output {
        assert_eq!(self.code, code, "{what}: exit code; stdout: {} stderr: {}", self.stdout, self.stderr);
        self
    }

    /// stdout without surrounding whitespace.
    pub fn line(&self) -> String {
        self.stdout.trim().to_string()
    }
}

/// A spawned process whose exit the reaper reports.
pub struct Spawned {
    pub pid: u32,
    what: String,
    out_path: PathBuf,
    err_path: PathBuf,
}

fn output_files() -> (PathBuf, PathBuf, File, File) {
    let dir = OUTPUT_DIR.get().expect("children::become_subreaper first");
    let n = OUTPUT_SEQ.fetch_add(1, Ordering::Relaxed);
    let (out_path, err_path) = (dir.join(format!(".out-{n}")), dir.join(format!(".err-{n}")));
    let out = File::create(&out_path).unwrap_or_else(|e| panic!("{}: {e}", out_path.display()));
    let err = File::create(&err_path).unwrap_or_else(|e| panic!("{}: {e}", err_path.display()));
    (out_path, err_path, out, err)
}

/// Runs `cmd` to its end (at most `RUN_TIMEOUT`) with its output collected, like
/// `Command::output`, in any process: where a suite's reaper runs (`become_subreaper`), the
/// exit comes from it and the output through files; elsewhere std waits. For the harness's
/// own helper commands (busybox --list, htpasswd, skopeo). No lock is held while it runs: a
/// command may talk to servers other tests' threads run.
pub fn output(cmd: &mut Command) -> std::io::Result<std::process::Output> {
    if OUTPUT_DIR.get().is_none() {
        return cmd.output();
    }
    let (out_path, err_path, out, err) = output_files();
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // The reaper thread waits for it.
    #[allow(clippy::zombie_processes)]
    let child = {
        let _g = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let child = cmd.spawn()?;
        REAPED.lock().unwrap().get_or_insert_with(HashMap::new).remove(&child.id());
        child
    };
    let Some(status) = wait_reaped(child.id(), RUN_TIMEOUT) else {
        // SAFETY: kill(2) of our own child, which the reaper has not collected.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        return Err(std::io::Error::other(format!("`{}` ran longer than {RUN_TIMEOUT:?}", describe(cmd))));
    };
    let read = |p: &Path| std::fs::read(p).unwrap_or_default();
    let output = std::process::Output { status, stdout: read(&out_path), stderr: read(&err_path) };
    let _ = (std::fs::remove_file(&out_path), std::fs::remove_file(&err_path));
    Ok(output)
}

/// Spawns `cmd` with its output in files; `stdin`, if given, is written to it and closed.
pub fn spawn(cmd: &mut Command, stdin: Option<Vec<u8>>) -> Spawned {
    let (spawned, input) = spawn_piped(cmd, stdin.is_some());
    if let (Some(data), Some(mut input)) = (stdin, input) {
        std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
    }
    spawned
}

/// Spawns with stdin a pipe whose writing end the caller holds (input that must wait for
/// something, and its end, which comes when the caller drops it).
pub fn spawn_with_stdin_pipe(cmd: &mut Command) -> (Spawned, ChildStdin) {
    let (spawned, input) = spawn_piped(cmd, true);
    (spawned, input.expect("a piped stdin"))
}

/// Runs `cmd` to its end (at most `RUN_TIMEOUT`).
pub fn run(cmd: &mut Command) -> Output {
    spawn(cmd, None).wait(RUN_TIMEOUT)
}

/// Runs `cmd` with `input` on its stdin, to its end (at most `RUN_TIMEOUT`).
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    spawn(cmd, Some(input.to_vec())).wait(RUN_TIMEOUT)
}

fn spawn_piped(cmd: &mut Command, piped: bool) -> (Spawned, Option<ChildStdin>) {
    let (out_path, err_path, out, err) = output_files();
    cmd.stdin(if piped { Stdio::piped() } else { Stdio::null() }).stdout(out).stderr(err);
    // The reaper thread waits for every child, this one included.
    #[allow(clippy::zombie_processes)]
    let mut child = spawn_registered(cmd);
    let input = child.stdin.take();
    (Spawned { pid: child.id(), what: describe(cmd), out_path, err_path }, input)
}

/// Spawns `cmd` on a new pty of `rows` x `cols`, in a session of its own with the pty as its
/// controlling terminal (a resize signals it, as a terminal emulator's would). Returns the
/// master; the slave's only remaining copies are the command's.
pub fn spawn_on_pty(mut cmd: Command, rows: u16, cols: u16) -> (Spawned, File) {
    let (out_path, err_path, _, _) = output_files();
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    let (master, slave) = {
        // Under the spawn lock: no other test's child forks between openpty and FD_CLOEXEC.
        let _g = SPAWN_LOCK.lock().unwrap();
        let (mut m, mut s) = (-1, -1);
        // SAFETY: openpty fills two descriptors we then own.
        if unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) } != 0 {
            let e = std::io::Error::last_os_error();
            drop(_g); // a panic under the lock would poison it for every other test
            panic!("openpty: {e}");
        }
        for fd in [m, s] {
            // SAFETY: fcntl on a descriptor we own.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        // SAFETY: the descriptors openpty returned, owned from here on.
        unsafe { (File::from_raw_fd(m), File::from_raw_fd(s)) }
    };
    cmd.stdin(slave.try_clone().unwrap()).stdout(slave.try_clone().unwrap()).stderr(slave);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    #[allow(clippy::zombie_processes)]
    let child = spawn_registered(&mut cmd);
    (Spawned { pid: child.id(), what: describe(&cmd), out_path, err_path }, master)
}

impl Spawned {
    /// What the process wrote to stdout so far.
    pub fn stdout_so_far(&self) -> String {
        std::fs::read_to_string(&self.out_path).unwrap_or_default()
    }

    /// Waits until the process's stdout contains `text`.
    #[track_caller]
    pub fn wait_for_stdout(&self, text: &str) {
        let mut seen = String::new();
        let appeared = poll_until(Duration::from_secs(30), || {
            seen = self.stdout_so_far();
            seen.contains(text)
        });
        assert!(appeared, "{text:?} never appeared in: {seen}");
    }

    /// Waits until `path` exists (a container signals through a shared directory); fails
    /// with the process's output if it exits first.
    #[track_caller]
    pub fn wait_for_file(&self, path: &Path) {
        let appeared = poll_until(Duration::from_secs(60), || {
            if path.exists() {
                return true;
            }
            if has_exited(self.pid) {
                let err = std::fs::read_to_string(&self.err_path).unwrap_or_default();
                panic!("`{}` exited before {} appeared: {} {err}", self.what, path.display(), self.stdout_so_far());
            }
            false
        });
        assert!(appeared, "{} never appeared", path.display());
    }

    /// The first child of the process (e.g. the container process of `exec`).
    #[track_caller]
    pub fn first_child(&self) -> i32 {
        let mut child = None;
        wait_until(&format!("a child of process {}", self.pid), Duration::from_secs(30), || {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid)).unwrap_or_default();
            child = children.split_whitespace().next().map(|c| c.parse().unwrap());
            child.is_some()
        });
        child.unwrap()
    }

    /// Waits for the exit (killing the process after `timeout`, and failing) and collects
    /// its output.
    pub fn wait(self, timeout: Duration) -> Output {
        let Some(status) = wait_reaped(self.pid, timeout) else {
            // SAFETY: our own child, by pid.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
            let _ = wait_reaped(self.pid, Duration::from_secs(10));
            panic!("`{}` did not finish within {timeout:?}; stdout: {}", self.what, self.stdout_so_far());
        };
        let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        let stdout = std::fs::read_to_string(&self.out_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&self.err_path).unwrap_or_default();
        let _ = std::fs::remove_file(&self.out_path);
        let _ = std::fs::remove_file(&self.err_path);
        Output { code, stdout, stderr }
    }
}
