//! The runtime-spec conformance gaps found by running the runtime-spec's validation suite and
//! crun's test suite against berth-oci (issue 10), one test each. They run against runc and
//! crun too (tools/test-oci-peers.sh); where a peer behaves differently, main.rs's
//! DIFFERENCES says which is right per the runtime-spec and the test is skipped for that peer,
//! loudly.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::*;

/// `create` with a JSON --log: its output and the log's records.
fn create_logged(c: &Ctr) -> (Output, Vec<Value>) {
    c.write_bundle();
    let log = c.dir.join("log.json");
    let _ = std::fs::remove_file(&log);
    let out = c.oci(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "--bundle",
        c.bundle.dir.to_str().unwrap(),
        &c.id,
    ]);
    let records = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (out, records)
}

/// The warnings of a berth-oci log.
fn warnings(records: &[Value]) -> String {
    records
        .iter()
        .filter(|r| r["level"] == "warning")
        .map(|r| r["msg"].as_str().unwrap_or("").to_string() + "\n")
        .collect()
}

fn start_and_wait(c: &Ctr) {
    c.start();
    c.wait_status("stopped");
}

// ------------------------------------------------------------------------------------- seccomp

/// (Item 1.) The runtime's own work after the filter is loaded (closing its descriptors, waiting for
/// `start`) never depends on what the container's profile allows: a profile that denies the
/// calls it could use (close_range, openat, fcntl, getdents64) still runs, with and without
/// no_new_privs, for the container's process and an exec'd one.
pub fn seccomp_profile_denying_the_runtimes_housekeeping() {
    let denied = ["close_range", "openat", "openat2", "open", "fcntl", "getdents64", "getdents"];
    for nnp in [false, true] {
        let mut c = Ctr::new(&format!("housekeeping{nnp}"), &["sleep", "1000"]);
        c.config()["process"]["noNewPrivileges"] = json!(nnp);
        c.config()["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
        c.create();
        c.start();
        assert_eq!(c.status(), "running");
        let out = c.oci(&["exec", &c.id, "echo", "exec-ok"]).ok("exec under the profile");
        assert_eq!(out.stdout, "exec-ok\n");
        c.delete();
        c.assert_gone();
    }
}

/// (Item 1b.) Syscalls newer than any the profile lists answer ENOSYS, not the default errno, so
/// programs fall back (clone3 to clone); older ones left out get the default errno.
pub fn seccomp_enosys_for_syscalls_newer_than_the_profile() {
    // What the probe and the runtime's identity switch need; rseq (334) is the newest listed.
    let allowed = [
        "execve",
        "brk",
        "arch_prctl",
        "set_tid_address",
        "set_robust_list",
        "rseq",
        "prlimit64",
        "readlink",
        "getrandom",
        "mprotect",
        "mmap",
        "munmap",
        "newfstatat",
        "fstat",
        "write",
        "read",
        "close",
        "exit",
        "exit_group",
        "prctl",
        "capget",
        "capset",
        "setgroups",
        "setresuid",
        "setresgid",
        "getuid",
    ];
    for nnp in [false, true] {
        let mut c = Ctr::new(&format!("enosys{nnp}"), &["/probe", "errnos"]);
        c.with_probe();
        c.config()["process"]["noNewPrivileges"] = json!(nnp);
        c.config()["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
        });
        let out = c.run();
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.stdout, format!("newer={} older={}\n", libc::ENOSYS, libc::EPERM), "noNewPrivileges {nnp}");
        c.assert_gone();
    }
}

// ------------------------------------------------------------------------------------- cgroups

