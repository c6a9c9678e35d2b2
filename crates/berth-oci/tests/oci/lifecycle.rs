//! The OCI state machine and the runc command line around it.

use std::os::fd::AsRawFd;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

pub fn create_start_state_delete() {
    let c = Ctr::new("lifecycle", &["sleep", "1000"]);
    let pid = c.create();
    let st = c.state();
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], c.id.as_str());
    assert_eq!(st["ociVersion"], "1.2.0");
    assert_eq!(st["bundle"], c.bundle.dir.canonicalize().unwrap().to_str().unwrap());
    assert!(pid > 1);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    c.start();
    assert_eq!(c.status(), "running");
    // Starting twice is refused.
    let again = c.oci(&["start", &c.id]).failed("second start");
    assert_contains(&again.stderr, "running");
    c.oci(&["kill", &c.id, "KILL"]).ok("kill");
    c.wait_status("stopped");
    assert_eq!(c.state()["pid"], 0);
    c.oci(&["delete", &c.id]).ok("delete");
    c.assert_gone();
    let out = c.oci(&["state", &c.id]).failed("state after delete");
    assert_contains(&out.stderr, "does not exist");
}

pub fn init_waits_for_start() {
    let mut c = Ctr::with_own_rootfs("waits", &["sh", "-c", "echo started > /tmp/marker"]);
    c.config()["root"]["readonly"] = json!(false);
    let pid = c.create();
    std::thread::sleep(Duration::from_millis(200));
    // Held before exec: the container's program has not run.
    assert!(!c.rootfs().join("tmp/marker").exists(), "the process ran before start");
    let stat = read(format!("/proc/{pid}/stat"));
    assert!(!stat.contains("(sh)"), "init exec'd before start: {stat}");
    c.start();
    c.wait_status("stopped");
    assert_eq!(read(c.rootfs().join("tmp/marker")), "started\n");
    c.delete();
    c.assert_gone();
}

pub fn run_returns_exit_codes() {
    let c = Ctr::new("exitcode", &["sh", "-c", "echo out; echo err >&2; exit 42"]);
    let out = c.run();
    assert_eq!(out.code, 42);
    assert_eq!(out.stdout, "out\n");
    assert_contains(&out.stderr, "err");
    c.assert_gone();
    // Not as PID 1 of a pid namespace: that one ignores signals it has no handler for.
    let mut killed = Ctr::new("exitsignal", &["sh", "-c", "kill -9 $$"]);
    killed.without_namespace("pid");
    assert_eq!(killed.run().code, 137, "killed by SIGKILL: 128 + 9");
    killed.assert_gone();
}

/// The lost wake-up youki's run suffers: a container that exits at once, many times.
pub fn run_never_misses_a_fast_exit() {
    let c = Ctr::new("fastexit", &["true"]);
    c.write_bundle();
    for i in 0..100 {
        let mut cmd = c.command(&["run", "--bundle", c.bundle.dir.to_str().unwrap(), &c.id]);
        let out = spawn(&mut cmd, None).wait(Duration::from_secs(20));
        assert_eq!(out.code, 0, "run {i}: {}", out.stderr);
    }
    c.assert_gone();
}

/// `start` must not mistake a program that already ran to completion for an init that died
/// before it could start (the program may finish as soon as the exec fifo is open).
pub fn start_never_misses_a_fast_exit() {
    let c = Ctr::new("faststart", &["true"]);
    c.write_bundle();
    for i in 0..30 {
        c.create();
        let out = c.oci(&["start", &c.id]);
        assert_eq!(out.code, 0, "start {i}: {}", out.stderr);
        c.delete();
    }
    c.assert_gone();
}

pub fn run_forwards_signals() {
    let c = Ctr::new(
        "forward",
        &["sh", "-c", "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.05; done"],
    );
    c.write_bundle();
    let mut cmd = c.command(&["run", "--bundle", c.bundle.dir.to_str().unwrap(), &c.id]);
    let child = spawn(&mut cmd, None);
    c.wait_status("running");
    wait_for_handler(c.pid(), libc::SIGTERM);
    // SAFETY: signalling the `run` process this test started.
    unsafe { libc::kill(child.pid as i32, libc::SIGTERM) };
    let out = child.wait(Duration::from_secs(20));
    assert_eq!(out.code, 7, "stdout {} stderr {}", out.stdout, out.stderr);
    assert_contains(&out.stdout, "got TERM");
    c.assert_gone();
}

