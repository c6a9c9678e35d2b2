//! `network create|ls|inspect|rm|check`.

use berth_engine::Result;

use super::*;
use crate::Cli;

pub(crate) fn network(cli: &Cli, c: &NetworkCommand) -> Result<i32> {
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
