//! Command-line access to the test kit, for the Makefile's demo and the benchmarks:
//!   berth-testkit rootfs DIR
//!   berth-testkit bundle DIR [--rootfs PATH] [--hostname NAME] [--memory BYTES] [--cgroups-path PATH] [--] ARGS...
//!   berth-testkit free-port     (prints a free TCP port on 127.0.0.1)
//!   berth-testkit image-layout DIR TAG [--layers N] [--layer-size BYTES] [--compression gzip|zstd|none]
//!       an OCI image layout: the busybox rootfs layer plus N generated layers of BYTES each

use std::path::PathBuf;
use std::process::exit;

fn usage() -> ! {
    eprintln!("usage: berth-testkit rootfs DIR\n       berth-testkit bundle DIR [--rootfs PATH] [--hostname NAME] [--memory BYTES] [--cgroups-path PATH] [--] ARGS...\n       berth-testkit image-layout DIR TAG [--layers N] [--layer-size BYTES] [--compression gzip|zstd|none]");
    exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("free-port") {
        match berth_testkit::registry::free_port() {
            Ok(p) => println!("{p}"),
            Err(e) => {
                eprintln!("berth-testkit: {e}");
                exit(1);
            }
        }
        return;
    }
    let (cmd, dir) = match (args.first(), args.get(1)) {
        (Some(c), Some(d)) => (c.as_str(), PathBuf::from(d)),
        _ => usage(),
    };
    let result = match cmd {
        "rootfs" => berth_testkit::build_busybox_rootfs(&dir),
        "image-layout" => image_layout(&dir, &args[2..]),
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

/// A generated image for benchmarks: the busybox layer, then `layers` layers of `size` bytes
/// of compressible filler each, split into files of up to 4 MiB.
fn image_layout(dir: &std::path::Path, rest: &[String]) -> std::io::Result<()> {
    use berth_testkit::image::{busybox_layer, filler, Compression, Layer, LayerBuilder, OciLayout};
    let tag = rest.first().cloned().unwrap_or_else(|| usage());
    let (mut layers, mut size, mut comp) = (4usize, 32usize << 20, Compression::Gzip);
    let mut it = rest[1..].iter();
    while let Some(a) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--layers" => layers = v.parse().unwrap_or_else(|_| usage()),
            "--layer-size" => size = v.parse().unwrap_or_else(|_| usage()),
            "--compression" => {
                comp = match v.as_str() {
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    "none" => Compression::None,
                    _ => usage(),
                }
            }
            _ => usage(),
        }
    }
    std::fs::create_dir_all(dir)?;
    let mut all = vec![Layer { tar: busybox_layer(dir)?, compression: comp }];
    for l in 0..layers {
        let mut b = LayerBuilder::new();
        b.dir(&format!("data{l}/"), 0o755);
        let mut left = size;
        let mut f = 0;
        while left > 0 {
            let n = left.min(4 << 20);
            b.file(&format!("data{l}/file{f}"), 0o644, &filler((l * 1000 + f) as u64, n));
            left -= n;
            f += 1;
        }
        all.push(Layer { tar: b.finish(), compression: comp });
    }
    let mut layout = OciLayout::create(dir)?;
    let info = layout.image(&all, serde_json::json!({"Cmd": ["/bin/sh"]}), "amd64")?;
    layout.tag(&tag, &info.manifest_descriptor)
}
