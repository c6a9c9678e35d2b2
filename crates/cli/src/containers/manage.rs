//! docker's everyday commands beyond run and ps: `pause`, `unpause`, `rename`, `update`,
//! `diff`, `commit`, `export`, `history` and `version`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use berth_engine::container::config::Resources;
use berth_engine::{Error, Result};
use clap::Args;
use serde_json::{json, Value};

use super::{each, flags, open};
use crate::Cli;

#[derive(Args, Debug)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Memory limit (e.g. 256m)
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Memory + swap limit (-1: unlimited swap)
    #[arg(long)]
    pub memory_swap: Option<String>,
    /// CPUs (e.g. 1.5)
    #[arg(long)]
    pub cpus: Option<String>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long)]
    pub cpu_shares: Option<u64>,
    /// CPUs the container may run on (0-3, 0,1)
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes it may use
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Most processes (-1: no limit)
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Restart policy
    #[arg(long)]
    pub restart: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author (e.g. "Name <email>")
    #[arg(short, long)]
    pub author: Option<String>,
    /// Commit message
    #[arg(short, long)]
    pub message: Option<String>,
    /// A Containerfile instruction for the image's config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
    /// ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL)
    #[arg(short, long = "change")]
    pub changes: Vec<String>,
    /// Pause the container while its files are read
    #[arg(short, long, default_value = "true", action = clap::ArgAction::Set)]
    pub pause: bool,
    pub container: String,
    /// REPOSITORY[:TAG]
    pub reference: Option<String>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to this file instead of standard output
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Do not truncate the output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
    pub image: String,
}

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
}

pub(crate) fn update(cli: &Cli, a: &UpdateArgs) -> Result<i32> {
    let restart = a.restart.as_deref().map(|r| flags::parse_restart(Some(r))).transpose()?;
    let asked = a.memory.is_some()
        || a.memory_swap.is_some()
        || a.cpus.is_some()
        || a.cpu_shares.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some()
        || a.pids_limit.is_some();
    if !asked && restart.is_none() {
        bail!("update: nothing to change (give --memory, --cpus, --pids-limit, --restart, ...)");
    }
    each(cli, &a.names, |e, n| {
        if asked {
            let c = e.get(n)?;
            let mut r: Resources = c.config.resources.clone();
            if let Some(m) = &a.memory {
                r.memory = Some(flags::parse_memory(m)?);
            }
            if let Some(m) = &a.memory_swap {
                r.memory_swap = Some(if m == "-1" { -1 } else { flags::parse_memory(m)? });
            }
            if let Some(cpus) = &a.cpus {
                let (quota, period) = flags::parse_cpus(cpus)?;
                r.cpu_quota = Some(quota);
                r.cpu_period = Some(period);
            }
            if let Some(s) = a.cpu_shares {
                r.cpu_shares = Some(s);
            }
            if let Some(s) = &a.cpuset_cpus {
                r.cpuset_cpus = Some(s.clone());
            }
            if let Some(s) = &a.cpuset_mems {
                r.cpuset_mems = Some(s.clone());
            }
            if let Some(p) = a.pids_limit {
                flags::check_pids_limit(p)?;
                r.pids_limit = Some(p);
            }
            e.update_resources(n, &r)?;
        }
        if let Some(policy) = &restart {
            e.update_restart_policy(n, policy.clone())?;
        }
        Ok(())
    })
}

pub(crate) fn diff(cli: &Cli, name: &str) -> Result<i32> {
    let e = open(cli)?;
    let c = e.get(name)?;
    let mut out = std::io::stdout().lock();
    for ch in berth_build::container::changes(&e, &c)? {
        let _ = writeln!(out, "{} {}", ch.kind, ch.path);
    }
    Ok(0)
}

pub(crate) fn commit(cli: &Cli, a: &CommitArgs) -> Result<i32> {
    let e = open(cli)?;
    let c = e.get(&a.container)?;
    let opts = berth_build::container::CommitOptions {
        reference: a.reference.clone(),
        message: a.message.clone(),
        author: a.author.clone(),
        changes: a.changes.clone(),
        pause: a.pause,
    };
    let id = berth_build::container::commit(&e, &c, &opts)?;
    println!("{id}");
    Ok(0)
}

pub(crate) fn export(cli: &Cli, a: &ExportArgs) -> Result<i32> {
    let e = open(cli)?;
    let c = e.get(&a.container)?;
    match &a.output {
        Some(path) => {
            let f =
                std::fs::File::create(path).map_err(|err| Error::from_io(err).context(path.display().to_string()))?;
            berth_build::container::export(&e, &c, std::io::BufWriter::new(f))?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write a tar to a terminal: redirect the output or give -o FILE");
            }
            berth_build::container::export(&e, &c, std::io::BufWriter::new(std::io::stdout().lock()))?;
        }
    }
    Ok(0)
}

