//! CreateContainer, StartContainer, StopContainer, RemoveContainer, ListContainers,
//! ContainerStatus, UpdateContainerResources, ReopenContainerLog and ExecSync on the engine's
//! containers. berthd's containers are those with a pod; the CLI's own are not shown here.

use std::collections::HashMap;
use std::time::Duration;

use berth_engine::container::config::{MountSource, Propagation};
use berth_engine::{Container, Engine};
use tonic::Status;

use super::convert::{self, extra};
use super::{batches, required, Cri, ResponseStream};
use crate::proto as pb;

pub async fn create(cri: &Cri, r: pb::CreateContainerRequest) -> Result<pb::CreateContainerResponse, Status> {
    let config = required(&r.config, "config")?.clone();
    let pod_id = r.pod_sandbox_id;
    let settings = cri.settings.clone();
    // The pod as created, not as the request repeats it: its namespaces and files are the
    // ones recorded.
    let pod = cri
        .blocking({
            let pod_id = pod_id.clone();
            move |e| e.sandbox_get(&pod_id)
        })
        .await?;
    let cfg = convert::container_config(&pod.id, &config, &pod.config, &settings)?;
    let c = cri.blocking(move |e| e.create(&cfg)).await?;
    cri.events.created(&c.id);
    Ok(pb::CreateContainerResponse { container_id: c.id })
}

pub async fn start(cri: &Cri, r: pb::StartContainerRequest) -> Result<pb::StartContainerResponse, Status> {
    let id = r.container_id;
    let c = cri
        .blocking(move |e| {
            let c = ours(e, &id)?;
            if c.state.status != "created" {
                berth_sys::bail!(
                    InvalidState,
                    "container {} is {}: only a created container can be started",
                    c.id,
                    c.state.status
                );
            }
            e.start(&c.id)?;
            e.get(&c.id)
        })
        .await?;
    cri.events.started(&c);
    Ok(pb::StartContainerResponse {})
}

/// Stops the container: its stop signal, then SIGKILL after `timeout` seconds (0: at once).
/// A container already stopped, or gone, is stopped.
pub async fn stop(cri: &Cri, r: pb::StopContainerRequest) -> Result<pb::StopContainerResponse, Status> {
    let id = r.container_id;
    let timeout = u32::try_from(r.timeout.max(0)).unwrap_or(u32::MAX);
    cri.blocking(move |e| match ours(e, &id) {
        Ok(c) => e.stop(&c.id, Some(timeout)).map(|_| ()),
        Err(err) if err.is(berth_engine::Kind::NotFound) => Ok(()),
        Err(err) => Err(err),
    })
    .await?;
    Ok(pb::StopContainerResponse {})
}

/// Removes the container (killing it if it runs); one that is gone is removed.
pub async fn remove(cri: &Cri, r: pb::RemoveContainerRequest) -> Result<pb::RemoveContainerResponse, Status> {
    let id = r.container_id;
    let removed = cri
        .blocking(move |e| {
            let c = match ours(e, &id) {
                Ok(c) => c,
                Err(err) if err.is(berth_engine::Kind::NotFound) => return Ok(None),
                Err(err) => return Err(err),
            };
            // Stopped first, so its last status is the one it ended with.
            let c = if c.running() { e.stop(&c.id, Some(0))? } else { c };
            let last = container_status(e, &c);
            e.remove(&c.id, true, true)?;
            Ok(Some((last, c.config.sandbox.unwrap_or_default())))
        })
        .await?;
    if let Some((last, pod)) = removed {
        cri.events.deleted(last, &pod);
    }
    Ok(pb::RemoveContainerResponse {})
}

pub async fn list(cri: &Cri, r: pb::ListContainersRequest) -> Result<pb::ListContainersResponse, Status> {
    let f = r.filter.unwrap_or_default();
    cri.blocking(move |e| {
        let mut out = Vec::new();
        for c in pod_containers(e)? {
            if !f.id.is_empty() && !c.id.starts_with(&f.id) {
                continue;
            }
            let pod = c.config.sandbox.clone().unwrap_or_default();
            if !f.pod_sandbox_id.is_empty() && !pod.starts_with(&f.pod_sandbox_id) {
                continue;
            }
            let st = state(&c) as i32;
            if f.state.as_ref().is_some_and(|s| s.state != st) {
                continue;
            }
            let labels = convert::extra_map(&c.config.extra, extra::LABELS);
            if !f.label_selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                continue;
            }
            out.push(pb::Container {
                id: c.id.clone(),
                pod_sandbox_id: pod,
                metadata: Some(metadata(&c)),
                image: Some(convert::image_spec(&c.config.extra, &c.image)),
                image_ref: image_ref(&c),
                state: st,
                created_at: nanos(&c.created),
                labels,
                annotations: convert::extra_map(&c.config.extra, extra::ANNOTATIONS),
                image_id: c.image_id.clone(),
            });
        }
        Ok(pb::ListContainersResponse { containers: out })
    })
    .await
}

