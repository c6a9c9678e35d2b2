//! berthd driven by a tonic client over its Unix socket: Version, the answer of every RPC in
//! the proto (Unimplemented, by name, for those not implemented yet), the metric descriptors
//! and UpdatePodSandboxResources' refusals, and the socket's life
//! (mode, one berthd per socket, stale sockets, shutdown on SIGTERM and SIGINT). Pods and
//! containers are the `pods` suite's.

mod support;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;

use berth_cri::proto::image_service_client::ImageServiceClient;
use berth_cri::proto::runtime_service_client::RuntimeServiceClient;
use berth_cri::proto::{self as pb};
use prost::Message;
use support::{berthd_command, channel, Berthd};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::Code;

#[tokio::test]
async fn version_answers() {
    let dir = tempfile::tempdir().unwrap();
    let berthd = Berthd::start(dir.path());
    let mut client = RuntimeServiceClient::new(channel(&berthd.socket).await);
    let v = client.version(pb::VersionRequest { version: "v1".into() }).await.expect("Version").into_inner();
    assert_eq!(
        v,
        pb::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "berth".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }
    );
}

#[tokio::test]
async fn empty_requests_name_the_missing_field() {
    let dir = tempfile::tempdir().unwrap();
    let berthd = Berthd::start(dir.path());
    let ch = channel(&berthd.socket).await;
    let mut runtime = RuntimeServiceClient::new(ch.clone());
    let e = runtime.run_pod_sandbox(pb::RunPodSandboxRequest::default()).await.expect_err("RunPodSandbox succeeded");
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "config: missing"));
    let mut images = ImageServiceClient::new(ch);
    let e = images.pull_image(pb::PullImageRequest::default()).await.expect_err("PullImage succeeded");
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "image: missing"));
}

/// The RPCs berthd does not implement yet, by their gRPC names.
const UNIMPLEMENTED: &[&str] = &["CheckpointContainer"];

/// Every RPC of both services in the compiled proto, by its gRPC path, with an empty request:
/// those not implemented yet answer Unimplemented naming themselves, every other one answers
/// (a result, or an error about the request). Methods come from the descriptor, so an RPC
/// added to the proto without a method in berthd fails here.
#[tokio::test]
async fn unimplemented_rpcs_say_so_by_name() {
    let fds = prost_types::FileDescriptorSet::decode(berth_cri::FILE_DESCRIPTOR_SET).unwrap();
    let file = fds.file.iter().find(|f| f.package() == "runtime.v1").expect("runtime.v1 in the descriptor");
    let dir = tempfile::tempdir().unwrap();
    let berthd = Berthd::start(dir.path());
    let mut grpc = tonic::client::Grpc::new(channel(&berthd.socket).await);
    let (mut implemented, mut unimplemented) = (0, 0);
    for service in &file.service {
        for method in &service.method {
            let path: PathAndQuery = format!("/runtime.v1.{}/{}", service.name(), method.name()).parse().unwrap();
            grpc.ready().await.unwrap();
            // An empty message decodes as any request type; the answer is decoded as nothing.
            let codec = tonic_prost::ProstCodec::<(), ()>::default();
            let result = if method.server_streaming() {
                grpc.server_streaming(tonic::Request::new(()), path.clone(), codec).await.map(|_| ())
            } else {
                grpc.unary(tonic::Request::new(()), path.clone(), codec).await.map(|_| ())
            };
            if UNIMPLEMENTED.contains(&method.name()) {
                let e = result.expect_err(&format!("{path} answered with success"));
                assert_eq!(e.code(), Code::Unimplemented, "{path}: {e:?}");
                assert_eq!(e.message(), format!("{} is not implemented by berthd yet", method.name()), "{path}");
                unimplemented += 1;
            } else {
                if let Err(e) = result {
                    assert_ne!(e.code(), Code::Unimplemented, "{path}: {e:?}");
                }
                implemented += 1;
            }
        }
    }
    // 35 RuntimeService and 6 ImageService RPCs in v1.36.
    assert_eq!((implemented, unimplemented), (41 - UNIMPLEMENTED.len(), UNIMPLEMENTED.len()));
}

