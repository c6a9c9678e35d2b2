//! Crash recovery and concurrency: a `berth run` killed (SIGKILL) at chosen points, a monitor
//! killed under a running container, concurrent invocations, and system prune.

use std::time::Duration;

use crate::support::*;

fn no_leftovers_of(id: &str) {
    let s = suite();
    assert!(!s.root.join("run/netns").join(id).exists(), "netns of {id} left");
    assert!(!s.root.join("snapshots").join(id).exists(), "snapshot of {id} left");
    assert!(!s.root.join("containers").join(id).exists(), "bundle of {id} left");
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(id), "mounts of {id} left");
    for h in ["memory", "pids"] {
        assert!(!container_cgroup(h, id).exists(), "cgroup {h} of {id} left");
    }
    let cache = std::fs::read_dir(s.root.join("cni"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().contains(id)).count())
        .unwrap_or(0);
    assert_eq!(cache, 0, "CNI results of {id} left");
    // The bridge and portmap plugins name the container's id in their rules' comments.
    let rules = crate::net::iptables_mentions(id);
    assert!(rules.is_empty(), "iptables rules of {id} left: {rules:?}");
}

/// Commands that find a dead container clean it up when they can take its lock at once;
/// another test's `ps` (every `ps` looks at every container) may be doing it right now, so
/// this asks with `ps` until the container is clean.
fn cleaned_by_ps(id: &str) {
    wait_until("the dead container's clean-up", Duration::from_secs(20), || {
        berth(&["ps", "-a"]).ok("ps");
        inspect(id)["State"]["Status"] == "exited"
            && !suite().root.join("run/netns").join(id).exists()
            && !std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(id)
            && !container_cgroup("memory", id).exists()
    });
}

pub fn cli_killed_at_each_point() {
    for (point, statuses) in [
        ("created-record", &["creating"][..]),
        ("snapshot", &["creating"][..]),
        ("network", &["created"][..]),
        ("monitor", &["running", "exited"][..]),
    ] {
        let n = name(&format!("crash-{point}"));
        let mut cmd = berth_cmd(&suite().root, &["run", "-d", "--name", &n, "-p", "80", IMAGE, "sleep", "600"]);
        cmd.env("BERTH_TEST_CRASH_AT", point);
        let o = spawn(&mut cmd, None).wait(Duration::from_secs(60));
        assert_eq!(o.code, 128 + 9, "{point}: killed: {o:?}");
        // ps shows it, consistently, and the state settles.
        let v = inspect(&n);
        let status = v["State"]["Status"].as_str().unwrap().to_string();
        assert!(statuses.contains(&status.as_str()), "{point}: status {status}");
        let ps = berth(&["ps", "-a", "--filter", &format!("name={n}")]).ok("ps").stdout;
        assert!(ps.contains(&n), "{point}: {ps}");
        if point == "monitor" {
            // The monitor saw the CLI go before `start`: it deletes the created container.
            wait_until("the abandoned container's end", Duration::from_secs(20), || {
                inspect(&n)["State"]["Status"] == "exited"
            });
        }
        if point == "created-record" || point == "snapshot" {
            let o = berth(&["start", &n]).failed("start incomplete");
            assert!(o.stderr.contains("not completely created"), "{o:?}");
        }
        let id = v["Id"].as_str().unwrap().to_string();
        berth(&["rm", "-f", &n]).ok(&format!("{point}: rm -f"));
        no_leftovers_of(&id);
    }
}

/// `berth rm -f` killed after the network teardown and after the files went, before the
/// record: the container is still listed, and the next `rm -f` finishes the job.
pub fn rm_killed_midway() {
    for point in ["rm-network", "rm-files"] {
        let (n, _c) = named(&format!("crash-{point}"));
        berth(&["run", "-d", "--name", &n, "-p", "80", IMAGE, "sleep", "600"]).ok("run");
        let id = inspect(&n)["Id"].as_str().unwrap().to_string();
        let mut cmd = berth_cmd(&suite().root, &["rm", "-f", &n]);
        cmd.env("BERTH_TEST_CRASH_AT", point);
        let o = spawn(&mut cmd, None).wait(Duration::from_secs(60));
        assert_eq!(o.code, 128 + 9, "{point}: killed: {o:?}");
        let ps = berth(&["ps", "-a", "--format", "json"]).ok("ps").stdout;
        assert!(ps.contains(&id), "{point}: still listed: {ps}");
        assert_eq!(inspect(&n)["State"]["Status"], "exited", "{point}");
        berth(&["rm", "-f", &n]).ok(&format!("{point}: rm -f again"));
        no_leftovers_of(&id);
    }
}

