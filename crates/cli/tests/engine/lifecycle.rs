//! Container lifecycle through the CLI: run, create, start, stop, restart, kill, rm, ps, logs,
//! inspect, wait, attach, exec, top, stats, port, info; runtime handlers; restart policies.

use std::time::Duration;

use crate::support::*;

pub fn run_foreground_exit_codes_and_streams() {
    let n = name("fg");
    let o = berth(&["run", "--rm", "--name", &n, IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(o.code, 3, "{o:?}");
    assert_eq!(o.stdout, "out\n");
    assert!(o.stderr.contains("err\n"), "{o:?}");
    // --rm: gone once run returns.
    let ps = berth(&["ps", "-a", "-q", "--filter", &format!("name={n}")]).ok("ps");
    assert_eq!(ps.stdout.trim(), "");
    assert!(berth(&["inspect", &n]).failed("inspect removed").stderr.contains("no such container"));
    // A command that does not exist: the runtime's error, berth's exit code 125.
    let o = berth(&["run", "--rm", IMAGE, "/no/such/program"]).failed("run missing program");
    assert!(o.stderr.contains("no/such/program"), "{o:?}");
    assert_eq!(berth(&["ps", "-a", "-q", "--filter", "ancestor=nothing"]).ok("ps").stdout, "");
}

/// A foreground `run` passes SIGTERM, SIGINT and SIGHUP on to the container (through its
/// monitor), with and without an open stdin.
pub fn foreground_run_forwards_signals() {
    for (sig, code, interactive) in
        [(libc::SIGTERM, 9, false), (libc::SIGTERM, 9, true), (libc::SIGINT, 10, true), (libc::SIGHUP, 11, false)]
    {
        let (n, _c) = named(&format!("sig{sig}-{interactive}"));
        let script =
            "trap 'echo got-term; exit 9' TERM; trap 'echo got-int; exit 10' INT; trap 'echo got-hup; exit 11' HUP; \
                      echo ready; while true; do sleep 0.1; done";
        let mut args = vec!["run", "--name", &n];
        if interactive {
            args.push("-i");
        }
        args.extend([IMAGE, "sh", "-c", script]);
        let (p, stdin) = spawn_with_stdin_pipe(&mut berth_cmd(&suite().root, &args));
        // The container's line relayed by berth itself: by then berth is attached and
        // forwards signals (the container's log has the line a moment earlier, while berth
        // may still be attaching, when a signal would end berth instead).
        p.wait_for_stdout("ready");
        // SAFETY: the berth process this test spawned, by pid.
        unsafe { libc::kill(p.pid as i32, sig) };
        let o = p.wait(Duration::from_secs(20));
        drop(stdin);
        assert_eq!(o.code, code, "signal {sig}, -i {interactive}: {o:?}");
        assert!(o.stdout.starts_with("ready\ngot-"), "{o:?}");
    }
}

pub fn detached_lifecycle() {
    let (n, _c) = named("life");
    let script =
        "trap 'echo got-term; exit 9' TERM; trap 'echo got-usr1' USR1; echo started; while true; do sleep 0.1; done";
    let id =
        berth(&["run", "-d", "--name", &n, "--label", "suite=engine", IMAGE, "sh", "-c", script]).ok("run -d").line();
    assert_eq!(id.len(), 64, "{id}");
    wait_until("log line", Duration::from_secs(10), || berth(&["logs", &n]).stdout.contains("started"));
    let ps = berth(&["ps"]).ok("ps").stdout;
    assert!(ps.contains(&id[..12]) && ps.contains(&n) && ps.contains("Up "), "{ps}");
    let q = berth(&["ps", "-q", "--filter", "label=suite=engine", "--filter", &format!("name={n}")]).ok("ps -q").line();
    assert_eq!(q, &id[..12]);
    let json: serde_json::Value =
        serde_json::from_str(&berth(&["ps", "--format", "json", "-a"]).ok("ps json").stdout).unwrap();
    let me = json.as_array().unwrap().iter().find(|c| c["Id"] == id.as_str()).expect("in ps json");
    assert_eq!(me["State"], "running");
    assert_eq!(me["Labels"]["suite"], "engine");
    let v = inspect(&id[..8]);
    assert_eq!(v["Name"], n.as_str());
    assert_eq!(v["State"]["Running"], true);
    assert!(v["State"]["Pid"].as_i64().unwrap() > 0);
    // The monitor: in a session of its own, the parent of the container's init (which the
    // runtime left behind), and re-parented to the subreaper above it (this suite).
    let stat = |pid: i64| {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<i64> =
            s.rsplit_once(") ").unwrap().1.split(' ').skip(1).take(4).map(|x| x.parse().unwrap()).collect();
        (f[0], f[2]) // ppid, session
    };
    let monitor = v["State"]["MonitorPid"].as_i64().unwrap();
    assert_eq!(stat(monitor), (std::process::id() as i64, monitor), "monitor: parent, session");
    assert_eq!(stat(v["State"]["Pid"].as_i64().unwrap()).0, monitor, "the container's parent is its monitor");
    assert!(v["NetworkSettings"]["IPAddress"].as_str().unwrap().starts_with(suite().subnet.trim_end_matches("0/24")));
    // logs: --tail, --timestamps
    let t = berth(&["logs", "-t", "--tail", "1", &n]).ok("logs -t").stdout;
    assert!(t.ends_with(" started\n") && t.starts_with("20"), "{t}");
    // stop: the stop signal (TERM) is trapped; exit code 9.
    berth(&["stop", &n]).ok("stop");
    let v = inspect(&n);
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 9);
    assert_eq!(berth(&["wait", &n]).ok("wait").line(), "9");
    assert!(berth(&["logs", &n]).stdout.contains("got-term"));
    assert!(berth(&["ps", "-a"]).stdout.contains("Exited (9)"));
    // start again, restart: new processes.
    berth(&["start", &n]).ok("start");
    let pid1 = inspect(&n)["State"]["Pid"].as_i64().unwrap();
    berth(&["restart", "-t", "5", &n]).ok("restart");
    let v = inspect(&n);
    assert_eq!(v["State"]["Running"], true);
    assert_ne!(v["State"]["Pid"].as_i64().unwrap(), pid1);
    // kill: the signal reaches the container (its trap runs); the default, KILL, ends it.
    berth(&["kill", "-s", "USR1", &n]).ok("kill");
    wait_until("the USR1 trap", Duration::from_secs(10), || berth(&["logs", &n]).stdout.contains("got-usr1"));
    assert_eq!(inspect(&n)["State"]["Running"], true);
    berth(&["kill", &n]).ok("kill");
    assert_eq!(berth(&["wait", &n]).ok("wait").line(), "137");
    // The monitor's exit file: status, signal, OOM, times.
    let exit: serde_json::Value =
        serde_json::from_slice(&std::fs::read(suite().root.join("run/containers").join(&id).join("exit")).unwrap())
            .unwrap();
    assert_eq!((&exit["exitCode"], &exit["signal"], &exit["oomKilled"]), (&137.into(), &9.into(), &false.into()));
    assert!(exit["finishedAt"].as_str().unwrap() > exit["startedAt"].as_str().unwrap(), "{exit}");
    assert_eq!(inspect(&n)["State"]["FinishedAt"], exit["finishedAt"]);
    berth(&["start", &n]).ok("start");
    let o = berth(&["rm", &n]).failed("rm running");
    assert!(o.stderr.contains("is running"), "{o:?}");
    berth(&["rm", "-f", &n]).ok("rm -f");
    assert!(berth(&["inspect", &n]).failed("inspect").stderr.contains("no such container"));
    assert!(!suite().root.join("containers").join(&id).exists());
    assert!(!suite().root.join("snapshots").join(&id).exists());
}

/// The monitor's CRI log: the record format (timestamp, stream, P/F), rotation by size (the
/// suite's limit is 4 KiB), and `logs` with -f across rotations, --tail, --since, --until
/// and --timestamps.
pub fn logs_rotation_follow_since() {
    let n = name("logs");
    let m = name("logs2");
    let _c = Cleanup(vec![n.clone(), m.clone()]);
    let script = "sleep 1; i=0; while [ $i -lt 300 ]; do echo \"line $i padding-padding-padding\"; i=$((i+1)); \
                  [ $((i % 10)) = 0 ] && sleep 0.05; done; echo to-stderr >&2; printf partial-; sleep 0.3; echo end";
    berth(&["run", "-d", "--name", &n, IMAGE, "sh", "-c", script]).ok("run");
    let follow = spawn(&mut berth_cmd(&suite().root, &["logs", "-f", &n]), None);
    let f = follow.wait(Duration::from_secs(60));
    assert_eq!(f.code, 0, "{f:?}");
    let mut want: Vec<String> = (0..300).map(|i| format!("line {i} padding-padding-padding")).collect();
    want.push("partial-end".into());
    assert_eq!(f.stdout.lines().collect::<Vec<_>>(), want, "logs -f saw every line, in order, across rotations");
    assert_eq!(f.stderr, "to-stderr\n");
    // The files: rotated, each within the limit, every record well formed.
    let log = std::path::PathBuf::from(inspect(&n)["LogPath"].as_str().unwrap());
    let old = log.with_extension("log.1");
    let (cur_text, old_text) = (std::fs::read_to_string(&log).unwrap(), std::fs::read_to_string(&old).unwrap());
    assert!(cur_text.len() <= 4096 && old_text.len() <= 4096, "{} {}", cur_text.len(), old_text.len());
    let mut partial = false;
    for rec in old_text.lines().chain(cur_text.lines()) {
        let f: Vec<&str> = rec.splitn(4, ' ').collect();
        let ts = f[0].as_bytes();
        assert!(
            f.len() == 4
                && ts.len() == 30
                && ts[4] == b'-'
                && ts[10] == b'T'
                && ts[19] == b'.'
                && ts[29] == b'Z'
                && ts[20..29].iter().all(u8::is_ascii_digit),
            "RFC 3339 with nanoseconds: {rec}"
        );
        assert!(matches!(f[1], "stdout" | "stderr") && matches!(f[2], "P" | "F"), "{rec}");
        partial |= f[2] == "P" && f[3] == "partial-";
    }
    assert!(partial, "a P record for the line without its newline yet:\n{cur_text}");
    // Without -f: what the two files hold, a contiguous end of the output.
    let all = berth(&["logs", &n]).ok("logs").stdout;
    let lines: Vec<&str> = all.lines().collect();
    assert!(lines.len() < 300 && lines.len() > 20, "older records were rotated away: {}", lines.len());
    assert_eq!(lines, want[want.len() - lines.len()..].iter().map(String::as_str).collect::<Vec<_>>());
    // --tail counts the lines of both streams, as docker does.
    let o = berth(&["logs", "--tail", "3", &n]).ok("tail");
    assert_eq!(
        (o.stdout.as_str(), o.stderr.as_str()),
        ("line 299 padding-padding-padding\npartial-end\n", "to-stderr\n")
    );
    let t = berth(&["logs", "-t", "-n", "1", &n]).ok("-t").stdout;
    assert!(t.len() == 31 + "partial-end\n".len() && t.ends_with("Z partial-end\n"), "{t:?}");
    // --since and --until around a moment between two lines.
    berth(&["run", "-d", "--name", &m, IMAGE, "sh", "-c", "echo early; sleep 1.5; echo late"]).ok("run");
    wait_until("early", Duration::from_secs(10), || berth(&["logs", &m]).stdout.contains("early"));
    let mid = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let mid = format!("{mid:.3}");
    let f = spawn(&mut berth_cmd(&suite().root, &["logs", "-f", "--since", &mid, &m]), None);
    assert_eq!(f.wait(Duration::from_secs(20)).ok("logs -f --since").stdout, "late\n");
    assert_eq!(berth(&["logs", "--until", &mid, &m]).ok("--until").stdout, "early\n");
    assert_eq!(berth(&["logs", "--since", "10m", &m]).ok("--since 10m").stdout, "early\nlate\n");
    assert_eq!(berth(&["logs", "-f", &m]).ok("-f on a stopped container").stdout, "early\nlate\n");
}

pub fn create_start_names_and_ids() {
    let (n, _c) = named("create");
    let id = berth(&["create", "--name", &n, IMAGE, "sh", "-c", "echo created-then-started"]).ok("create").line();
    assert_eq!(inspect(&n)["State"]["Status"], "created");
    assert!(berth(&["ps", "-a"]).stdout.contains("Created"));
    // The name is taken.
    let o = berth(&["create", "--name", &n, IMAGE, "true"]).failed("name clash");
    assert!(o.stderr.contains("already in use"), "{o:?}");
    berth(&["start", "-a", &id[..10]]).ok("start -a");
    assert_eq!(inspect(&id)["State"]["ExitCode"], 0);
    assert!(berth(&["logs", &n]).stdout.contains("created-then-started"));
    // An ambiguous id prefix: among 17 ids two share their first digit.
    let mut names = Vec::new();
    let mut ids = Vec::new();
    for i in 0..17 {
        let m = format!("{n}-{i}");
        ids.push(berth(&["create", "--name", &m, IMAGE, "true"]).ok("create").line());
        names.push(m);
    }
    let _c2 = Cleanup(names.clone());
    let digit = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|d| ids.iter().filter(|i| i.starts_with(d.as_str())).count() >= 2)
        .unwrap();
    let all = berth(&["ps", "-a", "-q", "--no-trunc"]).stdout;
    if all.lines().filter(|l| l.starts_with(digit.as_str())).count() >= 2 {
        let o = berth(&["inspect", &digit]).failed("ambiguous");
        assert!(o.stderr.contains("ambiguous"), "{o:?}");
    }
    let absent = berth(&["rm", "nosuchcontainer-xyz"]).code("rm absent", 1);
    assert_eq!(absent.stderr, "berth: no such container: nosuchcontainer-xyz\n", "the error once");
    let some = berth(&["rm", "nosuchcontainer-xyz", "nosuchcontainer-abc"]).code("rm two absent", 1);
    assert_eq!(some.stderr.lines().count(), 2, "one line per name: {}", some.stderr);
    let o = berth(&["create", "--name", "bad name!", IMAGE, "true"]).failed("bad name");
    assert!(o.stderr.contains("invalid container name"), "{o:?}");
    for m in &names {
        berth(&["rm", m]).ok("rm created");
    }
}

