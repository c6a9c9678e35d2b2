//! Command-line access to the test kit, for the Makefile's demo and the benchmarks:
//!   berth-testkit rootfs DIR
//!   berth-testkit bundle DIR [--rootfs PATH] [--hostname NAME] [--memory BYTES] [--cgroups-path PATH] [--] ARGS...

use std::path::PathBuf;
use std::process::exit;

fn usage() -> ! {
    eprintln!("usage: berth-testkit rootfs DIR\n       berth-testkit bundle DIR [--rootfs PATH] [--hostname NAME] [--memory BYTES] [--cgroups-path PATH] [--] ARGS...");
    exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, dir) = match (args.first(), args.get(1)) {
        (Some(c), Some(d)) => (c.as_str(), PathBuf::from(d)),
        _ => usage(),
    };
    let result = match cmd {
        "rootfs" => berth_testkit::build_busybox_rootfs(&dir),
        "bundle" => {
            let mut rest = args[2..].iter();
            let mut rootfs = None;
            let mut hostname = None;
            let mut memory = None;
            let mut cgroups_path = None;
            let mut program = Vec::new();
            while let Some(a) = rest.next() {
                match a.as_str() {
                    "--rootfs" => rootfs = rest.next().cloned(),
                    "--hostname" => hostname = rest.next().cloned(),
                    "--memory" => memory = rest.next().and_then(|m| m.parse::<i64>().ok()),
                    "--cgroups-path" => cgroups_path = rest.next().cloned(),
                    "--" => {
                        program.extend(rest.by_ref().cloned());
                    }
                    _ => program.push(a.clone()),
                }
            }
            if program.is_empty() {
                program.push("sh".into());
            }
            let argv: Vec<&str> = program.iter().map(String::as_str).collect();
            let built = match &rootfs {
                Some(r) => Ok(berth_testkit::Bundle::with_rootfs(&dir, r, &argv)),
                None => berth_testkit::Bundle::busybox(&dir, &argv),
            };
            built.and_then(|mut b| {
                if let Some(h) = hostname {
                    b.config["hostname"] = h.into();
                }
                if let Some(p) = cgroups_path {
                    b.config["linux"]["cgroupsPath"] = p.into();
                }
                if let Some(m) = memory {
                    b.config["linux"]["resources"]["memory"] = serde_json::json!({ "limit": m });
                }
                b.write()
            })
        }
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("berth-testkit: {e}");
        exit(1);
    }
}
