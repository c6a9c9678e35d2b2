//! What containers are doing: ps, logs, inspect, wait, top, stats, port.

use std::io::Write;
use std::time::Duration;

use berth_engine::logs::LogOptions;
use berth_engine::{Container, Engine, Error, Result};
use serde_json::{json, Value};

use super::*;
use crate::Cli;

pub(crate) fn status_text(c: &Container, health: Option<berth_engine::container::health::Health>) -> String {
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
        "running" if c.state.paused => format!("Up {} (Paused)", since(&c.state.started_at)),
        "running" => match health {
            Some(h) if h.status == "starting" => format!("Up {} (health: starting)", since(&c.state.started_at)),
            Some(h) => format!("Up {} ({})", since(&c.state.started_at), h.status),
            None => format!("Up {}", since(&c.state.started_at)),
        },
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

pub(crate) fn ports_text(c: &Container) -> String {
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

pub(crate) fn matches_filter(c: &Container, f: &str) -> Result<bool> {
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
            match c.config.labels.get(lk) {
                Some(x) => lv.map(|lv| lv == x).unwrap_or(true),
                None => false,
            }
        }
        "network" => c.network_name_text() == v,
        _ => bail!("--filter {f:?}: unknown key {k:?} (status, name, id, label, ancestor, network)"),
    })
}

pub(crate) trait NetText {
    fn network_name_text(&self) -> String;
}

impl NetText for Container {
    fn network_name_text(&self) -> String {
        self.config.network.display()
    }
}

pub(crate) fn ps(cli: &Cli, a: &PsArgs) -> Result<i32> {
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
    // A pod's containers are berthd's (Kubernetes'): `crictl ps` shows them.
    for c in e.list()?.into_iter().filter(|c| c.config.sandbox.is_none()) {
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
                    "Status": status_text(c, e.health(c)), "ExitCode": c.state.exit_code, "Ports": if c.running() { &c.state.ports } else { &c.port_specs },
                    "Labels": c.config.labels, "Networks": [c.network_name_text()], "Runtime": c.runtime,
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
            status_text(c, e.health(c)),
            ports_text(c),
            c.name
        );
    }
    Ok(0)
}

pub(crate) fn logs(cli: &Cli, a: &LogsArgs) -> Result<i32> {
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

pub(crate) fn inspect(cli: &Cli, a: &NamesArgs) -> Result<i32> {
    let e = open(cli)?;
    let mut out = Vec::new();
    for n in &a.names {
        match e.get(n) {
            Ok(c) => out.push(container_json(&e, &c)),
            Err(err) if err.is(berth_engine::Kind::NotFound) => match e.store.resolve(n) {
                Ok(img) => out.push(e.store.inspect(&img)?),
                Err(_) => return Err(Error::not_found(format!("no such container or image: {n}"))),
            },
            Err(err) => return Err(err),
        }
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(0)
}

pub(crate) fn container_json(e: &Engine, c: &Container) -> Value {
    json!({
        "Id": c.id,
        "Name": c.name,
        "Created": c.created,
        "Path": c.args.first(),
        "Args": c.args.get(1..).unwrap_or(&[]),
        "State": {
            "Status": if c.running() && c.state.paused { "paused" } else { c.state.status.as_str() },
            "Running": c.running(),
            "Paused": c.running() && c.state.paused,
            "Health": e.health(c),
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
        "LogPath": e.log_path(c),
        "BundlePath": e.container_dir(&c.id),
        "RootFS": e.store.snapshots.rootfs(&c.id),
        "Mounts": c.mounts,
        "Config": {
            "Hostname": c.hostname,
            "User": c.config.user.as_ref().map(|u| u.as_user_group()),
            "Env": c.config.env,
            "Cmd": c.config.command,
            "Entrypoint": c.config.entrypoint,
            "WorkingDir": c.config.workdir,
            "Tty": c.config.tty,
            "OpenStdin": c.config.stdin,
            "Labels": c.config.labels,
            "StopSignal": c.stop_signal,
            "StopTimeout": c.stop_timeout,
        },
        "HostConfig": {
            "NetworkMode": c.config.network.display(),
            "PortBindings": c.port_specs,
            "RestartPolicy": c.config.restart,
            "AutoRemove": c.config.auto_remove,
            "Privileged": c.config.security.privileged,
            "ReadonlyRootfs": c.config.security.read_only_rootfs,
            "CapAdd": c.config.security.cap_add,
            "CapDrop": c.config.security.cap_drop,
            "Memory": c.config.resources.memory.unwrap_or(0),
            "NanoCpus": match (c.config.resources.cpu_quota, c.config.resources.cpu_period) {
                (Some(q), Some(p)) if q > 0 && p > 0 => q * 1_000_000_000 / p as i64,
                _ => 0,
            },
            "PidsLimit": c.config.resources.pids_limit,
            "Init": c.config.init,
            "Dns": c.config.dns.servers,
            "ExtraHosts": c.config.extra_hosts.iter().map(|h| format!("{}:{}", h.name, h.ip)).collect::<Vec<_>>(),
            "SecurityOpt": {"seccomp": c.seccomp, "noNewPrivileges": c.config.security.no_new_privileges},
        },
        "NetworkSettings": {
            "IPAddress": c.state.ip_address,
            "Gateway": c.state.gateway,
            "Ports": c.state.ports,
            "SandboxKey": if c.config.network.own_namespace() { json!(e.netns_path(&c.id)) } else { Value::Null },
        },
    })
}

pub(crate) fn wait(cli: &Cli, a: &NamesArgs) -> Result<i32> {
    let e = open(cli)?;
    let mut last = 0;
    for n in &a.names {
        last = e.wait(n)?;
        println!("{last}");
    }
    Ok(if a.names.len() == 1 { 0 } else { last.min(0) })
}

pub(crate) fn top(cli: &Cli, a: &NameArg) -> Result<i32> {
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

pub(crate) fn human(b: u64) -> String {
    crate::progress::human_bytes(b)
}

pub(crate) fn stats(cli: &Cli, a: &StatsArgs) -> Result<i32> {
    let e = open(cli)?;
    let ids: Vec<String> = if a.names.is_empty() {
        e.list()?.into_iter().filter(|c| c.running() && c.config.sandbox.is_none()).map(|c| c.id).collect()
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

pub(crate) fn port(cli: &Cli, a: &PortArgs) -> Result<i32> {
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