pub fn run_detach_and_keep() {
    let c = Ctr::new("detach", &["sleep", "1000"]);
    c.write_bundle();
    c.oci(&["run", "--detach", "--bundle", c.bundle.dir.to_str().unwrap(), &c.id]).ok("run -d");
    assert_eq!(c.status(), "running");
    c.delete();
    c.assert_gone();

    let k = Ctr::new("keep", &["true"]);
    k.write_bundle();
    k.oci(&["run", "--keep", "--bundle", k.bundle.dir.to_str().unwrap(), &k.id]).ok("run --keep");
    assert_eq!(k.status(), "stopped");
    assert!(k.cgroup_dir("memory").exists(), "--keep keeps the cgroup");
    k.oci(&["delete", &k.id]).ok("delete");
    k.assert_gone();
}

pub fn kill_signals_and_all() {
    // Signal names, SIG-prefixed names and numbers.
    let c = Ctr::new("kill", &["sh", "-c", "trap 'exit 3' USR1; while :; do sleep 0.05; done"]);
    c.create();
    c.start();
    wait_for_handler(c.pid(), libc::SIGUSR1);
    c.oci(&["kill", &c.id, "SIGUSR1"]).ok("kill SIGUSR1");
    c.wait_status("stopped");
    let bad = c.oci(&["kill", &c.id, "NOTASIGNAL"]).failed("kill with a bad signal");
    assert_contains(&bad.stderr, "invalid signal");
    let stopped = c.oci(&["kill", &c.id, "9"]).failed("kill a stopped container");
    // containerd and CRI-O look for this exact phrase.
    assert_contains(&stopped.stderr, "container not running");
    c.delete();

    // A created container (its init is PID 1 of a pid namespace, still in the runtime's
    // code) dies of SIGTERM too, as with runc.
    c.create();
    c.oci(&["kill", &c.id, "TERM"]).ok("kill a created container");
    c.wait_status("stopped");
    c.delete();

    // --all reaches every process of a container sharing the host's pid namespace.
    let mut all = Ctr::new("killall", &["sh", "-c", "sleep 1000 & sleep 1000 & wait"]);
    all.without_namespace("pid");
    all.create();
    all.start();
    let ten = Duration::from_secs(10);
    wait_until("the container's processes to start", ten, || processes_in_cgroups(&all.id).len() >= 3);
    all.oci(&["kill", "--all", &all.id, "KILL"]).ok("kill --all");
    wait_until("kill --all to leave no process", ten, || processes_in_cgroups(&all.id).is_empty());
    all.delete();
    all.assert_gone();
}

pub fn delete_needs_force_while_running() {
    let c = Ctr::new("delrunning", &["sleep", "1000"]);
    c.create();
    // A created container can be deleted without --force (its init never ran).
    c.oci(&["delete", &c.id]).ok("delete created");
    c.assert_gone();
    c.create();
    c.start();
    let out = c.oci(&["delete", &c.id]).failed("delete running");
    assert_contains(&out.stderr, "not stopped");
    assert_eq!(c.status(), "running");
    c.oci(&["delete", "--force", &c.id]).ok("delete --force");
    c.assert_gone();
    // --force on a container that does not exist is not an error (as runc).
    c.oci(&["delete", "--force", &c.id]).ok("delete --force again");
    c.oci(&["delete", &c.id]).failed("delete of a missing container");
}

pub fn pause_and_resume() {
    let c = Ctr::new("pause", &["sh", "-c", "while :; do sleep 0.05; done"]);
    let pid = c.create();
    // A created container can be paused too, and resumes as created (as runc).
    c.oci(&["pause", &c.id]).ok("pause a created container");
    assert_eq!(c.status(), "paused");
    c.oci(&["resume", &c.id]).ok("resume");
    assert_eq!(c.status(), "created");
    c.start();
    c.oci(&["pause", &c.id]).ok("pause");
    assert_eq!(c.status(), "paused");
    if is_cgroup2() {
        assert_eq!(read(c.cgroup_dir("").join("cgroup.freeze")).trim(), "1");
    } else {
        assert_eq!(read(c.cgroup_dir("freezer").join("freezer.state")).trim(), "FROZEN");
    }
    let before = read(format!("/proc/{pid}/stat"));
    c.oci(&["resume", &c.id]).ok("resume");
    assert_eq!(c.status(), "running");
    assert!(!before.is_empty());
    c.oci(&["resume", &c.id]).failed("resume a running container");
    // A paused container can be killed.
    c.oci(&["pause", &c.id]).ok("pause");
    c.oci(&["kill", &c.id, "KILL"]).ok("kill paused");
    c.wait_status("stopped");
    c.delete();
    c.assert_gone();
}

