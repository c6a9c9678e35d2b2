//! The metrics kubelet exports in cAdvisor's stead (ListMetricDescriptors,
//! ListPodSandboxMetrics, StreamPodSandboxMetrics) and the pod's resources kubelet reports
//! (UpdatePodSandboxResources).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use berth_cri::proto as pb;
use tonic::Code;

use crate::support::*;

/// Descriptors by name: their label keys.
fn descriptors() -> HashMap<String, Vec<String>> {
    let list = block(cri().runtime.list_metric_descriptors(pb::ListMetricDescriptorsRequest {}))
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors;
    let map: HashMap<String, Vec<String>> = list.iter().map(|d| (d.name.clone(), d.label_keys.clone())).collect();
    assert_eq!(map.len(), list.len(), "descriptor names are not unique: {list:?}");
    map
}

fn pod_metrics(pod: &str) -> Option<pb::PodSandboxMetrics> {
    block(cri().runtime.list_pod_sandbox_metrics(pb::ListPodSandboxMetricsRequest {}))
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics
        .into_iter()
        .find(|p| p.pod_sandbox_id == pod)
}

/// The value of the sample `name` whose labels include `labels` (key, value); there must be
/// exactly one.
fn value(metrics: &[pb::Metric], keys: &HashMap<String, Vec<String>>, name: &str, labels: &[(&str, &str)]) -> u64 {
    let found: Vec<&pb::Metric> = metrics
        .iter()
        .filter(|m| m.name == name)
        .filter(|m| {
            labels.iter().all(|(k, v)| {
                let i = keys[name].iter().position(|key| key == k).unwrap_or_else(|| panic!("{name} has no label {k}"));
                m.label_values[i] == *v
            })
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?} in {metrics:?}");
    found[0].value.as_ref().expect("a value").value
}

fn label<'a>(m: &'a pb::Metric, keys: &HashMap<String, Vec<String>>, key: &str) -> &'a str {
    &m.label_values[keys[&m.name].iter().position(|k| k == key).unwrap()]
}

fn cpu_nanos(id: &str) -> u64 {
    block(cri().runtime.container_stats(pb::ContainerStatsRequest { container_id: id.into() }))
        .expect("ContainerStats")
        .into_inner()
        .stats
        .and_then(|s| s.cpu?.usage_core_nano_seconds)
        .map(|v| v.value)
        .unwrap_or(0)
}

