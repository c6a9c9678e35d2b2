//! RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox and
//! UpdatePodSandboxResources on the engine's pods (`berth_engine::sandbox`).

use std::collections::HashMap;

use berth_engine::sandbox::{PodNamespace, Sandbox};
use berth_engine::Engine;
use tonic::Status;

use super::{batches, containers, convert, required, Cri, ResponseStream};
use crate::proto as pb;

pub async fn run(cri: &Cri, r: pb::RunPodSandboxRequest) -> Result<pb::RunPodSandboxResponse, Status> {
    let handler = match (r.runtime_handler.as_str(), &cri.settings.default_runtime_handler) {
        ("", Some(default)) => default.as_str(),
        (named, _) => named,
    };
    let mut config = convert::sandbox_config(required(&r.config, "config")?, handler)?;
    if config.cgroup_parent.is_none() {
        config.cgroup_parent = cri.settings.pod_cgroup_parent.clone();
    }
    let pod = cri.blocking(move |e| e.sandbox_run(&config)).await?;
    Ok(pb::RunPodSandboxResponse { pod_sandbox_id: pod.id })
}

/// Stops the pod's containers and releases its network; a pod that is gone is stopped.
pub async fn stop(cri: &Cri, r: pb::StopPodSandboxRequest) -> Result<pb::StopPodSandboxResponse, Status> {
    let id = r.pod_sandbox_id;
    cri.blocking(move |e| e.sandbox_stop(&id)).await?;
    Ok(pb::StopPodSandboxResponse {})
}

/// Removes the pod, its containers (stopped first) and all it holds; a pod that is gone is
/// removed.
pub async fn remove(cri: &Cri, r: pb::RemovePodSandboxRequest) -> Result<pb::RemovePodSandboxResponse, Status> {
    let id = r.pod_sandbox_id;
    let removed = cri
        .blocking(move |e| {
            let pod = match e.sandbox_get(&id) {
                Ok(pod) => pod,
                Err(err) if err.is(berth_engine::Kind::NotFound) => return Ok((id.clone(), Vec::new())),
                Err(err) => return Err(err),
            };
            // Stopped first, so their last statuses are the ones they ended with.
            e.sandbox_stop(&pod.id)?;
            let last = e.sandbox_containers(&pod.id)?.iter().map(|c| containers::container_status(e, c)).collect();
            e.sandbox_remove(&pod.id)?;
            Ok((pod.id, last))
        })
        .await?;
    let (pod, containers): (String, Vec<pb::ContainerStatus>) = removed;
    for last in containers {
        cri.events.deleted(last, &pod);
    }
    Ok(pb::RemovePodSandboxResponse {})
}

pub async fn status(cri: &Cri, r: pb::PodSandboxStatusRequest) -> Result<pb::PodSandboxStatusResponse, Status> {
    let (id, verbose) = (r.pod_sandbox_id, r.verbose);
    cri.blocking(move |e| {
        let s = e.sandbox_get(&id)?;
        let mut info = HashMap::new();
        if verbose {
            info.insert("info".to_string(), serde_json::to_string(&s).unwrap_or_default());
        }
        let containers_statuses =
            e.sandbox_containers(&s.id)?.iter().map(|c| containers::container_status(e, c)).collect();
        Ok(pb::PodSandboxStatusResponse {
            status: Some(pod_status(&s)),
            info,
            containers_statuses,
            timestamp: berth_time::now_nanos() as i64,
        })
    })
    .await
}

