//! The client side of the monitor's attach socket (see berth-monitor for the protocol), and
//! `exec` through the container's runtime handler.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_sys::{process, socket};
use serde_json::Value;

use crate::error::{bail, Context, Error, Result};
use crate::{random_id, Container, Engine};

pub use berth_monitor::protocol::attach::{STDERR, STDOUT};
use berth_monitor::protocol::{attach, ATTACH_SOCKET};

pub struct AttachConn {
    fd: OwnedFd,
}

impl AttachConn {
    /// Connects to `<run_dir>/attach` (through /proc/self/fd: the run directory may be longer
    /// than a socket address allows).
    pub fn connect(run_dir: &Path) -> Result<AttachConn> {
        let dir = std::fs::File::open(run_dir).ctx(run_dir.display())?;
        let fd = socket::connect_unix_at(&dir, ATTACH_SOCKET, libc::SOCK_SEQPACKET)
            .with_ctx(|| format!("attach to {}", run_dir.join(ATTACH_SOCKET).display()))?;
        Ok(AttachConn { fd })
    }

    fn send(&self, msg: &[u8]) -> std::io::Result<()> {
        // SAFETY: sending a valid buffer.
        if unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn send_stdin(&self, data: &[u8]) -> std::io::Result<()> {
        for chunk in data.chunks(32 * 1024) {
            let mut m = Vec::with_capacity(chunk.len() + 1);
            m.push(attach::STDIN);
            m.extend_from_slice(chunk);
            self.send(&m)?;
        }
        Ok(())
    }

    pub fn close_stdin(&self) -> std::io::Result<()> {
        self.send(&[attach::CLOSE_STDIN])
    }

    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        self.send(&attach::resize(rows, cols))
    }

    /// The next chunk of output: (stream, bytes in `buf`), or None when the container is gone.
    pub fn recv(&self, buf: &mut [u8]) -> std::io::Result<Option<(u8, usize)>> {
        loop {
            // SAFETY: receiving into a valid buffer.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(None);
            }
            let n = n as usize;
            let stream = buf[0];
            buf.copy_within(1..n, 0);
            return Ok(Some((stream, n - 1)));
        }
    }

    /// Ends the connection in both directions: a `recv` blocked on it returns None.
    pub fn shutdown(&self) {
        // SAFETY: plain syscall on our socket.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }

    pub fn try_clone(&self) -> Result<AttachConn> {
        Ok(AttachConn { fd: self.fd.try_clone().ctx("attach socket")? })
    }
}

