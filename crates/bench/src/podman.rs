//! podman with each OCI runtime, side by side: the same container lifecycle through podman
//! (and conmon) with berth-oci, runc and crun as `--runtime`, in one private podman store.
//!
//! Each iteration, for each runtime in turn: `run --rm IMAGE true` (create, start, wait, delete
//! through podman), then a detached container taken through its life one command at a time:
//! `run -d` (a shell that exits on SIGTERM), `exec true`, `stop`, `rm`. Between runtimes every
//! process podman left (its cleanup processes, conmon) is waited for, so one runtime's
//! stragglers do not slow the next.
//!
//! The podman store, its configuration, the runtimes' state (/run) and anything podman writes at
//! fixed paths live in a private mount namespace and a temporary directory
//! (`berth_testkit::callers`); the containers' cgroups under /berth-bench-podman-PID, removed at
//! the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::callers::{self, Podman};
use berth_testkit::host::{remove_cgroups, unmount_all_under};

use crate::measure::{ms, summarize};

const IMAGE: &str = "localhost/busybox:latest";

/// The steps measured, in the order they run.
const STEPS: [&str; 5] = ["run --rm true", "run -d", "exec true", "stop", "rm"];

struct Runtime {
    name: String,
    path: PathBuf,
    /// Per step, one duration per iteration.
    samples: Vec<Vec<Duration>>,
}

pub fn main(args: &[String]) -> Result<(), String> {
    let mut iterations = 20;
    let mut runtimes: Vec<Runtime> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--iterations" => iterations = it.next().and_then(|v| v.parse().ok()).ok_or("--iterations N")?,
            spec => {
                let (name, path) = spec.split_once('=').ok_or_else(|| format!("{spec}: expected NAME=PATH"))?;
                runtimes.push(Runtime { name: name.into(), path: path.into(), samples: vec![Vec::new(); STEPS.len()] });
            }
        }
    }
    if runtimes.is_empty() {
        return Err("no runtimes given".into());
    }
    for tool in ["podman", "conmon"] {
        if !on_path(tool) {
            return Err(format!("{tool} is not installed (make deps)"));
        }
    }
    let work = std::env::temp_dir().join(format!("berth-bench-podman-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    // While single-threaded: the private /run, /var/tmp and /var/lib of berth_testkit::callers.
    callers::private_run(&work).map_err(|e| format!("a private mount namespace: {e}"))?;
    // SAFETY: plain prctl: conmon and podman's cleanup processes come back to us.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let cgroup_parent = format!("/berth-bench-podman-{}", std::process::id());
    let result = bench(&work, &cgroup_parent, &mut runtimes, iterations);
    drain_children(Duration::from_secs(30));
    remove_cgroups(&cgroup_parent);
    unmount_all_under(&work);
    callers::unshield();
    if let Err(e) = std::fs::remove_dir_all(&work) {
        eprintln!("berth-bench: removing {}: {e}", work.display());
    }
    let version = podman_version();
    result?;
    print_table(&runtimes, iterations, &version);
    Ok(())
}

fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(name).is_file())
}

fn podman_version() -> String {
    Command::new("podman")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "podman".into())
}

/// Runs a podman command to completion; its time. stdout is discarded, stderr passed through.
fn timed(mut cmd: Command) -> Result<Duration, String> {
    let what = format!("{cmd:?}");
    let started = Instant::now();
    let status = cmd.stdin(Stdio::null()).stdout(Stdio::null()).status().map_err(|e| format!("{what}: {e}"))?;
    let elapsed = started.elapsed();
    if !status.success() {
        return Err(format!("{what} failed: {status}"));
    }
    Ok(elapsed)
}

/// Waits until every descendant that came back to us (podman's cleanup processes, conmon) has
/// exited and been reaped, for at most `timeout`.
fn drain_children(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid on any child.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r > 0 {
            continue;
        }
        if r < 0 || Instant::now() > deadline {
            return; // ECHILD: none left
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn bench(work: &Path, cgroup_parent: &str, runtimes: &mut [Runtime], iterations: usize) -> Result<(), String> {
    let archive = work.join("busybox-oci.tar");
    callers::busybox_oci_archive(work, &archive, IMAGE).map_err(|e| format!("the busybox image: {e}"))?;
    let podman = Podman::setup(&work.join("podman")).map_err(|e| e.to_string())?;
    let first = runtimes[0].path.clone();
    let cmd = |runtime: &Path, args: &[&str]| {
        let mut c = podman.command(runtime);
        c.args(args);
        c
    };
    let mut load = cmd(&first, &["load", "--quiet", "--input"]);
    load.arg(&archive);
    timed(load)?;
    let tag = std::process::id();

    // Warm up each runtime once (page cache, first-exec costs).
    for rt in runtimes.iter() {
        timed(cmd(&rt.path, &["run", "--rm", "--cgroup-parent", cgroup_parent, IMAGE, "true"]))?;
        drain_children(Duration::from_secs(30));
    }
    for i in 0..iterations {
        for rt in runtimes.iter_mut() {
            let name = format!("bench-{tag}-{}-{i}", rt.name);
            let p = &rt.path;
            let steps = [
                cmd(p, &["run", "--rm", "--cgroup-parent", cgroup_parent, IMAGE, "true"]),
                cmd(
                    p,
                    &[
                        "run",
                        "-d",
                        "--name",
                        &name,
                        "--cgroup-parent",
                        cgroup_parent,
                        IMAGE,
                        "sh",
                        "-c",
                        "trap 'exit 0' TERM; sleep 1000 & wait",
                    ],
                ),
                cmd(p, &["exec", &name, "true"]),
                cmd(p, &["stop", "--time", "10", &name]),
                cmd(p, &["rm", &name]),
            ];
            for (n, step) in steps.into_iter().enumerate() {
                let d = timed(step);
                if d.is_err() {
                    let _ = timed(cmd(p, &["rm", "--force", "--time", "0", &name]));
                }
                rt.samples[n].push(d?);
            }
            drain_children(Duration::from_secs(30));
        }
    }
    Ok(())
}

fn print_table(runtimes: &[Runtime], iterations: usize, version: &str) {
    let first = &runtimes[0];
    println!(
        "{version} with each OCI runtime: medians of {iterations} iterations in ms (min-max), and {}'s median / this one's",
        first.name
    );
    print!("{:<15}", "step");
    for rt in runtimes {
        print!(" {:>26}", rt.name);
    }
    println!();
    let mut totals = vec![Duration::ZERO; runtimes.len()];
    for (n, step) in STEPS.iter().enumerate() {
        print!("{step:<15}");
        let base = summarize(&first.samples[n]).median;
        for (r, rt) in runtimes.iter().enumerate() {
            let s = summarize(&rt.samples[n]);
            totals[r] += s.median;
            let cell = format!(
                "{} ({}-{}) {:.2}",
                ms(s.median),
                ms(s.min),
                ms(s.max),
                base.as_secs_f64() / s.median.as_secs_f64()
            );
            print!(" {cell:>26}");
        }
        println!();
    }
    print!("{:<15}", "sum of medians");
    for total in &totals {
        print!(" {:>26}", format!("{} {:.2}", ms(*total), totals[0].as_secs_f64() / total.as_secs_f64()));
    }
    println!();
    println!("(ratios below 1.00 mean podman takes less time with {} than with that runtime)", first.name);
}
