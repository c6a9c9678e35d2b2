//! Runtime-spec coverage, asserted from inside the container (/proc/self/*) and from the host.

use serde_json::{json, Value};

use crate::support::*;

fn userns_maps() -> Value {
    json!([{"containerID": 0, "hostID": 100000, "size": 65536}])
}

fn with_userns(c: &mut Ctr) {
    c.namespaces().push(json!({"type": "user"}));
    c.config()["linux"]["uidMappings"] = userns_maps();
    c.config()["linux"]["gidMappings"] = userns_maps();
}

fn links(text: &str) -> Vec<(String, String)> {
    text.lines().filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string()))).collect()
}

pub fn namespaces_are_new() {
    let mut c = Ctr::new(
        "nsnew",
        &[
            "sh",
            "-c",
            "for n in cgroup ipc mnt net pid uts; do echo $n $(readlink /proc/self/ns/$n); done; echo pid1 $$",
        ],
    );
    c.config()["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
    ]);
    let out = c.output();
    for (name, link) in links(&out) {
        if name == "pid1" {
            assert_eq!(link, "1", "the container's process is PID 1 of its pid namespace");
            continue;
        }
        let host = std::fs::read_link(format!("/proc/self/ns/{name}")).unwrap();
        assert_ne!(link, host.to_str().unwrap(), "{name} namespace is the host's");
    }
    c.assert_gone();
}

pub fn namespaces_joined_by_path() {
    let a = Ctr::new("nsjoina", &["sleep", "1000"]);
    let apid = a.create();
    let mut b = Ctr::new(
        "nsjoinb",
        &["sh", "-c", "for n in ipc net pid uts; do echo $n $(readlink /proc/self/ns/$n); done; echo me $$"],
    );
    b.config()["linux"]["namespaces"] = json!([
        {"type": "pid", "path": format!("/proc/{apid}/ns/pid")},
        {"type": "network", "path": format!("/proc/{apid}/ns/net")},
        {"type": "ipc", "path": format!("/proc/{apid}/ns/ipc")},
        {"type": "uts", "path": format!("/proc/{apid}/ns/uts")},
        {"type": "mount"}
    ]);
    // The joined uts namespace has no hostname of ours to set.
    b.config()["hostname"] = Value::Null;
    let out = b.output();
    for (name, link) in links(&out) {
        if name == "me" {
            assert_ne!(link, "1", "in a joined pid namespace the process is not its init");
            continue;
        }
        let theirs = std::fs::read_link(format!("/proc/{apid}/ns/{name}")).unwrap();
        assert_eq!(link, theirs.to_str().unwrap(), "{name} namespace not joined");
    }
    a.delete();
    b.assert_gone();
}

pub fn user_namespace_with_mappings() {
    let mut c = Ctr::new("userns", &["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; ls -ln /bin/busybox; echo x > /dev/null && echo devnull-ok"]);
    with_userns(&mut c);
    let pid = c.create();
    let status = read(format!("/proc/{pid}/status"));
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.split_whitespace().skip(1).all(|u| u == "100000"), "host uid of the container's root: {uid_line}");
    c.delete();
    let out = c.output();
    let maps: Vec<Vec<&str>> = out.lines().take(2).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(maps, vec![vec!["0", "100000", "65536"], vec!["0", "100000", "65536"]]);
    assert_eq!(out.lines().nth(2), Some("0"), "root inside");
    // Host root's files are unmapped inside: they show as the overflow id.
    assert_contains(&out, "65534");
    assert_contains(&out, "devnull-ok");
    c.assert_gone();
}

