//! CRI requests are hostile input: each refusal names the CRI field, and a refused create
//! leaves nothing behind.

use berth_cri::proto as pb;
use std::path::Path;
use std::time::Duration;

use tonic::Code;

use crate::support::*;

#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>, code: Code, field: &str) {
    let e = r.expect_err(&format!("a request with a bad {field}"));
    assert_eq!(e.code(), code, "{field}: {e:?}");
    assert!(e.message().contains(field), "the error does not name {field}: {}", e.message());
}

fn run_pod(
    edit: impl FnOnce(&mut pb::PodSandboxConfig),
) -> Result<tonic::Response<pb::RunPodSandboxResponse>, tonic::Status> {
    let mut cfg = pod_config("bad-pod");
    edit(&mut cfg);
    block(cri().runtime.run_pod_sandbox(pb::RunPodSandboxRequest { config: Some(cfg), runtime_handler: String::new() }))
}

fn security(c: &mut pb::ContainerConfig) -> &mut pb::LinuxContainerSecurityContext {
    c.linux.as_mut().unwrap().security_context.as_mut().unwrap()
}

fn create_in(
    pod: &Pod,
    edit: impl FnOnce(&mut pb::ContainerConfig),
) -> Result<tonic::Response<pb::CreateContainerResponse>, tonic::Status> {
    let mut cfg = container_config(&unique("bad"), "true");
    edit(&mut cfg);
    block(cri().runtime.create_container(pb::CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(cfg),
        sandbox_config: Some(pod.config.clone()),
    }))
}

