//! `system prune` (the containers' and volumes' part) and `info`.

use berth_engine::Result;

use super::*;
use crate::Cli;

pub(crate) fn system_prune(cli: &Cli, a: &SystemPruneArgs) -> Result<i32> {
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

pub(crate) fn info(cli: &Cli, a: &InfoArgs) -> Result<i32> {
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
