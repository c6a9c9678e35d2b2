//! Regression tests for known container escapes: each one mounts the attack against berth-oci
//! and checks that it fails. None of them writes to the host's global state, even should the
//! defence break: they only observe where a write or a mount would have landed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::support::*;

/// Docker's default capabilities: what a container's root usually holds (no CAP_SYS_PTRACE).
const DOCKER_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

fn with_docker_caps(c: &mut Ctr) {
    let caps = json!(DOCKER_CAPS);
    c.config()["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []});
}

/// Drops the config's /dev tmpfs so that the rootfs's own /dev, which an image controls, is used.
fn use_image_dev(c: &mut Ctr) {
    c.mounts().retain(|m| m["destination"] != "/dev");
}

/// CVE-2019-5736: a container that gets the runtime's binary executed inside it (its program is
/// /proc/self/exe) and reaches a runtime process through /proc must not be able to overwrite the
/// binary on the host.
pub fn cve_2019_5736_runtime_binary_out_of_reach() {
    let binary_before = std::fs::read(&suite().bin).unwrap();

    // The attacker: root with Docker's capabilities in a container whose pid namespace a second
    // container joins. That one is only created, so its init, a berth-oci process, waits in
    // plain sight of the attacker.
    let mut attacker = Ctr::new("cve5736attacker", &["sleep", "1000"]);
    with_docker_caps(&mut attacker);
    let attacker_pid = attacker.create();
    attacker.start();
    let mut victim = Ctr::new("cve5736victim", &["true"]);
    for ns in victim.namespaces() {
        if ns["type"] == "pid" {
            ns["path"] = json!(format!("/proc/{attacker_pid}/ns/pid"));
        }
    }
    let victim_pid = victim.create();

    // A container whose program is /proc/self/exe runs the runtime inside it: a copy of it.
    // (The rootfs gets the libraries of a dynamically linked test build, as the victim's
    // init, a runtime process, has them mapped.)
    let mut probe = Ctr::with_own_rootfs("cve5736probe", &["/proc/self/exe", "--version"]);
    copy_libraries_of(victim_pid, &probe.rootfs());
    let out = probe.run().ok("running /proc/self/exe");
    assert_contains(&out.stdout, "berth-oci version");
    // The same through a script's interpreter line, which the kernel resolves.
    write_script(&probe.rootfs().join("evil"), "#!/proc/self/exe --version\n");
    probe.config()["process"]["args"] = json!(["/evil"]);
    let out = probe.run().ok("a script interpreted by /proc/self/exe");
    assert_contains(&out.stdout, "berth-oci version");

    // What the container sees as the runtime's binary is not the host's file but a read-only
    // view of it (a root runtime), and even the host's root cannot write to it: the file
    // system is read-only, not merely busy (ETXTBSY ends with the process).
    let exe = std::fs::read_link(format!("/proc/{victim_pid}/exe")).unwrap();
    assert_ne!(exe, std::fs::canonicalize(&suite().bin).unwrap(), "the init runs from the host's binary");
    let write = std::fs::OpenOptions::new().append(true).open(format!("/proc/{victim_pid}/exe"));
    assert_eq!(
        write.err().and_then(|e| e.raw_os_error()),
        Some(libc::EROFS),
        "writing to the init's executable {}",
        exe.display()
    );

    let script = r#"
        for p in /proc/[0-9]*; do
            [ "$p" = /proc/$$ ] && continue
            echo "seen $p $(readlink $p/exe 2>&1)"
            if (printf '#!/bin/sh\necho pwned\n' >> $p/exe) 2>/dev/null; then echo "WROTE $p"; fi
            if (cat $p/exe > /tmp/copy) 2>/dev/null && (printf x >> /tmp/copy) 2>/dev/null; then :; fi
        done"#;
    let out = attacker.oci(&["exec", &attacker.id, "sh", "-c", script]).ok("the attack");
    assert!(
        out.stdout.lines().filter(|l| l.starts_with("seen")).count() >= 2,
        "the victim's init is visible: {}",
        out.stdout
    );
    assert!(!out.stdout.contains("WROTE"), "a process's executable was written to:\n{}", out.stdout);
    victim.delete();
    attacker.delete();
    assert!(std::fs::read(&suite().bin).unwrap() == binary_before, "the runtime's binary on the host changed");
}

/// Copies the shared libraries the process `pid` has mapped into `rootfs`, at the same paths.
fn copy_libraries_of(pid: i32, rootfs: &Path) {
    let maps = read(format!("/proc/{pid}/maps"));
    let libraries: std::collections::BTreeSet<&str> =
        maps.lines().filter_map(|l| l.split_whitespace().nth(5)).filter(|p| p.contains(".so")).collect();
    // The loader under the name the binary asks for (which may be a symlink on the host).
    let interpreter = elf_interpreter(&std::fs::read(&suite().bin).unwrap());
    for path in libraries.into_iter().chain(interpreter.as_deref()).map(Path::new) {
        let real = std::fs::canonicalize(path).unwrap();
        // The file under its own name and every link to it beside it (the soname the loader
        // looks for, e.g. libseccomp.so.2 for libseccomp.so.2.5.4).
        let dir = path.parent().unwrap();
        let names = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p == path || std::fs::canonicalize(p).is_ok_and(|r| r == real));
        for name in names {
            let dest = rootfs.join(name.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&real, &dest).unwrap_or_else(|e| panic!("copying {}: {e}", name.display()));
        }
    }
}