/// UpdatePodSandboxResources: kubelet calls it after it has resized the pod's cgroup (which
/// is kubelet's own), to tell the runtime. berthd changes no cgroup for it: it checks the
/// values (as UpdateContainerResources does) and records them in the pod's record, where
/// PodSandboxStatus's verbose `info` and the pod's `container_spec_*` metrics show them. The
/// containers' own limits come with UpdateContainerResources. Idempotent.
pub async fn update_resources(
    cri: &Cri,
    r: pb::UpdatePodSandboxResourcesRequest,
) -> Result<pb::UpdatePodSandboxResourcesResponse, Status> {
    if r.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id: empty"));
    }
    let overhead = r.overhead.as_ref().map(|o| convert::resources(o, "overhead")).transpose()?;
    let resources = r.resources.as_ref().map(|o| convert::resources(o, "resources")).transpose()?;
    let id = r.pod_sandbox_id;
    cri.blocking(move |e| e.sandbox_update_resources(&id, overhead.as_ref(), resources.as_ref())).await?;
    Ok(pb::UpdatePodSandboxResourcesResponse {})
}

pub async fn list(cri: &Cri, r: pb::ListPodSandboxRequest) -> Result<pb::ListPodSandboxResponse, Status> {
    let filter = r.filter.unwrap_or_default();
    cri.blocking(move |e| Ok(pb::ListPodSandboxResponse { items: pods(e, &filter)? })).await
}

pub async fn stream(
    cri: &Cri,
    r: pb::StreamPodSandboxesRequest,
) -> Result<ResponseStream<pb::StreamPodSandboxesResponse>, Status> {
    let items = list(cri, pb::ListPodSandboxRequest { filter: r.filter }).await?.items;
    Ok(batches(items, |pod_sandboxes| pb::StreamPodSandboxesResponse { pod_sandboxes }))
}

fn pods(e: &Engine, f: &pb::PodSandboxFilter) -> berth_engine::Result<Vec<pb::PodSandbox>> {
    let mut out = Vec::new();
    for s in e.sandbox_list()? {
        if !f.id.is_empty() && !s.id.starts_with(&f.id) {
            continue;
        }
        let state = state(&s) as i32;
        if f.state.as_ref().is_some_and(|v| v.state != state) {
            continue;
        }
        if !f.label_selector.iter().all(|(k, v)| s.config.labels.get(k) == Some(v)) {
            continue;
        }
        out.push(pb::PodSandbox {
            id: s.id.clone(),
            metadata: Some(metadata(&s)),
            state,
            created_at: s.created_at,
            labels: s.config.labels.clone().into_iter().collect(),
            annotations: s.config.annotations.clone().into_iter().collect(),
            runtime_handler: s.config.runtime.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

fn state(s: &Sandbox) -> pb::PodSandboxState {
    if s.ready() {
        pb::PodSandboxState::SandboxReady
    } else {
        pb::PodSandboxState::SandboxNotready
    }
}

pub fn metadata(s: &Sandbox) -> pb::PodSandboxMetadata {
    pb::PodSandboxMetadata {
        name: s.config.name.clone(),
        uid: s.config.uid.clone(),
        namespace: s.config.namespace.clone(),
        attempt: s.config.attempt,
    }
}

fn namespace_mode(m: PodNamespace) -> i32 {
    (match m {
        PodNamespace::Pod => pb::NamespaceMode::Pod,
        PodNamespace::Node => pb::NamespaceMode::Node,
        PodNamespace::Container => pb::NamespaceMode::Container,
    }) as i32
}

/// A pod's status as CRI reports it.
pub fn pod_status(s: &Sandbox) -> pb::PodSandboxStatus {
    pb::PodSandboxStatus {
        id: s.id.clone(),
        metadata: Some(metadata(s)),
        state: state(s) as i32,
        created_at: s.created_at,
        network: Some(pb::PodSandboxNetworkStatus { ip: s.state.ip.clone(), additional_ips: Vec::new() }),
        linux: Some(pb::LinuxPodSandboxStatus {
            namespaces: Some(pb::Namespace {
                options: Some(pb::NamespaceOption {
                    network: namespace_mode(s.config.network),
                    pid: namespace_mode(s.config.pid),
                    ipc: namespace_mode(s.config.ipc),
                    ..Default::default()
                }),
            }),
        }),
        labels: s.config.labels.clone().into_iter().collect(),
        annotations: s.config.annotations.clone().into_iter().collect(),
        runtime_handler: s.config.runtime.clone().unwrap_or_default(),
    }
}
