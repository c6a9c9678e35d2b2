//! The suite's berthd: its own store root, configuration (cgroup parent, bridge, subnet,
//! berth-init), a busybox image loaded with the `berth` CLI, and tonic clients on its socket.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use berth_cri::proto as pb;
use berth_cri::proto::image_service_client::ImageServiceClient;
use berth_cri::proto::runtime_service_client::RuntimeServiceClient;
use berth_testkit::children::{spawn, Output, Spawned};
use tonic::transport::Channel;

/// The busybox image every test's containers run.
pub const IMAGE: &str = "localhost/berthd-test/busybox:1";

pub struct Suite {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub config: PathBuf,
    pub cgroup_parent: String,
    pub network: String,
    pub bridge: String,
    pub subnet: String,
    pub socket: PathBuf,
    /// the berthd serving now (restarted by a test)
    pub berthd: Mutex<Option<Spawned>>,
    pub rt: tokio::runtime::Runtime,
}

static SUITE: OnceLock<Suite> = OnceLock::new();

pub fn suite() -> &'static Suite {
    SUITE.get().expect("suite initialised")
}

/// The workspace's target directory: berthd, berth, berth-monitor and berth-oci side by side.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_berthd")).parent().unwrap().to_path_buf()
}

pub fn init() {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("berthd-test-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for bin in ["berth", "berth-monitor", "berth-oci"] {
        assert!(
            bin_dir().join(bin).is_file(),
            "{bin} is not built in {}: run `cargo build --workspace --bins` (make test does) before the berthd tests",
            bin_dir().display()
        );
    }
    let init = berth_testkit::init::berth_init(&bin_dir().join("../init"));
    let network = format!("bd{pid}");
    let bridge = format!("bdb{}", pid % 1_000_000);
    let subnet = berth_testkit::network::free_subnet(pid.wrapping_mul(7));
    let cgroup_parent = format!("/berthd-test-{pid}");
    let config = dir.join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[engine]\ncgroup-parent = \"{cgroup_parent}\"\ninit = \"{}\"\n[engine.network]\ndefault-name = \"{network}\"\ndefault-bridge = \"{bridge}\"\ndefault-subnet = \"{subnet}\"\n[cri]\nrestrict-oom-score-adj = true\n",
            init.display()
        ),
    )
    .unwrap();
    let root = dir.join("root");
    let socket = dir.join("berthd.sock");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    SUITE
        .set(Suite { dir, root, config, cgroup_parent, network, bridge, subnet, socket, berthd: Mutex::new(None), rt })
        .ok()
        .expect("init once");
    // Monitors (double-forked) and pods' reapers are re-parented to us.
    berth_testkit::children::become_subreaper(&suite().dir);
    load_image();
    start_berthd();
}

fn load_image() {
    use berth_testkit::image::{Compression, Layer, OciLayout};
    let s = suite();
    let layout_dir = s.dir.join("layout");
    let bb = busybox_layer(&s.dir);
    let mut layout = OciLayout::create(&layout_dir).unwrap();
    let img =
        layout.image(&[Layer { tar: bb, compression: Compression::Gzip }], serde_json::json!({}), "amd64").unwrap();
    layout.tag(IMAGE, &img.manifest_descriptor).unwrap();
    berth(&["load", "-q", "-i", layout_dir.to_str().unwrap()]).ok("load the test image");
}

/// The busybox layer (testkit collects its helper commands' exits under the spawn lock).
pub fn busybox_layer(dir: &Path) -> Vec<u8> {
    berth_testkit::image::busybox_layer(dir).expect("busybox layer (is busybox-static installed?)")
}

/// `berth ARGS` on the suite's store (the CLI shares it with berthd).
pub fn berth(args: &[&str]) -> Output {
    let s = suite();
    let mut c = Command::new(bin_dir().join("berth"));
    c.env_remove("BERTH_ROOT").arg("--root").arg(&s.root).arg("--config").arg(&s.config).args(args);
    spawn(&mut c, None).wait(Duration::from_secs(120))
}

/// Starts berthd on the suite's store and waits until its socket answers.
pub fn start_berthd() {
    start_berthd_with(&[]);
}

