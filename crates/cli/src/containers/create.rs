//! `create`, `run` and `start`: docker's flags translated into the engine's options.

use std::collections::BTreeMap;
use std::path::Path;

use berth_engine::{Container, CreateOptions, Engine, Error, Result};

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

pub(crate) fn options(c: &CreateFlags) -> Result<CreateOptions> {
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

pub(crate) fn create(e: &Engine, c: &CreateFlags) -> Result<Container> {
    let ctr = e.create(&options(c)?)?;
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

pub(crate) fn start_cmd(cli: &Cli, a: &StartArgs) -> Result<i32> {
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
