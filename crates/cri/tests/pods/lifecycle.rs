//! Pods and their containers through their whole lives, as kubelet drives them.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_cri::proto as pb;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::support::*;

fn pod_status(id: &str) -> pb::PodSandboxStatus {
    block(cri().runtime.pod_sandbox_status(pb::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false }))
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .expect("a status")
}

fn list_pods(filter: pb::PodSandboxFilter) -> Vec<String> {
    block(cri().runtime.list_pod_sandbox(pb::ListPodSandboxRequest { filter: Some(filter) }))
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect()
}

fn list_containers(filter: pb::ContainerFilter) -> Vec<String> {
    block(cri().runtime.list_containers(pb::ListContainersRequest { filter: Some(filter) }))
        .expect("ListContainers")
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect()
}

fn log_of(pod: &Pod, name: &str) -> String {
    std::fs::read_to_string(pod.log_dir().join(format!("{name}.log"))).unwrap_or_default()
}

/// The inode of a namespace as `readlink /proc/self/ns/KIND` shows it, inside the container.
fn namespace_in(id: &str, kind: &str) -> String {
    let (code, out, err) = exec(id, &["readlink", &format!("/proc/self/ns/{kind}")]);
    assert_eq!(code, 0, "{err}");
    out.trim().to_string()
}

fn namespace_of_host(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap().display().to_string()
}

