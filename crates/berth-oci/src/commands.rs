//! One function per command: argument handling and output; the work is in oci_runtime.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_runtime::cgroups::stats;
use oci_runtime::error::{Context, Error, Result};
use oci_runtime::{lifecycle, CreateOptions, RunOptions, Status};

use crate::cli::{Cli, Command, CreateFlags, EventsArgs, ListArgs, PsArgs, SpecArgs, UpdateArgs};
use crate::log::Logger;
use crate::parse;

/// The state root: --root, else /run/berth-oci (as root) or $XDG_RUNTIME_DIR/berth-oci.
fn state_root(cli: &Cli) -> PathBuf {
    if let Some(r) = &cli.root {
        return r.clone();
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
            return PathBuf::from(dir).join("berth-oci");
        }
    }
    PathBuf::from("/run/berth-oci")
}

fn create_options(f: &CreateFlags, rootless: Option<bool>) -> Result<CreateOptions> {
    if f.preserve_fds < 0 {
        return Err(Error::invalid(format!("--preserve-fds: {} is negative", f.preserve_fds)));
    }
    Ok(CreateOptions {
        bundle: f.bundle.clone(),
        pid_file: f.pid_file.clone(),
        console_socket: f.console_socket.clone(),
        no_pivot: f.no_pivot,
        no_new_keyring: f.no_new_keyring,
        preserve_fds: f.preserve_fds,
        socket_activation: socket_activation()?,
        rootless,
    })
}

/// Sockets systemd (or anything speaking its protocol) activated us with: LISTEN_FDS
/// descriptors from 3, meant for us only if LISTEN_PID is our pid. They go on to the container.
fn socket_activation() -> Result<Option<oci_runtime::process::SocketActivation>> {
    let (Some(count), Some(pid)) = (std::env::var_os("LISTEN_FDS"), std::env::var_os("LISTEN_PID")) else {
        return Ok(None);
    };
    if pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
        return Ok(None);
    }
    let fds =
        count.to_str().and_then(|c| c.parse::<i32>().ok()).filter(|&n| (0..=65536).contains(&n)).ok_or_else(|| {
            Error::invalid(format!("LISTEN_FDS: '{}' is not a descriptor count", count.to_string_lossy()))
        })?;
    if fds == 0 {
        return Ok(None);
    }
    for fd in 3..3 + fds {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(Error::invalid(format!("LISTEN_FDS={fds}: descriptor {fd} is not open")));
        }
    }
    let names = std::env::var("LISTEN_FDNAMES").ok();
    Ok(Some(oci_runtime::process::SocketActivation { fds, names }))
}

pub fn dispatch(cli: &Cli, logger: &Logger) -> Result<i32> {
    if cli.systemd_cgroup {
        return Err(Error::unsupported(
            "--systemd-cgroup: the systemd cgroup driver is not supported by berth-oci yet; use cgroupfs paths",
        ));
    }
    let rootless = match cli.rootless.as_deref() {
        None | Some("auto") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => return Err(Error::invalid(format!("--rootless: '{other}' is not auto, true or false"))),
    };
    let root = state_root(cli);
    if matches!(cli.command, Command::Create(_) | Command::Run(_) | Command::Exec(_)) {
        if matches!(cli.command, Command::Create(_) | Command::Run(_)) {
            oci_runtime::state::ensure_root(&root)?;
        }
        // These run code inside containers: from a copy of ourselves no one can write
        // (CVE-2019-5736).
        oci_runtime::selfexe::ensure_running_unwritable(&root)?;
    }
    logger.debug(|| format!("{:?} (state root {})", cli.command, root.display()));
    match &cli.command {
        Command::Create(a) => {
            let opts = create_options(&a.flags, rootless)?;
            let console = match &opts.console_socket {
                Some(p) => oci_runtime::ConsoleTarget::Path(p.clone()),
                None => oci_runtime::ConsoleTarget::None,
            };
            let created = oci_runtime::create(&root, &a.id, &opts, console)?;
            created.warnings.iter().for_each(|w| logger.warn(w));
            logger.debug(|| format!("container {} created, init pid {}", a.id, created.pid));
            Ok(0)
        }
        Command::Start(a) => {
            lifecycle::start(&root, &a.id)?.iter().for_each(|w| logger.warn(w));
            Ok(0)
        }
        Command::State(a) => {
            let state = lifecycle::state(&root, &a.id)?;
            println!("{}", serde_json::to_string_pretty(&state).expect("state serialises"));
            Ok(0)
        }
        Command::Kill(a) => {
            let sig = parse::signal(a.signal.as_deref().unwrap_or("SIGTERM")).map_err(Error::invalid)?;
            lifecycle::kill(&root, &a.id, sig, a.all).map(|_| 0)
        }
        Command::Delete(a) => match lifecycle::delete(&root, &a.id, a.force) {
            Err(e) if a.force && e.kind() == oci_runtime::ErrorKind::NotFound => Ok(0),
            other => {
                other?.iter().for_each(|w| logger.warn(w));
                Ok(0)
            }
        },
        Command::Run(a) => {
            let opts = RunOptions {
                create: create_options(&a.flags, rootless)?,
                detach: a.detach,
                keep: a.keep,
                no_subreaper: a.no_subreaper,
            };
            let terminal = wants_terminal(&opts.create.bundle)?;
            if a.detach && terminal && opts.create.console_socket.is_none() {
                return Err(Error::invalid("run --detach with process.terminal needs --console-socket"));
            }
            oci_runtime::run(&root, &a.id, &opts, terminal, &mut |w| logger.warn(w))
        }
        Command::List(a) => list(&root, a),
        Command::Ps(a) => ps(&root, a),
        Command::Pause(a) => lifecycle::pause(&root, &a.id).map(|_| 0),
        Command::Resume(a) => lifecycle::resume(&root, &a.id).map(|_| 0),
        Command::Events(a) => events(&root, a),
        Command::Update(a) => update(&root, a, logger),
        Command::Spec(a) => spec(a),
        Command::Exec(a) => exec(&root, a),
        Command::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&oci_runtime::features::features()).expect("features serialise")
            );
            Ok(0)
        }
    }
}

