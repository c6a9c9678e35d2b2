//! Bad input: a clear error that says what and where, and nothing left behind.

use serde_json::{json, Value};

use crate::support::*;

fn create_fails(c: &Ctr, what: &str) -> String {
    let out = c.create_raw().failed(what);
    c.assert_gone();
    out.stderr
}

pub fn malformed_config_names_the_json_path() {
    let c = Ctr::new("badjson", &["true"]);
    std::fs::create_dir_all(&c.bundle.dir).unwrap();
    std::fs::write(c.bundle.dir.join("config.json"), "{\"ociVersion\": \"1.0.0\",\n \"process\": {").unwrap();
    let out = c.oci(&["create", "--bundle", c.bundle.dir.to_str().unwrap(), &c.id]).failed("truncated JSON");
    assert_contains(&out.stderr, "config.json");
    assert_contains(&out.stderr, "line 2");
    c.assert_gone();

    let mut t = Ctr::new("badtype", &["true"]);
    t.config()["process"]["user"]["uid"] = json!("root");
    let err = create_fails(&t, "a string uid");
    assert_contains(&err, "process.user.uid");

    let mut n = Ctr::new("badns", &["true"]);
    n.config()["linux"]["namespaces"][1]["type"] = json!("nosuchns");
    let err = create_fails(&n, "an unknown namespace type");
    assert_contains(&err, "linux.namespaces[1].type");
    assert_contains(&err, "nosuchns");

    let mut v = Ctr::new("badversion", &["true"]);
    v.config()["ociVersion"] = json!("2.0.0");
    assert_contains(&create_fails(&v, "ociVersion 2"), "ociVersion");

    let mut a = Ctr::new("noargs", &[]);
    a.config()["process"]["args"] = json!([]);
    assert_contains(&create_fails(&a, "empty args"), "process.args");

    let mut m = Ctr::new("missingexe", &["/no/such/program"]);
    m.config()["process"]["args"] = json!(["/no/such/program"]);
    let err = create_fails(&m, "a missing program");
    assert_contains(&err, "/no/such/program");
    let mut p = Ctr::new("notinpath", &["no-such-tool"]);
    p.config()["process"]["args"] = json!(["no-such-tool"]);
    assert_contains(&create_fails(&p, "a program not in PATH"), "not found in $PATH");
}

pub fn missing_rootfs_and_relative_paths() {
    let mut r = Ctr::new("norootfs", &["true"]);
    r.config()["root"]["path"] = json!("does-not-exist");
    let err = create_fails(&r, "a missing rootfs");
    assert_contains(&err, "root.path");
    assert_contains(&err, "does-not-exist");

    let mut w = Ctr::new("relcwd", &["true"]);
    w.config()["process"]["cwd"] = json!("relative/dir");
    let err = create_fails(&w, "a relative cwd");
    assert_contains(&err, "process.cwd");
    assert_contains(&err, "not an absolute path");

    let mut n = Ctr::new("relnspath", &["true"]);
    n.config()["linux"]["namespaces"][1] = json!({"type": "network", "path": "proc/1/ns/net"});
    let err = create_fails(&n, "a relative namespace path");
    assert_contains(&err, "linux.namespaces[1].path");

    let mut d = Ctr::new("reldevice", &["true"]);
    d.config()["linux"]["devices"] = json!([{"path": "dev/fuse", "type": "c", "major": 10, "minor": 229}]);
    assert_contains(&create_fails(&d, "a relative device path"), "linux.devices[0].path");
}

pub fn bad_namespaces() {
    let mut d = Ctr::new("dupns", &["true"]);
    d.namespaces().push(json!({"type": "pid"}));
    let err = create_fails(&d, "a duplicate namespace");
    assert_contains(&err, "duplicate namespace 'pid'");

    let mut w = Ctr::new("wrongnstype", &["true"]);
    w.config()["linux"]["namespaces"][1] = json!({"type": "network", "path": "/proc/self/ns/uts"});
    let err = create_fails(&w, "a path of the wrong namespace type");
    assert_contains(&err, "is not a network namespace");

    let mut m = Ctr::new("missingns", &["true"]);
    m.config()["linux"]["namespaces"][1] = json!({"type": "network", "path": "/proc/999999999/ns/net"});
    assert_contains(&create_fails(&m, "a missing namespace file"), "/proc/999999999/ns/net");

    let mut u = Ctr::new("usernomaps", &["true"]);
    u.namespaces().push(json!({"type": "user"}));
    assert_contains(&create_fails(&u, "a user namespace without mappings"), "linux.uidMappings");

    let mut h = Ctr::new("hostnonouts", &["true"]);
    h.without_namespace("uts");
    h.config()["hostname"] = json!("x");
    assert_contains(&create_fails(&h, "a hostname without a uts namespace"), "uts namespace");

    let mut s = Ctr::new("hostsysctl", &["true"]);
    s.config()["linux"]["sysctl"] = json!({"vm.swappiness": "10"});
    assert_contains(&create_fails(&s, "a host sysctl"), "linux.sysctl.vm.swappiness");
}

