//! `berth-monitor exec-tty`: the subreaper of one `exec --tty` (see `ExecTtyArgs`). It stays
//! its caller's child (no detaching): the caller reaps it after the `exited` message.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_monitor::protocol::{ExecEvent, ExecTtyArgs};
use berth_sys::{file, socket};

use crate::runtime::{spawn, status_text, wait_for};
use crate::sys::drain_text;

/// How long a runtime that exited successfully has to have sent the pty's master.
const MASTER_TIMEOUT: Duration = Duration::from_secs(10);

fn send(sync: BorrowedFd<'_>, e: &ExecEvent, fds: &[BorrowedFd<'_>]) {
    let _ = socket::send_with_fds(sync, e.encode().as_bytes(), fds);
}

/// Runs the exec; the exit status of this helper is 0 when the process's was reported.
pub(crate) fn run(a: ExecTtyArgs) -> i32 {
    // SAFETY: the engine passed this descriptor for us to own.
    let sync = unsafe { OwnedFd::from_raw_fd(a.sync_fd) };
    // Not the runtime's to inherit.
    // SAFETY: setting a descriptor flag.
    unsafe { libc::fcntl(sync.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    match exec(&a, sync.as_fd()) {
        Ok(code) => {
            send(sync.as_fd(), &ExecEvent::Exited(code), &[]);
            0
        }
        Err(e) => {
            send(sync.as_fd(), &ExecEvent::Error(e), &[]);
            1
        }
    }
}

fn exec(a: &ExecTtyArgs, sync: BorrowedFd<'_>) -> Result<i32, String> {
    // The exec'd process is re-parented to this process when the runtime exits.
    berth_sys::process::prctl(libc::PR_SET_CHILD_SUBREAPER, 1).map_err(|e| format!("becoming a subreaper: {e}"))?;
    // The console socket and the pid file are only this process's (and the runtime's, root).
    // SAFETY: plain umask.
    unsafe { libc::umask(0o077) };
    let me = std::process::id();
    let tmp = std::env::temp_dir();
    let socket_path: PathBuf = tmp.join(format!(".berth-exec-tty-{me}.sock"));
    let pid_path: PathBuf = tmp.join(format!(".berth-exec-tty-{me}.pid"));
    let _ = std::fs::remove_file(&socket_path);
    let listener = UnixListener::bind(&socket_path).map_err(|e| format!("{}: {e}", socket_path.display()))?;
    let cleanup = || {
        let _ = std::fs::remove_file(&socket_path);
        let _ = std::fs::remove_file(&pid_path);
    };
    let r = run_runtime(a, &listener, &socket_path, &pid_path);
    cleanup();
    let (pid, master) = r?;
    send(sync, &ExecEvent::Started(pid), &[master.as_fd()]);
    drop(master);
    let status = wait_for(pid);
    if status < 0 {
        return Err(format!("waiting for process {pid}: {}", std::io::Error::last_os_error()));
    }
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        return Err(format!("process {pid}: {}", status_text(status)));
    })
}

/// The runtime's `exec --detach --tty`: the process's pid and its pty's master.
fn run_runtime(
    a: &ExecTtyArgs,
    listener: &UnixListener,
    socket_path: &std::path::Path,
    pid_path: &std::path::Path,
) -> Result<(i32, OwnedFd), String> {
    let mut argv = vec![a.runtime.clone()];
    argv.extend(a.runtime_args.iter().cloned());
    for s in ["exec", "--process", &a.process, "--detach", "--tty", "--console-socket"] {
        argv.push(s.to_string());
    }
    argv.push(socket_path.display().to_string());
    argv.push("--pid-file".into());
    argv.push(pid_path.display().to_string());
    argv.push(a.id.clone());
    let null = file::open(c"/dev/null", libc::O_RDWR | libc::O_CLOEXEC).map_err(|e| format!("/dev/null: {e}"))?;
    let (err_r, err_w) = file::pipe().map_err(|e| format!("pipe: {e}"))?;
    let child = spawn(&argv, [null.as_fd(), null.as_fd(), err_w.as_fd()], a.hide_cgroup2).map_err(|e| e.to_string())?;
    drop(err_w);
    let status = wait_for(child.pid);
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let text = drain_text(err_r.as_fd());
        let text = text.trim();
        return Err(format!(
            "runtime {} exec: {}",
            a.runtime,
            if text.is_empty() { status_text(status) } else { text.to_string() }
        ));
    }
    listener.set_nonblocking(true).map_err(|e| format!("console socket: {e}"))?;
    let deadline = Instant::now() + MASTER_TIMEOUT;
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => return Err(format!("console socket: no pty master from the runtime ({e})")),
        }
    };
    conn.set_nonblocking(false).map_err(|e| format!("console socket: {e}"))?;
    let master = match socket::recv_fd(&conn) {
        Ok(Some(m)) => m,
        Ok(None) => return Err("console socket: the runtime sent no pty master".into()),
        Err(e) => return Err(format!("console socket: {e}")),
    };
    let pid = std::fs::read_to_string(pid_path)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("the runtime wrote no pid to {}", pid_path.display()))?;
    Ok((pid, master))
}
