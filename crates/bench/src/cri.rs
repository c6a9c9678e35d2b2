//! CRI servers side by side (berthd against containerd's CRI plugin): the same tonic client
//! drives each endpoint through the same pod and container lifecycle.
//!
//! Each iteration, for each endpoint in turn (the order alternates between iterations, so
//! drift on the machine hits all alike): a pod with one container (`sleep 1000` in the busybox
//! image) taken through its life one RPC at a time, each timed (RunPodSandbox, CreateContainer,
//! StartContainer, StopContainer with timeout 0, RemoveContainer, StopPodSandbox,
//! RemovePodSandbox); a pod and container from scratch (Run + Create + Start, end to end); then
//! `--concurrent` pods (default 20) started at once, the wall time until all run, removed
//! after. Once, after the iterations: `--memory-pods` running pods (default 50, each with its
//! container) per endpoint, and the RSS and PSS (smaps_rollup) of the server and its helpers,
//! idle just before and with the pods running.
//!
//! The server's helpers are found by descent, not by name: each server runs under
//! `berth-bench subreaper` (a child subreaper), so what it double-forks (containerd's shims,
//! berthd's monitors) is re-parented to that wrapper; the processes counted are the wrapper's
//! descendants (the server, shims, monitors, pause processes), minus the pods' workload (the
//! processes running the containers' command line). `--pid NAME=PID` names each wrapper.
//!
//! Pods are made as kubelet makes them by default (network and IPC namespaces of the pod, a
//! PID namespace per container), under `--cgroup-parent`/NAME; their logs go to `--log-dir`.
//! Every pod the run made is stopped and removed through the CRI at the end, failure or not. A
//! failed operation is printed and its pods removed; its sample is left out of the table and
//! the run goes on, to end with an error naming every failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_cri::proto as pb;
use pb::image_service_client::ImageServiceClient;
use pb::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::measure::{ms, summarize};

/// The steps timed one RPC at a time, in the order they run.
const RPCS: [&str; 7] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];
const FROM_SCRATCH: usize = RPCS.len();
const CONCURRENT: usize = RPCS.len() + 1;
const STEPS: usize = RPCS.len() + 2;

/// The containers' command: also how their processes are told from the server's helpers.
const WORKLOAD: [&str; 2] = ["sleep", "1000"];

struct Opts {
    iterations: usize,
    concurrent: usize,
    memory_pods: usize,
    image: String,
    pulls: Vec<String>,
    cgroup_parent: String,
    log_dir: PathBuf,
}