pub fn interactive_stdin_and_terminal() {
    let o = berth_stdin(&["run", "-i", "--rm", IMAGE, "sh", "-c", "cat; echo done"], b"hello stdin\n").ok("run -i");
    assert_eq!(o.stdout, "hello stdin\ndone\n");
    let o = berth(&["run", "-t", "--rm", IMAGE, "sh", "-c", "tty; echo $TERM"]).ok("run -t");
    assert!(o.stdout.contains("/dev/pts/0") && o.stdout.contains("xterm"), "{o:?}");
    let o = berth_stdin(&["run", "-i", "-t", "--rm", IMAGE, "sh"], b"exit 5\n");
    assert_eq!(o.code, 5, "{o:?}");
}

/// On a real terminal: `run -it`, `exec -it` and `attach` give the container a terminal of
/// the caller's size from the start, follow its resizes, and pass keys through raw mode.
pub fn terminals_sizes_and_keys() {
    const SCRIPT: &str = "stty size; while [ \"$(stty size)\" != \"40 120\" ]; do sleep 0.05; done; \
                          echo resized; read x; echo \"got $x\"; exit 3";
    // SCRIPT on a terminal of `size`: that size, then the resize, then a line typed.
    let sizes_and_keys = |what: &str, args: &[&str], (rows, cols): (u16, u16), key: &str| {
        let term = berth_on_terminal(args, rows, cols);
        term.wait_for(&format!("{rows} {cols}"));
        term.resize(40, 120);
        term.wait_for("resized");
        term.write(&format!("{key}\r"));
        term.wait_for(&format!("got {key}"));
        let (code, shown) = term.wait();
        assert_eq!(code, 3, "{what}: {shown:?}");
    };
    sizes_and_keys("run -it", &["run", "-it", "--rm", IMAGE, "sh", "-c", SCRIPT], (30, 100), "hello");
    let (n, _c) = named("tty");
    berth(&["run", "-d", "-it", "--name", &n, IMAGE, "sh"]).ok("run -d -it");
    sizes_and_keys("exec -it", &["exec", "-it", &n, "sh", "-c", SCRIPT], (31, 101), "there");
    // attach to the container's shell: the size of the attaching terminal, then keys.
    let term = berth_on_terminal(&["attach", &n], 33, 90);
    term.write("stty size; echo at-$((6*7)); exit 5\r");
    term.wait_for("33 90");
    term.wait_for("at-42");
    let (code, shown) = term.wait();
    assert_eq!(code, 5, "attach: {shown:?}");
}

