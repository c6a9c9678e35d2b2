//! Hostile input to the engine: image configs (every field is the image author's, not the
//! user's), out-of-range ids and resources, NUL bytes, and the store's privacy from other
//! local users. Each test makes the attack and checks the host is untouched.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::support::*;

/// Loads an image made of busybox (plus `extra`, if any) with `config`, tagged `tag`.
fn load_image(tag: &str, config: Value, extra: Option<berth_testkit::image::LayerBuilder>) {
    use berth_testkit::image::{busybox_layer, Compression, Layer, OciLayout};
    let dir = suite().dir.join(format!("layout-{}", tag.replace(['/', ':'], "_")));
    let bb = busybox_layer(&suite().dir).expect("busybox layer");
    let mut layers = vec![Layer { tar: bb, compression: Compression::Gzip }];
    if let Some(x) = extra {
        layers.push(Layer { tar: x.finish(), compression: Compression::Gzip });
    }
    let mut layout = OciLayout::create(&dir).unwrap();
    let img = layout.image(&layers, config, "amd64").unwrap();
    layout.tag(tag, &img.manifest_descriptor).unwrap();
    berth(&["load", "-q", "-i", dir.to_str().unwrap()]).ok("load the test image");
}

fn image_name(test: &str) -> String {
    format!("localhost/berth-test/{}-{test}:1", std::process::id())
}

/// Docker treats every key of the image's `Volumes` as a path in the container. Parsed as
/// `-v SOURCE:DEST`, a key bind-mounted a host directory read-write ("/:/host" would own the
/// host) or attached a named volume the container was never given.
pub fn image_volume_keys_are_container_paths_only() {
    let victim = suite().dir.join(format!("victim-{}", std::process::id()));
    std::fs::create_dir_all(&victim).unwrap();
    let vol = format!("relsecret{}", std::process::id());
    let v = berth(&["volume", "create", &vol]).ok("volume create");
    assert_eq!(v.line(), vol);
    let mountpoint = berth(&["volume", "inspect", &vol]).ok("volume inspect").stdout;
    let mountpoint: Value = serde_json::from_str(&mountpoint).unwrap();
    let data = PathBuf::from(mountpoint[0]["Mountpoint"].as_str().unwrap());
    std::fs::write(data.join("secret"), "s3cr3t\n").unwrap();
    let host_pwned = Path::new("/berth-test-pwned");
    let _ = std::fs::remove_file(host_pwned);

    let img = image_name("volkeys");
    load_image(
        &img,
        json!({
            "Cmd": ["sh", "-c", "touch /v/x /host/berth-test-pwned 2>/dev/null; cat /data/secret 2>/dev/null; \
                    ls -d \"$VICTIM:/v\" /:/host \"/$VOL:/data\" /relative; echo done"],
            "Env": [format!("VICTIM={}", victim.display()), format!("VOL={vol}")],
            "Volumes": {
                format!("{}:/v", victim.display()): {},
                "/:/host": {},
                format!("{vol}:/data"): {},
                "relative/": {}
            }
        }),
        None,
    );
    let (n, _c) = named("volkeys");
    let out = berth(&["run", "--name", &n, "--network", "none", &img]).ok("run the image").stdout;
    assert!(out.contains("done"), "{out}");
    assert!(!victim.join("x").exists(), "the image wrote into a host directory: {out}");
    assert!(!host_pwned.exists(), "the image wrote into the host's /");
    assert!(!out.contains("s3cr3t"), "the image attached the named volume {vol}: {out}");
    // Each key became an anonymous volume at that container path.
    for p in [format!("{}:/v", victim.display()), "/:/host".into(), format!("/{vol}:/data"), "/relative".into()] {
        assert!(out.contains(&p), "{p} missing in {out}");
    }
    let mounts = inspect(&n)["Mounts"].clone();
    for m in mounts.as_array().unwrap() {
        assert_eq!(m["Type"], "volume", "{mounts}");
        assert_ne!(m["Name"], vol.as_str(), "{mounts}");
    }
    assert!(berth(&["volume", "rm", &vol]).code == 0, "the named volume is in use by no container");
    berth(&["rm", "-v", &n]).ok("rm");

    // A key that is no path at all fails clearly, naming it.
    let bad = image_name("volkeydots");
    load_image(&bad, json!({"Cmd": ["true"], "Volumes": {"/a/../../etc": {}}}), None);
    let o = berth(&["run", "--rm", "--network", "none", &bad]).failed("a Volumes key with '..'");
    assert!(o.stderr.contains("image config Volumes key \"/a/../../etc\""), "{o:?}");
}