pub fn pod_and_container_lifecycle() {
    let pod = Pod::run(pod_config("life"));
    let st = pod_status(&pod.id);
    assert_eq!(st.state, pb::PodSandboxState::SandboxReady as i32);
    assert_eq!(st.metadata.as_ref().unwrap().name, pod.config.metadata.as_ref().unwrap().name);
    let ip = st.network.as_ref().unwrap().ip.clone();
    assert!(ip.starts_with(suite().subnet.trim_end_matches("0/24")), "pod ip {ip} outside {}", suite().subnet);
    let ns = st.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(ns.network, pb::NamespaceMode::Pod as i32);
    let by_label = pb::PodSandboxFilter {
        label_selector: [("suite".to_string(), "berthd".to_string())].into(),
        state: Some(pb::PodSandboxStateValue { state: pb::PodSandboxState::SandboxReady as i32 }),
        ..Default::default()
    };
    assert!(list_pods(by_label).contains(&pod.id));

    let mut cfg = container_config(
        "app",
        "trap 'echo got-term; exit 3' TERM; echo started; hostname; echo to-stderr >&2; echo \"greeting=$GREETING\"; \
         while true; do sleep 0.1; done",
    );
    cfg.labels = [("app".to_string(), "web".to_string())].into();
    cfg.annotations = [("note".to_string(), "kept".to_string())].into();
    cfg.envs = vec![pb::KeyValue { key: "GREETING".into(), value: "hi".into() }];
    let id = pod.create(cfg.clone());
    assert_eq!(status(&id).state, pb::ContainerState::ContainerCreated as i32);
    // The same name and attempt in the same pod is refused.
    let e = block(cri().runtime.create_container(pb::CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(cfg),
        sandbox_config: Some(pod.config.clone()),
    }))
    .expect_err("a second container app, attempt 0");
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");

    block(cri().runtime.start_container(pb::StartContainerRequest { container_id: id.clone() })).expect("start");
    wait_until("the container's log", Duration::from_secs(30), || log_of(&pod, "app").contains("greeting=hi"));
    // The CRI log format: time, stream, P(artial) or F(ull), the line.
    let log = log_of(&pod, "app");
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines[0].ends_with(" stdout F started") && lines[0].starts_with("20"), "{log}");
    assert!(lines.iter().any(|l| l.ends_with(&format!(" stdout F {}", pod.config.hostname))), "{log}");
    assert!(lines.iter().any(|l| l.ends_with(" stderr F to-stderr")), "{log}");

    let s = status(&id);
    assert_eq!(s.state, pb::ContainerState::ContainerRunning as i32);
    assert!(s.started_at >= s.created_at && s.created_at > 0, "{s:?}");
    assert_eq!(s.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(s.annotations.get("note").map(String::as_str), Some("kept"));
    assert_eq!(s.log_path, pod.log_dir().join("app.log").display().to_string());
    assert_eq!(s.image.as_ref().unwrap().image, IMAGE);
    assert!(s.image_id.starts_with("sha256:"), "{s:?}");
    assert_eq!(s.user.as_ref().unwrap().linux.as_ref().unwrap().uid, 0);

    // ExecSync: output, exit codes, and a deadline that kills the command.
    assert_eq!(exec(&id, &["sh", "-c", "echo $GREETING; echo oops >&2"]), (0, "hi\n".into(), "oops\n".into()));
    assert_eq!(exec(&id, &["sh", "-c", "exit 3"]).0, 3);
    let e = block(cri().runtime.exec_sync(pb::ExecSyncRequest {
        container_id: id.clone(),
        cmd: vec!["sleep".into(), "30".into()],
        timeout: 1,
    }))
    .expect_err("a command past its timeout");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    let (_, ps, _) = exec(&id, &["ps"]);
    assert!(!ps.contains("sleep 30"), "the timed-out command still runs:\n{ps}");

    let mine = |f: pb::ContainerFilter| list_containers(f).contains(&id);
    assert!(mine(pb::ContainerFilter { pod_sandbox_id: pod.id.clone(), ..Default::default() }));
    assert!(mine(pb::ContainerFilter { id: id[..12].to_string(), ..Default::default() }));
    assert!(mine(pb::ContainerFilter {
        label_selector: [("app".to_string(), "web".to_string())].into(),
        state: Some(pb::ContainerStateValue { state: pb::ContainerState::ContainerRunning as i32 }),
        ..Default::default()
    }));
    assert!(!mine(pb::ContainerFilter {
        state: Some(pb::ContainerStateValue { state: pb::ContainerState::ContainerExited as i32 }),
        ..Default::default()
    }));

    // Stop: the container's trap ends it on SIGTERM.
    block(cri().runtime.stop_container(pb::StopContainerRequest { container_id: id.clone(), timeout: 10 }))
        .expect("StopContainer");
    let s = status(&id);
    assert_eq!(s.state, pb::ContainerState::ContainerExited as i32);
    assert_eq!((s.exit_code, s.reason.as_str()), (3, "Error"));
    assert!(log_of(&pod, "app").contains("stdout F got-term"));
    assert!(s.finished_at >= s.started_at, "{s:?}");
    // Stopping again is fine; starting again is not (kubelet makes a new attempt).
    block(cri().runtime.stop_container(pb::StopContainerRequest { container_id: id.clone(), timeout: 0 }))
        .expect("StopContainer again");
    let e = block(cri().runtime.start_container(pb::StartContainerRequest { container_id: id.clone() }))
        .expect_err("restarting an exited container");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    block(cri().runtime.remove_container(pb::RemoveContainerRequest { container_id: id.clone() })).expect("remove");
    let e =
        block(cri().runtime.container_status(pb::ContainerStatusRequest { container_id: id.clone(), verbose: false }))
            .expect_err("status of a removed container");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    block(cri().runtime.remove_container(pb::RemoveContainerRequest { container_id: id.clone() }))
        .expect("removing again is fine");

    // A stopped pod is NOTREADY and takes no new container.
    block(cri().runtime.stop_pod_sandbox(pb::StopPodSandboxRequest { pod_sandbox_id: pod.id.clone() })).expect("stop");
    assert_eq!(pod_status(&pod.id).state, pb::PodSandboxState::SandboxNotready as i32);
    let e = block(cri().runtime.create_container(pb::CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(container_config("late", "true")),
        sandbox_config: Some(pod.config.clone()),
    }))
    .expect_err("a container in a stopped pod");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let id = pod.id.clone();
    drop(pod);
    let e = block(cri().runtime.pod_sandbox_status(pb::PodSandboxStatusRequest { pod_sandbox_id: id, verbose: false }))
        .expect_err("status of a removed pod");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

