//! linux.resources on the host's cgroups (v1 + hybrid here; pure v2 in tools/test-cgroup2.sh),
//! checked in the cgroup files and by what the container can and cannot do.

use std::path::Path;

use serde_json::json;

use crate::support::*;

fn file(c: &Ctr, hierarchy: &str, name: &str) -> String {
    read(c.cgroup_dir(hierarchy).join(name)).trim().to_string()
}

pub fn memory() {
    let mut c = Ctr::new("memory", &["sleep", "1000"]);
    if is_cgroup2() {
        c.config()["linux"]["resources"]["memory"] = json!({"limit": 64 << 20, "reservation": 32 << 20});
        c.create();
        assert_eq!(file(&c, "", "memory.max"), (64u64 << 20).to_string());
        assert_eq!(file(&c, "", "memory.low"), (32u64 << 20).to_string());
        c.delete();
        // What v2 cannot do is refused, naming the field.
        let mut s = Ctr::new("memoryv2swappiness", &["true"]);
        s.config()["linux"]["resources"]["memory"] = json!({"limit": 64 << 20, "swappiness": 10});
        let out = s.create_raw().failed("swappiness on v2");
        assert_contains(&out.stderr, "memory.swappiness");
        s.assert_gone();
    } else {
        // Swap limits need the kernel's swap accounting (memory.memsw.*), which some kernels
        // are built or booted without.
        let swap_accounting = Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists();
        c.config()["linux"]["resources"]["memory"] = json!({
            "limit": 64 << 20, "reservation": 32 << 20, "swappiness": 10, "disableOOMKiller": false
        });
        if swap_accounting {
            c.config()["linux"]["resources"]["memory"]["swap"] = json!(128 << 20);
        }
        c.create();
        assert_eq!(file(&c, "memory", "memory.limit_in_bytes"), (64u64 << 20).to_string());
        assert_eq!(file(&c, "memory", "memory.soft_limit_in_bytes"), (32u64 << 20).to_string());
        if swap_accounting {
            assert_eq!(file(&c, "memory", "memory.memsw.limit_in_bytes"), (128u64 << 20).to_string());
        }
        assert_eq!(file(&c, "memory", "memory.swappiness"), "10");
        assert!(file(&c, "memory", "memory.oom_control").contains("oom_kill_disable 0"));
        c.delete();
        if !swap_accounting {
            let mut s = Ctr::new("memoryswap", &["true"]);
            s.config()["linux"]["resources"]["memory"] = json!({"limit": 64 << 20, "swap": 128 << 20});
            let out = s.create_raw().failed("a swap limit without swap accounting");
            assert_contains(&out.stderr, "memory.swap: swap accounting is not enabled");
            s.assert_gone();
        }
    }
    c.assert_gone();
    // The limit is real: a process going past it is OOM-killed.
    let mut oom = Ctr::new("oom", &["sh", "-c", "x=$(head -c 200m /dev/zero | tr '\\0' a); echo survived"]);
    oom.config()["linux"]["resources"]["memory"] = json!({"limit": 16 << 20});
    let out = oom.run();
    assert_eq!(out.code, 137, "expected an OOM kill: {out:?}");
    assert!(!out.stdout.contains("survived"));
}

