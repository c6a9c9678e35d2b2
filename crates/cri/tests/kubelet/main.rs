//! A real kubelet (v1.36, standalone: static pods from a manifest directory) running pods on
//! berthd. The suite runs in a network and mount namespace of its own: a veth pair gives
//! kubelet a node address (it refuses loopback), and tmpfs over /var/lib and /var/log keeps
//! the paths kubelet writes whatever its configuration says (its device-plugin socket,
//! /var/log/containers) off the host. kubelet is `$KUBELET` (default ../shared/bin/kubelet),
//! crictl `$CRICTL`; absent, the suite fails under CI and is skipped loudly elsewhere.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use berth_testkit::check::wait_until;
use berth_testkit::children::{spawn, Output, Spawned};
use berth_testkit::trials;
use libtest_mimic::Arguments;

/// The node's address, on the suite's veth.
const NODE_IP: &str = "10.250.0.1";
const IMAGE: &str = "localhost/kubelet-test/busybox:1";

struct Suite {
    dir: PathBuf,
    root: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    manifests: PathBuf,
    crictl: PathBuf,
    kubelet_bin: PathBuf,
    cgroup_root: String,
    engine_cgroup: String,
    bridge: String,
    berthd: std::sync::Mutex<Option<Spawned>>,
    kubelet: std::sync::Mutex<Option<Spawned>>,
}

static SUITE: OnceLock<Suite> = OnceLock::new();

fn suite() -> &'static Suite {
    SUITE.get().expect("suite initialised")
}

fn tool(var: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/bin").join(default));
    if path.is_file() {
        return Some(path);
    }
    let msg = format!("{default} not found at {} (set {var}): the kubelet suite did not run", path.display());
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("\n!!!!!!!!!! SKIPPED !!!!!!!!!!\n!!! {msg}\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
    None
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_berthd")).parent().unwrap().to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    spawn(cmd, None).wait(Duration::from_secs(120))
}

/// A network and mount namespace for the suite, before any thread starts (unshare of the
/// mount namespace needs a single-threaded process).
fn private_namespaces() {
    // SAFETY: unshare and mount with valid arguments, in a single-threaded process.
    unsafe {
        assert_eq!(
            libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS),
            0,
            "unshare: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null()
            ),
            0
        );
        for dir in [c"/var/lib", c"/var/log"] {
            assert_eq!(
                libc::mount(c"tmpfs".as_ptr(), dir.as_ptr(), c"tmpfs".as_ptr(), 0, c"mode=0755".as_ptr().cast()),
                0,
                "tmpfs on {dir:?}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["link", "add", "kv0", "type", "veth", "peer", "name", "kv1"],
        vec!["addr", "add", &format!("{NODE_IP}/24"), "dev", "kv0"],
        vec!["link", "set", "kv0", "up"],
        vec!["link", "set", "kv1", "up"],
    ] {
        let st = Command::new("ip").args(&args).status().expect("ip");
        assert!(st.success(), "ip {args:?}");
    }
}

fn init(kubelet: PathBuf, crictl: PathBuf) {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("berth-kubelet-test-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for bin in ["berth", "berth-monitor", "berth-oci"] {
        assert!(bin_dir().join(bin).is_file(), "{bin} is not built: run `cargo build --workspace --bins` first");
    }
    // (Built and waited for before the reaper thread would reap cargo.)
    let init = berth_testkit::init::berth_init(&bin_dir().join("../init"));
    berth_testkit::children::become_subreaper(&dir);
    let cgroup_root = format!("/berth-kubelet-test-{pid}");
    let engine_cgroup = format!("/berth-kubelet-engine-{pid}");
    let bridge = format!("bkb{}", pid % 1_000_000);
    let config = dir.join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[engine]\ncgroup-parent = \"{engine_cgroup}\"\ninit = \"{}\"\n[engine.network]\ndefault-name = \"kubelet-test\"\n\
             default-bridge = \"{bridge}\"\ndefault-subnet = \"10.251.0.0/24\"\n[cri]\nrestrict-oom-score-adj = true\n",
            init.display()
        ),
    )
    .unwrap();
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::create_dir_all(dir.join("hostpath")).unwrap();
    let s = Suite {
        root: dir.join("root"),
        socket: dir.join("berthd.sock"),
        config,
        manifests,
        crictl,
        kubelet_bin: kubelet,
        cgroup_root,
        engine_cgroup,
        bridge,
        dir,
        berthd: Default::default(),
        kubelet: Default::default(),
    };
    assert!(SUITE.set(s).is_ok());
    let s = suite();
    load_image();
    start_berthd();
    // kubelet wants its cgroup root in every hierarchy beforehand.
    for h in berth_testkit::host::hierarchies() {
        std::fs::create_dir_all(berth_testkit::host::cgroup_path(&h, &s.cgroup_root)).unwrap();
    }
    if Path::new("/sys/fs/cgroup/unified").is_dir() {
        std::fs::create_dir_all(format!("/sys/fs/cgroup/unified{}", s.cgroup_root)).unwrap();
    }
    start_kubelet();
}