pub fn containers_share_the_pods_namespaces() {
    let mut cfg = pod_config("shared");
    cfg.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap().pid =
        pb::NamespaceMode::Pod as i32;
    let pod = Pod::run(cfg);
    let in_pod = |name: &str| {
        let mut c = container_config(name, "exec sleep 1000");
        c.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap().pid =
            pb::NamespaceMode::Pod as i32;
        pod.start(c)
    };
    let (a, b) = (in_pod("a"), in_pod("b"));
    for kind in ["net", "ipc", "uts", "pid"] {
        let ns = namespace_in(&a, kind);
        assert_eq!(ns, namespace_in(&b, kind), "{kind} namespace");
        assert_ne!(ns, namespace_of_host(kind), "{kind}: the host's");
    }
    // PID 1 is the pod's reaper, and each container sees the other's processes.
    let (_, init, _) = exec(&a, &["cat", "/proc/1/cmdline"]);
    assert!(init.starts_with("berth-init\0--pause"), "{init:?}");
    // Confined, as the containers may ptrace it: no capabilities, chrooted to nothing.
    let reaper = reaper_of(&pod.id);
    assert_eq!(proc_status(reaper, "CapPrm"), "0000000000000000");
    assert_eq!(proc_status(reaper, "CapEff"), "0000000000000000");
    assert_eq!(std::fs::read_link(format!("/proc/{reaper}/root")).unwrap(), suite().root.join("run/empty"));
    assert!(std::fs::read_dir(suite().root.join("run/empty")).unwrap().next().is_none());
    let (_, ps, _) = exec(&b, &["ps", "-o", "pid,args"]);
    assert_eq!(ps.matches("sleep 1000").count(), 2, "{ps}");
    // /dev/shm is the pod's.
    assert_eq!(exec(&a, &["sh", "-c", "echo shared > /dev/shm/x"]).0, 0);
    assert_eq!(exec(&b, &["cat", "/dev/shm/x"]).1, "shared\n");
    assert_eq!(exec(&b, &["hostname"]).1.trim(), pod.config.hostname);
}

pub fn pid_namespace_modes() {
    let pod = Pod::run(pod_config("pids"));
    // CONTAINER: each container is PID 1 of its own namespace.
    let a = pod.start(container_config("own", "exec sleep 1000"));
    assert_eq!(exec(&a, &["cat", "/proc/1/cmdline"]).1, "sleep\x001000\0");
    let b = pod.start(container_config("own2", "exec sleep 1000"));
    assert_ne!(namespace_in(&a, "pid"), namespace_in(&b, "pid"));
    // A pod without a shared PID namespace has no reaper to share.
    let mut shared = container_config("wants-pod-pid", "exec sleep 1000");
    shared.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap().pid =
        pb::NamespaceMode::Pod as i32;
    let e = block(cri().runtime.create_container(pb::CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(shared),
        sandbox_config: Some(pod.config.clone()),
    }))
    .expect_err("the pod's PID namespace in a pod without one");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("shares none"), "{e:?}");
    // NODE: the host's.
    let mut host = container_config("host-pid", "exec sleep 1000");
    host.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap().pid =
        pb::NamespaceMode::Node as i32;
    let h = pod.start(host);
    assert_eq!(namespace_in(&h, "pid"), namespace_of_host("pid"));
}