/// The PT_INTERP of a 64-bit little-endian ELF file, if it has one.
fn elf_interpreter(elf: &[u8]) -> Option<String> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).map(|i| phoff + i * phentsize).find(|&ph| elf[ph..ph + 4] == 3u32.to_le_bytes()).map(|ph| {
        let (offset, size) = (u64_at(ph + 8), u64_at(ph + 32));
        String::from_utf8_lossy(&elf[offset..offset + size]).trim_end_matches('\0').to_string()
    })
}

/// CVE-2024-21626: no runtime descriptor reaches the container, and a working directory given as
/// a /proc/self/fd link cannot land outside the container's root (there, `..` climbs to the
/// host's root).
pub fn cve_2024_21626_no_leaked_descriptors_and_cwd_inside_root() {
    // Walk far up, then compare the directory reached with /.
    let climb = "cd ../../../../../../../../..; stat -c %d:%i . /";
    let inside = |out: &Output, what: &str| {
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{what}: {out:?}");
        assert_eq!(lines[0], lines[1], "{what}: `..` from the working directory climbed above the container's root");
    };
    let fds = Ctr::new("cve21626fds", &["ls", "/proc/self/fd"]);
    let listed = fds.output();
    assert_eq!(listed.split_whitespace().collect::<Vec<_>>(), ["0", "1", "2", "3"], "descriptors in the init");

    for n in 3..10 {
        let mut c = Ctr::new(&format!("cve21626cwd{n}"), &["sh", "-c", climb]);
        c.config()["process"]["cwd"] = json!(format!("/proc/self/fd/{n}"));
        let out = c.run();
        if out.code == 0 {
            inside(&out, &format!("process.cwd /proc/self/fd/{n}"));
        } else {
            assert_contains(&out.stderr, "process.cwd");
        }
        c.assert_gone();
    }

    // The same through exec, into a running container.
    let c = Ctr::new("cve21626exec", &["sleep", "1000"]);
    c.create();
    c.start();
    let out = c.oci(&["exec", &c.id, "ls", "/proc/self/fd"]).ok("exec ls");
    assert_eq!(out.stdout.split_whitespace().collect::<Vec<_>>(), ["0", "1", "2", "3"], "descriptors in exec");
    for n in 3..10 {
        let cwd = format!("/proc/self/fd/{n}");
        let out = c.oci(&["exec", "--cwd", &cwd, &c.id, "sh", "-c", climb]);
        if out.code == 0 {
            inside(&out, &format!("exec --cwd {cwd}"));
        } else {
            assert_contains(&out.stderr, "cwd");
        }
    }
    c.delete();
}