fn load_image() {
    use berth_testkit::image::{Compression, Layer, OciLayout};
    let s = suite();
    let layout_dir = s.dir.join("layout");
    let bb = berth_testkit::image::busybox_layer(&s.dir).expect("busybox layer (is busybox-static installed?)");
    let mut layout = OciLayout::create(&layout_dir).unwrap();
    let img =
        layout.image(&[Layer { tar: bb, compression: Compression::Gzip }], serde_json::json!({}), "amd64").unwrap();
    layout.tag(IMAGE, &img.manifest_descriptor).unwrap();
    let mut c = Command::new(bin_dir().join("berth"));
    c.env_remove("BERTH_ROOT").arg("--root").arg(&s.root).arg("--config").arg(&s.config);
    c.args(["load", "-q", "-i"]).arg(&layout_dir);
    run(&mut c).ok("load the test image");
}

fn start_berthd() {
    let s = suite();
    let mut c = Command::new(env!("CARGO_BIN_EXE_berthd"));
    c.env_remove("BERTH_ROOT").env_remove("BERTH_CONFIG");
    c.arg("--root").arg(&s.root).arg("--config").arg(&s.config);
    c.arg("--listen").arg(format!("unix://{}", s.socket.display()));
    let child = spawn(&mut c, None);
    wait_until("berthd to serve", Duration::from_secs(30), || {
        std::os::unix::net::UnixStream::connect(&s.socket).is_ok()
    });
    *s.berthd.lock().unwrap() = Some(child);
}

fn start_kubelet() {
    let s = suite();
    let kubelet = &s.kubelet_bin;
    let kroot = s.dir.join("kubelet");
    std::fs::create_dir_all(&kroot).unwrap();
    let config = s.dir.join("kubelet.yaml");
    // This host: hybrid cgroups read as v1 (failCgroupV1), root cannot lower its OOM score
    // (oomScoreAdj 0), swap may be on; the local API open to the test (anonymous, always
    // allowed) on the node's address only.
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nfailCgroupV1: false\n\
             cgroupDriver: cgroupfs\ncgroupRoot: {}\nfailSwapOn: false\noomScoreAdj: 0\nstaticPodPath: {}\n\
             fileCheckFrequency: 1s\ncontainerRuntimeEndpoint: unix://{}\naddress: {NODE_IP}\nreadOnlyPort: 10255\n\
             authentication:\n  anonymous: {{enabled: true}}\n  webhook: {{enabled: false}}\n\
             authorization: {{mode: AlwaysAllow}}\n\
             evictionHard: {{memory.available: \"1Mi\", nodefs.available: \"1%\", imagefs.available: \"1%\", nodefs.inodesFree: \"1%\"}}\n\
             podLogsDir: {}\ncontainerLogMaxSize: 16Ki\ncontainerLogMaxFiles: 3\ncontainerLogMonitorInterval: 3s\n",
            s.cgroup_root,
            s.manifests.display(),
            s.socket.display(),
            s.dir.join("pod-logs").display(),
        ),
    )
    .unwrap();
    // Its log goes to a file the suite keeps when it fails (appended across restarts).
    let mut c = Command::new("sh");
    c.args(["-c", "exec \"$@\" 2>>\"$KUBELET_LOG\"", "sh"]).arg(kubelet);
    c.env("KUBELET_LOG", s.dir.join("kubelet.log"));
    c.arg("--config").arg(&config).arg("--root-dir").arg(&kroot);
    c.args(["--node-ip", NODE_IP, "--hostname-override", "berth-node", "--v=2"]);
    let child = spawn(&mut c, None);
    let healthy = berth_testkit::check::poll_until(Duration::from_secs(60), || {
        http_get("127.0.0.1:10248", "/healthz").is_some_and(|b| b == "ok")
    });
    let output = child.stdout_so_far();
    *s.kubelet.lock().unwrap() = Some(child);
    if !healthy {
        // What was started goes before the suite fails.
        let leaks = teardown();
        panic!("kubelet did not become healthy (left behind: {leaks:?}); its output:\n{output}");
    }
}

fn stop_kubelet() {
    if let Some(k) = suite().kubelet.lock().unwrap().take() {
        // SAFETY: our own child, by pid.
        unsafe { libc::kill(k.pid as i32, libc::SIGTERM) };
        let _ = k.wait(Duration::from_secs(30));
    }
}