pub fn pod_on_the_nodes_network() {
    let mut cfg = pod_config("hostnet");
    let ns = cfg.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap();
    ns.network = pb::NamespaceMode::Node as i32;
    let mut with_ports = cfg.clone();
    with_ports.port_mappings =
        vec![pb::PortMapping { protocol: 0, container_port: 80, host_port: 8080, host_ip: String::new() }];
    let e = block(
        cri()
            .runtime
            .run_pod_sandbox(pb::RunPodSandboxRequest { config: Some(with_ports), runtime_handler: String::new() }),
    )
    .expect_err("ports on the node's network");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("port_mappings"), "{e:?}");
    let pod = Pod::run(cfg);
    assert_eq!(pod_status(&pod.id).network.unwrap().ip, "");
    let id = pod.start(container_config("on-host", "exec sleep 1000"));
    assert_eq!(namespace_in(&id, "net"), namespace_of_host("net"));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(exec(&id, &["hostname"]).1.trim(), host.trim());
}

pub fn events_follow_the_containers() {
    let pod = Pod::run(pod_config("events"));
    let seen: Arc<Mutex<Vec<pb::ContainerEventResponse>>> = Arc::default();
    let mut stream =
        block(cri().runtime.get_container_events(pb::GetEventsRequest {})).expect("GetContainerEvents").into_inner();
    let sink = seen.clone();
    let task = suite().rt.spawn(async move {
        while let Some(Ok(e)) = stream.next().await {
            sink.lock().unwrap().push(e);
        }
    });
    let id = pod.start(container_config("quick", "exit 7"));
    wait_exited(&id);
    block(cri().runtime.remove_container(pb::RemoveContainerRequest { container_id: id.clone() })).expect("remove");
    let kinds = || -> Vec<i32> {
        seen.lock().unwrap().iter().filter(|e| e.container_id == id).map(|e| e.container_event_type).collect()
    };
    use pb::ContainerEventType as E;
    let want = [E::ContainerCreatedEvent, E::ContainerStartedEvent, E::ContainerStoppedEvent, E::ContainerDeletedEvent]
        .map(|k| k as i32)
        .to_vec();
    wait_until("the four events", Duration::from_secs(30), || kinds().len() >= 4);
    assert_eq!(kinds(), want);
    let events = seen.lock().unwrap().clone();
    let stopped = events.iter().find(|e| e.container_id == id && e.container_event_type == want[2]).unwrap();
    assert_eq!(stopped.pod_sandbox_status.as_ref().unwrap().id, pod.id);
    let mine = stopped.containers_statuses.iter().find(|s| s.id == id).expect("the container's status");
    assert_eq!(mine.exit_code, 7);
    task.abort();
}