pub fn container_ids() {
    let c = Ctr::new("ids", &["sleep", "1000"]);
    c.write_bundle();
    for bad in ["../escape", "a/b", "with space", ".."] {
        let out = c.oci(&["create", "--bundle", c.bundle.dir.to_str().unwrap(), bad]).failed("a bad id");
        assert_contains(&out.stderr, "invalid container id");
    }
    c.create();
    let out = c.create_raw().failed("a duplicate id");
    assert_contains(&out.stderr, "already exists");
    assert_eq!(c.status(), "created", "the existing container is untouched");
    c.delete();
    c.assert_gone();
}

pub fn unsupported_fields_are_named() {
    type Edit = fn(&mut Value);
    let cases: [(&str, &str, Edit); 2] = [
        ("unsupapparmor", "process.apparmorProfile", |c| c["process"]["apparmorProfile"] = json!("profile")),
        ("unsuprdt", "linux.intelRdt", |c| c["linux"]["intelRdt"] = json!({"closID": "x"})),
    ];
    for (name, field, edit) in cases {
        let mut c = Ctr::new(name, &["true"]);
        edit(c.config());
        let err = create_fails(&c, name);
        assert_contains(&err, field);
    }
}

pub fn mount_destination_escaping_the_rootfs() {
    // A relative symlink climbing out of the rootfs: refused, named.
    let mut c = Ctr::with_own_rootfs("escape", &["true"]);
    let outside = c.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(
        "../../../../../../../..".to_string() + outside.to_str().unwrap(),
        c.rootfs().join("evil"),
    )
    .unwrap();
    c.config()["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/evil/x", "type": "tmpfs", "source": "tmpfs"}));
    let err = create_fails(&c, "a destination escaping through a symlink");
    assert_contains(&err, "/evil/x");
    assert_contains(&err, "escape");
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "something was created outside the rootfs");

    // An absolute symlink means the container's own path: it stays inside the rootfs.
    let mut a = Ctr::with_own_rootfs("absolutelink", &["sh", "-c", "grep ' /hostetc/x ' /proc/self/mountinfo | wc -l"]);
    std::os::unix::fs::symlink(outside.to_str().unwrap(), a.rootfs().join("hostetc")).unwrap();
    a.config()["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/hostetc/x", "type": "tmpfs", "source": "tmpfs"}));
    let _ = a.run();
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "an absolute symlink led outside the rootfs");
    let inside = a.rootfs().join(outside.strip_prefix("/").unwrap()).join("x");
    assert!(inside.is_dir(), "the mount point was made inside the rootfs at {}", inside.display());
}

pub fn failed_creates_leave_nothing() {
    // Failures at different depths of create: a bad mount option (kernel refusal inside the
    // init), a cgroup write, a missing bind source, an unsupported rlimit.
    let mut opt = Ctr::new("failmountopt", &["true"]);
    opt.config()["mounts"][1]["options"].as_array_mut().unwrap().push(json!("nosuchoption=1"));
    let err = create_fails(&opt, "an unknown tmpfs option");
    assert_contains(&err, "mounts[1]");
    assert_contains(&err, "nosuchoption");

    let mut cg = Ctr::new("failcgroup", &["true"]);
    cg.config()["linux"]["resources"]["cpu"] = json!({"cpus": "64-65"});
    assert_contains(&create_fails(&cg, "a cpuset the host does not have"), "cpu.cpus");

    let mut src = Ctr::new("failbind", &["true"]);
    src.config()["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/data", "type": "bind", "source": "/no/such/source", "options": ["rbind"]}));
    assert_contains(&create_fails(&src, "a missing bind source"), "/no/such/source");

    let mut dev = Ctr::new("faildevice", &["true"]);
    dev.config()["linux"]["devices"] = json!([{"path": "/dev/null", "type": "c", "major": 1, "minor": 5}]);
    assert_contains(&create_fails(&dev, "a device clashing with an existing node"), "linux.devices[0]");
}