/// CVE-2019-19921 and CVE-2023-27561: an image whose /proc (or /sys) is a symlink or not a
/// directory must not get procfs or sysfs mounted wherever that leads.
pub fn cve_2019_19921_proc_and_sys_only_on_real_directories() {
    for dir in ["proc", "sys"] {
        for kind in ["symlink", "file"] {
            let c = Ctr::with_own_rootfs(&format!("cve19921{dir}{kind}"), &["true"]);
            let path = c.rootfs().join(dir);
            std::fs::remove_dir(&path).unwrap();
            std::fs::create_dir(c.rootfs().join("elsewhere")).unwrap();
            match kind {
                "symlink" => std::os::unix::fs::symlink("/elsewhere", &path).unwrap(),
                _ => std::fs::write(&path, "").unwrap(),
            }
            let out = c.create_raw().failed(&format!("/{dir} as a {kind}"));
            assert_contains(&out.stderr, &format!("/{dir}"));
            c.assert_gone();
            let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            assert!(!mounted.contains(c.rootfs().join("elsewhere").to_str().unwrap()));
        }
    }
}

/// CVE-2021-30465: while the runtime prepares a bind mount, another process swaps the target
/// directory with a symlink (here to /tmp, the host's /tmp were it followed by the kernel).
/// Each mount must land inside the container's root: where the container can see it.
pub fn cve_2021_30465_mount_target_swapped_during_create() {
    let mut c = Ctr::with_own_rootfs("cve30465", &["grep", "-c", "/cve30465/volume ", "/proc/self/mountinfo"]);
    let volume = c.dir.join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(volume.join("marker"), "").unwrap();
    let race = c.rootfs().join("race");
    std::fs::create_dir_all(race.join("dir")).unwrap();
    std::os::unix::fs::symlink("/tmp", race.join("link")).unwrap();
    c.mounts().push(json!({"destination": "/race/dir", "type": "bind", "source": volume, "options": ["rbind"]}));
    c.write_bundle();

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let (a, b) = (
            std::ffi::CString::new(race.join("dir").to_str().unwrap()).unwrap(),
            std::ffi::CString::new(race.join("link").to_str().unwrap()).unwrap(),
        );
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: renameat2 on two valid C strings.
                let r = unsafe {
                    libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), 2)
                };
                if r == 0 {
                    swaps += 1;
                }
            }
            swaps
        })
    };
    let mut landed = 0;
    for i in 0..40 {
        let out = c.oci(&["run", "--bundle", c.bundle.dir.to_str().unwrap(), &c.id]);
        if out.code == 0 {
            // The bind mount of the volume, wherever its mount point is named now.
            assert_eq!(out.stdout.trim(), "1", "iteration {i}: the volume is not mounted in the container");
            landed += 1;
        } else {
            // Refusing is safe too (the swap can leave a symlink where a directory was), but
            // it must say where.
            assert_contains(&out.stderr, "/race/");
        }
        assert!(!c.root.join(&c.id).exists(), "iteration {i} left state behind");
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 0, "the target was never swapped");
    assert!(landed > 0, "no container ran while the target was swapped");
    c.assert_gone();
}

