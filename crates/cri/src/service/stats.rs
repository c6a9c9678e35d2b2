//! ContainerStats, ListContainerStats, PodSandboxStats and ListPodSandboxStats (kubelet's
//! summary API and eviction read these): CPU and memory from the containers' cgroups, the
//! writable layer from the snapshot, the network from the pod's namespace. CPU usage in
//! nano-cores needs two samples: the previous one per container is kept between calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_engine::sandbox::Sandbox;
use berth_engine::{Container, Engine};
use tonic::Status;

use super::containers::{self, pod_containers};
use super::convert::{self, extra};
use super::{batches, pods, Cri, ResponseStream};
use crate::proto as pb;

/// The last CPU sample of each container: (nanoseconds since the epoch, CPU nanoseconds).
#[derive(Clone, Default)]
pub struct CpuSamples(Arc<Mutex<HashMap<String, (i64, u64)>>>);

impl CpuSamples {
    /// Cores used since the previous sample, in billionths; None for the first.
    fn nano_cores(&self, id: &str, now: i64, cpu: u64) -> Option<u64> {
        let mut samples = self.0.lock().unwrap();
        let prev = samples.insert(id.to_string(), (now, cpu));
        let (then, cpu_then) = prev?;
        let elapsed = u64::try_from(now - then).ok().filter(|e| *e > 0)?;
        Some(((cpu.saturating_sub(cpu_then)) as u128 * 1_000_000_000 / elapsed as u128) as u64)
    }

    /// Forgets the containers not in `live`.
    fn retain(&self, live: &[String]) {
        self.0.lock().unwrap().retain(|id, _| live.contains(id));
    }
}

fn value(v: u64) -> Option<pb::UInt64Value> {
    Some(pb::UInt64Value { value: v })
}

pub async fn container(cri: &Cri, r: pb::ContainerStatsRequest) -> Result<pb::ContainerStatsResponse, Status> {
    let samples = cri.cpu_samples.clone();
    cri.blocking(move |e| {
        let c = containers::ours(e, &r.container_id)?;
        Ok(pb::ContainerStatsResponse { stats: Some(container_stats(e, &c, &samples)?) })
    })
    .await
}

pub async fn list_containers(
    cri: &Cri,
    r: pb::ListContainerStatsRequest,
) -> Result<pb::ListContainerStatsResponse, Status> {
    let f = r.filter.unwrap_or_default();
    let samples = cri.cpu_samples.clone();
    cri.blocking(move |e| {
        let all = pod_containers(e)?;
        samples.retain(&all.iter().map(|c| c.id.clone()).collect::<Vec<_>>());
        let mut stats = Vec::new();
        for c in all {
            let pod = c.config.sandbox.clone().unwrap_or_default();
            let labels = convert::extra_map(&c.config.extra, extra::LABELS);
            if (!f.id.is_empty() && !c.id.starts_with(&f.id))
                || (!f.pod_sandbox_id.is_empty() && !pod.starts_with(&f.pod_sandbox_id))
                || !f.label_selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                || !c.running()
            {
                continue;
            }
            stats.push(container_stats(e, &c, &samples)?);
        }
        Ok(pb::ListContainerStatsResponse { stats })
    })
    .await
}

pub async fn stream_containers(
    cri: &Cri,
    r: pb::StreamContainerStatsRequest,
) -> Result<ResponseStream<pb::StreamContainerStatsResponse>, Status> {
    let items = list_containers(cri, pb::ListContainerStatsRequest { filter: r.filter }).await?.stats;
    Ok(batches(items, |container_stats| pb::StreamContainerStatsResponse { container_stats }))
}

pub async fn pod(cri: &Cri, r: pb::PodSandboxStatsRequest) -> Result<pb::PodSandboxStatsResponse, Status> {
    let samples = cri.cpu_samples.clone();
    cri.blocking(move |e| {
        let s = e.sandbox_get(&r.pod_sandbox_id)?;
        Ok(pb::PodSandboxStatsResponse { stats: Some(pod_stats(e, &s, &samples)?) })
    })
    .await
}

