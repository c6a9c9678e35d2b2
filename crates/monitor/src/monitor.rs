//! One container's monitor, from the runtime's `create` to the exit command: the runtime's
//! create (with pipes, or a terminal whose master arrives on a console socket), the engine's
//! `start`, the relay, then the exit record, the runtime's `delete` and the exit command.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use berth_monitor::protocol::{self, ExitRecord, MonitorArgs, ToEngine};
use berth_sys::{file, process, signal, socket, Error, Result};

use crate::log::LogWriter;
use crate::oom::{oom_counter_path, oom_kills};
use crate::runtime::{runtime_error, spawn, status_text, wait_for};
use crate::sys::{drain_text, read_line, send};
use crate::{crash_point, FORWARDED};

pub(crate) struct Client {
    pub(crate) fd: OwnedFd,
}

/// Where the container's stdin goes.
pub(crate) enum Input {
    None,
    /// A pipe's write end.
    Pipe(OwnedFd),
    /// The pty master (`out`), while it is open.
    Terminal,
}

pub(crate) struct Monitor {
    pub(crate) a: MonitorArgs,
    pub(crate) sfd: OwnedFd,
    /// The attach socket; None once the container is gone.
    pub(crate) listener: Option<OwnedFd>,
    /// stdout (or the pty master) and stderr, ours to read; None once closed
    pub(crate) out: Option<OwnedFd>,
    pub(crate) err: Option<OwnedFd>,
    /// the container's stdin, ours to write
    pub(crate) input: Input,
    pub(crate) pending_input: Vec<u8>,
    pub(crate) close_input_after: bool,
    pub(crate) clients: Vec<Client>,
    pub(crate) log: LogWriter,
    pub(crate) ctr_pid: i32,
    pub(crate) exit_status: Option<i32>,
}

/// A pipe, or the error as the monitor reports it.
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    file::pipe().map_err(|e| Error::from_io(e).context("pipe"))
}