pub fn pod_and_container_metrics() {
    let keys = descriptors();
    let pod = Pod::run(pod_config("metrics"));
    let pod_name = pod.config.metadata.as_ref().unwrap().name.clone();
    // Busy until the test has seen more than a second of CPU (the counter is whole seconds).
    let mut cfg = container_config("burn", "while [ ! -e /stop ]; do :; done; exec sleep 1000");
    cfg.linux.as_mut().unwrap().resources =
        Some(pb::LinuxContainerResources { memory_limit_in_bytes: 64 << 20, cpu_shares: 512, ..Default::default() });
    let id = pod.start(cfg);
    wait_until("1.2 s of CPU", Duration::from_secs(90), || cpu_nanos(&id) >= 1_200_000_000);
    assert_eq!(exec(&id, &["touch", "/stop"]).0, 0);

    let before = cpu_nanos(&id);
    let first = pod_metrics(&pod.id).expect("the pod's metrics");
    let after = cpu_nanos(&id);
    let second = pod_metrics(&pod.id).expect("the pod's metrics, again");

    // Every sample is described, with a value for each label key, and no two samples of a
    // name have the same labels (Prometheus refuses duplicates).
    let mut seen = HashSet::new();
    let all = first.metrics.iter().chain(first.container_metrics.iter().flat_map(|c| &c.metrics));
    for m in all {
        let k = keys.get(&m.name).unwrap_or_else(|| panic!("{} has no descriptor", m.name));
        assert_eq!(m.label_values.len(), k.len(), "{m:?} for {k:?}");
        assert!(m.value.is_some(), "{m:?}");
        assert_eq!(label(m, &keys, "pod"), pod_name, "{m:?}");
        assert_eq!(label(m, &keys, "namespace"), "berthd-test", "{m:?}");
        assert!(seen.insert((m.name.clone(), m.label_values.clone())), "duplicate sample {m:?}");
    }
    // The pod's own samples carry its id and no container.
    assert!(first.metrics.iter().all(|m| label(m, &keys, "id") == pod.id && label(m, &keys, "container").is_empty()));
    // The pod's network, per interface: eth0's counters are there, loopback's are not.
    value(&first.metrics, &keys, "container_network_receive_packets_total", &[("interface", "eth0")]);
    assert!(
        !first.metrics.iter().any(|m| m.name.starts_with("container_network") && label(m, &keys, "interface") == "lo"),
        "loopback reported"
    );

    assert_eq!(first.container_metrics.len(), 1, "{first:?}");
    let c = &first.container_metrics[0];
    assert_eq!(c.container_id, id);
    for m in &c.metrics {
        assert_eq!((label(m, &keys, "container"), label(m, &keys, "id")), ("burn", id.as_str()), "{m:?}");
        assert_eq!(label(m, &keys, "image"), IMAGE, "{m:?}");
    }
    let usage = value(&c.metrics, &keys, "container_memory_usage_bytes", &[]);
    assert!(usage > 0, "{c:?}");
    assert!(value(&c.metrics, &keys, "container_memory_working_set_bytes", &[]) <= usage);
    assert_eq!(value(&c.metrics, &keys, "container_spec_memory_limit_bytes", &[]), 64 << 20);
    assert_eq!(value(&c.metrics, &keys, "container_spec_cpu_shares", &[]), 512);
    // CPU in whole seconds, between the stats read before and after.
    let cpu = value(&c.metrics, &keys, "container_cpu_usage_seconds_total", &[("cpu", "total")]);
    assert!(cpu >= 1 && before / 1_000_000_000 <= cpu && cpu <= after / 1_000_000_000, "{before} {cpu} {after}");
    let pod_cpu = value(&first.metrics, &keys, "container_cpu_usage_seconds_total", &[("cpu", "total")]);
    assert_eq!(pod_cpu, cpu, "the pod's only container's CPU");
    // Counters do not go back.
    let c2 = &second.container_metrics[0];
    let cpu2 = value(&c2.metrics, &keys, "container_cpu_usage_seconds_total", &[("cpu", "total")]);
    assert!(cpu2 >= cpu, "{cpu} then {cpu2}");
    let rx = |p: &pb::PodSandboxMetrics| {
        value(&p.metrics, &keys, "container_network_receive_bytes_total", &[("interface", "eth0")])
    };
    assert!(rx(&second) >= rx(&first));

    // The stream sends the same samples (values may have moved on).
    let mut stream = block(cri().runtime.stream_pod_sandbox_metrics(pb::StreamPodSandboxMetricsRequest {}))
        .expect("StreamPodSandboxMetrics")
        .into_inner();
    let mut streamed = None;
    while let Some(batch) = block(stream.message()).expect("a batch") {
        assert!(!batch.pod_sandbox_metrics.is_empty());
        streamed = streamed.or(batch.pod_sandbox_metrics.into_iter().find(|p| p.pod_sandbox_id == pod.id));
    }
    let streamed = streamed.expect("the pod in the stream");
    let names = |p: &pb::PodSandboxMetrics| {
        let mut v: Vec<(String, Vec<String>)> = p
            .metrics
            .iter()
            .chain(p.container_metrics.iter().flat_map(|c| &c.metrics))
            .map(|m| (m.name.clone(), m.label_values.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&streamed), names(&first));

    // A stopped pod has none.
    block(cri().runtime.stop_pod_sandbox(pb::StopPodSandboxRequest { pod_sandbox_id: pod.id.clone() }))
        .expect("StopPodSandbox");
    assert!(pod_metrics(&pod.id).is_none());
}

/// The pod's record as PodSandboxStatus's verbose info shows it.
fn record(pod: &str) -> serde_json::Value {
    let r = block(
        cri().runtime.pod_sandbox_status(pb::PodSandboxStatusRequest { pod_sandbox_id: pod.into(), verbose: true }),
    )
    .expect("PodSandboxStatus")
    .into_inner();
    serde_json::from_str(&r.info["info"]).expect("the record as JSON")
}

fn update(
    pod: &str,
    overhead: Option<pb::LinuxContainerResources>,
    resources: Option<pb::LinuxContainerResources>,
) -> Result<(), tonic::Status> {
    block(cri().runtime.update_pod_sandbox_resources(pb::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod.into(),
        overhead,
        resources,
    }))
    .map(|_| ())
}

