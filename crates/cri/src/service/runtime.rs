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
    let default_handler = cri.settings.default_runtime_handler.clone();
    cri.blocking(move |e| {
        let runtime = e.runtime(default_handler.as_deref());
        let runtime_ready = condition(
            "RuntimeReady",
            runtime.is_ok(),
            "RuntimeHandlerMissing",
            runtime.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
        );
        let network_ready = match network_readiness(e) {
            Ok(()) => condition("NetworkReady", true, "", String::new()),
            Err(why) => condition("NetworkReady", false, "NetworkPluginNotReady", why),
        };
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
                    "defaultRuntime": runtime.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
                    "cniConfDir": e.pod_cni_conf_dir,
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

/// Whether pods can be networked: the network configuration they attach to (berth's default
/// bridge network, or the first in the configured CNI directory) and its plugins are found.
fn network_readiness(e: &berth_engine::Engine) -> Result<(), String> {
    let dirs = e.config.cni_dirs();
    let plugins: Vec<String> = match &e.pod_cni_conf_dir {
        Some(dir) => match berth_engine::Engine::pod_network_config(dir) {
            Ok(Some((_, conf))) => conf["plugins"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["type"].as_str().map(str::to_string))
                .chain(["loopback".to_string()])
                .collect(),
            Ok(None) => return Err(format!("no CNI network configuration in {} yet", dir.display())),
            Err(err) => return Err(err.to_string()),
        },
        None => ["bridge", "host-local", "loopback", "portmap", "firewall"].map(String::from).to_vec(),
    };
    let missing: Vec<&str> =
        plugins.iter().map(String::as_str).filter(|p| !dirs.iter().any(|d| d.join(p).is_file())).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "CNI plugins not found ({}) in {}",
        missing.join(", "),
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
    ))
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