impl Monitor {
    /// Where the container's stdin goes now (None: nowhere, or the pty closed).
    pub(crate) fn input_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.input {
            Input::None => None,
            Input::Pipe(fd) => Some(fd.as_fd()),
            Input::Terminal => self.out.as_ref().map(|fd| fd.as_fd()),
        }
    }

    pub(crate) fn run(a: MonitorArgs) -> Result<()> {
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        // Our own stdio goes nowhere: the engine that started us may be gone any moment.
        let devnull = file::open("/dev/null", libc::O_RDWR).map_err(|e| Error::from_io(e).context("/dev/null"))?;
        for fd in 0..3 {
            if fd != a.sync_fd {
                // SAFETY: dup2 onto a stdio number.
                unsafe { libc::dup2(devnull.as_raw_fd(), fd) };
            }
        }
        // The sync socket is ours alone: a runtime (and the container's init it leaves waiting
        // for `start`) that inherited it would keep the engine from seeing us die.
        unsafe { libc::fcntl(a.sync_fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        let signals: Vec<i32> = FORWARDED.iter().copied().chain([libc::SIGCHLD]).collect();
        let _ = signal::block_signals(&signals);
        let sfd = signal::signalfd(&signals).map_err(|e| Error::from_io(e).context("signalfd"))?;
        let _ = file::set_nonblocking(&sfd, true);
        send(a.sync_fd, &ToEngine::Monitor(process::getpid()));

        let dirfd = file::open(&a.dir, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| Error::from_io(e).context(a.dir.as_str()))?;
        let listener = socket::listen_unix_at(&dirfd, protocol::ATTACH_SOCKET, libc::SOCK_SEQPACKET)
            .map_err(|e| Error::from_io(e).context(format!("bind {}", protocol::ATTACH_SOCKET)))?;
        let log = LogWriter::open(&a.log, a.log_max, a.log_line_max)
            .map_err(|e| Error::from_io(e).context(format!("log {}", a.log)))?;

        let runtime_log = format!("{}/{}", a.dir, protocol::RUNTIME_LOG);
        let pid_file = format!("{}/{}", a.dir, protocol::PID_FILE);
        let mut argv = vec![a.runtime.clone()];
        argv.extend(a.runtime_args.iter().cloned());
        argv.extend(["--log".into(), runtime_log.clone(), "--log-format".into(), "json".into()]);
        let global = argv.clone();
        argv.extend(["create".into(), "--bundle".into(), a.bundle.clone(), "--pid-file".into(), pid_file.clone()]);

        let (out, err, input);
        let child;
        if a.terminal {
            // The runtime connects by path, which must fit a socket address: a short one in
            // /tmp (the run directory may be long), removed once the master is received.
            let console_path = format!("/tmp/.berth-console-{}.sock", process::getpid());
            let tmp =
                file::open("/tmp", libc::O_PATH | libc::O_DIRECTORY).map_err(|e| Error::from_io(e).context("/tmp"))?;
            let console = socket::listen_unix_at(&tmp, &console_path[5..], libc::SOCK_STREAM)
                .map_err(|e| Error::from_io(e).context(format!("bind {}", &console_path[5..])))?;
            drop(tmp);
            argv.extend(["--console-socket".into(), console_path.clone()]);
            argv.push(a.id.clone());
            let (err_r, err_w) = pipe()?;
            child = spawn(&argv, [devnull.as_fd(), err_w.as_fd(), err_w.as_fd()], a.hide_cgroup2)?;
            drop(err_w);
            // Wait for the runtime to connect (or to fail first).
            let conn = loop {
                if let Ok(c) = socket::accept(&console) {
                    break c;
                }
                let mut st = 0;
                // SAFETY: a status out-pointer; the runtime is our child.
                if unsafe { libc::waitpid(child.pid, &mut st, libc::WNOHANG) } == child.pid {
                    let _ = std::fs::remove_file(&console_path);
                    let msg = runtime_error(&runtime_log).unwrap_or_else(|| drain_text(err_r.as_fd()));
                    return Err(Error::msg(format!("runtime create: {} ({})", msg.trim(), status_text(st))));
                }
                let _ = process::poll_readable(&[console.as_fd()], 50);
            };
            let master = match socket::recv_fd(&conn) {
                Ok(Some(master)) => master,
                Ok(None) => return Err(Error::msg("the runtime sent no pty master on the console socket")),
                Err(e) => return Err(Error::from_io(e).context("receiving the pty master")),
            };
            drop(conn);
            drop(console);
            let _ = std::fs::remove_file(&console_path);
            let st = wait_for(child.pid);
            if st != 0 {
                let msg = runtime_error(&runtime_log).unwrap_or_else(|| drain_text(err_r.as_fd()));
                return Err(Error::msg(format!("runtime create: {} ({})", msg.trim(), status_text(st))));
            }
            drop(err_r);
            let _ = file::set_nonblocking(&master, true);
            out = Some(master);
            err = None;
            input = Input::Terminal;
        } else {
            argv.push(a.id.clone());
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let (in_r, in_w) = if a.stdin { pipe().map(|(r, w)| (Some(r), Some(w)))? } else { (None, None) };
            let stdin = in_r.as_ref().map_or(devnull.as_fd(), |r| r.as_fd());
            child = spawn(&argv, [stdin, out_w.as_fd(), err_w.as_fd()], a.hide_cgroup2)?;
            drop((out_w, err_w, in_r));
            let _ = file::set_nonblocking(&out_r, true);
            let _ = file::set_nonblocking(&err_r, true);
            let st = wait_for(child.pid);
            if st != 0 {
                let msg = runtime_error(&runtime_log).unwrap_or_else(|| drain_text(err_r.as_fd()));
                return Err(Error::msg(format!("runtime create: {} ({})", msg.trim(), status_text(st))));
            }
            if let Some(w) = &in_w {
                let _ = file::set_nonblocking(w, true);
            }
            out = Some(out_r);
            err = Some(err_r);
            input = in_w.map_or(Input::None, Input::Pipe);
        }
        let ctr_pid: i32 = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| Error::msg(format!("runtime create wrote no pid to {pid_file}")))?;
        let oom_path = oom_counter_path(ctr_pid);
        let oom_before = oom_kills(&oom_path);
        send(a.sync_fd, &ToEngine::Created(ctr_pid));
        crash_point("monitor-created");

        let mut m = Monitor {
            a,
            sfd,
            listener: Some(listener),
            out,
            err,
            input,
            pending_input: Vec::new(),
            close_input_after: false,
            clients: Vec::new(),
            log,
            ctr_pid,
            exit_status: None,
        };
        // The engine says when to start (after attaching, for `run -it`).
        let null = devnull.as_fd();
        let go = read_line(m.a.sync_fd);
        if go.as_deref() != Some(protocol::START) {
            m.abort(&global, null);
            return Err(Error::msg("the engine went away before starting the container"));
        }
        m.early_clients();
        let mut start = global.clone();
        start.extend(["start".into(), m.a.id.clone()]);
        let child = spawn(&start, [null, null, null], m.a.hide_cgroup2)?;
        let st = wait_for(child.pid);
        if st != 0 {
            let msg = runtime_error(&runtime_log).unwrap_or_default();
            m.abort(&global, null);
            return Err(Error::msg(format!("runtime start: {} ({})", msg.trim(), status_text(st))));
        }
        let started_at = berth_time::now_rfc3339();
        send(m.a.sync_fd, &ToEngine::Started);
        // SAFETY: the engine's descriptor, not used again.
        unsafe { libc::close(m.a.sync_fd) };
        m.a.sync_fd = -1;

        m.relay();

        // No status means the container's exit was never reaped: its code is unknown.
        let (exit_code, signal) = match m.exit_status {
            Some(st) if libc::WIFEXITED(st) => (libc::WEXITSTATUS(st), 0),
            Some(st) if libc::WIFSIGNALED(st) => (128 + libc::WTERMSIG(st), libc::WTERMSIG(st)),
            _ => (protocol::EXIT_UNKNOWN, 0),
        };
        crash_point("monitor-exit");
        let exit = ExitRecord {
            exit_code,
            signal,
            oom_killed: oom_kills(&oom_path) > oom_before,
            pid: m.ctr_pid,
            started_at,
            finished_at: berth_time::now_rfc3339(),
        };
        let tmp = format!("{}/{}.tmp", m.a.dir, protocol::EXIT_FILE);
        if std::fs::write(&tmp, exit.to_json()).is_ok() {
            let _ = std::fs::rename(&tmp, format!("{}/{}", m.a.dir, protocol::EXIT_FILE));
        }
        m.clients.clear();
        m.listener = None;
        let _ = std::fs::remove_file(format!("{}/{}", m.a.dir, protocol::ATTACH_SOCKET));
        let mut delete = global.clone();
        delete.extend(["delete".into(), "--force".into(), m.a.id.clone()]);
        if let Ok(c) = spawn(&delete, [null, null, null], m.a.hide_cgroup2) {
            wait_for(c.pid);
        }
        if let Some(cmd) = m.a.exit_command.clone() {
            let mut argv = vec![cmd];
            argv.extend(m.a.exit_args.iter().cloned());
            if let Ok(c) = spawn(&argv, [null, null, null], false) {
                wait_for(c.pid);
            }
        }
        Ok(())
    }

    /// The created container will not start: kill and delete it.
    pub(crate) fn abort(&mut self, global: &[String], null: BorrowedFd<'_>) {
        let _ = process::kill(self.ctr_pid, libc::SIGKILL);
        let mut delete = global.to_vec();
        delete.extend(["delete".into(), "--force".into(), self.a.id.clone()]);
        if let Ok(c) = spawn(&delete, [null, null, null], self.a.hide_cgroup2) {
            wait_for(c.pid);
        }
        self.reap();
    }
}