/// Joining a user namespace (and the network namespace it owns) by path, while creating the
/// mount, pid, ipc and uts namespaces: the two-stage path with an intermediate process.
pub fn user_namespace_joined_by_path() {
    let mut a = Ctr::new("usernsa", &["sleep", "1000"]);
    with_userns(&mut a);
    let apid = a.create();
    let mut b = Ctr::new("usernsb", &["sh", "-c", "echo user $(readlink /proc/self/ns/user); echo net $(readlink /proc/self/ns/net); echo pid $$; cat /proc/self/uid_map"]);
    b.config()["linux"]["namespaces"] = json!([
        {"type": "user", "path": format!("/proc/{apid}/ns/user")},
        {"type": "network", "path": format!("/proc/{apid}/ns/net")},
        {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
    ]);
    let out = b.output();
    let theirs = |n: &str| std::fs::read_link(format!("/proc/{apid}/ns/{n}")).unwrap().to_str().unwrap().to_string();
    assert_contains(&out, &format!("user {}", theirs("user")));
    assert_contains(&out, &format!("net {}", theirs("net")));
    assert_contains(&out, "pid 1\n");
    assert_contains(&out, "100000");
    a.delete();
    b.assert_gone();
}

pub fn time_namespace_offsets() {
    let year = 365 * 86400;
    let mut c = Ctr::new("timens", &["cat", "/proc/uptime"]);
    c.namespaces().push(json!({"type": "time"}));
    c.config()["linux"]["timeOffsets"] = json!({"boottime": {"secs": year, "nanosecs": 0}});
    let host_uptime: f64 = read("/proc/uptime").split_whitespace().next().unwrap().parse().unwrap();
    let out = c.output();
    let inside: f64 = out.split_whitespace().next().unwrap().parse().unwrap();
    assert!(inside >= host_uptime + year as f64, "uptime inside {inside}, host {host_uptime}");
    c.assert_gone();
}

pub fn hostname_and_domainname() {
    let mut c = Ctr::new("uts", &["sh", "-c", "hostname; cat /proc/sys/kernel/domainname"]);
    c.config()["hostname"] = json!("box-one");
    c.config()["domainname"] = json!("example.org");
    assert_eq!(c.output(), "box-one\nexample.org\n");
}

pub fn sysctl_in_the_container_namespaces() {
    let host_forward = read("/proc/sys/net/ipv4/ip_forward");
    let host_shmmni = read("/proc/sys/kernel/shmmni");
    let mut c = Ctr::new("sysctl", &["sh", "-c", "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni"]);
    let target_forward = if host_forward.trim() == "1" { "0" } else { "1" };
    c.config()["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": target_forward, "kernel.shmmni": "1234"});
    assert_eq!(c.output(), format!("{target_forward}\n1234\n"));
    assert_eq!(read("/proc/sys/net/ipv4/ip_forward"), host_forward, "the host's value changed");
    assert_eq!(read("/proc/sys/kernel/shmmni"), host_shmmni, "the host's value changed");
}

pub fn process_user_and_umask() {
    let mut c = Ctr::new("user", &["sh", "-c", "id; umask; pwd"]);
    c.config()["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 29], "umask": 63});
    c.config()["process"]["cwd"] = json!("/home/user");
    let out = c.output();
    assert_contains(&out, "uid=1000(user) gid=1000(user)");
    assert_contains(&out, "10(wheel)");
    assert_contains(&out, "29(audio)");
    assert!(!out.contains("0(root)"), "root group kept: {out}");
    assert_contains(&out, "\n0077\n");
    assert!(out.ends_with("/home/user\n"), "{out}");
    // A missing working directory is created.
    let mut d = Ctr::with_own_rootfs("cwdcreate", &["pwd"]);
    d.config()["process"]["cwd"] = json!("/srv/app/data");
    assert_eq!(d.output(), "/srv/app/data\n");
}

pub fn rlimits() {
    let mut c = Ctr::new("rlimits", &["cat", "/proc/self/limits"]);
    c.config()["process"]["rlimits"] = json!([
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400}
    ]);
    let out = c.output();
    let row = |name: &str| -> Vec<String> {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {out}"));
        line[name.len()..].split_whitespace().take(2).map(str::to_string).collect()
    };
    assert_eq!(row("Max open files"), vec!["512", "1024"]);
    assert_eq!(row("Max core file size"), vec!["0", "0"]);
    assert_eq!(row("Max processes"), vec!["300", "400"]);
}

