//! `exec`: a new process in an existing container, as containerd, podman and CRI-O run it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use serde_json::json;

use crate::support::*;

fn running(name: &str) -> Ctr {
    let c = Ctr::new(name, &["sleep", "1000"]);
    c.create();
    c.start();
    c
}

pub fn exec_joins_the_container() {
    let c = running("execjoin");
    let pid = c.pid();
    let out = c
        .oci(&["exec", &c.id, "sh", "-c", "for n in ipc mnt net pid uts cgroup; do echo $n $(readlink /proc/self/ns/$n); done; cat /proc/self/cgroup; hostname; echo me $$"])
        .ok("exec");
    for line in out.stdout.lines().take(6) {
        let (name, link) = line.split_once(' ').unwrap();
        let init = std::fs::read_link(format!("/proc/{pid}/ns/{name}")).unwrap();
        assert_eq!(link, init.to_str().unwrap(), "{name} namespace of the exec'd process");
    }
    // In the container's cgroup namespace, at its root, in every hierarchy.
    for line in out.stdout.lines().skip(6).take_while(|l| l.contains(':')) {
        assert!(line.ends_with(":/"), "{line}");
    }
    assert_contains(&out.stdout, "berth\n");
    let me = out.stdout.lines().last().unwrap();
    assert_ne!(me, "me 1", "the exec'd process is not the container's init");
    c.delete();
}

pub fn exec_exit_codes_and_errors() {
    let c = running("execcodes");
    assert_eq!(c.oci(&["exec", &c.id, "sh", "-c", "exit 42"]).code, 42);
    assert_eq!(c.oci(&["exec", &c.id, "sh", "-c", "kill -9 $$"]).code, 137);
    let missing = c.oci(&["exec", &c.id, "/no/such/program"]);
    assert_eq!(missing.code, 255, "exec's own failures exit 255: {missing:?}");
    assert_contains(&missing.stderr, "/no/such/program");
    let noargs = c.oci(&["exec", &c.id]);
    assert_eq!(noargs.code, 255);
    assert_contains(&noargs.stderr, "no command");
    let nobody = c.oci(&["exec", "no-such-container", "true"]);
    assert_contains(&nobody.stderr, "does not exist");
    c.oci(&["pause", &c.id]).ok("pause");
    let paused = c.oci(&["exec", &c.id, "true"]);
    assert_contains(&paused.stderr, "paused");
    c.oci(&["resume", &c.id]).ok("resume");
    c.oci(&["kill", &c.id, "KILL"]).ok("kill");
    c.wait_status("stopped");
    let stopped = c.oci(&["exec", &c.id, "true"]);
    assert_contains(&stopped.stderr, "stopped");
    c.delete();
}

pub fn exec_user_cwd_env_and_caps() {
    let c = running("execuser");
    let out = c
        .oci(&[
            "exec",
            "--user",
            "1000:1000",
            "--additional-gids",
            "10",
            "--cwd",
            "/tmp",
            "-e",
            "FOO=bar",
            "--cap",
            "CAP_NET_RAW",
            "--no-new-privs",
            &c.id,
            "sh",
            "-c",
            "id; pwd; echo $FOO; grep -E 'CapBnd|NoNewPrivs' /proc/self/status",
        ])
        .ok("exec with overrides");
    assert_contains(&out.stdout, "uid=1000(user) gid=1000(user) groups=10(wheel)");
    assert_contains(&out.stdout, "/tmp\nbar\n");
    // The default spec's bounding set (0x20000420) plus CAP_NET_RAW (bit 13).
    assert_contains(&out.stdout, "CapBnd:\t0000000020002420");
    assert_contains(&out.stdout, "NoNewPrivs:\t1");
    let bad = c.oci(&["exec", "--user", "root", &c.id, "true"]);
    assert_contains(&bad.stderr, "--user");
    c.delete();
}