pub(crate) fn history(cli: &Cli, a: &HistoryArgs) -> Result<i32> {
    let e = open(cli)?;
    let img = e.store.resolve(&a.image)?;
    let (raw, _) = e.store.image_config(&img)?;
    let cfg: Value =
        serde_json::from_slice(&raw).map_err(|err| Error::msg(format!("image {}: config: {err}", a.image)))?;
    let history: Vec<Value> = cfg["history"].as_array().cloned().unwrap_or_default();
    // Layers in order, matched to the history entries that made one.
    let mut sizes = img.layers.iter().map(|l| l.size.max(0) as u64);
    let mut rows = Vec::new();
    let newest = history.len().saturating_sub(1);
    for (i, h) in history.iter().enumerate() {
        let size = if h["empty_layer"] == true { 0 } else { sizes.next().unwrap_or(0) };
        let id = if i == newest { img.id().to_string() } else { "<missing>".to_string() };
        rows.push((
            id,
            h["created"].as_str().unwrap_or("").to_string(),
            h["created_by"].as_str().unwrap_or("").to_string(),
            size,
            h["comment"].as_str().unwrap_or("").to_string(),
        ));
    }
    rows.reverse();
    match a.format.as_str() {
        "json" => {
            let v: Vec<Value> = rows
                .iter()
                .map(|(id, created, by, size, comment)| json!({"Id": id, "Created": created, "CreatedBy": by, "Size": size, "Comment": comment}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        "table" => {
            let mut out = std::io::stdout().lock();
            if a.quiet {
                for (id, ..) in &rows {
                    let _ = writeln!(out, "{}", if a.no_trunc || id.starts_with('<') { id.clone() } else { short(id) });
                }
                return Ok(0);
            }
            let _ = writeln!(out, "{:<14} {:<22} {:<46} {:<10} COMMENT", "IMAGE", "CREATED", "CREATED BY", "SIZE");
            for (id, created, by, size, comment) in &rows {
                let id = if a.no_trunc || id.starts_with('<') { id.clone() } else { short(id) };
                let by = if a.no_trunc || by.chars().count() <= 45 {
                    by.clone()
                } else {
                    format!("{}…", by.chars().take(44).collect::<String>())
                };
                let _ = writeln!(
                    out,
                    "{id:<14} {created:<22} {by:<46} {:<10} {comment}",
                    crate::progress::human_bytes(*size)
                );
            }
        }
        other => bail!("--format {other:?}: table or json"),
    }
    Ok(0)
}

fn short(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

pub(crate) fn version(cli: &Cli, a: &VersionArgs) -> Result<i32> {
    let _ = cli;
    let v = json!({
        "Client": {
            "Version": env!("CARGO_PKG_VERSION"),
            "Os": std::env::consts::OS,
            "Arch": berth_image::manifest::Platform::host().architecture,
            "CgroupVersion": berth_engine::runtime::cgroup_version(),
        },
    });
    match a.format.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        "table" => {
            println!("berth version {}", env!("CARGO_PKG_VERSION"));
            println!("OS/Arch:        {}/{}", std::env::consts::OS, v["Client"]["Arch"].as_str().unwrap_or(""));
            println!("Cgroups:        {}", berth_engine::runtime::cgroup_version());
        }
        other => bail!("--format {other:?}: table or json"),
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Events from this time on (RFC 3339, a Unix time, or a duration ago: 10m)
    #[arg(long)]
    pub since: Option<String>,
    /// Events until this time; without it, new events are followed
    #[arg(long)]
    pub until: Option<String>,
    /// KEY=VALUE: type, event, container, image (several: all must match; one key given
    /// several times: any of its values)
    #[arg(short, long = "filter")]
    pub filters: Vec<String>,
    /// table or json (an object a line)
    #[arg(long, default_value = "table")]
    pub format: String,
}

pub(crate) fn events(cli: &Cli, a: &EventsArgs) -> Result<i32> {
    let time = |s: &Option<String>, flag: &str| -> Result<Option<i64>> {
        match s {
            Some(s) => berth_engine::time::parse_since(s).map(|t| Some(t as i64)).ok_or_else(|| {
                Error::invalid(format!("{flag} {s:?}: an RFC 3339 time, a Unix time or a duration (10m)"))
            }),
            None => Ok(None),
        }
    };
    let mut filters = Vec::new();
    for f in &a.filters {
        let Some((k, v)) = f.split_once('=') else { bail!("--filter {f:?}: KEY=VALUE") };
        if !berth_image::events::known_filter(k) {
            bail!("--filter {f:?}: {k} is not one of type, event, container, image");
        }
        filters.push((k.to_string(), v.to_string()));
    }
    if a.format != "table" && a.format != "json" {
        bail!("--format {:?}: table or json", a.format);
    }
    let (since, until) = (time(&a.since, "--since")?, time(&a.until, "--until")?);
    // As docker: without --since (or --until), only what happens from now on.
    let now = berth_engine::time::now_nanos() as i64;
    let since = since.or_else(|| until.is_none().then_some(now));
    let q = berth_image::events::Query { since, until, filters };
    let root = berth_image::Store::default_root(cli.root.as_deref());
    let json = a.format == "json";
    let mut out = std::io::stdout().lock();
    berth_image::events::read(&root, &q, q.until.is_none() || q.until > Some(now), &mut |e| {
        let line = if json {
            serde_json::to_string(e).unwrap_or_default()
        } else {
            let secs = e.time_nano.div_euclid(1_000_000_000);
            let t = berth_engine::time::format_rfc3339(secs, e.time_nano.rem_euclid(1_000_000_000) as u32);
            let attrs: Vec<String> = e.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{t} {} {} {} ({})", e.kind, e.action, e.id, attrs.join(", "))
        };
        writeln!(out, "{line}").and_then(|_| out.flush()).is_ok()
    })
    .map_err(|e| Error::from_io(e).context("events"))?;
    Ok(0)
}