pub fn attach_to_a_running_container() {
    let (n, _c) = named("attach");
    berth(&["run", "-d", "-i", "--name", &n, IMAGE, "sh", "-c", "while read l; do echo \"echo:$l\"; done; exit 6"])
        .ok("run -d -i");
    let o = berth_stdin(&["attach", &n], b"one\ntwo\n");
    assert_eq!(o.code, 6, "{o:?}");
    assert_eq!(o.stdout, "echo:one\necho:two\n");
    assert!(berth(&["attach", &n]).failed("attach stopped").stderr.contains("not running"));
}

pub fn exec_through_the_runtime() {
    for rt in ["berth-oci", "runc", "crun"] {
        exec_under(rt);
    }
    // A runtime without exec (the suite's "limited" handler): a clear error, never a silent
    // no-op.
    let b = name("exec-limited");
    let _c = Cleanup(vec![b.clone()]);
    berth(&["run", "-d", "--runtime", "limited", "--name", &b, IMAGE, "sleep", "600"]).ok("run limited");
    let o = berth(&["exec", &b, "true"]).failed("exec limited");
    assert!(o.stderr.contains("does not implement exec") && o.code == 125, "{o:?}");
    berth(&["stop", "-t", "0", &b]).ok("stop");
    assert!(berth(&["exec", &b, "true"]).failed("exec stopped").stderr.contains("not running"));
}