/// `exec -t` in the foreground: runtimes hand over a new pty's master only when they detach
/// (`--detach --console-socket`), so this process becomes a child subreaper (the exec'd
/// process is re-parented to it when the runtime exits), relays the master to its own stdio
/// (whether or not that is a terminal), and reaps the process for its exit status.
fn exec_with_pty(mut cmd: std::process::Command, id: &str, interactive: bool, run_dir: &Path) -> Result<i32> {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    let tag = &random_id()[..8];
    let path = std::env::temp_dir().join(format!(".berth-exec-{}-{tag}.sock", std::process::id()));
    let pid_file = run_dir.join(format!("exec-{tag}.pid"));
    let listener = UnixListener::bind(&path).ctx(path.display())?;
    listener.set_nonblocking(true).ctx("console socket")?;
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    cmd.arg("--detach").arg("--pid-file").arg(&pid_file).arg("--console-socket").arg(&path).arg(id);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().ctx("runtime exec")?;
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break Some(c),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if child.try_wait().ctx("runtime exec")?.is_some() {
                    break None;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(e).ctx("console socket"),
        }
    };
    let _ = std::fs::remove_file(&path);
    let master = match conn {
        Some(c) => match socket::recv_fd(&c) {
            Ok(Some(master)) => Some(master),
            Ok(None) => bail!(System, "exec -t: no pty master received on the console socket"),
            Err(e) => bail!(System, "exec -t: {}", Error::from_io(e).context("receiving the pty master")),
        },
        None => None,
    };
    let out = child.wait_with_output().ctx("runtime exec")?;
    let Some(master) = master.filter(|_| out.status.success()) else {
        let _ = std::fs::remove_file(&pid_file);
        bail!(System, "{}", String::from_utf8_lossy(&out.stderr).trim());
    };
    let pid: i32 = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let _ = std::fs::remove_file(&pid_file);
    // The size of our terminal (if any) onto the new pty, now and whenever it changes.
    let size = || {
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointer.
        (unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0).then_some(ws)
    };
    if let Some(ws) = size() {
        // SAFETY: TIOCSWINSZ on the pty master with a valid winsize.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        let resizer = master.try_clone().ctx("pty")?;
        std::thread::spawn(move || {
            let mut last = (ws.ws_row, ws.ws_col);
            loop {
                std::thread::sleep(std::time::Duration::from_millis(200));
                if let Some(ws) = size().filter(|ws| (ws.ws_row, ws.ws_col) != last) {
                    last = (ws.ws_row, ws.ws_col);
                    // SAFETY: as above.
                    if unsafe { libc::ioctl(resizer.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
                        return;
                    }
                }
            }
        });
    }
    let mut reader = std::fs::File::from(master);
    if interactive {
        let mut writer = reader.try_clone().ctx("pty")?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut inp = std::io::stdin().lock();
            while let Ok(n) = inp.read(&mut buf) {
                if n == 0 || writer.write_all(&buf[..n]).is_err() {
                    // End of input: the terminal's end-of-file character.
                    let _ = writer.write_all(&[4]);
                    return;
                }
            }
        });
    }
    let mut stdout = std::io::stdout();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let _ = stdout.write_all(&buf[..n]);
                let _ = stdout.flush();
            }
        }
    }
    if pid <= 0 {
        return Ok(0);
    }
    // The exec'd process was re-parented to us (subreaper).
    match process::waitpid(pid, false) {
        Ok(status) => Ok(status.map_or(0, |(_, status)| status.code())),
        Err(e) => bail!(System, "exec: waiting for process {pid}: {e}"),
    }
}

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub tty: bool,
    pub interactive: bool,
    pub detach: bool,
    pub privileged: bool,
}

impl Engine {
    /// A connection to a running container's monitor.
    pub fn attach(&self, name_or_id: &str) -> Result<AttachConn> {
        let c = self.get(name_or_id)?;
        if !c.running() {
            bail!(InvalidState, "container {} is not running", c.name);
        }
        AttachConn::connect(&self.run_dir(&c.id))
    }

    /// The process an `exec` runs: the container's own (environment, user, capabilities,
    /// confinement) with the command, terminal, environment, working directory and user asked.
    pub(crate) fn exec_process(&self, c: &Container, o: &ExecOptions) -> Result<Value> {
        let bundle = self.container_dir(&c.id);
        let spec: Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json")).ctx("config.json")?)
            .ctx("config.json")?;
        let mut process = spec["process"].clone();
        process["args"] = serde_json::json!(o.command);
        process["terminal"] = Value::Bool(o.tty);
        if o.tty {
            // The caller's terminal size from the start (the runtime sizes the new pty).
            let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
            // SAFETY: valid out-pointer.
            let (h, w) = if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
                (ws.ws_row, ws.ws_col)
            } else {
                (24, 80)
            };
            process["consoleSize"] = serde_json::json!({"height": h, "width": w});
        } else if let Some(p) = process.as_object_mut() {
            p.remove("consoleSize");
        }
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut order = Vec::new();
        for e in process["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .map(str::to_string)
            .chain(o.env.iter().cloned())
        {
            let (k, v) =
                e.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap_or((e.clone(), String::new()));
            if !env.contains_key(&k) {
                order.push(k.clone());
            }
            env.insert(k, v);
        }
        process["env"] = serde_json::json!(order.iter().map(|k| format!("{k}={}", env[k])).collect::<Vec<_>>());
        if let Some(w) = &o.workdir {
            if !w.starts_with('/') {
                bail!(InvalidInput, "exec -w {w:?}: not an absolute path");
            }
            process["cwd"] = Value::String(w.clone());
        }
        if let Some(u) = &o.user {
            let rootfs = self.store.snapshots.rootfs(&c.id);
            let (uid, gid, extra) =
                berth_image::spec::resolve_user(&rootfs, u).map_err(|e| Error::invalid(format!("exec -u: {e}")))?;
            process["user"] = serde_json::json!({"uid": uid, "gid": gid, "additionalGids": extra});
        }
        if o.privileged {
            let all = crate::spec::available_caps();
            process["capabilities"] = serde_json::json!({"bounding": all, "effective": all, "permitted": all});
        }
        Ok(process)
    }

