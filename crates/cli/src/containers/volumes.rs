//! `volume create|ls|inspect|rm|prune`.

use std::collections::BTreeMap;

use berth_engine::Result;

use super::*;
use crate::Cli;

pub(crate) fn volume(cli: &Cli, c: &VolumeCommand) -> Result<i32> {
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
