//! Version, Status, RuntimeConfig and UpdateRuntimeConfig: what kubelet asks first.

use std::collections::HashMap;

use berth_engine::runtime as handlers;
use tonic::Status;

use super::Cri;
use crate::proto as pb;

pub async fn version(_cri: &Cri, _r: pb::VersionRequest) -> Result<pb::VersionResponse, Status> {
    Ok(pb::VersionResponse {
        version: crate::KUBELET_API_VERSION.into(),
        runtime_name: crate::RUNTIME_NAME.into(),
        runtime_version: crate::RUNTIME_VERSION.into(),
        runtime_api_version: crate::RUNTIME_API_VERSION.into(),
    })
}

fn condition(kind: &str, ok: bool, reason: &str, message: String) -> pb::RuntimeCondition {
    pb::RuntimeCondition {
        r#type: kind.into(),
        status: ok,
        reason: if ok { String::new() } else { reason.into() },
        message: if ok { String::new() } else { message },
    }
}

/// RuntimeReady: the default runtime handler is installed; NetworkReady: the CNI plugins the
/// pods' network needs are found. Each runtime handler with its features.
pub async fn status(cri: &Cri, r: pb::StatusRequest) -> Result<pb::StatusResponse, Status> {
    let verbose = r.verbose;
    cri.blocking(move |e| {
        let runtime = e.runtime(None);
        let runtime_ready = condition(
            "RuntimeReady",
            runtime.is_ok(),
            "RuntimeHandlerMissing",
            runtime.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
        );
        let missing: Vec<&str> = ["bridge", "host-local", "loopback", "portmap", "firewall"]
            .into_iter()
            .filter(|p| !e.config.cni_dirs().iter().any(|d| d.join(p).is_file()))
            .collect();
        let network_ready = condition(
            "NetworkReady",
            missing.is_empty(),
            "NetworkPluginNotReady",
            format!(
                "CNI plugins not found ({}) in {}",
                missing.join(", "),
                e.config.cni_dirs().iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
            ),
        );
        // Pods' user namespaces: the engine makes the namespace and ID-maps the root
        // filesystem; a runtime only joins the namespace by path. Offered with berth-oci, the
        // runtime they are tested with.
        let userns = e.pod_userns_supported();
        let features = |name: &str| pb::RuntimeHandlerFeatures {
            recursive_read_only_mounts: true,
            user_namespaces: userns && name == "berth-oci",
        };
        let mut runtime_handlers = Vec::new();
        for name in handlers::handler_names(&e.config) {
            if e.runtime(Some(&name)).is_err() {
                continue;
            }
            runtime_handlers.push(pb::RuntimeHandler { name: name.clone(), features: Some(features(&name)) });
        }
        if let Ok(default) = &runtime {
            // The default handler is also the one with no name.
            runtime_handlers
                .insert(0, pb::RuntimeHandler { name: String::new(), features: Some(features(&default.name)) });
        }
        let mut info = HashMap::new();
        if verbose {
            info.insert(
                "config".to_string(),
                serde_json::json!({
                    "root": e.root,
                    // Where the containers' root filesystems are (critest probes ID-mapped
                    // mounts on its parent, naming it as containerd does).
                    "stateDir": e.root.join("snapshots"),
                    "runRoot": e.run_root,
                    "cgroupDriver": "cgroupfs",
                    "cgroupVersion": handlers::cgroup_version(),
                    "defaultRuntime": e.runtime(None).map(|r| r.name).unwrap_or_default(),
                    "cniPluginDirs": e.config.cni_dirs(),
                    "defaultNetwork": e.config.default_network(),
                })
                .to_string(),
            );
        }
        Ok(pb::StatusResponse {
            status: Some(pb::RuntimeStatus { conditions: vec![runtime_ready, network_ready] }),
            info,
            runtime_handlers,
            features: Some(pb::RuntimeFeatures {
                supplemental_groups_policy: true,
                user_namespaces_host_network: false,
            }),
        })
    })
    .await
}

/// The cgroup driver kubelet must use: cgroupfs (berth creates cgroups itself, with no
/// systemd in between).
pub async fn runtime_config(_cri: &Cri, _r: pb::RuntimeConfigRequest) -> Result<pb::RuntimeConfigResponse, Status> {
    Ok(pb::RuntimeConfigResponse {
        linux: Some(pb::LinuxRuntimeConfiguration { cgroup_driver: pb::CgroupDriver::Cgroupfs as i32 }),
    })
}

/// The pod CIDR kubelet was given: kept for Status's verbose information (the pods' addresses
/// come from the CNI network's own range).
pub async fn update_runtime_config(
    cri: &Cri,
    r: pb::UpdateRuntimeConfigRequest,
) -> Result<pb::UpdateRuntimeConfigResponse, Status> {
    if let Some(cidr) = r.runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr) {
        if !cidr.is_empty() {
            *cri.settings.pod_cidr.lock().unwrap() = cidr;
        }
    }
    Ok(pb::UpdateRuntimeConfigResponse {})
}