pub fn stats_and_resource_updates() {
    let pod = Pod::run(pod_config("stats"));
    let mut cfg = container_config("busy", "dd if=/dev/zero of=/big bs=1M count=2 2>/dev/null; exec sleep 1000");
    cfg.linux.as_mut().unwrap().resources =
        Some(pb::LinuxContainerResources { memory_limit_in_bytes: 64 << 20, cpu_shares: 512, ..Default::default() });
    let id = pod.start(cfg);
    wait_until("the 2 MiB file", Duration::from_secs(30), || exec(&id, &["ls", "/big"]).0 == 0);
    let stats = block(cri().runtime.container_stats(pb::ContainerStatsRequest { container_id: id.clone() }))
        .expect("ContainerStats")
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(stats.attributes.as_ref().unwrap().id, id);
    assert!(stats.cpu.as_ref().unwrap().usage_core_nano_seconds.as_ref().unwrap().value > 0, "{stats:?}");
    let mem = stats.memory.as_ref().unwrap();
    assert!(mem.usage_bytes.as_ref().unwrap().value > 0, "{stats:?}");
    assert!(mem.working_set_bytes.as_ref().unwrap().value <= mem.usage_bytes.as_ref().unwrap().value);
    let layer = stats.writable_layer.as_ref().unwrap();
    assert!(layer.used_bytes.as_ref().unwrap().value >= 2 << 20, "{layer:?}");
    // A second sample gives a rate.
    let again = block(cri().runtime.list_container_stats(pb::ListContainerStatsRequest {
        filter: Some(pb::ContainerStatsFilter { pod_sandbox_id: pod.id.clone(), ..Default::default() }),
    }))
    .expect("ListContainerStats")
    .into_inner()
    .stats;
    assert_eq!(again.len(), 1);
    assert!(again[0].cpu.as_ref().unwrap().usage_nano_cores.is_some(), "{again:?}");

    let limit = |id: &str| {
        let (_, out, _) = exec(
            id,
            &[
                "sh",
                "-c",
                "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
            ],
        );
        out.trim().parse::<i64>().unwrap_or_else(|_| panic!("memory limit {out:?}"))
    };
    assert_eq!(limit(&id), 64 << 20);
    block(cri().runtime.update_container_resources(pb::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(pb::LinuxContainerResources { memory_limit_in_bytes: 128 << 20, ..Default::default() }),
        ..Default::default()
    }))
    .expect("UpdateContainerResources");
    assert_eq!(limit(&id), 128 << 20);
    let r = status(&id).resources.unwrap().linux.unwrap();
    assert_eq!(r.memory_limit_in_bytes, 128 << 20);
    let e = block(cri().runtime.update_container_resources(pb::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(pb::LinuxContainerResources { cpu_shares: 1 << 40, ..Default::default() }),
        ..Default::default()
    }))
    .expect_err("CPU shares beyond the kernel's range");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    let pods = block(cri().runtime.list_pod_sandbox_stats(pb::ListPodSandboxStatsRequest {
        filter: Some(pb::PodSandboxStatsFilter { id: pod.id.clone(), ..Default::default() }),
    }))
    .expect("ListPodSandboxStats")
    .into_inner()
    .stats;
    assert_eq!(pods.len(), 1);
    let linux = pods[0].linux.as_ref().unwrap();
    assert_eq!(linux.containers.len(), 1);
    assert!(linux.process.as_ref().unwrap().process_count.as_ref().unwrap().value >= 1);
    let eth0 = linux.network.as_ref().unwrap().default_interface.as_ref().expect("eth0");
    assert_eq!(eth0.name, "eth0");
}

pub fn log_reopened_after_rotation() {
    let pod = Pod::run(pod_config("logs"));
    let id = pod.start(container_config("ticker", "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.1; done"));
    let log = pod.log_dir().join("ticker.log");
    wait_until("ticks", Duration::from_secs(30), || log_of(&pod, "ticker").contains("tick2"));
    // kubelet's rotation: rename, then ask for the file to be reopened.
    let rotated = pod.log_dir().join("ticker.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    block(cri().runtime.reopen_container_log(pb::ReopenContainerLogRequest { container_id: id.clone() }))
        .expect("ReopenContainerLog");
    wait_until("ticks in the new file", Duration::from_secs(30), || log_of(&pod, "ticker").contains("stdout F tick"));
    let before = std::fs::read_to_string(&rotated).unwrap().len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&rotated).unwrap().len(), before, "the rotated file still grows");
    block(cri().runtime.stop_container(pb::StopContainerRequest { container_id: id.clone(), timeout: 0 })).unwrap();
    let e = block(cri().runtime.reopen_container_log(pb::ReopenContainerLogRequest { container_id: id }))
        .expect_err("reopening a stopped container's log");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
}

pub fn berthd_restart_keeps_pods() {
    let pod = Pod::run(pod_config("restart"));
    let id = pod.start(container_config("survivor", "exec sleep 1000"));
    let out = stop_berthd();
    assert_eq!(out.code, 0, "berthd after SIGTERM: {}", out.stderr);
    start_berthd();
    assert!(list_pods(pb::PodSandboxFilter { id: pod.id.clone(), ..Default::default() }).contains(&pod.id));
    assert_eq!(status(&id).state, pb::ContainerState::ContainerRunning as i32);
    // The new berthd watches the containers the old one started.
    let seen: Arc<Mutex<Vec<i32>>> = Arc::default();
    let mut stream = block(cri().runtime.get_container_events(pb::GetEventsRequest {})).unwrap().into_inner();
    let sink = seen.clone();
    let wanted = id.clone();
    let task = suite().rt.spawn(async move {
        while let Some(Ok(e)) = stream.next().await {
            if e.container_id == wanted {
                sink.lock().unwrap().push(e.container_event_type);
            }
        }
    });
    block(cri().runtime.stop_container(pb::StopContainerRequest { container_id: id.clone(), timeout: 0 })).unwrap();
    wait_until("the stopped event", Duration::from_secs(30), || {
        seen.lock().unwrap().contains(&(pb::ContainerEventType::ContainerStoppedEvent as i32))
    });
    task.abort();
}

