//! ListMetricDescriptors, ListPodSandboxMetrics and StreamPodSandboxMetrics: kubelet's
//! CRI-only stats (the PodAndContainerStatsFromCRI gate) serve its cAdvisor-style Prometheus
//! metrics from these instead of from cAdvisor. kubelet reads the descriptors once and turns
//! each sample into a Prometheus sample as it is: the value (a UInt64Value) as a float, the
//! label values in the descriptor's order, no timestamp when `timestamp` is 0 (read now,
//! which all of berthd's are).
//!
//! The set is fixed: cAdvisor's names and label keys, for what berthd can read (the same
//! sources as the stats RPCs: cgroup v1 or v2 counters of each running container, the pod's
//! network namespace's /proc/PID/net/dev, the limits in the records):
//!
//! - every sample: `container`, `id`, `image`, `name`, `namespace`, `pod` (cAdvisor's labels
//!   as kubelet exports them). A container's: its CRI name, its id, its image as created, its
//!   name in the store (`k8s_<name>_<attempt>_<pod>`), its pod's namespace and name. A pod's
//!   own samples: its id, its namespace and name, the others empty (as cAdvisor labels the
//!   pod's cgroup);
//! - `container_cpu_usage_seconds_total` (counter, `cpu`="total": no per-CPU split) in whole
//!   seconds, truncated: the value is an integer and kubelet passes it on unscaled, so
//!   nanoseconds would read as a billion times the CPU; CRI-O does the same;
//! - `container_memory_usage_bytes`, `container_memory_working_set_bytes` (usage less inactive
//!   file pages), `container_memory_rss` (v1 `rss`, v2 `anon`): gauges, bytes;
//! - `container_memory_failures_total` (counter, `failure_type` pgfault or pgmajfault, `scope`
//!   "hierarchy": the cgroup's counters include its descendants');
//! - `container_spec_memory_limit_bytes` (gauge, 0: none) and, where set,
//!   `container_spec_cpu_shares`, `container_spec_cpu_quota` (µs), `container_spec_cpu_period`
//!   (µs): a container's from its record (what UpdateContainerResources last applied), a
//!   pod's from the resources kubelet gave (RunPodSandbox, UpdatePodSandboxResources);
//! - per pod with a network namespace of its own, per interface but loopback (`interface`):
//!   `container_network_{receive,transmit}_{bytes,packets,errors,packets_dropped}_total`
//!   (counters).
//!
//! A pod's CPU and memory are the sums of its running containers' (as PodSandboxStats).
//! Pods that are not ready and containers that are not running have no samples.

use berth_engine::container::config::Resources;
use berth_engine::sandbox::Sandbox;
use berth_engine::stats::Stats;
use berth_engine::{Container, Engine};
use tonic::Status;

use super::convert;
use super::stats::{net_dev, pod_usage};
use super::{batches, containers, Cri, ResponseStream};
use crate::proto as pb;
use crate::proto::MetricType::{Counter, Gauge};

/// A metric family: its descriptor and type.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: pb::MetricType,
    /// label keys after the common ones
    pub labels: &'static [&'static str],
}

/// The label keys every sample has first, in this order.
pub const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

macro_rules! families {
    ($( $id:ident = $name:literal, $kind:ident, [$($l:literal),*], $help:literal; )*) => {
        $( const $id: Family = Family { name: $name, help: $help, kind: $kind, labels: &[$($l),*] }; )*
        /// Every family berthd reports, in ListMetricDescriptors' order.
        pub const FAMILIES: &[&Family] = &[$(&$id),*];
    };
}