pub async fn stream(
    cri: &Cri,
    r: pb::StreamContainersRequest,
) -> Result<ResponseStream<pb::StreamContainersResponse>, Status> {
    let items = list(cri, pb::ListContainersRequest { filter: r.filter }).await?.containers;
    Ok(batches(items, |containers| pb::StreamContainersResponse { containers }))
}

pub async fn status(cri: &Cri, r: pb::ContainerStatusRequest) -> Result<pb::ContainerStatusResponse, Status> {
    let (id, verbose) = (r.container_id, r.verbose);
    cri.blocking(move |e| {
        let c = ours(e, &id)?;
        let mut info = HashMap::new();
        if verbose {
            info.insert("info".to_string(), serde_json::to_string(&c).unwrap_or_default());
        }
        Ok(pb::ContainerStatusResponse { status: Some(container_status(e, &c)), info })
    })
    .await
}

pub async fn update_resources(
    cri: &Cri,
    r: pb::UpdateContainerResourcesRequest,
) -> Result<pb::UpdateContainerResourcesResponse, Status> {
    let Some(linux) = r.linux else {
        // Nothing for Linux (Windows resources only): nothing to change here.
        return Ok(pb::UpdateContainerResourcesResponse {});
    };
    let resources = convert::resources(&linux, "linux")?;
    let id = r.container_id;
    cri.blocking(move |e| {
        let c = ours(e, &id)?;
        e.update_resources(&c.id, &resources)
    })
    .await?;
    Ok(pb::UpdateContainerResourcesResponse {})
}

/// Has the container's monitor reopen its log file (kubelet has rotated it).
pub async fn reopen_log(cri: &Cri, r: pb::ReopenContainerLogRequest) -> Result<pb::ReopenContainerLogResponse, Status> {
    let id = r.container_id;
    cri.blocking(move |e| {
        let c = ours(e, &id)?;
        e.reopen_log(&c.id)
    })
    .await?;
    Ok(pb::ReopenContainerLogResponse {})
}

/// Runs a command in the container and returns its output and exit code (exec probes). A
/// timeout (seconds, 0: none) that passes kills the command and fails with DeadlineExceeded.
pub async fn exec_sync(cri: &Cri, r: pb::ExecSyncRequest) -> Result<pb::ExecSyncResponse, Status> {
    if r.cmd.is_empty() {
        return Err(Status::invalid_argument("cmd: empty"));
    }
    if r.timeout < 0 {
        return Err(Status::invalid_argument(format!("timeout: {} is negative", r.timeout)));
    }
    let timeout = if r.timeout > 0 { Some(Duration::from_secs(r.timeout as u64)) } else { None };
    let (id, cmd) = (r.container_id, r.cmd);
    let out = cri
        .blocking(move |e| {
            let c = ours(e, &id)?;
            e.exec_sync(&c.id, &cmd, timeout)
        })
        .await?;
    Ok(pb::ExecSyncResponse { stdout: out.stdout, stderr: out.stderr, exit_code: out.exit_code })
}

/// A container of a pod by id (or unique id prefix); the CLI's containers are not berthd's.
pub fn ours(e: &Engine, id: &str) -> berth_engine::Result<Container> {
    if id.is_empty() {
        berth_sys::bail!(InvalidInput, "container_id: empty");
    }
    // Names are the CLI's way of naming containers; CRI speaks in ids only.
    if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        berth_sys::bail!(NotFound, "container {id:?} not found");
    }
    let c = e.get(id)?;
    if c.config.sandbox.is_none() {
        berth_sys::bail!(NotFound, "container {id} not found (it is not a pod's)");
    }
    Ok(c)
}

/// The containers of pods, oldest first.
pub fn pod_containers(e: &Engine) -> berth_engine::Result<Vec<Container>> {
    Ok(e.list()?.into_iter().filter(|c| c.config.sandbox.is_some()).collect())
}

pub fn state(c: &Container) -> pb::ContainerState {
    match c.state.status.as_str() {
        "creating" | "created" => pb::ContainerState::ContainerCreated,
        "running" => pb::ContainerState::ContainerRunning,
        "exited" => pb::ContainerState::ContainerExited,
        _ => pb::ContainerState::ContainerUnknown,
    }
}

