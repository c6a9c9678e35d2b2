//! docker's everyday commands beyond run and ps: pause/unpause, rename, update, diff, commit,
//! export, history, version.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// The counter file a paused container's loop stops writing, read from the host side.
fn count(name: &str, dir: &std::path::Path) -> String {
    let out = dir.join("count");
    let _ = std::fs::remove_file(&out);
    berth(&["cp", &format!("{name}:/tmp/count"), out.to_str().unwrap()]).ok("cp the counter out");
    std::fs::read_to_string(&out).unwrap().trim().to_string()
}

pub fn pause_rename_and_update() {
    let (n, mut cleanup) = named("pause");
    let dir = suite().dir.join("pause-test");
    std::fs::create_dir_all(&dir).unwrap();
    let script = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done";
    berth(&["run", "-d", "--name", &n, IMAGE, "sh", "-c", script]).ok("run");
    wait_until("the counter", Duration::from_secs(30), || {
        berth(&["cp", &format!("{n}:/tmp/count"), dir.join("count").to_str().unwrap()]).code == 0
    });
    berth(&["pause", &n]).ok("pause");
    let state = &inspect(&n)["State"];
    assert_eq!(
        (state["Status"].as_str(), state["Paused"].as_bool(), state["Running"].as_bool()),
        (Some("paused"), Some(true), Some(true))
    );
    assert!(berth(&["ps"]).ok("ps").stdout.lines().any(|l| l.contains(&n) && l.contains("(Paused)")));
    let frozen = count(&n, &dir);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(count(&n, &dir), frozen, "a paused container's processes do not run");
    assert!(berth(&["pause", &n]).failed("pause twice").stderr.contains("already paused"));
    berth(&["unpause", &n]).ok("unpause");
    wait_until("the counter to move again", Duration::from_secs(30), || count(&n, &dir) != frozen);
    assert!(berth(&["unpause", &n]).failed("unpause a running one").stderr.contains("not paused"));

    // rename
    let renamed = format!("{n}-renamed");
    cleanup.0.push(renamed.clone());
    berth(&["rename", &n, &renamed]).ok("rename");
    assert!(berth(&["inspect", &n]).failed("the old name").stderr.contains("no such container"));
    assert_eq!(inspect(&renamed)["Name"], renamed.as_str());
    let (other, _c2) = named("pause-other");
    berth(&["create", "--name", &other, IMAGE, "true"]).ok("create another");
    assert!(berth(&["rename", &renamed, &other]).failed("a taken name").stderr.contains("already in use"));
    assert!(berth(&["rename", &renamed, "bad/name"]).failed("a bad name").stderr.contains("name \"bad/name\""));

    // update: the cgroup and the record.
    berth(&["update", "--memory", "64m", "--pids-limit", "50", "--restart", "on-failure:3", &renamed]).ok("update");
    let c = inspect(&renamed);
    let id = c["Id"].as_str().unwrap().to_string();
    let read =
        |h: &str, f: &str| std::fs::read_to_string(container_cgroup(h, &id).join(f)).map(|s| s.trim().to_string());
    if is_cgroup2() {
        assert_eq!(read("", "memory.max").unwrap(), "67108864");
        assert_eq!(read("", "pids.max").unwrap(), "50");
    } else {
        assert_eq!(read("memory", "memory.limit_in_bytes").unwrap(), "67108864");
        assert_eq!(read("pids", "pids.max").unwrap(), "50");
    }
    assert!(berth(&["update", &renamed]).failed("nothing to update").stderr.contains("nothing to change"));

    // A paused container is thawed by kill, and dies.
    berth(&["pause", &renamed]).ok("pause again");
    berth(&["kill", &renamed]).ok("kill a paused container");
    wait_until("the killed container to exit", Duration::from_secs(30), || {
        inspect(&renamed)["State"]["Status"] == "exited"
    });
    assert_eq!(inspect(&renamed)["State"]["Paused"], false);
}

