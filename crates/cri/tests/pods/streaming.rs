//! Exec, attach and port-forward through berthd's streaming server, driven by the real
//! crictl over both of its transports (SPDY, and WebSocket where crictl offers it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use berth_testkit::children::spawn_with_stdin_pipe;
use berth_testkit::terminal::Terminal;

use crate::crictl::{crictl, crictl_command, crictl_output, crictl_path};
use crate::support::*;

/// crictl's transports for exec, attach and port-forward.
const TRANSPORTS: [&str; 2] = ["spdy", "websocket"];

struct Pod {
    bin: PathBuf,
    name: String,
    id: String,
    container: String,
}

impl Pod {
    /// A pod (on the node's network when `host_network`) with one started container.
    fn run(bin: &PathBuf, what: &str, host_network: bool, container: serde_json::Value) -> Pod {
        let s = suite();
        let name = unique(what);
        let logs = s.dir.join("logs").join(&name);
        std::fs::create_dir_all(&logs).unwrap();
        let pod_json = s.dir.join(format!("{name}-pod.json"));
        let ctr_json = s.dir.join(format!("{name}-ctr.json"));
        let mut pod = serde_json::json!({
            "metadata": {"name": name, "namespace": "berthd-test", "uid": format!("uid-{name}")},
            "hostname": name,
            "log_directory": logs,
            "linux": {"cgroup_parent": format!("{}/pod-{name}", s.cgroup_parent)}
        });
        if host_network {
            pod["linux"]["security_context"] = serde_json::json!({"namespace_options": {"network": 2}});
        }
        std::fs::write(&pod_json, pod.to_string()).unwrap();
        let mut ctr = serde_json::json!({
            "metadata": {"name": "main"},
            "image": {"image": IMAGE},
            "log_path": "main.log",
        });
        for (k, v) in container.as_object().unwrap() {
            ctr[k] = v.clone();
        }
        std::fs::write(&ctr_json, ctr.to_string()).unwrap();
        let id = crictl(bin, &["runp", pod_json.to_str().unwrap()]).trim().to_string();
        let container =
            crictl(bin, &["create", &id, ctr_json.to_str().unwrap(), pod_json.to_str().unwrap()]).trim().to_string();
        crictl(bin, &["start", &container]);
        Pod { bin: bin.clone(), name, id, container }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = crictl_output(&self.bin, &["stopp", &self.id], None);
        let _ = crictl_output(&self.bin, &["rmp", &self.id], None);
        let s = suite();
        berth_testkit::host::remove_cgroups(&format!("{}/pod-{}", s.cgroup_parent.trim_start_matches('/'), self.name));
    }
}

fn sleeper() -> serde_json::Value {
    serde_json::json!({"command": ["sleep", "1000"]})
}

