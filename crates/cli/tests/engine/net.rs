//! Networking: published ports on 127.0.0.1 through portmap, containers reaching each other on
//! a network of their own (own bridge and subnet), none and host, and the teardown on rm.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// The iptables rules (filter and nat) that mention `s`.
pub fn iptables_mentions(s: &str) -> Vec<String> {
    iptables_rules().into_iter().map(|(_, rule)| rule).filter(|l| l.contains(s)).collect()
}

pub fn published_ports_on_localhost() {
    let (n, _c) = named("web");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    berth(&[
        "run",
        "-d",
        "--name",
        &n,
        "-p",
        &format!("{port}:80"),
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/var/www",
    ])
    .ok("run -p");
    wait_until("the page", Duration::from_secs(20), || {
        http_get(port, "/").map(|b| b.contains("hello from berth")).unwrap_or(false)
    });
    let v = inspect(&n);
    let ip = v["NetworkSettings"]["IPAddress"].as_str().unwrap().to_string();
    let netns = std::path::PathBuf::from(v["NetworkSettings"]["SandboxKey"].as_str().unwrap());
    assert!(netns.exists());
    assert!(
        !iptables_mentions(&format!("{ip}/")).is_empty() || !iptables_mentions(&ip).is_empty(),
        "portmap rules for {ip}"
    );
    assert_eq!(berth(&["port", &n, "80"]).ok("port").line(), format!("0.0.0.0:{port}"));
    let ps = berth(&["ps"]).stdout;
    assert!(ps.contains(&format!("0.0.0.0:{port}->80/tcp")), "{ps}");
    berth(&["rm", "-f", &n]).ok("rm");
    assert!(http_get(port, "/").is_err(), "the port is closed after rm");
    assert!(iptables_mentions(&ip).is_empty(), "rules for {ip} left: {:?}", iptables_mentions(&ip));
    assert!(!netns.exists(), "network namespace {} left", netns.display());
}

/// UDP published with `-p HOST:CTR/udp` on the default network named as docker names it
/// (`--network bridge`): a datagram sent to 127.0.0.1 reaches a socket in the container's
/// network namespace, and its answer comes back.
pub fn published_udp_port_on_localhost() {
    let (n, _c) = named("udp");
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    berth(&[
        "run",
        "-d",
        "--name",
        &n,
        "--network",
        "bridge",
        "-p",
        &format!("{port}:5353/udp"),
        IMAGE,
        "sleep",
        "600",
    ])
    .ok("run -p udp");
    let v = inspect(&n);
    assert!(v["NetworkSettings"]["IPAddress"].as_str().unwrap().starts_with(suite().subnet.trim_end_matches("0/24")));
    assert_eq!(berth(&["port", &n, "5353/udp"]).ok("port").line(), format!("0.0.0.0:{port}"));
    let netns = v["NetworkSettings"]["SandboxKey"].as_str().unwrap().to_string();
    // A thread of this test in the container's network namespace answers on 5353/udp.
    let server = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let ns = std::fs::File::open(&netns).unwrap();
        // SAFETY: setns on this thread only (network namespaces are per thread).
        assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        let s = std::net::UdpSocket::bind("0.0.0.0:5353").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 64];
        let (len, from) = s.recv_from(&mut buf).expect("a datagram through portmap");
        s.send_to(&[&buf[..len], b" pong"].concat(), from).unwrap();
        String::from_utf8_lossy(&buf[..len]).into_owned()
    });
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 64];
    let mut answer = None;
    for _ in 0..50 {
        client.send_to(b"ping", ("127.0.0.1", port)).unwrap();
        if let Ok((len, _)) = client.recv_from(&mut buf) {
            answer = Some(String::from_utf8_lossy(&buf[..len]).into_owned());
            break;
        }
    }
    assert_eq!(server.join().unwrap(), "ping");
    assert_eq!(answer.as_deref(), Some("ping pong"));
    let ip = v["NetworkSettings"]["IPAddress"].as_str().unwrap().to_string();
    berth(&["rm", "-f", &n]).ok("rm");
    assert!(iptables_mentions(&ip).is_empty(), "rules for {ip} left: {:?}", iptables_mentions(&ip));
}

