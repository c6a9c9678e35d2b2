//! The same kubelet (standalone, static pods) on each CRI server in turn (berthd, containerd):
//! a static pod's start (manifest written → its container running, as crictl sees it) and
//! deletion (manifest removed → the pod no longer ready), the time kubelet spent inside CRI
//! calls over those iterations (the sum of its `kubelet_runtime_operations_duration_seconds`
//! histogram, per pod), then `--pods` pods running and the CPU the server and its helpers
//! use while kubelet relists them (utime + stime of the server's wrapper and everything
//! below it, reaped children included, workload excluded, over `--idle-secs`).
//!
//! One kubelet at a time (it writes fixed host paths): run inside the namespaces bench/cri.sh
//! makes (a private /var/lib, /var/log and /run), with `--node-ip` on a veth there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::measure::{print_durations, print_header};

struct Opts {
    kubelet: PathBuf,
    crictl: PathBuf,
    node_ip: String,
    cgroup_root: String,
    work: PathBuf,
    iterations: usize,
    pods: usize,
    idle_secs: u64,
    image: String,
}

struct Endpoint {
    name: String,
    endpoint: String,
    pid: u32,
    start: Vec<Duration>,
    delete: Vec<Duration>,
    /// seconds inside CRI calls per pod lifecycle
    cri_secs_per_pod: f64,
    /// CPU seconds per second with `pods` running
    idle_cpu: f64,
}

pub fn main(args: &[String]) -> Result<(), String> {
    let mut opts = Opts {
        kubelet: PathBuf::new(),
        crictl: PathBuf::new(),
        node_ip: String::new(),
        cgroup_root: format!("/berth-bench-kubelet-{}", std::process::id()),
        work: std::env::temp_dir(),
        iterations: 10,
        pods: 50,
        idle_secs: 30,
        image: String::new(),
    };
    let mut endpoints = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{a}: missing value"));
        match a.as_str() {
            "--kubelet" => opts.kubelet = value()?.into(),
            "--crictl" => opts.crictl = value()?.into(),
            "--node-ip" => opts.node_ip = value()?,
            "--cgroup-root" => opts.cgroup_root = value()?,
            "--work-dir" => opts.work = value()?.into(),
            "--iterations" => opts.iterations = value()?.parse().map_err(|_| "--iterations: not a number")?,
            "--pods" => opts.pods = value()?.parse().map_err(|_| "--pods: not a number")?,
            "--idle-secs" => opts.idle_secs = value()?.parse().map_err(|_| "--idle-secs: not a number")?,
            "--image" => opts.image = value()?,
            s => {
                // NAME=unix:///SOCKET@PID (the PID of the wrapper the server runs under)
                let (name, rest) = s.split_once('=').ok_or_else(|| format!("{s}: not NAME=unix:///SOCKET@PID"))?;
                let (endpoint, pid) = rest.rsplit_once('@').ok_or_else(|| format!("{s}: no @PID"))?;
                endpoints.push(Endpoint {
                    name: name.into(),
                    endpoint: endpoint.into(),
                    pid: pid.parse().map_err(|_| format!("{s}: @PID is not a number"))?,
                    start: Vec::new(),
                    delete: Vec::new(),
                    cri_secs_per_pod: 0.0,
                    idle_cpu: 0.0,
                });
            }
        }
    }
    if endpoints.is_empty() || opts.image.is_empty() || opts.node_ip.is_empty() || !opts.kubelet.is_file() {
        return Err("usage: berth-bench kubelet --kubelet PATH --crictl PATH --node-ip IP --image IMAGE [--iterations N] [--pods N] [--idle-secs N] [--cgroup-root PATH] [--work-dir DIR] NAME=unix:///SOCKET@PID...".into());
    }
    for ep in endpoints.iter_mut() {
        let mut kubelet = None;
        let r = run_endpoint(&opts, ep, &mut kubelet);
        if let Some(mut k) = kubelet {
            let _ = k.kill();
            let _ = k.wait();
        }
        remove_pods(&opts, ep);
        r?;
    }
    print_table(&opts, &endpoints);
    Ok(())
}