fn cap_line(status: &str, name: &str) -> String {
    status.lines().find(|l| l.starts_with(name)).unwrap().split_whitespace().nth(1).unwrap().to_string()
}

pub fn no_new_privileges_and_capabilities() {
    // Root in the container: after exec it holds its bounding set, as with runc.
    let mut c = Ctr::new("caps", &["cat", "/proc/self/status"]);
    c.config()["process"]["noNewPrivileges"] = json!(true);
    c.config()["process"]["capabilities"] = json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_CHOWN", "CAP_KILL"]
    });
    let out = c.output();
    assert_eq!(cap_line(&out, "NoNewPrivs:"), "1");
    assert_eq!(cap_line(&out, "CapBnd:"), "0000000000000021");
    assert_eq!(cap_line(&out, "CapPrm:"), "0000000000000021");
    assert_eq!(cap_line(&out, "CapInh:"), "0000000000000000", "inheritable is never granted implicitly");
    assert_eq!(cap_line(&out, "CapAmb:"), "0000000000000000");

    // A non-root user keeps exactly its ambient capabilities.
    let mut u = Ctr::new("capsuser", &["cat", "/proc/self/status"]);
    u.config()["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    u.config()["process"]["noNewPrivileges"] = json!(false);
    u.config()["process"]["capabilities"] = json!({
        "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"],
        "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]
    });
    let out = u.output();
    assert_eq!(cap_line(&out, "NoNewPrivs:"), "0");
    assert_eq!(cap_line(&out, "CapEff:"), "0000000000000020");
    assert_eq!(cap_line(&out, "CapPrm:"), "0000000000000020");
    assert_eq!(cap_line(&out, "CapAmb:"), "0000000000000020");
    assert_eq!(cap_line(&out, "CapBnd:"), "0000000000000420");

    // Unknown capability names are refused with the field named.
    let mut bad = Ctr::new("capsbad", &["true"]);
    bad.config()["process"]["capabilities"]["bounding"] = json!(["CAP_NOT_A_THING"]);
    let out = bad.create_raw().failed("unknown capability");
    assert_contains(&out.stderr, "process.capabilities.bounding");
    bad.assert_gone();
}

pub fn oom_score_adj() {
    let mut c = Ctr::new("oomadj", &["cat", "/proc/self/oom_score_adj"]);
    c.config()["process"]["oomScoreAdj"] = json!(500);
    assert_eq!(c.output(), "500\n");
}

pub fn root_readonly_and_propagation() {
    let mut c = Ctr::new("readonly", &["sh", "-c", "touch /newfile 2>&1; awk '$5 == \"/\"' /proc/self/mountinfo"]);
    c.config()["linux"]["rootfsPropagation"] = json!("shared");
    let out = c.output();
    assert_contains(&out, "Read-only file system");
    let root_line = out.lines().find(|l| l.split_whitespace().nth(4) == Some("/")).unwrap();
    assert!(root_line.split_whitespace().nth(5).unwrap().starts_with("ro"), "{root_line}");
    assert_contains(root_line, "shared:");
    let mut p = Ctr::new("private", &["awk", "$5 == \"/\"", "/proc/self/mountinfo"]);
    p.config()["linux"]["rootfsPropagation"] = json!("rprivate");
    let line = p.output();
    assert!(!line.contains("shared:") && !line.contains("master:"), "{line}");
}

