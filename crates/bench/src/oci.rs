//! OCI runtimes side by side: the lifecycle of a /bin/true container, exec of /bin/true into a
//! running container (what liveness probes cost), and sequential runs.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_sys::process;

use crate::measure::{ms, run, summarize};

struct Runtime {
    name: String,
    path: PathBuf,
    lifecycle: Vec<Duration>,
    execs: Vec<Duration>,
    runs: Duration,
    peak_rss_kib: u64,
}

fn wait_for_exit(pid: i32) -> Result<(), String> {
    let Ok(fd) = process::pidfd_open(pid) else {
        // Already gone (and reaped by us as subreaper).
        return Ok(());
    };
    // A pidfd is readable once its process has exited.
    match process::poll_readable(&[fd.as_fd()], 30_000) {
        Ok(ready) if ready[0] => Ok(()),
        _ => Err(format!("container init {pid} did not exit")),
    }
}

/// Reaps container inits re-parented to us (we are their subreaper).
fn reap_orphans() {
    let mut status = 0;
    // SAFETY: plain waitpid.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}

pub fn main(args: &[String]) -> Result<(), String> {
    let mut iterations = 30;
    let mut runs = 100;
    let mut runtimes: Vec<Runtime> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--iterations" => iterations = it.next().and_then(|v| v.parse().ok()).ok_or("--iterations N")?,
            "--runs" => runs = it.next().and_then(|v| v.parse().ok()).ok_or("--runs N")?,
            spec => {
                let (name, path) = spec.split_once('=').ok_or_else(|| format!("{spec}: expected NAME=PATH"))?;
                runtimes.push(Runtime {
                    name: name.into(),
                    path: path.into(),
                    lifecycle: Vec::new(),
                    execs: Vec::new(),
                    runs: Duration::ZERO,
                    peak_rss_kib: 0,
                });
            }
        }
    }
    if runtimes.is_empty() {
        return Err("no runtimes given".into());
    }
    // SAFETY: plain prctl: container inits come back to us when their runtime exits.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let work = std::env::temp_dir().join(format!("berth-bench-oci-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let result = bench(&work, &mut runtimes, iterations, runs);
    let _ = std::fs::remove_dir_all(&work);
    result?;
    print_table(&runtimes, iterations, runs);
    Ok(())
}

fn bench(work: &Path, runtimes: &mut [Runtime], iterations: usize, runs: usize) -> Result<(), String> {
    let rootfs = work.join("rootfs");
    berth_testkit::build_busybox_rootfs(&rootfs).map_err(|e| e.to_string())?;
    let mut bundle = berth_testkit::Bundle::with_rootfs(&work.join("bundle"), rootfs.to_str().unwrap(), &["/bin/true"]);
    // The version every runtime here accepts (Debian's crun 1.8 refuses 1.2.0).
    bundle.config["ociVersion"] = "1.0.2".into();
    bundle.write().map_err(|e| e.to_string())?;
    let bundle_dir = bundle.dir.to_str().unwrap().to_string();
    let tag = std::process::id();
    let s = |v: &str| v.to_string();

    // Warm up each runtime once (page cache, first-exec costs).
    for rt in runtimes.iter() {
        let root = work.join(format!("state-{}", rt.name));
        let id = format!("bench-{tag}-{}-warm", rt.name);
        run(&[
            rt.path.display().to_string(),
            s("--root"),
            root.display().to_string(),
            s("run"),
            s("--bundle"),
            bundle_dir.clone(),
            id,
        ])?;
    }
    for i in 0..iterations {
        for rt in runtimes.iter_mut() {
            let root = work.join(format!("state-{}", rt.name)).display().to_string();
            let id = format!("bench-{tag}-{}-{i}", rt.name);
            let pid_file = work.join(format!("{id}.pid"));
            let base = [rt.path.display().to_string(), s("--root"), root];
            let started = Instant::now();
            let create = run(&[
                &base[..],
                &[
                    s("create"),
                    s("--bundle"),
                    bundle_dir.clone(),
                    s("--pid-file"),
                    pid_file.display().to_string(),
                    id.clone(),
                ],
            ]
            .concat())?;
            let pid: i32 = std::fs::read_to_string(&pid_file)
                .map_err(|e| e.to_string())?
                .trim()
                .parse()
                .map_err(|_| "bad pid file")?;
            let start = run(&[&base[..], &[s("start"), id.clone()]].concat())?;
            wait_for_exit(pid)?;
            let delete = run(&[&base[..], &[s("delete"), id.clone()]].concat())?;
            rt.lifecycle.push(started.elapsed());
            rt.peak_rss_kib = rt.peak_rss_kib.max(create.max_rss_kib).max(start.max_rss_kib).max(delete.max_rss_kib);
            reap_orphans();
        }
    }
    bench_exec(work, runtimes, iterations)?;
    for rt in runtimes.iter_mut() {
        let root = work.join(format!("state-{}", rt.name)).display().to_string();
        let started = Instant::now();
        for i in 0..runs {
            let id = format!("bench-{tag}-{}-run{i}", rt.name);
            let r = run(&[
                rt.path.display().to_string(),
                s("--root"),
                root.clone(),
                s("run"),
                s("--bundle"),
                bundle_dir.clone(),
                id,
            ])?;
            rt.peak_rss_kib = rt.peak_rss_kib.max(r.max_rss_kib);
        }
        rt.runs = started.elapsed();
        reap_orphans();
    }
    Ok(())
}