#[derive(Clone)]
struct Client {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// One figure of a [`Memory`], for the table's rows.
type MemoryField = fn(&Memory) -> u64;

#[derive(Default)]
struct Memory {
    idle_rss_kib: u64,
    idle_pss_kib: u64,
    rss_kib: u64,
    pss_kib: u64,
    processes: usize,
}

struct Endpoint {
    name: String,
    socket: PathBuf,
    /// The `berth-bench subreaper` the server runs under.
    pid: Option<u32>,
    client: Option<Client>,
    version: String,
    /// Per step, one duration per iteration.
    samples: Vec<Vec<Duration>>,
    memory: Option<Memory>,
    /// Pods made and not yet removed (removed at the end, failure or not).
    pods: Vec<String>,
    seq: usize,
    /// What failed (that iteration's sample of the step is left out; the run goes on).
    failures: Vec<String>,
}

impl Endpoint {
    /// Records a failure, says it, and removes the pods it left.
    async fn failed(&mut self, e: String) {
        eprintln!("berth-bench: FAILED: {e}");
        self.failures.push(e);
        if let Err(e) = remove_all(self).await {
            eprintln!("berth-bench: FAILED: and removing its pods: {e}");
            self.failures.push(e);
        }
    }
}

pub fn main(args: &[String]) -> Result<(), String> {
    let mut opts = Opts {
        iterations: 10,
        concurrent: 20,
        memory_pods: 50,
        image: String::new(),
        pulls: Vec::new(),
        cgroup_parent: format!("/berth-bench-cri-{}", std::process::id()),
        log_dir: std::env::temp_dir().join(format!("berth-bench-cri-{}", std::process::id())),
    };
    let mut endpoints: Vec<Endpoint> = Vec::new();
    let mut pids: HashMap<String, u32> = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| it.next().cloned().ok_or_else(|| format!("{a} {what}"));
        match a.as_str() {
            "--iterations" => opts.iterations = value("N")?.parse().map_err(|_| "--iterations N")?,
            "--concurrent" => opts.concurrent = value("N")?.parse().map_err(|_| "--concurrent N")?,
            "--memory-pods" => opts.memory_pods = value("N")?.parse().map_err(|_| "--memory-pods N")?,
            "--image" => opts.image = value("IMAGE")?,
            "--pull" => opts.pulls.push(value("IMAGE")?),
            "--cgroup-parent" => opts.cgroup_parent = value("PATH")?,
            "--log-dir" => opts.log_dir = value("DIR")?.into(),
            "--pid" => {
                let v = value("NAME=PID")?;
                let (name, pid) = v.split_once('=').ok_or("--pid NAME=PID")?;
                pids.insert(name.into(), pid.parse().map_err(|_| format!("--pid {v}: not a pid"))?);
            }
            spec => {
                let (name, addr) =
                    spec.split_once('=').ok_or_else(|| format!("{spec}: expected NAME=unix:///SOCKET"))?;
                let socket = addr.strip_prefix("unix://").ok_or_else(|| format!("{spec}: not unix://"))?;
                endpoints.push(Endpoint {
                    name: name.into(),
                    socket: socket.into(),
                    pid: None,
                    client: None,
                    version: String::new(),
                    samples: vec![Vec::new(); STEPS],
                    memory: None,
                    pods: Vec::new(),
                    seq: 0,
                    failures: Vec::new(),
                });
            }
        }
    }
    if endpoints.is_empty() {
        return Err("no endpoints given".into());
    }
    if opts.image.is_empty() {
        return Err("--image IMAGE is required (the containers' image, pulled through each CRI)".into());
    }
    for ep in &mut endpoints {
        ep.pid = pids.get(&ep.name).copied();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    let result = rt.block_on(bench(&opts, &mut endpoints));
    // Whatever happened: every pod this run made, stopped and removed through its CRI.
    let cleanup = rt.block_on(cleanup(&mut endpoints));
    if let Err(e) = &cleanup {
        eprintln!("berth-bench: cleanup: {e}");
    }
    result?;
    cleanup?;
    print_table(&endpoints, &opts);
    let failures: usize = endpoints.iter().map(|e| e.failures.len()).sum();
    if failures > 0 {
        for ep in &endpoints {
            for f in &ep.failures {
                println!("failed: {f}");
            }
        }
        return Err(format!("{failures} operations failed (left out of the table)"));
    }
    Ok(())
}

async fn connect(socket: &Path) -> Result<Client, String> {
    let path = socket.to_path_buf();
    let channel = tonic::transport::Endpoint::from_static("http://cri.invalid")
        .timeout(Duration::from_secs(300))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    Ok(Client { runtime: RuntimeServiceClient::new(channel.clone()), images: ImageServiceClient::new(channel) })
}

/// An RPC's answer, or what failed: the endpoint, the RPC and the status.
fn answer<T>(ep: &str, rpc: &str, r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, String> {
    r.map(tonic::Response::into_inner).map_err(|s| format!("{ep}: {rpc}: {:?}: {}", s.code(), s.message()))
}

async fn bench(opts: &Opts, endpoints: &mut [Endpoint]) -> Result<(), String> {
    for ep in endpoints.iter_mut() {
        let mut c = connect(&ep.socket).await?;
        let v = answer(&ep.name, "Version", c.runtime.version(pb::VersionRequest { version: "v1".into() }).await)?;
        ep.version = format!("{} {}", v.runtime_name, v.runtime_version);
        for image in opts.pulls.iter().chain([&opts.image]) {
            let req = pb::PullImageRequest {
                image: Some(pb::ImageSpec { image: image.clone(), ..Default::default() }),
                ..Default::default()
            };
            answer(&ep.name, &format!("PullImage {image}"), c.images.pull_image(req).await)?;
        }
        ep.client = Some(c);
    }
    // A warm-up round each (first pod's network set-up, caches), not recorded.
    for ep in endpoints.iter_mut() {
        if let Err(e) = lifecycle(ep, opts).await {
            ep.failed(e).await;
        }
        if let Err(e) = from_scratch(ep, opts).await {
            ep.failed(e).await;
        }
    }
    for i in 0..opts.iterations {
        let n = endpoints.len();
        for k in 0..n {
            let ep = &mut endpoints[if i % 2 == 0 { k } else { n - 1 - k }];
            match lifecycle(ep, opts).await {
                Ok(times) => {
                    for (s, d) in times.into_iter().enumerate() {
                        ep.samples[s].push(d);
                    }
                }
                Err(e) => ep.failed(e).await,
            }
            match from_scratch(ep, opts).await {
                Ok(d) => ep.samples[FROM_SCRATCH].push(d),
                Err(e) => ep.failed(e).await,
            }
            match concurrent(ep, opts).await {
                Ok(d) => ep.samples[CONCURRENT].push(d),
                Err(e) => ep.failed(e).await,
            }
        }
        eprintln!("berth-bench: iteration {} of {} done", i + 1, opts.iterations);
    }
    if opts.memory_pods > 0 {
        for ep in endpoints.iter_mut() {
            match memory(ep, opts).await {
                Ok(m) => ep.memory = Some(m),
                Err(e) => ep.failed(e).await,
            }
        }
    }
    Ok(())
}

fn pod_config(ep: &mut Endpoint, opts: &Opts) -> Result<pb::PodSandboxConfig, String> {
    ep.seq += 1;
    let name = format!("bench-{}", ep.seq);
    let logs = opts.log_dir.join(&ep.name).join(&name);
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    Ok(pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: name.clone(),
            uid: format!("uid-{}-{name}", ep.name),
            namespace: "berth-bench".into(),
            attempt: 0,
        }),
        hostname: name,
        log_directory: logs.display().to_string(),
        linux: Some(pb::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/{}", opts.cgroup_parent, ep.name),
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(pb::NamespaceOption {
                    pid: pb::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn container_config(opts: &Opts) -> pb::ContainerConfig {
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata { name: "sleep".into(), attempt: 0 }),
        image: Some(pb::ImageSpec { image: opts.image.clone(), ..Default::default() }),
        command: WORKLOAD.iter().map(|s| s.to_string()).collect(),
        log_path: "sleep.log".into(),
        linux: Some(pb::LinuxContainerConfig {
            security_context: Some(pb::LinuxContainerSecurityContext {
                namespace_options: Some(pb::NamespaceOption {
                    pid: pb::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Run + Create + Start of one pod with its container; the pod's id.
async fn start_pod(
    name: &str,
    c: &mut Client,
    config: pb::PodSandboxConfig,
    container: pb::ContainerConfig,
) -> Result<String, String> {
    let req = pb::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
    let pod = answer(name, "RunPodSandbox", c.runtime.run_pod_sandbox(req).await)?.pod_sandbox_id;
    let req = pb::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(container),
        sandbox_config: Some(config),
    };
    let id = match answer(name, "CreateContainer", c.runtime.create_container(req).await) {
        Ok(r) => r.container_id,
        Err(e) => return Err(remove_after(name, c, &pod, e).await),
    };
    if let Err(e) =
        answer(name, "StartContainer", c.runtime.start_container(pb::StartContainerRequest { container_id: id }).await)
    {
        return Err(remove_after(name, c, &pod, e).await);
    }
    Ok(pod)
}

/// A failure's message, after removing the pod it left (so cleanup has nothing to find).
async fn remove_after(name: &str, c: &mut Client, pod: &str, e: String) -> String {
    match remove_pod(name, c, pod).await {
        Ok(()) => e,
        Err(e2) => format!("{e}; and then {e2}"),
    }
}

async fn remove_pod(name: &str, c: &mut Client, pod: &str) -> Result<(), String> {
    let id = pod.to_string();
    answer(name, "StopPodSandbox", c.runtime.stop_pod_sandbox(pb::StopPodSandboxRequest { pod_sandbox_id: id }).await)?;
    let id = pod.to_string();
    answer(
        name,
        "RemovePodSandbox",
        c.runtime.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: id }).await,
    )?;
    Ok(())
}

/// One pod and container, one RPC at a time: each RPC's duration.
async fn lifecycle(ep: &mut Endpoint, opts: &Opts) -> Result<Vec<Duration>, String> {
    let config = pod_config(ep, opts)?;
    let name = ep.name.clone();
    let c = ep.client.as_mut().expect("connected");
    let mut times = Vec::with_capacity(RPCS.len());
    let t = Instant::now();
    let req = pb::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
    let pod = answer(&name, "RunPodSandbox", c.runtime.run_pod_sandbox(req).await)?.pod_sandbox_id;
    times.push(t.elapsed());
    ep.pods.push(pod.clone());
    let t = Instant::now();
    let req = pb::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(container_config(opts)),
        sandbox_config: Some(config),
    };
    let id = answer(&name, "CreateContainer", c.runtime.create_container(req).await)?.container_id;
    times.push(t.elapsed());
    let t = Instant::now();
    let req = pb::StartContainerRequest { container_id: id.clone() };
    answer(&name, "StartContainer", c.runtime.start_container(req).await)?;
    times.push(t.elapsed());
    let t = Instant::now();
    let req = pb::StopContainerRequest { container_id: id.clone(), timeout: 0 };
    answer(&name, "StopContainer", c.runtime.stop_container(req).await)?;
    times.push(t.elapsed());
    let t = Instant::now();
    let req = pb::RemoveContainerRequest { container_id: id };
    answer(&name, "RemoveContainer", c.runtime.remove_container(req).await)?;
    times.push(t.elapsed());
    let t = Instant::now();
    let req = pb::StopPodSandboxRequest { pod_sandbox_id: pod.clone() };
    answer(&name, "StopPodSandbox", c.runtime.stop_pod_sandbox(req).await)?;
    times.push(t.elapsed());
    let t = Instant::now();
    let req = pb::RemovePodSandboxRequest { pod_sandbox_id: pod.clone() };
    answer(&name, "RemovePodSandbox", c.runtime.remove_pod_sandbox(req).await)?;
    times.push(t.elapsed());
    ep.pods.retain(|p| *p != pod);
    Ok(times)
}

/// Run + Create + Start, end to end (the pod removed after, untimed).
async fn from_scratch(ep: &mut Endpoint, opts: &Opts) -> Result<Duration, String> {
    let config = pod_config(ep, opts)?;
    let mut c = ep.client.clone().expect("connected");
    let t = Instant::now();
    let pod = start_pod(&ep.name, &mut c, config, container_config(opts)).await?;
    let d = t.elapsed();
    ep.pods.push(pod.clone());
    remove_pod(&ep.name, &mut c, &pod).await?;
    ep.pods.retain(|p| *p != pod);
    Ok(d)
}

/// `count` pods started at once (each Run + Create + Start), on one client connection.
async fn start_many(ep: &mut Endpoint, opts: &Opts, count: usize) -> Result<(), String> {
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let config = pod_config(ep, opts)?;
        let container = container_config(opts);
        let mut c = ep.client.clone().expect("connected");
        let name = ep.name.clone();
        tasks.push(tokio::spawn(async move { start_pod(&name, &mut c, config, container).await }));
    }
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(pod)) => ep.pods.push(pod),
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(format!("{}: a task: {e}", ep.name))),
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Removes every pod in `ep.pods`, at once.
async fn remove_all(ep: &mut Endpoint) -> Result<(), String> {
    let mut tasks = Vec::new();
    for pod in std::mem::take(&mut ep.pods) {
        let mut c = ep.client.clone().expect("connected");
        let name = ep.name.clone();
        tasks.push((pod.clone(), tokio::spawn(async move { remove_pod(&name, &mut c, &pod).await })));
    }
    let mut first_error = None;
    for (pod, task) in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                ep.pods.push(pod);
                first_error = first_error.or(Some(e));
            }
            Err(e) => {
                ep.pods.push(pod);
                first_error = first_error.or(Some(format!("{}: a task: {e}", ep.name)));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn concurrent(ep: &mut Endpoint, opts: &Opts) -> Result<Duration, String> {
    let t = Instant::now();
    let started = start_many(ep, opts, opts.concurrent).await;
    let d = t.elapsed();
    let removed = remove_all(ep).await;
    started?;
    removed?;
    Ok(d)
}

async fn memory(ep: &mut Endpoint, opts: &Opts) -> Result<Memory, String> {
    let Some(pid) = ep.pid else {
        return Err(format!("{}: no --pid for its server, no memory to measure", ep.name));
    };
    let mut m = Memory::default();
    (m.idle_rss_kib, m.idle_pss_kib, _) = helpers_memory(pid)?;
    // In batches, as a node would start them (and so the server's pool does not queue them all).
    let mut left = opts.memory_pods;
    while left > 0 {
        let n = left.min(10);
        start_many(ep, opts, n).await?;
        left -= n;
    }
    // Let what starts in the background settle (shims' and monitors' first work).
    tokio::time::sleep(Duration::from_secs(3)).await;
    (m.rss_kib, m.pss_kib, m.processes) = helpers_memory(pid)?;
    remove_all(ep).await?;
    Ok(m)
}

/// The RSS and PSS (KiB) summed over the descendants of `wrapper` (not itself), minus the
/// pods' workload processes, and how many processes that is.
fn helpers_memory(wrapper: u32) -> Result<(u64, u64, usize), String> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let dir = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok()) else { continue };
        children.entry(ppid).or_default().push(pid);
    }
    let workload: Vec<u8> = WORKLOAD.iter().flat_map(|s| s.bytes().chain([0])).collect();
    let (mut rss, mut pss, mut count) = (0, 0, 0);
    let mut stack = children.get(&wrapper).cloned().unwrap_or_default();
    while let Some(pid) = stack.pop() {
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == workload) {
            continue;
        }
        stack.extend(children.get(&pid).into_iter().flatten());
        let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else { continue };
        let field = |name: &str| {
            rollup
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        rss += field("Rss:");
        pss += field("Pss:");
        count += 1;
    }
    Ok((rss, pss, count))
}

/// Stops and removes every pod the run made that is still there.
async fn cleanup(endpoints: &mut [Endpoint]) -> Result<(), String> {
    let mut first_error = None;
    for ep in endpoints.iter_mut() {
        if ep.client.is_none() || ep.pods.is_empty() {
            continue;
        }
        eprintln!("berth-bench: removing {} pods left on {}", ep.pods.len(), ep.name);
        if let Err(e) = remove_all(ep).await {
            first_error = first_error.or(Some(e));
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn print_table(endpoints: &[Endpoint], opts: &Opts) {
    let first = &endpoints[0];
    println!(
        "CRI servers, the same client: {}",
        endpoints.iter().map(|e| format!("{} ({})", e.name, e.version)).collect::<Vec<_>>().join(", ")
    );
    println!(
        "medians of {} iterations in ms (min-max); ratio = {}'s median / the other's (below 1.00: {} takes less)",
        opts.iterations, first.name, first.name
    );
    let concurrent_label = format!("{} pods at once", opts.concurrent);
    let labels: Vec<&str> =
        RPCS.iter().copied().chain(["pod+container from scratch", concurrent_label.as_str()]).collect();
    print!("{:<27}", "step");
    for ep in endpoints {
        print!(" {:>24}", ep.name);
    }
    for ep in &endpoints[1..] {
        print!(" {:>18}", format!("{}/{}", first.name, ep.name));
    }
    println!();
    for (n, label) in labels.iter().enumerate() {
        print!("{label:<27}");
        for ep in endpoints {
            let s = summarize(&ep.samples[n]);
            print!(" {:>24}", format!("{} ({}-{})", ms(s.median), ms(s.min), ms(s.max)));
        }
        let base = summarize(&first.samples[n]).median.as_secs_f64();
        for ep in &endpoints[1..] {
            print!(" {:>18.2}", base / summarize(&ep.samples[n]).median.as_secs_f64());
        }
        println!();
    }
    for ep in endpoints {
        let n = ep.samples.iter().map(Vec::len).min().unwrap_or(0);
        if n < opts.iterations || !ep.failures.is_empty() {
            println!(
                "{}: {} failures; a step's failed iterations are left out (fewest samples of a step: {n})",
                ep.name,
                ep.failures.len()
            );
        }
    }
    if endpoints.iter().all(|e| e.memory.is_some()) {
        println!(
            "memory (MiB) of the server and its helpers (shims, monitors, pause processes; not the containers' own), idle and with {} running pods of one container each",
            opts.memory_pods
        );
        let rows: [(&str, MemoryField); 4] = [
            ("RSS, idle", |m| m.idle_rss_kib),
            ("PSS, idle", |m| m.idle_pss_kib),
            ("RSS, pods running", |m| m.rss_kib),
            ("PSS, pods running", |m| m.pss_kib),
        ];
        for (label, get) in rows {
            print!("{label:<27}");
            for ep in endpoints {
                print!(" {:>24.1}", get(ep.memory.as_ref().unwrap()) as f64 / 1024.0);
            }
            let base = get(first.memory.as_ref().unwrap()) as f64;
            for ep in &endpoints[1..] {
                print!(" {:>18.2}", base / get(ep.memory.as_ref().unwrap()) as f64);
            }
            println!();
        }
        print!("{:<27}", "processes counted");
        for ep in endpoints {
            print!(" {:>24}", ep.memory.as_ref().unwrap().processes);
        }
        println!();
    }
}

/// `berth-bench subreaper CMD ARGS...`: runs CMD as a child subreaper's child, so that what
/// CMD double-forks stays below this process (and its memory can be found by descent). SIGTERM
/// and SIGINT are passed on to CMD; orphans are reaped; it exits with CMD's status when CMD
/// exits (orphans still running go to the PID namespace's init).
pub fn subreaper(args: &[String]) -> Result<(), String> {
    use std::sync::atomic::{AtomicI32, Ordering};
    static CHILD: AtomicI32 = AtomicI32::new(0);
    extern "C" fn forward(sig: libc::c_int) {
        let pid = CHILD.load(Ordering::Relaxed);
        if pid > 0 {
            // SAFETY: kill(2) is async-signal-safe.
            unsafe { libc::kill(pid, sig) };
        }
    }
    if args.is_empty() {
        return Err("usage: berth-bench subreaper CMD [ARGS...]".into());
    }
    // SAFETY: plain prctl and signal(2) with a handler that only calls kill(2).
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::signal(libc::SIGTERM, forward as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, forward as *const () as libc::sighandler_t);
    }
    let child =
        std::process::Command::new(&args[0]).args(&args[1..]).spawn().map_err(|e| format!("{}: {e}", args[0]))?;
    CHILD.store(child.id() as i32, Ordering::Relaxed);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on any child; status is plain data.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        if pid == child.id() as i32 {
            let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
            std::process::exit(code);
        }
    }
}