pub fn list_table_and_json() {
    let a = Ctr::new("lista", &["sleep", "1000"]);
    let mut b = Ctr::new("listb", &["sleep", "1000"]);
    b.root = a.root.clone();
    a.create();
    b.create();
    b.start();
    let json: Value = serde_json::from_str(&a.oci(&["list", "--format", "json"]).ok("list json").stdout).unwrap();
    let items = json.as_array().unwrap();
    assert_eq!(items.len(), 2);
    let status_of = |id: &str| items.iter().find(|i| i["id"] == id).unwrap()["status"].clone();
    assert_eq!(status_of(&a.id), "created");
    assert_eq!(status_of(&b.id), "running");
    let table = a.oci(&["list"]).ok("list").stdout;
    let header = table.lines().next().unwrap();
    for col in ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"] {
        assert_contains(header, col);
    }
    assert_contains(&table, &a.id);
    let quiet = a.oci(&["list", "-q"]).ok("list -q").stdout;
    let mut ids: Vec<&str> = quiet.lines().collect();
    ids.sort();
    let mut want = vec![a.id.as_str(), b.id.as_str()];
    want.sort();
    assert_eq!(ids, want);
    a.delete();
    b.delete();
    let empty = a.oci(&["list", "--format", "json"]).ok("list").stdout;
    assert_eq!(empty.trim(), "[]");
}

pub fn ps_lists_container_processes() {
    let c = Ctr::new("ps", &["sh", "-c", "sleep 1000 & wait"]);
    c.create();
    c.start();
    let mut pids: Vec<i64> = Vec::new();
    poll_until(Duration::from_secs(10), || {
        let out = c.oci(&["ps", "--format", "json", &c.id]).ok("ps json");
        pids = serde_json::from_str(&out.stdout).unwrap();
        pids.len() == 2
    });
    assert_eq!(pids.len(), 2, "sh and sleep: {pids:?}");
    assert!(pids.contains(&(c.pid() as i64)));
    let table = c.oci(&["ps", &c.id]).ok("ps").stdout;
    assert_contains(table.lines().next().unwrap(), "PID");
    assert_contains(&table, "sleep 1000");
    assert_eq!(table.lines().count(), 3, "header and two processes:\n{table}");
    c.delete();
}

pub fn events_stats_report_usage() {
    let mut c = Ctr::new("events", &["sh", "-c", "sleep 1000 & wait"]);
    c.config()["linux"]["resources"]["pids"] = json!({"limit": 50});
    c.create();
    c.start();
    let out = c.oci(&["events", "--stats", &c.id]).ok("events --stats");
    let ev: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], c.id.as_str());
    assert!(ev["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0, "{ev}");
    assert_eq!(ev["data"]["pids"]["limit"], 50);
    assert!(ev["data"]["pids"]["current"].as_u64().unwrap() >= 1);
    assert!(ev["data"]["cpu"]["usage"].is_object());
    // The stream: a stats event per interval until the container stops.
    let mut cmd = c.command(&["events", "--interval", "100ms", &c.id]);
    let stream = spawn(&mut cmd, None);
    let two = poll_until(Duration::from_secs(30), || stream.stdout_so_far().lines().count() >= 2);
    assert!(two, "fewer than two stats events: {}", stream.stdout_so_far());
    c.oci(&["kill", &c.id, "KILL"]).ok("kill");
    let out = stream.wait(Duration::from_secs(20));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events: Vec<Value> = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.len() >= 2, "{}", out.stdout);
    assert!(events.iter().all(|e| e["type"] == "stats"));
    c.delete();
}