pub async fn list_pods(
    cri: &Cri,
    r: pb::ListPodSandboxStatsRequest,
) -> Result<pb::ListPodSandboxStatsResponse, Status> {
    let f = r.filter.unwrap_or_default();
    let samples = cri.cpu_samples.clone();
    cri.blocking(move |e| {
        let mut stats = Vec::new();
        for s in e.sandbox_list()? {
            if (!f.id.is_empty() && !s.id.starts_with(&f.id))
                || !f.label_selector.iter().all(|(k, v)| s.config.labels.get(k) == Some(v))
                || !s.ready()
            {
                continue;
            }
            stats.push(pod_stats(e, &s, &samples)?);
        }
        Ok(pb::ListPodSandboxStatsResponse { stats })
    })
    .await
}

pub async fn stream_pods(
    cri: &Cri,
    r: pb::StreamPodSandboxStatsRequest,
) -> Result<ResponseStream<pb::StreamPodSandboxStatsResponse>, Status> {
    let items = list_pods(cri, pb::ListPodSandboxStatsRequest { filter: r.filter }).await?.stats;
    Ok(batches(items, |pod_sandbox_stats| pb::StreamPodSandboxStatsResponse { pod_sandbox_stats }))
}

fn cpu(timestamp: i64, total: u64, nano_cores: Option<u64>) -> pb::CpuUsage {
    pb::CpuUsage {
        timestamp,
        usage_core_nano_seconds: value(total),
        usage_nano_cores: nano_cores.and_then(value),
        psi: None,
    }
}

fn memory(timestamp: i64, s: &berth_engine::stats::Stats) -> pb::MemoryUsage {
    pb::MemoryUsage {
        timestamp,
        working_set_bytes: value(s.memory_working_set),
        available_bytes: value(s.memory_limit.saturating_sub(s.memory_working_set)),
        usage_bytes: value(s.memory_usage),
        rss_bytes: value(s.memory_rss),
        page_faults: value(s.page_faults),
        major_page_faults: value(s.major_page_faults),
        psi: None,
    }
}

fn container_stats(e: &Engine, c: &Container, samples: &CpuSamples) -> berth_engine::Result<pb::ContainerStats> {
    let s = e.stats(&c.id)?;
    let now = berth_time::now_nanos() as i64;
    let (mountpoint, used, inodes) = e.writable_layer(&c.id);
    Ok(pb::ContainerStats {
        attributes: Some(pb::ContainerAttributes {
            id: c.id.clone(),
            metadata: Some(containers::metadata(c)),
            labels: convert::extra_map(&c.config.extra, extra::LABELS),
            annotations: convert::extra_map(&c.config.extra, extra::ANNOTATIONS),
        }),
        cpu: Some(cpu(now, s.cpu_nanos, samples.nano_cores(&c.id, now, s.cpu_nanos))),
        memory: Some(memory(now, &s)),
        writable_layer: Some(pb::FilesystemUsage {
            timestamp: now,
            fs_id: Some(pb::FilesystemIdentifier { mountpoint: mountpoint.display().to_string() }),
            used_bytes: value(used),
            inodes_used: value(inodes),
        }),
        swap: None,
        io: None,
    })
}

/// What a pod uses: its running containers, each with its usage, the sum of theirs (a pod
/// has no process of its own but its reaper), and a process in its network namespace.
pub(super) struct PodUsage {
    pub containers: Vec<(Container, berth_engine::stats::Stats)>,
    pub total: berth_engine::stats::Stats,
    pub net_pid: Option<i32>,
}