/// Starts berthd with `env` added to its environment.
pub fn start_berthd_with(env: &[(&str, &str)]) {
    let s = suite();
    let mut c = Command::new(env!("CARGO_BIN_EXE_berthd"));
    c.envs(env.iter().copied());
    c.env_remove("BERTH_ROOT")
        .env_remove("BERTH_CONFIG")
        .arg("--root")
        .arg(&s.root)
        .arg("--config")
        .arg(&s.config)
        .arg("--listen")
        .arg(format!("unix://{}", s.socket.display()));
    let child = spawn(&mut c, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&s.socket).is_err() {
        assert!(Instant::now() < deadline, "berthd did not start serving: {}", child.stdout_so_far());
        std::thread::sleep(Duration::from_millis(20));
    }
    *s.berthd.lock().unwrap() = Some(child);
}

/// Stops berthd with SIGTERM; returns its output.
pub fn stop_berthd() -> Output {
    let child = suite().berthd.lock().unwrap().take().expect("berthd runs");
    // SAFETY: kill(2) on our own child's pid (the reaper has not reaped it: it runs).
    unsafe { libc::kill(child.pid as i32, libc::SIGTERM) };
    child.wait(Duration::from_secs(30))
}

/// Waits for berthd to end on its own (a crash point killed it); its exit code and output.
pub fn berthd_ended() -> Output {
    let child = suite().berthd.lock().unwrap().take().expect("berthd runs");
    child.wait(Duration::from_secs(30))
}

/// Clients of the RuntimeService and ImageService on the suite's berthd.
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

pub fn cri() -> Cri {
    try_cri().expect("connect to berthd")
}

pub fn try_cri() -> Result<Cri, tonic::transport::Error> {
    connect(&suite().socket)
}

/// Clients of the berthd serving `socket`.
pub fn connect(socket: &Path) -> Result<Cri, tonic::transport::Error> {
    let s = suite();
    let path = socket.to_path_buf();
    let channel =
        s.rt.block_on(tonic::transport::Endpoint::from_static("http://berthd.invalid").connect_with_connector(
            tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?))
                }
            }),
        ))?;
    Ok(Cri { runtime: RuntimeServiceClient::new(channel.clone()), images: ImageServiceClient::new(channel) })
}

/// Runs a future on the suite's runtime.
pub fn block<F: std::future::Future>(f: F) -> F::Output {
    suite().rt.block_on(f)
}

