//! podman 4 (with conmon) driving berth-oci: `podman --runtime <berth-oci>` in a private store.
//! Each test checks from outside that berth-oci ran the container (its own state says so, with
//! the pid podman reports, and its --log file exists), then what the container did, and that
//! nothing remains once podman removed it.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use berth_testkit::callers::Podman;

use crate::support::*;

pub const IMAGE: &str = "localhost/busybox:latest";

struct Env {
    podman: Podman,
}

static ENV: OnceLock<Result<Env, String>> = OnceLock::new();

fn env() -> &'static Env {
    ENV.get_or_init(setup).as_ref().unwrap_or_else(|e| panic!("setting up podman: {e}"))
}

fn setup() -> Result<Env, String> {
    for tool in ["podman", "conmon"] {
        crate::require_tool(tool)?;
    }
    let podman = Podman::setup(&suite().dir.join("podman")).map_err(|e| e.to_string())?;
    let archive = crate::busybox_archive();
    let out = run(podman.command(&suite().bin).args(["load", "-i"]).arg(archive));
    if out.code != 0 {
        return Err(format!("podman load: {} {}", out.stdout, out.stderr));
    }
    Ok(Env { podman })
}

/// `podman` in the private store with berth-oci as its runtime.
fn podman(args: &[&str]) -> Command {
    let mut cmd = env().podman.command(&suite().bin);
    cmd.args(args);
    cmd
}

/// `podman run`/`create` options every test container gets: its name and our cgroup parent
/// (the network is "none" and the ulimits fit this host, from our containers.conf).
fn ctr_opts(name: &str) -> Vec<String> {
    vec!["--name".into(), name.into(), "--cgroup-parent".into(), format!("/{}", suite().cgroup_prefix)]
}

fn inspect(name: &str, format: &str) -> String {
    run(&mut podman(&["inspect", "--format", format, name])).ok("podman inspect").stdout.trim().to_string()
}

/// Removes the container when the test ends, however it ends.
struct Removed(String);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = run(&mut podman(&["rm", "--force", "--time", "0", &self.0]));
    }
}

fn runtime_root() -> &'static Path {
    Path::new(PODMAN_RUNTIME_ROOT)
}

/// Checks that berth-oci runs container `name` now: podman names berth-oci as its runtime,
/// berth-oci's state has it running with podman's pid, in the cgroup podman asked for, and the
/// --log file podman passes exists. Returns the container's id.
fn assert_runs_under_berth_oci(name: &str) -> String {
    let id = inspect(name, "{{.Id}}");
    assert_eq!(inspect(name, "{{.OCIRuntime}}"), suite().bin.display().to_string(), "podman's runtime");
    let pid = inspect(name, "{{.State.Pid}}");
    let (status, runtime_pid) = runtime_state(runtime_root(), &id)
        .unwrap_or_else(|| panic!("berth-oci has no state for {id} under {PODMAN_RUNTIME_ROOT}"));
    assert_eq!(status, "running", "berth-oci's status of {name}");
    assert_eq!(runtime_pid.to_string(), pid, "berth-oci's pid and podman's");
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_contains(&cgroup, &format!("/{}/libpod-{id}", suite().cgroup_prefix));
    let log = env().podman.runtime_log(&id);
    assert!(log.exists(), "berth-oci's --log file {} is missing", log.display());
    id
}

fn assert_gone(id: &str) {
    assert_container_gone(runtime_root(), id, &format!("libpod-{id}"));
}

// ------------------------------------------------------------------------------------- tests

/// `podman run --rm` in the foreground: output, exit code, and removal.
pub fn run_foreground() {
    let name = unique("fg");
    let _rm = Removed(name.clone());
    let sync = sync_dir(&name);
    let mut cmd = podman(&["run", "--rm"]);
    cmd.args(ctr_opts(&name)).arg("-v").arg(format!("{}:/sync", sync.display())).args([
        IMAGE,
        "sh",
        "-c",
        "touch /sync/started; while [ ! -e /sync/go ]; do sleep 0.05; done; echo hello from $(hostname); exit 3",
    ]);
    let fg = spawn(&mut cmd, None);
    fg.wait_for_file(&sync.join("started"));
    let id = assert_runs_under_berth_oci(&name);
    std::fs::write(sync.join("go"), "").unwrap();
    let out = fg.wait(Duration::from_secs(120)).code("podman run", 3);
    assert_eq!(out.stdout, format!("hello from {}\n", &id[..12]));
    assert_gone(&id);
}