/// A pod's runtime handler (RuntimeClass) runs its containers: runc and crun, each keeping
/// the container's state in its own root, and the statuses say which.
pub fn runtime_handlers_run_the_pods_containers() {
    for handler in ["runc", "crun"] {
        let cfg = pod_config(&format!("handler-{handler}"));
        let id =
            block(cri().runtime.run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: handler.into(),
            }))
            .unwrap_or_else(|e| panic!("RunPodSandbox with {handler}: {e:?}"))
            .into_inner()
            .pod_sandbox_id;
        let pod = Pod { id, config: cfg };
        let status = block(
            cri()
                .runtime
                .pod_sandbox_status(pb::PodSandboxStatusRequest { pod_sandbox_id: pod.id.clone(), verbose: false }),
        )
        .unwrap()
        .into_inner()
        .status
        .unwrap();
        assert_eq!(status.runtime_handler, handler);
        let c = pod.start(container_config("handled", "exec sleep 1000"));
        assert_eq!(exec(&c, &["echo", "in"]).1.trim(), "in");
        let info = block(
            cri().runtime.container_status(pb::ContainerStatusRequest { container_id: c.clone(), verbose: true }),
        )
        .unwrap()
        .into_inner()
        .info;
        let record: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
        assert_eq!(record["Runtime"], handler, "{record}");
        // The handler's own state of the container, under its root.
        let state = suite().root.join("run/runtimes").join(handler);
        assert!(
            std::fs::read_dir(&state)
                .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy() == c))
                .unwrap_or(false),
            "{handler} keeps no state of {c} in {}",
            state.display()
        );
    }
}