/// uid and gid 4294967295 are -1 to setresuid/setresgid: "leave unchanged", i.e. root.
pub fn process_ids_out_of_range_are_refused() {
    for (user, needle) in [
        ("4294967295", "uid 4294967295 is out of range"),
        ("1000:4294967295", "gid 4294967295 is out of range"),
        ("2147483648", "uid 2147483648 is out of range"),
    ] {
        let o = berth(&["run", "--rm", "--network", "none", "--user", user, IMAGE, "id"]).failed(user);
        assert!(o.stderr.contains(needle) && o.stderr.contains(&format!("user \"{user}\"")), "{user}: {o:?}");
        assert!(!o.stdout.contains("uid=0"), "ran as root: {o:?}");
    }
    // The same from an image: its User, a user its /etc/passwd gives an id out of range, and
    // a supplementary group its /etc/group gives one.
    let passwd: &[u8] =
        b"root:x:0:0:root:/root:/bin/sh\nevil:x:4294967295:1000::/:/bin/sh\nevil2:x:1000:1000::/:/bin/sh\n";
    for (test, user, needle) in [
        ("uid", "4294967295", "image config User \"4294967295\": uid 4294967295 is out of range"),
        ("passwd", "evil", "image config User \"evil\": uid 4294967295 is out of range"),
        ("group", "evil2", "supplementary gid (from the image's /etc/group) 4294967295 is out of range"),
    ] {
        let img = image_name(&format!("user{test}"));
        let mut layer = berth_testkit::image::LayerBuilder::new();
        layer.file("etc/passwd", 0o644, passwd).file("etc/group", 0o644, b"root:x:0:\nbad:x:4294967295:evil2\n");
        load_image(&img, json!({"Cmd": ["id"], "User": user}), Some(layer));
        let o = berth(&["run", "--rm", "--network", "none", &img]).failed(test);
        assert!(o.stderr.contains(needle), "{test}: {o:?}");
        assert!(!o.stdout.contains("uid=0"), "ran as root: {o:?}");
    }
    // exec -u is held to the same range.
    let (n, _c) = named("execuid");
    berth(&["run", "-d", "--name", &n, "--network", "none", IMAGE, "sleep", "600"]).ok("run");
    let o = berth(&["exec", "-u", "4294967295", &n, "id", "-u"]).failed("exec as uid -1");
    assert!(o.stderr.contains("uid 4294967295 is out of range"), "{o:?}");
}

/// A NUL byte would cut an environment entry short (it was silently emptied): refused,
/// naming the variable and the file's line.
pub fn nul_bytes_in_the_environment_are_refused() {
    let f = suite().dir.join(format!("env-nul-{}", std::process::id()));
    std::fs::write(&f, b"# comment\nGOOD=1\nDB_PASSWORD=x\0y\n").unwrap();
    let o = berth(&["run", "--rm", "--network", "none", "--env-file", f.to_str().unwrap(), IMAGE, "env"])
        .failed("an env file with NUL");
    assert!(o.stderr.contains(&format!("--env-file {}:3: variable DB_PASSWORD", f.display())), "{o:?}");
    assert!(o.stderr.contains("NUL"), "{o:?}");
    let img = image_name("envnul");
    load_image(&img, json!({"Cmd": ["env"], "Env": ["PATH=/bin", "TOKEN=a\u{0}b"]}), None);
    let o = berth(&["run", "--rm", "--network", "none", &img]).failed("an image Env with NUL");
    assert!(o.stderr.contains("image config Env[1]") && o.stderr.contains("NUL"), "{o:?}");
}

/// Labels are the image's; annotations steer runtimes (crun's `run.oci.*` opens host paths
/// for hook output, berth-oci's `org.berth.rootfs.idmap`). The image's labels never become
/// annotations; the user's `--label`s do.
pub fn image_labels_do_not_steer_the_runtime() {
    let img = image_name("labels");
    load_image(
        &img,
        json!({"Cmd": ["true"], "Labels": {"run.oci.hooks.stdout": "/tmp/owned", "org.berth.rootfs.idmap": "true"}}),
        None,
    );
    let (n, _c) = named("labels");
    berth(&["create", "--name", &n, "--network", "none", "--label", "mine=yes", &img]).ok("create");
    let id = inspect(&n)["Id"].as_str().unwrap().to_string();
    let spec: Value =
        serde_json::from_slice(&std::fs::read(suite().root.join("containers").join(&id).join("config.json")).unwrap())
            .unwrap();
    let ann = &spec["annotations"];
    assert_eq!(ann["mine"], "yes", "{ann}");
    assert!(ann.get("run.oci.hooks.stdout").is_none() && ann.get("org.berth.rootfs.idmap").is_none(), "{ann}");
}

