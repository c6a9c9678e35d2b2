//! Pods in a user namespace of their own (Kubernetes' `hostUsers: false`): the pod's root is
//! an unprivileged host user, the pod's namespaces are owned by its user namespace, and the
//! image's files appear owned by the pod's root through ID-mapped layers.

use std::os::unix::fs::MetadataExt;

use berth_cri::proto as pb;
use tonic::Code;

use crate::support::*;

const HOST_ID: u32 = 300_000;

fn mapping(container_id: u32, host_id: u32, length: u32) -> pb::IdMapping {
    pb::IdMapping { host_id, container_id, length }
}

fn userns(mode: pb::NamespaceMode, maps: Vec<pb::IdMapping>) -> pb::UserNamespace {
    pb::UserNamespace { mode: mode as i32, uids: maps.clone(), gids: maps }
}

fn pod_namespaces(cfg: &mut pb::PodSandboxConfig) -> &mut pb::NamespaceOption {
    let sc = cfg.linux.as_mut().unwrap().security_context.get_or_insert_with(Default::default);
    sc.namespace_options.get_or_insert_with(Default::default)
}

fn container_namespaces(c: &mut pb::ContainerConfig) -> &mut pb::NamespaceOption {
    let sc = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    sc.namespace_options.get_or_insert_with(Default::default)
}

fn supported() -> bool {
    let status = block(cri().runtime.status(pb::StatusRequest { verbose: false })).expect("Status").into_inner();
    let default = status.runtime_handlers.iter().find(|h| h.name.is_empty()).expect("the default handler");
    default.features.as_ref().is_some_and(|f| f.user_namespaces)
}

fn run_pod_error(cfg: pb::PodSandboxConfig) -> tonic::Status {
    block(cri().runtime.run_pod_sandbox(pb::RunPodSandboxRequest { config: Some(cfg), runtime_handler: String::new() }))
        .expect_err("RunPodSandbox should fail")
}

pub fn pods_with_their_own_user_namespace() {
    let maps = vec![mapping(0, HOST_ID, 65536)];
    let mut cfg = pod_config("userns");
    *pod_namespaces(&mut cfg) = pb::NamespaceOption {
        userns_options: Some(userns(pb::NamespaceMode::Pod, maps.clone())),
        ..Default::default()
    };
    if !supported() {
        // A host whose store filesystem takes no ID-mapped mounts (tmpfs before Linux 6.3, 9p):
        // the feature is not offered, and a pod asking for it is refused, naming it.
        eprintln!("NOTE: user namespaces for pods are not offered on this host (no ID-mapped mounts of the store)");
        let e = run_pod_error(cfg);
        assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
        assert!(e.message().contains("userns_options"), "{e:?}");
        return;
    }
    let pod = Pod::run(cfg.clone());
    let mut c = container_config("inside", "touch /made-by-root && exec sleep 1000");
    // The pod's PID namespace, whose reaper must be in the pod's user namespace too.
    *container_namespaces(&mut c) = pb::NamespaceOption {
        pid: pb::NamespaceMode::Pod as i32,
        userns_options: Some(userns(pb::NamespaceMode::Pod, maps.clone())),
        ..Default::default()
    };
    let id = pod.start(c);
    let fields = |out: String| out.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(fields(exec(&id, &["cat", "/proc/self/uid_map"]).1), ["0", "300000", "65536"]);
    assert_eq!(fields(exec(&id, &["cat", "/proc/self/gid_map"]).1), ["0", "300000", "65536"]);
    assert_eq!(exec(&id, &["id", "-u"]).1.trim(), "0");
    // The image's files (the host's root's in the shared layer) are the pod's root's.
    let (code, out, err) = exec(&id, &["stat", "-c", "%u:%g", "/bin/busybox", "/"]);
    assert_eq!((code, out.lines().collect::<Vec<_>>()), (0, vec!["0:0", "0:0"]), "{err}");
    // The pod's UTS, network and PID namespaces are its user namespace's: its hostname, sysfs
    // for its network namespace, /proc for its PID namespace (whose PID 1 is the reaper).
    assert_eq!(exec(&id, &["hostname"]).1.trim(), cfg.hostname);
    assert!(fields(exec(&id, &["ls", "/sys/class/net"]).1).contains(&"eth0".to_string()));
    assert!(exec(&id, &["cat", "/proc/1/cmdline"]).1.starts_with("berth-init"));
    // The reaper is the pod's root (host user 300000), without capabilities, chrooted to
    // nothing: a container that may ptrace it gains nothing.
    let reaper = reaper_of(&pod.id);
    assert_eq!(proc_status(reaper, "Uid"), HOST_ID.to_string());
    assert_eq!(proc_status(reaper, "CapEff"), "0000000000000000");
    assert_eq!(proc_status(reaper, "CapPrm"), "0000000000000000");
    assert_eq!(std::fs::read_link(format!("/proc/{reaper}/root")).unwrap(), suite().root.join("run/empty"));
    // What the pod's root writes is the host's user 300000's on disk.
    let written = std::fs::read_dir(suite().root.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("upper/made-by-root"))
        .find(|p| p.exists())
        .expect("the file the container wrote, in its snapshot's upper directory");
    let meta = std::fs::metadata(&written).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (HOST_ID, HOST_ID));
    // The directories the runtime enters as the pod's root are root's, searchable by the
    // pod's group only: the pod cannot change what berthd keeps there (the mapping).
    let snapshot = written.parent().unwrap().parent().unwrap().to_path_buf();
    for dir in [snapshot, suite().root.join("sandboxes").join(&pod.id)] {
        let m = std::fs::metadata(&dir).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, HOST_ID, 0o710), "{}", dir.display());
    }
    // The shared layer is untouched: still the host's root's.
    let busybox = std::fs::read_dir(suite().root.join("layers"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
        .map(|e| e.path().join("bin/busybox"))
        .find(|p| p.exists());
    if let Some(b) = busybox {
        assert_eq!(std::fs::metadata(&b).unwrap().uid(), 0, "{}", b.display());
    }

    // A container must be in its pod's user namespace.
    let mut other = container_config("node-userns", "exec sleep 1000");
    *container_namespaces(&mut other) =
        pb::NamespaceOption { userns_options: Some(userns(pb::NamespaceMode::Node, vec![])), ..Default::default() };
    let e = block(cri().runtime.create_container(pb::CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(other),
        sandbox_config: Some(cfg.clone()),
    }))
    .expect_err("a container outside its pod's user namespace");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("namespace_options.userns_options"), "{e:?}");
}

