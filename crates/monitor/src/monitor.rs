//! One container's monitor, from the runtime's `create` to the exit command: the runtime's
//! create (with pipes, or a terminal whose master arrives on a console socket), the engine's
//! `start`, the relay, then the exit record, the runtime's `delete` and the exit command.

use berth_monitor::protocol::{self, ExitRecord, MonitorArgs, ToEngine};
use berth_sys::{Error, Result};

use crate::log::LogWriter;
use crate::oom::{oom_counter_path, oom_kills};
use crate::runtime::{runtime_error, spawn, status_text, wait_for};
use crate::sys::{close, cstring, drain_text, listen_unix, pipe, read_line, recv_fd, send, set_nonblock};
use crate::{crash_point, FORWARDED};

pub(crate) struct Client {
    pub(crate) fd: i32,
}

pub(crate) struct Monitor {
    pub(crate) a: MonitorArgs,
    pub(crate) sfd: i32,
    pub(crate) listener: i32,
    /// stdout (or the pty master) and stderr, ours to read; -1 once closed
    pub(crate) out: i32,
    pub(crate) err: i32,
    /// the container's stdin, ours to write (the pty master with a terminal); -1 if none
    pub(crate) input: i32,
    pub(crate) pending_input: Vec<u8>,
    pub(crate) close_input_after: bool,
    pub(crate) clients: Vec<Client>,
    pub(crate) log: LogWriter,
    pub(crate) ctr_pid: i32,
    pub(crate) exit_status: Option<i32>,
}