/// The metric descriptors (a fixed set, unique names, cAdvisor's labels first), and the
/// refusals of UpdatePodSandboxResources that need no pod: each names its field. Pods with
/// metrics and recorded resources are the `pods` suite's.
#[tokio::test]
async fn metric_descriptors_and_pod_resource_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let berthd = Berthd::start(dir.path());
    let mut runtime = RuntimeServiceClient::new(channel(&berthd.socket).await);
    let descriptors = runtime
        .list_metric_descriptors(pb::ListMetricDescriptorsRequest {})
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors;
    let mut names: Vec<&str> = descriptors.iter().map(|d| d.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), descriptors.len(), "duplicate names: {descriptors:?}");
    for name in ["container_cpu_usage_seconds_total", "container_memory_working_set_bytes"] {
        assert!(names.contains(&name), "{name} missing: {names:?}");
    }
    for d in &descriptors {
        assert!(!d.help.is_empty(), "{d:?}");
        assert_eq!(d.label_keys[..6], ["container", "id", "image", "name", "namespace", "pod"], "{d:?}");
    }
    // No pod yet: no metrics, and the stream sends no batch.
    let pods = runtime.list_pod_sandbox_metrics(pb::ListPodSandboxMetricsRequest {}).await.unwrap().into_inner();
    assert!(pods.pod_metrics.is_empty(), "{pods:?}");
    let mut stream =
        runtime.stream_pod_sandbox_metrics(pb::StreamPodSandboxMetricsRequest {}).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_none());

    let update = |id: &str, overhead: Option<pb::LinuxContainerResources>, resources| {
        pb::UpdatePodSandboxResourcesRequest { pod_sandbox_id: id.into(), overhead, resources }
    };
    let e = runtime.update_pod_sandbox_resources(update("", None, None)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "pod_sandbox_id: empty"));
    let e = runtime.update_pod_sandbox_resources(update("0123456789abcdef", None, None)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let shares = pb::LinuxContainerResources { cpu_shares: 1 << 40, ..Default::default() };
    let e = runtime.update_pod_sandbox_resources(update("0123456789abcdef", None, Some(shares))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("resources.cpu_shares 1099511627776: "), "{e:?}");
    let memory = pb::LinuxContainerResources { memory_limit_in_bytes: 1024, ..Default::default() };
    let e = runtime.update_pod_sandbox_resources(update("0123456789abcdef", Some(memory), None)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("overhead.memory_limit_in_bytes 1024: "), "{e:?}");
}

/// The names in `dir` (the store root, `root`, is berthd's to keep).
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn socket_is_private_and_removed_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let berthd = Berthd::start(dir.path());
    let sock = berthd.socket.clone();
    let m = std::fs::symlink_metadata(&sock).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.mode() & 0o7777, 0o660, "socket mode");
    assert_eq!(m.uid(), unsafe { libc::geteuid() });
    let (status, stderr) = berthd.stop(libc::SIGTERM);
    assert!(status.success(), "berthd after SIGTERM: {status:?}\n{stderr}");
    assert!(stderr.contains("berthd: SIGTERM: shutting down"), "{stderr}");
    assert!(!sock.exists(), "socket left after SIGTERM");
    assert!(!dir.path().join("berthd.sock.lock").exists(), "lock file left after SIGTERM");
}

#[test]
fn sigint_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let berthd = Berthd::start(dir.path());
    let sock = berthd.socket.clone();
    let (status, stderr) = berthd.stop(libc::SIGINT);
    assert!(status.success(), "berthd after SIGINT: {status:?}\n{stderr}");
    assert!(stderr.contains("berthd: SIGINT: shutting down"), "{stderr}");
    assert!(!sock.exists(), "socket left after SIGINT");
    assert_eq!(entries(dir.path()), ["root"], "files left beside the socket");
}