/// What this host cannot grant (it lacks CAP_SYS_RESOURCE) fails naming the field and why.
pub fn host_limits_fail_clearly() {
    let hard: u64 = read("/proc/self/limits").lines().find(|l| l.starts_with("Max open files")).unwrap()
        ["Max open files".len()..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap_or(u64::MAX);
    let has_sys_resource = {
        let status = read("/proc/self/status");
        let eff =
            status.lines().find(|l| l.starts_with("CapEff:")).unwrap().split_whitespace().nth(1).unwrap().to_string();
        u64::from_str_radix(&eff, 16).unwrap() & (1 << 24) != 0
    };
    let mut r = Ctr::new("rlimitabove", &["true"]);
    r.config()["process"]["rlimits"] =
        json!([{"type": "RLIMIT_NOFILE", "soft": hard.saturating_add(1000), "hard": hard.saturating_add(1000)}]);
    let out = r.create_raw();
    if has_sys_resource {
        out.ok("raising the hard limit with CAP_SYS_RESOURCE");
        r.delete();
    } else {
        let err = out.failed("raising the hard limit").stderr;
        assert_contains(&err, "process.rlimits[0]");
        assert_contains(&err, "CAP_SYS_RESOURCE");
        r.assert_gone();
    }
    let current: i32 = read("/proc/self/oom_score_adj").trim().parse().unwrap();
    let mut o = Ctr::new("oomlower", &["true"]);
    o.config()["process"]["oomScoreAdj"] = json!(current - 100);
    let out = o.create_raw();
    if has_sys_resource {
        out.ok("lowering oom_score_adj with CAP_SYS_RESOURCE");
        o.delete();
    } else {
        let err = out.failed("lowering oom_score_adj").stderr;
        assert_contains(&err, "process.oomScoreAdj");
        assert_contains(&err, "CAP_SYS_RESOURCE");
        o.assert_gone();
    }
}

/// uid/gid 4294967295 is -1 to setresuid/setresgid ("leave unchanged"): a process given it
/// would keep the runtime's root. Every process id field is range-checked, by name; id maps
/// have their own limit (a range may not go past the last id). NUL bytes would cut arguments
/// and environment entries short: refused, not emptied.
pub fn ids_out_of_range_and_nul_bytes_are_refused() {
    for (field, value, needle) in [
        ("uid", json!(4294967295u32), "process.user.uid: 4294967295 is out of range"),
        ("gid", json!(4294967295u32), "process.user.gid: 4294967295 is out of range"),
        ("additionalGids", json!([5, 2147483648u32]), "process.user.additionalGids[1]: 2147483648 is out of range"),
    ] {
        let mut c = Ctr::new(&format!("idrange{field}"), &["id"]);
        c.config()["process"]["user"]["uid"] = json!(1000);
        c.config()["process"]["user"]["gid"] = json!(1000);
        c.config()["process"]["user"][field] = value;
        assert_contains(&create_fails(&c, &format!("{field} out of range")), needle);
    }
    // The largest valid id still works.
    let mut ok = Ctr::new("idmax", &["sh", "-c", "echo $(id -u) $(id -g)"]);
    ok.config()["process"]["user"]["uid"] = json!(2147483647u32);
    ok.config()["process"]["user"]["gid"] = json!(2147483647u32);
    assert_eq!(ok.output().trim(), "2147483647 2147483647");

    let mut e = Ctr::new("envnul", &["true"]);
    e.config()["process"]["env"].as_array_mut().unwrap().push(json!("SECRET=x\u{0}y"));
    assert_contains(&create_fails(&e, "an environment entry with NUL"), "contains a NUL byte");
    let mut a = Ctr::new("argnul", &["true"]);
    a.config()["process"]["args"] = json!(["echo", "a\u{0}b"]);
    assert_contains(&create_fails(&a, "an argument with NUL"), "process.args[1]");

    let mut m = Ctr::new("mapwrap", &["true"]);
    m.namespaces().push(json!({"type": "user"}));
    m.config()["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 4294967295u32, "size": 1}]);
    m.config()["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    assert_contains(&create_fails(&m, "a mapping past the last id"), "linux.uidMappings[0]: hostID 4294967295");

    // exec: the same limits for --user and --additional-gids.
    let c = Ctr::new("idexec", &["sleep", "1000"]);
    c.create();
    c.start();
    let out = c.oci(&["exec", "--user", "4294967295", &c.id, "id", "-u"]).failed("exec as uid -1");
    assert_contains(&out.stderr, "4294967295 is out of range");
    let out = c.oci(&["exec", "--user", "1000:4294967295", &c.id, "id", "-g"]).failed("exec as gid -1");
    assert_contains(&out.stderr, "4294967295 is out of range");
    let out =
        c.oci(&["exec", "--additional-gids", "4294967295", &c.id, "id", "-G"]).failed("exec with a -1 extra group");
    assert_contains(&out.stderr, "4294967295 is out of range");
    c.delete();
    c.assert_gone();
}