/// (Item 2.) memory.kernel and memory.kernelTCP are accepted (the runtime-spec deprecates them; the
/// kernel no longer has kernel memory limits); what cannot be applied is a warning.
pub fn kernel_memory_limits_accepted() {
    let mut c = Ctr::new("kmem", &["true"]);
    c.config()["linux"]["resources"]["memory"] = json!({"limit": 64 << 20, "kernel": 16 << 20, "kernelTCP": 8 << 20});
    let (out, log) = create_logged(&c);
    let out = out.ok("create with kernel memory limits");
    assert!(out.stderr.is_empty() || !is_berth(), "{}", out.stderr);
    if is_berth() {
        assert_contains(&warnings(&log), "linux.resources.memory.kernel");
    }
    // And by `update`.
    let resources = c.dir.join("resources.json");
    std::fs::write(&resources, json!({"memory": {"kernel": 32 << 20, "kernelTCP": 4 << 20}}).to_string()).unwrap();
    c.oci(&["update", "--resources", resources.to_str().unwrap(), &c.id]).ok("update with kernel memory limits");
    start_and_wait(&c);
    c.delete();
    c.assert_gone();
}

/// (Item 9.) SCHED_FIFO and SCHED_RR need real-time CPU time in the container's cgroup where the
/// kernel schedules real-time groups (v1 cpu.rt_runtime_us): the container gets it from its
/// parent, or a clear error says the parent has none.
pub fn realtime_scheduler_in_a_new_cgroup() {
    let _rt = REALTIME.lock().unwrap_or_else(|e| e.into_inner());
    let cpu_root = Path::new("/sys/fs/cgroup/cpu");
    let rt_groups = cpu_root.join("cpu.rt_runtime_us").exists();
    if is_cgroup2() {
        // cgroup v2 has no real-time budget per group: the policy is granted, or (a kernel with
        // real-time group scheduling) refused clearly.
        let mut c = Ctr::new("rtv2", &["true"]);
        c.config()["process"]["scheduler"] = json!({"policy": "SCHED_FIFO", "priority": 10});
        let out = c.run();
        if out.code != 0 && is_berth() {
            assert_contains(&out.stderr, "process.scheduler");
        }
        c.assert_gone();
        return;
    }
    let budget: i64 = if rt_groups { read(cpu_root.join("cpu.rt_runtime_us")).trim().parse().unwrap() } else { -1 };
    for policy in ["SCHED_FIFO", "SCHED_RR"] {
        let mut c = Ctr::new(&format!("rt{}", policy.to_lowercase()), &["true"]);
        c.config()["process"]["scheduler"] = json!({"policy": policy, "priority": 10});
        if !rt_groups || budget != 0 {
            c.create();
            let pid = c.pid();
            let expected = if policy == "SCHED_FIFO" { libc::SCHED_FIFO } else { libc::SCHED_RR };
            // SAFETY: reading another process's policy.
            assert_eq!(unsafe { libc::sched_getscheduler(pid) }, expected);
            if rt_groups {
                let mine: i64 = read(c.cgroup_dir("cpu").join("cpu.rt_runtime_us")).trim().parse().unwrap();
                assert!(mine > 0, "the container's cgroup got no real-time runtime");
            }
            start_and_wait(&c);
            c.delete();
            // What the parents were given for it is taken back.
            let parent = cpu_root.join(&suite().cgroup_prefix);
            if rt_groups && parent.exists() {
                assert_eq!(read(parent.join("cpu.rt_runtime_us")).trim(), "0", "the parent kept real-time runtime");
            }
        } else {
            let out = c.create_raw().failed("a real-time policy without real-time budget");
            if is_berth() {
                assert_contains(&out.stderr, "process.scheduler.policy");
            }
        }
        c.assert_gone();
    }
    // An exec'd process asking for it gets it the same way.
    if !rt_groups || budget != 0 {
        let e = Ctr::new("rtexec", &["sleep", "1000"]);
        e.create();
        e.start();
        let process = e.dir.join("process.json");
        std::fs::write(
            &process,
            json!({"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                   "scheduler": {"policy": "SCHED_FIFO", "priority": 5}})
            .to_string(),
        )
        .unwrap();
        e.oci(&["exec", "--process", process.to_str().unwrap(), &e.id]).ok("exec with a real-time policy");
        e.delete();
        let parent = cpu_root.join(&suite().cgroup_prefix);
        if rt_groups && parent.exists() {
            assert_eq!(read(parent.join("cpu.rt_runtime_us")).trim(), "0", "the parent kept real-time runtime");
        }
        e.assert_gone();
    }
}

// ------------------------------------------------------------------------------------- mounts

/// (Item 3.) Without a mount namespace the container shares the runtime's: no pivot_root, nothing in
/// the host's mount table, its root is root.path. What needs a mount namespace of its own is a
/// clear error naming the field.
pub fn no_mount_namespace() {
    let mut c = Ctr::new("nomntns", &["sleep", "1000"]);
    c.without_namespace("mount");
    for field in ["mounts", "maskedPaths", "readonlyPaths"] {
        if field == "mounts" {
            c.config()["mounts"] = json!([]);
        } else {
            c.config()["linux"][field] = json!([]);
        }
    }
    c.config()["root"]["readonly"] = json!(false);
    let mountinfo_before = read("/proc/self/mountinfo").lines().count();
    let pid = c.create();
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap(), host_mnt, "a mount namespace was made");
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/root")).unwrap(), c.rootfs(), "the root is not root.path");
    c.start();
    let out = c.oci(&["exec", &c.id, "ls", "/"]).ok("exec without a mount namespace");
    assert_contains(&out.stdout, "bin\n");
    assert!(read("/proc/self/mountinfo").lines().count() <= mountinfo_before, "the host's mount table grew");
    c.delete();
    c.assert_gone();
    // What a shared mount table cannot take.
    type Edit = fn(&mut Value);
    let refused: [(&str, &str, Edit); 4] = [
        ("mounts", "mounts", |c| c["mounts"] = json!([{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}])),
        ("masked", "linux.maskedPaths", |c| c["linux"]["maskedPaths"] = json!(["/proc/kcore"])),
        ("readonly", "linux.readonlyPaths", |c| c["linux"]["readonlyPaths"] = json!(["/proc/sys"])),
        ("propagation", "linux.rootfsPropagation", |c| c["linux"]["rootfsPropagation"] = json!("private")),
    ];
    for (name, field, edit) in refused {
        let mut r = Ctr::new(&format!("nomntns{name}"), &["true"]);
        r.without_namespace("mount");
        r.config()["mounts"] = json!([]);
        r.config()["linux"]["maskedPaths"] = json!([]);
        r.config()["linux"]["readonlyPaths"] = json!([]);
        r.config()["root"]["readonly"] = json!(false);
        edit(r.config());
        let out = r.create_raw().failed(name);
        if is_berth() {
            assert_contains(&out.stderr, field);
        }
        r.assert_gone();
    }
}

/// (Item 4.) A mount namespace given by path is joined: the container's process is in it, its root
/// is root.path, and the namespace (someone else's) is not changed.
pub fn mount_namespace_joined_by_path() {
    let a = Ctr::new("mntnsowner", &["sleep", "1000"]);
    let apid = a.create();
    let theirs = std::fs::read_link(format!("/proc/{apid}/ns/mnt")).unwrap();
    let their_mounts = read(format!("/proc/{apid}/mountinfo"));
    let mut b = Ctr::new("mntnsjoiner", &["sleep", "1000"]);
    for n in b.namespaces() {
        if n["type"] == "mount" {
            n["path"] = json!(format!("/proc/{apid}/ns/mnt"));
        }
    }
    b.config()["mounts"] = json!([]);
    b.config()["linux"]["maskedPaths"] = json!([]);
    b.config()["linux"]["readonlyPaths"] = json!([]);
    b.config()["root"]["readonly"] = json!(false);
    let bpid = b.create();
    assert_eq!(std::fs::read_link(format!("/proc/{bpid}/ns/mnt")).unwrap(), theirs, "not in the given namespace");
    assert_eq!(read(format!("/proc/{apid}/mountinfo")), their_mounts, "the joined namespace's mounts changed");
    b.start();
    let out = b.oci(&["exec", &b.id, "ls", "/"]).ok("exec into a joined mount namespace");
    assert_contains(&out.stdout, "bin\n");
    b.delete();
    a.delete();
    b.assert_gone();
}

/// (Item 5.) rootfsPropagation: unbindable (and the other values) apply to the container's /.
pub fn rootfs_propagation_unbindable() {
    // The spec's values; berth-oci also takes the r-prefixed ones.
    let mut values = vec![("unbindable", "unbindable"), ("shared", "shared:")];
    if is_berth() {
        values.push(("runbindable", "unbindable"));
    }
    for (value, field) in values {
        let mut c = Ctr::new(&format!("prop{value}"), &["awk", "$5 == \"/\"", "/proc/self/mountinfo"]);
        c.config()["linux"]["rootfsPropagation"] = json!(value);
        let out = c.run().ok(value);
        assert_contains(&out.stdout, field);
        c.assert_gone();
    }
}

/// (Item 6.) Filesystem options given to a bind mount do not apply to it: accepted and ignored, as
/// runc does, and the log says so.
pub fn bind_mount_with_data_options() {
    let src = suite().dir.join("bind-data-source");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "bound\n").unwrap();
    let mut c = Ctr::new("binddata", &["cat", "/data/f"]);
    c.mounts().push(
        json!({"destination": "/data", "type": "bind", "source": src, "options": ["rbind", "ro", "mode=755", "size=1m"]}),
    );
    let (out, log) = create_logged(&c);
    out.ok("create with data options on a bind mount");
    if is_berth() {
        let w = warnings(&log);
        assert_contains(&w, "mode=755");
        assert_contains(&w, "does not apply to a bind mount");
    }
    c.delete();
    assert_eq!(c.output(), "bound\n");
}