/// Whether the bundle's process wants a terminal (decides how `run` wires stdio).
fn wants_terminal(bundle: &Path) -> Result<bool> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).with_ctx(|| path.display().to_string())?;
    let spec = oci_runtime::config::parse_spec(&bytes, "config.json")?;
    Ok(spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false))
}

fn list(root: &Path, a: &ListArgs) -> Result<i32> {
    let all = lifecycle::list(root)?;
    if a.quiet {
        for s in &all {
            println!("{}", s.id);
        }
        return Ok(0);
    }
    match a.format.as_str() {
        "json" => println!("{}", serde_json::to_string(&all).expect("list serialises")),
        "table" => {
            let mut out = String::from("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER\n");
            for s in &all {
                out += &format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\n",
                    s.id,
                    s.pid,
                    s.status.as_str(),
                    s.bundle.display(),
                    s.created,
                    s.owner
                );
            }
            print!("{}", align_columns(&out));
        }
        other => return Err(Error::invalid(format!("--format: '{other}' is not table or json"))),
    }
    Ok(0)
}

/// Lays out tab-separated rows as space-padded columns (what Go's tabwriter prints).
fn align_columns(text: &str) -> String {
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 < r.len() {
                line += &format!("{cell:<w$}   ", w = widths[i]);
            } else {
                line += cell;
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

fn ps(root: &Path, a: &PsArgs) -> Result<i32> {
    let pids = lifecycle::pids(root, &a.id)?;
    match a.format.as_str() {
        "json" => {
            println!("{}", serde_json::to_string(&pids).expect("pids serialise"));
            Ok(0)
        }
        "table" => {
            let args: Vec<String> = if a.ps_args.is_empty() { vec!["-ef".into()] } else { a.ps_args.clone() };
            let out = std::process::Command::new("ps").args(&args).output().ctx("running ps")?;
            if !out.status.success() {
                return Err(Error::invalid(format!(
                    "ps {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or("");
            let pid_col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .ok_or_else(|| Error::invalid(format!("ps {}: its output has no PID column", args.join(" "))))?;
            println!("{header}");
            for line in lines {
                if let Some(pid) = line.split_whitespace().nth(pid_col).and_then(|p| p.parse::<i32>().ok()) {
                    if pids.contains(&pid) {
                        println!("{line}");
                    }
                }
            }
            Ok(0)
        }
        other => Err(Error::invalid(format!("--format: '{other}' is not table or json"))),
    }
}

fn stats_event(id: &str, cg: &oci_runtime::cgroups::Cgroup) -> Result<String> {
    let data = stats::collect(cg)?;
    let mut data = serde_json::to_value(data).expect("stats serialise");
    // runc's shape has these too (always empty here: no Intel RDT, no interface stats).
    data["intel_rdt"] = serde_json::json!({});
    data["network_interfaces"] = serde_json::Value::Null;
    Ok(serde_json::json!({ "type": "stats", "id": id, "data": data }).to_string())
}

/// OOM kills so far: v1's memory.oom_control, v2's memory.events.
fn oom_kills(cg: &oci_runtime::cgroups::Cgroup) -> u64 {
    let (dir, file) = match cg.mode {
        oci_runtime::cgroups::Mode::Unified => (cg.unified.as_deref(), "memory.events"),
        _ => (cg.v1_dir("memory"), "memory.oom_control"),
    };
    dir.and_then(|d| std::fs::read_to_string(d.join(file)).ok())
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("oom_kill ").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0)
}

fn events(root: &Path, a: &EventsArgs) -> Result<i32> {
    let interval = parse::duration(&a.interval).map_err(|e| Error::invalid(format!("--interval: {e}")))?;
    if interval.is_zero() {
        return Err(Error::invalid("--interval: must be more than 0"));
    }
    let (cg, status) = lifecycle::cgroup(root, &a.id)?;
    if status == Status::Stopped {
        return Err(Error::state(format!("container with id {} is not running", a.id)));
    }
    let stdout = std::io::stdout();
    if a.stats {
        writeln!(stdout.lock(), "{}", stats_event(&a.id, &cg)?).ctx("stdout")?;
        return Ok(0);
    }
    let mut ooms = oom_kills(&cg);
    // As runc: the first statistics after one interval.
    let mut next_stats = Instant::now() + interval;
    loop {
        let (_, status) = match lifecycle::cgroup(root, &a.id) {
            Ok(v) => v,
            Err(e) if e.kind() == oci_runtime::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        if status == Status::Stopped {
            return Ok(0);
        }
        let now_ooms = oom_kills(&cg);
        if now_ooms > ooms {
            ooms = now_ooms;
            writeln!(stdout.lock(), "{}", serde_json::json!({ "type": "oom", "id": a.id })).ctx("stdout")?;
        }
        if Instant::now() >= next_stats {
            writeln!(stdout.lock(), "{}", stats_event(&a.id, &cg)?).ctx("stdout")?;
            next_stats = Instant::now() + interval;
        }
        std::thread::sleep(interval.min(Duration::from_millis(100)));
    }
}

fn update(root: &Path, a: &UpdateArgs, logger: &Logger) -> Result<i32> {
    let flags_given = a.blkio_weight.is_some()
        || a.cpu_period.is_some()
        || a.cpu_quota.is_some()
        || a.cpu_share.is_some()
        || a.cpu_rt_period.is_some()
        || a.cpu_rt_runtime.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some()
        || a.memory.is_some()
        || a.memory_reservation.is_some()
        || a.memory_swap.is_some()
        || a.kernel_memory.is_some()
        || a.kernel_memory_tcp.is_some()
        || a.pids_limit.is_some();
    if a.l3_cache_schema.is_some() || a.mem_bw_schema.is_some() {
        return Err(Error::unsupported("--l3-cache-schema/--mem-bw-schema: Intel RDT is not supported by berth-oci"));
    }
    let resources: oci_spec::runtime::LinuxResources = if let Some(file) = &a.resources {
        if flags_given {
            return Err(Error::invalid("--resources and the individual resource flags cannot be combined"));
        }
        let mut bytes = Vec::new();
        if file == Path::new("-") {
            std::io::stdin().read_to_end(&mut bytes).ctx("reading resources from stdin")?;
        } else {
            bytes = std::fs::read(file).with_ctx(|| file.display().to_string())?;
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de)
            .map_err(|e| Error::invalid(format!("--resources: {}: {}", e.path(), e.inner())))?
    } else {
        resources_from_flags(a)?
    };
    lifecycle::update(root, &a.id, &resources)?.iter().for_each(|w| logger.warn(w));
    Ok(0)
}

fn resources_from_flags(a: &UpdateArgs) -> Result<oci_spec::runtime::LinuxResources> {
    let size = |name: &str, v: &Option<String>| -> Result<Option<i64>> {
        v.as_deref().map(|s| parse::size(s).map_err(|e| Error::invalid(format!("--{name}: {e}")))).transpose()
    };
    let mut memory = serde_json::Map::new();
    for (flag, key, v) in [
        ("memory", "limit", &a.memory),
        ("memory-reservation", "reservation", &a.memory_reservation),
        ("memory-swap", "swap", &a.memory_swap),
        ("kernel-memory", "kernel", &a.kernel_memory),
        ("kernel-memory-tcp", "kernelTCP", &a.kernel_memory_tcp),
    ] {
        if let Some(n) = size(flag, v)? {
            memory.insert(key.into(), n.into());
        }
    }
    let mut cpu = serde_json::Map::new();
    let mut put = |key: &str, v: Option<serde_json::Value>| {
        if let Some(v) = v {
            cpu.insert(key.into(), v);
        }
    };
    put("period", a.cpu_period.map(Into::into));
    put("quota", a.cpu_quota.map(Into::into));
    put("shares", a.cpu_share.map(Into::into));
    put("realtimePeriod", a.cpu_rt_period.map(Into::into));
    put("realtimeRuntime", a.cpu_rt_runtime.map(Into::into));
    put("cpus", a.cpuset_cpus.clone().map(Into::into));
    put("mems", a.cpuset_mems.clone().map(Into::into));
    let mut r = serde_json::Map::new();
    if !memory.is_empty() {
        r.insert("memory".into(), memory.into());
    }
    if !cpu.is_empty() {
        r.insert("cpu".into(), cpu.into());
    }
    if let Some(p) = a.pids_limit {
        r.insert("pids".into(), serde_json::json!({ "limit": p }));
    }
    if let Some(w) = a.blkio_weight {
        r.insert("blockIO".into(), serde_json::json!({ "weight": w }));
    }
    serde_json::from_value(r.into()).map_err(|e| Error::invalid(format!("resource flags: {e}")))
}

fn exec(root: &Path, a: &crate::cli::ExecArgs) -> Result<i32> {
    if a.cgroup.is_some() {
        return Err(Error::unsupported("exec --cgroup: running in a sub-cgroup is not supported by berth-oci yet"));
    }
    if a.preserve_fds < 0 {
        return Err(Error::invalid(format!("--preserve-fds: {} is negative", a.preserve_fds)));
    }
    let mut process = match &a.process {
        Some(file) => oci_runtime::exec::process_from_file(file)?,
        None => {
            let user = a
                .user
                .as_deref()
                .map(|u| {
                    let bad = || Error::invalid(format!("--user: '{u}' is not uid[:gid] (numbers)"));
                    let (uid, gid) = match u.split_once(':') {
                        Some((uid, gid)) => (uid.parse().map_err(|_| bad())?, Some(gid.parse().map_err(|_| bad())?)),
                        None => (u.parse().map_err(|_| bad())?, None),
                    };
                    Ok::<_, Error>((uid, gid))
                })
                .transpose()?;
            let gids = a
                .additional_gids
                .iter()
                .map(|g| g.parse().map_err(|_| Error::invalid(format!("--additional-gids: '{g}' is not a number"))))
                .collect::<Result<Vec<u32>>>()?;
            let o = oci_runtime::exec::ProcessOverrides {
                args: a.args.clone(),
                env: a.env.clone(),
                cwd: a.cwd.clone(),
                user,
                additional_gids: gids,
                caps: a.caps.clone(),
                no_new_privileges: a.no_new_privs,
                tty: a.tty,
            };
            oci_runtime::exec::process_from_config(root, &a.id, &o)?
        }
    };
    if let Some(label) = &a.process_label {
        process.set_selinux_label(Some(label.clone()));
    }
    if let Some(profile) = &a.apparmor {
        process.set_apparmor_profile(Some(profile.clone()));
    }
    let opts = oci_runtime::exec::ExecOptions {
        process,
        console_socket: a.console_socket.clone(),
        detach: a.detach,
        pid_file: a.pid_file.clone(),
        preserve_fds: a.preserve_fds,
        ignore_paused: a.ignore_paused,
    };
    oci_runtime::exec::exec(root, &a.id, &opts)
}

fn spec(a: &SpecArgs) -> Result<i32> {
    let dir = a.bundle.clone().unwrap_or_else(|| PathBuf::from("."));
    let path = dir.join("config.json");
    if path.exists() {
        return Err(Error::new(
            oci_runtime::ErrorKind::AlreadyExists,
            format!("{} exists: remove it first", path.display()),
        ));
    }
    let spec = oci_runtime::spec::default_spec(a.rootless);
    let text = oci_runtime::spec::to_tabbed_json(&spec);
    std::fs::write(&path, text + "\n").with_ctx(|| path.display().to_string())?;
    Ok(0)
}