/// A bind mount with rshared propagation under an rshared root stays the peer of its host
/// mount: what the container mounts under it appears on the host (CRI's Bidirectional, which
/// kubelet gives CSI drivers). The host side is a tmpfs of the test's own, made shared.
pub fn shared_mounts_propagate_both_ways() {
    let mut c = Ctr::with_own_rootfs(
        "bidirectional",
        &["sh", "-c", "mount -t tmpfs from-ctr /vol/from-ctr && touch /vol/from-ctr/marker && ls /vol/from-host"],
    );
    let host = c.dir.join("shared");
    std::fs::create_dir_all(&host).unwrap();
    let host_c = berth_sys::cstring(host.as_os_str()).unwrap();
    // SAFETY: mount(2) with valid C strings, on the test's own directory.
    unsafe {
        assert_eq!(libc::mount(c"tmpfs".as_ptr(), host_c.as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()), 0);
        assert_eq!(
            libc::mount(std::ptr::null(), host_c.as_ptr(), std::ptr::null(), libc::MS_SHARED, std::ptr::null()),
            0
        );
    }
    for d in ["from-ctr", "from-host"] {
        std::fs::create_dir_all(host.join(d)).unwrap();
    }
    let from_host = berth_sys::cstring(host.join("from-host").as_os_str()).unwrap();
    // SAFETY: as above; a mount the container should see.
    unsafe {
        assert_eq!(libc::mount(c"tmpfs".as_ptr(), from_host.as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()), 0);
    }
    std::fs::write(host.join("from-host/seen"), b"").unwrap();
    c.config()["linux"]["rootfsPropagation"] = json!("rshared");
    for set in ["bounding", "effective", "permitted"] {
        c.config()["process"]["capabilities"][set].as_array_mut().unwrap().push(json!("CAP_SYS_ADMIN"));
    }
    let src = host.to_str().unwrap().to_string();
    c.mounts().push(json!({"destination": "/vol", "type": "bind", "source": src, "options": ["rbind", "rshared"]}));
    let out = c.run();
    let marker = host.join("from-ctr/marker").exists();
    // SAFETY: umount2 of the test's own mounts, deepest first.
    unsafe {
        for p in [host.join("from-ctr"), host.join("from-host"), host.clone()] {
            let p = berth_sys::cstring(p.as_os_str()).unwrap();
            libc::umount2(p.as_ptr(), libc::MNT_DETACH);
        }
    }
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, "seen");
    assert!(marker, "the container's mount under /vol did not reach the host");
}

fn mount_line<'a>(mountinfo: &'a str, target: &str) -> &'a str {
    mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some(target))
        .unwrap_or_else(|| panic!("{target} not mounted:\n{mountinfo}"))
}

pub fn mounts_and_options() {
    let mut c = Ctr::with_own_rootfs("mounts", &["sh", "-c", "cat /proc/self/mountinfo; stat -c 'mode %a' /scratch"]);
    c.mounts().push(json!({
        "destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "noexec", "nodev", "size=1m", "mode=700"]
    }));
    let out = c.output();
    let scratch = mount_line(&out, "/scratch");
    assert_contains(scratch, "rw,nosuid,nodev,noexec");
    assert_contains(scratch, "size=1024k");
    assert_contains(&out, "mode 700");
    assert_contains(mount_line(&out, "/proc"), " proc ");
    let sys = mount_line(&out, "/sys");
    assert!(sys.contains("ro,nosuid,nodev,noexec") && sys.contains("sysfs"), "{sys}");
    let pts = mount_line(&out, "/dev/pts");
    assert!(
        pts.contains("devpts") && pts.contains("gid=5") && pts.contains("mode=620") && pts.contains("ptmxmode=666"),
        "{pts}"
    );
    assert_contains(mount_line(&out, "/dev/mqueue"), "mqueue");
    assert_contains(mount_line(&out, "/dev/shm"), "size=65536k");
    assert_contains(mount_line(&out, "/dev"), "tmpfs");
    assert_contains(mount_line(&out, "/sys/fs/cgroup"), "ro,");
    // The mount point was created in the rootfs, nothing else was.
    assert!(c.rootfs().join("scratch").is_dir());
}

