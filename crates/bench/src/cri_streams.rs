//! CRI streaming side by side (berthd against containerd's CRI plugin), driven by the real
//! crictl as an operator runs it: `crictl exec ID true` (Exec, then the streaming server over
//! SPDY) and `crictl exec -s ID true` (ExecSync) timed end to end, the endpoints taking turns
//! within each iteration; then `--transfer-mb` MB downloaded by curl through `crictl
//! port-forward` from a web server in the pod, the throughput of each.
//!
//! Each endpoint gets one pod with one container (busybox's httpd serving a file of that
//! size from the container's /tmp), made with crictl and removed at the end, failure or not.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::measure::{print_durations, print_header};

struct Opts {
    crictl: PathBuf,
    iterations: usize,
    transfer_mb: u64,
    image: String,
    cgroup_parent: String,
    work: PathBuf,
}

struct Endpoint {
    name: String,
    endpoint: String,
    pod: Option<String>,
    container: String,
    exec: Vec<Duration>,
    exec_sync: Vec<Duration>,
    /// MB/s of each transfer
    transfers: Vec<f64>,
}

pub fn main(args: &[String]) -> Result<(), String> {
    let mut opts = Opts {
        crictl: PathBuf::new(),
        iterations: 10,
        transfer_mb: 100,
        image: String::new(),
        cgroup_parent: format!("/berth-bench-streams-{}", std::process::id()),
        work: std::env::temp_dir(),
    };
    let mut endpoints = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{a}: missing value"));
        match a.as_str() {
            "--crictl" => opts.crictl = PathBuf::from(value()?),
            "--iterations" => opts.iterations = value()?.parse().map_err(|_| "--iterations: not a number")?,
            "--transfer-mb" => opts.transfer_mb = value()?.parse().map_err(|_| "--transfer-mb: not a number")?,
            "--image" => opts.image = value()?,
            "--cgroup-parent" => opts.cgroup_parent = value()?,
            "--work-dir" => opts.work = PathBuf::from(value()?),
            s => {
                let (name, ep) = s.split_once('=').ok_or_else(|| format!("{s}: not NAME=unix:///SOCKET"))?;
                endpoints.push(Endpoint {
                    name: name.into(),
                    endpoint: ep.into(),
                    pod: None,
                    container: String::new(),
                    exec: Vec::new(),
                    exec_sync: Vec::new(),
                    transfers: Vec::new(),
                });
            }
        }
    }
    if endpoints.is_empty() || opts.image.is_empty() || !opts.crictl.is_file() {
        return Err("usage: berth-bench cri-streams --crictl PATH --image IMAGE [--iterations N] [--transfer-mb N] [--cgroup-parent PATH] [--work-dir DIR] NAME=unix:///SOCKET...".into());
    }
    let result = bench(&opts, &mut endpoints);
    for ep in endpoints.iter_mut() {
        if let Some(pod) = ep.pod.take() {
            let _ = crictl(&opts, ep, &["stopp", &pod]);
            let _ = crictl(&opts, ep, &["rmp", &pod]);
        }
    }
    result?;
    print_table(&endpoints, &opts);
    Ok(())
}

fn crictl_command(opts: &Opts, ep: &Endpoint, args: &[&str]) -> Command {
    let mut c = Command::new(&opts.crictl);
    c.args(["--config", "/dev/null", "--timeout", "120s", "--runtime-endpoint", &ep.endpoint])
        .args(["--image-endpoint", &ep.endpoint])
        .args(args)
        .env_remove("CONTAINER_RUNTIME_ENDPOINT")
        .env_remove("IMAGE_SERVICE_ENDPOINT")
        .stdin(Stdio::null());
    c
}