pub fn requests_are_refused_naming_the_field() {
    refused(block(cri().runtime.run_pod_sandbox(pb::RunPodSandboxRequest::default())), Code::InvalidArgument, "config");
    refused(run_pod(|c| c.metadata = None), Code::InvalidArgument, "config.metadata");
    refused(run_pod(|c| c.hostname = "a/b".into()), Code::InvalidArgument, "hostname");
    refused(
        run_pod(|c| {
            c.linux.as_mut().unwrap().sysctls = [("kernel.panic".to_string(), "1".to_string())].into();
        }),
        Code::InvalidArgument,
        "kernel.panic",
    );
    refused(
        run_pod(|c| c.linux.as_mut().unwrap().cgroup_parent = "/kubepods/../../etc".into()),
        Code::InvalidArgument,
        "cgroup_parent",
    );
    refused(
        run_pod(|c| c.dns_config = Some(pb::DnsConfig { servers: vec!["nope".into()], ..Default::default() })),
        Code::InvalidArgument,
        "dns_config.servers[0]",
    );
    refused(
        run_pod(|c| {
            c.port_mappings =
                vec![pb::PortMapping { protocol: 0, container_port: 70000, host_port: 80, host_ip: String::new() }]
        }),
        Code::InvalidArgument,
        "port_mappings[0].container_port",
    );
    refused(
        block(cri().runtime.run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(pod_config("handler")),
            runtime_handler: "no-such-runtime".into(),
        })),
        Code::NotFound,
        "no-such-runtime",
    );

    let pod = Pod::run(pod_config("hostile"));
    let sc = "config.linux.security_context";
    refused(
        create_in(&pod, |c| security(c).run_as_user = Some(pb::Int64Value { value: 4294967295 })),
        Code::InvalidArgument,
        &format!("{sc}.run_as_user"),
    );
    refused(
        create_in(&pod, |c| security(c).run_as_user = Some(pb::Int64Value { value: -1 })),
        Code::InvalidArgument,
        &format!("{sc}.run_as_user"),
    );
    refused(
        create_in(&pod, |c| security(c).supplemental_groups = vec![5, 4294967295]),
        Code::InvalidArgument,
        &format!("{sc}.supplemental_groups[1]"),
    );
    refused(
        create_in(&pod, |c| security(c).run_as_group = Some(pb::Int64Value { value: 5 })),
        Code::InvalidArgument,
        &format!("{sc}.run_as_group"),
    );
    refused(
        create_in(&pod, |c| c.envs = vec![pb::KeyValue { key: "A=B".into(), value: "x".into() }]),
        Code::InvalidArgument,
        "config.envs[0].key",
    );
    refused(create_in(&pod, |c| c.log_path = "../../escape.log".into()), Code::InvalidArgument, "config.log_path");
    refused(create_in(&pod, |c| c.log_path = "/etc/passwd".into()), Code::InvalidArgument, "config.log_path");
    refused(
        create_in(&pod, |c| {
            c.mounts =
                vec![pb::Mount { container_path: "/m".into(), host_path: "relative".into(), ..Default::default() }]
        }),
        Code::InvalidArgument,
        "config.mounts[0].host_path",
    );
    refused(
        create_in(&pod, |c| {
            c.mounts = vec![pb::Mount {
                container_path: "/m".into(),
                host_path: "/nonexistent/berthd-test".into(),
                ..Default::default()
            }]
        }),
        Code::NotFound,
        "config.mounts[0].host_path",
    );
    refused(
        create_in(&pod, |c| {
            c.mounts =
                vec![pb::Mount { container_path: "../../x".into(), host_path: "/tmp".into(), ..Default::default() }]
        }),
        Code::InvalidArgument,
        "mounts[0].destination",
    );
    refused(
        create_in(&pod, |c| {
            c.linux.as_mut().unwrap().resources =
                Some(pb::LinuxContainerResources { oom_score_adj: 5000, ..Default::default() })
        }),
        Code::InvalidArgument,
        "oom_score_adj",
    );
    refused(create_in(&pod, |c| c.metadata.as_mut().unwrap().name = "../x".into()), Code::InvalidArgument, "../x");
    refused(
        create_in(&pod, |c| c.image = Some(pb::ImageSpec { image: "localhost/absent:1".into(), ..Default::default() })),
        Code::NotFound,
        "localhost/absent:1",
    );
    refused(
        block(cri().runtime.create_container(pb::CreateContainerRequest {
            pod_sandbox_id: "0123456789abcdef".into(),
            config: Some(container_config("orphan", "true")),
            sandbox_config: None,
        })),
        Code::NotFound,
        "0123456789abcdef",
    );
    refused(
        block(cri().runtime.exec_sync(pb::ExecSyncRequest { container_id: "abc".into(), cmd: vec![], timeout: 0 })),
        Code::InvalidArgument,
        "cmd",
    );
    refused(
        block(
            cri()
                .runtime
                .container_status(pb::ContainerStatusRequest { container_id: "../../etc".into(), verbose: false }),
        ),
        Code::NotFound,
        "../../etc",
    );
    // Removing what does not exist is done, whatever the id.
    block(cri().runtime.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: "../../etc".into() }))
        .expect("RemovePodSandbox of nothing");
    block(cri().runtime.remove_container(pb::RemoveContainerRequest { container_id: "feedface".into() }))
        .expect("RemoveContainer of nothing");
}

