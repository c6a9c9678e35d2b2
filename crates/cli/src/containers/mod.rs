//! The container commands: run, create, start, stop, restart, kill, rm, ps, logs, exec, attach,
//! inspect, wait, top, stats, port, cp, volume, network, system prune, info — a thin layer over
//! berth-engine (argument parsing, output formats, the terminal).

// Before the modules: a macro is in scope only after its definition.
macro_rules! bail {
    ($($t:tt)*) => { return Err(Error::invalid(format!($($t)*))) };
}

mod args;
mod create;
mod exec;
mod flags;
mod inspect;
mod manage;
mod networks;
mod system;
mod terminal;
mod volumes;

use crate::{Cli, Command};
use berth_engine::{Engine, Error, Result};
use std::path::PathBuf;

pub use args::*;
use create::*;
use exec::*;
use inspect::*;
pub use manage::{CommitArgs, EventsArgs, ExportArgs, HistoryArgs, RenameArgs, UpdateArgs, VersionArgs};
use networks::*;
use system::*;
use terminal::*;
use volumes::*;

pub(crate) fn open(cli: &Cli) -> Result<Engine> {
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
        Command::Build(a) => crate::build::build_cmd(cli, a),
        Command::Pause(a) => each(cli, &a.names, |e, n| e.pause(n)),
        Command::Unpause(a) => each(cli, &a.names, |e, n| e.unpause(n)),
        Command::Rename(a) => open(cli).and_then(|e| e.rename(&a.container, &a.new_name)).map(|_| 0),
        Command::Update(a) => manage::update(cli, a),
        Command::Diff(a) => manage::diff(cli, &a.name),
        Command::Commit(a) => manage::commit(cli, a),
        Command::Export(a) => manage::export(cli, a),
        Command::History(a) | Command::Image(crate::images::ImageCommand::History(a)) => manage::history(cli, a),
        Command::Version(a) => manage::version(cli, a),
        Command::Events(a) | Command::System(crate::images::SystemCommand::Events(a)) => manage::events(cli, a),
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
        Command::Container(ContainerCommand::Cleanup { id }) => open(cli).and_then(|e| {
            e.on_exit(id)?;
            // Restarted by its policy: a checker for the new run.
            if let Ok(c) = e.get(id) {
                if c.running() {
                    spawn_health_checker(cli, &c);
                }
            }
            Ok(0)
        }),
        Command::Container(ContainerCommand::HealthcheckLoop { id }) => {
            open(cli).and_then(|e| e.health_loop(id)).map(|_| 0)
        }
        Command::Healthcheck(HealthcheckCommand::Run { name }) => open(cli).and_then(|e| {
            let h = e.health_check(name)?;
            println!("{}", h.status);
            Ok(if h.status == "unhealthy" || h.log.last().is_some_and(|r| r.exit_code != 0) { 1 } else { 0 })
        }),
        Command::System(crate::images::SystemCommand::Prune(a)) => system_prune(cli, a),
        _ => return None,
    };
    Some(r)
}

pub(crate) fn each(cli: &Cli, names: &[String], f: impl Fn(&Engine, &str) -> Result<()>) -> Result<i32> {
    let e = open(cli)?;
    let mut failed = None;
    for n in names {
        match only_ours(&e, n).and_then(|_| f(&e, n)) {
            Ok(()) => println!("{n}"),
            // One name: its error is the command's, printed once by main.
            Err(err) if names.len() == 1 => return Err(err),
            Err(err) => {
                eprintln!("berth: {n}: {err}");
                failed = Some(err);
            }
        }
    }
    Ok(if failed.is_some() { 1 } else { 0 })
}

/// The CLI's own containers: a pod's belong to berthd (Kubernetes), which removes them.
pub(crate) fn only_ours(e: &Engine, name_or_id: &str) -> Result<()> {
    match e.get(name_or_id) {
        Ok(c) if c.config.sandbox.is_some() => Err(Error::state(format!(
            "container {} belongs to a Kubernetes pod run by berthd: manage it with crictl or kubelet",
            c.name
        ))),
        _ => Ok(()),
    }
}