pub fn exec_over_both_transports() {
    let Some(bin) = crictl_path() else { return };
    let pod = Pod::run(&bin, "exec", false, sleeper());
    let c = pod.container.as_str();
    for t in TRANSPORTS {
        let o = crictl_output(&bin, &["exec", "-r", t, c, "echo", "-n", "hello"], None);
        assert_eq!((o.code, o.stdout.as_str()), (0, "hello"), "{t}: {o:?}");

        // Output on both streams and the exit code, as ExecSync (`exec -s`) gives them.
        let script = "echo out; echo err >&2";
        let streamed = crictl_output(&bin, &["exec", "-r", t, c, "sh", "-c", script], None);
        let synced = crictl_output(&bin, &["exec", "-s", c, "sh", "-c", script], None);
        assert_eq!((streamed.code, synced.code), (0, 0), "{t}: {streamed:?} {synced:?}");
        assert_eq!((streamed.stdout.as_str(), streamed.stderr.as_str()), ("out\n", "err\n"), "{t}");
        // (crictl prints ExecSync's stdout and stderr both to its stdout.)
        assert_eq!(synced.stdout, "out\n\nerr\n\n", "{t}");
        // crictl exits 1 and names the code the Status object carried (as ExecSync's).
        let streamed = crictl_output(&bin, &["exec", "-r", t, c, "sh", "-c", "exit 3"], None);
        let synced = crictl_output(&bin, &["exec", "-s", c, "sh", "-c", "exit 3"], None);
        assert_eq!(streamed.code, 1, "{t}: {streamed:?}");
        assert!(streamed.stderr.contains("command terminated with exit code 3"), "{t}: {streamed:?}");
        assert!(synced.stderr.contains("exited with 3"), "{synced:?}");

        // stdin reaches the process, and its end closes the process's stdin.
        let input = b"line one\nline two\n";
        let o = crictl_output(&bin, &["exec", "-r", t, "-i", c, "sh", "-c", "cat; echo done"], Some(input));
        assert_eq!((o.code, o.stdout.as_str()), (0, "line one\nline two\ndone\n"), "{t}: {o:?}");

        // More than one SPDY window's worth of output (the clients never grant more).
        let o = crictl_output(&bin, &["exec", "-r", t, c, "sh", "-c", "yes 0123456789abcdef | head -c 1000000"], None);
        assert_eq!(o.code, 0, "{t}: {:?}", o.stderr);
        assert_eq!(o.stdout.len(), 1_000_000, "{t}");

        // A command that does not exist: crictl fails, naming it.
        let o = crictl_output(&bin, &["exec", "-r", t, c, "/no/such/program"], None);
        assert_ne!(o.code, 0, "{t}: {o:?}");
    }
    // A command in a container that is not berthd's, or no container at all, gets no URL.
    let o = crictl_output(&bin, &["exec", "0123456789abcdef", "true"], None);
    assert_ne!(o.code, 0, "{o:?}");
}

pub fn exec_with_a_terminal() {
    let Some(bin) = crictl_path() else { return };
    let pod = Pod::run(&bin, "exec-tty", false, sleeper());
    for t in TRANSPORTS {
        let cmd = crictl_command(&bin, &["exec", "-r", t, "-it", &pod.container, "sh"]);
        let term = Terminal::spawn(cmd, 30, 100);
        // The terminal's size from the start, then as it changes.
        term.write("stty size; echo mark-$((6*7))\r");
        term.wait_for("mark-42");
        assert!(term.output().contains("30 100"), "{t}: {:?}", term.output());
        term.resize(40, 120);
        // crictl forwards the change when it sees SIGWINCH; the size shows once it arrived.
        wait_until("the new terminal size inside", Duration::from_secs(30), || {
            term.write("stty size\r");
            std::thread::sleep(Duration::from_millis(200));
            term.output().contains("40 120")
        });
        // A terminal merges stderr into its output; the exit code comes back.
        term.write("echo to-stderr-$((1+1)) >&2; exit 7\r");
        term.wait_for("to-stderr-2");
        let (code, out) = term.wait();
        assert_eq!(code, 1, "{t}: {out:?}");
        assert!(out.contains("command terminated with exit code 7"), "{t}: {out:?}");
    }
}

pub fn concurrent_execs_and_grpc_while_streaming() {
    let Some(bin) = crictl_path() else { return };
    let pod = Pod::run(&bin, "exec-many", false, sleeper());
    let c = pod.container.clone();
    // One stream left open (stdin not yet closed) while other calls go on.
    let mut cmd = crictl_command(&bin, &["exec", "-i", &c, "cat"]);
    let (open, mut stdin) = spawn_with_stdin_pipe(&mut cmd);
    stdin.write_all(b"first\n").unwrap();
    open.wait_for_stdout("first");
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (bin, c) = (bin.clone(), c.clone());
            let t = TRANSPORTS[i % TRANSPORTS.len()];
            std::thread::spawn(move || {
                crictl_output(&bin, &["exec", "-r", t, &c, "sh", "-c", &format!("echo n{i}")], None)
            })
        })
        .collect();
    for (i, th) in threads.into_iter().enumerate() {
        let o = th.join().unwrap();
        assert_eq!((o.code, o.stdout.trim()), (0, format!("n{i}").as_str()), "{o:?}");
    }
    assert!(crictl(&bin, &["ps", "-q"]).contains(&c));
    assert!(crictl(&bin, &["exec", "-s", &c, "echo", "sync"]).contains("sync"));
    stdin.write_all(b"second\n").unwrap();
    drop(stdin);
    let o = open.wait(Duration::from_secs(60));
    assert_eq!((o.code, o.stdout.as_str()), (0, "first\nsecond\n"), "{o:?}");
}