pub fn update_changes_limits() {
    let mut c = Ctr::new("update", &["sleep", "1000"]);
    c.config()["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
    c.config()["linux"]["resources"]["pids"] = json!({"limit": 20});
    c.create();
    c.start();
    let (mem_file, pids_dir) = if is_cgroup2() {
        (c.cgroup_dir("").join("memory.max"), c.cgroup_dir(""))
    } else {
        (c.cgroup_dir("memory").join("memory.limit_in_bytes"), c.cgroup_dir("pids"))
    };
    assert_eq!(read(&mem_file).trim(), (64u64 << 20).to_string());
    c.oci(&["update", "--memory", "100m", "--pids-limit", "30", &c.id]).ok("update flags");
    assert_eq!(read(&mem_file).trim(), (100u64 << 20).to_string());
    assert_eq!(read(pids_dir.join("pids.max")).trim(), "30");
    let mut cmd = c.command(&["update", "--resources", "-", &c.id]);
    let out = spawn(&mut cmd, Some(br#"{"pids": {"limit": 40}}"#.to_vec())).wait(Duration::from_secs(30));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(read(pids_dir.join("pids.max")).trim(), "40");
    let bad = c.oci(&["update", "--memory", "lots", &c.id]).failed("update with a bad size");
    assert_contains(&bad.stderr, "--memory");
    let file = c.dir.join("resources.json");
    std::fs::write(&file, r#"{"memory": {"limit": "big"}}"#).unwrap();
    let bad = c.oci(&["update", "--resources", file.to_str().unwrap(), &c.id]).failed("update with bad JSON");
    assert_contains(&bad.stderr, "memory.limit");
    c.delete();
}

pub fn pid_file_and_annotations() {
    let mut c = Ctr::new("pidfile", &["sleep", "1000"]);
    c.config()["annotations"] = json!({"org.example.key": "value"});
    c.write_bundle();
    let pid_file = c.dir.join("init.pid");
    c.oci(&["create", "--bundle", c.bundle.dir.to_str().unwrap(), "--pid-file", pid_file.to_str().unwrap(), &c.id])
        .ok("create");
    assert_eq!(read(&pid_file), c.pid().to_string());
    assert_eq!(c.state()["annotations"]["org.example.key"], "value");
    c.delete();
}

/// The pty master arrives over --console-socket (SCM_RIGHTS); the container's stdio is the pty.
pub fn terminal_over_console_socket() {
    let mut c = Ctr::new("terminal", &["sh", "-c", "tty; stty size; echo done"]);
    c.config()["process"]["terminal"] = json!(true);
    c.config()["process"]["consoleSize"] = json!({"height": 30, "width": 100});
    c.write_bundle();
    let sock_path = c.dir.join("console.sock");
    let accept = receive_fd(&sock_path);
    c.oci(&[
        "create",
        "--bundle",
        c.bundle.dir.to_str().unwrap(),
        "--console-socket",
        sock_path.to_str().unwrap(),
        &c.id,
    ])
    .ok("create");
    let (message, master) = accept.join().unwrap();
    assert!(!message.is_empty());
    c.start();
    let text = read_until_closed(master);
    assert_contains(&text, "/dev/pts/0");
    assert_contains(&text, "30 100");
    assert_contains(&text, "done");
    c.wait_status("stopped");
    c.delete();
    // Without a console socket, a terminal container cannot be created.
    let out = c.create_raw().failed("terminal without --console-socket");
    assert_contains(&out.stderr, "--console-socket");
    c.assert_gone();
    // A foreground `run` allocates the pty itself and relays it to its own stdio.
    let mut r = Ctr::new("terminalrun", &["sh", "-c", "tty; echo relayed; exit 5"]);
    r.config()["process"]["terminal"] = json!(true);
    let out = r.run();
    assert_eq!(out.code, 5, "{out:?}");
    assert_contains(&out.stdout, "/dev/pts/0");
    assert_contains(&out.stdout, "relayed");
    r.assert_gone();
}

pub fn preserve_fds() {
    let c = Ctr::new("preserve", &["sh", "-c", "echo through-fd-3 >&3; ls /proc/self/fd"]);
    c.write_bundle();
    let (r, w) = berth_sys::file::pipe().unwrap();
    let w_raw = w.as_raw_fd();
    let mut cmd = c.command(&["run", "--preserve-fds", "1", "--bundle", c.bundle.dir.to_str().unwrap(), &c.id]);
    // SAFETY: in the child before exec: make the pipe's write end descriptor 3.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if libc::dup2(w_raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = spawn(&mut cmd, None).wait(Duration::from_secs(30));
    drop(w);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut got = String::new();
    let mut f = std::fs::File::from(r);
    std::io::Read::read_to_string(&mut f, &mut got).unwrap();
    assert_eq!(got, "through-fd-3\n");
    // stdio, fd 3, and at most ls's own directory descriptor: nothing of the runtime's.
    let fds: Vec<i32> = out.stdout.split_whitespace().map(|f| f.parse().unwrap()).collect();
    assert_eq!(&fds[..4], &[0, 1, 2, 3], "descriptors in the container: {}", out.stdout);
    assert!(fds.len() <= 5, "descriptors leaked into the container: {}", out.stdout);
}

/// Socket activation as systemd does it: LISTEN_FDS descriptors from 3, for the process whose pid
/// is LISTEN_PID. They reach the container's init (as 3.., before --preserve-fds ones) with the
/// variables rewritten for it; meant for another pid, they are left alone.
pub fn socket_activation() {
    let script = "for fd in 3 4 5; do echo to-$fd >&$fd; done; echo \"$LISTEN_FDS $LISTEN_PID $LISTEN_FDNAMES\"";
    let c = Ctr::new("listenfds", &["sh", "-c", script]);
    c.write_bundle();
    let pipes: Vec<_> = (0..3).map(|_| berth_sys::file::pipe().unwrap()).collect();
    let run_activated = |listen_pid: &str| {
        // Parked high, so that placing them at 3, 4, 5 cannot clobber one another.
        let high: Vec<i32> =
            pipes.iter().map(|(_, w)| unsafe { libc::fcntl(w.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) }).collect();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", &format!("LISTEN_PID={listen_pid} exec \"$0\" \"$@\"")])
            .arg(&suite().bin)
            .args(["--root", c.root.to_str().unwrap(), "run", "--preserve-fds", "1", "--bundle"])
            .arg(&c.bundle.dir)
            .arg(&c.id)
            .env("LISTEN_FDS", "2")
            .env("LISTEN_FDNAMES", "web:admin");
        let targets = high.clone();
        // SAFETY: only dup2 between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                for (i, fd) in targets.iter().enumerate() {
                    if libc::dup2(*fd, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let out = spawn(&mut cmd, None).wait(Duration::from_secs(30));
        for fd in high {
            unsafe { libc::close(fd) };
        }
        out
    };
    // "$$": the shell's pid, which berth-oci keeps when the shell execs it.
    let out = run_activated("$$");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "2 1 web:admin", "the init is pid 1 of its namespace");
    // Meant for someone else: not passed, so descriptor 3 is the preserved one, 4 and 5 closed.
    let out = run_activated("1");
    assert_eq!(out.stdout.trim(), "", "no activation variables: {out:?}");
    assert_contains(&out.stderr, "5: Bad file descriptor");
    drop(c);
    let contents: Vec<String> = pipes
        .into_iter()
        .map(|(r, w)| {
            drop(w);
            let mut got = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut got).unwrap();
            got
        })
        .collect();
    assert_eq!(contents, ["to-3\nto-3\n", "to-4\n", "to-5\n"], "each descriptor in its place");
}

