//! `exec` with the caller holding the process's streams (berthd's streaming server relays
//! them to kubelet and crictl): pipes without a terminal, or the pty's master with one.
//!
//! Without a terminal the runtime's `exec` runs in the foreground with the pipes as its stdio
//! (they pass to the process) and exits with the process's status. With a terminal the
//! runtime must detach to hand over the pty's master, so `berth-monitor exec-tty` runs it as
//! the process's subreaper and reports its exit status (this process may have many threads
//! and its own children to reap: it is no subreaper itself).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use berth_monitor::protocol::{ExecEvent, ExecTtyArgs};
use berth_sys::socket;

use crate::error::{bail, Context, Error, Result};
use crate::{random_id, Engine};

/// Which of the process's streams the caller wants (the others are /dev/null).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecStdio {
    pub stdin: bool,
    pub stdout: bool,
    /// ignored with a terminal (it has one output)
    pub stderr: bool,
    pub tty: bool,
}

/// A running exec's streams and its end.
pub struct ExecProcess {
    pub stdin: Option<ExecInput>,
    /// the process's stdout, or the terminal's output
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    pub terminal: Option<Terminal>,
    pub exit: ExecExit,
}

/// The process's input.
pub struct ExecInput {
    file: File,
    tty: bool,
}

impl ExecInput {
    pub fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all(data)
    }

    /// The end of input: a pipe is closed; a terminal gets its end-of-file character (the
    /// master stays open: closing it would hang the terminal up).
    pub fn close(mut self) {
        if self.tty {
            let _ = self.file.write_all(&[4]);
        }
    }
}

/// The terminal of an exec with a tty: its size follows the client's.
pub struct Terminal {
    master: OwnedFd,
}