pub fn attach_to_a_containers_stdio() {
    let Some(bin) = crictl_path() else { return };
    for t in TRANSPORTS {
        let pod =
            Pod::run(&bin, "attach", false, serde_json::json!({"command": ["sh"], "stdin": true, "stdin_once": true}));
        let c = pod.container.as_str();
        let mut cmd = crictl_command(&bin, &["attach", "-r", t, "-i", c]);
        let (first, mut stdin) = spawn_with_stdin_pipe(&mut cmd);
        stdin.write_all(b"echo hello-$((2+3))\n").unwrap();
        first.wait_for_stdout("hello-5");
        // A second client sees the same output (repeated until it has: it may take a while to
        // attach), and the first sees stderr.
        let mut cmd = crictl_command(&bin, &["attach", "-r", t, c]);
        let second = berth_testkit::children::spawn(&mut cmd, None);
        stdin.write_all(b"echo oops >&2; (while true; do echo again-$((3+4)); sleep 0.2; done) &\n").unwrap();
        first.wait_for_stdout("again-7");
        second.wait_for_stdout("again-7");
        // The end of the first client's input is the end of the container's (stdin_once):
        // the shell exits, and both sessions end cleanly.
        drop(stdin);
        let o = first.wait(Duration::from_secs(60));
        assert_eq!(o.code, 0, "{t}: {o:?}");
        assert!(o.stderr.contains("oops"), "{t}: {o:?}");
        let o = second.wait(Duration::from_secs(60));
        assert_eq!(o.code, 0, "{t}: {o:?}");
        wait_until("the container to exit", Duration::from_secs(30), || {
            crictl(&bin, &["inspect", c]).contains("CONTAINER_EXITED")
        });
    }
}

/// `crictl port-forward POD :PORT` on `transport`, running until dropped: the local port.
struct Forward {
    child: Option<berth_testkit::children::Spawned>,
    local: u16,
}

impl Forward {
    fn start(bin: &PathBuf, transport: &str, pod: &str, port: u16) -> Forward {
        let mut cmd = crictl_command(bin, &["port-forward", "-r", transport, pod, &format!(":{port}")]);
        let child = berth_testkit::children::spawn(&mut cmd, None);
        child.wait_for_stdout(&format!("-> {port}"));
        let out = child.stdout_so_far();
        let local = out
            .lines()
            .find_map(|l| l.strip_prefix("Forwarding from 127.0.0.1:"))
            .and_then(|l| l.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no local port in {out:?}"));
        Forward { child: Some(child), local }
    }

    /// The body of `GET /path` through the forwarded port (HTTP/1.0: the server closes
    /// after it); None when the request fails or the answer is not 200.
    fn get(&self, path: &str) -> Option<Vec<u8>> {
        http_get(self.local, path)
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            // SAFETY: our own child, by pid.
            unsafe { libc::kill(child.pid as i32, libc::SIGINT) };
            let _ = child.wait(Duration::from_secs(30));
        }
    }
}

/// `GET /path` on 127.0.0.1:`port` (the test's own client: the cgroup v2 guest has no curl).
fn http_get(port: u16, path: &str) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = String::from_utf8_lossy(&out[..end]).lines().next().unwrap_or_default().to_string();
    (status.starts_with("HTTP/1.") && status.split(' ').nth(1) == Some("200")).then(|| out[end + 4..].to_vec())
}

/// Waits until the pod's web server answers inside the pod: a forward to a port nothing
/// listens on yet fails, and crictl's port-forward ends at its first failed connection.
fn wait_serving(bin: &PathBuf, container: &str, port: u16) {
    wait_until("the web server in the pod", Duration::from_secs(120), || {
        let url = format!("http://127.0.0.1:{port}/");
        crictl_output(bin, &["exec", "-s", container, "wget", "-qO-", &url], None).stdout.contains("hello-from-the-pod")
    });
}