    /// `exec`: runs a process in a running container through its runtime handler, with this
    /// process's stdio; returns its exit code (0 once started, for `detach`).
    pub fn exec(&self, name_or_id: &str, o: &ExecOptions) -> Result<i32> {
        let c = self.get(name_or_id)?;
        if !c.running() {
            bail!(InvalidState, "container {} is not running", c.name);
        }
        if o.command.is_empty() {
            bail!(InvalidInput, "exec: no command given");
        }
        let rt = self.runtime(Some(&c.runtime))?;
        let features = rt.features(&self.run_root.join("runtimes"));
        if !features.exec {
            bail!(
                Unsupported,
                "exec: the container's runtime handler {} ({}) does not implement exec yet; run the container with --runtime runc or --runtime crun to exec into it",
                rt.name,
                rt.path.display()
            );
        }
        let process = self.exec_process(&c, o)?;
        let tag = &random_id()[..12];
        let file = self.run_dir(&c.id).join(format!("exec-{tag}.json"));
        std::fs::write(&file, serde_json::to_vec(&process).unwrap_or_default()).ctx(file.display())?;
        let mut cmd = rt.command();
        // A detached process inherits the runtime's stdio and keeps it open for as long as it
        // runs: the runtime gets /dev/null (so does the process, as with docker's exec -d) and
        // reports its errors through its JSON log instead of a pipe read to the end.
        let log = self.run_dir(&c.id).join(format!("exec-{tag}.log"));
        if o.detach {
            cmd.arg("--log").arg(&log).arg("--log-format").arg("json");
        }
        cmd.arg("exec").arg("--process").arg(&file);
        if o.tty {
            cmd.arg("--tty");
        }
        if o.tty && !o.detach {
            let r = exec_with_pty(cmd, &c.id, o.interactive, &self.run_dir(&c.id));
            let _ = std::fs::remove_file(&file);
            return r.map_err(|e| e.context(format!("exec in {} (runtime {})", c.name, rt.name)));
        }
        if o.detach {
            cmd.arg("--detach");
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        } else if !o.interactive {
            cmd.stdin(Stdio::null());
        }
        cmd.arg(&c.id);
        let r = cmd.status();
        let _ = std::fs::remove_file(&file);
        let err = if o.detach { runtime_log_error(&log) } else { String::new() };
        let _ = std::fs::remove_file(&log);
        let status = r.ctx(format!("runtime {}", rt.name))?;
        if o.detach && !status.success() {
            bail!(System, "exec: runtime {}: {}", rt.name, err);
        }
        use std::os::unix::process::ExitStatusExt;
        Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }
}

/// The last error a runtime wrote to its `--log-format json` log (runc's, crun's and
/// berth-oci's lines are `{"level":"error","msg":...}`), or the log's text.
fn runtime_log_error(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let last_error = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["level"] == "error")
        .and_then(|v| v["msg"].as_str().map(str::to_string));
    last_error.unwrap_or_else(|| {
        let t = text.trim();
        if t.is_empty() {
            "failed (its log is empty)".to_string()
        } else {
            t.to_string()
        }
    })
}

/// What `exec_sync` keeps of each stream: more is cut (kubelet's own cap on probe output).
pub const EXEC_SYNC_OUTPUT_MAX: usize = 16 << 20;

/// The outcome of `exec_sync`.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

impl Engine {
    /// A running container, its runtime handler and the process (OCI JSON) that runs
    /// `command` in it, with or without a terminal: what the CRI's execs start from.
    pub(crate) fn exec_prepare(
        &self,
        name_or_id: &str,
        command: &[String],
        tty: bool,
    ) -> Result<(Container, crate::runtime::Runtime, Value)> {
        let c = self.get(name_or_id)?;
        if !c.running() {
            bail!(InvalidState, "container {} is not running", c.name);
        }
        if command.is_empty() {
            bail!(InvalidInput, "cmd: empty");
        }
        let rt = self.runtime(Some(&c.runtime))?;
        let o = ExecOptions { command: command.to_vec(), tty, ..Default::default() };
        let process = self.exec_process(&c, &o)?;
        Ok((c, rt, process))
    }