pub fn cpu() {
    let mut c = Ctr::new("cpu", &["sleep", "1000"]);
    c.config()["linux"]["resources"]["cpu"] =
        json!({"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"});
    c.create();
    if is_cgroup2() {
        assert_eq!(file(&c, "", "cpu.weight"), "20");
        assert_eq!(file(&c, "", "cpu.max"), "50000 100000");
        assert_eq!(file(&c, "", "cpuset.cpus"), "0");
        assert_eq!(file(&c, "", "cpuset.mems"), "0");
    } else {
        assert_eq!(file(&c, "cpu", "cpu.shares"), "512");
        assert_eq!(file(&c, "cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(file(&c, "cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(file(&c, "cpuset", "cpuset.cpus"), "0");
        assert_eq!(file(&c, "cpuset", "cpuset.mems"), "0");
    }
    // The container runs only on CPU 0.
    let pid = c.pid();
    assert_contains(&read(format!("/proc/{pid}/status")), "Cpus_allowed_list:\t0\n");
    c.delete();
    c.assert_gone();

    // Real-time CPU time (v1 only): the period is set, the runtime given from the parents'
    // budget (a new parent has none: it gets it from above first); more than the hierarchy's
    // root has is refused.
    let root = Path::new("/sys/fs/cgroup/cpu");
    if is_cgroup2() || !root.join("cpu.rt_runtime_us").exists() {
        return;
    }
    let _rt = REALTIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut rt = Ctr::new("cpurt", &["true"]);
    rt.config()["linux"]["resources"]["cpu"] = json!({"realtimePeriod": 500000, "realtimeRuntime": 100000});
    let root_runtime: i64 = read(root.join("cpu.rt_runtime_us")).trim().parse().unwrap();
    let root_period: i64 = read(root.join("cpu.rt_period_us")).trim().parse().unwrap();
    if root_runtime > 0 && root_runtime * 5 >= root_period {
        rt.create();
        assert_eq!(file(&rt, "cpu", "cpu.rt_period_us"), "500000");
        assert_eq!(file(&rt, "cpu", "cpu.rt_runtime_us"), "100000");
        rt.delete();
    }
    rt.assert_gone();
    if (0..root_period).contains(&root_runtime) {
        let mut all = Ctr::new("cpurtall", &["true"]);
        all.config()["linux"]["resources"]["cpu"] = json!({"realtimePeriod": 100000, "realtimeRuntime": 100000});
        let out = all.create_raw().failed("more real-time runtime than the hierarchy has");
        assert_contains(&out.stderr, "cpu.realtimeRuntime");
        all.assert_gone();
        let parent = root.join(&suite().cgroup_prefix);
        if parent.exists() {
            assert_eq!(read(parent.join("cpu.rt_runtime_us")).trim(), "0", "the parent kept real-time runtime");
        }
    }
}

pub fn pids_limit_stops_forks() {
    let mut c = Ctr::new("pids", &["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done 2>&1; echo done"]);
    c.config()["linux"]["resources"]["pids"] = json!({"limit": 4});
    let out = c.run();
    assert_contains(&format!("{}{}", out.stdout, out.stderr), "fork");
    let mut d = Ctr::new("pidsfile", &["sleep", "1000"]);
    d.config()["linux"]["resources"]["pids"] = json!({"limit": 4});
    d.create();
    assert_eq!(file(&d, "pids", "pids.max"), "4");
}

/// major:minor of a block device this host has.
fn some_block_device() -> String {
    let mut devs: Vec<String> = std::fs::read_dir("/sys/dev/block")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    devs.sort();
    devs.into_iter().next().expect("a block device")
}

pub fn block_io() {
    let dev = some_block_device();
    let (major, minor) = dev.split_once(':').unwrap();
    let (major, minor): (u64, u64) = (major.parse().unwrap(), minor.parse().unwrap());
    let mut c = Ctr::new("blkio", &["sleep", "1000"]);
    c.config()["linux"]["resources"]["blockIO"] = json!({
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}]
    });
    c.create();
    if is_cgroup2() {
        let max = file(&c, "", "io.max");
        assert_contains(&max, &format!("{dev} rbps=1048576"));
        assert_contains(&max, "wiops=100");
    } else {
        assert_eq!(file(&c, "blkio", "blkio.throttle.read_bps_device"), format!("{dev} 1048576"));
        assert_eq!(file(&c, "blkio", "blkio.throttle.write_iops_device"), format!("{dev} 100"));
    }
    // Whether this host's disks have a scheduler with weights (BFQ; the v2 io cost model) is
    // seen in the files of a cgroup like the one the weighted container gets.
    let weight_files: &[&str] =
        if is_cgroup2() { &["io.weight", "io.bfq.weight"] } else { &["blkio.weight", "blkio.bfq.weight"] };
    let hierarchy = if is_cgroup2() { "" } else { "blkio" };
    let weights_supported = weight_files.iter().any(|f| c.cgroup_dir(hierarchy).join(f).exists());
    c.delete();
    // A weight: set where the I/O scheduler supports it, else a clear error naming the field.
    let mut w = Ctr::new("blkioweight", &["sleep", "1000"]);
    w.config()["linux"]["resources"]["blockIO"] = json!({"weight": 500});
    let out = w.create_raw();
    if weights_supported {
        assert_eq!(out.code, 0, "blockIO.weight refused although {weight_files:?} exist: {out:?}");
        let dir = w.cgroup_dir(hierarchy);
        let set = weight_files
            .iter()
            .any(|f| std::fs::read_to_string(dir.join(f)).is_ok_and(|v| v.contains("500") || v.contains("4950")));
        assert!(set, "blockIO.weight was accepted but not written");
    } else {
        let out = out.failed("blockIO.weight without an I/O scheduler that has weights");
        assert_contains(&out.stderr, "blockIO.weight");
        assert_contains(&out.stderr, "does not support weights");
        w.assert_gone();
    }
}

