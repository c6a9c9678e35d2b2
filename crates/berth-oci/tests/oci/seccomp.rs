//! linux.seccomp: actions, argument filters, flags, the listener, exec's confinement.

use std::os::fd::{AsRawFd, OwnedFd};

use serde_json::{json, Value};

use crate::support::*;

fn with_tmp(c: &mut Ctr) {
    c.config()["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
}

fn profile(rules: Value) -> Value {
    json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], "syscalls": rules})
}

pub fn actions_and_argument_filters() {
    for nnp in [true, false] {
        let mut c = Ctr::new(
            &format!("seccomp{nnp}"),
            &["sh", "-c", "grep Seccomp: /proc/self/status; mkdir /tmp/a 2>&1; touch /tmp/f; chmod 4755 /tmp/f 2>&1; chmod 755 /tmp/f && echo chmod-ok; sync; echo after-sync"],
        );
        with_tmp(&mut c);
        c.config()["process"]["noNewPrivileges"] = json!(nnp);
        c.config()["linux"]["seccomp"] = profile(json!([
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            // chmod with the setuid bit in the mode (argument 1 of fchmodat, 1 of chmod)
            {"names": ["fchmodat", "chmod"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 1, "value": 2048, "valueTwo": 2048, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["sync"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["not_a_syscall_anywhere"], "action": "SCMP_ACT_ERRNO"}
        ]));
        let out = c.run();
        assert_eq!(out.code, 0, "{out:?}");
        // The shell's child running sync was killed by SIGSYS; the shell went on.
        assert_contains(&out.stderr, "Bad system call");
        assert_contains(&out.stdout, "Seccomp:\t2");
        assert_contains(&out.stdout, "Function not implemented");
        assert_contains(&out.stdout, "Operation not permitted");
        assert_contains(&out.stdout, "chmod-ok");
        assert_contains(&out.stdout, "after-sync");
        c.assert_gone();
    }
}

pub fn default_action_with_errno_and_flags() {
    let mut c = Ctr::new("seccompdefault", &["sh", "-c", "echo started; cat /proc/self/status | grep Seccomp_filters"]);
    // Everything denied but what busybox sh, cat and grep need here.
    let allowed = [
        "execve",
        "brk",
        "arch_prctl",
        "mmap",
        "munmap",
        "mprotect",
        "read",
        "write",
        "writev",
        "openat",
        "open",
        "close",
        "fstat",
        "newfstatat",
        "stat",
        "lseek",
        "getpid",
        "getppid",
        "getuid",
        "geteuid",
        "getgid",
        "getegid",
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "fcntl",
        "dup2",
        "dup3",
        "pipe",
        "pipe2",
        "clone",
        "clone3",
        "fork",
        "vfork",
        "wait4",
        "exit",
        "exit_group",
        "set_tid_address",
        "ioctl",
        "getcwd",
        "uname",
        "prlimit64",
        "getrandom",
        "sysinfo",
        "statx",
        "readlink",
        "access",
        "faccessat",
        "faccessat2",
        "poll",
        "getdents64",
        "sched_getaffinity",
        "gettid",
        "set_robust_list",
        "rseq",
        "futex",
        "madvise",
    ];
    c.config()["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [{"names": allowed.to_vec(), "action": "SCMP_ACT_ALLOW"}]
    });
    let out = c.run();
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, "started\nSeccomp_filters:\t1");
    // Under the same filter, a syscall outside the list fails with the default errno.
    let mut d = Ctr::new("seccompdeny", &["sh", "-c", "hostname x 2>&1 || echo denied"]);
    d.config()["linux"]["seccomp"] = c.config()["linux"]["seccomp"].clone();
    let out = d.run();
    assert_contains(&out.stdout, "Operation not permitted");
}

pub fn exec_gets_the_container_filter() {
    let mut c = Ctr::new("seccompexec", &["sleep", "1000"]);
    with_tmp(&mut c);
    c.config()["linux"]["seccomp"] =
        profile(json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]));
    c.create();
    c.start();
    let out = c.oci(&["exec", &c.id, "sh", "-c", "mkdir /tmp/d 2>&1; grep Seccomp: /proc/self/status"]).ok("exec");
    assert_contains(&out.stdout, "Permission denied");
    assert_contains(&out.stdout, "Seccomp:\t2");
    c.delete();
}

/// SCMP_ACT_NOTIFY: the listener gets the notification fd and the container's state, and
/// answers the container's syscalls.
pub fn notify_listener() {
    let mut c = Ctr::new("seccompnotify", &["sh", "-c", "mkdir /tmp/n 2>&1; echo done"]);
    with_tmp(&mut c);
    let sock = c.dir.join("listener.sock");
    let mut seccomp = profile(json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]));
    seccomp["listenerPath"] = json!(sock);
    seccomp["listenerMetadata"] = json!("answer=EACCES");
    c.config()["linux"]["seccomp"] = seccomp;
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let id = c.id.clone();
    let agent = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let (n, mut fds) = berth_sys::socket::recv_with_fds(&conn, &mut buf).unwrap();
        let msg: Value = serde_json::from_slice(&buf[..n]).unwrap();
        let fd: OwnedFd = fds.pop().expect("the seccomp fd");
        // Answer the one syscall that arrives.
        let req = libseccomp::ScmpNotifReq::receive(fd.as_raw_fd()).unwrap();
        let name = req.data.syscall.get_name().unwrap();
        libseccomp::ScmpNotifResp::new_error(req.id, -libc::EACCES, libseccomp::ScmpNotifRespFlags::empty())
            .respond(fd.as_raw_fd())
            .unwrap();
        (msg, name, id)
    });
    let out = c.run();
    let (msg, syscall, id) = agent.join().unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, "Permission denied");
    assert_contains(&out.stdout, "done");
    assert!(syscall.starts_with("mkdir"), "{syscall}");
    assert_eq!(msg["fds"], json!(["seccompFd"]));
    assert_eq!(msg["metadata"], "answer=EACCES");
    assert_eq!(msg["state"]["id"], id.as_str());
    assert!(msg["pid"].as_i64().unwrap() > 1);
}

pub fn bad_profiles_are_refused() {
    let cases = [
        ("seccompbadaction", json!({"defaultAction": "SCMP_ACT_SOMETIMES"}), "linux.seccomp.defaultAction"),
        (
            "seccompbadindex",
            profile(
                json!([{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]),
            ),
            "linux.seccomp.syscalls[0].args[0].index",
        ),
        (
            "seccompbaderrno",
            profile(json!([{"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 100000}])),
            "linux.seccomp.syscalls[0]",
        ),
        (
            "seccompbadarch",
            json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}),
            "linux.seccomp.architectures",
        ),
        ("seccompnolistener", profile(json!([{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}])), "listenerPath"),
    ];
    for (name, seccomp, field) in cases {
        let mut c = Ctr::new(name, &["true"]);
        c.config()["linux"]["seccomp"] = seccomp;
        let out = c.create_raw().failed(name);
        assert_contains(&out.stderr, field);
        c.assert_gone();
    }
}
