//! `create`, `run` and `start`: docker's flags translated into the engine's typed container
//! configuration.

use std::collections::BTreeMap;
use std::path::Path;

use berth_engine::container::config::{
    ContainerConfig, DnsConfig, NetworkMode, Resources, Seccomp, Security, UserSpec,
};
use berth_engine::{Container, Engine, Error, Result};

use super::*;
use crate::Cli;

pub(crate) fn parse_env_file(p: &Path) -> Result<Vec<String>> {
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
pub(crate) fn expand_env(e: &str) -> String {
    if e.contains('=') {
        return e.to_string();
    }
    match std::env::var(e) {
        Ok(v) => format!("{e}={v}"),
        Err(_) => String::new(),
    }
}

/// docker's flags → the engine's typed configuration. Flag syntax is checked here, naming
/// the flag; the engine checks the configuration itself.
pub(crate) fn options(c: &CreateFlags) -> Result<ContainerConfig> {
    if c.image().starts_with('-') {
        bail!("unknown option {:?}", c.image());
    }
    if let Some(n) = &c.name {
        if !berth_engine::container::valid_name(n) {
            bail!("invalid container name {n:?}: letters, digits, '_', '.' and '-', starting with a letter or digit");
        }
    }
    if let Some(h) = &c.hostname {
        if !berth_engine::spec::valid_hostname(h) {
            bail!("invalid hostname {h:?}");
        }
    }
    let mut env = Vec::new();
    for f in &c.env_file {
        env.extend(parse_env_file(f)?);
    }
    env.extend(c.env.iter().map(|e| expand_env(e)));
    env.retain(|e| !e.is_empty());
    for e in &env {
        if e.starts_with('=') {
            bail!("invalid environment variable {e:?}");
        }
    }
    let mut security = Security::default();
    for s in &c.security_opt {
        match s.split_once(['=', ':']) {
            Some(("seccomp", "unconfined")) => security.seccomp = Seccomp::Unconfined,
            Some(("seccomp", file)) => security.seccomp = Seccomp::Profile(file.into()),
            _ if s == "no-new-privileges" || s == "no-new-privileges=true" || s == "no-new-privileges:true" => {
                security.no_new_privileges = true
            }
            _ => bail!("--security-opt {s:?}: supported are seccomp=FILE, seccomp=unconfined and no-new-privileges"),
        }
    }
    if let Seccomp::Profile(file) = &security.seccomp {
        let text = std::fs::read(file)
            .map_err(|e| Error::invalid(format!("--security-opt seccomp={}: {e}", file.display())))?;
        serde_json::from_slice::<serde_json::Value>(&text)
            .map_err(|e| Error::invalid(format!("--security-opt seccomp={}: {e}", file.display())))?;
    }
    security.privileged = c.privileged;
    security.read_only_rootfs = c.read_only;
    security.cap_add = c.cap_add.clone();
    security.cap_drop = c.cap_drop.clone();
    let mut labels = BTreeMap::new();
    for l in &c.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        if k.is_empty() {
            bail!("--label {l:?}: empty key");
        }
        labels.insert(k.to_string(), v.to_string());
    }
    let mut resources =
        Resources { memory: c.memory.as_deref().map(flags::parse_memory).transpose()?, ..Default::default() };
    if let Some(cpus) = &c.cpus {
        let (quota, period) = flags::parse_cpus(cpus)?;
        resources.cpu_quota = Some(quota);
        resources.cpu_period = Some(period);
    }
    if let Some(p) = c.pids_limit {
        flags::check_pids_limit(p)?;
        resources.pids_limit = Some(p);
    }
    let mut mounts = Vec::new();
    for v in &c.volume {
        mounts.push(flags::parse_volume(v)?);
    }
    for t in &c.tmpfs {
        mounts.push(flags::parse_tmpfs(t)?);
    }
    let mut seen = std::collections::HashSet::new();
    for m in &mounts {
        if !seen.insert(m.destination.trim_end_matches('/').to_string()) {
            bail!("duplicate mount point {}", m.destination);
        }
    }
    let network = flags::parse_network(c.network.as_deref());
    let mut ports = Vec::new();
    for p in &c.publish {
        ports.extend(berth_network::ports::parse(p).map_err(|e| Error::invalid(format!("-p: {}", e.message())))?);
    }
    if !ports.is_empty() && !matches!(network, NetworkMode::Bridge | NetworkMode::Network(_)) {
        bail!("ports cannot be published with --network {}", network.display());
    }
    let mut dns = DnsConfig::default();
    for d in &c.dns {
        dns.servers.push(d.parse().map_err(|_| Error::invalid(format!("--dns {d:?} is not an IP address")))?);
    }
    let extra_hosts = c.add_host.iter().map(|h| flags::parse_add_host(h)).collect::<Result<Vec<_>>>()?;
    let restart = flags::parse_restart(c.restart.as_deref())?;
    if c.rm && restart.name != "no" {
        bail!("--rm and --restart {} cannot be combined", restart.name);
    }
    let stop_signal = match &c.stop_signal {
        Some(s) => {
            Some(berth_image::spec::signal_number(s).map_err(|e| Error::invalid(format!("--stop-signal: {e}")))?)
        }
        None => None,
    };
    let entrypoint = c.entrypoint.as_ref().map(|e| if e.is_empty() { Vec::new() } else { vec![e.clone()] });
    Ok(ContainerConfig {
        name: c.name.clone(),
        image: c.image().to_string(),
        command: if c.command().is_empty() { None } else { Some(c.command().to_vec()) },
        entrypoint,
        env,
        workdir: c.workdir.clone(),
        user: c.user.as_deref().map(UserSpec::parse),
        tty: c.tty,
        stdin: c.interactive,
        hostname: c.hostname.clone(),
        network,
        ports,
        publish_all: c.publish_all,
        dns,
        extra_hosts,
        mounts,
        security,
        resources,
        labels,
        restart,
        auto_remove: c.rm,
        stop_signal,
        stop_timeout: c.stop_timeout,
        init: c.init,
        runtime: c.runtime.clone(),
        ..Default::default()
    })
}