/// A node restart, as berthd sees it: its processes gone (the containers, their monitors,
/// the pod's reaper), nothing mounted (root filesystems, pinned namespaces, /dev/shm) and the
/// run directory empty. The next berthd lists the pod, not ready, and its container, exited;
/// both are stopped and removed as usual, leaving nothing (the leak check after the suite).
pub fn node_restart_leaves_pods_not_ready() {
    let mut cfg = pod_config("reboot");
    cfg.port_mappings = vec![pb::PortMapping {
        protocol: pb::Protocol::Tcp as i32,
        container_port: 80,
        host_port: 38_000 + (std::process::id() % 1000) as i32,
        host_ip: String::new(),
    }];
    let sc = cfg.linux.as_mut().unwrap().security_context.get_or_insert_with(Default::default);
    sc.namespace_options.get_or_insert_with(Default::default).pid = pb::NamespaceMode::Pod as i32;
    let pod = Pod::run(cfg);
    let mut c = container_config("before-reboot", "exec sleep 1000");
    c.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap().pid =
        pb::NamespaceMode::Pod as i32;
    let id = pod.start(c);
    let record = |info: &std::collections::HashMap<String, String>, key: &str| -> serde_json::Value {
        serde_json::from_str(info.get(key).unwrap_or_else(|| panic!("verbose {key} in {info:?}"))).unwrap()
    };
    let container = record(
        &block(cri().runtime.container_status(pb::ContainerStatusRequest { container_id: id.clone(), verbose: true }))
            .unwrap()
            .into_inner()
            .info,
        "info",
    );
    let sandbox = record(
        &block(
            cri()
                .runtime
                .pod_sandbox_status(pb::PodSandboxStatusRequest { pod_sandbox_id: pod.id.clone(), verbose: true }),
        )
        .unwrap()
        .into_inner()
        .info,
        "info",
    );
    let pids: Vec<i64> =
        [&container["State"]["Pid"], &container["State"]["MonitorPid"], &sandbox["state"]["reaperPid"]]
            .iter()
            .map(|v| v.as_i64().unwrap_or_else(|| panic!("a pid in {container} / {sandbox}")))
            .collect();
    assert!(pids.iter().all(|p| *p > 0), "{pids:?}");
    let ip = sandbox["state"]["ip"].as_str().unwrap().to_string();
    // host-local's allocation (in the network's data directory, under the network's name),
    // kept on disk across the restart until CNI DEL releases it.
    let allocation = suite().root.join("networks/ipam").join(&suite().network).join(&suite().network).join(&ip);
    assert!(allocation.exists(), "{}", allocation.display());
    let out = stop_berthd();
    assert_eq!(out.code, 0, "berthd after SIGTERM: {}", out.stderr);
    // The restart: this test's processes (by pid), every mount of the store, the run root.
    for pid in &pids {
        // SAFETY: kill(2) of a process this test started (its container, monitor, reaper).
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    wait_until("the pod's processes to end", Duration::from_secs(30), || {
        pids.iter().all(|p| berth_testkit::host::is_dead(*p as i32))
    });
    berth_testkit::host::unmount_all_under(&suite().root);
    flush_masquerade_rules(&pod.id);
    let run = suite().root.join("run");
    std::fs::remove_dir_all(&run).unwrap();
    start_berthd();
    let listed = block(cri().runtime.list_pod_sandbox(pb::ListPodSandboxRequest {
        filter: Some(pb::PodSandboxFilter { id: pod.id.clone(), ..Default::default() }),
    }))
    .unwrap()
    .into_inner()
    .items;
    assert_eq!(listed.len(), 1, "the pod is still listed");
    assert_eq!(listed[0].state, pb::PodSandboxState::SandboxNotready as i32);
    let st = status(&id);
    assert_eq!(st.state, pb::ContainerState::ContainerExited as i32, "{st:?}");
    assert!(st.finished_at > 0, "{st:?}");
    let containers = block(cri().runtime.list_containers(pb::ListContainersRequest { filter: None }))
        .unwrap()
        .into_inner()
        .containers;
    assert!(containers.iter().any(|c| c.id == id), "the container is still listed");
    // A container cannot be created in it; kubelet makes a new pod.
    let refused = block(cri().runtime.create_container(pb::CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(container_config("after-reboot", "true")),
        sandbox_config: Some(pod.config.clone()),
    }))
    .expect_err("a container in a pod whose namespaces are gone");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    drop(pod);
    assert!(!allocation.exists(), "the pod's address is still allocated: {}", allocation.display());
}

/// What a reboot's empty netfilter tables take that nothing else can: the bridge plugin's
/// masquerade rules for the pod (it finds the addresses to unmasquerade on the pod's
/// interface, so its DEL skips them once the namespace is gone). Only this pod's rules, which
/// name its id.
fn flush_masquerade_rules(pod_id: &str) {
    let rules: Vec<String> = berth_testkit::leaks::iptables_rules()
        .into_iter()
        .filter(|(table, rule)| table == "nat" && rule.contains(pod_id) && rule.starts_with("-A POSTROUTING "))
        .map(|(_, rule)| rule)
        .collect();
    assert!(!rules.is_empty(), "the bridge plugin's masquerade rule for pod {pod_id}");
    let mut script = String::from("*nat\n");
    for rule in &rules {
        script.push_str(&format!("-D {}\n", &rule[3..]));
        if let Some(chain) = rule.rsplit(" -j ").next().filter(|c| c.starts_with("CNI-")) {
            script.push_str(&format!("-F {chain}\n-X {chain}\n"));
        }
    }
    script.push_str("COMMIT\n");
    berth_testkit::children::run_with_stdin(Command::new("iptables-restore").arg("--noflush"), script.as_bytes())
        .ok("remove the pod's masquerade rules");
}