/// CVE-2025-52881: the runtime's writes to /proc (sysctls, oom_score_adj) must land in the
/// container's own kernel objects, never in what a mount over /proc leads to. Mounts over /proc
/// files (here a host file bound over the very files written) are refused; the writes go
/// through the host's verified procfs.
pub fn cve_2025_52881_proc_writes_not_redirected() {
    for (name, dest) in [("shmmni", "/proc/sys/kernel/shmmni"), ("oom", "/proc/self/oom_score_adj")] {
        let mut c = Ctr::new(&format!("cve52881{name}"), &["true"]);
        let victim = c.dir.join("victim");
        std::fs::write(&victim, "original\n").unwrap();
        c.config()["linux"]["sysctl"] = json!({"kernel.shmmni": "4321"});
        c.config()["process"]["oomScoreAdj"] = json!(500);
        c.mounts().push(json!({"destination": dest, "type": "bind", "source": victim, "options": ["bind"]}));
        let out = c.run().failed(&format!("a bind mount over {dest}"));
        assert_contains(&out.stderr, dest);
        assert_eq!(read(&victim), "original\n", "a write meant for /proc landed in the bound file");
        c.assert_gone();
    }
    // Without the mounts the same writes reach the container's namespace and process.
    let mut c = Ctr::new("cve52881writes", &["sh", "-c", "cat /proc/sys/kernel/shmmni /proc/self/oom_score_adj"]);
    c.config()["linux"]["sysctl"] = json!({"kernel.shmmni": "4321"});
    c.config()["process"]["oomScoreAdj"] = json!(500);
    assert_eq!(c.output(), "4321\n500\n");
    assert_ne!(read("/proc/sys/kernel/shmmni").trim(), "4321", "the host's shmmni changed");
}

/// CVE-2025-31133: masked paths are hidden under /dev/null, and an image can make its /dev/null
/// a symlink to a writable /proc file. What the container finds at a masked path must be the
/// null device, whatever its /dev holds.
pub fn cve_2025_31133_masked_paths_use_the_real_dev_null() {
    for kind in ["symlink", "file"] {
        let mut c = Ctr::with_own_rootfs(&format!("cve31133{kind}"), &["stat", "-c", "%F %t:%T", "/proc/version"]);
        use_image_dev(&mut c);
        c.config()["linux"]["maskedPaths"].as_array_mut().unwrap().push(json!("/proc/version"));
        let null = c.rootfs().join("dev/null");
        std::fs::create_dir_all(null.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&null);
        match kind {
            "symlink" => std::os::unix::fs::symlink("/proc/sys/kernel/core_pattern", &null).unwrap(),
            _ => std::fs::write(&null, "").unwrap(),
        }
        let out = c.run();
        if out.code == 0 {
            assert_eq!(out.stdout.trim(), "character special file 1:3", "/proc/version masked with: {}", out.stdout);
        } else {
            assert_contains(&out.stderr, "/dev/null");
        }
        c.assert_gone();
    }
    // With the config's own /dev the masked path is still the null device.
    let mut c = Ctr::new("cve31133tmpfs", &["stat", "-c", "%F %t:%T", "/proc/version"]);
    c.config()["linux"]["maskedPaths"].as_array_mut().unwrap().push(json!("/proc/version"));
    assert_eq!(c.output().trim(), "character special file 1:3");
}

/// CVE-2025-52565: the pty is bound onto /dev/console; an image's /dev/console that is a
/// symlink (to a writable /proc file) must not redirect that mount.
pub fn cve_2025_52565_dev_console_symlink() {
    let mut c = Ctr::with_own_rootfs("cve52565", &["stat", "-L", "-c", "%F %t", "/dev/console"]);
    use_image_dev(&mut c);
    c.config()["process"]["terminal"] = json!(true);
    let console = c.rootfs().join("dev/console");
    std::fs::create_dir_all(console.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&console);
    std::os::unix::fs::symlink("/proc/sys/kernel/core_pattern", &console).unwrap();
    let out = c.run();
    if out.code == 0 {
        // 0x88 = 136, the pty slaves' major.
        assert_eq!(out.stdout.trim(), "character special file 88", "/dev/console is the pty: {out:?}");
    } else {
        assert_contains(&out.stderr, "/dev/console");
    }
    c.assert_gone();
    assert!(
        std::fs::symlink_metadata(&console).unwrap().file_type().is_symlink(),
        "the image's /dev/console was left as it was"
    );
    // The console is still there when /dev is the config's tmpfs.
    let mut t = Ctr::new("cve52565tmpfs", &["stat", "-c", "%F %t", "/dev/console"]);
    t.config()["process"]["terminal"] = json!(true);
    let out = t.run().ok("a terminal container");
    assert_contains(&out.stdout, "character special file 88");
}