fn exec_under(rt: &str) {
    let (n, _c) = named(&format!("exec-{rt}"));
    berth(&["run", "-d", "--runtime", rt, "--name", &n, IMAGE, "sleep", "600"]).ok(rt);
    assert_eq!(
        berth(&["exec", &n, "cat", "/etc/hostname"]).ok("exec").stdout,
        format!("{}\n", &inspect(&n)["Id"].as_str().unwrap()[..12]),
        "{rt}"
    );
    let o = berth(&["exec", "-e", "FOO=bar", "-u", "user", "-w", "/tmp", &n, "sh", "-c", "echo $FOO $(id -u) $(pwd)"])
        .ok("exec -e -u -w");
    assert_eq!(o.stdout, "bar 1000 /tmp\n", "{rt}");
    assert_eq!(berth(&["exec", &n, "sh", "-c", "exit 4"]).code, 4, "{rt}");
    berth(&["exec", "-d", &n, "sh", "-c", "echo detached > /tmp/d"]).ok("exec -d");
    wait_until("detached exec", Duration::from_secs(10), || {
        berth(&["exec", &n, "cat", "/tmp/d"]).stdout == "detached\n"
    });
    let o = berth_stdin(&["exec", "-i", &n, "cat"], b"piped\n").ok("exec -i");
    assert_eq!(o.stdout, "piped\n", "{rt}");
    let o = berth(&["exec", "-t", &n, "tty"]).ok("exec -t");
    assert!(o.stdout.contains("/dev/pts/"), "{rt}: {o:?}");
    let o = berth_stdin(&["exec", "-i", "-t", &n, "sh"], b"echo in-a-tty; exit 3\n");
    assert_eq!(o.code, 3, "{rt}: {o:?}");
    assert!(o.stdout.contains("in-a-tty"), "{rt}: {o:?}");
    assert!(berth(&["exec", &n, "/no/such"]).code != 0, "{rt}");
    // The exec'd processes are the container's: in its cgroup, under its seccomp filter.
    let o = berth(&["exec", &n, "sh", "-c", "grep '^Seccomp:' /proc/self/status; cat /proc/self/cgroup"]).ok("exec");
    assert!(o.stdout.starts_with("Seccomp:\t2\n") && o.stdout.contains(&suite().cgroup_parent), "{rt}: {o:?}");
}

