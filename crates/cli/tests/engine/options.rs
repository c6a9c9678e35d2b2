//! `run` options and docker's defaults: the image's config, /etc files, capabilities,
//! masked paths, /dev/shm, read-only root, tmpfs, volumes, resources, OOM, seccomp, cp; and
//! bad input that must fail clearly and leave nothing behind.

use std::time::Duration;

use crate::support::*;

fn out(args: &[&str]) -> String {
    berth(args).ok(&args.join(" ")).stdout
}

pub fn image_config_is_honoured() {
    let o = out(&["run", "--rm", APP, "sh", "-c", "echo $APP_MODE; pwd; id -u"]);
    assert_eq!(o, "test\n/var/www\n0\n");
    let env = suite().dir.join("envfile");
    std::fs::write(&env, "# comment\nFROM_FILE=yes\nAPP_MODE=file\n").unwrap();
    let o = out(&[
        "run",
        "--rm",
        "--env-file",
        env.to_str().unwrap(),
        "-e",
        "APP_MODE=cli",
        "-w",
        "/tmp",
        "-u",
        "user",
        APP,
        "sh",
        "-c",
        "echo $FROM_FILE $APP_MODE; pwd; id -u; id -g",
    ]);
    assert_eq!(o, "yes cli\n/tmp\n1000\n1000\n");
    assert_eq!(out(&["run", "--rm", "-u", "1000:10", IMAGE, "id", "-G"]).trim(), "10");
    assert_eq!(out(&["run", "--rm", "--entrypoint", "echo", APP, "a", "b"]), "a b\n");
    // The image's Entrypoint, Cmd and User.
    assert_eq!(out(&["run", "--rm", ENTRY]), "from-entrypoint default-arg\n");
    assert_eq!(out(&["run", "--rm", ENTRY, "x", "y"]), "from-entrypoint x y\n");
    assert_eq!(out(&["run", "--rm", "--entrypoint", "id", ENTRY, "-u"]), "1000\n");
    assert_eq!(out(&["run", "--rm", "-u", "0", "--entrypoint", "", ENTRY, "id", "-u"]), "0\n");
    let v = {
        let (n, _c) = named("cfg");
        berth(&["create", "--name", &n, APP]).ok("create app");
        inspect(&n)
    };
    assert_eq!(v["Path"], "httpd");
    assert_eq!(v["Config"]["StopSignal"], 10);
    assert!(berth(&["run", "--rm", IMAGE]).failed("no command").stderr.contains("neither Entrypoint nor Cmd"));
    assert!(berth(&["run", "--rm", "-u", "nobody-here", IMAGE, "true"])
        .failed("bad user")
        .stderr
        .contains("nobody-here"));
}

pub fn etc_files_and_security_defaults() {
    let (n, _c) = named("etc");
    let script = "hostname; grep db /etc/hosts; grep nameserver /etc/resolv.conf; df -k /dev/shm | tail -1; wc -c < /proc/keys; \
                  grep -E 'CapEff|NoNewPrivs' /proc/self/status; echo 1 > /proc/sys/kernel/domainname && echo writable || echo proc-sys-ro";
    let o = berth(&[
        "run",
        "--name",
        &n,
        "--hostname",
        "web1",
        "--add-host",
        "db:10.1.2.3",
        "--dns",
        "10.9.9.9",
        IMAGE,
        "sh",
        "-c",
        script,
    ])
    .ok("run");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], "web1");
    assert_eq!(lines[1], "10.1.2.3\tdb");
    assert_eq!(lines[2], "nameserver 10.9.9.9");
    assert!(lines[3].split_whitespace().nth(1) == Some("65536"), "/dev/shm is 64 MiB: {}", lines[3]);
    assert_eq!(lines[4].trim(), "0", "/proc/keys is masked");
    assert_eq!(lines[5], "CapEff:\t00000000a80425fb", "docker's default capabilities");
    assert_eq!(lines[6], "NoNewPrivs:\t0");
    assert_eq!(lines[7], "proc-sys-ro");
    let o = out(&[
        "run",
        "--rm",
        "--cap-drop",
        "chown",
        "--cap-add",
        "NET_ADMIN",
        "--security-opt",
        "no-new-privileges",
        IMAGE,
        "grep",
        "-E",
        "CapEff|NoNewPrivs",
        "/proc/self/status",
    ]);
    assert_eq!(o, "CapEff:\t00000000a80435fa\nNoNewPrivs:\t1\n");
    let o =
        out(&["run", "--rm", "--privileged", IMAGE, "sh", "-c", "grep CapEff /proc/self/status; wc -c < /proc/keys"]);
    assert!(
        !o.contains("a80425fb") && !o.lines().nth(1).unwrap().trim().eq("0"),
        "privileged: all caps, nothing masked: {o}"
    );
    let id = inspect(&n)["Id"].as_str().unwrap().to_string();
    assert_eq!(out(&["run", "--rm", IMAGE, "hostname"]).trim().len(), 12);
    let _ = id;
}