pub fn metadata(c: &Container) -> pb::ContainerMetadata {
    pb::ContainerMetadata {
        name: c.config.extra.get(extra::NAME).cloned().unwrap_or_else(|| c.name.clone()),
        attempt: c.config.extra.get(extra::ATTEMPT).and_then(|a| a.parse().ok()).unwrap_or(0),
    }
}

/// Nanoseconds since the epoch of an RFC 3339 time; 0 when unset.
fn nanos(t: &str) -> i64 {
    berth_time::parse_rfc3339(t).map(|n| n as i64).unwrap_or(0)
}

/// The image by its digest in the repository it came from (kubelet shows it as the
/// container's imageID), else its ID.
fn image_ref(c: &Container) -> String {
    let repo = c.image.split('@').next().unwrap_or_default();
    let repo = match repo.rfind(':') {
        Some(i) if !repo[i..].contains('/') => &repo[..i],
        _ => repo,
    };
    if c.image_manifest.is_empty() || repo.is_empty() || repo.starts_with("sha256:") {
        c.image_id.clone()
    } else {
        format!("{repo}@{}", c.image_manifest)
    }
}

/// The user the container's process runs as, from its bundle.
fn user(e: &Engine, c: &Container) -> Option<pb::ContainerUser> {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(e.container_dir(&c.id).join("config.json")).ok()?).ok()?;
    let u = &spec["process"]["user"];
    Some(pb::ContainerUser {
        linux: Some(pb::LinuxContainerUser {
            uid: u["uid"].as_i64()?,
            gid: u["gid"].as_i64()?,
            supplemental_groups: u["additionalGids"]
                .as_array()
                .map(|a| a.iter().filter_map(|g| g.as_i64()).collect())
                .unwrap_or_default(),
        }),
    })
}

/// A container's status as CRI reports it.
pub fn container_status(e: &Engine, c: &Container) -> pb::ContainerStatus {
    let st = state(c);
    let (reason, message) = match st {
        pb::ContainerState::ContainerExited if c.state.oom_killed => ("OOMKilled", c.state.error.clone()),
        pb::ContainerState::ContainerExited if c.state.exit_code == Some(0) => ("Completed", String::new()),
        pb::ContainerState::ContainerExited => ("Error", c.state.error.clone()),
        _ => ("", String::new()),
    };
    let mounts = c
        .config
        .mounts
        .iter()
        .filter_map(|m| match &m.source {
            MountSource::Bind(host) => Some(pb::Mount {
                container_path: m.destination.clone(),
                host_path: host.display().to_string(),
                readonly: m.readonly,
                recursive_read_only: m.recursive_readonly,
                propagation: match m.propagation {
                    Propagation::Slave => pb::MountPropagation::PropagationHostToContainer,
                    Propagation::Shared => pb::MountPropagation::PropagationBidirectional,
                    Propagation::Private => pb::MountPropagation::PropagationPrivate,
                } as i32,
                ..Default::default()
            }),
            MountSource::Image { reference, sub_path } => {
                // The image as stored: its ID is the reference kubelet matches (image_ref).
                let info = c.mounts.iter().find(|i| i.kind == "image" && i.destination == m.destination);
                Some(pb::Mount {
                    container_path: m.destination.clone(),
                    readonly: true,
                    image: Some(pb::ImageSpec {
                        image: reference.clone(),
                        image_ref: info.map(|i| i.name.clone()).unwrap_or_default(),
                        ..Default::default()
                    }),
                    image_sub_path: sub_path.clone().unwrap_or_default(),
                    ..Default::default()
                })
            }
            _ => None,
        })
        .collect();
    pb::ContainerStatus {
        id: c.id.clone(),
        metadata: Some(metadata(c)),
        state: st as i32,
        created_at: nanos(&c.created),
        started_at: nanos(&c.state.started_at),
        finished_at: if st == pb::ContainerState::ContainerExited { nanos(&c.state.finished_at) } else { 0 },
        exit_code: c.state.exit_code.unwrap_or(0),
        image: Some(convert::image_spec(&c.config.extra, &c.image)),
        image_ref: image_ref(c),
        reason: reason.into(),
        message,
        labels: convert::extra_map(&c.config.extra, extra::LABELS),
        annotations: convert::extra_map(&c.config.extra, extra::ANNOTATIONS),
        mounts,
        log_path: c.config.log.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        resources: Some(pb::ContainerResources {
            linux: Some(convert::resources_back(&c.config.resources, c.config.security.oom_score_adj)),
            windows: None,
        }),
        image_id: c.image_id.clone(),
        user: user(e, c),
        stop_signal: convert::signal_enum(c.stop_signal),
    }
}