families! {
    CPU_USAGE = "container_cpu_usage_seconds_total", Counter, ["cpu"],
        "Cumulative CPU time consumed, in whole seconds (truncated).";
    MEMORY_USAGE = "container_memory_usage_bytes", Gauge, [],
        "Current memory usage in bytes, including all memory regardless of when it was accessed.";
    MEMORY_WORKING_SET = "container_memory_working_set_bytes", Gauge, [],
        "Current working set in bytes (usage less inactive file pages).";
    MEMORY_RSS = "container_memory_rss", Gauge, [],
        "Size of RSS (anonymous memory and swap cache) in bytes.";
    MEMORY_FAILURES = "container_memory_failures_total", Counter, ["failure_type", "scope"],
        "Cumulative count of memory allocation failures (page faults).";
    SPEC_MEMORY_LIMIT = "container_spec_memory_limit_bytes", Gauge, [],
        "Memory limit in bytes (0: none).";
    SPEC_CPU_SHARES = "container_spec_cpu_shares", Gauge, [],
        "CPU shares.";
    SPEC_CPU_QUOTA = "container_spec_cpu_quota", Gauge, [],
        "CPU quota in microseconds per period.";
    SPEC_CPU_PERIOD = "container_spec_cpu_period", Gauge, [],
        "CPU period in microseconds.";
    NET_RX_BYTES = "container_network_receive_bytes_total", Counter, ["interface"],
        "Cumulative count of bytes received.";
    NET_RX_PACKETS = "container_network_receive_packets_total", Counter, ["interface"],
        "Cumulative count of packets received.";
    NET_RX_ERRORS = "container_network_receive_errors_total", Counter, ["interface"],
        "Cumulative count of errors encountered while receiving.";
    NET_RX_DROPPED = "container_network_receive_packets_dropped_total", Counter, ["interface"],
        "Cumulative count of packets dropped while receiving.";
    NET_TX_BYTES = "container_network_transmit_bytes_total", Counter, ["interface"],
        "Cumulative count of bytes transmitted.";
    NET_TX_PACKETS = "container_network_transmit_packets_total", Counter, ["interface"],
        "Cumulative count of packets transmitted.";
    NET_TX_ERRORS = "container_network_transmit_errors_total", Counter, ["interface"],
        "Cumulative count of errors encountered while transmitting.";
    NET_TX_DROPPED = "container_network_transmit_packets_dropped_total", Counter, ["interface"],
        "Cumulative count of packets dropped while transmitting.";
}

pub async fn descriptors(
    _cri: &Cri,
    _r: pb::ListMetricDescriptorsRequest,
) -> Result<pb::ListMetricDescriptorsResponse, Status> {
    let descriptors = FAMILIES
        .iter()
        .map(|f| pb::MetricDescriptor {
            name: f.name.into(),
            help: f.help.into(),
            label_keys: BASE_LABELS.iter().chain(f.labels).map(|k| k.to_string()).collect(),
        })
        .collect();
    Ok(pb::ListMetricDescriptorsResponse { descriptors })
}

pub async fn list(
    cri: &Cri,
    _r: pb::ListPodSandboxMetricsRequest,
) -> Result<pb::ListPodSandboxMetricsResponse, Status> {
    cri.blocking(|e| {
        let mut pod_metrics = Vec::new();
        for s in e.sandbox_list()?.into_iter().filter(Sandbox::ready) {
            pod_metrics.push(pod_metrics_of(e, &s)?);
        }
        Ok(pb::ListPodSandboxMetricsResponse { pod_metrics })
    })
    .await
}

pub async fn stream(
    cri: &Cri,
    _r: pb::StreamPodSandboxMetricsRequest,
) -> Result<ResponseStream<pb::StreamPodSandboxMetricsResponse>, Status> {
    let items = list(cri, pb::ListPodSandboxMetricsRequest {}).await?.pod_metrics;
    Ok(batches(items, |pod_sandbox_metrics| pb::StreamPodSandboxMetricsResponse { pod_sandbox_metrics }))
}

/// Samples with the same common label values.
struct Samples {
    base: Vec<String>,
    out: Vec<pb::Metric>,
}

impl Samples {
    fn new(base: [String; BASE_LABELS.len()]) -> Samples {
        Samples { base: base.into(), out: Vec::new() }
    }

    fn push(&mut self, f: &Family, labels: &[&str], value: u64) {
        assert_eq!(labels.len(), f.labels.len(), "{}: label values for {:?}", f.name, f.labels);
        let mut label_values = self.base.clone();
        label_values.extend(labels.iter().map(|l| l.to_string()));
        self.out.push(pb::Metric {
            name: f.name.into(),
            timestamp: 0,
            metric_type: f.kind as i32,
            label_values,
            value: Some(pb::UInt64Value { value }),
        });
    }

    /// CPU and memory from the cgroup counters.
    fn usage(&mut self, s: &Stats) {
        self.push(&CPU_USAGE, &["total"], s.cpu_nanos / 1_000_000_000);
        self.push(&MEMORY_USAGE, &[], s.memory_usage);
        self.push(&MEMORY_WORKING_SET, &[], s.memory_working_set);
        self.push(&MEMORY_RSS, &[], s.memory_rss);
        self.push(&MEMORY_FAILURES, &["pgfault", "hierarchy"], s.page_faults);
        self.push(&MEMORY_FAILURES, &["pgmajfault", "hierarchy"], s.major_page_faults);
    }