pub fn spec_and_features() {
    let c = Ctr::new("spec", &["true"]);
    let out = run(std::process::Command::new(&suite().bin).args(["spec", "--bundle"]).arg(&c.dir)).ok("spec");
    assert!(out.stdout.is_empty());
    let text = read(c.dir.join("config.json"));
    assert!(text.contains("\n\t\"ociVersion\""), "tab-indented like runc spec");
    let spec: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(spec["process"]["terminal"], true);
    assert_eq!(spec["root"]["path"], "rootfs");
    let again = run(std::process::Command::new(&suite().bin).args(["spec", "--bundle"]).arg(&c.dir))
        .failed("spec over an existing config");
    assert_contains(&again.stderr, "exists");
    std::fs::remove_file(c.dir.join("config.json")).unwrap();
    run(std::process::Command::new(&suite().bin).args(["spec", "--rootless", "--bundle"]).arg(&c.dir))
        .ok("spec --rootless");
    let rootless: Value = serde_json::from_str(&read(c.dir.join("config.json"))).unwrap();
    assert!(rootless["linux"]["namespaces"].as_array().unwrap().iter().any(|n| n["type"] == "user"));
    assert!(rootless["linux"]["uidMappings"].is_array());

    let f: Value =
        serde_json::from_str(&run(std::process::Command::new(&suite().bin).arg("features")).ok("features").stdout)
            .unwrap();
    assert_eq!(f["ociVersionMax"], "1.2.0");
    let ns: Vec<&str> = f["linux"]["namespaces"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for want in ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"] {
        assert!(ns.contains(&want), "{want} in {ns:?}");
    }
    assert!(f["linux"]["capabilities"].as_array().unwrap().iter().any(|c| c == "CAP_SYS_ADMIN"));
    assert_eq!(f["linux"]["cgroup"]["v1"], true);
    assert_eq!(f["linux"]["cgroup"]["v2"], true);
    assert!(f["mountOptions"].as_array().unwrap().iter().any(|o| o == "rro"));
}