/// `tmpcopyup` (podman gives it to every `--tmpfs`): a directory that was there lends its
/// contents, mode and owner to the tmpfs; one the runtime creates has nothing to copy and the
/// tmpfs keeps its own mode, 1777, as with runc and crun (berth-oci once gave it the new
/// directory's 0755, and a non-root user could not write to podman's `--tmpfs /scratch`).
pub fn tmpcopyup_into_new_and_existing_directories() {
    let mut c = Ctr::with_own_rootfs(
        "tmpcopyup",
        &["sh", "-c", "stat -c '%a %u' /new /old /old/d; cat /old/f; touch /new/x && echo user writes"],
    );
    let old = c.rootfs().join("old");
    std::fs::create_dir_all(old.join("d")).unwrap();
    std::fs::write(old.join("f"), "copied\n").unwrap();
    std::os::unix::fs::chown(&old, Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();
    let mounts = c.mounts();
    for dest in ["/new", "/old"] {
        mounts.push(json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": ["rw", "nosuid", "nodev", "tmpcopyup"]}));
    }
    c.config()["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    assert_eq!(c.output(), "1777 0\n750 1000\n755 0\ncopied\nuser writes\n");
}

pub fn bind_mounts() {
    let host = suite().dir.join("bind-source");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("file.txt"), "from the host\n").unwrap();
    let motd = suite().dir.join("bind-motd");
    std::fs::write(&motd, "message of the day\n").unwrap();
    let mut c = Ctr::with_own_rootfs(
        "bind",
        &["sh", "-c", "cat /data/file.txt; { echo x > /data/new; } 2>&1; cat /etc/motd; ls /rcg | grep -c . ; ls /cg | grep -c . ; grep ' /rcg/memory ' /proc/self/mountinfo | cut -d' ' -f6; echo end"],
    );
    let mounts = c.mounts();
    mounts.push(json!({"destination": "/data", "type": "bind", "source": host, "options": ["bind", "ro", "rslave"]}));
    mounts.push(json!({"destination": "/etc/motd", "type": "bind", "source": motd, "options": ["bind", "ro"]}));
    // rbind brings the submounts along (each cgroup hierarchy under /sys/fs/cgroup); rro makes
    // them all read-only. bind alone brings only the top mount.
    mounts
        .push(json!({"destination": "/rcg", "type": "none", "source": "/sys/fs/cgroup", "options": ["rbind", "rro"]}));
    mounts.push(json!({"destination": "/cg", "type": "none", "source": "/sys/fs/cgroup", "options": ["bind"]}));
    let out = c.output();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "from the host");
    assert_contains(lines[1], "Read-only file system");
    assert_eq!(lines[2], "message of the day");
    let rcg: usize = lines[3].parse().unwrap();
    assert!(rcg > 0, "rbind shows the hierarchies: {out}");
    if !is_cgroup2() {
        let listed: usize = lines[4].parse().unwrap();
        assert_eq!(listed, rcg, "the plain bind shows the directory entries");
        assert!(lines[5].starts_with("ro"), "rro reached the submounts: {out}");
    }
    assert!(!host.join("new").exists());
}

pub fn cgroup_mount_shows_own_cgroup() {
    let mut c = Ctr::new("cgmount", &["sh", "-c", "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null; cat /proc/self/cgroup"]);
    c.config()["linux"]["resources"]["memory"] = json!({"limit": 48 << 20});
    let out = c.output();
    assert_eq!(out.lines().next().unwrap(), (48u64 << 20).to_string());
    // In its cgroup namespace the container is at the root of every hierarchy.
    for line in out.lines().skip(1) {
        assert!(line.ends_with(":/"), "{line}");
    }
}

pub fn default_devices_and_links() {
    let c = Ctr::new(
        "devices",
        &["sh", "-c", "ls -l /dev; echo data > /dev/null && echo null-ok; head -c 4 /dev/zero | wc -c; head -c 8 /dev/urandom | wc -c"],
    );
    let out = c.output();
    for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
        let line = out
            .lines()
            .find(|l| l.ends_with(&format!(" {dev}")))
            .unwrap_or_else(|| panic!("/dev/{dev} missing:\n{out}"));
        assert!(line.starts_with("crw-rw-rw-"), "{line}");
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        assert_contains(&out, &format!("{link} -> {target}"));
    }
    assert_contains(&out, "null-ok");
    assert_contains(&out, "\n4\n8\n");
}