    /// The limits recorded (none: a memory limit of 0 and no CPU samples).
    fn spec(&mut self, r: Option<&Resources>) {
        let r = r.cloned().unwrap_or_default();
        self.push(&SPEC_MEMORY_LIMIT, &[], r.memory.filter(|m| *m > 0).unwrap_or(0) as u64);
        if let Some(v) = r.cpu_shares {
            self.push(&SPEC_CPU_SHARES, &[], v);
        }
        if let Some(v) = r.cpu_quota.filter(|q| *q > 0) {
            self.push(&SPEC_CPU_QUOTA, &[], v as u64);
        }
        if let Some(v) = r.cpu_period {
            self.push(&SPEC_CPU_PERIOD, &[], v);
        }
    }
}

fn pod_metrics_of(e: &Engine, s: &Sandbox) -> berth_engine::Result<pb::PodSandboxMetrics> {
    let usage = pod_usage(e, s)?;
    let (namespace, pod) = (s.config.namespace.clone(), s.config.name.clone());
    let mut own =
        Samples::new([String::new(), s.id.clone(), String::new(), String::new(), namespace.clone(), pod.clone()]);
    own.usage(&usage.total);
    own.spec(s.config.resources.as_ref());
    for d in usage.net_pid.map(net_dev).unwrap_or_default() {
        let i = [d.name.as_str()];
        own.push(&NET_RX_BYTES, &i, d.rx_bytes);
        own.push(&NET_RX_PACKETS, &i, d.rx_packets);
        own.push(&NET_RX_ERRORS, &i, d.rx_errors);
        own.push(&NET_RX_DROPPED, &i, d.rx_dropped);
        own.push(&NET_TX_BYTES, &i, d.tx_bytes);
        own.push(&NET_TX_PACKETS, &i, d.tx_packets);
        own.push(&NET_TX_ERRORS, &i, d.tx_errors);
        own.push(&NET_TX_DROPPED, &i, d.tx_dropped);
    }
    let container_metrics =
        usage.containers.iter().map(|(c, stats)| container_metrics(c, stats, &namespace, &pod)).collect();
    Ok(pb::PodSandboxMetrics { pod_sandbox_id: s.id.clone(), metrics: own.out, container_metrics })
}

fn container_metrics(c: &Container, stats: &Stats, namespace: &str, pod: &str) -> pb::ContainerMetrics {
    let image = convert::image_spec(&c.config.extra, &c.config.image).image;
    let name = containers::metadata(c).name;
    let mut samples = Samples::new([name, c.id.clone(), image, c.name.clone(), namespace.into(), pod.into()]);
    samples.usage(stats);
    samples.spec(Some(&c.config.resources));
    pb::ContainerMetrics { container_id: c.id.clone(), metrics: samples.out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_cadvisors() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
        assert!(names.iter().all(|n| n.starts_with("container_")));
        // Counters end in _total, as Prometheus names them.
        for f in FAMILIES {
            assert_eq!(f.kind == Counter, f.name.ends_with("_total"), "{}", f.name);
        }
    }

    #[test]
    fn samples_follow_their_descriptor() {
        let mut s = Samples::new(["c".into(), "id".into(), "img".into(), "n".into(), "ns".into(), "p".into()]);
        s.usage(&Stats { cpu_nanos: 2_999_999_999, memory_usage: 10, ..Default::default() });
        let cpu = s.out.iter().find(|m| m.name == CPU_USAGE.name).unwrap();
        assert_eq!(cpu.value.as_ref().unwrap().value, 2);
        assert_eq!(cpu.label_values, ["c", "id", "img", "n", "ns", "p", "total"]);
        assert_eq!(cpu.metric_type, Counter as i32);
        let failures: Vec<_> = s.out.iter().filter(|m| m.name == MEMORY_FAILURES.name).collect();
        assert_eq!(failures.len(), 2);
        assert_eq!(failures[1].label_values[6..], ["pgmajfault", "hierarchy"]);
    }

    #[test]
    #[should_panic(expected = "label values")]
    fn a_sample_without_its_labels_is_a_bug() {
        Samples::new(Default::default()).push(&NET_RX_BYTES, &[], 1);
    }
}