pub fn log_json_records_errors() {
    let c = Ctr::new("logjson", &["true"]);
    let log = c.dir.join("log.json");
    let out = c
        .oci(&["--log", log.to_str().unwrap(), "--log-format", "json", "state", &c.id])
        .failed("state of a missing container");
    assert_contains(&out.stderr, "does not exist");
    let line = read(&log);
    let rec: Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(rec["level"], "error");
    assert_contains(rec["msg"].as_str().unwrap(), "does not exist");
    assert!(rec["time"].is_string());
    let bad = c.oci(&["--log-format", "xml", "list"]).failed("bad log format");
    assert_contains(&bad.stderr, "--log-format");
    let sys = c.oci(&["--systemd-cgroup", "list"]).failed("--systemd-cgroup");
    assert_contains(&sys.stderr, "systemd");
}

pub fn no_pivot() {
    let c = Ctr::new("nopivot", &["sh", "-c", "cat /proc/self/mountinfo | head -1; echo ok"]);
    c.write_bundle();
    let out = c.oci(&["run", "--no-pivot", "--bundle", c.bundle.dir.to_str().unwrap(), &c.id]).ok("run --no-pivot");
    assert_contains(&out.stdout, "ok");
    c.assert_gone();
}

/// Each container gets a session keyring of its own (named after it), unless --no-new-keyring.
pub fn session_keyring() {
    let keyrings = || read("/proc/keys");
    let c = Ctr::new("keyring", &["sleep", "1000"]);
    c.create();
    assert_contains(&keyrings(), &format!(" keyring   {}: ", c.id));
    c.delete();
    let n = Ctr::new("nokeyring", &["sleep", "1000"]);
    n.write_bundle();
    n.oci(&["create", "--no-new-keyring", "--bundle", n.bundle.dir.to_str().unwrap(), &n.id])
        .ok("create --no-new-keyring");
    assert!(!keyrings().contains(&format!(" keyring   {}: ", n.id)));
    n.delete();
}

/// `events` reports an OOM kill inside the container as {"type":"oom"}.
pub fn events_report_oom() {
    let mut c =
        Ctr::new("eventsoom", &["sh", "-c", "sleep 0.3; (x=$(head -c 200m /dev/zero | tr '\\0' a)); sleep 1000"]);
    c.config()["linux"]["resources"]["memory"] = json!({"limit": 16 << 20});
    c.create();
    let mut cmd = c.command(&["events", "--interval", "10s", &c.id]);
    let stream = spawn(&mut cmd, None);
    c.start();
    let oom_file = if is_cgroup2() {
        c.cgroup_dir("").join("memory.events")
    } else {
        c.cgroup_dir("memory").join("memory.oom_control")
    };
    wait_until("an OOM kill", Duration::from_secs(20), || read(&oom_file).contains("oom_kill 1"));
    stream.wait_for_stdout("\"type\":\"oom\"");
    c.oci(&["kill", &c.id, "KILL"]).ok("kill");
    let out = stream.wait(Duration::from_secs(20));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.lines().any(|l| l.contains("\"type\":\"oom\"")), "no oom event in: {}", out.stdout);
    c.delete();
}