/// What `/big` holds: `yes 0123456789abcdef | head -c 3000000`.
fn big_file() -> Vec<u8> {
    b"0123456789abcdef\n".iter().copied().cycle().take(3_000_000).collect()
}

/// A web server in a container: `/` says hello, `/big` is 3 MB.
fn web_server(port: u16) -> serde_json::Value {
    let script = format!(
        "mkdir -p /tmp/www && echo hello-from-the-pod > /tmp/www/index.html && \
         yes 0123456789abcdef | head -c 3000000 > /tmp/www/big && exec httpd -f -p {port} -h /tmp/www"
    );
    serde_json::json!({"command": ["sh", "-c", script]})
}

pub fn port_forward_over_both_transports() {
    let Some(bin) = crictl_path() else { return };
    let pod = Pod::run(&bin, "portfwd", false, web_server(8080));
    wait_serving(&bin, &pod.container, 8080);
    for t in TRANSPORTS {
        let f = Forward::start(&bin, t, &pod.id, 8080);
        let hello = Some(b"hello-from-the-pod\n".to_vec());
        wait_until("the forwarded server to answer", Duration::from_secs(60), || f.get("") == hello);
        // Each connection is its own; several in turn and at once.
        for _ in 0..3 {
            assert_eq!(f.get(""), hello, "{t}");
        }
        let at_once: Vec<_> = (0..3)
            .map(|_| {
                let port = f.local;
                std::thread::spawn(move || http_get(port, "big"))
            })
            .collect();
        let big = big_file();
        for th in at_once {
            let got = th.join().unwrap().unwrap_or_default();
            assert!(got == big, "{t}: a forwarded download differs ({} of {} bytes)", got.len(), big.len());
        }
        // A port nothing listens on fails that connection, not the forward.
        let closed = Forward::start(&bin, t, &pod.id, 8081);
        assert_eq!(closed.get(""), None, "{t}");
        assert_eq!(f.get(""), hello, "{t}");
    }
}

pub fn port_forward_on_the_host_network() {
    let Some(bin) = crictl_path() else { return };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pod = Pod::run(&bin, "portfwd-host", true, web_server(port));
    wait_serving(&bin, &pod.container, port);
    for t in TRANSPORTS {
        let f = Forward::start(&bin, t, &pod.id, port);
        wait_until("the forwarded server to answer", Duration::from_secs(60), || {
            f.get("").as_deref() == Some(b"hello-from-the-pod\n")
        });
    }
}

/// The address and path of a streaming URL.
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("{url}: not http://"));
    let (addr, path) = rest.split_once('/').unwrap();
    (addr.to_string(), format!("/{path}"))
}

/// Sends a request head; the response's status and the connection (past the head).
fn request(addr: &str, head: &str) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => got.push(b[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&got);
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, s)
}

fn spdy_upgrade(method: &str, path: &str, protocol: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {protocol}\r\n\r\n"
    )
}

/// Reads until the server closes the connection (it must, within the read timeout).
fn closed_by_server(mut s: TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: the server kept the connection open ({e})"),
        }
    }
}

