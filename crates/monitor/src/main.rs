//! berth-monitor: one small process per container, the role conmon and containerd-shim play.
//!
//! The engine starts it with a socket (`--sync-fd`) and waits for the first process to exit:
//! the monitor forks, and the child, in a session of its own, does the work, so it outlives
//! the engine. It is a child subreaper: the OCI runtime it runs (`create`, then `start`) exits,
//! and the container's init becomes its child. It holds the container's stdio (pipes, or the
//! pty master received on the console socket), writes everything to the CRI log, relays it to
//! the clients of its attach socket and their input back, forwards the signals it receives to
//! the container, reaps it, writes the exit file, deletes the runtime's state and runs the exit
//! command (the engine's cleanup).
//!
//! The sync socket carries lines, monitor → engine: `monitor <pid>`, `created <pid>`,
//! `started`, or `error <message>`; engine → monitor: `start` (anything else, or EOF, and the
//! created container is deleted again).
//!
//! Attach protocol (SOCK_SEQPACKET, one message per packet): from a client `0` + bytes (stdin),
//! `1` + rows (u16 LE) + cols (u16 LE) (terminal size), `2` (close stdin); to a client
//! `1` + bytes (stdout) or `2` + bytes (stderr). The socket is closed when the container exits.
//!
//! Synchronous (one poll loop), no allocation on the relay path beyond the read buffer, and
//! only libc: its resident size is measured against conmon's in `make bench`.

mod log;

use std::ffi::CString;
use std::io;

use log::{write_all, LogWriter};

struct Args {
    id: String,
    runtime: String,
    runtime_args: Vec<String>,
    hide_cgroup2: bool,
    bundle: String,
    dir: String,
    log: String,
    log_max: u64,
    stdin: bool,
    terminal: bool,
    sync_fd: i32,
    exit_command: Option<String>,
    exit_args: Vec<String>,
}

const USAGE: &str = "usage: berth-monitor --id ID --runtime PATH [--runtime-arg ARG]... [--hide-cgroup2] --bundle DIR --dir DIR --log FILE [--log-max-size BYTES] [--stdin] [--terminal] --sync-fd FD [--exit-command PATH [--exit-arg ARG]...]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        id: String::new(),
        runtime: String::new(),
        runtime_args: Vec::new(),
        hide_cgroup2: false,
        bundle: String::new(),
        dir: String::new(),
        log: String::new(),
        log_max: 0,
        stdin: false,
        terminal: false,
        sync_fd: -1,
        exit_command: None,
        exit_args: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag}: missing value"));
        match flag.as_str() {
            "--id" => a.id = value()?,
            "--runtime" => a.runtime = value()?,
            "--runtime-arg" => a.runtime_args.push(value()?),
            "--hide-cgroup2" => a.hide_cgroup2 = true,
            "--bundle" => a.bundle = value()?,
            "--dir" => a.dir = value()?,
            "--log" => a.log = value()?,
            "--log-max-size" => a.log_max = value()?.parse().map_err(|_| "--log-max-size: not a number".to_string())?,
            "--stdin" => a.stdin = true,
            "--terminal" => a.terminal = true,
            "--sync-fd" => a.sync_fd = value()?.parse().map_err(|_| "--sync-fd: not a number".to_string())?,
            "--exit-command" => a.exit_command = Some(value()?),
            "--exit-arg" => a.exit_args.push(value()?),
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    for (v, name) in
        [(&a.id, "--id"), (&a.runtime, "--runtime"), (&a.bundle, "--bundle"), (&a.dir, "--dir"), (&a.log, "--log")]
    {
        if v.is_empty() {
            return Err(format!("{name} is required\n{USAGE}"));
        }
    }
    if a.sync_fd < 0 {
        return Err(format!("--sync-fd is required\n{USAGE}"));
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-monitor: {e}");
            std::process::exit(2);
        }
    };
    // Detach: the engine reaps this first process at once; the child is the monitor.
    // SAFETY: single-threaded here; the parent only exits.
    match unsafe { libc::fork() } {
        -1 => {
            send(args.sync_fd, &format!("error forking the monitor: {}", io::Error::last_os_error()));
            std::process::exit(1);
        }
        0 => {}
        _ => unsafe { libc::_exit(0) },
    }
    unsafe { libc::setsid() };
    let sync = args.sync_fd;
    if let Err(e) = Monitor::run(args) {
        send(sync, &format!("error {e}"));
        std::process::exit(1);
    }
}