pub fn diff_commit_export_history_version() {
    let (n, _c) = named("commit");
    let script = "echo new > /tmp/new && rm /bin/arch && mkdir /newdir && echo changed >> /etc/profile";
    berth(&["run", "--name", &n, "-e", "FROM_RUN=1", IMAGE, "sh", "-c", script]).ok("run");
    let diff = berth(&["diff", &n]).ok("diff").stdout;
    let lines: Vec<&str> = diff.lines().collect();
    for want in ["C /bin", "D /bin/arch", "A /newdir", "C /tmp", "A /tmp/new"] {
        assert!(lines.contains(&want), "{want:?} in {diff}");
    }
    assert!(
        !lines.iter().any(|l| l.ends_with("/etc/hosts") || l.ends_with("/proc")),
        "mount targets are no change: {diff}"
    );

    // commit: the changes as a layer, the container's settings and the --change ones.
    let image = format!("localhost/committed-{}:1", std::process::id());
    let o = berth(&[
        "commit",
        "-m",
        "the snapshot",
        "-a",
        "Someone <someone@example.com>",
        "-c",
        "CMD [\"cat\", \"/tmp/new\"]",
        "-c",
        "ENV COMMITTED=yes",
        "-c",
        "EXPOSE 7070",
        &n,
        &image,
    ])
    .ok("commit");
    assert!(o.stdout.trim().starts_with("sha256:"), "{}", o.stdout);
    let _rmi = RemoveImage(image.clone());
    assert_eq!(berth(&["run", "--rm", &image]).ok("run the committed image").stdout, "new\n");
    let listing = berth(&["run", "--rm", &image, "sh", "-c", "ls /bin/arch /newdir 2>&1; echo $FROM_RUN $COMMITTED"])
        .ok("ls")
        .stdout;
    assert!(listing.contains("No such file") && listing.contains("1 yes"), "{listing}");
    let img: Value = serde_json::from_str(&berth(&["image", "inspect", &image]).ok("image inspect").stdout).unwrap();
    assert_eq!(img[0]["Config"]["ExposedPorts"], serde_json::json!({"7070/tcp": {}}));
    assert_eq!(img[0]["Author"], "Someone <someone@example.com>");
    let bad = berth(&["commit", "-c", "RUN true", &n]).failed("a RUN change");
    assert!(bad.stderr.contains("cannot be a change"), "{}", bad.stderr);

    // history, newest first.
    let history = berth(&["history", "--no-trunc", &image]).ok("history").stdout;
    let first = history.lines().nth(1).unwrap_or_default();
    assert!(first.contains(&format!("berth commit {n}")) && first.contains("the snapshot"), "{history}");
    let json: Value =
        serde_json::from_str(&berth(&["image", "history", "--format", "json", &image]).ok("history json").stdout)
            .unwrap();
    assert_eq!(json[0]["Comment"], "the snapshot");

    // export: the whole root filesystem.
    let tar = suite().dir.join(format!("{n}.tar"));
    berth(&["export", "-o", tar.to_str().unwrap(), &n]).ok("export");
    let names = run(std::process::Command::new("tar").arg("-tf").arg(&tar)).ok("tar -t").stdout;
    assert!(names.lines().any(|l| l == "tmp/new") && names.lines().any(|l| l == "bin/busybox"), "{names}");
    assert!(!names.lines().any(|l| l == "bin/arch"), "a deleted file is not exported");

    let v = berth(&["version", "--format", "json"]).ok("version").stdout;
    let v: Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["Client"]["Version"], env!("CARGO_PKG_VERSION"));
}

struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = berth(&["rmi", &self.0]);
    }
}