pub fn hugepage_limits() {
    let mut c = Ctr::new("hugetlb", &["sleep", "1000"]);
    c.config()["linux"]["resources"]["hugepageLimits"] = json!([{"pageSize": "2MB", "limit": 4194304}]);
    if !has_cgroup2_mount() && !std::path::Path::new("/sys/fs/cgroup/hugetlb").exists() {
        // Pure v1 without the hugetlb hierarchy (this host's): refused, naming the field.
        let out = c.create_raw().failed("hugetlb without a hugetlb controller");
        assert_contains(&out.stderr, "hugepageLimits[0]");
        assert_contains(&out.stderr, "hugetlb cgroup controller is not available");
        c.assert_gone();
        return;
    }
    c.create();
    let dir = if is_cgroup2() {
        c.cgroup_dir("")
    } else if c.cgroup_dir("hugetlb").exists() {
        c.cgroup_dir("hugetlb")
    } else {
        c.cgroup_dir("unified")
    };
    let value = std::fs::read_to_string(dir.join("hugetlb.2MB.max"))
        .or_else(|_| std::fs::read_to_string(dir.join("hugetlb.2MB.limit_in_bytes")))
        .unwrap();
    assert_eq!(value.trim(), "4194304");
    c.delete();
    let mut bad = Ctr::new("hugetlbbad", &["true"]);
    bad.config()["linux"]["resources"]["hugepageLimits"] = json!([{"pageSize": "3MB", "limit": 4194304}]);
    let out = bad.create_raw().failed("unknown page size");
    assert_contains(&out.stderr, "hugepageLimits[0].pageSize");
    assert_contains(&out.stderr, "2MB");
    bad.assert_gone();
}