pub fn read_only_tmpfs_and_volumes() {
    let o = out(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/run:size=1m",
        IMAGE,
        "sh",
        "-c",
        "touch /x 2>/dev/null && echo rootfs-rw; touch /run/y && echo tmpfs-rw; grep ' /run ' /proc/mounts",
    ]);
    assert!(o.starts_with("tmpfs-rw\n") && o.contains("size=1024k") && o.contains("noexec"), "{o}");
    // Named volume: created on first use, shared, kept.
    let vol = format!("v{}", std::process::id());
    out(&["run", "--rm", "-v", &format!("{vol}:/v"), IMAGE, "sh", "-c", "echo persisted > /v/file"]);
    assert_eq!(
        out(&[
            "run",
            "--rm",
            "-v",
            &format!("{vol}:/v:ro"),
            IMAGE,
            "sh",
            "-c",
            "cat /v/file; touch /v/x 2>/dev/null || echo ro"
        ]),
        "persisted\nro\n"
    );
    let vi: serde_json::Value = serde_json::from_str(&out(&["volume", "inspect", &vol])).unwrap();
    assert_eq!(vi[0]["Name"], vol.as_str());
    assert!(out(&["volume", "ls", "-q"]).lines().any(|l| l == vol));
    // Bind mount of a host directory, read-only.
    let host = suite().dir.join("bind");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("h"), "host file\n").unwrap();
    let spec = format!("{}:/h:ro", host.display());
    assert_eq!(
        out(&["run", "--rm", "-v", &spec, IMAGE, "sh", "-c", "cat /h/h; touch /h/n 2>/dev/null || echo ro"]),
        "host file\nro\n"
    );
    // The image's VOLUME /data: an anonymous volume filled from the image; rm -v removes it.
    let (n, _c) = named("anon");
    berth(&["create", "--name", &n, "-v", &format!("{vol}:/v"), APP, "cat", "/data/seed"]).ok("create");
    let anon = inspect(&n)["Mounts"].as_array().unwrap().iter().find(|m| m["Destination"] == "/data").unwrap()["Name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(berth(&["start", "-a", &n]).ok("start").stdout, "from the image\n");
    let o = berth(&["volume", "rm", &vol]).failed("volume in use");
    assert!(o.stderr.contains("in use"), "{o:?}");
    berth(&["rm", "-v", &n]).ok("rm -v");
    assert!(berth(&["volume", "inspect", &anon]).failed("anonymous volume removed").stderr.contains("no such volume"));
    berth(&["volume", "create", &format!("{vol}-2")]).ok("volume create");
    assert!(berth(&["volume", "create", &format!("{vol}-2")]).failed("exists").stderr.contains("already exists"));
    berth(&["volume", "create", &format!("{vol}-3")]).ok("volume create");
    assert_eq!(out(&["volume", "rm", &format!("{vol}-3")]), format!("{vol}-3\n"));
    assert!(berth(&["volume", "inspect", &format!("{vol}-3")]).failed("removed").stderr.contains("no such volume"));
    let pruned = out(&["volume", "prune", "-f"]);
    assert!(pruned.contains(&vol) && pruned.contains(&format!("{vol}-2")), "{pruned}");
}