fn crictl(opts: &Opts, ep: &Endpoint, args: &[&str]) -> Result<String, String> {
    let o = Command::new(&opts.crictl)
        .args(["--config", "/dev/null", "--timeout", "60s", "--runtime-endpoint", &ep.endpoint])
        .args(["--image-endpoint", &ep.endpoint])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("crictl: {e}"))?;
    if !o.status.success() {
        return Err(format!("{}: crictl {}: {}", ep.name, args.join(" "), String::from_utf8_lossy(&o.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn remove_pods(opts: &Opts, ep: &Endpoint) {
    if let Ok(pods) = crictl(opts, ep, &["pods", "-q"]) {
        for p in pods.lines().filter(|l| !l.is_empty()) {
            let _ = crictl(opts, ep, &["stopp", p]);
            let _ = crictl(opts, ep, &["rmp", p]);
        }
    }
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string()).filter(|_| head.contains(" 200 "))
}

/// Seconds kubelet spent inside CRI calls so far (its runtime operations histogram's sums).
fn cri_seconds(opts: &Opts) -> Result<f64, String> {
    let metrics = http_get(&format!("{}:10255", opts.node_ip), "/metrics").ok_or("kubelet's /metrics")?;
    Ok(metrics
        .lines()
        .filter(|l| l.starts_with("kubelet_runtime_operations_duration_seconds_sum"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// A pod of one container that ends at once on SIGTERM (a shell trapping it around its
/// `sleep 1000`): kubelet's stop is then the runtime's work, not a grace period running out.
fn write_manifest(dir: &Path, name: &str, image: &str) -> Result<(), String> {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: bench}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 1000 & wait\"]\n"
    );
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, yaml).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(format!("{name}.yaml"))).map_err(|e| format!("manifest {name}: {e}"))
}

fn wait(what: &str, timeout: Duration, mut cond: impl FnMut() -> Result<bool, String>) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !cond()? {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn running_containers(opts: &Opts, ep: &Endpoint) -> Result<usize, String> {
    Ok(crictl(opts, ep, &["ps", "-q", "--state", "running"])?.lines().filter(|l| !l.is_empty()).count())
}

fn ready_pods(opts: &Opts, ep: &Endpoint) -> Result<usize, String> {
    Ok(crictl(opts, ep, &["pods", "-q", "--state", "ready"])?.lines().filter(|l| !l.is_empty()).count())
}

fn run_endpoint(opts: &Opts, ep: &mut Endpoint, kubelet: &mut Option<Child>) -> Result<(), String> {
    let dir = opts.work.join(format!("kubelet-{}", ep.name));
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).map_err(|e| format!("{}: {e}", manifests.display()))?;
    let cgroup_root = format!("{}/{}", opts.cgroup_root, ep.name);
    for h in std::fs::read_dir("/sys/fs/cgroup").map_err(|e| e.to_string())?.flatten() {
        if h.path().join("cgroup.procs").exists() {
            let _ = std::fs::create_dir_all(h.path().join(cgroup_root.trim_start_matches('/')));
        }
    }
    let config = dir.join("kubelet.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nfailCgroupV1: false\n\
             cgroupDriver: cgroupfs\ncgroupRoot: {cgroup_root}\nfailSwapOn: false\noomScoreAdj: 0\nstaticPodPath: {}\n\
             fileCheckFrequency: 1s\ncontainerRuntimeEndpoint: {}\naddress: {}\nreadOnlyPort: 10255\n\
             authentication:\n  anonymous: {{enabled: true}}\n  webhook: {{enabled: false}}\nauthorization: {{mode: AlwaysAllow}}\n\
             maxPods: {}\nevictionHard: {{memory.available: \"1Mi\", nodefs.available: \"1%\", imagefs.available: \"1%\", nodefs.inodesFree: \"1%\"}}\n\
             podLogsDir: {}\n",
            manifests.display(),
            ep.endpoint,
            opts.node_ip,
            opts.pods + 10,
            dir.join("pod-logs").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("kubelet.log")).map_err(|e| e.to_string())?;
    *kubelet = Some(
        Command::new(&opts.kubelet)
            .arg("--config")
            .arg(&config)
            .arg("--root-dir")
            .arg(dir.join("root"))
            .args(["--node-ip", &opts.node_ip, "--hostname-override", "bench-node"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", opts.kubelet.display()))?,
    );
    wait("kubelet's health check", Duration::from_secs(60), || {
        Ok(http_get("127.0.0.1:10248", "/healthz").is_some_and(|b| b == "ok"))
    })?;
    crictl(opts, ep, &["pull", &opts.image])?;
    let one_pod = |ep: &Endpoint, n: usize| -> Result<(Duration, Duration), String> {
        let name = format!("p{n}");
        let t = Instant::now();
        write_manifest(&manifests, &name, &opts.image)?;
        wait("the pod's container", Duration::from_secs(120), || Ok(running_containers(opts, ep)? == 1))?;
        let started = t.elapsed();
        let t = Instant::now();
        std::fs::remove_file(manifests.join(format!("{name}.yaml"))).map_err(|e| e.to_string())?;
        wait("the pod's stop", Duration::from_secs(120), || Ok(ready_pods(opts, ep)? == 0))?;
        Ok((started, t.elapsed()))
    };
    one_pod(ep, 0)?;
    let before = cri_seconds(opts)?;
    for i in 0..opts.iterations {
        let (s, d) = one_pod(ep, i + 1)?;
        ep.start.push(s);
        ep.delete.push(d);
    }
    ep.cri_secs_per_pod = (cri_seconds(opts)? - before) / opts.iterations.max(1) as f64;
    // Many pods, then the server's CPU while kubelet watches them.
    for i in 0..opts.pods {
        write_manifest(&manifests, &format!("many{i}"), &opts.image)?;
    }
    wait("all pods' containers", Duration::from_secs(600), || Ok(running_containers(opts, ep)? == opts.pods))?;
    std::thread::sleep(Duration::from_secs(5));
    let t = Instant::now();
    let c0 = cpu_ticks(ep.pid)?;
    std::thread::sleep(Duration::from_secs(opts.idle_secs));
    let c1 = cpu_ticks(ep.pid)?;
    // SAFETY: sysconf is always safe.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ep.idle_cpu = (c1.saturating_sub(c0)) as f64 / hz / t.elapsed().as_secs_f64();
    for i in 0..opts.pods {
        let _ = std::fs::remove_file(manifests.join(format!("many{i}.yaml")));
    }
    wait("all pods' stop", Duration::from_secs(600), || Ok(ready_pods(opts, ep)? == 0))?;
    if let Some(mut k) = kubelet.take() {
        // SAFETY: our own child, by pid.
        unsafe { libc::kill(k.id() as i32, libc::SIGTERM) };
        let _ = k.wait();
    }
    Ok(())
}

/// utime + stime + cutime + cstime (clock ticks) of `wrapper` and every descendant but the
/// pods' workload: what the server and its helpers used, reaped children included.
fn cpu_ticks(wrapper: u32) -> Result<u64, String> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut ticks: HashMap<u32, u64> = HashMap::new();
    for entry in std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After the comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
        let Some(ppid) = f.get(1).and_then(|s| s.parse::<u32>().ok()) else { continue };
        let t: u64 = (11..=14).filter_map(|i| f.get(i)?.parse::<u64>().ok()).sum();
        children.entry(ppid).or_default().push(pid);
        ticks.insert(pid, t);
    }
    let workload = b"sleep\x001000\x00".to_vec();
    let mut total = ticks.get(&wrapper).copied().unwrap_or(0);
    let mut stack = children.get(&wrapper).cloned().unwrap_or_default();
    while let Some(pid) = stack.pop() {
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == workload) {
            continue;
        }
        stack.extend(children.get(&pid).into_iter().flatten());
        total += ticks.get(&pid).copied().unwrap_or(0);
    }
    Ok(total)
}

/// One row's samples of an endpoint.
type Samples = fn(&Endpoint) -> &Vec<Duration>;
/// One row's figure of an endpoint.
type Figure = fn(&Endpoint) -> f64;

fn print_table(opts: &Opts, endpoints: &[Endpoint]) {
    let first = &endpoints[0];
    println!("the same kubelet ({}) on each CRI server, static pods of one container", opts.kubelet.display());
    println!(
        "medians of {} iterations in ms (min-max); ratio = {}'s / the other's (below 1.00: {} takes less)",
        opts.iterations, first.name, first.name
    );
    let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
    print_header(38, &names);
    let rows: [(&str, Samples); 2] =
        [("static pod start (manifest → running)", |e| &e.start), ("static pod deletion (→ not ready)", |e| &e.delete)];
    for (label, get) in rows {
        let samples: Vec<&[Duration]> = endpoints.iter().map(|e| get(e).as_slice()).collect();
        print_durations(label, 38, &samples);
    }
    let scalar_rows: [(String, Figure); 2] = [
        ("kubelet's time in CRI calls per pod, ms".into(), |e| e.cri_secs_per_pod * 1000.0),
        (format!("CPU % with {} pods running (idle)", opts.pods), |e| e.idle_cpu * 100.0),
    ];
    for (label, get) in scalar_rows {
        print!("{label:<38}");
        for ep in endpoints {
            print!(" {:>24.1}", get(ep));
        }
        for ep in &endpoints[1..] {
            print!(" {:>18.2}", get(first) / get(ep));
        }
        println!();
    }
}
