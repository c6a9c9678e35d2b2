//! Shared by berthd's integration tests: berthd started as a child on a socket in a temp
//! directory (stopped and reaped by pid whatever happens to the test), crictl found as the
//! project's tests find it, and a tonic channel over the Unix socket.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long berthd may take to say it serves before a test gives up (a failure, not a timing
/// assertion: it normally takes milliseconds).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long berthd may take to exit after SIGTERM/SIGINT before the test fails.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// crictl from `$CRICTL`, else `../shared/bin/crictl` beside the workspace. `None` (after a
/// loud message) when it is absent; under CI (`CI=true`) its absence fails the test instead.
pub fn crictl() -> Option<PathBuf> {
    let path = std::env::var_os("CRICTL")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| berth_testkit::workspace_root().join("../shared/bin/crictl"));
    if path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "crictl not found at {} (set CRICTL to a crictl 1.36 binary): the test against the real CRI client did not run",
        path.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    // Straight to the process's stderr: the test harness captures eprintln! of passing tests.
    let _ = writeln!(std::io::stderr(), "\n!!!!!!!!!! SKIPPED !!!!!!!!!!\n!!! {msg}\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
    None
}

/// A berthd child process. Dropping it kills (SIGKILL) and reaps it if it still runs.
pub struct Berthd {
    child: Option<Child>,
    pub socket: PathBuf,
    /// Everything berthd wrote to stderr so far.
    stderr: Arc<Mutex<String>>,
}

pub fn berthd_command(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berthd"));
    // Nothing of the host's store or configuration: a store root in the temp directory.
    c.env_remove("BERTH_ROOT").env_remove("BERTH_CONFIG").arg("--root").arg(dir.join("root"));
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

impl Berthd {
    /// Starts berthd on `<dir>/berthd.sock` and waits until it says it serves.
    pub fn start(dir: &Path) -> Berthd {
        let socket = dir.join("berthd.sock");
        let mut c = berthd_command(dir);
        c.arg("--listen").arg(format!("unix://{}", socket.display()));
        Berthd::spawn(c, socket)
    }

    /// Starts berthd with the command `c` (which must make it serve on `socket`) and waits until
    /// it says it serves.
    pub fn spawn(mut c: Command, socket: PathBuf) -> Berthd {
        let mut child = c.spawn().expect("spawn berthd");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("berthd's stderr is piped");
        let buf = stderr.clone();
        // Drains berthd's stderr until it closes (berthd exited), so berthd never blocks on it.
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                buf.lock().unwrap().push_str(&format!("{line}\n"));
                if line.contains("berthd: serving CRI v1") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let mut d = Berthd { child: Some(child), socket, stderr };
        if ready_rx.recv_timeout(START_TIMEOUT).is_err() {
            let status = d.kill();
            panic!("berthd did not start serving ({status:?}); its stderr:\n{}", d.stderr());
        }
        d
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("berthd runs").id() as i32
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether the process still runs (not yet exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends `signal` and waits for berthd to exit; returns its status and its whole stderr.
    pub fn stop(mut self, signal: i32) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("berthd runs");
        // SAFETY: kill(2) on the pid of our own unreaped child (it cannot have been reused).
        unsafe { libc::kill(child.id() as i32, signal) };
        let mut status = None;
        if !berth_testkit::check::poll_until(STOP_TIMEOUT, || {
            status = child.try_wait().expect("wait for berthd");
            status.is_some()
        }) {
            // SAFETY: as above.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            panic!("berthd did not exit within {STOP_TIMEOUT:?} of signal {signal}; its stderr:\n{}", self.stderr());
        }
        let status = status.unwrap();
        // The drain thread ends with the pipe; let it take the last lines.
        std::thread::sleep(Duration::from_millis(50));
        (status, self.stderr())
    }

    fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: as in stop.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().ok()
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tonic channel to the Unix socket at `path`.
pub async fn channel(path: &Path) -> tonic::transport::Channel {
    let path = path.to_path_buf();
    tonic::transport::Endpoint::from_static("http://berthd.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .expect("connect to berthd's socket")
}