/// berthd killed (-9) in the middle of RunPodSandbox and of CreateContainer, at each of the
/// engine's crash points: the next berthd removes what the call had made (its id never
/// reached the caller), and the caller's retry of the same call succeeds.
pub fn berthd_killed_mid_create() {
    let run_pod =
        |cfg: &pb::PodSandboxConfig| {
            block(cri().runtime.run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            }))
        };
    let crash_during = |point: &str, call: &dyn Fn() -> bool| {
        let out = stop_berthd();
        assert_eq!(out.code, 0, "berthd after SIGTERM: {}", out.stderr);
        start_berthd_with(&[("BERTH_TEST_CRASH_AT", point)]);
        assert!(!call(), "{point}: the call succeeded though berthd was killed in it");
        let ended = berthd_ended();
        assert_eq!(ended.code, 128 + libc::SIGKILL, "{point}: berthd was not killed there: {ended:?}");
        start_berthd();
    };
    for point in ["sandbox-record", "sandbox-namespaces", "sandbox-network"] {
        let cfg = pod_config(&format!("crash-{point}"));
        crash_during(point, &|| run_pod(&cfg).is_ok());
        let name = cfg.metadata.as_ref().unwrap().name.clone();
        let pods = block(cri().runtime.list_pod_sandbox(pb::ListPodSandboxRequest { filter: None }))
            .unwrap()
            .into_inner()
            .items;
        assert!(
            !pods.iter().any(|p| p.metadata.as_ref().unwrap().name == name),
            "{point}: the half-made pod is listed"
        );
        let pod = Pod::run(cfg);
        let id = pod.start(container_config("after", "exec sleep 1000"));
        assert_eq!(status(&id).state, pb::ContainerState::ContainerRunning as i32);
    }
    for point in ["created-record", "snapshot"] {
        let pod = Pod::run(pod_config(&format!("crash-{point}")));
        let cfg = container_config("app", "exec sleep 1000");
        let create = || {
            block(cri().runtime.create_container(pb::CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(cfg.clone()),
                sandbox_config: Some(pod.config.clone()),
            }))
        };
        crash_during(point, &|| create().is_ok());
        assert!(
            list_containers(pb::ContainerFilter { pod_sandbox_id: pod.id.clone(), ..Default::default() }).is_empty(),
            "{point}: the half-made container is listed"
        );
        let id = create().expect("CreateContainer again after the crash").into_inner().container_id;
        block(cri().runtime.start_container(pb::StartContainerRequest { container_id: id.clone() })).unwrap();
        assert_eq!(status(&id).state, pb::ContainerState::ContainerRunning as i32);
    }
}

/// Pods created, used and removed by many callers at once (kubelet starts a node's pods in
/// parallel): every call succeeds, each pod gets its own address, and nothing is left.
pub fn many_pods_at_once() {
    let workers: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let pod = Pod::run(pod_config(&format!("parallel-{i}")));
                let id = pod.start(container_config("app", "exec sleep 1000"));
                let (code, hostname, _) = exec(&id, &["hostname"]);
                assert_eq!(code, 0);
                let ip = pod_status(&pod.id).network.map(|n| n.ip).unwrap_or_default();
                (pod, hostname.trim().to_string(), ip)
            })
        })
        .collect();
    let pods: Vec<_> = workers.into_iter().map(|w| w.join().expect("a worker")).collect();
    let mut ips: Vec<_> = pods.iter().map(|(_, _, ip)| ip.clone()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), pods.len(), "pods share addresses: {ips:?}");
    for (pod, hostname, _) in &pods {
        assert_eq!(hostname, &pod.config.hostname);
    }
    let removers: Vec<_> = pods.into_iter().map(|(pod, _, _)| std::thread::spawn(move || drop(pod))).collect();
    for r in removers {
        r.join().expect("removing a pod");
    }
}