pub fn resources_and_oom() {
    let (n, _c) = named("res");
    berth(&[
        "run",
        "-d",
        "--name",
        &n,
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "20",
        IMAGE,
        "sleep",
        "600",
    ])
    .ok("run");
    let id = inspect(&n)["Id"].as_str().unwrap().to_string();
    let read =
        |h: &str, f: &str| std::fs::read_to_string(container_cgroup(h, &id).join(f)).map(|s| s.trim().to_string());
    if is_cgroup2() {
        assert_eq!(read("", "memory.max").unwrap(), "67108864");
        assert_eq!(read("", "cpu.max").unwrap(), "50000 100000");
    } else {
        assert_eq!(read("memory", "memory.limit_in_bytes").unwrap(), "67108864");
        let quota = read("cpu", "cpu.cfs_quota_us").or_else(|_| read("cpu,cpuacct", "cpu.cfs_quota_us"));
        assert_eq!(quota.unwrap(), "50000");
    }
    assert_eq!(read("pids", "pids.max").unwrap(), "20");
    // docker's default swap limit: as much swap as memory, where the kernel accounts swap.
    let (memsw, swap_max) = (read("memory", "memory.memsw.limit_in_bytes"), read("", "memory.swap.max"));
    match (is_cgroup2(), memsw, swap_max) {
        (false, Ok(v), _) => assert_eq!(v, "134217728"),
        (true, _, Ok(v)) => assert_eq!(v, "67108864"),
        _ => {} // no swap accounting on this host: no swap limit can be set
    }
    berth(&["rm", "-f", &n]).ok("rm");
    assert!(!container_cgroup("memory", &id).exists(), "the cgroup goes with the container");
    let o = berth(&["run", "--name", &n, "--memory", "16m", IMAGE, "tail", "/dev/zero"]);
    assert_eq!(o.code, 137, "{o:?}");
    assert_eq!(inspect(&n)["State"]["OOMKilled"], true);
}