impl Terminal {
    pub fn resize(&self, width: u16, height: u16) -> std::io::Result<()> {
        let ws = libc::winsize { ws_row: height, ws_col: width, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ on our pty master with a valid winsize.
        if unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// How the exec ends.
pub struct ExecExit {
    how: Waiter,
    files: Vec<PathBuf>,
    container: String,
}

enum Waiter {
    /// the runtime in the foreground: its exit status is the process's
    Runtime { child: Child, pid_file: PathBuf },
    /// `berth-monitor exec-tty` and its end of the socket pair
    Helper { child: Child, events: OwnedFd, pid: i32 },
}

impl ExecExit {
    /// Waits for the process to end: its exit code (128 + the signal that killed it).
    pub fn wait(mut self) -> Result<i32> {
        use std::os::unix::process::ExitStatusExt;
        let r = match &mut self.how {
            Waiter::Runtime { child, .. } => {
                let status = child.wait().ctx("exec: waiting for the runtime")?;
                Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
            }
            Waiter::Helper { child, events, .. } => {
                let r = match next_event(events) {
                    Ok(ExecEvent::Exited(code)) => Ok(code),
                    Ok(ExecEvent::Error(e)) => Err(Error::msg(format!("exec: {e}"))),
                    Ok(ExecEvent::Started(_)) => Err(Error::msg("exec: berth-monitor exec-tty said started twice")),
                    Err(e) => Err(e),
                };
                let _ = child.wait();
                r
            }
        };
        r.map_err(|e| e.context(format!("exec in container {}", self.container)))
    }

    /// What ends the process early (its client went away), usable from another thread.
    pub fn killer(&self) -> ExecKiller {
        match &self.how {
            Waiter::Runtime { pid_file, .. } => ExecKiller { pid_file: Some(pid_file.clone()), pid: 0 },
            Waiter::Helper { pid, .. } => ExecKiller { pid_file: None, pid: *pid },
        }
    }
}

/// Ends an exec's process: SIGKILL. Only before its `wait` returned (the process is still
/// unreaped, so the pid is still its own).
#[derive(Debug, Clone)]
pub struct ExecKiller {
    pid_file: Option<PathBuf>,
    pid: i32,
}

impl ExecKiller {
    pub fn kill(&self) {
        let pid = match &self.pid_file {
            Some(f) => std::fs::read_to_string(f).ok().and_then(|p| p.trim().parse::<i32>().ok()).unwrap_or(0),
            None => self.pid,
        };
        if pid > 0 {
            let _ = berth_sys::process::kill(pid, libc::SIGKILL);
        }
    }
}

impl Drop for ExecExit {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// The helper's next message (up to one descriptor with it).
fn next_event(events: &OwnedFd) -> Result<ExecEvent> {
    let (e, _) = next_event_with_fd(events)?;
    Ok(e)
}

fn next_event_with_fd(events: &OwnedFd) -> Result<(ExecEvent, Option<OwnedFd>)> {
    let mut buf = [0u8; 4096];
    let (n, mut fds) = socket::recv_with_fds(events, &mut buf).ctx("exec: berth-monitor exec-tty")?;
    if n == 0 {
        bail!(System, "exec: berth-monitor exec-tty exited without a word");
    }
    let text = String::from_utf8_lossy(&buf[..n]);
    let e = ExecEvent::parse(&text)
        .ok_or_else(|| Error::msg(format!("exec: berth-monitor exec-tty said {text:?}, which means nothing")))?;
    Ok((e, fds.pop()))
}

fn devnull_or_piped(wanted: bool) -> Stdio {
    if wanted {
        Stdio::piped()
    } else {
        Stdio::null()
    }
}

impl Engine {
    /// Starts `command` in a running container with the streams the caller relays. `size` is
    /// a terminal's first width and height.
    pub fn exec_streams(
        &self,
        name_or_id: &str,
        command: &[String],
        stdio: ExecStdio,
        size: Option<(u16, u16)>,
    ) -> Result<ExecProcess> {
        let (c, rt, mut process) = self.exec_prepare(name_or_id, command, stdio.tty)?;
        if stdio.tty {
            let (w, h) = size.unwrap_or((80, 24));
            process["consoleSize"] = serde_json::json!({"height": h, "width": w});
        }
        let tag = &random_id()[..12];
        let run = self.run_dir(&c.id);
        let file = run.join(format!("exec-{tag}.json"));
        std::fs::write(&file, serde_json::to_vec(&process).unwrap_or_default()).ctx(file.display())?;
        let mut files = vec![file.clone()];
        if !stdio.tty {
            let pid_file = run.join(format!("exec-{tag}.pid"));
            files.push(pid_file.clone());
            let mut cmd = rt.command();
            cmd.arg("exec").arg("--process").arg(&file).arg("--pid-file").arg(&pid_file).arg(&c.id);
            cmd.stdin(devnull_or_piped(stdio.stdin))
                .stdout(devnull_or_piped(stdio.stdout))
                .stderr(devnull_or_piped(stdio.stderr));
            let mut child = match cmd.spawn() {
                Ok(ch) => ch,
                Err(e) => {
                    for f in &files {
                        let _ = std::fs::remove_file(f);
                    }
                    return Err(Error::from_io(e).context(format!("runtime {}", rt.name)));
                }
            };
            let stdin = child.stdin.take().map(|s| ExecInput { file: File::from(OwnedFd::from(s)), tty: false });
            let stdout = child.stdout.take().map(|s| File::from(OwnedFd::from(s)));
            let stderr = child.stderr.take().map(|s| File::from(OwnedFd::from(s)));
            let how = Waiter::Runtime { child, pid_file };
            return Ok(ExecProcess {
                stdin,
                stdout,
                stderr,
                terminal: None,
                exit: ExecExit { how, files, container: c.name.clone() },
            });
        }
        let r = self.exec_tty_helper(&c.id, &rt, &file);
        let (child, events, pid, master) = match r {
            Ok(x) => x,
            Err(e) => {
                for f in &files {
                    let _ = std::fs::remove_file(f);
                }
                return Err(e.context(format!("exec in container {}", c.name)));
            }
        };
        let output = File::from(master.try_clone().ctx("pty")?);
        let input = File::from(master.try_clone().ctx("pty")?);
        Ok(ExecProcess {
            stdin: stdio.stdin.then_some(ExecInput { file: input, tty: true }),
            stdout: Some(output),
            stderr: None,
            terminal: Some(Terminal { master }),
            exit: ExecExit { how: Waiter::Helper { child, events, pid }, files, container: c.name.clone() },
        })
    }

    /// Runs `berth-monitor exec-tty` for the process in `process_file`: the helper, its end
    /// of the socket pair, the process's pid and the pty's master.
    fn exec_tty_helper(
        &self,
        id: &str,
        rt: &crate::runtime::Runtime,
        process_file: &std::path::Path,
    ) -> Result<(Child, OwnedFd, i32, OwnedFd)> {
        let monitor = self.monitor_path()?;
        let (ours, theirs) = socket::socketpair_seqpacket().ctx("socketpair")?;
        let fd = theirs.as_raw_fd();
        let args = ExecTtyArgs {
            id: id.to_string(),
            runtime: rt.path.to_string_lossy().into_owned(),
            runtime_args: rt.global_args(),
            hide_cgroup2: rt.hide_cgroup2,
            process: process_file.to_string_lossy().into_owned(),
            sync_fd: fd,
        };
        let mut cmd = Command::new(&monitor);
        cmd.args(args.to_args()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // SAFETY: clearing FD_CLOEXEC on the helper's end of the pair, in the child.
        unsafe {
            cmd.pre_exec(move || {
                let fl = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| Error::msg(format!("{}: {e}", monitor.display())))?;
        drop(theirs);
        match next_event_with_fd(&ours) {
            Ok((ExecEvent::Started(pid), Some(master))) => Ok((child, ours, pid, master)),
            Ok((ExecEvent::Error(e), _)) => {
                let _ = child.wait();
                bail!(System, "{e}")
            }
            Ok((other, _)) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(System, "berth-monitor exec-tty said {other:?} before it started the process")
            }
            Err(e) => {
                let mut text = String::new();
                if let Some(mut err) = child.stderr.take() {
                    use std::io::Read;
                    let _ = err.read_to_string(&mut text);
                }
                let _ = child.wait();
                Err(if text.trim().is_empty() { e } else { Error::msg(text.trim().to_string()) })
            }
        }
    }
}