pub fn events_are_logged_and_followed() {
    let (n, _c) = named("events");
    // Followed: what happens to one container from now on (the start given, so the watcher
    // sees it all however late it starts reading).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let since = format!("{:.3}", now - 1.0);
    let filter = format!("container={n}");
    let args = ["events", "--format", "json", "--since", since.as_str(), "--filter", filter.as_str()];
    let watcher = spawn(&mut berth_cmd(&suite().root, &args), None);
    berth(&["run", "--name", &n, IMAGE, "sh", "-c", "exit 3"]).code("run", 3);
    berth(&["rm", &n]).ok("rm");
    watcher.wait_for_stdout("\"destroy\"");
    // SAFETY: our own child, by pid.
    unsafe { libc::kill(watcher.pid as i32, libc::SIGTERM) };
    let out = watcher.wait(Duration::from_secs(30)).stdout;
    let events: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let actions: Vec<&str> = events.iter().map(|e| e["Action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["create", "start", "die", "destroy"], "{out}");
    assert_eq!(events[2]["Attributes"]["exitCode"], "3");
    assert!(events.iter().all(|e| e["Attributes"]["name"] == n.as_str() && e["Type"] == "container"));
    // Read back: a window of the past, filtered.
    let tag = format!("localhost/events-{}:1", std::process::id());
    berth(&["tag", IMAGE, &tag]).ok("tag");
    berth(&["rmi", &tag]).ok("rmi");
    let past = berth(&[
        "events",
        "--since",
        "5m",
        "--until",
        "0s",
        "--filter",
        "type=image",
        "--filter",
        &format!("image={tag}"),
    ])
    .ok("events in the past")
    .stdout;
    let lines: Vec<&str> = past.lines().collect();
    assert_eq!(lines.len(), 2, "{past}");
    assert!(lines[0].contains(" image tag ") && lines[1].contains(" image untag "), "{past}");
    assert!(berth(&["events", "--filter", "colour=red", "--until", "0s"])
        .failed("a bad filter")
        .stderr
        .contains("colour"));
}

/// Whether a health checker process of container `id` is running.
fn checker_running(id: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.windows(2).any(|w| w[0] == b"healthcheck-loop" && w[1] == id.as_bytes())
    })
}

pub fn health_checks_from_flags_and_images() {
    let (n, mut cleanup) = named("health");
    let flags = ["--health-cmd", "test -f /tmp/ok", "--health-interval", "1s", "--health-retries", "2"];
    let mut args = vec!["run", "-d", "--name", &n];
    args.extend_from_slice(&flags);
    args.extend_from_slice(&[IMAGE, "sleep", "600"]);
    berth(&args).ok("run with a health check");
    let status = |name: &str| {
        berth(&["ps", "-a"]).ok("ps").stdout.lines().find(|l| l.ends_with(name)).unwrap_or_default().to_string()
    };
    wait_until("unhealthy", Duration::from_secs(60), || status(&n).contains("(unhealthy)"));
    berth(&["exec", &n, "touch", "/tmp/ok"]).ok("make it healthy");
    wait_until("healthy", Duration::from_secs(60), || status(&n).contains("(healthy)"));
    let health = &inspect(&n)["State"]["Health"];
    assert_eq!(health["Status"], "healthy");
    assert_eq!(health["FailingStreak"], 0);
    assert!(health["Log"].as_array().unwrap().iter().any(|r| r["ExitCode"] == 1), "{health}");
    let o = berth(&["healthcheck", "run", &n]).ok("healthcheck run");
    assert_eq!(o.stdout, "healthy\n");
    let id = inspect(&n)["Id"].as_str().unwrap().to_string();
    assert!(checker_running(&id));
    berth(&["rm", "-f", &n]).ok("rm");
    wait_until("the checker to end with its container", Duration::from_secs(30), || !checker_running(&id));

    // An image's HEALTHCHECK, and --no-healthcheck.
    let ctx = suite().dir.join("health-image");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Containerfile"), format!("FROM {IMAGE}\nHEALTHCHECK --interval=1s CMD true\n")).unwrap();
    let image = format!("localhost/health-{}:1", std::process::id());
    berth(&["build", "-q", "-t", &image, ctx.to_str().unwrap()]).ok("build an image with a health check");
    let (m, _c2) = named("health-image");
    berth(&["run", "-d", "--name", &m, &image, "sleep", "600"]).ok("run it");
    wait_until("healthy from the image's check", Duration::from_secs(60), || status(&m).contains("(healthy)"));
    let (none, _c3) = named("health-none");
    berth(&["run", "-d", "--no-healthcheck", "--name", &none, &image, "sleep", "600"]).ok("run without");
    assert!(inspect(&none)["State"]["Health"].is_null());
    assert!(!status(&none).contains("(health"), "{}", status(&none));
    let bad = berth(&["run", "--rm", "--health-interval", "soon", "--health-cmd", "true", IMAGE, "true"])
        .failed("a bad interval");
    assert!(bad.stderr.contains("--health-interval \"soon\""), "{}", bad.stderr);
    cleanup.0.push(m.clone());
    for c in [&m, &none] {
        berth(&["rm", "-f", c]).ok("rm");
    }
    let _ = berth(&["rmi", &image]);
}