/// The monitor killed after the runtime created the container, before it started it; and
/// after the container exited, before it wrote the exit file and ran the exit hook.
pub fn monitor_killed_at_each_point() {
    let (n, _c) = named("moncrash-created");
    let mut cmd = berth_cmd(&suite().root, &["run", "-d", "--name", &n, "-p", "80", IMAGE, "sleep", "600"]);
    cmd.env("BERTH_TEST_CRASH_AT", "monitor-created");
    let o = spawn(&mut cmd, None).wait(Duration::from_secs(60));
    assert!(o.code == 125 && o.stderr.contains("monitor exited without starting"), "{o:?}");
    let v = inspect(&n);
    assert_eq!(v["State"]["Status"], "created");
    let id = v["Id"].as_str().unwrap().to_string();
    // Released at once: the created container (its init waiting to start), network, mounts.
    assert!(!suite().root.join("run/netns").join(&id).exists(), "netns left");
    assert!(crate::net::iptables_mentions(&id).is_empty(), "iptables rules left");
    assert!(!std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&id), "mounts left");
    berth(&["start", &n]).ok("start it again, monitored this time");
    assert_eq!(inspect(&n)["State"]["Running"], true);
    berth(&["rm", "-f", &n]).ok("rm -f");
    no_leftovers_of(&id);

    let (n, _c) = named("moncrash-exit");
    let mut cmd =
        berth_cmd(&suite().root, &["run", "-d", "--name", &n, "-p", "80", IMAGE, "sh", "-c", "sleep 0.3; exit 3"]);
    cmd.env("BERTH_TEST_CRASH_AT", "monitor-exit");
    spawn(&mut cmd, None).wait(Duration::from_secs(60)).ok("run");
    let id = inspect(&n)["Id"].as_str().unwrap().to_string();
    wait_until("the container's end", Duration::from_secs(20), || inspect(&n)["State"]["Status"] == "exited");
    let v = inspect(&n);
    assert!(v["State"]["Error"].as_str().unwrap().contains("monitor died"), "{v}");
    // No one saw the exit: its status is unknown, never a made-up 255 that reads as a real one.
    assert_eq!(v["State"]["ExitCode"], -1, "{v}");
    let ps = berth(&["ps", "-a", "--filter", &format!("name={n}")]).ok("ps").stdout;
    assert!(ps.contains("Exited (unknown)"), "{ps}");
    assert_eq!(berth(&["wait", &n]).ok("wait").stdout.trim(), "-1");
    cleaned_by_ps(&id);
    assert!(crate::net::iptables_mentions(&id).is_empty(), "CNI DEL on recovery");
    berth(&["rm", &n]).ok("rm");
    no_leftovers_of(&id);

    // A real 255 stays 255.
    let (n, _c) = named("exit255");
    let o = berth(&["run", "--name", &n, "--network", "none", IMAGE, "sh", "-c", "exit 255"]);
    assert_eq!(o.code, 255, "{o:?}");
    assert_eq!(inspect(&n)["State"]["ExitCode"], 255);
    let ps = berth(&["ps", "-a", "--filter", &format!("name={n}")]).ok("ps").stdout;
    assert!(ps.contains("Exited (255)"), "{ps}");
    berth(&["rm", &n]).ok("rm");
}

/// A foreground `berth run` killed while its container runs: the container goes on (its
/// monitor holds its output), and finishes with its log and exit code recorded.
pub fn foreground_cli_killed_container_goes_on() {
    let (n, _c) = named("fgkill");
    let p = spawn(
        &mut berth_cmd(
            &suite().root,
            &["run", "--name", &n, IMAGE, "sh", "-c", "echo begun; sleep 1; echo finished; exit 7"],
        ),
        None,
    );
    wait_until("the container's start", Duration::from_secs(20), || berth(&["logs", &n]).stdout.contains("begun"));
    // SAFETY: the berth process this test spawned, by pid.
    unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
    assert_eq!(p.wait(Duration::from_secs(10)).code, 137);
    assert_eq!(inspect(&n)["State"]["Status"], "running");
    assert_eq!(berth(&["wait", &n]).ok("wait").line(), "7");
    assert_eq!(berth(&["logs", &n]).ok("logs").stdout, "begun\nfinished\n");
}