pub fn exec_detached_with_pid_file() {
    let c = running("execdetach");
    let pid_file = c.dir.join("exec.pid");
    c.oci(&["exec", "--detach", "--pid-file", pid_file.to_str().unwrap(), &c.id, "sleep", "1000"]).ok("exec -d");
    let pid: i32 = read(&pid_file).parse().unwrap();
    let cmdline = read(format!("/proc/{pid}/cmdline"));
    assert_eq!(cmdline, "sleep\u{0}1000\u{0}");
    assert!(processes_in_cgroups(&c.id).contains(&pid), "the exec'd process is in the container's cgroup");
    c.delete();
    assert!(is_dead(pid), "the exec'd process died with the container");
}

pub fn exec_process_file_and_terminal() {
    let c = running("execprocess");
    let process = c.dir.join("process.json");
    std::fs::write(
        &process,
        json!({"terminal": true, "user": {"uid": 0, "gid": 0}, "args": ["sh", "-c", "tty; echo from-process-json"], "cwd": "/", "env": ["PATH=/bin"]}).to_string(),
    )
    .unwrap();
    let sock_path = c.dir.join("exec-console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let accept = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let (_, mut fds) = berth_sys::socket::recv_with_fds(&conn, &mut buf).unwrap();
        fds.pop().expect("a pty master")
    });
    c.oci(&[
        "exec",
        "--process",
        process.to_str().unwrap(),
        "--console-socket",
        sock_path.to_str().unwrap(),
        "--detach",
        &c.id,
    ])
    .ok("exec -p -d --console-socket");
    let master: OwnedFd = accept.join().unwrap();
    let mut text = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        // SAFETY: reading the master we own.
        let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        text.extend_from_slice(&buf[..n as usize]);
    }
    let text = String::from_utf8_lossy(&text);
    assert_contains(&text, "/dev/pts/");
    assert_contains(&text, "from-process-json");
    // A foreground exec with a terminal relays it itself.
    let out = c.oci(&["exec", "--tty", &c.id, "sh", "-c", "tty"]).ok("exec -t");
    assert_contains(&out.stdout, "/dev/pts/");
    let bad = c.dir.join("bad.json");
    std::fs::write(&bad, r#"{"args": ["true"], "cwd": "relative", "user": {"uid": 0, "gid": 0}}"#).unwrap();
    assert_contains(&c.oci(&["exec", "--process", bad.to_str().unwrap(), &c.id]).stderr, "process.cwd");
    c.delete();
}

pub fn exec_in_a_user_namespace() {
    let mut c = Ctr::new("execuserns", &["sleep", "1000"]);
    c.config()["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
    c.config()["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    c.config()["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    c.create();
    c.start();
    let pid_file = c.dir.join("exec.pid");
    c.oci(&["exec", "-d", "--pid-file", pid_file.to_str().unwrap(), &c.id, "sleep", "1000"]).ok("exec -d");
    let pid = read(&pid_file);
    let status = read(format!("/proc/{pid}/status"));
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid.split_whitespace().skip(1).all(|u| u == "100000"), "{uid}");
    let out = c.oci(&["exec", &c.id, "cat", "/proc/self/uid_map"]).ok("exec");
    assert_eq!(out.stdout.split_whitespace().collect::<Vec<_>>(), vec!["0", "100000", "65536"]);
    c.delete();
}

/// Signals reach a foreground exec'd process through the runtime.
pub fn exec_forwards_signals() {
    let c = running("execsignal");
    let mut cmd = c.command(&["exec", &c.id, "sh", "-c", "trap 'exit 9' TERM; while :; do sleep 0.05; done"]);
    let child = spawn(&mut cmd, None);
    wait_for_handler(child.first_child(), libc::SIGTERM);
    // SAFETY: the exec runtime process this test started.
    unsafe { libc::kill(child.pid as i32, libc::SIGTERM) };
    assert_eq!(child.wait(Duration::from_secs(20)).code, 9);
    c.delete();
}