pub fn hostile_streaming_clients() {
    use berth_cri::proto as pb;
    use berth_cri::streaming::spdy::{Codec, Frame};
    let Some(bin) = crictl_path() else { return };
    let pod = Pod::run(&bin, "stream-hostile", false, sleeper());
    let mut rt = cri().runtime;
    let exec = |rt: &mut berth_cri::proto::runtime_service_client::RuntimeServiceClient<_>, r: pb::ExecRequest| {
        block(rt.exec(r)).map(|r| r.into_inner().url)
    };
    let base = pb::ExecRequest { container_id: pod.container.clone(), cmd: vec!["cat".into()], ..Default::default() };
    // Requests kubelet's streaming server refuses get no URL.
    for (what, r, code) in [
        ("tty with stderr", pb::ExecRequest { tty: true, stderr: true, ..base.clone() }, tonic::Code::InvalidArgument),
        ("no stream", base.clone(), tonic::Code::InvalidArgument),
        ("no command", pb::ExecRequest { cmd: vec![], stdout: true, ..base.clone() }, tonic::Code::InvalidArgument),
        (
            "no such container",
            pb::ExecRequest { container_id: "feedbeef".into(), stdout: true, ..base.clone() },
            tonic::Code::NotFound,
        ),
    ] {
        assert_eq!(exec(&mut rt, r).unwrap_err().code(), code, "{what}");
    }
    let pf = block(rt.port_forward(pb::PortForwardRequest { pod_sandbox_id: "feedbeef".into(), port: vec![] }));
    assert_eq!(pf.unwrap_err().code(), tonic::Code::NotFound);
    let with_stdout = pb::ExecRequest { stdout: true, ..base.clone() };

    // Tokens: unknown ones, a token on another route, and a used one touch nothing.
    let (addr, path) = split_url(&exec(&mut rt, with_stdout.clone()).unwrap());
    let v4 = "v4.channel.k8s.io";
    assert_eq!(request(&addr, &spdy_upgrade("POST", "/exec/0123456789abcdef", v4)).0, 404);
    assert_eq!(request(&addr, &spdy_upgrade("POST", &path.replace("/exec/", "/attach/"), v4)).0, 404);
    assert_eq!(request(&addr, &format!("POST {path} HTTP/1.1\r\nHost: x\r\n\r\n")).0, 400, "not an upgrade");
    assert_eq!(request(&addr, &spdy_upgrade("POST", &path, v4)).0, 404, "a used token");
    let (_, path) = split_url(&exec(&mut rt, with_stdout.clone()).unwrap());
    assert_eq!(request(&addr, &spdy_upgrade("POST", &path, "v9.channel.k8s.io")).0, 403, "no common protocol");
    let (_, path) = split_url(&exec(&mut rt, with_stdout.clone()).unwrap());
    assert_eq!(request(&addr, &format!("GET {path} HTTP/1.1\r\n{}\r\n\r\n", "x: y\r\n".repeat(10_000))).0, 431);

    // Broken SPDY after the upgrade: the connection is dropped.
    let mut frame = Vec::new();
    Codec::new()
        .encode(
            &Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "x".repeat(200_000))],
            },
            &mut frame,
        )
        .unwrap();
    for (what, bytes) in [
        ("a frame of another SPDY version", vec![0x80, 0x02, 0x00, 0x01, 0, 0, 0, 0]),
        ("a header block that inflates past the limit", frame),
        ("an oversized frame", vec![0x00, 0x00, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff]),
    ] {
        let (_, path) = split_url(&exec(&mut rt, with_stdout.clone()).unwrap());
        let (status, mut s) = request(&addr, &spdy_upgrade("POST", &path, v4));
        assert_eq!(status, 101, "{what}");
        s.write_all(&bytes).unwrap();
        closed_by_server(s, what);
    }

    // A client that leaves mid-exec takes its process with it.
    let r = pb::ExecRequest { cmd: vec!["sleep".into(), "4321".into()], ..with_stdout.clone() };
    let (_, path) = split_url(&exec(&mut rt, r).unwrap());
    let (status, mut s) = request(&addr, &spdy_upgrade("POST", &path, v4));
    assert_eq!(status, 101);
    let mut codec = Codec::new();
    for (id, kind) in [(1, "error"), (3, "stdout")] {
        let mut f = Vec::new();
        let headers = vec![("streamtype".into(), kind.into())];
        codec
            .encode(&Frame::SynStream { stream_id: id, associated_to: 0, priority: 0, flags: 0, headers }, &mut f)
            .unwrap();
        s.write_all(&f).unwrap();
    }
    let running = || crictl(&bin, &["exec", "-s", &pod.container, "ps"]).contains("sleep 4321");
    wait_until("the exec'd process to run", Duration::from_secs(30), running);
    drop(s);
    wait_until("the exec'd process to be killed", Duration::from_secs(30), || !running());

    // berthd serves on.
    let o = crictl_output(&bin, &["exec", &pod.container, "echo", "-n", "still-here"], None);
    assert_eq!((o.code, o.stdout.as_str()), (0, "still-here"), "{o:?}");
}