// ------------------------------------------------------------------------------------- process

/// (Item 7.) linux.memoryPolicy: every mode and flag the spec lists, through set_mempolicy, as the
/// container's process sees it (/proc/self/numa_maps).
pub fn memory_policy() {
    if !Path::new("/proc/self/numa_maps").exists() {
        // A kernel without NUMA: the policy is refused, naming the field.
        let mut c = Ctr::new("mempolicynonuma", &["true"]);
        c.config()["linux"]["memoryPolicy"] = json!({"mode": "MPOL_BIND", "nodes": "0"});
        let out = c.create_raw().failed("a memory policy without NUMA");
        if is_berth() {
            assert_contains(&out.stderr, "linux.memoryPolicy");
        }
        return;
    }
    let weighted = Path::new("/sys/kernel/mm/mempolicy/weighted_interleave").exists();
    let mut cases = vec![
        (json!({"mode": "MPOL_DEFAULT"}), " default "),
        (json!({"mode": "MPOL_LOCAL"}), " local "),
        (json!({"mode": "MPOL_BIND", "nodes": "0"}), " bind:0 "),
        (json!({"mode": "MPOL_INTERLEAVE", "nodes": "0"}), " interleave:0 "),
        (json!({"mode": "MPOL_PREFERRED", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]}), " prefer=static:0 "),
        (json!({"mode": "MPOL_PREFERRED_MANY", "nodes": "0"}), " prefer (many):0 "),
        (json!({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_RELATIVE_NODES"]}), " bind=relative:0 "),
    ];
    if weighted {
        cases.push((json!({"mode": "MPOL_WEIGHTED_INTERLEAVE", "nodes": "0"}), " weighted interleave:0 "));
        cases.push((
            json!({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_NUMA_BALANCING"]}),
            " bind=balancing:0 ",
        ));
    }
    for (i, (policy, shown)) in cases.into_iter().enumerate() {
        let mut c = Ctr::new(&format!("mempolicy{i}"), &["head", "-2", "/proc/self/numa_maps"]);
        c.config()["linux"]["memoryPolicy"] = policy.clone();
        let out = c.run();
        assert_eq!(out.code, 0, "{policy}: {out:?}");
        assert!(
            out.stdout.lines().nth(1).is_some_and(|l| l.contains(shown)),
            "{policy}: expected {shown:?} in {}",
            out.stdout
        );
        c.assert_gone();
    }
    // The container's policy holds for its exec'd processes too.
    let mut e = Ctr::new("mempolicyexec", &["sleep", "1000"]);
    e.config()["linux"]["memoryPolicy"] = json!({"mode": "MPOL_INTERLEAVE", "nodes": "0"});
    e.create();
    e.start();
    let out = e.oci(&["exec", &e.id, "head", "-2", "/proc/self/numa_maps"]).ok("exec");
    assert!(out.stdout.lines().nth(1).is_some_and(|l| l.contains(" interleave:0 ")), "{}", out.stdout);
    e.delete();
    // The spec's rules and what this host has not: refused, naming the field.
    let refused = [
        json!({"mode": "MPOL_BIND"}),
        json!({"mode": "MPOL_INTERLEAVE", "nodes": ""}),
        json!({"mode": "MPOL_PREFERRED", "nodes": "bad"}),
        json!({"mode": "MPOL_PREFERRED", "nodes": "10284838"}),
        json!({"mode": "MPOL_PREFERRED", "nodes": "0", "flags": ["MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES"]}),
        json!({"mode": "MPOL_PREFERRED", "nodes": "0", "flags": ["MPOL_F_NUMA_BALANCING"]}),
        json!({"mode": "MPOL_NOSUCH", "nodes": "0"}),
    ];
    for (i, policy) in refused.into_iter().enumerate() {
        let mut c = Ctr::new(&format!("mempolicybad{i}"), &["true"]);
        c.config()["linux"]["memoryPolicy"] = policy.clone();
        let out = c.create_raw();
        assert_ne!(out.code, 0, "{policy} was accepted");
        if is_berth() {
            assert_contains(&out.stderr, "linux.memoryPolicy");
        }
        c.assert_gone();
    }
}

/// (Item 8.) process.scheduler.flags by the runtime-spec's names (SCHED_FLAG_RESET_ON_FORK, ...).
pub fn scheduler_flags_by_their_spec_names() {
    let mut c = Ctr::new("schedflags", &["/probe", "sched"]);
    c.with_probe();
    c.config()["process"]["scheduler"] =
        json!({"policy": "SCHED_BATCH", "nice": 3, "flags": ["SCHED_FLAG_RESET_ON_FORK"]});
    let out = c.run().ok("scheduler flags by their spec names");
    assert_eq!(out.stdout, "policy=3 flags=1 priority=0 nice=3\n");
    c.assert_gone();
    // Every flag the spec lists is a known name (whether this kernel takes it for this policy
    // is another matter: only the parse is checked here).
    let mut all = Ctr::new("schedallflags", &["true"]);
    all.config()["process"]["scheduler"] = json!({"policy": "SCHED_OTHER", "flags": [
        "SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_RECLAIM", "SCHED_FLAG_DL_OVERRUN", "SCHED_FLAG_KEEP_POLICY",
        "SCHED_FLAG_KEEP_PARAMS", "SCHED_FLAG_UTIL_CLAMP_MIN", "SCHED_FLAG_UTIL_CLAMP_MAX"
    ]});
    let out = all.create_raw();
    if out.code != 0 {
        assert!(!out.stderr.contains("unknown variant"), "a spec flag name was not understood: {}", out.stderr);
    } else {
        all.delete();
    }
    all.assert_gone();
    let mut bad = Ctr::new("schedbadflag", &["true"]);
    bad.config()["process"]["scheduler"] = json!({"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_NOPE"]});
    let out = bad.create_raw().failed("an unknown scheduler flag");
    if is_berth() {
        assert_contains(&out.stderr, "process.scheduler.flags[0]");
        assert_contains(&out.stderr, "`SCHED_FLAG_RESET_ON_FORK`");
    }
    bad.assert_gone();
}

/// (Item 10.) HOME comes from the container's /etc/passwd entry for the user (or is /) when
/// process.env has none; a HOME given is kept. Likewise for exec.
pub fn home_from_passwd() {
    let cases =
        [(0, None, "/root"), (1000, None, "/home/user"), (4242, None, "/"), (1000, Some("/elsewhere"), "/elsewhere")];
    for (i, (uid, given, want)) in cases.into_iter().enumerate() {
        let mut c = Ctr::new(&format!("home{i}"), &["sh", "-c", "echo $HOME"]);
        c.config()["process"]["user"] = json!({"uid": uid, "gid": uid});
        let env = c.config()["process"]["env"].as_array_mut().unwrap();
        env.retain(|e| !e.as_str().unwrap().starts_with("HOME="));
        if let Some(home) = given {
            env.push(json!(format!("HOME={home}")));
        }
        assert_eq!(c.output(), format!("{want}\n"), "uid {uid}");
    }
    let mut e = Ctr::new("homeexec", &["sleep", "1000"]);
    e.config()["process"]["env"].as_array_mut().unwrap().retain(|e| !e.as_str().unwrap().starts_with("HOME="));
    e.create();
    e.start();
    let out = e.oci(&["exec", "--user", "1000:1000", &e.id, "sh", "-c", "echo $HOME"]).ok("exec");
    assert_eq!(out.stdout, "/home/user\n");
    e.delete();
}

/// (Item 11.) The container's process and an exec'd one each lead a session of their own.
pub fn processes_lead_their_own_session() {
    let mut c = Ctr::new("session", &["sh", "-c", "/probe session; sleep 1000"]);
    c.with_probe();
    c.without_namespace("pid");
    let pid = c.create();
    c.start();
    let stat = read(format!("/proc/{pid}/stat"));
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    assert_eq!(fields[3], pid.to_string(), "the container's process does not lead its session: {stat}");
    let out = c.oci(&["exec", &c.id, "/probe", "session"]).ok("exec");
    let line = out.stdout.trim();
    let pid_of = |k: &str| line.split_whitespace().find_map(|f| f.strip_prefix(k)).unwrap().to_string();
    assert_eq!(pid_of("sid="), pid_of("pid="), "exec: {line}");
    assert_eq!(pid_of("pgrp="), pid_of("pid="), "exec: {line}");
    c.delete();
}

/// (Item 16.) A failing exec says which step failed.
pub fn exec_cwd_error_names_the_step() {
    let c = Ctr::new("execcwd", &["sleep", "1000"]);
    c.create();
    c.start();
    let out = c.oci(&["exec", "--cwd", "/no/such/dir", &c.id, "true"]).failed("exec in a missing cwd");
    if is_berth() {
        assert_contains(&out.stderr, "chdir to /no/such/dir: no such file or directory");
    }
    c.delete();
}

// ------------------------------------------------------------------------------------- namespaces

/// (Item 14.) A new network namespace has its loopback interface up.
pub fn loopback_up_in_a_new_network_namespace() {
    let c = Ctr::new("loopback", &["cat", "/sys/class/net/lo/flags"]);
    let flags = c.output();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & libc::IFF_UP as u32, libc::IFF_UP as u32, "lo is down: {flags:#x}");
}

/// (Item 15.) kernel.hostname and kernel.domainname conflict with hostname and domainname: refused.
pub fn hostname_sysctls_refused() {
    for key in ["kernel.hostname", "kernel.domainname"] {
        let mut c = Ctr::new(&format!("sysctl{}", key.replace('.', "")), &["true"]);
        c.config()["linux"]["sysctl"] = json!({key: "other"});
        let out = c.create_raw().failed(key);
        if is_berth() {
            assert_contains(&out.stderr, &format!("linux.sysctl.{key}"));
        }
        c.assert_gone();
    }
}

// ------------------------------------------------------------------------------------- hooks

fn script(path: &Path, body: &str) {
    write_script(path, &format!("#!/bin/sh\n{body}\n"));
}

/// (Item 12.) A hook without `env` gets its caller's environment (execv's semantics, as runc and
/// crun give it): the runtime's for the hooks run in the runtime's namespaces, the container
/// process's for those run in the container (as in runc's init). With `env`, exactly that.
pub fn hooks_environment() {
    let mut c = Ctr::new("hookenv", &["true"]);
    let out = c.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let hook = c.dir.join("env.sh");
    script(&hook, &format!("env > {}/$1", out.display()));
    c.config()["process"]["env"].as_array_mut().unwrap().push(json!("BERTH_PROCESS_MARKER=from-the-process"));
    c.config()["hooks"] = json!({
        "prestart": [
            {"path": hook, "args": ["env.sh", "inherited"]},
            {"path": hook, "args": ["env.sh", "given"], "env": ["ONLY=this"]},
            {"path": hook, "args": ["env.sh", "empty"], "env": []},
        ],
        "createContainer": [{"path": hook, "args": ["env.sh", "in-container"]}],
    });
    let mut cmd = c.command(&["create", "--bundle", c.bundle.dir.to_str().unwrap(), &c.id]);
    cmd.env("BERTH_HOOK_MARKER", "from-the-runtime");
    c.write_bundle();
    run(&mut cmd).ok("create");
    let inherited = read(out.join("inherited"));
    assert!(
        inherited.contains("BERTH_HOOK_MARKER=from-the-runtime") && !inherited.contains("BERTH_PROCESS_MARKER"),
        "{inherited}"
    );
    let given = read(out.join("given"));
    assert!(given.contains("ONLY=this") && !given.contains("BERTH_HOOK_MARKER"), "{given}");
    assert!(!read(out.join("empty")).contains("BERTH_HOOK_MARKER"));
    let in_container = read(out.join("in-container"));
    assert!(
        in_container.contains("BERTH_PROCESS_MARKER=from-the-process") && !in_container.contains("BERTH_HOOK_MARKER"),
        "{in_container}"
    );
    c.delete();
}

/// (Item 13.) The state given to prestart, createRuntime and createContainer hooks says `created`:
/// the create operation's environment is complete by then.
pub fn hook_state_is_created() {
    let mut c = Ctr::new("hookstate", &["true"]);
    let out = c.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let hook = c.dir.join("state.sh");
    script(&hook, &format!("cat > {}/$1", out.display()));
    let h = |name: &str| json!({"path": hook, "args": ["state.sh", name]});
    c.config()["hooks"] = json!({"prestart": [h("prestart")], "createRuntime": [h("createRuntime")], "createContainer": [h("createContainer")]});
    c.create();
    for name in ["prestart", "createRuntime", "createContainer"] {
        let state: Value = serde_json::from_str(&read(out.join(name))).unwrap();
        assert_eq!(state["status"], "created", "{name}");
    }
    c.delete();
}

/// (Item 17.) A failing poststart hook is a warning: the remaining hooks run and the container runs
/// (runtime-spec: "the runtime MUST log a warning, but the remaining hooks and lifecycle
/// continue as if the hook had succeeded").
pub fn poststart_failure_is_a_warning() {
    let mut c = Ctr::new("poststartfail", &["sleep", "1000"]);
    let marker = c.dir.join("second-ran");
    let fail = c.dir.join("fail.sh");
    // It reads its state first: not reading it is the stress test's case (crun 1.8 dies of SIGPIPE
    // then, exit 141, as berth-oci's init did).
    script(&fail, "cat > /dev/null; exit 3");
    let second = c.dir.join("second.sh");
    script(&second, &format!("touch {}", marker.display()));
    c.config()["hooks"] = json!({"poststart": [{"path": fail}, {"path": second}]});
    c.create();
    c.oci(&["start", &c.id]).ok("start with a failing poststart hook");
    assert_eq!(c.status(), "running");
    assert!(marker.exists(), "the poststart hook after the failing one did not run");
    c.delete();
}

/// (Item 18.) Hooks that exit without reading their state: a few hundred containers in a row all
/// start and exit 0. The state written to a hook that had already gone raised SIGPIPE in the
/// writer: in the container's init (createContainer, startContainer) it killed the init, in a
/// foreground `run` (prestart, poststart) it was forwarded to the container.
pub fn hooked_containers_stress() {
    let mut c = Ctr::new("hookstress", &["echo", "ran"]);
    let t = json!([{"path": "/bin/true"}]);
    c.config()["hooks"] = json!({"prestart": t, "createContainer": t, "startContainer": t, "poststart": t});
    c.write_bundle();
    for i in 0..300 {
        let id = format!("{}-{i}", c.id);
        let out = run(&mut c.command(&["run", "--bundle", c.bundle.dir.to_str().unwrap(), &id]));
        assert_eq!((out.code, out.stdout.as_str()), (0, "ran\n"), "run {i}: {}", out.stderr);
    }
    c.assert_gone();
}