pub fn pod_resources_are_recorded() {
    let keys = descriptors();
    let mut config = pod_config("resized");
    config.linux.as_mut().unwrap().resources =
        Some(pb::LinuxContainerResources { memory_limit_in_bytes: 128 << 20, ..Default::default() });
    let pod = Pod::run(config.clone());
    assert_eq!(record(&pod.id)["config"]["resources"]["memory"], 128 << 20);
    assert!(record(&pod.id)["config"]["overhead"].is_null());

    let resources = pb::LinuxContainerResources {
        memory_limit_in_bytes: 256 << 20,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        cpu_shares: 204,
        ..Default::default()
    };
    let overhead = pb::LinuxContainerResources { memory_limit_in_bytes: 16 << 20, ..Default::default() };
    update(&pod.id, Some(overhead.clone()), Some(resources.clone())).expect("UpdatePodSandboxResources");
    let once = record(&pod.id);
    // Idempotent.
    update(&pod.id, Some(overhead), Some(resources)).expect("UpdatePodSandboxResources, again");
    let config_now = record(&pod.id)["config"].clone();
    assert_eq!(config_now, once["config"]);
    assert_eq!(config_now["resources"]["memory"], 256 << 20);
    assert_eq!(config_now["resources"]["cpuQuota"], 50_000);
    assert_eq!(config_now["overhead"]["memory"], 16 << 20);
    // Only what is given changes.
    update(&pod.id, None, None).expect("UpdatePodSandboxResources without resources");
    assert_eq!(record(&pod.id)["config"], config_now);

    // The pod's limits as metrics.
    let m = pod_metrics(&pod.id).expect("the pod's metrics").metrics;
    assert_eq!(value(&m, &keys, "container_spec_memory_limit_bytes", &[]), 256 << 20);
    assert_eq!(value(&m, &keys, "container_spec_cpu_quota", &[]), 50_000);
    assert_eq!(value(&m, &keys, "container_spec_cpu_period", &[]), 100_000);
    assert_eq!(value(&m, &keys, "container_spec_cpu_shares", &[]), 204);

    // Refusals name the field; nothing is recorded.
    let e = update(&pod.id, None, Some(pb::LinuxContainerResources { cpu_period: 10, ..Default::default() }))
        .expect_err("a CPU period below the kernel's range");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("resources.cpu_period 10: "), "{e:?}");
    assert_eq!(record(&pod.id)["config"], config_now);
    let e = update(&format!("{}0", pod.id), None, None).expect_err("a pod that does not exist");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // RunPodSandbox refuses the same values, naming its field.
    let mut bad = pod_config("resized");
    bad.linux.as_mut().unwrap().overhead = Some(pb::LinuxContainerResources { cpu_shares: 1, ..Default::default() });
    let e = block(
        cri().runtime.run_pod_sandbox(pb::RunPodSandboxRequest { config: Some(bad), runtime_handler: String::new() }),
    )
    .expect_err("RunPodSandbox with overhead cpu_shares 1");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("config.linux.overhead.cpu_shares 1: "), "{e:?}");
}
