//! berthd's `[cri]` section, on a second berthd with a store of its own: the default runtime
//! handler, the cgroup parent of pods that send none, the CNI configuration directory pods
//! join the first network of (and NetworkReady until there is one), the log line limit, and
//! the streaming server's address, port, idle timeout and TLS.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_cri::proto as pb;
use berth_testkit::children::spawn;
use tonic::Code;

use crate::support::*;

fn network_ready(c: &mut Cri) -> (bool, String) {
    let status = block(c.runtime.status(pb::StatusRequest { verbose: false })).unwrap().into_inner();
    let net = status.status.unwrap().conditions.into_iter().find(|c| c.r#type == "NetworkReady").unwrap();
    (net.status, net.message)
}

pub fn cri_section_configures_pods() {
    let s = suite();
    let dir = s.dir.join("cri-config");
    let (root, netd, socket) = (dir.join("root"), dir.join("net.d"), dir.join("berthd.sock"));
    std::fs::create_dir_all(&netd).unwrap();
    let pods_parent = format!("{}/configured-pods", s.cgroup_parent);
    let config = dir.join("berth.toml");
    let stream_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_ca, cert, key) = berth_testkit::registry::make_test_certs(&dir.join("certs")).expect("test certificates");
    let suite_config = std::fs::read_to_string(&s.config).unwrap();
    // The idle timeout outlasts an exec's start under the cgroup v2 guest's emulation: a
    // session with no bytes moving either way is idle (and closed with no status) then.
    std::fs::write(
        &config,
        suite_config.replace(
            "[cri]\n",
            &format!(
                "[cri]\ndefault-runtime-handler = \"runc\"\npod-cgroup-parent = \"{pods_parent}\"\n\
                 cni-conf-dir = \"{}\"\nmax-container-log-line-size = 100\n\
                 stream-address = \"127.0.0.1\"\nstream-port = {stream_port}\nstream-idle-timeout = 10\n\
                 stream-tls-cert = \"{}\"\nstream-tls-key = \"{}\"\n",
                netd.display(),
                cert.display(),
                key.display()
            ),
        ),
    )
    .unwrap();
    let layout = s.dir.join("layout");
    let mut load = Command::new(bin_dir().join("berth"));
    load.env_remove("BERTH_ROOT").arg("--root").arg(&root).arg("--config").arg(&config);
    load.args(["load", "-q", "-i"]).arg(&layout);
    spawn(&mut load, None).wait(Duration::from_secs(120)).ok("load the test image into the second store");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berthd"));
    cmd.env_remove("BERTH_ROOT").env_remove("BERTH_CONFIG").arg("--root").arg(&root).arg("--config").arg(&config);
    cmd.arg("--listen").arg(format!("unix://{}", socket.display()));
    let berthd = spawn(&mut cmd, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the second berthd did not start: {}", berthd.stdout_so_far());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = connect(&socket).unwrap();

    // No network configuration yet: not ready, and a pod on its own network is refused.
    let (ready, why) = network_ready(&mut c);
    assert!(!ready && why.contains(&netd.display().to_string()), "{why}");
    let mut cfg = pod_config("configured");
    cfg.linux.as_mut().unwrap().cgroup_parent.clear();
    let run =
        |c: &mut Cri, cfg: &pb::PodSandboxConfig| {
            block(c.runtime.run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            }))
        };
    let e = run(&mut c, &cfg).expect_err("a pod without a network configuration");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // The first configuration by name is the pods' (the second is broken: never read).
    let bridge = format!("bdc{}", std::process::id() % 1_000_000);
    let subnet = berth_testkit::network::free_subnet(std::process::id().wrapping_mul(7).wrapping_add(97));
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "cri-config-net",
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": dir.join("ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::write(netd.join("10-pods.conflist"), conflist.to_string()).unwrap();
    std::fs::write(netd.join("20-broken.conflist"), "{").unwrap();
    let (ready, why) = network_ready(&mut c);
    assert!(ready, "{why}");
    let pod = run(&mut c, &cfg).expect("RunPodSandbox").into_inner().pod_sandbox_id;
    let status = block(
        c.runtime.pod_sandbox_status(pb::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false }),
    )
    .unwrap()
    .into_inner()
    .status
    .unwrap();
    assert_eq!(status.runtime_handler, "runc", "the default handler");
    let ip = status.network.unwrap().ip;
    assert!(ip.starts_with(subnet.trim_end_matches("0/24")), "{ip} in {subnet}");

    let mut container = container_config("long-line", "printf '%0250d\\n' 0; exec sleep 1000");
    container.log_path = "long-line.log".into();
    let id = block(c.runtime.create_container(pb::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(container),
        sandbox_config: Some(cfg.clone()),
    }))
    .expect("CreateContainer")
    .into_inner()
    .container_id;
    block(c.runtime.start_container(pb::StartContainerRequest { container_id: id.clone() })).expect("StartContainer");
    assert!(
        !berth_testkit::host::cgroup_dirs(&format!("{pods_parent}/{id}")).is_empty(),
        "the container's cgroup under the configured pod cgroup parent"
    );
    let log = Path::new(&cfg.log_directory).join("long-line.log");
    let mut records = Vec::new();
    wait_until("the long line in the log", Duration::from_secs(30), || {
        records = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(4, ' ').collect();
                (f[2].to_string(), f[3].len())
            })
            .collect();
        records.iter().any(|(tag, _)| tag == "F")
    });
    let want = [("P", 100), ("P", 100), ("F", 50)].map(|(t, n)| (t.to_string(), n));
    assert_eq!(records, want, "a 250-byte line in records of 100 bytes");

    // The streaming server on the configured port, with TLS: crictl execs through it (it
    // trusts any certificate when given no CA, as kubelet's clients do), and a connection idle
    // past the configured timeout is closed.
    let url = block(c.runtime.port_forward(pb::PortForwardRequest { pod_sandbox_id: pod.clone(), port: vec![] }))
        .expect("PortForward")
        .into_inner()
        .url;
    let base = format!("https://127.0.0.1:{stream_port}");
    let path = url.strip_prefix(&base).unwrap_or_else(|| panic!("{url}: not on {base}"));
    if let Some(crictl) = crate::crictl::crictl_path() {
        let mut cmd = Command::new(crictl);
        cmd.args(["--config", "/dev/null", "--timeout", "60s", "--runtime-endpoint"])
            .arg(format!("unix://{}", socket.display()))
            .args(["exec", &id, "echo", "-n", "over-tls"])
            .env_remove("CONTAINER_RUNTIME_ENDPOINT");
        let o = spawn(&mut cmd, None).wait(Duration::from_secs(60));
        assert_eq!((o.code, o.stdout.as_str()), (0, "over-tls"), "{o:?}");
    }
    // (openssl s_client ends when the server closes the connection; the wait fails the test
    // if it does not within a minute: the default idle timeout is 4 h.)
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"
    );
    let mut s_client = Command::new("openssl");
    s_client.args(["s_client", "-quiet", "-ign_eof", "-connect", &format!("127.0.0.1:{stream_port}")]);
    let o = spawn(&mut s_client, Some(request.into_bytes())).wait(Duration::from_secs(60));
    assert!(o.stdout.starts_with("HTTP/1.1 101 "), "{o:?}");

    block(c.runtime.stop_pod_sandbox(pb::StopPodSandboxRequest { pod_sandbox_id: pod.clone() })).unwrap();
    block(c.runtime.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: pod })).unwrap();
    assert_eq!(
        std::fs::read_dir(dir.join("ipam/cri-config-net"))
            .map(|d| d
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(subnet.trim_end_matches("0/24")))
                .count())
            .unwrap_or(0),
        0,
        "the pod's address was released"
    );
    // SAFETY: kill(2) of the berthd this test started.
    unsafe { libc::kill(berthd.pid as i32, libc::SIGTERM) };
    let out = berthd.wait(Duration::from_secs(30));
    assert_eq!(out.code, 0, "{}", out.stderr);
    berth_testkit::children::run(Command::new("ip").args(["link", "del", &bridge])).ok("remove the test's bridge");
    berth_testkit::host::remove_cgroups(pods_parent.trim_start_matches('/'));
    berth_testkit::host::unmount_all_under(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
}