pub(crate) fn create(e: &Engine, c: &CreateFlags) -> Result<Container> {
    let mut opts = options(c)?;
    pull_image(e, c.image(), &c.pull)?;
    opts.healthcheck = healthcheck(e, c)?;
    let ctr = e.create(&opts)?;
    if ctr.seccomp.starts_with("none") {
        eprintln!(
            "berth: warning: {} (the container runs without the default seccomp profile)",
            ctr.seccomp.trim_start_matches("none: ")
        );
    }
    Ok(ctr)
}

pub(crate) fn create_cmd(cli: &Cli, a: &CreateFlags) -> Result<i32> {
    let e = open(cli)?;
    let c = create(&e, a)?;
    println!("{}", c.id);
    Ok(0)
}

pub(crate) fn run_cmd(cli: &Cli, a: &RunArgs) -> Result<i32> {
    let e = open(cli)?;
    let c = create(&e, &a.c)?;
    if a.detach {
        if let Err(err) = e.start(&c.id) {
            if a.c.rm {
                let _ = e.remove(&c.id, true, true);
            }
            return Err(err);
        }
        spawn_health_checker(cli, &c);
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
    spawn_health_checker(cli, &c);
    relay(&e, &c, conn, a.c.interactive, a.c.tty)
}

pub(crate) fn start_cmd(cli: &Cli, a: &StartArgs) -> Result<i32> {
    let e = open(cli)?;
    if !a.attach {
        return each(cli, &a.names, |e, n| {
            e.start(n)?;
            if let Ok(c) = e.get(n) {
                spawn_health_checker(cli, &c);
            }
            Ok(())
        });
    }
    if a.names.len() != 1 {
        bail!("start --attach takes one container");
    }
    let c = e.get(&a.names[0])?;
    match e.start_with(&c.id, |dir| connect_sized(dir, c.config.tty))? {
        Some(conn) => {
            spawn_health_checker(cli, &c);
            relay(&e, &c, conn, a.interactive && c.config.stdin, c.config.tty)
        }
        None => bail!("container {} is already running", c.name),
    }
}

/// `--pull`: the image pulled (with the pull's progress on stderr) when the store lacks it
/// (missing), before every run (always), or never.
fn pull_image(e: &Engine, image: &str, policy: &str) -> Result<()> {
    let wanted = match policy {
        "always" => true,
        "missing" => match e.store.resolve(image) {
            Ok(_) => false,
            Err(err) if err.is(berth_engine::Kind::NotFound) => true,
            Err(err) => return Err(err),
        },
        "never" => false,
        other => bail!("--pull={other}: missing, always or never"),
    };
    if !wanted {
        return Ok(());
    }
    eprintln!("Pulling {image}");
    let auth = berth_image::auth::AuthFile::locate(None);
    let reporter = crate::progress::Reporter::new(false);
    let opts = berth_image::pull::PullOptions { platform: None, auth: &auth, credentials: None, progress: &reporter };
    let pulled = berth_image::pull::pull(&e.store, image, &opts);
    reporter.finish();
    let pulled = pulled.map_err(|err| err.context(format!("pull {image}")))?;
    eprintln!("Pulled {}", pulled.reference);
    Ok(())
}

/// The health check a container gets: `--health-*` over the image's HEALTHCHECK (field by
/// field, as docker merges them); none with `--no-healthcheck`.
fn healthcheck(e: &Engine, c: &CreateFlags) -> Result<Option<berth_engine::container::config::Healthcheck>> {
    use berth_engine::container::config::Healthcheck;
    if c.no_healthcheck {
        if c.health_cmd.is_some() {
            bail!("--no-healthcheck and --health-cmd contradict each other");
        }
        return Ok(None);
    }
    // (A missing image is create's to report.)
    let Ok(img) = e.store.resolve(c.image()) else { return Ok(None) };
    let (raw, _) = e.store.image_config(&img)?;
    let cfg: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
    let image = &cfg["config"]["Healthcheck"];
    let num = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let mut test: Vec<String> = image["Test"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    if let Some(cmd) = &c.health_cmd {
        test = vec!["CMD-SHELL".into(), cmd.clone()];
    }
    let duration = |flag: &str, v: &Option<String>, image: u64| -> Result<u64> {
        match v {
            Some(s) => berth_build::builder::parse_duration(s)
                .ok_or_else(|| Error::invalid(format!("--{flag} {s:?}: a duration (e.g. 30s, 1m30s)"))),
            None => Ok(image),
        }
    };
    let interval = duration("health-interval", &c.health_interval, num(&image["Interval"]))?;
    let timeout = duration("health-timeout", &c.health_timeout, num(&image["Timeout"]))?;
    let start_period = duration("health-start-period", &c.health_start_period, num(&image["StartPeriod"]))?;
    let retries = c.health_retries.unwrap_or(num(&image["Retries"]) as u32);
    Healthcheck::from_test(&test, interval, timeout, start_period, retries)
}

/// Starts the checker process of a container with a health check (it ends with the run).
pub(crate) fn spawn_health_checker(cli: &Cli, c: &Container) {
    if c.config.healthcheck.is_none() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut cmd = std::process::Command::new(exe);
    if let Some(r) = &cli.root {
        cmd.arg("--root").arg(r);
    }
    if let Some(cfg) = &cli.config {
        cmd.arg("--config").arg(cfg);
    }
    cmd.args(["container", "healthcheck-loop", &c.id]);
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid only, between fork and exec: the checker outlives this command's
    // session and terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let _ = cmd.spawn();
}
