//! The leak check finds each kind of thing a suite can leave behind (as root).

use std::process::Command;
use std::time::Duration;

use berth_testkit::children::{run, spawn};
use berth_testkit::host::remove_cgroups;
use berth_testkit::leaks::{leaks, Scope};

#[test]
fn finds_processes_mounts_cgroups_state_and_rules() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the leak check test runs as root");
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("berth-leaks-test-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("mnt")).unwrap();
    berth_testkit::children::become_subreaper(&dir);
    std::fs::create_dir_all(dir.join("state/ctr1")).unwrap();
    let cgroup = format!("berth-leaks-test-{pid}");
    let scope = Scope {
        dir: dir.clone(),
        cgroup: cgroup.clone(),
        state_roots: vec![dir.join("state")],
        interfaces: vec!["lo".into()],
        markers: vec![format!("berth-leaks-{pid}")],
        ..Default::default()
    };
    // A process naming the directory, a mount under it, a container cgroup with a process in
    // it, an iptables rule carrying the marker.
    let sleeper = spawn(
        // (sh itself names the directory, as $0; what it runs ends within a second of it)
        Command::new("sh").args(["-c", "while :; do sleep 1; done"]).arg(&dir),
        None,
    );
    run(Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(dir.join("mnt"))).ok("mount");
    let parents: Vec<_> = berth_testkit::host::hierarchies()
        .into_iter()
        .filter(|h| h == "pids" || h.is_empty())
        .map(|h| std::path::Path::new("/sys/fs/cgroup").join(h).join(&cgroup))
        .collect();
    let parent = parents.first().expect("a pids (or v2) hierarchy").clone();
    std::fs::create_dir_all(parent.join("ctr")).unwrap();
    let comment = format!("berth-leaks-{pid}");
    let rule =
        ["-t", "filter", "-A", "OUTPUT", "-d", "192.0.2.1/32", "-m", "comment", "--comment", &comment, "-j", "ACCEPT"];
    run(Command::new("iptables").args(rule)).ok("iptables -A");

    let found = leaks(&scope);
    let has = |what: &str| found.iter().any(|l| l.contains(what));
    assert!(has(&format!("process {}", sleeper.pid)), "{found:#?}");
    assert!(has(&format!("mount {}", dir.join("mnt").display())), "{found:#?}");
    assert!(has(&format!("cgroup {}", parent.join("ctr").display())), "{found:#?}");
    assert!(has(&format!("runtime state {}", dir.join("state/ctr1").display())), "{found:#?}");
    assert!(has("network interface lo"), "{found:#?}");
    assert!(
        has(&format!("iptables -t filter: -A OUTPUT -d 192.0.2.1/32 -m comment --comment {comment}")),
        "{found:#?}"
    );

    // Cleaned up, nothing is found.
    let del: Vec<&str> = rule.iter().map(|a| if *a == "-A" { "-D" } else { a }).collect();
    run(Command::new("iptables").args(&del)).ok("iptables -D");
    unsafe { libc::kill(sleeper.pid as i32, libc::SIGKILL) };
    sleeper.wait(Duration::from_secs(10));
    run(Command::new("umount").arg(dir.join("mnt"))).ok("umount");
    std::fs::remove_dir(parent.join("ctr")).unwrap();
    std::fs::remove_dir(dir.join("state/ctr1")).unwrap();
    let clean = Scope { interfaces: vec![], ..scope.clone() };
    assert_eq!(leaks(&clean), Vec::<String>::new());
    remove_cgroups(&cgroup);
    assert!(!parent.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