fn send(fd: i32, line: &str) {
    if fd >= 0 {
        let mut msg = line.replace('\n', " ");
        msg.push('\n');
        let _ = write_all(fd, msg.as_bytes());
    }
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains NUL"))
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

fn pipe() -> Result<(i32, i32), String> {
    let mut fds = [0; 2];
    // SAFETY: valid array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_err("pipe"));
    }
    Ok((fds[0], fds[1]))
}

fn set_nonblock(fd: i32) {
    // SAFETY: fcntl on our descriptor.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

fn close(fd: i32) {
    if fd >= 0 {
        unsafe { libc::close(fd) };
    }
}

/// A unix socket bound at `dir/name` (through /proc/self/fd, so the directory's length does
/// not count against the 108 bytes of a socket address).
fn listen_unix(dirfd: i32, name: &str, kind: i32) -> Result<i32, String> {
    // SAFETY: socket setup with valid arguments.
    let fd = unsafe { libc::socket(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(os_err("socket"));
    }
    let path = format!("/proc/self/fd/{dirfd}/{name}");
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as u16;
    for (i, b) in path.bytes().enumerate() {
        addr.sun_path[i] = b as libc::c_char;
    }
    let c = cstring(&path)?;
    unsafe { libc::unlink(c.as_ptr()) };
    let len = (std::mem::size_of::<libc::sa_family_t>() + path.len() + 1) as u32;
    if unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_un).cast(), len) } != 0 {
        return Err(os_err(&format!("bind {name}")));
    }
    if unsafe { libc::listen(fd, 16) } != 0 {
        return Err(os_err(&format!("listen {name}")));
    }
    Ok(fd)
}

/// Receives one file descriptor (the pty master) sent with SCM_RIGHTS.
fn recv_fd(sock: i32) -> Result<i32, String> {
    let mut buf = [0u8; 4096];
    let mut cmsg = [0u64; 8];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg);
    // SAFETY: msghdr points at live buffers.
    if unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) } < 0 {
        return Err(os_err("receiving the pty master"));
    }
    let c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if c.is_null() || unsafe { (*c).cmsg_type } != libc::SCM_RIGHTS {
        return Err("the runtime sent no pty master on the console socket".into());
    }
    Ok(unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32) })
}

struct Child {
    pid: i32,
}

/// Forks and execs `argv` with the given stdio; `hide_cgroup2` runs it in a private mount
/// namespace without the cgroup2 mount of a hybrid host (for runtimes that refuse hybrid).
fn spawn(argv: &[String], stdio: [i32; 3], hide_cgroup2: bool) -> Result<Child, String> {
    let cargs: Vec<CString> = argv.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let unified = c"/sys/fs/cgroup/unified";
    let root = c"/";
    // SAFETY: the child only calls async-signal-safe functions before execvp.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_err("fork"));
    }
    if pid == 0 {
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            for (i, fd) in stdio.iter().enumerate() {
                if *fd == i as i32 {
                    let fl = libc::fcntl(*fd, libc::F_GETFD);
                    libc::fcntl(*fd, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
                } else {
                    libc::dup2(*fd, i as i32);
                }
            }
            if hide_cgroup2 {
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                {
                    libc::_exit(125);
                }
                libc::umount2(unified.as_ptr(), libc::MNT_DETACH);
            }
            libc::execvp(ptrs[0], ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    Ok(Child { pid })
}

fn wait_for(pid: i32) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return status;
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return -1;
        }
    }
}

fn status_text(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

/// The last error message in the runtime's JSON log (`{"level":"error","msg":"..."}`).
fn runtime_error(log: &str) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().filter(|l| l.contains("\"error\"")).find_map(|l| json_string_field(l, "msg"))
}