pub fn spec_devices() {
    let mut c =
        Ctr::new("specdevices", &["sh", "-c", "stat -c '%n %F %t:%T %a %u:%g' /dev/fuse /dev/loop-test /dev/pipe"]);
    c.config()["linux"]["devices"] = json!([
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 384, "uid": 0, "gid": 0},
        {"path": "/dev/loop-test", "type": "b", "major": 7, "minor": 0, "fileMode": 416, "uid": 0, "gid": 6},
        {"path": "/dev/pipe", "type": "p", "fileMode": 420}
    ]);
    // Their cgroup rules come along: the default spec denies all devices otherwise.
    let out = c.output();
    assert_contains(&out, "/dev/fuse character special file a:e5 600 0:0");
    assert_contains(&out, "/dev/loop-test block special file 7:0 640 0:6");
    assert_contains(&out, "/dev/pipe fifo 0:0 644 0:0");
}

/// /dev/ptmx in linux.devices (podman's `--privileged` lists every host device) leaves the link
/// to the container's own devpts in place, as runc does: berth-oci once refused it, its own
/// link being "a different file" at that path.
pub fn ptmx_in_spec_devices_stays_the_pts_link() {
    let mut c = Ctr::new("ptmx", &["sh", "-c", "readlink /dev/ptmx; test -c /dev/pts/ptmx && echo pts"]);
    c.config()["linux"]["devices"] =
        json!([{"path": "/dev/ptmx", "type": "c", "major": 5, "minor": 2, "fileMode": 438, "uid": 0, "gid": 0}]);
    assert_eq!(c.output(), "pts/ptmx\npts\n");
}

pub fn masked_and_readonly_paths() {
    let mut c = Ctr::new(
        "masked",
        &["sh", "-c", "cat /proc/timer_list | wc -c; ls /sys/firmware | wc -l; cat /etc/hostname | wc -c; { echo 1 > /proc/sys/kernel/ns_last_pid; } 2>&1; echo end"],
    );
    c.config()["linux"]["maskedPaths"]
        .as_array_mut()
        .unwrap()
        .extend([json!("/proc/timer_list"), json!("/etc/hostname")]);
    let out = c.output();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "masked file reads empty");
    assert_eq!(lines[1], "0", "masked directory is empty");
    assert_eq!(lines[2], "0", "a masked file of the image");
    assert_contains(lines[3], "Read-only file system");
}

/// ioPriority, scheduler, personality, execCPUAffinity (exec only), and the LSM fields, which
/// this host cannot honour (no AppArmor, no SELinux) and so refuses by name.
pub fn process_attributes() {
    let mut c = Ctr::new("attrs", &["sh", "-c", "uname -m; sleep 1000"]);
    c.config()["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 6});
    c.config()["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 5});
    c.config()["process"]["execCPUAffinity"] = json!({"final": "0"});
    c.config()["linux"]["personality"] = json!({"domain": "LINUX32"});
    let pid = c.create();
    // SAFETY: reading another process's I/O priority and scheduling policy.
    let ioprio = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, pid) };
    assert_eq!(ioprio, (2 << 13) | 6, "best-effort class, level 6");
    assert_eq!(unsafe { libc::sched_getscheduler(pid) }, libc::SCHED_BATCH);
    let stat = read(format!("/proc/{pid}/stat"));
    let nice: i32 = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().nth(16).unwrap().parse().unwrap();
    assert_eq!(nice, 5);
    let exec = c.oci(&["exec", &c.id, "grep", "Cpus_allowed_list", "/proc/self/status"]).ok("exec");
    assert_contains(&exec.stdout, "Cpus_allowed_list:\t0\n");
    c.delete();
    let mut u = Ctr::new("personality", &["uname", "-m"]);
    u.config()["linux"]["personality"] = json!({"domain": "LINUX32"});
    assert_eq!(u.output().trim(), "i686");
    type Edit = fn(&mut serde_json::Value);
    let refused: [(&str, &str, Edit); 5] = [
        ("apparmor", "process.apparmorProfile", |c| c["process"]["apparmorProfile"] = json!("docker-default")),
        ("selinux", "process.selinuxLabel", |c| {
            c["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0")
        }),
        ("mountlabel", "linux.mountLabel", |c| {
            c["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0")
        }),
        ("iso", "process.scheduler.policy", |c| c["process"]["scheduler"] = json!({"policy": "SCHED_ISO"})),
        ("ioprio", "process.ioPriority.priority", |c| {
            c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 9})
        }),
    ];
    for (name, field, edit) in refused {
        let mut r = Ctr::new(&format!("attrs{name}"), &["true"]);
        edit(r.config());
        let out = r.create_raw().failed(name);
        assert_contains(&out.stderr, field);
        r.assert_gone();
    }
}