impl Monitor {
    pub(crate) fn run(a: MonitorArgs) -> Result<()> {
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        // Our own stdio goes nowhere: the engine that started us may be gone any moment.
        let devnull = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if devnull < 0 {
            return Err(Error::last_os("/dev/null"));
        }
        for fd in 0..3 {
            if fd != a.sync_fd {
                unsafe { libc::dup2(devnull, fd) };
            }
        }
        // The sync socket is ours alone: a runtime (and the container's init it leaves waiting
        // for `start`) that inherited it would keep the engine from seeing us die.
        unsafe { libc::fcntl(a.sync_fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: signal mask and signalfd setup.
        let sfd = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in FORWARDED.iter().chain([libc::SIGCHLD].iter()) {
                libc::sigaddset(&mut set, *s);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
        };
        if sfd < 0 {
            return Err(Error::last_os("signalfd"));
        }
        send(a.sync_fd, &ToEngine::Monitor(unsafe { libc::getpid() }));

        let cdir = cstring(&a.dir)?;
        let dirfd = unsafe { libc::open(cdir.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if dirfd < 0 {
            return Err(Error::last_os(&a.dir));
        }
        let listener = listen_unix(dirfd, protocol::ATTACH_SOCKET, libc::SOCK_SEQPACKET)?;
        let log =
            LogWriter::open(&a.log, a.log_max).map_err(|e| Error::from_io(e).context(format!("log {}", a.log)))?;

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
            let console_path = format!("/tmp/.berth-console-{}.sock", unsafe { libc::getpid() });
            let tmp = unsafe { libc::open(c"/tmp".as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
            if tmp < 0 {
                return Err(Error::last_os("/tmp"));
            }
            let console = listen_unix(tmp, &console_path[5..], libc::SOCK_STREAM);
            close(tmp);
            let console = console?;
            argv.extend(["--console-socket".into(), console_path.clone()]);
            argv.push(a.id.clone());
            let (err_r, err_w) = pipe()?;
            child = spawn(&argv, [devnull, err_w, err_w], a.hide_cgroup2)?;
            close(err_w);
            // Wait for the runtime to connect (or to fail first).
            let conn = loop {
                let c =
                    unsafe { libc::accept4(console, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
                if c >= 0 {
                    break c;
                }
                let mut st = 0;
                if unsafe { libc::waitpid(child.pid, &mut st, libc::WNOHANG) } == child.pid {
                    let _ = std::fs::remove_file(&console_path);
                    let msg = runtime_error(&runtime_log).unwrap_or_else(|| drain_text(err_r));
                    return Err(Error::msg(format!("runtime create: {} ({})", msg.trim(), status_text(st))));
                }
                let mut pfd = libc::pollfd { fd: console, events: libc::POLLIN, revents: 0 };
                unsafe { libc::poll(&mut pfd, 1, 50) };
            };
            let master = recv_fd(conn)?;
            close(conn);
            close(console);
            let _ = std::fs::remove_file(&console_path);
            let st = wait_for(child.pid);
            if st != 0 {
                let msg = runtime_error(&runtime_log).unwrap_or_else(|| drain_text(err_r));
                return Err(Error::msg(format!("runtime create: {} ({})", msg.trim(), status_text(st))));
            }
            close(err_r);
            set_nonblock(master);
            out = master;
            err = -1;
            input = master;
        } else {
            argv.push(a.id.clone());
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let (in_r, in_w) = if a.stdin { pipe()? } else { (devnull, -1) };
            child = spawn(&argv, [in_r, out_w, err_w], a.hide_cgroup2)?;
            close(out_w);
            close(err_w);
            if in_r != devnull {
                close(in_r);
            }
            set_nonblock(out_r);
            set_nonblock(err_r);
            let st = wait_for(child.pid);
            if st != 0 {
                let msg = runtime_error(&runtime_log).unwrap_or_else(|| drain_text(err_r));
                return Err(Error::msg(format!("runtime create: {} ({})", msg.trim(), status_text(st))));
            }
            if in_w >= 0 {
                set_nonblock(in_w);
            }
            out = out_r;
            err = err_r;
            input = in_w;
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
            listener,
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
        let go = read_line(m.a.sync_fd);
        if go.as_deref() != Some(protocol::START) {
            m.abort(&global);
            return Err(Error::msg("the engine went away before starting the container"));
        }
        m.early_clients();
        let mut start = global.clone();
        start.extend(["start".into(), m.a.id.clone()]);
        let child = spawn(&start, [devnull, devnull, devnull], m.a.hide_cgroup2)?;
        let st = wait_for(child.pid);
        if st != 0 {
            let msg = runtime_error(&runtime_log).unwrap_or_default();
            m.abort(&global);
            return Err(Error::msg(format!("runtime start: {} ({})", msg.trim(), status_text(st))));
        }
        let started_at = berth_time::now_rfc3339();
        send(m.a.sync_fd, &ToEngine::Started);
        close(m.a.sync_fd);
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
        for c in m.clients.drain(..) {
            close(c.fd);
        }
        close(m.listener);
        let _ = std::fs::remove_file(format!("{}/{}", m.a.dir, protocol::ATTACH_SOCKET));
        let mut delete = global.clone();
        delete.extend(["delete".into(), "--force".into(), m.a.id.clone()]);
        if let Ok(c) = spawn(&delete, [devnull, devnull, devnull], m.a.hide_cgroup2) {
            wait_for(c.pid);
        }
        if let Some(cmd) = m.a.exit_command.clone() {
            let mut argv = vec![cmd];
            argv.extend(m.a.exit_args.iter().cloned());
            if let Ok(c) = spawn(&argv, [devnull, devnull, devnull], false) {
                wait_for(c.pid);
            }
        }
        Ok(())
    }

    /// The created container will not start: kill and delete it.
    pub(crate) fn abort(&mut self, global: &[String]) {
        unsafe { libc::kill(self.ctr_pid, libc::SIGKILL) };
        let devnull = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        let mut delete = global.to_vec();
        delete.extend(["delete".into(), "--force".into(), self.a.id.clone()]);
        if let Ok(c) = spawn(&delete, [devnull, devnull, devnull], self.a.hide_cgroup2) {
            wait_for(c.pid);
        }
        self.reap();
    }
}