#[tokio::test]
async fn a_second_berthd_on_the_same_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Berthd::start(dir.path());
    let out = berthd_command(dir.path())
        .arg("--listen")
        .arg(format!("unix://{}", first.socket.display()))
        .output()
        .expect("run a second berthd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "second berthd: {err}");
    assert!(err.contains("another berthd is serving") && err.contains("berthd.sock"), "{err}");
    // The first one still serves, on the same socket.
    assert!(first.running());
    let mut client = RuntimeServiceClient::new(channel(&first.socket).await);
    client.version(pb::VersionRequest::default()).await.expect("Version from the first berthd");
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("berthd.sock");
    // What a berthd killed with SIGKILL leaves: its socket, bound but accepted on by nobody,
    // and its unlocked lock file.
    drop(UnixListener::bind(&sock).unwrap());
    std::fs::write(dir.path().join("berthd.sock.lock"), b"").unwrap();
    let berthd = Berthd::start(dir.path());
    assert!(berthd.stderr().contains("removed stale socket"), "{}", berthd.stderr());
    let mut client = RuntimeServiceClient::new(channel(&berthd.socket).await);
    client.version(pb::VersionRequest::default()).await.expect("Version after replacing the stale socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_berthd_is_replaced_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let first = Berthd::start(dir.path());
    let sock = first.socket.clone();
    drop(first); // SIGKILL, reaped: socket and lock file stay behind
    assert!(sock.exists());
    let second = Berthd::start(dir.path());
    let mut client = RuntimeServiceClient::new(channel(&second.socket).await);
    client.version(pb::VersionRequest::default()).await.expect("Version from the second berthd");
    // Stopped with the client still connected (as kubelet always is): the connection is closed
    // at once (HTTP/2 GOAWAY, which the client's tasks, running meanwhile, acknowledge), not
    // after the grace period for requests in progress.
    let (status, stderr) = tokio::task::spawn_blocking(move || second.stop(libc::SIGTERM)).await.unwrap();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("still in progress"), "an idle connection held up the shutdown:\n{stderr}");
    drop(client);
    assert_eq!(entries(dir.path()), ["root"], "files left beside the socket");
}

#[test]
fn something_else_at_the_socket_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("berthd.sock");
    std::fs::create_dir(&sock).unwrap();
    let out = berthd_command(dir.path()).arg("--listen").arg(format!("unix://{}", sock.display())).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("exists and is not a socket (a directory)"), "{err}");
    assert!(sock.is_dir(), "berthd removed a directory at its socket path");
}

#[test]
fn default_socket_is_in_the_run_root() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, "").unwrap();
    let mut c = berthd_command(dir.path());
    c.arg("--config").arg(&config);
    let sock = dir.path().canonicalize().unwrap().join("root/run/berthd.sock");
    let berthd = Berthd::spawn(c, sock.clone());
    assert!(
        berthd.stderr().contains(&format!("on unix://{}", sock.display())),
        "not serving on <root>/run/berthd.sock: {}",
        berthd.stderr()
    );
    assert!(std::fs::symlink_metadata(&sock).unwrap().file_type().is_socket());
    assert_eq!(
        std::fs::metadata(sock.parent().unwrap()).unwrap().mode() & 0o777,
        0o711,
        "run root mode (traversable for pods' user namespaces)"
    );
    let (status, stderr) = berthd.stop(libc::SIGTERM);
    assert!(status.success(), "{stderr}");
    assert!(!sock.exists());
}

#[test]
fn bad_listen_values_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (value, says) in [("tcp://127.0.0.1:10010", "Unix socket only"), ("unix://relative.sock", "must be absolute")] {
        let out = berthd_command(dir.path()).arg("--listen").arg(value).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{value}: {err}");
        assert!(err.contains(value) && err.contains(says), "{value}: {err}");
    }
}