/// `crictl ARGS`, which must succeed: its stdout.
fn crictl(opts: &Opts, ep: &Endpoint, args: &[&str]) -> Result<String, String> {
    let o = crictl_command(opts, ep, args).output().map_err(|e| format!("{}: {e}", opts.crictl.display()))?;
    if !o.status.success() {
        return Err(format!("{}: crictl {}: {}", ep.name, args.join(" "), String::from_utf8_lossy(&o.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn timed(opts: &Opts, ep: &Endpoint, args: &[&str]) -> Result<Duration, String> {
    let t = Instant::now();
    crictl(opts, ep, args)?;
    Ok(t.elapsed())
}

fn bench(opts: &Opts, endpoints: &mut [Endpoint]) -> Result<(), String> {
    for (n, ep) in endpoints.iter_mut().enumerate() {
        start_pod(opts, ep, n)?;
    }
    // A warm-up each, not recorded.
    for ep in endpoints.iter() {
        timed(opts, ep, &["exec", &ep.container, "true"])?;
        timed(opts, ep, &["exec", "-s", &ep.container, "true"])?;
    }
    for i in 0..opts.iterations {
        let n = endpoints.len();
        for k in 0..n {
            let ep = &mut endpoints[if i % 2 == 0 { k } else { n - 1 - k }];
            let d = timed(opts, ep, &["exec", &ep.container, "true"])?;
            ep.exec.push(d);
            let d = timed(opts, ep, &["exec", "-s", &ep.container, "true"])?;
            ep.exec_sync.push(d);
        }
    }
    let rounds = 3;
    for i in 0..rounds {
        let n = endpoints.len();
        for k in 0..n {
            let ep = &mut endpoints[if i % 2 == 0 { k } else { n - 1 - k }];
            let mbs = transfer(opts, ep)?;
            ep.transfers.push(mbs);
        }
    }
    Ok(())
}

fn start_pod(opts: &Opts, ep: &mut Endpoint, n: usize) -> Result<(), String> {
    let name = format!("streams-{}-{n}", std::process::id());
    let pod_json = opts.work.join(format!("{name}-pod.json"));
    let ctr_json = opts.work.join(format!("{name}-ctr.json"));
    let logs = opts.work.join(format!("{name}-logs"));
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let pod = serde_json::json!({
        "metadata": {"name": name, "namespace": "bench", "uid": format!("uid-{name}")},
        "log_directory": logs,
        "linux": {"cgroup_parent": format!("{}/{}", opts.cgroup_parent, ep.name)}
    });
    let bytes = opts.transfer_mb * 1_000_000;
    let script = format!(
        "mkdir -p /tmp/www && head -c {bytes} /dev/zero > /tmp/www/big && echo serving && exec httpd -f -p 8080 -h /tmp/www"
    );
    let ctr = serde_json::json!({
        "metadata": {"name": "web"},
        "image": {"image": opts.image},
        "command": ["sh", "-c", script],
        "log_path": "web.log"
    });
    write(&pod_json, &pod)?;
    write(&ctr_json, &ctr)?;
    crictl(opts, ep, &["pull", &opts.image])?;
    let pod_id = crictl(opts, ep, &["runp", path(&pod_json)])?.trim().to_string();
    ep.pod = Some(pod_id.clone());
    ep.container = crictl(opts, ep, &["create", &pod_id, path(&ctr_json), path(&pod_json)])?.trim().to_string();
    crictl(opts, ep, &["start", &ep.container])?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !crictl(opts, ep, &["logs", &ep.container])?.contains("serving") {
        if Instant::now() > deadline {
            return Err(format!("{}: the web server did not start", ep.name));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn write(p: &Path, v: &serde_json::Value) -> Result<(), String> {
    std::fs::write(p, v.to_string()).map_err(|e| format!("{}: {e}", p.display()))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// One download of the pod's file through a new `crictl port-forward`: MB/s.
fn transfer(opts: &Opts, ep: &Endpoint) -> Result<f64, String> {
    let pod = ep.pod.clone().unwrap_or_default();
    let mut cmd = crictl_command(opts, ep, &["port-forward", &pod, ":8080"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|e| format!("crictl port-forward: {e}"))?;
    let r = transfer_through(opts, ep, &mut child);
    let _ = child.kill();
    let _ = child.wait();
    r
}

fn transfer_through(opts: &Opts, ep: &Endpoint, child: &mut Child) -> Result<f64, String> {
    use std::io::BufRead;
    let out = child.stdout.take().ok_or("crictl port-forward: no stdout")?;
    // Its stdout is read to the end (crictl dies of SIGPIPE on a closed one): the first line
    // names the local port.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            let _ = tx.send(l);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| format!("{}: crictl port-forward said nothing", ep.name))?;
    let port = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|l| l.split(' ').next())
        .ok_or_else(|| format!("{}: crictl port-forward said {line:?}", ep.name))?
        .to_string();
    let url = format!("http://127.0.0.1:{port}/big");
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "300", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", &url])
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut f = text.split(' ');
    let (size, secs): (f64, f64) = (
        f.next().and_then(|s| s.parse().ok()).unwrap_or(0.0),
        f.next().and_then(|s| s.trim().parse().ok()).unwrap_or(0.0),
    );
    let want = (opts.transfer_mb * 1_000_000) as f64;
    if !o.status.success() || size != want || secs <= 0.0 {
        return Err(format!(
            "{}: the download through port-forward got {size} of {want} bytes: {}",
            ep.name,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(size / 1e6 / secs)
}

/// One row's samples of an endpoint.
type Samples = fn(&Endpoint) -> &Vec<Duration>;

fn print_table(endpoints: &[Endpoint], opts: &Opts) {
    let first = &endpoints[0];
    println!("CRI streaming through crictl ({}), the same pod on each server", opts.crictl.display());
    println!(
        "medians of {} iterations in ms (min-max); ratio = {}'s median / the other's (below 1.00: {} takes less)",
        opts.iterations, first.name, first.name
    );
    let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
    print_header(34, &names);
    let rows: [(&str, Samples); 2] =
        [("crictl exec ID true", |e| &e.exec), ("crictl exec -s ID true", |e| &e.exec_sync)];
    for (label, get) in rows {
        let samples: Vec<&[Duration]> = endpoints.iter().map(|e| get(e).as_slice()).collect();
        print_durations(label, 34, &samples);
    }
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    print!("{:<34}", format!("port-forward {} MB, MB/s", opts.transfer_mb));
    for ep in endpoints {
        print!(" {:>24.1}", median(&ep.transfers));
    }
    for ep in &endpoints[1..] {
        print!(" {:>18.2}", median(&first.transfers) / median(&ep.transfers));
    }
    println!("  (throughput: above 1.00, {} moves more)", first.name);
}