pub fn containers_reach_each_other_on_their_network() {
    let pid = std::process::id();
    let net = format!("tn{pid}");
    let bridge = format!("tnb{}", pid % 1_000_000);
    let subnet = {
        let s = suite().subnet.clone();
        let third: u32 = s.split('.').nth(2).unwrap().parse().unwrap();
        berth_testkit::network::free_subnet(third + 128)
    };
    assert_ne!(subnet, suite().subnet, "a second free /24");
    let (a, b) = (name("neta"), name("netb"));
    let _c = Cleanup(vec![a.clone(), b.clone()]);
    berth(&["network", "create", "--subnet", &subnet, "--bridge", &bridge, &net]).ok("network create");
    let o = berth(&["network", "create", "--subnet", &subnet, &format!("{net}x")]).failed("overlap");
    assert!(o.stderr.contains("overlaps"), "{o:?}");
    assert!(berth(&["network", "create", &net]).failed("exists").stderr.contains("already exists"));
    berth(&["run", "-d", "--name", &a, "--network", &net, IMAGE, "httpd", "-f", "-p", "80", "-h", "/var/www"])
        .ok("run a");
    let ip = inspect(&a)["NetworkSettings"]["IPAddress"].as_str().unwrap().to_string();
    assert!(ip.starts_with(subnet.trim_end_matches("0/24")), "{ip} in {subnet}");
    let url = format!("http://{ip}/");
    let mut body = String::new();
    for _ in 0..50 {
        let o = berth(&["run", "--rm", "--name", &b, "--network", &net, IMAGE, "wget", "-q", "-O", "-", &url]);
        if o.code == 0 {
            body = o.stdout;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(body.contains("hello from berth"), "container b reached a: {body:?}");
    let info: serde_json::Value =
        serde_json::from_str(&berth(&["network", "inspect", &net]).ok("inspect").stdout).unwrap();
    assert_eq!(info[0]["Bridge"], bridge.as_str());
    assert_eq!(info[0]["Containers"][0], a.as_str());
    assert!(berth(&["network", "ls"]).ok("ls").stdout.contains(&net));
    // CNI CHECK: fine as set up; not once the container's default route is gone.
    assert_eq!(berth(&["network", "check", &a]).ok("check").stdout, format!("{net}: ok\n"));
    let netns = inspect(&a)["NetworkSettings"]["SandboxKey"].as_str().unwrap().to_string();
    run(Command::new("nsenter").arg(format!("--net={netns}")).args(["ip", "route", "del", "default"]))
        .ok("delete the route");
    let o = berth(&["network", "check", &a]).failed("check after the route is gone");
    assert!(o.stderr.contains("CNI CHECK"), "{o:?}");
    assert!(berth(&["network", "rm", &net]).failed("in use").stderr.contains("in use"));
    berth(&["rm", "-f", &a]).ok("rm a");
    berth(&["network", "rm", &net]).ok("network rm");
    assert!(!std::path::Path::new("/sys/class/net").join(&bridge).exists(), "bridge {bridge} removed");
    assert!(iptables_mentions(&ip).is_empty());
}

pub fn network_none_and_host() {
    let o = berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    ])
    .ok("none");
    assert_eq!(o.stdout, "lo\n");
    let host_ifaces = std::fs::read_dir("/sys/class/net").unwrap().count();
    let o = berth(&["run", "--rm", "--network", "host", IMAGE, "sh", "-c", "ls /sys/class/net | wc -l; hostname"])
        .ok("host");
    let mut l = o.stdout.lines();
    let n: usize = l.next().unwrap().trim().parse().unwrap();
    assert!(n + 2 >= host_ifaces && n >= 2, "host network: {n} interfaces (host has {host_ifaces})");
    let hn = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(l.next().unwrap(), hn.trim());
}