/// The values the kernel cannot honour are refused by name (1e30 became "no limit"; a CPU
/// quota below the kernel's 1 ms minimum; a pids limit past PID_MAX_LIMIT).
pub fn resources_beyond_the_kernel_are_refused() {
    for (flag, value, needle) in [
        ("--memory", "1e30", "invalid memory value \"1e30\""),
        ("--memory", "9000p", "larger than the kernel can enforce"),
        ("--cpus", "0.0000001", "--cpus 0.0000001: must be from 0.01"),
        ("--pids-limit", "99999999", "--pids-limit 99999999: the kernel's limit is at most 4194304"),
    ] {
        let o = berth(&["run", "--rm", "--network", "none", flag, value, IMAGE, "true"]).failed(flag);
        assert!(o.stderr.contains(needle), "{flag} {value}: {o:?}");
    }
}

/// `exec -d` returns once the process runs, not when it ends: the process must not keep the
/// engine waiting on a pipe it inherited.
pub fn exec_detached_returns_while_the_process_runs() {
    let (n, _c) = named("execd");
    berth(&["run", "-d", "--name", &n, "--network", "none", IMAGE, "sleep", "600"]).ok("run");
    berth(&["exec", "-d", &n, "sleep", "3600"]).ok("exec -d");
    // It returned while the process still runs (it would only end after an hour).
    let ps = berth(&["exec", &n, "ps"]).ok("ps").stdout;
    assert!(ps.contains("sleep 3600"), "{ps}");
    let o = berth(&["exec", "-d", "-w", "/nonexistent", &n, "true"]).failed("exec -d with a bad cwd");
    assert!(o.stderr.contains("nonexistent"), "the runtime's own error is reported: {o:?}");
}

/// Whether user nobody can see `p` at all (every directory above it searchable).
fn nobody_can_stat(p: &Path) -> bool {
    let mut cmd = Command::new("stat");
    cmd.arg(p).uid(65534).gid(65534);
    run(&mut cmd).code == 0
}