pub fn seccomp_profiles() {
    let probe = "unshare -U true 2>/dev/null && echo allowed || echo blocked; grep '^Seccomp:' /proc/self/status";
    let profile = suite().dir.join("no-mkdir.json");
    std::fs::write(&profile, r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#).unwrap();
    let sec = format!("seccomp={}", profile.display());
    for rt in ["berth-oci", "runc", "crun"] {
        // The default profile: unshare is refused (no CAP_SYS_ADMIN), the filter is on.
        assert_eq!(out(&["run", "--rm", "--runtime", rt, IMAGE, "sh", "-c", probe]), "blocked\nSeccomp:\t2\n", "{rt}");
        assert_eq!(
            out(&["run", "--rm", "--runtime", rt, "--security-opt", "seccomp=unconfined", IMAGE, "sh", "-c", probe]),
            "allowed\nSeccomp:\t0\n",
            "{rt}"
        );
        assert_eq!(
            out(&[
                "run",
                "--rm",
                "--runtime",
                rt,
                "--security-opt",
                &sec,
                IMAGE,
                "sh",
                "-c",
                "mkdir /tmp/x 2>/dev/null || echo denied"
            ]),
            "denied\n",
            "{rt}"
        );
    }
    // A runtime that cannot apply seccomp (the suite's "limited" handler): a warning for the
    // default profile, an error for an explicit one.
    let o = berth(&["run", "--rm", "--runtime", "limited", IMAGE, "true"]).ok("limited default");
    assert!(o.stderr.contains("does not support seccomp yet"), "{o:?}");
    let o = berth(&["run", "--rm", "--runtime", "limited", "--security-opt", &sec, IMAGE, "true"])
        .failed("limited profile");
    assert!(o.stderr.contains("cannot apply seccomp profiles"), "{o:?}");
    let o = berth(&["run", "--rm", "--security-opt", "seccomp=/no/such.json", IMAGE, "true"]).failed("missing profile");
    assert!(o.stderr.contains("/no/such.json"), "{o:?}");
    assert!(berth(&["run", "--rm", "--security-opt", "label=x", IMAGE, "true"])
        .failed("unknown opt")
        .stderr
        .contains("--security-opt"));
}

pub fn cp_both_ways_inside_the_root() {
    let (n, _c) = named("cp");
    berth(&[
        "run",
        "-d",
        "--name",
        &n,
        IMAGE,
        "sh",
        "-c",
        "ln -s / /escape; ln -s /etc /etclink; mkdir -p /d/sub; echo deep > /d/sub/f; sleep 600",
    ])
    .ok("run");
    wait_until("setup", Duration::from_secs(10), || {
        let t = suite().dir.join("probe");
        let _ = std::fs::remove_file(&t);
        berth(&["cp", &format!("{n}:/d/sub/f"), t.to_str().unwrap()]).code == 0
    });
    let dir = suite().dir.join("cp-out");
    let _ = std::fs::remove_dir_all(&dir);
    berth(&["cp", &format!("{n}:/d"), dir.to_str().unwrap()]).ok("cp dir out");
    assert_eq!(std::fs::read_to_string(dir.join("sub/f")).unwrap(), "deep\n");
    // Through the container's absolute symlink to /: the container's file, not the host's.
    let hn = suite().dir.join("escape-out");
    berth(&["cp", &format!("{n}:/escape/d/sub/f"), hn.to_str().unwrap()]).ok("cp through symlink");
    assert_eq!(std::fs::read_to_string(&hn).unwrap(), "deep\n");
    let o = berth(&["cp", &format!("{n}:/escape{}", suite().config.display()), hn.to_str().unwrap()])
        .failed("host path through the symlink");
    assert!(o.stderr.contains("No such file"), "{o:?}");
    // Into the container through its symlink to /etc: lands in the container's /etc.
    let src = suite().dir.join("in.txt");
    std::fs::write(&src, "copied in\n").unwrap();
    let marker = format!("berth-cp-test-{}", std::process::id());
    berth(&["cp", src.to_str().unwrap(), &format!("{n}:/etclink/{marker}")]).ok("cp in");
    assert!(!std::path::Path::new("/etc").join(&marker).exists(), "cp wrote to the host's /etc");
    let back = suite().dir.join("back.txt");
    berth(&["cp", &format!("{n}:/etc/{marker}"), back.to_str().unwrap()]).ok("cp back");
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");
    // A stopped container too.
    berth(&["stop", "-t", "0", &n]).ok("stop");
    berth(&["cp", src.to_str().unwrap(), &format!("{n}:/tmp/")]).ok("cp into stopped");
    let o = berth(&["cp", &format!("{n}:/nonexistent"), back.to_str().unwrap()]).failed("cp missing");
    assert!(o.stderr.contains("nonexistent"), "{o:?}");
    assert!(berth(&["cp", "a", "b"]).failed("no container").stderr.contains("CONTAINER:PATH"));
}

/// Every bad input fails with a message naming the problem and leaves nothing behind.
pub fn bad_input_fails_clearly_and_leaves_nothing() {
    // A root of its own: what is left in it is exactly what these commands left.
    let root = suite().dir.join("bad-input-root");
    import_images(&root);
    let berth = |args: &[&str]| berth_in(&root, args);
    let snaps = || std::fs::read_dir(root.join("snapshots")).map(|d| d.count()).unwrap_or(0);
    let vols = || berth(&["volume", "ls", "-q"]).stdout;
    let (s0, v0) = (snaps(), vols());
    let n = name("bad");
    let clash = name("clash");
    berth(&["create", "--name", &clash, IMAGE, "true"]).ok("create");
    let missing = suite().dir.join("no-such-dir");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--pull=never".into(), "no-such-image:1".into(), "true".into()],
            "not found in the store (pull, load or import it first)",
        ),
        // Pulled when missing: a registry that is not there fails the run clearly.
        (vec!["127.0.0.1:1/none/image:1".into(), "true".into()], "pull 127.0.0.1:1/none/image:1"),
        (vec!["--pull=sometimes".into(), IMAGE.into(), "true".into()], "--pull=sometimes"),
        (vec!["-p".into(), "80x:80".into(), IMAGE.into(), "true".into()], "port spec \"80x:80\""),
        (vec!["-p".into(), "8080:80/sctp".into(), IMAGE.into(), "true".into()], "sctp"),
        (vec!["--name".into(), clash.clone(), IMAGE.into(), "true".into()], "already in use"),
        (vec!["-v".into(), format!("{}:/x", missing.display()), IMAGE.into(), "true".into()], "does not exist"),
        (vec!["--memory".into(), "lots".into(), IMAGE.into(), "true".into()], "invalid memory value \"lots\""),
        (vec!["--memory".into(), "1k".into(), IMAGE.into(), "true".into()], "too small"),
        (vec!["--cpus".into(), "1000".into(), IMAGE.into(), "true".into()], "--cpus"),
        (vec!["--cap-add".into(), "FLY".into(), IMAGE.into(), "true".into()], "unknown capability"),
        (vec!["--network".into(), "no-such-net".into(), IMAGE.into(), "true".into()], "no such network"),
        (
            vec!["--network".into(), "none".into(), "-p".into(), "80".into(), IMAGE.into(), "true".into()],
            "cannot be published",
        ),
        (vec!["--add-host".into(), "db".into(), IMAGE.into(), "true".into()], "--add-host"),
        (vec!["--tmpfs".into(), "relative".into(), IMAGE.into(), "true".into()], "not absolute"),
        (vec!["-v".into(), "vol:/a:zz".into(), IMAGE.into(), "true".into()], "unknown option"),
        (vec!["--stop-signal".into(), "SIGNOPE".into(), IMAGE.into(), "true".into()], "unknown signal"),
        (vec!["-w".into(), "relative/dir".into(), IMAGE.into(), "true".into()], "not an absolute path"),
        (vec!["--bogus".into(), IMAGE.into(), "true".into()], "unknown option \"--bogus\""),
    ];
    for (args, want) in cases {
        let mut full = vec!["run".to_string(), "--rm".into(), "--name".into(), n.clone()];
        if args.first().map(String::as_str) == Some("--name") {
            full.truncate(2);
        }
        full.extend(args);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let o = berth(&refs);
        assert!(o.code != 0 && o.stderr.contains(want), "berth {full:?}: expected an error with {want:?}, got {o:?}");
        assert!(berth(&["inspect", &n]).code != 0, "{full:?} left a container");
    }
    assert_eq!(snaps(), s0 + 1, "only the clash test's container has a snapshot");
    assert_eq!(vols(), v0, "no volume left behind");
    assert!(berth(&["logs", "--since", "yesterday-ish", &clash]).failed("bad since").stderr.contains("--since"));
    assert!(berth(&["ps", "--filter", "colour=red"]).failed("bad filter").stderr.contains("unknown key"));
    berth(&["rm", &clash]).ok("rm");
    assert_eq!(snaps(), 0);
    assert_eq!(berth(&["ps", "-a", "-q"]).stdout, "");
    for img in [IMAGE, APP, ENTRY] {
        berth(&["rmi", img]).ok("rmi");
    }
    let _ = berth(&["network", "rm", &suite().network]);
}