    /// Runs `command` in a running container and collects its output and exit code (CRI's
    /// ExecSync, what exec probes use). With a timeout the process is killed when it runs
    /// longer, and the error is DeadlineExceeded.
    pub fn exec_sync(&self, name_or_id: &str, command: &[String], timeout: Option<Duration>) -> Result<ExecOutput> {
        let (c, rt, process) = self.exec_prepare(name_or_id, command, false)?;
        let tag = &random_id()[..12];
        let run = self.run_dir(&c.id);
        let file = run.join(format!("exec-{tag}.json"));
        let pid_file = run.join(format!("exec-{tag}.pid"));
        std::fs::write(&file, serde_json::to_vec(&process).unwrap_or_default()).ctx(file.display())?;
        let mut cmd = rt.command();
        cmd.arg("exec").arg("--process").arg(&file).arg("--pid-file").arg(&pid_file).arg(&c.id);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let spawned = cmd.spawn();
        let cleanup = || {
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_file(&pid_file);
        };
        let mut child = match spawned {
            Ok(ch) => ch,
            Err(e) => {
                cleanup();
                return Err(Error::from_io(e).context(format!("runtime {}", rt.name)));
            }
        };
        let read = |r: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                if let Some(mut r) = r {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = r.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let room = EXEC_SYNC_OUTPUT_MAX.saturating_sub(out.len());
                        out.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
                out
            })
        };
        let stdout = read(child.stdout.take().map(|r| Box::new(r) as Box<dyn std::io::Read + Send>));
        let stderr = read(child.stderr.take().map(|r| Box::new(r) as Box<dyn std::io::Read + Send>));
        let deadline = timeout.map(|t| Instant::now() + t);
        // The runtime's end wakes the wait (its pidfd becomes readable), not a timer.
        let pidfd = berth_sys::process::pidfd_open(child.id() as i32).ok();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) => {}
                Err(e) => {
                    cleanup();
                    return Err(Error::from_io(e).context(format!("runtime {}", rt.name)));
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break None;
            }
            match &pidfd {
                Some(fd) => {
                    let left = deadline.map_or(-1, |d| {
                        d.saturating_duration_since(Instant::now()).as_millis().clamp(1, i32::MAX as u128) as i32
                    });
                    let _ = berth_sys::process::poll_readable(&[std::os::fd::AsFd::as_fd(fd)], left);
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let Some(status) = status else {
            // The exec'd process first (the runtime waits for it), then the runtime.
            if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: the process the runtime started for us, by the pid it wrote.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
            cleanup();
            let secs = timeout.unwrap_or_default().as_secs();
            bail!(DeadlineExceeded, "command {command:?} in container {} timed out after {secs}s", c.name);
        };
        cleanup();
        let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
        use std::os::unix::process::ExitStatusExt;
        let exit_code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Ok(ExecOutput { stdout, stderr, exit_code })
    }

    /// Asks the container's monitor to open its log file again at its path (CRI's
    /// ReopenContainerLog, after kubelet moved the old file away).
    pub fn reopen_log(&self, name_or_id: &str) -> Result<()> {
        let c = self.get(name_or_id)?;
        if !c.running() {
            bail!(InvalidState, "container {} is not running: its log is not open", c.name);
        }
        let conn = AttachConn::connect(&self.run_dir(&c.id))?;
        let tv = libc::timeval { tv_sec: 30, tv_usec: 0 };
        // SAFETY: setting a receive timeout on our socket.
        unsafe {
            libc::setsockopt(
                conn.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        conn.send(&[attach::REOPEN_LOG]).ctx("asking the monitor to reopen the log")?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match conn.recv(&mut buf).ctx("waiting for the monitor to reopen the log")? {
                Some((attach::LOG_REOPENED, 0)) => return Ok(()),
                Some((attach::LOG_REOPENED, n)) => bail!(System, "{}", String::from_utf8_lossy(&buf[..n])),
                Some(_) => {}
                None => bail!(InvalidState, "container {} exited before its log was reopened", c.name),
            }
        }
    }
}