/// What critest checks, and the node's namespaces and privilege, which a pod of its own user
/// namespace cannot have: each refused, naming the field, with nothing made.
pub fn user_namespace_refusals() {
    let ok = vec![mapping(0, HOST_ID, 65536)];
    let cases: Vec<(&str, pb::NamespaceOption, bool, &str)> = vec![
        (
            "two mappings",
            pb::NamespaceOption {
                userns_options: Some(userns(
                    pb::NamespaceMode::Pod,
                    vec![mapping(0, 1000, 100_000), mapping(0, 2000, 100_000)],
                )),
                ..Default::default()
            },
            false,
            "userns_options.uids: one mapping is needed, 2 given",
        ),
        (
            "root unmapped",
            pb::NamespaceOption {
                userns_options: Some(userns(pb::NamespaceMode::Pod, vec![mapping(1, 1000, 100_000)])),
                ..Default::default()
            },
            false,
            "userns_options.uids[0].container_id: 1",
        ),
        (
            "past 32 bits",
            pb::NamespaceOption {
                userns_options: Some(userns(pb::NamespaceMode::Pod, vec![mapping(0, u32::MAX - 10, 100)])),
                ..Default::default()
            },
            false,
            "do not fit in 32-bit IDs",
        ),
        (
            "host root",
            pb::NamespaceOption {
                userns_options: Some(userns(pb::NamespaceMode::Pod, vec![mapping(0, 0, 65536)])),
                ..Default::default()
            },
            false,
            "userns_options.uids[0].host_id: 0",
        ),
        (
            "mode CONTAINER",
            pb::NamespaceOption {
                userns_options: Some(userns(pb::NamespaceMode::Container, vec![])),
                ..Default::default()
            },
            false,
            "userns_options.mode: CONTAINER",
        ),
        (
            "mode TARGET",
            pb::NamespaceOption {
                userns_options: Some(userns(pb::NamespaceMode::Target, vec![])),
                ..Default::default()
            },
            false,
            "userns_options.mode: TARGET",
        ),
        (
            "node network",
            pb::NamespaceOption {
                network: pb::NamespaceMode::Node as i32,
                userns_options: Some(userns(pb::NamespaceMode::Pod, ok.clone())),
                ..Default::default()
            },
            false,
            "namespace_options.network: NODE",
        ),
        (
            "privileged",
            pb::NamespaceOption {
                userns_options: Some(userns(pb::NamespaceMode::Pod, ok.clone())),
                ..Default::default()
            },
            true,
            "privileged",
        ),
    ];
    for (what, ns, privileged, message) in cases {
        let mut cfg = pod_config("userns-refused");
        *pod_namespaces(&mut cfg) = ns;
        cfg.linux.as_mut().unwrap().security_context.as_mut().unwrap().privileged = privileged;
        let e = run_pod_error(cfg);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(e.message().contains(message), "{what}: {e:?}");
    }
}
