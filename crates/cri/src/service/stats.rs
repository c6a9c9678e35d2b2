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

/// A pod's usage: the sum of its running containers' (a pod has no process of its own), and
/// its network interfaces as one of its containers sees them.
fn pod_stats(e: &Engine, s: &Sandbox, samples: &CpuSamples) -> berth_engine::Result<pb::PodSandboxStats> {
    let now = berth_time::now_nanos() as i64;
    let mut total = berth_engine::stats::Stats::default();
    let mut containers = Vec::new();
    let mut net_pid = None;
    for c in e.sandbox_containers(&s.id)?.iter().filter(|c| c.running()) {
        let cs = e.stats(&c.id)?;
        total.cpu_nanos += cs.cpu_nanos;
        total.memory_usage += cs.memory_usage;
        total.memory_working_set += cs.memory_working_set;
        total.memory_rss += cs.memory_rss;
        total.page_faults += cs.page_faults;
        total.major_page_faults += cs.major_page_faults;
        total.pids += cs.pids;
        total.memory_limit = total.memory_limit.max(cs.memory_limit);
        net_pid.get_or_insert(c.state.pid);
        containers.push(container_stats(e, c, samples)?);
    }
    let pod_key = format!("pod:{}", s.id);
    let interfaces = match (net_pid, s.state.netns.is_some()) {
        (Some(pid), true) => interfaces(pid),
        _ => Vec::new(),
    };
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

/// The network interfaces (but loopback) of `pid`'s network namespace, from its
/// /proc/PID/net/dev.
fn interfaces(pid: i32) -> Vec<pb::NetworkInterfaceUsage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else { continue };
        let name = name.trim();
        let f: Vec<u64> = counters.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if name == "lo" || f.len() < 11 {
            continue;
        }
        // receive: bytes packets errs ...; transmit (from the ninth): bytes packets errs ...
        out.push(pb::NetworkInterfaceUsage {
            name: name.to_string(),
            rx_bytes: value(f[0]),
            rx_errors: value(f[2]),
            tx_bytes: value(f[8]),
            tx_errors: value(f[10]),
        });
    }
    out
}