pub fn runtime_handlers() {
    for rt in ["berth-oci", "runc", "crun", "limited"] {
        let (n, _c) = named(&format!("rt-{rt}"));
        berth(&["create", "--runtime", rt, "--name", &n, IMAGE, "sh", "-c", "echo runtime-ok; cat /proc/self/cgroup"])
            .ok(rt);
        let o = berth(&["start", "-a", &n]).ok(rt);
        assert!(o.stdout.starts_with("runtime-ok\n"), "{rt}: {o:?}");
        assert!(o.stdout.contains(&suite().cgroup_parent), "{rt} uses the cgroup parent: {o:?}");
        assert_eq!(inspect(&n)["Runtime"], rt);
        berth(&["rm", &n]).ok("rm");
    }
    let o = berth(&["run", "--rm", "--runtime", "nosuch", IMAGE, "true"]).failed("unknown runtime");
    assert!(o.stderr.contains("runtime handler \"nosuch\" is not configured"), "{o:?}");
    let info = berth(&["info"]).ok("info").stdout;
    assert!(
        info.contains("Cgroup version") && info.contains("runc") && info.contains("crun") && info.contains("berth-oci"),
        "{info}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&berth(&["info", "--format", "json"]).ok("info json").stdout).unwrap();
    for rt in ["berth-oci", "runc", "crun"] {
        assert_eq!((&j["Runtimes"][rt]["seccomp"], &j["Runtimes"][rt]["exec"]), (&true.into(), &true.into()), "{rt}");
    }
    // The filesystems this kernel has, as the test sees them (overlay is loaded by now: the
    // store probes it when it opens).
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap();
    let has =
        |fs: &str| if filesystems.lines().any(|l| l.split_whitespace().last() == Some(fs)) { "yes" } else { "no" };
    let features =
        format!("Kernel features:  cgroup2={} overlay={} pidfd=yes seccomp=yes", has("cgroup2"), has("overlay"));
    assert!(info.contains(&features), "{info}");
    assert_eq!(j["StorageDriver"], "overlay");
    assert_eq!(j["CgroupParent"], suite().cgroup_parent.as_str());
    assert_eq!(j["DefaultNetwork"], suite().network.as_str());
    for f in ["cgroup2", "overlay", "pidfd", "seccomp", "userNamespaces"] {
        assert!(j["KernelFeatures"][f].is_boolean(), "{f}: {j}");
    }
    assert_eq!(j["Runtimes"]["limited"]["seccomp"], false);
    assert_eq!(j["Runtimes"]["limited"]["exec"], false);
}

pub fn top_stats_port_wait() {
    let (n, _c) = named("top");
    berth(&["run", "-d", "--name", &n, "-P", APP]).ok("run app");
    wait_until("httpd", Duration::from_secs(10), || berth(&["top", &n]).stdout.contains("httpd"));
    let top = berth(&["top", &n]).ok("top").stdout;
    assert!(top.starts_with("UID") && top.contains("httpd -f -p 80"), "{top}");
    let stats = berth(&["stats", "--no-stream", &n]).ok("stats").stdout;
    assert!(stats.contains(&n) && stats.contains("MEM USAGE"), "{stats}");
    let sj: serde_json::Value =
        serde_json::from_str(&berth(&["stats", "--no-stream", "--format", "json", &n]).ok("stats json").stdout)
            .unwrap();
    assert!(sj[0]["MemoryUsage"].as_u64().unwrap() > 0 && sj[0]["Pids"].as_u64().unwrap() >= 1, "{sj}");
    // Streaming: a sample every half second until interrupted.
    let p = spawn(&mut berth_cmd(&suite().root, &["stats", "--format", "json", &n]), None);
    std::thread::sleep(Duration::from_millis(1800));
    // SAFETY: the berth process this test spawned, by pid.
    unsafe { libc::kill(p.pid as i32, libc::SIGTERM) };
    let o = p.wait(Duration::from_secs(10));
    let samples: Vec<serde_json::Value> = o.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(samples.len() >= 2 && samples.iter().all(|s| s[0]["Name"] == n.as_str()), "{o:?}");
    let port = berth(&["port", &n]).ok("port").line();
    assert!(port.starts_with("80/tcp -> 0.0.0.0:"), "{port}");
    let hp: u16 = berth(&["port", &n, "80/tcp"]).ok("port 80").line().rsplit(':').next().unwrap().parse().unwrap();
    // (httpd shows in top a moment before it listens)
    wait_until("the app page on the published port", Duration::from_secs(20), || {
        http_get(hp, "/app.txt").is_ok_and(|b| b.contains("app page"))
    });
    assert!(berth(&["port", &n, "81"]).failed("port 81").stderr.contains("no public port"));
    // The image's StopSignal (SIGUSR1) is what stop sends; httpd as PID 1 has no handler
    // for it (PID 1 ignores default-action signals), so SIGKILL follows after the timeout.
    assert_eq!(inspect(&n)["Config"]["StopSignal"], 10);
    berth(&["stop", "-t", "1", &n]).ok("stop");
    assert_eq!(berth(&["wait", &n]).ok("wait").line(), "137");
}

pub fn restart_policies() {
    let n = name("onfail");
    let a = name("always");
    let _c = Cleanup(vec![n.clone(), a.clone()]);
    berth(&["run", "-d", "--restart", "on-failure:2", "--name", &n, IMAGE, "sh", "-c", "exit 3"]).ok("run on-failure");
    wait_until("two restarts", Duration::from_secs(30), || {
        let v = inspect(&n);
        v["RestartCount"] == 2 && v["State"]["Status"] == "exited"
    });
    std::thread::sleep(Duration::from_millis(300));
    let v = inspect(&n);
    assert_eq!((v["RestartCount"].as_u64(), v["State"]["ExitCode"].as_i64()), (Some(2), Some(3)));
    berth(&["run", "-d", "--restart", "always", "--name", &a, IMAGE, "sh", "-c", "sleep 0.2"]).ok("run always");
    wait_until("a restart", Duration::from_secs(30), || inspect(&a)["RestartCount"].as_u64().unwrap() >= 1);
    berth(&["stop", "-t", "1", &a]).ok("stop always");
    let before = inspect(&a)["RestartCount"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let v = inspect(&a);
    assert_eq!(v["State"]["Status"], "exited", "stopped by the user: no restart");
    assert_eq!(v["RestartCount"].as_u64().unwrap(), before);
    // --restart no (the default, said explicitly): a failure stays a failure.
    let no = name("norestart");
    let _c2 = Cleanup(vec![no.clone()]);
    berth(&["run", "-d", "--restart", "no", "--name", &no, IMAGE, "sh", "-c", "exit 1"]).ok("run --restart no");
    assert_eq!(berth(&["wait", &no]).ok("wait").line(), "1");
    std::thread::sleep(Duration::from_millis(300));
    let v = inspect(&no);
    assert_eq!((v["RestartCount"].as_u64(), v["State"]["Status"].as_str()), (Some(0), Some("exited")));
    berth(&["run", "--rm", "--restart", "no", IMAGE, "true"]).ok("--rm with --restart no");
    let o = berth(&["run", "-d", "--rm", "--restart", "always", IMAGE, "true"]).failed("--rm with --restart");
    assert!(o.stderr.contains("cannot be combined"), "{o:?}");
    assert!(berth(&["run", "--restart", "sometimes", IMAGE, "true"])
        .failed("bad restart")
        .stderr
        .contains("--restart"));
}

pub fn stop_signal_timeout_and_init() {
    let s = name("stopsig");
    let t = name("stoptime");
    let i = name("init");
    let _c = Cleanup(vec![s.clone(), t.clone(), i.clone()]);
    berth(&[
        "run",
        "-d",
        "--stop-signal",
        "USR2",
        "--name",
        &s,
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 12' USR2; while true; do sleep 0.1; done",
    ])
    .ok("run");
    berth(&["stop", &s]).ok("stop");
    assert_eq!(inspect(&s)["State"]["ExitCode"], 12);
    // sleep as PID 1 ignores TERM: SIGKILL after the timeout.
    berth(&["run", "-d", "--stop-timeout", "1", "--name", &t, IMAGE, "sleep", "600"]).ok("run");
    berth(&["stop", &t]).ok("stop");
    assert_eq!(inspect(&t)["State"]["ExitCode"], 137);
    // --init: PID 1 is berth-init; TERM is forwarded to sleep, which dies of it.
    berth(&["run", "-d", "--init", "--name", &i, IMAGE, "sleep", "600"]).ok("run --init");
    let o = berth(&["run", "--rm", "--init", IMAGE, "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; sleep 0.1 & exit 4"]);
    assert_eq!(o.code, 4, "{o:?}");
    assert!(o.stdout.starts_with("/dev/init -- sh"), "{o:?}");
    // Orphans are re-parented to berth-init, which reaps them: no zombie is left.
    let zombies = "for i in 1 2 3; do (sleep 0.1 &); done; sleep 1; \
                   for s in /proc/[0-9]*/stat; do cut -d' ' -f3 $s; done | grep -c Z";
    let o = berth(&["run", "--rm", "--init", IMAGE, "sh", "-c", zombies]);
    assert_eq!(o.stdout.trim(), "0", "{o:?}");
    berth(&["stop", "-t", "60", &i]).ok("stop init");
    assert_eq!(inspect(&i)["State"]["ExitCode"], 143);
}
