//! The container commands: run, create, start, stop, restart, kill, rm, ps, logs, exec, attach,
//! inspect, wait, top, stats, port, cp, volume, network, system prune, info — a thin layer over
//! berth-engine (argument parsing, output formats, the terminal).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_engine::attach::{AttachConn, ExecOptions};
use berth_engine::logs::LogOptions;
use berth_engine::{Container, CreateOptions, Engine, Error, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::{Cli, Command};

macro_rules! bail {
    ($($t:tt)*) => { return Err(Error::invalid(format!($($t)*))) };
}

#[derive(Args, Debug, Clone)]
pub struct CreateFlags {
    /// Keep stdin open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal
    #[arg(short, long)]
    pub tty: bool,
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable NAME=VALUE (NAME alone takes this process's value)
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// File of NAME=VALUE lines
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// USER[:GROUP] (names or ids)
    #[arg(short, long)]
    pub user: Option<String>,
    /// Override the image's entrypoint ("" clears it)
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Bind mount HOST:CTR[:ro], named volume NAME:CTR[:ro], or anonymous volume CTR
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// tmpfs mount CTR[:OPTIONS]
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Publish [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]
    #[arg(short, long = "publish")]
    pub publish: Vec<String>,
    /// Publish every exposed port on a free host port
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// bridge (default), host, none, or a network's name
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    #[arg(long)]
    pub dns: Vec<String>,
    /// NAME:IP line for /etc/hosts
    #[arg(long)]
    pub add_host: Vec<String>,
    /// Memory limit (e.g. 512m, 1g)
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPUs (e.g. 1.5)
    #[arg(long)]
    pub cpus: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    #[arg(long)]
    pub cap_add: Vec<String>,
    #[arg(long)]
    pub cap_drop: Vec<String>,
    #[arg(long)]
    pub privileged: bool,
    /// Read-only root filesystem
    #[arg(long)]
    pub read_only: bool,
    /// seccomp=FILE, seccomp=unconfined, no-new-privileges
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// Run a minimal init as PID 1 (reaps zombies, forwards signals)
    #[arg(long)]
    pub init: bool,
    /// no, on-failure[:N], always, unless-stopped
    #[arg(long)]
    pub restart: Option<String>,
    /// Runtime handler (berth-oci, runc, crun, or one from berth.toml)
    #[arg(long)]
    pub runtime: Option<String>,
    /// KEY=VALUE
    #[arg(short, long = "label")]
    pub label: Vec<String>,
    #[arg(long)]
    pub stop_signal: Option<String>,
    #[arg(long)]
    pub stop_timeout: Option<u32>,
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// The image, then the command and its arguments: everything after the image is the
    /// command's, options included (`run IMAGE ls -l`, `run IMAGE -x` with an entrypoint)
    #[arg(value_name = "IMAGE [COMMAND [ARG...]]", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub image_and_command: Vec<String>,
}

impl CreateFlags {
    pub fn image(&self) -> &str {
        &self.image_and_command[0]
    }

    pub fn command(&self) -> &[String] {
        &self.image_and_command[1..]
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run in the background and print the container ID
    #[arg(short, long)]
    pub detach: bool,
    #[command(flatten)]
    pub c: CreateFlags,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach to its output (and wait for it)
    #[arg(short, long)]
    pub attach: bool,
    /// Attach stdin too
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before SIGKILL (default: the container's --stop-timeout, else 10)
    #[arg(short = 't', long = "time", alias = "timeout")]
    pub time: Option<u32>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill and remove a running container
    #[arg(short, long)]
    pub force: bool,
    /// Remove its anonymous volumes too
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// All containers, not only running ones
    #[arg(short, long)]
    pub all: bool,
    /// Only IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
    /// status=, name=, id=, label=KEY[=VALUE], ancestor=
    #[arg(short, long)]
    pub filter: Vec<String>,
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines from the end, or "all"
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// RFC 3339 time, Unix time, or a duration ago (10m)
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub until: Option<String>,
    #[arg(short, long)]
    pub timestamps: bool,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(short, long)]
    pub tty: bool,
    #[arg(short, long)]
    pub detach: bool,
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(short, long)]
    pub workdir: Option<String>,
    #[arg(long)]
    pub privileged: bool,
    /// The container, then the command and its arguments (options included)
    #[arg(value_name = "CONTAINER COMMAND [ARG...]", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub name_and_command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach stdin
    #[arg(long)]
    pub no_stdin: bool,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NameArg {
    pub name: String,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// One sample, then exit
    #[arg(long)]
    pub no_stream: bool,
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PortArgs {
    pub name: String,
    /// PORT[/PROTO]
    pub port: Option<String>,
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// CONTAINER:PATH or a host path
    pub src: String,
    /// CONTAINER:PATH or a host path
    pub dst: String,
}

#[derive(Args, Debug)]
pub struct FormatArgs {
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    Create {
        name: Option<String>,
        #[arg(short, long = "label")]
        label: Vec<String>,
    },
    #[command(alias = "list")]
    Ls(FormatArgs),
    Inspect(NamesArgs),
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container uses
    Prune {
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    Create {
        name: String,
        /// e.g. 10.90.3.0/24 (default: a free 10.90.N.0/24)
        #[arg(long)]
        subnet: Option<String>,
        /// Bridge interface name (default: berthN)
        #[arg(long)]
        bridge: Option<String>,
    },
    #[command(alias = "list")]
    Ls(FormatArgs),
    Inspect(NamesArgs),
    Rm(NamesArgs),
    /// CNI CHECK: verify a running container's network attachments
    Check(NameArg),
}

#[derive(Args, Debug)]
pub struct SystemPruneArgs {
    /// Also remove every unused image, not only untagged ones
    #[arg(short, long)]
    pub all: bool,
    /// Also remove unused volumes
    #[arg(long)]
    pub volumes: bool,
    /// Do not ask (berth never asks; accepted for docker compatibility)
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Run by berth-monitor when a container exits: record the exit, release its resources,
    /// restart or remove it
    #[command(hide = true)]
    Cleanup { id: String },
}

fn open(cli: &Cli) -> Result<Engine> {
    let root = berth_image::Store::default_root(cli.root.as_deref());
    let config = cli.config.clone().or_else(|| std::env::var_os("BERTH_CONFIG").map(PathBuf::from));
    let mut e = Engine::open(&root, config.as_deref())?;
    if let Ok(exe) = std::env::current_exe() {
        let mut cmd = vec![exe.to_string_lossy().into_owned(), "--root".into(), e.root.to_string_lossy().into_owned()];
        if let Some(c) = &config {
            cmd.push("--config".into());
            cmd.push(c.to_string_lossy().into_owned());
        }
        cmd.push("container".into());
        cmd.push("cleanup".into());
        e.exit_command = Some(cmd);
    }
    Ok(e)
}

/// Runs a container command; `Ok(None)` when `command` is not one, else the exit code.
pub fn run(cli: &Cli) -> Option<Result<i32>> {
    let r = match &cli.command {
        Command::Run(a) => run_cmd(cli, a),
        Command::Create(a) => create_cmd(cli, a),
        Command::Start(a) => start_cmd(cli, a),
        Command::Stop(a) => each(cli, &a.names, |e, n| e.stop(n, a.time).map(|_| ())),
        Command::Restart(a) => each(cli, &a.names, |e, n| e.restart(n, a.time)),
        Command::Kill(a) => {
            let sig = match berth_image::spec::signal_number(&a.signal) {
                Ok(s) => s,
                Err(e) => return Some(Err(Error::invalid(format!("--signal: {e}")))),
            };
            each(cli, &a.names, |e, n| e.kill(n, sig))
        }
        Command::Rm(a) => each(cli, &a.names, |e, n| e.remove(n, a.force, a.volumes)),
        Command::Ps(a) => ps(cli, a),
        Command::Logs(a) => logs(cli, a),
        Command::Exec(a) => exec(cli, a),
        Command::Attach(a) => attach_cmd(cli, a),
        Command::Inspect(a) => inspect(cli, a),
        Command::Wait(a) => wait(cli, a),
        Command::Top(a) => top(cli, a),
        Command::Stats(a) => stats(cli, a),
        Command::Port(a) => port(cli, a),
        Command::Cp(a) => cp(cli, a),
        Command::Volume(c) => volume(cli, c),
        Command::Network(c) => network(cli, c),
        Command::Info(a) => info(cli, a),
        Command::Container(ContainerCommand::Cleanup { id }) => open(cli).and_then(|e| e.on_exit(id)).map(|_| 0),
        Command::System(crate::images::SystemCommand::Prune(a)) => system_prune(cli, a),
        _ => return None,
    };
    Some(r)
}

fn each(cli: &Cli, names: &[String], f: impl Fn(&Engine, &str) -> Result<()>) -> Result<i32> {
    let e = open(cli)?;
    let mut failed = None;
    for n in names {
        match f(&e, n) {
            Ok(()) => println!("{n}"),
            Err(err) => {
                eprintln!("berth: {n}: {err}");
                failed = Some(err);
            }
        }
    }
    match failed {
        Some(e) if names.len() == 1 => Err(e),
        Some(_) => Ok(1),
        None => Ok(0),
    }
}

fn parse_env_file(p: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(p).map_err(|e| Error::invalid(format!("--env-file {}: {e}", p.display())))?;
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim_start();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.starts_with('=') {
            bail!("--env-file {}:{}: variable name missing", p.display(), i + 1);
        }
        if l.contains('\0') {
            let name = l.split('=').next().unwrap_or_default();
            bail!("--env-file {}:{}: variable {name}: contains a NUL byte", p.display(), i + 1);
        }
        out.push(expand_env(l));
    }
    Ok(out)
}

/// `NAME` alone takes this process's value (and is dropped when unset), as docker does.
fn expand_env(e: &str) -> String {
    if e.contains('=') {
        return e.to_string();
    }
    match std::env::var(e) {
        Ok(v) => format!("{e}={v}"),
        Err(_) => String::new(),
    }
}

fn options(c: &CreateFlags) -> Result<CreateOptions> {
    if c.image().starts_with('-') {
        bail!("unknown option {:?}", c.image());
    }
    let mut env = Vec::new();
    for f in &c.env_file {
        env.extend(parse_env_file(f)?);
    }
    env.extend(c.env.iter().map(|e| expand_env(e)));
    env.retain(|e| !e.is_empty());
    let mut seccomp = None;
    let mut nnp = false;
    for s in &c.security_opt {
        match s.split_once(['=', ':']) {
            Some(("seccomp", v)) => seccomp = Some(v.to_string()),
            _ if s == "no-new-privileges" || s == "no-new-privileges=true" || s == "no-new-privileges:true" => {
                nnp = true
            }
            _ => bail!("--security-opt {s:?}: supported are seccomp=FILE, seccomp=unconfined and no-new-privileges"),
        }
    }
    let mut labels = BTreeMap::new();
    for l in &c.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        if k.is_empty() {
            bail!("--label {l:?}: empty key");
        }
        labels.insert(k.to_string(), v.to_string());
    }
    let memory = c.memory.as_deref().map(berth_engine::spec::parse_memory).transpose()?;
    let cpus = match &c.cpus {
        Some(s) => Some(s.parse::<f64>().map_err(|_| Error::invalid(format!("--cpus {s:?}: not a number")))?),
        None => None,
    };
    let entrypoint = c.entrypoint.as_ref().map(|e| if e.is_empty() { Vec::new() } else { vec![e.clone()] });
    Ok(CreateOptions {
        image: c.image().to_string(),
        name: c.name.clone(),
        command: if c.command().is_empty() { None } else { Some(c.command().to_vec()) },
        entrypoint,
        env,
        workdir: c.workdir.clone(),
        user: c.user.clone(),
        tty: c.tty,
        stdin: c.interactive,
        volumes: c.volume.clone(),
        tmpfs: c.tmpfs.clone(),
        publish: c.publish.clone(),
        publish_all: c.publish_all,
        network: c.network.clone(),
        hostname: c.hostname.clone(),
        dns: c.dns.clone(),
        add_hosts: c.add_host.clone(),
        memory,
        cpus,
        pids_limit: c.pids_limit,
        cap_add: c.cap_add.clone(),
        cap_drop: c.cap_drop.clone(),
        privileged: c.privileged,
        read_only: c.read_only,
        seccomp,
        no_new_privileges: nnp,
        init: c.init,
        restart: c.restart.clone(),
        runtime: c.runtime.clone(),
        labels,
        stop_signal: c.stop_signal.clone(),
        stop_timeout: c.stop_timeout,
        auto_remove: c.rm,
    })
}

fn create(e: &Engine, c: &CreateFlags) -> Result<Container> {
    let ctr = e.create(&options(c)?)?;
    if ctr.seccomp.starts_with("none") {
        eprintln!(
            "berth: warning: {} (the container runs without the default seccomp profile)",
            ctr.seccomp.trim_start_matches("none: ")
        );
    }
    Ok(ctr)
}

fn create_cmd(cli: &Cli, a: &CreateFlags) -> Result<i32> {
    let e = open(cli)?;
    let c = create(&e, a)?;
    println!("{}", c.id);
    Ok(0)
}

fn run_cmd(cli: &Cli, a: &RunArgs) -> Result<i32> {
    let e = open(cli)?;
    let c = create(&e, &a.c)?;
    if a.detach {
        if let Err(err) = e.start(&c.id) {
            if a.c.rm {
                let _ = e.remove(&c.id, true, true);
            }
            return Err(err);
        }
        println!("{}", c.id);
        return Ok(0);
    }
    let r = e.start_with(&c.id, |dir| connect_sized(dir, a.c.tty));
    let conn = match r {
        Ok(Some(conn)) => conn,
        Ok(None) => return Err(Error::msg("the container was started by someone else")),
        Err(err) => {
            if a.c.rm {
                let _ = e.remove(&c.id, true, true);
            }
            return Err(err);
        }
    };
    relay(&e, &c, conn, a.c.interactive, a.c.tty)
}

fn start_cmd(cli: &Cli, a: &StartArgs) -> Result<i32> {
    let e = open(cli)?;
    if !a.attach {
        return each(cli, &a.names, |e, n| e.start(n));
    }
    if a.names.len() != 1 {
        bail!("start --attach takes one container");
    }
    let c = e.get(&a.names[0])?;
    match e.start_with(&c.id, |dir| connect_sized(dir, c.options.tty))? {
        Some(conn) => relay(&e, &c, conn, a.interactive && c.options.stdin, c.options.tty),
        None => bail!("container {} is already running", c.name),
    }
}

/// Attaches before the container starts; with a terminal, its size goes first, so the
/// container starts with the size of ours.
fn connect_sized(dir: &Path, tty: bool) -> Result<AttachConn> {
    let conn = AttachConn::connect(dir)?;
    if let Some((rows, cols)) = term_size().filter(|_| tty) {
        let _ = conn.resize(rows, cols);
    }
    Ok(conn)
}

fn attach_cmd(cli: &Cli, a: &AttachArgs) -> Result<i32> {
    let e = open(cli)?;
    let c = e.get(&a.name)?;
    let conn = e.attach(&c.id)?;
    relay(&e, &c, conn, c.options.stdin && !a.no_stdin, c.options.tty)
}

struct RawMode {
    saved: Option<libc::termios>,
}

impl RawMode {
    fn enter(tty: bool) -> RawMode {
        if !tty || !std::io::stdin().is_terminal() {
            return RawMode { saved: None };
        }
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: termios calls on stdin.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return RawMode { saved: None };
        }
        let saved = t;
        unsafe {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = self.saved {
            // SAFETY: restoring stdin's saved attributes.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

fn term_size() -> Option<(u16, u16)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } != 0 || ws.ws_row == 0 {
        return None;
    }
    Some((ws.ws_row, ws.ws_col))
}

/// Relays stdin to the container (with `stdin`), its output to ours, the terminal size (with
/// `tty`), and SIGINT/SIGTERM/SIGHUP to it (through its monitor); returns its exit code.
fn relay(e: &Engine, c: &Container, conn: AttachConn, stdin: bool, tty: bool) -> Result<i32> {
    // Signals to the container, through its monitor (which forwards them). Blocked before any
    // other thread starts: a thread with them unblocked would take them and end this process.
    if !tty {
        forward_signals(e.get(&c.id).map(|c| c.state.monitor_pid).unwrap_or(0));
    }
    let _raw = RawMode::enter(tty && stdin);
    if tty {
        // The size sent is the one the watcher compares with: a resize between two reads
        // would otherwise never be sent.
        let mut last = term_size();
        if let Some((r, cols)) = last {
            let _ = conn.resize(r, cols);
        }
        let resizer = conn.try_clone()?;
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = term_size();
            if now != last {
                if let Some((r, cols)) = now {
                    if resizer.resize(r, cols).is_err() {
                        return;
                    }
                }
                last = now;
            }
        });
    }
    if stdin {
        let input = conn.try_clone()?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            let mut inp = std::io::stdin().lock();
            loop {
                match inp.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = input.close_stdin();
                        return;
                    }
                    Ok(n) => {
                        if input.send_stdin(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let mut buf = vec![0u8; 64 * 1024];
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some((stream, n)) = conn.recv(&mut buf)? {
        if stream == berth_engine::attach::STDERR {
            let _ = err.write_all(&buf[..n]);
        } else {
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
        }
    }
    drop(_raw);
    exit_code(e, c)
}

fn forward_signals(monitor: i32) {
    if monitor <= 0 {
        return;
    }
    // SAFETY: blocking the signals in this (still single-purpose) thread set and waiting for
    // them in a dedicated thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::spawn(move || loop {
            let mut sig = 0;
            if libc::sigwait(&set, &mut sig) == 0 {
                libc::kill(monitor, sig);
            }
        });
    }
}

/// The exit code of a container whose output stream ended: from its exit file (kept for a
/// `--rm` container after its removal), else by waiting for its state.
/// An exit status no one saw (the monitor was killed) is an error, not a made-up code.
fn exit_code(e: &Engine, c: &Container) -> Result<i32> {
    for _ in 0..500 {
        if let Some(code) = e.exit_code_of(&c.id) {
            if c.options.auto_remove {
                e.wait_removed(&c.id, Duration::from_secs(30));
            }
            return Ok(code);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    match e.wait(&c.id) {
        Ok(berth_engine::container::EXIT_UNKNOWN) => Err(Error::msg(format!(
            "container {}: exit status unknown (its monitor died before recording the exit)",
            c.name
        ))),
        Ok(code) => Ok(code),
        Err(err) if err.kind == berth_engine::Kind::NotFound => Ok(0),
        Err(err) => Err(err),
    }
}

fn status_text(c: &Container) -> String {
    let since = |t: &str| {
        let Some(ns) = berth_engine::time::parse_rfc3339(t) else { return String::new() };
        let secs = ((berth_engine::time::now_nanos() as i128 - ns) / 1_000_000_000).max(0) as u64;
        match secs {
            0 => "Less than a second".into(),
            1..=59 => format!("{secs} seconds"),
            60..=3599 => format!("{} minutes", secs / 60),
            3600..=86399 => format!("{} hours", secs / 3600),
            _ => format!("{} days", secs / 86400),
        }
    };
    match c.state.status.as_str() {
        "running" => format!("Up {}", since(&c.state.started_at)),
        "exited" => match c.state.exit_code {
            Some(berth_engine::container::EXIT_UNKNOWN) => {
                format!("Exited (unknown) {} ago", since(&c.state.finished_at))
            }
            code => format!("Exited ({}) {} ago", code.unwrap_or(0), since(&c.state.finished_at)),
        },
        "created" => "Created".into(),
        "creating" => "Creating (incomplete)".into(),
        s => s.to_string(),
    }
}

fn ports_text(c: &Container) -> String {
    let ports = if c.running() { &c.state.ports } else { &c.port_specs };
    ports
        .iter()
        .map(|p| {
            let ip = if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip };
            if p.host_port == 0 {
                format!("{}/{}", p.container_port, p.protocol)
            } else {
                format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.protocol)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn matches_filter(c: &Container, f: &str) -> Result<bool> {
    let (k, v) = f.split_once('=').ok_or_else(|| Error::invalid(format!("--filter {f:?}: expected KEY=VALUE")))?;
    Ok(match k {
        "status" => {
            let s = c.state.status.as_str();
            v == s || (v == "created" && s == "creating")
        }
        "name" => c.name.contains(v),
        "id" => c.id.starts_with(v),
        "ancestor" => {
            c.image == v || c.image_id.trim_start_matches("sha256:").starts_with(v.trim_start_matches("sha256:"))
        }
        "label" => {
            let (lk, lv) = v.split_once('=').map(|(a, b)| (a, Some(b))).unwrap_or((v, None));
            match c.options.labels.get(lk) {
                Some(x) => lv.map(|lv| lv == x).unwrap_or(true),
                None => false,
            }
        }
        "network" => c.network_name_text() == v,
        _ => bail!("--filter {f:?}: unknown key {k:?} (status, name, id, label, ancestor, network)"),
    })
}

trait NetText {
    fn network_name_text(&self) -> String;
}

impl NetText for Container {
    fn network_name_text(&self) -> String {
        self.options.network.clone().unwrap_or_else(|| "bridge".into())
    }
}

fn ps(cli: &Cli, a: &PsArgs) -> Result<i32> {
    let e = open(cli)?;
    if a.format != "table" && a.format != "json" {
        bail!("--format {:?}: table or json", a.format);
    }
    for f in &a.filter {
        let key = f.split_once('=').map(|(k, _)| k).unwrap_or("");
        if !matches!(key, "status" | "name" | "id" | "ancestor" | "label" | "network") {
            bail!("--filter {f:?}: unknown key {key:?} (status, name, id, label, ancestor, network)");
        }
    }
    let mut list = Vec::new();
    for c in e.list()? {
        if !a.all && !c.running() && a.filter.iter().all(|f| !f.starts_with("status=")) {
            continue;
        }
        let mut ok = true;
        for f in &a.filter {
            ok &= matches_filter(&c, f)?;
        }
        if ok {
            list.push(c);
        }
    }
    if a.quiet {
        for c in &list {
            println!("{}", if a.no_trunc { &c.id } else { c.short_id() });
        }
        return Ok(0);
    }
    if a.format == "json" {
        let v: Vec<Value> = list
            .iter()
            .map(|c| {
                json!({
                    "Id": c.id, "Names": [c.name], "Image": c.image, "ImageID": c.image_id,
                    "Command": c.args.join(" "), "Created": c.created, "State": c.state.status,
                    "Status": status_text(c), "ExitCode": c.state.exit_code, "Ports": if c.running() { &c.state.ports } else { &c.port_specs },
                    "Labels": c.options.labels, "Networks": [c.network_name_text()], "Runtime": c.runtime,
                    "Pid": c.state.pid,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    println!("{:<14}{:<28}{:<24}{:<38}{:<34}NAMES", "CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "PORTS");
    for c in &list {
        let mut cmd = format!("\"{}\"", c.args.join(" "));
        if cmd.chars().count() > 22 && !a.no_trunc {
            cmd = format!("{}…\"", cmd.chars().take(19).collect::<String>());
        }
        println!(
            "{:<14}{:<28}{:<24}{:<38}{:<34}{}",
            if a.no_trunc { &c.id } else { c.short_id() },
            c.image,
            cmd,
            status_text(c),
            ports_text(c),
            c.name
        );
    }
    Ok(0)
}

fn logs(cli: &Cli, a: &LogsArgs) -> Result<i32> {
    let e = open(cli)?;
    let tail = match a.tail.as_str() {
        "all" => None,
        n => Some(n.parse::<usize>().map_err(|_| Error::invalid(format!("--tail {n:?}: a number or \"all\"")))?),
    };
    let time = |s: &Option<String>, flag: &str| -> Result<Option<i128>> {
        match s {
            Some(s) => berth_engine::time::parse_since(s).map(Some).ok_or_else(|| {
                Error::invalid(format!("{flag} {s:?}: an RFC 3339 time, a Unix time or a duration (10m)"))
            }),
            None => Ok(None),
        }
    };
    let o = LogOptions { follow: a.follow, tail, since: time(&a.since, "--since")?, until: time(&a.until, "--until")? };
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    e.logs(&a.name, &o, |l| {
        let w: &mut dyn Write = if l.stream == "stderr" { &mut err } else { &mut out };
        if a.timestamps {
            w.write_all(l.time.as_bytes())?;
            w.write_all(b" ")?;
        }
        w.write_all(&l.text)?;
        w.flush()
    })?;
    Ok(0)
}

fn exec(cli: &Cli, a: &ExecArgs) -> Result<i32> {
    let (name, command) = (&a.name_and_command[0], &a.name_and_command[1..]);
    if name.starts_with('-') {
        bail!("exec: unknown option {name:?}");
    }
    if command.is_empty() {
        bail!("exec: no command given (berth exec [OPTIONS] CONTAINER COMMAND [ARG...])");
    }
    let e = open(cli)?;
    let o = ExecOptions {
        command: command.to_vec(),
        env: a.env.iter().map(|x| expand_env(x)).filter(|x| !x.is_empty()).collect(),
        user: a.user.clone(),
        workdir: a.workdir.clone(),
        tty: a.tty,
        interactive: a.interactive,
        detach: a.detach,
        privileged: a.privileged,
    };
    let _raw = RawMode::enter(a.tty && a.interactive && !a.detach);
    e.exec(name, &o)
}

fn inspect(cli: &Cli, a: &NamesArgs) -> Result<i32> {
    let e = open(cli)?;
    let mut out = Vec::new();
    for n in &a.names {
        match e.get(n) {
            Ok(c) => out.push(container_json(&e, &c)),
            Err(err) if err.kind == berth_engine::Kind::NotFound => match e.store.resolve(n) {
                Ok(img) => out.push(e.store.inspect(&img)?),
                Err(_) => return Err(Error::not_found(format!("no such container or image: {n}"))),
            },
            Err(err) => return Err(err),
        }
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(0)
}

fn container_json(e: &Engine, c: &Container) -> Value {
    json!({
        "Id": c.id,
        "Name": c.name,
        "Created": c.created,
        "Path": c.args.first(),
        "Args": c.args.get(1..).unwrap_or(&[]),
        "State": {
            "Status": c.state.status,
            "Running": c.running(),
            "Pid": c.state.pid,
            "ExitCode": c.state.exit_code,
            "OOMKilled": c.state.oom_killed,
            "Error": c.state.error,
            "StartedAt": c.state.started_at,
            "FinishedAt": c.state.finished_at,
            "MonitorPid": c.state.monitor_pid,
        },
        "Image": c.image_id,
        "ImageName": c.image,
        "RestartCount": c.state.restart_count,
        "Runtime": c.runtime,
        "Seccomp": c.seccomp,
        "LogPath": e.container_dir(&c.id).join("ctr.log"),
        "BundlePath": e.container_dir(&c.id),
        "RootFS": e.store.snapshots.rootfs(&c.id),
        "Mounts": c.mounts,
        "Config": {
            "Hostname": c.hostname,
            "User": c.options.user,
            "Env": c.options.env,
            "Cmd": c.options.command,
            "Entrypoint": c.options.entrypoint,
            "WorkingDir": c.options.workdir,
            "Tty": c.options.tty,
            "OpenStdin": c.options.stdin,
            "Labels": c.options.labels,
            "StopSignal": c.stop_signal,
            "StopTimeout": c.stop_timeout,
        },
        "HostConfig": {
            "NetworkMode": c.options.network.clone().unwrap_or_else(|| "bridge".into()),
            "PortBindings": c.port_specs,
            "RestartPolicy": c.restart_policy,
            "AutoRemove": c.options.auto_remove,
            "Privileged": c.options.privileged,
            "ReadonlyRootfs": c.options.read_only,
            "CapAdd": c.options.cap_add,
            "CapDrop": c.options.cap_drop,
            "Memory": c.options.memory.unwrap_or(0),
            "NanoCpus": c.options.cpus.map(|x| (x * 1e9) as i64).unwrap_or(0),
            "PidsLimit": c.options.pids_limit,
            "Init": c.options.init,
            "Dns": c.options.dns,
            "ExtraHosts": c.options.add_hosts,
            "Tmpfs": c.options.tmpfs,
            "Binds": c.options.volumes,
            "SecurityOpt": {"seccomp": c.options.seccomp, "noNewPrivileges": c.options.no_new_privileges},
        },
        "NetworkSettings": {
            "IPAddress": c.state.ip_address,
            "Gateway": c.state.gateway,
            "Ports": c.state.ports,
            "SandboxKey": if c.options.network.as_deref() == Some("host") { Value::Null } else { json!(e.netns_path(&c.id)) },
        },
    })
}

fn wait(cli: &Cli, a: &NamesArgs) -> Result<i32> {
    let e = open(cli)?;
    let mut last = 0;
    for n in &a.names {
        last = e.wait(n)?;
        println!("{last}");
    }
    Ok(if a.names.len() == 1 { 0 } else { last.min(0) })
}

fn top(cli: &Cli, a: &NameArg) -> Result<i32> {
    let e = open(cli)?;
    println!("{:<8}{:<8}{:<8}{:<10}CMD", "UID", "PID", "PPID", "TIME");
    for p in e.top(&a.name)? {
        let t = p.cpu_secs;
        println!(
            "{:<8}{:<8}{:<8}{:<10}{}",
            p.uid,
            p.pid,
            p.ppid,
            format!("{:02}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60),
            p.command
        );
    }
    Ok(0)
}

fn human(b: u64) -> String {
    crate::progress::human_bytes(b)
}

fn stats(cli: &Cli, a: &StatsArgs) -> Result<i32> {
    let e = open(cli)?;
    let ids: Vec<String> = if a.names.is_empty() {
        e.list()?.into_iter().filter(|c| c.running()).map(|c| c.id).collect()
    } else {
        a.names.iter().map(|n| e.resolve_id(n)).collect::<Result<_>>()?
    };
    loop {
        let first: Vec<_> = ids.iter().map(|i| e.stats(i)).collect::<Result<_>>()?;
        let t0 = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        let second: Vec<_> = ids.iter().map(|i| e.stats(i)).collect::<Result<_>>()?;
        let dt = t0.elapsed().as_nanos() as f64;
        if a.format == "json" {
            let v: Vec<Value> = first
                .iter()
                .zip(&second)
                .map(|(x, y)| {
                    let mut v = serde_json::to_value(y).unwrap_or_default();
                    v["CPUPerc"] = json!(100.0 * y.cpu_nanos.saturating_sub(x.cpu_nanos) as f64 / dt);
                    v
                })
                .collect();
            println!("{}", serde_json::to_string(&v).unwrap_or_default());
        } else {
            if !a.no_stream {
                print!("\x1b[2J\x1b[H");
            }
            println!(
                "{:<14}{:<24}{:<10}{:<24}{:<8}{:<22}PIDS",
                "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O"
            );
            for (x, y) in first.iter().zip(&second) {
                let cpu = 100.0 * y.cpu_nanos.saturating_sub(x.cpu_nanos) as f64 / dt;
                let memp = if y.memory_limit > 0 { 100.0 * y.memory_usage as f64 / y.memory_limit as f64 } else { 0.0 };
                println!(
                    "{:<14}{:<24}{:<10}{:<24}{:<8}{:<22}{}",
                    &y.id[..12],
                    y.name,
                    format!("{cpu:.2}%"),
                    format!("{} / {}", human(y.memory_usage), human(y.memory_limit)),
                    format!("{memp:.2}%"),
                    format!("{} / {}", human(y.net_rx), human(y.net_tx)),
                    y.pids
                );
            }
        }
        if a.no_stream {
            return Ok(0);
        }
    }
}

fn port(cli: &Cli, a: &PortArgs) -> Result<i32> {
    let e = open(cli)?;
    let c = e.get(&a.name)?;
    let want = a.port.as_ref().map(|p| {
        let (n, proto) = p.split_once('/').unwrap_or((p, "tcp"));
        (n.parse::<u16>().unwrap_or(0), proto.to_string())
    });
    if !c.running() {
        return Ok(0);
    }
    for p in &c.state.ports {
        if let Some((n, proto)) = &want {
            if p.container_port != *n || p.protocol != *proto {
                continue;
            }
            println!("{}:{}", if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip }, p.host_port);
            continue;
        }
        println!(
            "{}/{} -> {}:{}",
            p.container_port,
            p.protocol,
            if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip },
            p.host_port
        );
    }
    if let Some((n, proto)) = want {
        if !c.state.ports.iter().any(|p| p.container_port == n && p.protocol == proto) {
            return Err(Error::not_found(format!("no public port {n}/{proto} published for {}", c.name)));
        }
    }
    Ok(0)
}

/// `CONTAINER:PATH` → (container, path); a host path (absolute, or with no ':' before a '/')
/// → None.
fn split_container_path(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('/') || s.starts_with('.') {
        return None;
    }
    let (c, p) = s.split_once(':')?;
    if c.is_empty() || c.contains('/') {
        return None;
    }
    Some((c, p))
}

fn cp(cli: &Cli, a: &CpArgs) -> Result<i32> {
    let e = open(cli)?;
    match (split_container_path(&a.src), split_container_path(&a.dst)) {
        (Some((c, p)), None) => e.copy_from(c, p, Path::new(&a.dst))?,
        (None, Some((c, p))) => e.copy_to(Path::new(&a.src), c, p)?,
        (Some(_), Some(_)) => bail!("cp: copying between two containers is not supported: copy to the host first"),
        (None, None) => bail!("cp: one of the paths must be CONTAINER:PATH"),
    }
    Ok(0)
}

fn volume(cli: &Cli, c: &VolumeCommand) -> Result<i32> {
    let e = open(cli)?;
    match c {
        VolumeCommand::Create { name, label } => {
            let mut labels = BTreeMap::new();
            for l in label {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                labels.insert(k.to_string(), v.to_string());
            }
            let v = e.volume_create(name.as_deref(), &labels, false)?;
            println!("{}", v.name);
        }
        VolumeCommand::Ls(f) => {
            let list = e.volume_list()?;
            if f.quiet {
                list.iter().for_each(|v| println!("{}", v.name));
            } else if f.format == "json" {
                println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
            } else {
                println!("{:<10}VOLUME NAME", "DRIVER");
                list.iter().for_each(|v| println!("{:<10}{}", v.driver, v.name));
            }
        }
        VolumeCommand::Inspect(n) => {
            let v: Vec<_> = n.names.iter().map(|n| e.volume_inspect(n)).collect::<Result<_>>()?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        VolumeCommand::Rm { force, names } => {
            for n in names {
                e.volume_remove(n, *force)?;
                println!("{n}");
            }
        }
        VolumeCommand::Prune { .. } => {
            for n in e.volume_prune()? {
                println!("{n}");
            }
        }
    }
    Ok(0)
}

fn network(cli: &Cli, c: &NetworkCommand) -> Result<i32> {
    let e = open(cli)?;
    match c {
        NetworkCommand::Create { name, subnet, bridge } => {
            let n = e.network_create(name, subnet.as_deref(), bridge.as_deref())?;
            println!("{}", n.name);
        }
        NetworkCommand::Ls(f) => {
            e.ensure_default_network()?;
            let list = e.network_list()?;
            if f.quiet {
                list.iter().for_each(|n| println!("{}", n.name));
            } else if f.format == "json" {
                println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
            } else {
                println!("{:<20}{:<10}{:<16}{:<20}CONTAINERS", "NAME", "DRIVER", "BRIDGE", "SUBNET");
                for n in &list {
                    println!("{:<20}{:<10}{:<16}{:<20}{}", n.name, n.driver, n.bridge, n.subnet, n.containers.len());
                }
            }
        }
        NetworkCommand::Inspect(n) => {
            let v: Vec<_> = n.names.iter().map(|n| e.network_inspect(n)).collect::<Result<_>>()?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        NetworkCommand::Check(n) => {
            for net in e.network_check(&n.name)? {
                println!("{net}: ok");
            }
        }
        NetworkCommand::Rm(n) => {
            for name in &n.names {
                e.network_remove(name)?;
                println!("{name}");
            }
        }
    }
    Ok(0)
}

fn system_prune(cli: &Cli, a: &SystemPruneArgs) -> Result<i32> {
    let e = open(cli)?;
    let containers = e.prune_containers()?;
    println!("Deleted containers: {}", containers.len());
    for c in &containers {
        println!("  {}", &c[..12]);
    }
    let mut nets = Vec::new();
    for n in e.network_list()? {
        if !n.default && n.containers.is_empty() {
            e.network_remove(&n.name)?;
            nets.push(n.name);
        }
    }
    println!("Deleted networks: {}", nets.join(" "));
    if a.volumes {
        let v = e.volume_prune()?;
        println!("Deleted volumes: {}", v.len());
    }
    let r = e.store.prune(a.all)?;
    println!("Deleted images: {}, blobs: {} ({}), layers: {}", r.images.len(), r.blobs, human(r.blob_bytes), r.layers);
    Ok(0)
}

fn info(cli: &Cli, a: &InfoArgs) -> Result<i32> {
    let e = open(cli)?;
    let v = e.info()?;
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    println!("Root:             {}", v["Root"].as_str().unwrap_or(""));
    println!("Run root:         {}", v["RunRoot"].as_str().unwrap_or(""));
    println!("Storage driver:   {}", v["StorageDriver"].as_str().unwrap_or(""));
    println!("Cgroup version:   {}", v["CgroupVersion"].as_str().unwrap_or(""));
    println!("Kernel:           {} ({})", v["Kernel"].as_str().unwrap_or(""), v["Architecture"].as_str().unwrap_or(""));
    let features: Vec<String> = v["KernelFeatures"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, on)| format!("{k}={}", if on == true { "yes" } else { "no" }))
        .collect();
    println!("Kernel features:  {}", features.join(" "));
    println!("Default runtime:  {}", v["DefaultRuntime"].as_str().unwrap_or(""));
    println!("Runtimes:");
    for (name, r) in v["Runtimes"].as_object().into_iter().flatten() {
        match r["error"].as_str() {
            Some(err) => println!("  {name:<12} unavailable: {err}"),
            None => println!(
                "  {name:<12} {} ({}) seccomp={} exec={}{}",
                r["path"].as_str().unwrap_or(""),
                r["version"].as_str().unwrap_or(""),
                r["seccomp"],
                r["exec"],
                if r["hideCgroup2"] == true { " (run without the cgroup2 mount)" } else { "" }
            ),
        }
    }
    println!("Containers:       {} ({} running)", v["Containers"], v["ContainersRunning"]);
    println!("Images:           {}", v["Images"]);
    println!("Volumes:          {}", v["Volumes"]);
    println!("Networks:         {}", v["Networks"]);
    Ok(0)
}