pub fn monitor_killed_under_a_running_container() {
    let n = name("monkill");
    let m = name("monkill2");
    let _c = Cleanup(vec![n.clone(), m.clone()]);
    berth(&["run", "-d", "--name", &n, IMAGE, "sleep", "600"]).ok("run");
    let v = inspect(&n);
    let (mon, pid) = (v["State"]["MonitorPid"].as_i64().unwrap() as i32, v["State"]["Pid"].as_i64().unwrap() as i32);
    // SAFETY: the monitor this test's container got, by pid.
    unsafe { libc::kill(mon, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(100));
    // The container survives its monitor and is still found.
    assert_eq!(inspect(&n)["State"]["Status"], "running");
    berth(&["stop", "-t", "1", &n]).ok("stop unmonitored");
    let v = inspect(&n);
    assert_eq!(v["State"]["Status"], "exited");
    assert!(v["State"]["Error"].as_str().unwrap().contains("monitor died"), "{v}");
    // No one saw the exit: its status is unknown, never a made-up 255 that reads as a real one.
    assert_eq!(v["State"]["ExitCode"], -1, "{v}");
    let ps = berth(&["ps", "-a", "--filter", &format!("name={n}")]).ok("ps").stdout;
    assert!(ps.contains("Exited (unknown)"), "{ps}");
    assert_eq!(berth(&["wait", &n]).ok("wait").stdout.trim(), "-1");
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).map(|_| false).unwrap_or(true) || {
            let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            st.contains(") Z")
        }
    );
    let id = v["Id"].as_str().unwrap().to_string();
    berth(&["rm", &n]).ok("rm");
    no_leftovers_of(&id);
    // Monitor and container both killed: the next `ps` finds it dead and releases its
    // network namespace, mounts and cgroups without being asked.
    berth(&["run", "-d", "--name", &m, "-p", "80", IMAGE, "sleep", "600"]).ok("run");
    let v = inspect(&m);
    let id = v["Id"].as_str().unwrap().to_string();
    let ip = v["NetworkSettings"]["IPAddress"].as_str().unwrap().to_string();
    assert!(!crate::net::iptables_mentions(&ip).is_empty(), "bridge and portmap rules for {ip}");
    assert!(!crate::net::iptables_mentions(&id).is_empty(), "rules naming {id}");
    unsafe {
        libc::kill(v["State"]["MonitorPid"].as_i64().unwrap() as i32, libc::SIGKILL);
        libc::kill(v["State"]["Pid"].as_i64().unwrap() as i32, libc::SIGKILL);
    }
    wait_until("the container's death", Duration::from_secs(10), || inspect(&m)["State"]["Status"] == "exited");
    cleaned_by_ps(&id);
    assert!(!std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&id), "stale mounts cleaned");
    assert!(!container_cgroup("memory", &id).exists(), "stale cgroup cleaned");
    let left = crate::net::iptables_mentions(&ip);
    assert!(left.is_empty(), "CNI DEL on recovery: rules for {ip} left: {left:?}");
    berth(&["rm", &m]).ok("rm");
    no_leftovers_of(&id);
}

pub fn concurrent_invocations() {
    let clash = name("race");
    let mut names: Vec<String> = (0..4).map(|i| name(&format!("par{i}"))).collect();
    let mut procs = Vec::new();
    for n in &names {
        procs.push((
            n.clone(),
            spawn(&mut berth_cmd(&suite().root, &["run", "-d", "--name", n, IMAGE, "sleep", "600"]), None),
        ));
    }
    for _ in 0..3 {
        procs.push((
            clash.clone(),
            spawn(&mut berth_cmd(&suite().root, &["run", "-d", "--name", &clash, IMAGE, "sleep", "600"]), None),
        ));
    }
    names.push(clash.clone());
    let _c = Cleanup(names.clone());
    let mut clash_ok = 0;
    for (n, p) in procs {
        let o = p.wait(Duration::from_secs(120));
        if n == clash {
            if o.code == 0 {
                clash_ok += 1;
            } else {
                assert!(o.stderr.contains("already in use"), "{o:?}");
            }
        } else {
            assert_eq!(o.code, 0, "{n}: {o:?}");
        }
    }
    assert_eq!(clash_ok, 1, "exactly one container gets the name");
    let ps = berth(&["ps", "-q", "--filter", &format!("name=t{}-", std::process::id())]).ok("ps").stdout;
    assert!(ps.lines().count() >= 5, "{ps}");
    let mut rms = Vec::new();
    for n in &names {
        rms.push(spawn(&mut berth_cmd(&suite().root, &["rm", "-f", n]), None));
    }
    for r in rms {
        r.wait(Duration::from_secs(120)).ok("concurrent rm -f");
    }
}

pub fn system_prune_in_its_own_root() {
    let root = suite().dir.join("prune-root");
    import_images(&root);
    let ok = |args: &[&str]| berth_in(&root, args).ok(&args.join(" "));
    ok(&["run", "--name", "p1", IMAGE, "true"]);
    ok(&["create", "--name", "p2", "-v", "pv:/v", IMAGE, "true"]);
    ok(&["run", "-d", "--name", "p3", IMAGE, "sleep", "600"]);
    let pid = std::process::id();
    ok(&["network", "create", "--bridge", &format!("tpb{}", pid % 1_000_000), &format!("tp{pid}")]);
    let o = ok(&["system", "prune", "--volumes"]).stdout;
    assert!(
        o.contains("Deleted containers: 2") && o.contains(&format!("tp{pid}")) && o.contains("Deleted volumes: 1"),
        "{o}"
    );
    let ps = ok(&["ps", "-a", "--format", "json"]).stdout;
    assert!(ps.contains("p3") && !ps.contains("\"p1\""), "{ps}");
    ok(&["rm", "-f", "p3"]);
    ok(&["rmi", IMAGE]);
    ok(&["rmi", APP]);
    ok(&["rmi", ENTRY]);
    let _ = berth_in(&root, &["network", "rm", &suite().network]);
}