/// ID-mapped mounts: a host-root-owned volume appears root-owned inside a user-namespaced
/// container (and writable by its root); a mount with mappings of its own; the rootfs itself
/// (org.berth.rootfs.idmap), so a rootfs owned by the host's root needs no chown.
pub fn idmapped_mounts() {
    let vol = suite().dir.join("idmap-volume");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("owned-by-root"), "x").unwrap();
    let mut c = Ctr::with_own_rootfs(
        "idmap",
        &["sh", "-c", "ls -ln /data/owned-by-root /plain/owned-by-root /other/owned-by-root; touch /data/made-inside && echo write-ok; touch /root/rootfs-write && echo rootfs-write-ok; ls -ln /bin/busybox"],
    );
    with_userns(&mut c);
    let other = json!([{"containerID": 0, "hostID": 101000, "size": 1}]);
    let mounts = c.mounts();
    mounts.push(json!({"destination": "/data", "type": "bind", "source": vol, "options": ["rbind", "idmap"]}));
    mounts.push(json!({"destination": "/plain", "type": "bind", "source": vol, "options": ["rbind", "ro"]}));
    mounts.push(json!({"destination": "/other", "type": "bind", "source": vol, "options": ["rbind", "ro"], "uidMappings": other, "gidMappings": other}));
    c.config()["annotations"] = json!({"org.berth.rootfs.idmap": "true"});
    if !idmap_supported(&vol) {
        // tmpfs learnt ID-mapped mounts in Linux 6.3 (the cgroup v2 guest runs 6.1).
        let out = c.create_raw().failed("ID-mapping a filesystem that cannot be");
        assert_contains(&out.stderr, "does the filesystem support ID-mapped mounts?");
        c.assert_gone();
        return;
    }
    let out = c.output();
    let owner = |path: &str| -> String {
        let line = out.lines().find(|l| l.ends_with(path)).unwrap_or_else(|| panic!("{path} in {out}"));
        line.split_whitespace().nth(2).unwrap().to_string()
    };
    assert_eq!(owner("/data/owned-by-root"), "0", "ID-mapped: the host's root is the container's root");
    assert_eq!(owner("/plain/owned-by-root"), "65534", "not ID-mapped: the host's root is unmapped");
    assert_eq!(
        owner("/other/owned-by-root"),
        "1000",
        "the mount's own mapping: on-disk 0 is host 101000, uid 1000 inside"
    );
    assert_eq!(owner("/bin/busybox"), "0", "the ID-mapped rootfs");
    assert_contains(&out, "write-ok");
    assert_contains(&out, "rootfs-write-ok");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(vol.join("made-inside")).unwrap().uid(),
        0,
        "written through the mapping: the host's root on disk"
    );
    assert_eq!(std::fs::metadata(c.rootfs().join("root/rootfs-write")).unwrap().uid(), 0);

    let mut t = Ctr::new("idmaptmpfs", &["true"]);
    t.config()["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"]}));
    assert_contains(&t.create_raw().failed("idmap on tmpfs").stderr, "bind mounts only");
    t.assert_gone();
    let mut n = Ctr::new("idmapnouserns", &["true"]);
    n.mounts().push(json!({"destination": "/data", "type": "bind", "source": vol, "options": ["rbind", "idmap"]}));
    assert_contains(&n.create_raw().failed("idmap without mappings").stderr, "linux.uidMappings");
    n.assert_gone();
}

fn idmap_supported(dir: &std::path::Path) -> bool {
    // SAFETY: statfs into a zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    st.f_type != TMPFS_MAGIC || berth_testkit::host::kernel_at_least(6, 3)
}