fn json_string_field(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":");
    let start = line.find(&pat)? + pat.len();
    let rest = line[start..].trim_start().strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32).unwrap_or('?'));
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

fn read_nonblock(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reading into a valid buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The memory cgroup's OOM-kill counter of `pid` (v1 `memory.oom_control`, v2 `memory.events`).
fn oom_counter_path(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut v2 = None;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        if ctrls.split(',').any(|c| c == "memory") {
            let p = format!("/sys/fs/cgroup/memory{path}/memory.oom_control");
            if std::path::Path::new(&p).exists() {
                return Some(p);
            }
        }
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        }
    }
    let path = v2?;
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let p = format!("{base}{path}/memory.events");
        if std::path::Path::new(&p).exists() {
            return Some(p);
        }
    }
    None
}

fn oom_kills(path: &Option<String>) -> u64 {
    let Some(p) = path else { return 0 };
    let text = std::fs::read_to_string(p).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

struct Client {
    fd: i32,
}

struct Monitor {
    a: Args,
    sfd: i32,
    listener: i32,
    /// stdout (or the pty master) and stderr, ours to read; -1 once closed
    out: i32,
    err: i32,
    /// the container's stdin, ours to write (the pty master with a terminal); -1 if none
    input: i32,
    pending_input: Vec<u8>,
    close_input_after: bool,
    clients: Vec<Client>,
    log: LogWriter,
    ctr_pid: i32,
    exit_status: Option<i32>,
}

impl Monitor {
    fn run(a: Args) -> Result<(), String> {
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        // Our own stdio goes nowhere: the engine that started us may be gone any moment.
        let devnull = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if devnull < 0 {
            return Err(os_err("/dev/null"));
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
            return Err(os_err("signalfd"));
        }
        send(a.sync_fd, &format!("monitor {}", unsafe { libc::getpid() }));

        let cdir = cstring(&a.dir)?;
        let dirfd = unsafe { libc::open(cdir.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if dirfd < 0 {
            return Err(os_err(&a.dir));
        }
        let listener = listen_unix(dirfd, "attach", libc::SOCK_SEQPACKET)?;
        let log = LogWriter::open(&a.log, a.log_max).map_err(|e| format!("log {}: {e}", a.log))?;

        let runtime_log = format!("{}/runtime.log", a.dir);
        let pid_file = format!("{}/pid", a.dir);
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
                return Err(os_err("/tmp"));
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
                    return Err(format!("runtime create: {} ({})", msg.trim(), status_text(st)));
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
                return Err(format!("runtime create: {} ({})", msg.trim(), status_text(st)));
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
                return Err(format!("runtime create: {} ({})", msg.trim(), status_text(st)));
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
            .ok_or_else(|| format!("runtime create wrote no pid to {pid_file}"))?;
        let oom_path = oom_counter_path(ctr_pid);
        let oom_before = oom_kills(&oom_path);
        send(a.sync_fd, &format!("created {ctr_pid}"));
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
        if go.as_deref() != Some("start") {
            m.abort(&global);
            return Err("the engine went away before starting the container".into());
        }
        m.early_clients();
        let mut start = global.clone();
        start.extend(["start".into(), m.a.id.clone()]);
        let child = spawn(&start, [devnull, devnull, devnull], m.a.hide_cgroup2)?;
        let st = wait_for(child.pid);
        if st != 0 {
            let msg = runtime_error(&runtime_log).unwrap_or_default();
            m.abort(&global);
            return Err(format!("runtime start: {} ({})", msg.trim(), status_text(st)));
        }
        let started_at = log::timestamp_now();
        send(m.a.sync_fd, "started");
        close(m.a.sync_fd);
        m.a.sync_fd = -1;

        m.relay();

        let status = m.exit_status.unwrap_or(-1);
        let (code, signal) = if libc::WIFEXITED(status) {
            (libc::WEXITSTATUS(status), 0)
        } else if libc::WIFSIGNALED(status) {
            (128 + libc::WTERMSIG(status), libc::WTERMSIG(status))
        } else {
            (255, 0)
        };
        crash_point("monitor-exit");
        let oom = oom_kills(&oom_path) > oom_before;
        let exit = format!(
            "{{\"exitCode\":{code},\"signal\":{signal},\"oomKilled\":{oom},\"pid\":{},\"startedAt\":\"{started_at}\",\"finishedAt\":\"{}\"}}\n",
            m.ctr_pid,
            log::timestamp_now()
        );
        let tmp = format!("{}/exit.tmp", m.a.dir);
        if std::fs::write(&tmp, exit).is_ok() {
            let _ = std::fs::rename(&tmp, format!("{}/exit", m.a.dir));
        }
        for c in m.clients.drain(..) {
            close(c.fd);
        }
        close(m.listener);
        let _ = std::fs::remove_file(format!("{}/attach", m.a.dir));
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
    fn abort(&mut self, global: &[String]) {
        unsafe { libc::kill(self.ctr_pid, libc::SIGKILL) };
        let devnull = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        let mut delete = global.to_vec();
        delete.extend(["delete".into(), "--force".into(), self.a.id.clone()]);
        if let Ok(c) = spawn(&delete, [devnull, devnull, devnull], self.a.hide_cgroup2) {
            wait_for(c.pid);
        }
        self.reap();
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if pid == self.ctr_pid {
                self.exit_status = Some(status);
            }
        }
    }

    /// Clients that connected before `start` (the engine's, for `run -it`): what they sent
    /// so far (the terminal's size, first input) is taken now, so the container starts with it.
    fn early_clients(&mut self) {
        let mut buf = vec![0u8; 32 * 1024 + 1];
        loop {
            // SAFETY: accept on our non-blocking listener.
            let c =
                unsafe { libc::accept4(self.listener, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
            if c < 0 {
                break;
            }
            self.clients.push(Client { fd: c });
        }
        let mut i = 0;
        while i < self.clients.len() {
            let mut open = true;
            while open && !read_would_block(self.clients[i].fd) {
                open = self.client_message(i, &mut buf);
            }
            if open {
                i += 1;
            } else {
                close(self.clients[i].fd);
                self.clients.remove(i);
            }
        }
    }

    fn broadcast(&mut self, stream: u8, data: &[u8]) {
        let mut msg = Vec::with_capacity(data.len() + 1);
        msg.push(stream);
        msg.extend_from_slice(data);
        self.clients.retain(|c| {
            // SAFETY: sending a valid buffer; a client that cannot keep up is dropped.
            let n =
                unsafe { libc::send(c.fd, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
            if n < 0 {
                close(c.fd);
                return false;
            }
            true
        });
    }

    /// Reads what `fd` has; false at EOF or error (the stream is closed).
    fn pump(&mut self, which: u8, buf: &mut [u8]) -> bool {
        let fd = if which == 1 { self.out } else { self.err };
        match read_nonblock(fd, buf) {
            Ok(0) => false,
            Ok(n) => {
                self.log.write(if which == 1 { "stdout" } else { "stderr" }, &buf[..n]);
                let data = buf[..n].to_vec();
                self.broadcast(which, &data);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => true,
            Err(_) => false,
        }
    }

    fn flush_input(&mut self) {
        while !self.pending_input.is_empty() && self.input >= 0 {
            let n = unsafe { libc::write(self.input, self.pending_input.as_ptr().cast(), self.pending_input.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                    return;
                }
                self.pending_input.clear();
                break;
            }
            self.pending_input.drain(..n as usize);
        }
        if self.pending_input.is_empty() && self.close_input_after && !self.a.terminal && self.input >= 0 {
            close(self.input);
            self.input = -1;
        }
    }

    fn client_message(&mut self, idx: usize, buf: &mut [u8]) -> bool {
        let fd = self.clients[idx].fd;
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted;
        }
        if n == 0 {
            return false;
        }
        let msg = &buf[..n as usize];
        match msg[0] {
            0 if self.input >= 0 => {
                self.pending_input.extend_from_slice(&msg[1..]);
                self.flush_input();
            }
            1 if msg.len() >= 5 && self.a.terminal => {
                let ws = libc::winsize {
                    ws_row: u16::from_le_bytes([msg[1], msg[2]]),
                    ws_col: u16::from_le_bytes([msg[3], msg[4]]),
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                unsafe { libc::ioctl(self.out, libc::TIOCSWINSZ, &ws) };
            }
            2 => {
                self.close_input_after = true;
                self.flush_input();
            }
            _ => {}
        }
        true
    }

    fn relay(&mut self) {
        let mut buf = vec![0u8; 32 * 1024 + 1];
        loop {
            if let Some(_status) = self.exit_status {
                // The container is gone: take what is left in the pipes, then stop.
                while self.out >= 0 && self.pump(1, &mut buf[..32 * 1024]) {
                    if read_would_block(self.out) {
                        break;
                    }
                }
                while self.err >= 0 && self.pump(2, &mut buf[..32 * 1024]) {
                    if read_would_block(self.err) {
                        break;
                    }
                }
                return;
            }
            let mut fds = vec![
                libc::pollfd { fd: self.sfd, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.listener, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.out, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.err, events: libc::POLLIN, revents: 0 },
                libc::pollfd {
                    fd: if self.pending_input.is_empty() { -1 } else { self.input },
                    events: libc::POLLOUT,
                    revents: 0,
                },
            ];
            let throttle = self.pending_input.len() > 256 * 1024;
            for c in &self.clients {
                fds.push(libc::pollfd { fd: if throttle { -1 } else { c.fd }, events: libc::POLLIN, revents: 0 });
            }
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as u64, -1) };
            if r < 0 {
                continue;
            }
            if fds[0].revents != 0 {
                self.signals();
            }
            if fds[1].revents != 0 {
                loop {
                    let c = unsafe {
                        libc::accept4(self.listener, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC)
                    };
                    if c < 0 {
                        break;
                    }
                    self.clients.push(Client { fd: c });
                }
            }
            if fds[2].revents != 0 && !self.pump(1, &mut buf[..32 * 1024]) {
                if self.input == self.out {
                    self.input = -1;
                }
                close(self.out);
                self.out = -1;
            }
            if fds[3].revents != 0 && !self.pump(2, &mut buf[..32 * 1024]) {
                close(self.err);
                self.err = -1;
            }
            if fds[4].revents != 0 {
                self.flush_input();
            }
            let mut gone = Vec::new();
            for (i, p) in fds[5..].iter().enumerate() {
                if p.revents != 0 && i < self.clients.len() && !self.client_message(i, &mut buf) {
                    gone.push(i);
                }
            }
            for i in gone.into_iter().rev() {
                close(self.clients[i].fd);
                self.clients.remove(i);
            }
        }
    }

    fn signals(&mut self) {
        loop {
            let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let n = unsafe {
                libc::read(self.sfd, (&mut si as *mut libc::signalfd_siginfo).cast(), std::mem::size_of_val(&si))
            };
            if n <= 0 {
                return;
            }
            let sig = si.ssi_signo as i32;
            if sig == libc::SIGCHLD {
                self.reap();
            } else if self.exit_status.is_none() {
                unsafe { libc::kill(self.ctr_pid, sig) };
            }
        }
    }
}

/// Crash-recovery tests stop the monitor dead at a named point (`BERTH_TEST_CRASH_AT`, as
/// for the engine): `monitor-created` (the container created, not started), `monitor-exit`
/// (the container gone, its exit not written).
fn crash_point(name: &str) {
    if std::env::var_os("BERTH_TEST_CRASH_AT").is_some_and(|v| v == name) {
        // SAFETY: killing ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

fn read_would_block(fd: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    unsafe { libc::poll(&mut p, 1, 0) == 0 }
}

const FORWARDED: [i32; 7] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH];

fn drain_text(fd: i32) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    set_nonblock(fd);
    while let Ok(n) = read_nonblock(fd, &mut buf) {
        if n == 0 || out.len() > 64 * 1024 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_line(fd: i32) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return None;
        }
        if b[0] == b'\n' {
            return Some(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(b[0]);
    }
}
