//! `exec` and `cp`.

use std::path::Path;

use berth_engine::attach::ExecOptions;
use berth_engine::{Error, Result};

use super::*;
use crate::Cli;

pub(crate) fn exec(cli: &Cli, a: &ExecArgs) -> Result<i32> {
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

/// `CONTAINER:PATH` → (container, path); a host path (absolute, or with no ':' before a '/')
/// → None.
pub(crate) fn split_container_path(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('/') || s.starts_with('.') {
        return None;
    }
    let (c, p) = s.split_once(':')?;
    if c.is_empty() || c.contains('/') {
        return None;
    }
    Some((c, p))
}

pub(crate) fn cp(cli: &Cli, a: &CpArgs) -> Result<i32> {
    let e = open(cli)?;
    match (split_container_path(&a.src), split_container_path(&a.dst)) {
        (Some((c, p)), None) => e.copy_from(c, p, Path::new(&a.dst))?,
        (None, Some((c, p))) => e.copy_to(Path::new(&a.src), c, p)?,
        (Some(_), Some(_)) => bail!("cp: copying between two containers is not supported: copy to the host first"),
        (None, None) => bail!("cp: one of the paths must be CONTAINER:PATH"),
    }
    Ok(0)
}