/// berthd killed (-9), as a crash would end it.
fn kill_berthd() {
    if let Some(b) = suite().berthd.lock().unwrap().take() {
        // SAFETY: our own child, by pid.
        unsafe { libc::kill(b.pid as i32, libc::SIGKILL) };
        let _ = b.wait(Duration::from_secs(30));
    }
}

/// GET `path` on `addr`: the body of a 200 answer.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    // A chunked body (kubelet's JSON) is unchunked.
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut rest = body;
        let mut joined = String::new();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            joined.push_str(after.get(..n)?);
            rest = after.get(n + 2..)?;
        }
        return Some(joined);
    }
    Some(body.to_string())
}

/// `crictl ARGS` on berthd: its output.
fn crictl(args: &[&str]) -> Output {
    let s = suite();
    let mut c = Command::new(&s.crictl);
    c.args(["--config", "/dev/null", "--timeout", "60s"]);
    c.arg("--runtime-endpoint").arg(format!("unix://{}", s.socket.display()));
    c.arg("--image-endpoint").arg(format!("unix://{}", s.socket.display()));
    c.args(args).env_remove("CONTAINER_RUNTIME_ENDPOINT").env_remove("IMAGE_SERVICE_ENDPOINT");
    run(&mut c)
}

/// The containers named `name` (all attempts) as crictl lists them: (id, state, attempt).
fn containers(name: &str) -> Vec<(String, String, u32)> {
    let o = crictl(&["ps", "-a", "--name", &format!("^{name}$"), "-o", "json"]).ok("crictl ps");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    v["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or_default().to_string(),
                c["state"].as_str().unwrap_or_default().to_string(),
                c["metadata"]["attempt"].as_u64().unwrap_or(0) as u32,
            )
        })
        .collect()
}

/// A TCP port free on the node's address now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind((NODE_IP, 0)).unwrap();
    l.local_addr().unwrap().port()
}

fn write_manifest(name: &str, yaml: &str) {
    let s = suite();
    // Written aside and renamed: kubelet never reads half a file.
    let tmp = s.dir.join(format!("{name}.yaml.tmp"));
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, s.manifests.join(format!("{name}.yaml"))).unwrap();
}

fn pods_ready(name: &str) -> usize {
    let o = crictl(&["pods", "--name", name, "--state", "ready", "-q"]).ok("crictl pods");
    o.stdout.lines().filter(|l| !l.is_empty()).count()
}