/// Paths under `top` (not crossing into other filesystems: container root filesystems,
/// pinned namespaces) that a user other than root can reach and read or write.
fn exposed_paths(top: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(top).unwrap().dev();
    let mut out = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else { continue };
            let mode = m.permissions().mode();
            if m.file_type().is_symlink() {
                continue;
            }
            if mode & 0o066 != 0 && !m.file_type().is_socket() {
                out.push(format!("{} {:o}", e.path().display(), mode & 0o7777));
            }
            // Only what others can search into is walked further: the rest is unreachable.
            if m.is_dir() && m.dev() == dev && mode & 0o011 != 0 {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Bundles hold the environment (passwords), volumes hold setuid files an image brought or a
/// container wrote, logs hold the output: none of it may be reachable by other local users.
pub fn the_store_is_private_to_root() {
    let img = image_name("suidvol");
    let mut layer = berth_testkit::image::LayerBuilder::new();
    layer.dir("data/", 0o755).file("data/euid", 0o4755, b"#!/bin/sh\nid\n");
    load_image(&img, json!({"Cmd": ["sleep", "600"], "Volumes": {"/data": {}}}), Some(layer));
    let vol = format!("privvol{}", std::process::id());
    let (n, _c) = named("private");
    berth(&[
        "run",
        "-d",
        "--name",
        &n,
        "--network",
        "none",
        "-e",
        "DB_PASSWORD=hunter2",
        "-v",
        &format!("{vol}:/named"),
        &img,
    ])
    .ok("run");
    berth(&["exec", &n, "sh", "-c", "cp /bin/busybox /named/sh && chmod 4755 /named/sh && echo logged"]).ok("exec");
    berth(&["exec", "-d", &n, "sleep", "600"]).ok("exec -d");
    let _ = berth(&["logs", &n]).ok("logs");
    let v = inspect(&n);
    let id = v["Id"].as_str().unwrap().to_string();
    let root = &suite().root;
    let anon = v["Mounts"].as_array().unwrap().iter().find(|m| m["Destination"] == "/data").unwrap()["Source"]
        .as_str()
        .unwrap()
        .to_string();
    let named = v["Mounts"].as_array().unwrap().iter().find(|m| m["Destination"] == "/named").unwrap()["Source"]
        .as_str()
        .unwrap()
        .to_string();
    let targets = [
        root.join("containers").join(&id).join("config.json"),
        root.join("containers").join(&id).join("ctr.log"),
        PathBuf::from(&anon).join("euid"),
        PathBuf::from(&named).join("sh"),
        root.join("run/containers").join(&id),
        root.join("volumes").join(&vol),
    ];
    for t in &targets {
        assert!(t.exists(), "{} should exist", t.display());
        assert!(!nobody_can_stat(t), "user nobody reaches {}", t.display());
    }
    let exposed = exposed_paths(root);
    assert!(exposed.is_empty(), "readable or writable by other users: {exposed:#?}");
    let config = std::fs::metadata(&targets[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(config, 0o600, "config.json holds the environment");
    // A store made by an earlier version (world-readable directories) is corrected at open.
    let bundle = format!("containers/{id}");
    for d in ["containers", bundle.as_str(), "volumes", "run", "run/containers"] {
        std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&targets[0], std::fs::Permissions::from_mode(0o644)).unwrap();
    // (Any berth command of a test running beside this one may correct them first.)
    berth(&["ps"]).ok("ps");
    for t in &targets {
        assert!(!nobody_can_stat(t), "after reopening, user nobody reaches {}", t.display());
    }
    berth(&["rm", "-f", "-v", &n]).ok("rm");
    berth(&["volume", "rm", &vol]).ok("volume rm");
}

/// Every other field of an image config that reaches the runtime spec or the host is parsed as
/// what it is, and a value that cannot be refuses the run naming the field.
pub fn image_config_fields_are_checked() {
    for (test, config, needle) in [
        ("workdir", json!({"Cmd": ["true"], "WorkingDir": "relative/dir"}), "image config WorkingDir \"relative/dir\""),
        ("cmdnul", json!({"Cmd": ["echo", "a\u{0}b"]}), "image config Cmd[1]"),
        ("entrynul", json!({"Entrypoint": ["/bin/sh\u{0}x"]}), "image config Entrypoint[0]"),
        ("envkey", json!({"Cmd": ["true"], "Env": ["NOVALUE"]}), "image config Env[0] \"NOVALUE\""),
        ("stopsig", json!({"Cmd": ["true"], "StopSignal": "RTMIN+100"}), "StopSignal \"RTMIN+100\": beyond SIGRTMAX"),
        ("stopnum", json!({"Cmd": ["true"], "StopSignal": "99"}), "StopSignal \"99\": out of range"),
    ] {
        let img = image_name(&format!("field{test}"));
        load_image(&img, config, None);
        let o = berth(&["run", "--rm", "--network", "none", &img]).failed(test);
        assert!(o.stderr.contains(needle), "{test}: {o:?}");
    }
    // ExposedPorts only matter to -P: a key that is no port fails it, naming the key.
    let img = image_name("fieldports");
    load_image(&img, json!({"Cmd": ["true"], "ExposedPorts": {"0/tcp": {}, "80/icmp": {}}}), None);
    berth(&["run", "--rm", "--network", "none", &img]).ok("ExposedPorts unused without -P");
    let o = berth(&["run", "--rm", "-P", &img]).failed("-P with a bad ExposedPorts key");
    assert!(o.stderr.contains("image config ExposedPorts key \"0/tcp\""), "{o:?}");
}

pub fn a_runtime_failing_create_leaves_no_cgroup() {
    let (n, _c) = named("leaky");
    berth(&["create", "--name", &n, "--runtime", "leaky", IMAGE, "true"]).ok("create");
    let id = inspect(&n)["Id"].as_str().unwrap().to_string();
    let o = berth(&["start", &n]).failed("start on a runtime whose create fails");
    assert!(o.stderr.contains("leaky: create failed"), "{}", o.stderr);
    let cgroup = container_cgroup(if is_cgroup2() { "" } else { "pids" }, &id);
    assert!(cgroup.is_dir(), "the runtime made {} before failing", cgroup.display());
    berth(&["rm", &n]).ok("rm");
    assert!(!cgroup.exists(), "{} outlived its container", cgroup.display());
}