/// `exec` of /bin/true into a running container, each runtime's turn interleaved with the
/// others' as in the lifecycle.
fn bench_exec(work: &Path, runtimes: &mut [Runtime], iterations: usize) -> Result<(), String> {
    let rootfs = work.join("rootfs");
    let mut bundle = berth_testkit::Bundle::with_rootfs(
        &work.join("bundle-sleep"),
        rootfs.to_str().unwrap(),
        &["/bin/sleep", "1000"],
    );
    bundle.config["ociVersion"] = "1.0.2".into();
    bundle.write().map_err(|e| e.to_string())?;
    let bundle_dir = bundle.dir.to_str().unwrap().to_string();
    let s = |v: &str| v.to_string();
    let base = |rt: &Runtime| {
        [rt.path.display().to_string(), s("--root"), work.join(format!("state-{}", rt.name)).display().to_string()]
    };
    let id = |rt: &Runtime| format!("bench-{}-{}-exec", std::process::id(), rt.name);
    for rt in runtimes.iter() {
        run(&[&base(rt)[..], &[s("run"), s("--detach"), s("--bundle"), bundle_dir.clone(), id(rt)]].concat())?;
    }
    let result = (|| {
        for _ in 0..iterations {
            for rt in runtimes.iter_mut() {
                let started = Instant::now();
                let r = run(&[&base(rt)[..], &[s("exec"), id(rt), s("/bin/true")]].concat())?;
                rt.execs.push(started.elapsed());
                rt.peak_rss_kib = rt.peak_rss_kib.max(r.max_rss_kib);
            }
        }
        Ok(())
    })();
    for rt in runtimes.iter() {
        run(&[&base(rt)[..], &[s("delete"), s("--force"), id(rt)]].concat())?;
    }
    reap_orphans();
    result
}

fn print_table(runtimes: &[Runtime], iterations: usize, runs: usize) {
    let first = &runtimes[0];
    let first_med = summarize(&first.lifecycle).median;
    let first_exec = summarize(&first.execs).median;
    println!(
        "OCI runtimes: create+start+wait+delete of /bin/true and exec of /bin/true into a running container \
         ({iterations} iterations each), {runs} sequential runs"
    );
    println!(
        "{:<10} {:>12} {:>17} {:>14} {:>12} {:>14} {:>12} {:>14} {:>14}",
        "runtime",
        "median ms",
        "min-max ms",
        format!("{}/this", first.name),
        "exec ms",
        format!("{}/this", first.name),
        format!("{runs} runs s"),
        format!("{}/this", first.name),
        "peak RSS MiB"
    );
    for rt in runtimes {
        let s = summarize(&rt.lifecycle);
        let exec = summarize(&rt.execs).median;
        let ratio = first_med.as_secs_f64() / s.median.as_secs_f64();
        let exec_ratio = first_exec.as_secs_f64() / exec.as_secs_f64();
        let run_ratio = first.runs.as_secs_f64() / rt.runs.as_secs_f64();
        println!(
            "{:<10} {:>12} {:>17} {:>14.2} {:>12} {:>14.2} {:>12.2} {:>14.2} {:>14.1}",
            rt.name,
            ms(s.median),
            format!("{}-{}", ms(s.min), ms(s.max)),
            ratio,
            ms(exec),
            exec_ratio,
            rt.runs.as_secs_f64(),
            run_ratio,
            rt.peak_rss_kib as f64 / 1024.0
        );
    }
    println!("(ratios below 1.00 mean {} takes less time than that runtime)", first.name);
}