pub fn devices_rules() {
    let mut c = Ctr::new("devrules", &["sh", "-c", "head -c 1 /dev/zero >/dev/null 2>&1 && echo zero-ok || echo zero-denied; echo x > /dev/null && echo null-ok"]);
    // The default spec denies everything; the runtime allows its own devices; this denies zero.
    c.config()["linux"]["resources"]["devices"]
        .as_array_mut()
        .unwrap()
        .push(json!({"allow": false, "type": "c", "major": 1, "minor": 5, "access": "rwm"}));
    let out = c.output();
    // The runtime's own rules come after the spec's (as runc): /dev/zero is one of them.
    assert_contains(&out, "null-ok");
    assert_contains(&out, "zero-ok");

    // Without the runtime's rule for it, a device the container was not given is denied.
    let mut d = Ctr::new("devdeny", &["sh", "-c", "mknod /tmp/disk b 7 0 2>&1; echo end"]);
    d.config()["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    d.config()["process"]["capabilities"]["bounding"].as_array_mut().unwrap().push(json!("CAP_MKNOD"));
    d.config()["process"]["capabilities"]["effective"].as_array_mut().unwrap().push(json!("CAP_MKNOD"));
    d.config()["process"]["capabilities"]["permitted"].as_array_mut().unwrap().push(json!("CAP_MKNOD"));
    let out = d.output();
    assert_contains(&out, "Operation not permitted");
    if !is_cgroup2() {
        let e = Ctr::new("devlist", &["sleep", "1000"]);
        e.create();
        let list = file(&e, "devices", "devices.list");
        assert!(!list.contains("a *:* rwm"), "deny-all not applied: {list}");
        assert_contains(&list, "c 1:3 rwm");
        assert_contains(&list, "c 136:* rwm");
    }
}

pub fn unified_resources() {
    let mut c = Ctr::new("unified", &["sleep", "1000"]);
    c.config()["linux"]["resources"]["unified"] = json!({"cgroup.max.descendants": "3"});
    if !has_cgroup2_mount() {
        let out = c.create_raw().failed("unified on pure v1");
        assert_contains(&out.stderr, "unified: needs a cgroup2 hierarchy");
        c.assert_gone();
        return;
    }
    c.create();
    let dir = if is_cgroup2() { c.cgroup_dir("") } else { c.cgroup_dir("unified") };
    assert_eq!(read(dir.join("cgroup.max.descendants")).trim(), "3");
    c.delete();
    let mut bad = Ctr::new("unifiedbad", &["true"]);
    bad.config()["linux"]["resources"]["unified"] = json!({"../escape": "1"});
    let out = bad.create_raw().failed("unified key with a path");
    assert_contains(&out.stderr, "unified.../escape");
    bad.assert_gone();
}

pub fn relative_cgroups_path() {
    let rel = format!("berth-rel-{}/inner", std::process::id());
    let mut c = Ctr::new("relcgroup", &["sleep", "1000"]);
    c.config()["linux"]["cgroupsPath"] = json!(rel);
    let pid = c.create();
    let own = read("/proc/self/cgroup");
    let theirs = read(format!("/proc/{pid}/cgroup"));
    // On pure v1 the (unmounted) cgroup2 hierarchy is not ours to manage.
    let managed = |l: &&str| has_cgroup2_mount() || !l.starts_with("0::");
    for (mine, line) in own.lines().filter(managed).zip(theirs.lines().filter(managed)) {
        let mut base = mine.rsplit(':').next().unwrap().trim_end_matches('/').to_string();
        if is_cgroup2() {
            // v2: below the parent of our own cgroup, which may hold processes itself.
            base = std::path::Path::new(&base)
                .parent()
                .map_or(String::new(), |p| p.to_string_lossy().trim_end_matches('/').to_string());
        }
        let want = format!("{base}/{rel}");
        assert!(line.ends_with(&want), "{line} should be below this process's cgroup ({want})");
    }
    c.delete();
    assert!(processes_in_cgroups(&format!("berth-rel-{}", std::process::id())).is_empty());
    // Without a cgroupsPath the container's id is the (relative) path, as with runc.
    let mut d = Ctr::new("defaultcgroup", &["sleep", "1000"]);
    d.config()["linux"].as_object_mut().unwrap().remove("cgroupsPath");
    let pid = d.create();
    let cg = read(format!("/proc/{pid}/cgroup"));
    assert!(cg.lines().filter(managed).all(|l| l.ends_with(&format!("/{}", d.id))), "{cg}");
    d.delete();
    assert!(processes_in_cgroups(&d.id).is_empty());
    for line in own.lines().filter(managed) {
        let base = line.rsplit(':').next().unwrap();
        let ctrl = line.split(':').nth(1).unwrap();
        let h = if is_cgroup2() {
            String::new()
        } else if ctrl.is_empty() {
            "unified".into()
        } else {
            ctrl.trim_start_matches("name=").to_string()
        };
        let parent = std::path::Path::new("/sys/fs/cgroup")
            .join(h)
            .join(base.trim_start_matches('/'))
            .join(format!("berth-rel-{}", std::process::id()));
        assert!(!parent.exists(), "{} remains", parent.display());
    }
}

/// Containers sharing a parent cgroup that none of them finds existing: each delete removes
/// the parent once empty, while the others create their own cgroups below it.
pub fn shared_parent_created_and_removed_concurrently() {
    let parent = format!("berth-shared-{}", std::process::id());
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let parent = parent.clone();
            std::thread::spawn(move || {
                let mut c = Ctr::new(&format!("sharedparent{w}"), &["true"]);
                c.config()["linux"]["cgroupsPath"] = json!(format!("/{parent}/{}", c.id));
                c.write_bundle();
                let bundle = c.bundle.dir.to_str().unwrap().to_string();
                for i in 0..60 {
                    c.oci(&["create", "--bundle", &bundle, &c.id]).ok(&format!("worker {w}: create {i}"));
                    c.oci(&["delete", "--force", &c.id]).ok(&format!("worker {w}: delete {i}"));
                }
                c.assert_gone();
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert!(processes_in_cgroups(&parent).is_empty());
    // The parent stays when its creator was deleted while another container still used it
    // (runc leaves every parent): an empty directory, removed here.
    for hierarchy in hierarchies() {
        let dir = Path::new("/sys/fs/cgroup").join(hierarchy).join(&parent);
        if let Err(e) = std::fs::remove_dir(&dir) {
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "removing {}", dir.display());
        }
    }
}

/// Another container's create may have made a shared parent and not yet given its v1 cpuset
/// any CPUs or memory nodes: a container created below it must still get them (a cpuset
/// without them is one no process can join), and run.
pub fn cpuset_below_a_parent_not_yet_filled_in() {
    let parent = format!("berth-emptycpuset-{}", std::process::id());
    let hierarchy = if is_cgroup2() { "" } else { "cpuset" };
    let root = Path::new("/sys/fs/cgroup").join(hierarchy);
    let parent_dir = root.join(&parent);
    std::fs::create_dir(&parent_dir).unwrap();
    if !is_cgroup2() {
        assert_eq!(read(parent_dir.join("cpuset.cpus")).trim(), "", "a new v1 cpuset starts empty");
    }
    let mut c = Ctr::new("emptycpuset", &["true"]);
    c.config()["linux"]["cgroupsPath"] = json!(format!("/{parent}/{}", c.id));
    c.create();
    if !is_cgroup2() {
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let want = read(root.join(f));
            assert_eq!(read(parent_dir.join(f)), want, "{f} of the parent");
            assert_eq!(read(c.cgroup_dir("cpuset").join(f)), want, "{f} of the container");
        }
    }
    c.start();
    c.wait_status("stopped");
    c.delete();
    c.assert_gone();
    std::fs::remove_dir(&parent_dir).unwrap();
}