/// A pod's running containers' usage; one that is gone meanwhile is left out.
pub(super) fn pod_usage(e: &Engine, s: &Sandbox) -> berth_engine::Result<PodUsage> {
    let mut total = berth_engine::stats::Stats::default();
    let mut containers = Vec::new();
    let mut net_pid = None;
    for c in e.sandbox_containers(&s.id)?.into_iter().filter(|c| c.running()) {
        let cs = match e.stats(&c.id) {
            Ok(cs) => cs,
            Err(err) if err.is(berth_engine::Kind::NotFound) => continue,
            Err(err) => return Err(err),
        };
        total.cpu_nanos += cs.cpu_nanos;
        total.memory_usage += cs.memory_usage;
        total.memory_working_set += cs.memory_working_set;
        total.memory_rss += cs.memory_rss;
        total.page_faults += cs.page_faults;
        total.major_page_faults += cs.major_page_faults;
        total.pids += cs.pids;
        total.memory_limit = total.memory_limit.max(cs.memory_limit);
        net_pid.get_or_insert(c.state.pid);
        containers.push((c, cs));
    }
    // Without a network namespace of its own, the pod's interfaces are the node's.
    if s.state.netns.is_none() {
        net_pid = None;
    }
    Ok(PodUsage { containers, total, net_pid })
}

/// A pod's usage: the sum of its running containers' (a pod has no process of its own), and
/// its network interfaces as one of its containers sees them.
fn pod_stats(e: &Engine, s: &Sandbox, samples: &CpuSamples) -> berth_engine::Result<pb::PodSandboxStats> {
    let now = berth_time::now_nanos() as i64;
    let PodUsage { containers: running, total, net_pid } = pod_usage(e, s)?;
    let mut containers = Vec::new();
    for (c, _) in &running {
        containers.push(container_stats(e, c, samples)?);
    }
    let pod_key = format!("pod:{}", s.id);
    let interfaces = net_pid.map(interfaces).unwrap_or_default();
    Ok(pb::PodSandboxStats {
        attributes: Some(pb::PodSandboxAttributes {
            id: s.id.clone(),
            metadata: Some(pods::metadata(s)),
            labels: s.config.labels.clone().into_iter().collect(),
            annotations: s.config.annotations.clone().into_iter().collect(),
        }),
        linux: Some(pb::LinuxPodSandboxStats {
            cpu: Some(cpu(now, total.cpu_nanos, samples.nano_cores(&pod_key, now, total.cpu_nanos))),
            memory: Some(memory(now, &total)),
            network: Some(pb::NetworkUsage {
                timestamp: now,
                default_interface: interfaces.iter().find(|i| i.name == "eth0").cloned(),
                interfaces,
            }),
            process: Some(pb::ProcessUsage { timestamp: now, process_count: value(total.pids) }),
            containers,
            io: None,
        }),
        windows: None,
    })
}

/// One network interface's counters, from /proc/PID/net/dev.
pub(super) struct NetDev {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The network interfaces (but loopback) of `pid`'s network namespace, from its
/// /proc/PID/net/dev.
pub(super) fn net_dev(pid: i32) -> Vec<NetDev> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else { continue };
        let name = name.trim();
        let f: Vec<u64> = counters.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if name == "lo" || f.len() < 12 {
            continue;
        }
        // receive: bytes packets errs drop fifo frame compressed multicast; then transmit
        // (from the ninth): bytes packets errs drop ...
        out.push(NetDev {
            name: name.to_string(),
            rx_bytes: f[0],
            rx_packets: f[1],
            rx_errors: f[2],
            rx_dropped: f[3],
            tx_bytes: f[8],
            tx_packets: f[9],
            tx_errors: f[10],
            tx_dropped: f[11],
        });
    }
    out
}

fn interfaces(pid: i32) -> Vec<pb::NetworkInterfaceUsage> {
    net_dev(pid)
        .into_iter()
        .map(|d| pb::NetworkInterfaceUsage {
            name: d.name,
            rx_bytes: value(d.rx_bytes),
            rx_errors: value(d.rx_errors),
            tx_bytes: value(d.tx_bytes),
            tx_errors: value(d.tx_errors),
        })
        .collect()
}