/// Exit statuses, a signal, stdin and stderr through podman and conmon, and berth-oci's errors
/// (from its JSON --log) as podman reports them.
pub fn run_exit_codes_and_errors() {
    let run_rm = |args: &[&str]| {
        let mut cmd = podman(&["run", "--rm", "--cgroup-parent", &format!("/{}", suite().cgroup_prefix), "-i", IMAGE]);
        cmd.args(args);
        cmd
    };
    run(&mut run_rm(&["false"])).code("false", 1);
    // A container's pid 1 cannot be killed from inside its pid namespace: this one shares the
    // host's.
    let mut cmd = podman(&["run", "--rm", "--cgroup-parent", &format!("/{}", suite().cgroup_prefix), "--pid", "host"]);
    run(cmd.args([IMAGE, "sh", "-c", "kill -9 $$"])).code("SIGKILL", 137);
    let out = run(&mut run_rm(&["sh", "-c", "echo to-out; echo to-err >&2; exit 42"])).code("exit 42", 42);
    assert_eq!(out.stdout, "to-out\n");
    assert_contains(&out.stderr, "to-err");
    let out = run_with_stdin(&mut run_rm(&["sh", "-c", "cat; echo done"]), b"through stdin\n").ok("stdin");
    assert_eq!(out.stdout, "through stdin\ndone\n");
    // podman maps the runtime's error text to docker's exit codes: 127 not found, 126 not
    // executable; the text is berth-oci's, from the --log file.
    let out = run(&mut run_rm(&["/nonexistent"])).code("missing program", 127);
    assert_contains(&out.stderr, "/nonexistent: no such file or directory");
    let out = run(&mut run_rm(&["/etc/passwd"])).code("not executable", 126);
    assert_contains(&out.stderr, "/etc/passwd: permission denied");
}

/// `podman run -it` on a real terminal: the container's shell has a pty of its own, of the size
/// of ours, and follows when ours is resized.
pub fn run_interactive_tty() {
    let name = unique("tty");
    let _rm = Removed(name.clone());
    let mut cmd = podman(&["run", "-it", "--rm"]);
    cmd.args(ctr_opts(&name)).args([IMAGE, "sh"]);
    let term = Terminal::spawn(cmd, 40, 120);
    term.wait_for("# ");
    term.write("echo \"t=$(tty) s=$(stty size) p=$((6*7))\"\n");
    term.wait_for("t=/dev/pts/0 s=40 120 p=42");
    let id = assert_runs_under_berth_oci(&name);
    term.resize(50, 132);
    // SIGWINCH goes to podman, which has conmon resize the container's pty: ask until it shows.
    let mut asked = 0;
    wait_until("the container's terminal to follow a resize", SETTLE, || {
        if asked % 10 == 0 {
            term.write("echo \"r=$(stty size)\"\n");
        }
        asked += 1;
        term.output().contains("r=50 132")
    });
    term.write("exit 4\n");
    let (code, output) = term.wait();
    assert_eq!(code, 4, "podman run -it exit code; terminal: {output:?}");
    assert_gone(&id);
}

/// A detached container: exec (output, exit codes, user, stdin, a terminal), stop (its TERM
/// trap runs, the exit code is kept), start again, and rm.
pub fn detached_exec_stop_start_rm() {
    let name = unique("detached");
    let _rm = Removed(name.clone());
    let mut cmd = podman(&["run", "-d"]);
    cmd.args(ctr_opts(&name)).args([IMAGE, "sh", "-c", "trap 'echo got TERM; exit 7' TERM; sleep 1000 & wait"]);
    run(&mut cmd).ok("podman run -d");
    let id = assert_runs_under_berth_oci(&name);

    let out =
        run(&mut podman(&["exec", &name, "sh", "-c", "echo exec-out; cat /proc/1/cmdline; exit 5"])).code("exec", 5);
    assert_contains(&out.stdout, "exec-out\n");
    assert_contains(&out.stdout, "trap"); // the container's pid 1: exec joined its pid namespace
    let out = run(&mut podman(&[
        "exec",
        "--user",
        "1000:1000",
        "-w",
        "/tmp",
        "-e",
        "X=y",
        &name,
        "sh",
        "-c",
        "echo $(id -u) $PWD $X",
    ]))
    .ok("exec --user");
    assert_eq!(out.stdout, "1000 /tmp y\n");
    let out = run_with_stdin(&mut podman(&["exec", "-i", &name, "cat"]), b"into exec\n").ok("exec -i");
    assert_eq!(out.stdout, "into exec\n");
    run(&mut podman(&["exec", &name, "/nonexistent"])).code("exec of a missing program", 127);

    let term = Terminal::spawn(podman(&["exec", "-it", &name, "sh"]), 30, 100);
    term.wait_for("# ");
    term.write("echo \"t=$(tty) s=$(stty size)\"; exit 6\n");
    let (code, output) = term.wait();
    assert_eq!(code, 6, "podman exec -it exit code; terminal: {output:?}");
    assert_contains(&output, "t=/dev/pts/0 s=30 100");

    run(&mut podman(&["stop", "--time", "20", &name])).ok("podman stop");
    assert_eq!(inspect(&name, "{{.State.Status}} {{.State.ExitCode}}"), "exited 7");
    assert_contains(&run(&mut podman(&["logs", &name])).ok("podman logs").stdout, "got TERM");
    // podman's cleanup deletes the runtime's container: berth-oci's state, cgroup and processes.
    assert_gone(&id);

    run(&mut podman(&["start", &name])).ok("podman start after stop");
    let id2 = assert_runs_under_berth_oci(&name);
    assert_eq!(id2, id);
    run(&mut podman(&["rm", "--force", &name])).ok("podman rm --force");
    assert!(run(&mut podman(&["container", "exists", &name])).code != 0, "{name} still exists");
    assert_gone(&id);
}