pub fn failed_creates_leave_nothing() {
    let pod = Pod::run(pod_config("leftovers"));
    let containers_dir = suite().root.join("containers");
    let before: std::collections::BTreeSet<_> =
        std::fs::read_dir(&containers_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    // Refused at different steps: the request, the image, the runtime (a command that does
    // not exist fails at start, not create; a device that does not exist fails in create).
    let _ = create_in(&pod, |c| security(c).run_as_user = Some(pb::Int64Value { value: 4294967295 }));
    let _ =
        create_in(&pod, |c| c.image = Some(pb::ImageSpec { image: "localhost/absent:1".into(), ..Default::default() }));
    let _ = create_in(&pod, |c| {
        c.devices = vec![pb::Device {
            container_path: "/dev/nothing".into(),
            host_path: "/dev/berthd-test-no-such-device".into(),
            permissions: "rwm".into(),
        }]
    });
    let listed = block(cri().runtime.list_containers(pb::ListContainersRequest {
        filter: Some(pb::ContainerFilter { pod_sandbox_id: pod.id.clone(), ..Default::default() }),
    }))
    .unwrap()
    .into_inner()
    .containers;
    assert!(listed.is_empty(), "refused creates left containers: {listed:?}");
    // Directories that were not there before and belong to no container berthd or the CLI
    // lists (other tests create containers meanwhile; theirs are listed once made).
    let mut stray = Vec::new();
    let settled = berth_testkit::check::poll_until(Duration::from_secs(10), || {
        let listed: Vec<String> = block(cri().runtime.list_containers(pb::ListContainersRequest { filter: None }))
            .unwrap()
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .chain(berth(&["ps", "-a", "-q", "--no-trunc"]).stdout.lines().map(str::to_string))
            .collect();
        stray = std::fs::read_dir(&containers_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| !before.contains(n) && !listed.iter().any(|id| n.to_str() == Some(id)))
            .collect();
        stray.is_empty()
    });
    assert!(settled, "refused creates left directories: {stray:?}");
    // Snapshots mounted for no container: other tests' containers being created mount theirs
    // too, and have their directory by the time they are done.
    let snapshots = suite().root.join("snapshots");
    let orphans = || {
        berth_testkit::leaks::mounts_containing(&snapshots.display().to_string())
            .into_iter()
            .filter(|m| {
                let id = Path::new(m).strip_prefix(&snapshots).ok().and_then(|r| r.iter().next());
                !id.is_some_and(|id| containers_dir.join(id).exists())
            })
            .collect::<Vec<_>>()
    };
    let mut left = Vec::new();
    let settled = berth_testkit::check::poll_until(Duration::from_secs(10), || {
        left = orphans();
        left.is_empty()
    });
    assert!(settled, "mounts left: {left:?}");
}

pub fn the_clis_containers_are_not_berthds() {
    let name = unique("cli-own");
    let id = berth(&["run", "-d", "--name", &name, IMAGE, "sleep", "1000"]).ok("berth run -d").line();
    let listed = block(cri().runtime.list_containers(pb::ListContainersRequest { filter: None })).unwrap().into_inner();
    assert!(!listed.containers.iter().any(|c| c.id == id), "berthd lists the CLI's container");
    let e =
        block(cri().runtime.container_status(pb::ContainerStatusRequest { container_id: id.clone(), verbose: false }))
            .expect_err("berthd's status of the CLI's container");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    // Stopping or removing it through berthd does nothing to it.
    block(cri().runtime.stop_container(pb::StopContainerRequest { container_id: id.clone(), timeout: 0 })).unwrap();
    block(cri().runtime.remove_container(pb::RemoveContainerRequest { container_id: id.clone() })).unwrap();
    let ps = berth(&["ps", "-q", "--no-trunc"]).ok("berth ps").stdout;
    assert!(ps.contains(&id), "the CLI's container is gone after berthd's calls:\n{ps}");
    // And the CLI leaves berthd's containers alone.
    let pod = Pod::run(pod_config("not-the-clis"));
    let pod_container = pod.start(container_config("app", "exec sleep 1000"));
    let ps = berth(&["ps", "-a", "-q", "--no-trunc"]).ok("berth ps").stdout;
    assert!(!ps.contains(&pod_container), "berth ps lists a pod's container:\n{ps}");
    berth(&["system", "prune"]).ok("berth system prune");
    assert_eq!(status(&pod_container).state, pb::ContainerState::ContainerRunning as i32);
    // The network its pod is attached to is in use.
    let e = berth(&["network", "rm", &suite().network]);
    assert!(e.code != 0 && e.stderr.contains("pod "), "network rm under a pod: {e:?}");
    berth(&["rm", "-f", &name]).ok("berth rm -f");
}