/// A test's unique names: `<test>-<n>`.
pub fn unique(what: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("{what}-{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// A pod configuration: name, namespace and uid unique, logs in the suite's directory.
pub fn pod_config(name: &str) -> pb::PodSandboxConfig {
    let name = unique(name);
    let logs = suite().dir.join("logs").join(&name);
    std::fs::create_dir_all(&logs).unwrap();
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: name.clone(),
            uid: format!("uid-{name}"),
            namespace: "berthd-test".into(),
            attempt: 0,
        }),
        hostname: name.clone(),
        log_directory: logs.display().to_string(),
        labels: [("suite".to_string(), "berthd".to_string())].into(),
        linux: Some(pb::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/pod-{name}", suite().cgroup_parent),
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(pb::NamespaceOption {
                    pid: pb::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container configuration running `sh -c SCRIPT` in the test image, logging to
/// `<name>.log` in the pod's log directory.
pub fn container_config(name: &str, script: &str) -> pb::ContainerConfig {
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(pb::ImageSpec { image: IMAGE.into(), ..Default::default() }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        linux: Some(pb::LinuxContainerConfig {
            security_context: Some(pb::LinuxContainerSecurityContext {
                namespace_options: Some(pb::NamespaceOption {
                    pid: pb::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A running pod, stopped and removed (with its containers) when dropped.
pub struct Pod {
    pub id: String,
    pub config: pb::PodSandboxConfig,
}

impl Pod {
    pub fn run(config: pb::PodSandboxConfig) -> Pod {
        let mut c = cri();
        let id = block(c.runtime.run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        }))
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
        Pod { id, config }
    }

    pub fn log_dir(&self) -> PathBuf {
        PathBuf::from(&self.config.log_directory)
    }

    /// Creates a container in the pod; returns its id.
    pub fn create(&self, config: pb::ContainerConfig) -> String {
        block(cri().runtime.create_container(pb::CreateContainerRequest {
            pod_sandbox_id: self.id.clone(),
            config: Some(config),
            sandbox_config: Some(self.config.clone()),
        }))
        .expect("CreateContainer")
        .into_inner()
        .container_id
    }

    /// Creates and starts a container; returns its id.
    pub fn start(&self, config: pb::ContainerConfig) -> String {
        let id = self.create(config);
        block(cri().runtime.start_container(pb::StartContainerRequest { container_id: id.clone() }))
            .expect("StartContainer");
        id
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // A test that failed because berthd is gone leaves its pod to the leak check.
        let Ok(mut c) = try_cri() else {
            assert!(std::thread::panicking(), "berthd does not answer");
            return;
        };
        let stop = block(c.runtime.stop_pod_sandbox(pb::StopPodSandboxRequest { pod_sandbox_id: self.id.clone() }));
        let remove =
            block(c.runtime.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: self.id.clone() }));
        // The pod's cgroup is kubelet's: it removes it after the pod, as the suite does here.
        let cgroup = self.config.linux.as_ref().map(|l| l.cgroup_parent.clone()).unwrap_or_default();
        berth_testkit::host::remove_cgroups(cgroup.trim_start_matches('/'));
        if !std::thread::panicking() {
            stop.expect("StopPodSandbox");
            remove.expect("RemovePodSandbox");
        }
    }
}

/// The host pid of a pod's reaper (PID 1 of its shared PID namespace), from its record.
pub fn reaper_of(pod_id: &str) -> i32 {
    let info = block(
        cri().runtime.pod_sandbox_status(pb::PodSandboxStatusRequest { pod_sandbox_id: pod_id.into(), verbose: true }),
    )
    .expect("PodSandboxStatus")
    .into_inner()
    .info;
    let record: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    record["state"]["reaperPid"].as_i64().expect("a reaper") as i32
}

/// A field of /proc/PID/status (`Uid`, `CapEff`, ...), its first value.
pub fn proc_status(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("{field}"));
    line.split_whitespace().nth(1).unwrap().to_string()
}

/// The container's status.
pub fn status(id: &str) -> pb::ContainerStatus {
    block(cri().runtime.container_status(pb::ContainerStatusRequest { container_id: id.into(), verbose: false }))
        .expect("ContainerStatus")
        .into_inner()
        .status
        .expect("a status")
}

/// ExecSync: (exit code, stdout, stderr).
pub fn exec(id: &str, cmd: &[&str]) -> (i32, String, String) {
    let r = block(cri().runtime.exec_sync(pb::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 30,
    }))
    .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e:?}"))
    .into_inner();
    (r.exit_code, String::from_utf8_lossy(&r.stdout).into_owned(), String::from_utf8_lossy(&r.stderr).into_owned())
}

pub use berth_testkit::check::wait_until;

/// Waits until the container has exited.
pub fn wait_exited(id: &str) -> pb::ContainerStatus {
    let mut last = None;
    wait_until("the container to exit", Duration::from_secs(30), || {
        let s = status(id);
        let done = s.state == pb::ContainerState::ContainerExited as i32;
        last = Some(s);
        done
    });
    last.unwrap()
}

/// Everything the suite left on the host (after stopping berthd).
pub fn check_leaks() -> Vec<String> {
    let s = suite();
    let mut leaks = Vec::new();
    if s.berthd.lock().unwrap().is_some() {
        let out = stop_berthd();
        if out.code != 0 {
            leaks.push(format!("berthd exited with {} after SIGTERM: {}", out.code, out.stderr));
        }
    }
    let _ = berth(&["network", "rm", &s.network]);
    let scope = berth_testkit::leaks::Scope {
        dir: s.dir.clone(),
        cgroup: s.cgroup_parent.trim_start_matches('/').to_string(),
        state_roots: ["containers", "sandboxes", "run/netns", "cni", "run/sandboxes"]
            .iter()
            .map(|d| s.root.join(d))
            .collect(),
        interfaces: vec![s.bridge.clone()],
        markers: vec![s.subnet.trim_end_matches("0/24").to_string()],
        settle: Duration::from_secs(10),
        ..Default::default()
    };
    leaks.extend(berth_testkit::leaks::leaks(&scope));
    berth_testkit::host::remove_cgroups(&scope.cgroup);
    leaks
}

pub fn cleanup_suite_dir() {
    let _ = std::fs::remove_dir_all(&suite().dir);
}