/// `podman stop` of a container that ignores SIGTERM (a shell as pid 1 without a trap) kills
/// it after the timeout; pause and unpause freeze and thaw it; update changes its limits.
pub fn stop_kill_pause_update() {
    let name = unique("stubborn");
    let _rm = Removed(name.clone());
    let mut cmd = podman(&["run", "-d"]);
    cmd.args(ctr_opts(&name)).args([IMAGE, "sleep", "1000"]);
    run(&mut cmd).ok("podman run -d");
    let id = assert_runs_under_berth_oci(&name);

    run(&mut podman(&["pause", &name])).ok("podman pause");
    assert_eq!(runtime_state(runtime_root(), &id).unwrap().0, "paused");
    assert_eq!(inspect(&name, "{{.State.Status}}"), "paused");
    run(&mut podman(&["unpause", &name])).ok("podman unpause");
    assert_eq!(runtime_state(runtime_root(), &id).unwrap().0, "running");

    run(&mut podman(&["update", "--memory", "64m", "--cpu-shares", "512", &name])).ok("podman update");
    assert_eq!(cgroup_value(&id, "memory", "memory.limit_in_bytes", "memory.max"), "67108864");
    // v2: runc's conversion of shares to a weight, 1 + (512 - 2) * 9999 / 262142
    assert_eq!(cgroup_value(&id, "cpu", "cpu.shares", "cpu.weight"), if is_cgroup2() { "20" } else { "512" });

    run(&mut podman(&["stop", "--time", "1", &name])).ok("podman stop");
    assert_eq!(inspect(&name, "{{.State.Status}} {{.State.ExitCode}}"), "exited 137");
    assert_gone(&id);
    run(&mut podman(&["rm", &name])).ok("podman rm");
    assert_gone(&id);
}

/// A limit in the container's cgroup, read on the host (v1 file in its hierarchy, or the v2 file).
fn cgroup_value(id: &str, hierarchy: &str, v1_file: &str, v2_file: &str) -> String {
    let dir = berth_testkit::host::cgroup_path(hierarchy, &format!("{}/libpod-{id}", suite().cgroup_prefix));
    let path = dir.join(if is_cgroup2() { v2_file } else { v1_file });
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
}

/// What podman puts in its specs reaches the container: users, read-only root, capabilities,
/// volumes, environment, working directory, hostname, tmpfs mounts (writable by a non-root user:
/// a regression), and --privileged (every host device listed, /dev/ptmx among them: a
/// regression).
pub fn spec_options_reach_the_container() {
    let vol = suite().dir.join("podman-volume");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("f"), "from the host\n").unwrap();
    let cgroup_parent = format!("/{}", suite().cgroup_prefix);
    let mut cmd = podman(&["run", "--rm", "--cgroup-parent", &cgroup_parent, "--read-only", "--cap-drop", "all"]);
    cmd.args(["--user", "1000:1000", "--tmpfs", "/scratch", "-e", "FOO=bar", "-w", "/home", "--hostname", "callers"])
        .arg("-v")
        .arg(format!("{}:/vol:ro", vol.display()))
        .args([
            IMAGE,
            "sh",
            "-c",
            "id -u; echo $FOO; pwd; hostname; cat /vol/f; grep CapEff /proc/self/status; \
             touch /rootfile 2>/dev/null || echo root read-only; \
             touch /scratch/f && stat -c %a /scratch",
        ]);
    let out = run(&mut cmd).ok("podman run with options");
    assert_eq!(
        out.stdout,
        "1000\nbar\n/home\ncallers\nfrom the host\nCapEff:\t0000000000000000\nroot read-only\n1777\n"
    );

    let mut cmd = podman(&["run", "--rm", "--cgroup-parent", &cgroup_parent, "--privileged", IMAGE]);
    cmd.args(["sh", "-c", "readlink /dev/ptmx; grep Seccomp: /proc/self/status; test -c /dev/pts/ptmx && echo pts"]);
    let out = run(&mut cmd).ok("podman run --privileged");
    assert_eq!(out.stdout, "pts/ptmx\nSeccomp:\t0\npts\n");
}
