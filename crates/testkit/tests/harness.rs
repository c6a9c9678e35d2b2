//! The shared harness the suites use: commands run as children of the reaper, a terminal, the
//! host helpers (as root: it mounts). One test: a process has one reaper and one output
//! directory.

use std::process::Command;
use std::time::Duration;

use berth_testkit::check::{assert_contains, wait_until};
use berth_testkit::children::{run, run_with_stdin, spawn};
use berth_testkit::host::{is_mounted, kernel_at_least, unmount_all_under, xattr, UnmountOnDrop};
use berth_testkit::terminal::Terminal;

#[test]
fn children_terminal_mounts_and_xattrs() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the harness test runs as root");
    let dir = std::env::temp_dir().join(format!("berth-harness-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    berth_testkit::children::become_subreaper(&dir);

    // Commands: exit codes, output, stdin; an orphan of a command is reaped.
    let out = run(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"])).code("sh", 3);
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("out\n", "err\n"));
    assert_eq!(run_with_stdin(&mut Command::new("cat"), b"in\n").ok("cat").stdout, "in\n");
    let orphan = run(Command::new("sh").args(["-c", "sleep 0.2 & echo $!"])).ok("sh &").line();
    let orphan: i32 = orphan.parse().unwrap();
    wait_until("the orphan reaped", Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{orphan}")).exists()
    });
    let slow = spawn(Command::new("sh").args(["-c", "sleep 0.1; echo ready; sleep 1000"]), None);
    slow.wait_for_stdout("ready");
    // SAFETY: our own child, by pid.
    unsafe { libc::kill(slow.pid as i32, libc::SIGKILL) };
    assert_eq!(slow.wait(Duration::from_secs(10)).code, 128 + libc::SIGKILL);

    // A terminal: its size, a resize, keys, the exit code and everything shown.
    let term = Terminal::spawn(Command::new("sh"), 30, 100);
    term.write("stty size\n");
    term.wait_for("30 100");
    term.resize(40, 120);
    term.write("stty size; echo at-$((6*7)); exit 5\n");
    term.wait_for("at-42");
    let (code, shown) = term.wait();
    assert_eq!(code, 5, "{shown:?}");
    assert_contains(&shown, "40 120");

    // Mounts below a directory go when its guard does; deepest first.
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    run(Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&mnt)).ok("mount");
    std::fs::create_dir_all(mnt.join("inner")).unwrap();
    run(Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(mnt.join("inner"))).ok("mount inner");
    assert!(is_mounted(&mnt) && is_mounted(&mnt.join("inner")));
    drop(UnmountOnDrop(dir.clone()));
    assert!(!is_mounted(&mnt) && !is_mounted(&mnt.join("inner")));
    unmount_all_under(&dir); // nothing left: a no-op

    // Extended attributes of the path itself.
    let f = dir.join("f");
    std::fs::write(&f, "").unwrap();
    let path = std::ffi::CString::new(f.to_str().unwrap()).unwrap();
    // SAFETY: lsetxattr with NUL-terminated strings and a value of the length given.
    let set = unsafe { libc::lsetxattr(path.as_ptr(), c"user.berth".as_ptr(), b"value".as_ptr().cast(), 5, 0) };
    if set == 0 {
        assert_eq!(xattr(&f, "user.berth").as_deref(), Some(&b"value"[..]));
    } else {
        let e = std::io::Error::last_os_error();
        assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "lsetxattr: {e}");
        eprintln!("{}: no user xattrs on this filesystem: only the missing attribute is checked", dir.display());
    }
    assert_eq!(xattr(&f, "user.none"), None);

    assert!(kernel_at_least(3, 0) && !kernel_at_least(999, 0));
    std::fs::remove_dir_all(&dir).unwrap();
}