/// kubelet's view of a pod (its local API `/pods`).
fn kubelet_pod(name: &str) -> Option<serde_json::Value> {
    let body = http_get(&format!("{NODE_IP}:10255"), "/pods")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["items"].as_array()?.iter().find(|p| p["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(name))).cloned()
}

/// The pod's status phase as kubelet reports it.
fn kubelet_phase(name: &str) -> Option<String> {
    kubelet_pod(name).and_then(|p| p["status"]["phase"].as_str().map(str::to_string))
}

/// A condition of a pod in kubelet's view ("True", "False").
fn kubelet_condition(name: &str, kind: &str) -> Option<String> {
    let pod = kubelet_pod(name)?;
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

/// Whether kubelet reports a container of a pod ready.
fn kubelet_container_ready(name: &str, container: &str) -> bool {
    kubelet_pod(name).is_some_and(|p| {
        p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == container && c["ready"] == true)
    })
}

/// Accepts kubelet's self-signed serving certificate (the suite trusts the kubelet it
/// started, as `kubectl --insecure-skip-tls-verify` would).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

/// A SPDY session through kubelet's authenticated port (10250) to `path`: kubelet asks berthd
/// for the stream's URL (CRI Exec or PortForward) and proxies the connection to berthd's
/// streaming server. Returns the connection after the 101, and the negotiated protocol.
fn kubelet_spdy(path: &str, protocol: &str) -> (Tls, String) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(NODE_IP.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect((NODE_IP, 10250)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "POST {path} HTTP/1.1\r\nHost: {NODE_IP}:10250\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    tls.flush().unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tls.read(&mut b).unwrap(), 1, "kubelet closed: {}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "kubelet's answer to {path}: {head}");
    let chosen = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-stream-protocol-version:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    (tls, chosen)
}

/// The client's side of the SPDY frames on a connection.
struct SpdyClient {
    tls: Tls,
    codec: berth_cri::streaming::spdy::Codec,
    buf: Vec<u8>,
}

impl SpdyClient {
    fn open(&mut self, id: u32, headers: &[(&str, &str)]) {
        use berth_cri::streaming::spdy::Frame;
        let headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let mut out = Vec::new();
        self.codec
            .encode(&Frame::SynStream { stream_id: id, associated_to: 0, priority: 0, flags: 0, headers }, &mut out)
            .unwrap();
        self.tls.write_all(&out).unwrap();
        self.tls.flush().unwrap();
    }

    fn send(&mut self, id: u32, data: &[u8], fin: bool) {
        use berth_cri::streaming::spdy::{Frame, FLAG_FIN};
        let mut out = Vec::new();
        let flags = if fin { FLAG_FIN } else { 0 };
        self.codec.encode(&Frame::Data { stream_id: id, flags, data: data.to_vec() }, &mut out).unwrap();
        self.tls.write_all(&out).unwrap();
        self.tls.flush().unwrap();
    }

    /// The next frame; None when the connection ended.
    fn next(&mut self) -> Option<berth_cri::streaming::spdy::Frame> {
        loop {
            if let Some((f, n)) = self.codec.decode(&self.buf).expect("a well-formed frame") {
                self.buf.drain(..n);
                return Some(f);
            }
            let mut chunk = [0u8; 16384];
            match self.tls.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Everything sent on each stream until every one of `ids` has ended (FIN or reset).
    fn collect(&mut self, ids: &[u32]) -> std::collections::HashMap<u32, Vec<u8>> {
        use berth_cri::streaming::spdy::{Frame, FLAG_FIN};
        let mut got: std::collections::HashMap<u32, Vec<u8>> = Default::default();
        let mut open: std::collections::HashSet<u32> = ids.iter().copied().collect();
        while !open.is_empty() {
            match self.next() {
                Some(Frame::Data { stream_id, flags, data }) => {
                    got.entry(stream_id).or_default().extend_from_slice(&data);
                    if flags & FLAG_FIN != 0 {
                        open.remove(&stream_id);
                    }
                }
                Some(Frame::RstStream { stream_id, .. }) => {
                    open.remove(&stream_id);
                }
                Some(_) => {}
                None => break,
            }
        }
        got
    }
}

/// The suite's tests, in the order they run.
mod cases {
    use super::*;

    pub fn static_pod_with_two_containers_volumes_and_an_init_container() {
        let s = suite();
        let host = s.dir.join("hostpath");
        write_manifest(
            "web",
            &format!(
                r#"apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default}}
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - {{name: shared, emptyDir: {{}}}}
  - {{name: host, hostPath: {{path: {host}, type: Directory}}}}
  initContainers:
  - name: init
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "echo from-init > /shared/init.txt"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: server
    image: {IMAGE}
    imagePullPolicy: Never
    workingDir: /shared
    env: [{{name: GREETING, value: hello-from-env}}]
    command: ["sh", "-c", "mkdir -p /tmp/www && cat init.txt > /tmp/www/index.html && echo $GREETING >> /tmp/www/index.html && pwd > /host/server-pwd && exec httpd -f -p 8080 -h /tmp/www"]
    volumeMounts: [{{name: shared, mountPath: /shared}}, {{name: host, mountPath: /host}}]
    resources:
      requests: {{memory: 32Mi, cpu: 100m}}
      limits: {{memory: 64Mi, cpu: 500m}}
  - name: client
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "while true; do wget -qO /host/fetched.tmp http://127.0.0.1:8080/ && mv /host/fetched.tmp /host/fetched; sleep 1; done"]
    volumeMounts: [{{name: host, mountPath: /host}}]
"#,
                host = host.display()
            ),
        );
        // The client fetched the server's page over the pod's loopback: the init container ran
        // first (its file in the emptyDir), the environment and working directory applied.
        wait_until("the client's fetch in the hostPath volume", Duration::from_secs(120), || {
            std::fs::read_to_string(host.join("fetched")).is_ok_and(|t| t == "from-init\nhello-from-env\n")
        });
        assert_eq!(std::fs::read_to_string(host.join("server-pwd")).unwrap(), "/shared\n");
        let init = containers("init");
        assert_eq!(init.len(), 1, "{init:?}");
        assert_eq!(init[0].1, "CONTAINER_EXITED", "{init:?}");
        let server = containers("server");
        assert!(server.iter().any(|c| c.1 == "CONTAINER_RUNNING"), "{server:?}");
        // The memory limit reached the container's cgroup (kubelet's resources, through the CRI).
        let inspect = crictl(&["inspect", &server[0].0]).ok("inspect");
        let v: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
        let limit = v["status"]["resources"]["linux"]["memoryLimitInBytes"]
            .as_str()
            .map(str::to_string)
            .or_else(|| v["status"]["resources"]["linux"]["memoryLimitInBytes"].as_u64().map(|n| n.to_string()));
        assert_eq!(limit.as_deref(), Some("67108864"), "{}", inspect.stdout);
        wait_until("kubelet to report the pod running", Duration::from_secs(60), || {
            kubelet_phase("web").as_deref() == Some("Running")
        });
    }

    pub fn exec_and_port_forward_through_kubelets_server() {
        // Exec: `kubectl exec web -c server -- sh -c ...` as kubelet's API takes it.
        let (tls, protocol) = kubelet_spdy(
            "/exec/default/web-berth-node/server?command=sh&command=-c&command=echo%20-n%20via-kubelet%3B%20pwd&output=1&error=1",
            "v4.channel.k8s.io",
        );
        assert_eq!(protocol, "v4.channel.k8s.io");
        let mut c = SpdyClient { tls, codec: berth_cri::streaming::spdy::Codec::new(), buf: Vec::new() };
        for (id, kind) in [(1, "error"), (3, "stdout"), (5, "stderr")] {
            c.open(id, &[("streamtype", kind)]);
        }
        let got = c.collect(&[1, 3, 5]);
        assert_eq!(String::from_utf8_lossy(&got[&3]), "via-kubelet/shared\n", "{got:?}");
        assert_eq!(String::from_utf8_lossy(&got[&1]), r#"{"metadata":{},"status":"Success"}"#);

        // Port-forward: one connection to the pod's port 8080, as `kubectl port-forward` opens it.
        let (tls, protocol) = kubelet_spdy("/portForward/default/web-berth-node", "portforward.k8s.io");
        assert_eq!(protocol, "portforward.k8s.io");
        let mut c = SpdyClient { tls, codec: berth_cri::streaming::spdy::Codec::new(), buf: Vec::new() };
        c.open(1, &[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]);
        c.send(1, &[], true);
        c.open(3, &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]);
        c.send(3, b"GET / HTTP/1.0\r\n\r\n", true);
        let got = c.collect(&[1, 3]);
        let page = String::from_utf8_lossy(&got[&3]).into_owned();
        assert!(page.starts_with("HTTP/1.") && page.ends_with("from-init\nhello-from-env\n"), "{page:?}");
        assert!(got.get(&1).is_none_or(|e| e.is_empty()), "an error: {got:?}");
    }

    pub fn kubelet_restarts_exited_and_unhealthy_containers() {
        write_manifest(
            "restarts",
            &format!(
                r#"apiVersion: v1
kind: Pod
metadata: {{name: restarts, namespace: default}}
spec:
  terminationGracePeriodSeconds: 2
  restartPolicy: Always
  containers:
  - name: crasher
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "sleep 1; exit 3"]
  - name: unhealthy
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "touch /tmp/healthy; sleep 3; rm /tmp/healthy; exec sleep 1000"]
    livenessProbe:
      exec: {{command: ["cat", "/tmp/healthy"]}}
      periodSeconds: 1
      failureThreshold: 1
"#
            ),
        );
        // An exit is restarted (kubelet's back-off starts at 10 s).
        wait_until("the crasher's restart", Duration::from_secs(120), || {
            containers("crasher").iter().any(|c| c.2 >= 1)
        });
        // A failing liveness probe (ExecSync) gets the container restarted.
        wait_until("the unhealthy container's restart", Duration::from_secs(120), || {
            containers("unhealthy").iter().any(|c| c.2 >= 1)
        });
    }

    pub fn security_context_probes_oom_and_the_stop_signal() {
        let s = suite();
        let host = s.dir.join("hostpath");
        write_manifest(
            "secure",
            &format!(
                r#"apiVersion: v1
kind: Pod
metadata: {{name: secure, namespace: default}}
spec:
  terminationGracePeriodSeconds: 30
  volumes:
  - {{name: host, hostPath: {{path: {host}, type: Directory}}}}
  containers:
  - name: locked
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sleep", "1000"]
    securityContext:
      runAsUser: 1234
      runAsGroup: 2345
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {{drop: ["ALL"], add: ["NET_BIND_SERVICE"]}}
      seccompProfile: {{type: RuntimeDefault}}
    readinessProbe:
      exec: {{command: ["true"]}}
      periodSeconds: 1
  - name: graceful
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'echo got-TERM > /host/graceful; exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: host, mountPath: /host}}]
  - name: hog
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "sleep 1; head -c 200000000 /dev/zero | tail"]
    resources:
      limits: {{memory: 32Mi}}
"#,
                host = host.display()
            ),
        );
        wait_until("the locked container", Duration::from_secs(120), || {
            containers("locked").iter().any(|c| c.1 == "CONTAINER_RUNNING")
        });
        let id = containers("locked")[0].0.clone();
        let exec = |cmd: &str| crictl(&["exec", "-s", &id, "sh", "-c", cmd]);
        // (crictl prints ExecSync's stdout, then its stderr, each with a newline.)
        assert_eq!(exec("id -u; id -g").ok("id").stdout.trim(), "1234\n2345");
        assert_ne!(exec("touch /x").code, 0, "a read-only root filesystem");
        // Only NET_BIND_SERVICE (bit 10) is left in the bounding set (a user other than root
        // has none effective, as with containerd), and no privilege can be gained.
        let status = exec("grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status").ok("status").stdout;
        assert!(status.contains("CapBnd:\t0000000000000400"), "{status}");
        assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        assert!(status.contains("Seccomp:\t2"), "{status}");
        // The readiness probe (ExecSync) makes kubelet report the pod ready.
        wait_until("kubelet to report the pod ready", Duration::from_secs(60), || {
            kubelet_condition("secure", "Ready").as_deref() == Some("True")
                || kubelet_container_ready("secure", "locked")
        });
        // A container past its memory limit is reported OOMKilled.
        wait_until("the hog's OOM kill", Duration::from_secs(120), || {
            containers("hog").iter().any(|(id, state, _)| {
                state == "CONTAINER_EXITED" && {
                    let o = crictl(&["inspect", id]);
                    o.stdout.contains("\"reason\": \"OOMKilled\"")
                }
            })
        });
        // Removal: the stop signal reaches the container, which ends within its grace period.
        std::fs::remove_file(s.manifests.join("secure.yaml")).unwrap();
        wait_until("the graceful container's TERM", Duration::from_secs(60), || {
            std::fs::read_to_string(host.join("graceful")).is_ok_and(|t| t == "got-TERM\n")
        });
        wait_until("kubelet to stop the pod", Duration::from_secs(60), || pods_ready("secure") == 0);
        let graceful = containers("graceful");
        let o = crictl(&["inspect", &graceful[0].0]).ok("inspect");
        assert!(o.stdout.contains("\"exitCode\": 0"), "a graceful exit: {}", o.stdout);
    }

    pub fn pulled_images_host_ports_and_rotated_logs() {
        use berth_testkit::image::{Compression, Layer, OciLayout};
        let s = suite();
        let dir = s.dir.join("registry-test");
        let registry = berth_testkit::registry::Registry::start(&dir.join("registry"), None).expect("docker-registry");
        let mut layout = OciLayout::create(&dir.join("layout")).unwrap();
        let bb = berth_testkit::image::busybox_layer(&dir).unwrap();
        // An image of its own (a label in its configuration): kubelet keeps a record of the
        // pulls of an image ID, and an ID it pulled under another name is then no longer
        // "preloaded" for the suite's `imagePullPolicy: Never` pods.
        let config = serde_json::json!({"Labels": {"pulled-by": "kubelet"}});
        let img = layout.image(&[Layer { tar: bb, compression: Compression::Gzip }], config, "amd64").unwrap();
        layout.tag("v1", &img.manifest_descriptor).unwrap();
        let image = format!("{}/kubelet/pulled:v1", registry.addr());
        berth_testkit::registry::skopeo_push(&dir.join("layout"), "v1", &image, false, None, None).expect("push");
        let (host_port, node_port) = (free_port(), free_port());
        write_manifest(
            "pulled",
            &format!(
                r#"apiVersion: v1
kind: Pod
metadata: {{name: pulled, namespace: default}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: {image}
    imagePullPolicy: Always
    command: ["sh", "-c", "mkdir -p /tmp/www && echo through-the-host-port > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
    ports: [{{containerPort: 8080, hostPort: {host_port}}}]
  - name: chatty
    image: {image}
    imagePullPolicy: Always
    command: ["sh", "-c", "i=0; while true; do echo line-$i-0123456789012345678901234567890123456789012345678901234567890123456789; i=$((i+1)); sleep 0.005; done"]
"#
            ),
        );
        write_manifest(
            "hostnet",
            &format!(
                r#"apiVersion: v1
kind: Pod
metadata: {{name: hostnet, namespace: default}}
spec:
  terminationGracePeriodSeconds: 2
  hostNetwork: true
  containers:
  - name: web
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /tmp/www && echo on-the-node > /tmp/www/index.html && exec httpd -f -p {node_port} -h /tmp/www"]
"#
            ),
        );
        // Pulled by kubelet (imagePullPolicy Always) from the registry.
        wait_until("the pulled pod's web server through its host port", Duration::from_secs(120), || {
            http_get(&format!("{NODE_IP}:{host_port}"), "/").as_deref() == Some("through-the-host-port\n")
        });
        assert!(crictl(&["images", "-q", &image]).stdout.contains("sha256:"), "the pulled image is stored");
        wait_until("the host-network pod's web server", Duration::from_secs(120), || {
            http_get(&format!("{NODE_IP}:{node_port}"), "/").as_deref() == Some("on-the-node\n")
        });
        // kubelet rotates the chatty container's log (16 KiB) and has berthd reopen it: old
        // files appear beside 0.log, which keeps getting the newest lines.
        let logs = s.dir.join("pod-logs");
        let chatty = containers("chatty")[0].0.clone();
        let log_dir = std::fs::read_dir(&logs)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().contains("pulled"))
            .map(|e| e.path().join("chatty"))
            .expect("the pod's log directory");
        wait_until("a rotated log file", Duration::from_secs(120), || {
            std::fs::read_dir(&log_dir).into_iter().flatten().flatten().any(|e| e.file_name() != "0.log")
        });
        let last_line = |text: &str| -> u64 {
            text.lines().rev().find_map(|l| l.split("line-").nth(1)?.split('-').next()?.parse().ok()).unwrap_or(0)
        };
        let first = last_line(&std::fs::read_to_string(log_dir.join("0.log")).unwrap_or_default());
        wait_until("newer lines in the reopened 0.log", Duration::from_secs(60), || {
            last_line(&std::fs::read_to_string(log_dir.join("0.log")).unwrap_or_default()) > first + 100
        });
        assert!(
            last_line(&crictl(&["logs", "--tail", "5", &chatty]).stdout) > first,
            "crictl logs follows the new file"
        );
        // kubelet's summary has the pod's stats from berthd.
        let summary = http_get(&format!("{NODE_IP}:10255"), "/stats/summary").expect("/stats/summary");
        let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
        let pod = v["pods"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["podRef"]["name"].as_str().is_some_and(|n| n.starts_with("pulled")))
            .unwrap_or_else(|| panic!("no pulled pod in {summary}"));
        assert!(pod["containers"].as_array().is_some_and(|c| c.len() == 2), "{pod}");
        // The image filesystem as kubelet's image garbage collection and eviction see it
        // (berthd's ImageFsInfo, sized through cadvisor): a capacity, and the store in use.
        // (Its first collection, at kubelet's start, fails as on any runtime: "Stats
        // initialization may not have completed yet".)
        let image_fs = &v["node"]["runtime"]["imageFs"];
        let n = |k: &str| image_fs[k].as_u64().unwrap_or(0);
        assert!(n("capacityBytes") > 0 && n("availableBytes") > 0, "imageFs sized: {image_fs}");
        assert!(n("usedBytes") > 0 && n("usedBytes") < n("capacityBytes"), "the store's use: {image_fs}");
        for name in ["pulled", "hostnet"] {
            std::fs::remove_file(s.manifests.join(format!("{name}.yaml"))).unwrap();
        }
        wait_until("kubelet to stop the pods", Duration::from_secs(60), || {
            pods_ready("pulled") + pods_ready("hostnet") == 0
        });
        drop(registry);
    }

    pub fn restarts_of_kubelet_and_berthd_keep_the_pods() {
        let s = suite();
        write_manifest(
            "steady",
            &format!(
                r#"apiVersion: v1
kind: Pod
metadata: {{name: steady, namespace: default}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: steady
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sleep", "1000"]
  - name: short
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "sleep 1000"]
"#
            ),
        );
        wait_until("the steady pod", Duration::from_secs(120), || {
            containers("steady").iter().any(|c| c.1 == "CONTAINER_RUNNING")
                && containers("short").iter().any(|c| c.1 == "CONTAINER_RUNNING")
        });
        let before = (containers("steady"), crictl(&["pods", "--name", "steady", "-q"]).stdout);
        // kubelet restarted: it finds the pod as it left it and restarts nothing.
        stop_kubelet();
        start_kubelet();
        std::thread::sleep(Duration::from_secs(5));
        assert_eq!(containers("steady"), before.0, "after kubelet's restart");
        assert_eq!(crictl(&["pods", "--name", "steady", "-q"]).stdout, before.1);
        // berthd killed and restarted with the pod running: the same pod and containers; an
        // exit that happened meanwhile is seen (and the container restarted by kubelet).
        let short = containers("short")[0].0.clone();
        kill_berthd();
        let pid = std::fs::read_to_string(s.root.join(format!("run/containers/{short}/pid"))).unwrap();
        // SAFETY: a container of this suite, by the pid its monitor recorded.
        unsafe { libc::kill(pid.trim().parse().unwrap(), libc::SIGKILL) };
        start_berthd();
        wait_until("the short container's restart", Duration::from_secs(120), || {
            containers("short").iter().any(|c| c.2 >= 1 && c.1 == "CONTAINER_RUNNING")
        });
        let steady = containers("steady");
        assert_eq!(steady, before.0, "the steady container untouched");
        std::fs::remove_file(s.manifests.join("steady.yaml")).unwrap();
        wait_until("kubelet to stop the pod", Duration::from_secs(60), || pods_ready("steady") == 0);
    }

    pub fn removing_a_manifest_stops_its_pod() {
        let s = suite();
        for name in ["web", "restarts"] {
            std::fs::remove_file(s.manifests.join(format!("{name}.yaml"))).unwrap();
        }
        wait_until("kubelet to stop the pods", Duration::from_secs(120), || {
            pods_ready("web") + pods_ready("restarts") == 0
        });
        for name in ["server", "client", "crasher", "unhealthy"] {
            let running: Vec<_> = containers(name).into_iter().filter(|c| c.1 == "CONTAINER_RUNNING").collect();
            assert!(running.is_empty(), "{name}: {running:?}");
        }
        // Stopped pods hold no network namespace any more.
        let netns = s.root.join("run/netns");
        let left: Vec<_> = std::fs::read_dir(&netns).into_iter().flatten().flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

/// Stops kubelet, then removes what it left to berthd (kubelet's garbage collection removes
/// stopped pods later than a test waits), stops berthd; what is still on the host.
fn teardown() -> Vec<String> {
    let s = suite();
    let mut leaks = Vec::new();
    stop_kubelet();
    // kubelet bind-mounts its root directory onto itself (and leaves it).
    berth_testkit::host::unmount_all_under(&s.dir.join("kubelet"));
    let pods = crictl(&["pods", "-q"]);
    for p in pods.stdout.lines().filter(|l| !l.is_empty()) {
        crictl(&["stopp", p]).ok("stop a pod");
        crictl(&["rmp", p]).ok("remove a pod");
    }
    if let Some(b) = s.berthd.lock().unwrap().take() {
        // SAFETY: our own child, by pid.
        unsafe { libc::kill(b.pid as i32, libc::SIGTERM) };
        let out = b.wait(Duration::from_secs(30));
        if out.code != 0 {
            leaks.push(format!("berthd exited with {}: {}", out.code, out.stderr));
        }
    }
    let scope = berth_testkit::leaks::Scope {
        dir: s.dir.clone(),
        cgroup: s.engine_cgroup.trim_start_matches('/').to_string(),
        state_roots: ["containers", "sandboxes", "run/netns", "run/sandboxes"].iter().map(|d| s.root.join(d)).collect(),
        interfaces: vec![s.bridge.clone()],
        settle: Duration::from_secs(10),
        ..Default::default()
    };
    leaks.extend(berth_testkit::leaks::leaks(&scope));
    berth_testkit::host::remove_cgroups(&s.engine_cgroup);
    berth_testkit::host::remove_cgroups(&s.cgroup_root);
    if Path::new("/sys/fs/cgroup/unified").is_dir() {
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/unified{}", s.cgroup_root));
    }
    let left = berth_testkit::host::cgroup_dirs(&s.cgroup_root);
    if !left.is_empty() {
        leaks.push(format!("kubelet's cgroups: {left:?}"));
    }
    leaks
}

fn main() {
    let args = Arguments::from_args();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the kubelet suite runs real pods and must run as root");
        std::process::exit(1);
    }
    let (Some(kubelet), Some(crictl)) = (tool("KUBELET", "kubelet"), tool("CRICTL", "crictl")) else { return };
    private_namespaces();
    berth_testkit::check::watchdog("kubelet on berthd", Duration::from_secs(15 * 60));
    init(kubelet, crictl);
    // One kubelet for the suite: the tests build on each other, in order.
    let tests = trials![
        cases::static_pod_with_two_containers_volumes_and_an_init_container,
        cases::exec_and_port_forward_through_kubelets_server,
        cases::kubelet_restarts_exited_and_unhealthy_containers,
        cases::security_context_probes_oom_and_the_stop_signal,
        cases::pulled_images_host_ports_and_rotated_logs,
        cases::restarts_of_kubelet_and_berthd_keep_the_pods,
        cases::removing_a_manifest_stops_its_pod,
    ];
    let mut one_at_a_time = args.clone();
    one_at_a_time.test_threads = Some(1);
    let conclusion = libtest_mimic::run(&one_at_a_time, tests);
    let leaks = teardown();
    if !leaks.is_empty() {
        eprintln!("LEAKS after the suite (it left these behind):");
        for l in &leaks {
            eprintln!("  {l}");
        }
        eprintln!("(kubelet's log: {})", suite().dir.display());
        std::process::exit(1);
    }
    if conclusion.has_failed() {
        eprintln!(
            "the kubelet suite failed; its directory (kubelet's and berthd's output) is kept: {}",
            suite().dir.display()
        );
        conclusion.exit();
    }
    let _ = std::fs::remove_dir_all(&suite().dir);
}
