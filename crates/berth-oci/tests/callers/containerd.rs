//! containerd 1.6 driving berth-oci through its runc shim (io.containerd.runc.v2 with berth-oci as
//! the options' BinaryName, which `ctr run --runc-binary` sets), on a containerd of our own:
//! private root, state, sockets and configuration, started once for the suite and stopped by pid
//! at its end. The shims daemonize and come to the harness (a subreaper), which reaps them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use berth_testkit::callers::Containerd;

use crate::support::*;

const NAMESPACE: &str = "berth-callers";
const IMAGE: &str = crate::podman::IMAGE;

struct Env {
    containerd: Containerd,
    /// berth-oci's --root: the shim passes <runc_root>/<namespace>.
    runc_root: PathBuf,
    fifo_dir: PathBuf,
}

static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
/// The daemon, for `shutdown`.
static DAEMON: Mutex<Option<Spawned>> = Mutex::new(None);

fn env() -> &'static Env {
    ENV.get_or_init(setup).as_ref().unwrap_or_else(|e| panic!("setting up containerd: {e}"))
}

fn setup() -> Result<Env, String> {
    for tool in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        crate::require_tool(tool)?;
    }
    let dir = suite().dir.join("containerd");
    let containerd = Containerd::setup(&dir).map_err(|e| e.to_string())?;
    let daemon = spawn(&mut containerd.daemon(), None);
    let daemon_pid = daemon.pid;
    *DAEMON.lock().unwrap() = Some(daemon);
    let mut serving = false;
    poll_until(Duration::from_secs(60), || {
        serving = containerd.socket.exists() && run(containerd.ctr(NAMESPACE).arg("version")).code == 0;
        // SAFETY: signal 0 only checks that our child is still there.
        serving || unsafe { libc::kill(daemon_pid as i32, 0) } != 0
    });
    if !serving {
        let log = DAEMON.lock().unwrap().take().map(|d| d.wait(Duration::from_secs(10)).stderr);
        return Err(format!("containerd did not start: {log:?}"));
    }
    let out = run(containerd.ctr(NAMESPACE).args(["images", "import"]).arg(crate::busybox_archive()));
    if out.code != 0 {
        return Err(format!("ctr images import: {} {}", out.stdout, out.stderr));
    }
    let env = Env { runc_root: dir.join("runc-root"), fifo_dir: dir.join("fifo"), containerd };
    std::fs::create_dir_all(&env.fifo_dir).map_err(|e| e.to_string())?;
    Ok(env)
}

/// Stops our containerd (SIGTERM, then SIGKILL if it does not exit), if it was started.
pub fn shutdown() {
    let Some(daemon) = DAEMON.lock().unwrap().take() else { return };
    // SAFETY: our own child, by pid.
    unsafe { libc::kill(daemon.pid as i32, libc::SIGTERM) };
    let out = daemon.wait(Duration::from_secs(60));
    if out.code != 0 && out.code != 128 + libc::SIGTERM {
        eprintln!("containerd exited with {}: {}", out.code, out.stderr);
    }
}

/// Where berth-oci keeps the state of our namespace's containers.
pub fn runtime_root() -> Option<PathBuf> {
    ENV.get().and_then(|e| e.as_ref().ok()).map(|e| e.runc_root.join(NAMESPACE))
}

fn ctr(args: &[&str]) -> Command {
    let mut cmd = env().containerd.ctr(NAMESPACE);
    cmd.args(args);
    cmd
}

/// `ctr run` options: berth-oci as the shim's runtime binary with its state root, our FIFO
/// directory, and the container's cgroup under the suite's prefix.
fn run_opts(id: &str) -> Vec<String> {
    let e = env();
    vec![
        "--runtime".into(),
        "io.containerd.runc.v2".into(),
        "--runc-binary".into(),
        suite().bin.display().to_string(),
        "--runc-root".into(),
        e.runc_root.display().to_string(),
        "--fifo-dir".into(),
        e.fifo_dir.display().to_string(),
        "--cgroup".into(),
        format!("/{}/{id}", suite().cgroup_prefix),
    ]
}

/// Deletes task and container when the test ends, however it ends.
struct Removed(String);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = run(&mut ctr(&["task", "kill", "--all", "--signal", "KILL", &self.0]));
        let _ = run(&mut ctr(&["task", "delete", "--force", &self.0]));
        let _ = run(&mut ctr(&["container", "delete", &self.0]));
    }
}

/// The task's pid and status as `ctr task ls` shows them.
fn task(id: &str) -> Option<(String, String)> {
    let out = run(&mut ctr(&["task", "ls"])).ok("ctr task ls");
    out.stdout.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&id)).then(|| (f[1].to_string(), f[2].to_string()))
    })
}

/// Checks that berth-oci runs container `id`: its state under the root the shim passes has it
/// running with the task's pid, in the cgroup ctr asked for, and the --log file the shim passes
/// (log.json in the task's bundle) exists.
fn assert_runs_under_berth_oci(id: &str) {
    let (pid, status) = task(id).unwrap_or_else(|| panic!("no task {id}"));
    assert_eq!(status, "RUNNING");
    let (rstatus, rpid) = runtime_state(&runtime_root().unwrap(), id)
        .unwrap_or_else(|| panic!("berth-oci has no state for {id} under {}", runtime_root().unwrap().display()));
    assert_eq!(rstatus, "running", "berth-oci's status of {id}");
    assert_eq!(rpid.to_string(), pid, "berth-oci's pid and containerd's");
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_contains(&cgroup, &format!("/{}/{id}", suite().cgroup_prefix));
    let log = env().containerd.bundle(NAMESPACE, id).join("log.json");
    assert!(log.exists(), "berth-oci's --log file {} is missing", log.display());
}

/// Nothing of `id` remains: berth-oci's state, cgroup, processes, mounts, containerd's task
/// bundle and container record, and the shim (which exits once its task is deleted).
fn assert_gone(id: &str) {
    assert_container_gone(&runtime_root().unwrap(), id, id);
    let bundle = env().containerd.bundle(NAMESPACE, id);
    wait_until(&format!("task bundle {} removed", bundle.display()), SETTLE, || !bundle.exists());
    let listed = run(&mut ctr(&["container", "ls", "--quiet"])).ok("ctr container ls").stdout;
    assert!(!listed.lines().any(|l| l == id), "containerd still lists {id}");
    let shim = format!("-id {id} ");
    wait_until(&format!("the shim of {id} exited"), SETTLE, || processes_mentioning(&shim).is_empty());
}

/// `ctr run --detach` of `args` in the image as task `id`, which berth-oci then runs.
fn run_detached(id: &str, args: &[&str]) {
    let mut cmd = ctr(&["run", "--detach"]);
    cmd.args(run_opts(id)).args([IMAGE, id]).args(args);
    run(&mut cmd).ok("ctr run --detach");
    assert_runs_under_berth_oci(id);
}

/// `ctr run --rm` of `sh -c script` as task `id`, with a directory (returned) the container
/// sees at /sync.
fn run_rm_synced(id: &str, script: &str) -> (Command, PathBuf) {
    let sync = sync_dir(id);
    let mut cmd = ctr(&["run", "--rm"]);
    cmd.args(run_opts(id))
        .arg("--mount")
        .arg(format!("type=bind,src={},dst=/sync,options=rbind:rw", sync.display()))
        .args([IMAGE, id, "sh", "-c", script]);
    (cmd, sync)
}

/// Waits until ctr lists task `id` as stopped.
fn wait_stopped(id: &str) {
    wait_until(&format!("task {id} to stop"), SETTLE, || task(id).is_some_and(|(_, s)| s == "STOPPED"));
}

// ------------------------------------------------------------------------------------- tests

/// `ctr run --rm` in the foreground: the container's output and exit status come back through
/// the shim, and everything goes away after.
pub fn run_foreground() {
    let id = unique("cfg");
    let _rm = Removed(id.clone());
    let (mut cmd, sync) = run_rm_synced(
        &id,
        "touch /sync/started; while [ ! -e /sync/go ]; do sleep 0.05; done; echo hello from $(hostname); exit 3",
    );
    let fg = spawn(&mut cmd, None);
    fg.wait_for_file(&sync.join("started"));
    assert_runs_under_berth_oci(&id);
    std::fs::write(sync.join("go"), "").unwrap();
    let out = fg.wait(Duration::from_secs(120)).code("ctr run", 3);
    assert_contains(&out.stdout, "hello from ");
    assert_gone(&id);
}

/// Exit statuses, stdin, and a failed create (signals: `kill_all_and_force_delete`): berth-oci's error (the last line of its
/// JSON --log, which the shim reads) reaches ctr, and the failed container leaves nothing.
pub fn run_exit_codes_and_errors() {
    let run_rm = |name: &str, args: &[&str]| {
        let id = unique(name);
        let mut cmd = ctr(&["run", "--rm"]);
        cmd.args(run_opts(&id)).args([IMAGE, &id]).args(args);
        (id, cmd)
    };
    let (id, mut cmd) = run_rm("cfalse", &["false"]);
    let _rm = Removed(id.clone());
    run(&mut cmd).code("false", 1);
    assert_gone(&id);
    // ctr closes the task's stdin at the end of its own only once the task exists (an end
    // before is lost, and cat would wait forever): the input follows the container's start.
    let id = unique("cstdin");
    let _rm = Removed(id.clone());
    let (mut cmd, sync) = run_rm_synced(&id, "touch /sync/started; cat; echo done");
    let (fg, stdin) = spawn_with_stdin_pipe(&mut cmd);
    fg.wait_for_file(&sync.join("started"));
    write_and_close(stdin, b"through stdin\n");
    let out = fg.wait(Duration::from_secs(120)).ok("ctr run with stdin");
    assert_eq!(out.stdout, "through stdin\ndone\n");
    assert_gone(&id);
    let (id, mut cmd) = run_rm("cmissing", &["/nonexistent"]);
    let _rm = Removed(id.clone());
    let out = run(&mut cmd);
    assert_ne!(out.code, 0, "ctr run of a missing program succeeded: {out:?}");
    assert_contains(&out.stderr, "/nonexistent: no such file or directory");
    assert_gone(&id);
}

/// A detached task: exec (output, exit code, a terminal), ps, pause and resume, kill (its TERM
/// trap runs, the exit code is kept), task delete and container delete.
pub fn detached_exec_kill_delete() {
    let id = unique("cdetached");
    let _rm = Removed(id.clone());
    run_detached(&id, &["sh", "-c", "trap 'exit 7' TERM; sleep 1000 & wait"]);
    let (pid, _) = task(&id).unwrap();
    let fifo = env().fifo_dir.display().to_string();

    let out = run(&mut ctr(&[
        "task",
        "exec",
        "--fifo-dir",
        &fifo,
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "echo exec-out; cat /proc/1/cmdline; exit 4",
    ]))
    .code("ctr task exec", 4);
    assert_contains(&out.stdout, "exec-out\n");
    assert_contains(&out.stdout, "trap");
    let term =
        Terminal::spawn(ctr(&["task", "exec", "--tty", "--fifo-dir", &fifo, "--exec-id", "e2", &id, "sh"]), 30, 100);
    term.wait_for("# ");
    // ctr resizes the terminal after the process has started: the shell may read this before.
    term.write(&format!("{WAIT_FOR_SIZE} echo \"t=$(tty) s=$(stty size)\"; exit 6\n"));
    let (code, output) = term.wait();
    assert_eq!(code, 6, "ctr task exec --tty exit code; terminal: {output:?}");
    assert_contains(&output, "t=/dev/pts/0 s=30 100");

    // ps comes from `berth-oci ps --format json`
    let out = run(&mut ctr(&["task", "ps", &id])).ok("ctr task ps");
    assert!(
        out.stdout.lines().any(|l| l.split_whitespace().next() == Some(pid.as_str())),
        "{pid} not in {}",
        out.stdout
    );
    run(&mut ctr(&["task", "pause", &id])).ok("ctr task pause");
    assert_eq!(runtime_state(&runtime_root().unwrap(), &id).unwrap().0, "paused");
    assert_eq!(task(&id).unwrap().1, "PAUSED");
    run(&mut ctr(&["task", "resume", &id])).ok("ctr task resume");
    assert_eq!(runtime_state(&runtime_root().unwrap(), &id).unwrap().0, "running");

    run(&mut ctr(&["task", "kill", &id])).ok("ctr task kill");
    wait_stopped(&id);
    let out = run(&mut ctr(&["task", "delete", &id])).ok("ctr task delete");
    assert_contains(&out.stderr, "exit code 7");
    run(&mut ctr(&["container", "delete", &id])).ok("ctr container delete");
    assert_gone(&id);
}

/// `kill --all` of a task with several processes, and `task delete --force` of a running one.
pub fn kill_all_and_force_delete() {
    let id = unique("ckillall");
    let _rm = Removed(id.clone());
    run_detached(&id, &["sh", "-c", "sleep 1000 & sleep 1000 & wait"]);
    run(&mut ctr(&["task", "kill", "--all", "--signal", "KILL", &id])).ok("ctr task kill --all");
    wait_stopped(&id);
    assert!(processes_in_cgroups(&id).is_empty(), "processes of {id} survived kill --all");
    let out = run(&mut ctr(&["task", "delete", &id])).ok("ctr task delete");
    assert_contains(&out.stderr, "exit code 137");
    run(&mut ctr(&["container", "delete", &id])).ok("ctr container delete");
    assert_gone(&id);

    let id = unique("cforce");
    let _rm = Removed(id.clone());
    run_detached(&id, &["sleep", "1000"]);
    run(&mut ctr(&["task", "delete", "--force", &id])).ok("ctr task delete --force");
    run(&mut ctr(&["container", "delete", &id])).ok("ctr container delete");
    assert_gone(&id);
}

/// Shell text that waits (up to 10 s) until the terminal has a size: ctr sets it once the
/// process runs, through the console berth-oci handed over.
const WAIT_FOR_SIZE: &str = "i=0; while [ \"$(stty size 2>/dev/null)\" = \"0 0\" ] || [ -z \"$(stty size 2>/dev/null)\" ]; do [ $i -ge 100 ] && break; i=$((i+1)); sleep 0.1; done;";

/// `ctr run --tty` on a real terminal.
pub fn run_tty() {
    let id = unique("ctty");
    let _rm = Removed(id.clone());
    let mut cmd = ctr(&["run", "--tty", "--rm"]);
    cmd.args(run_opts(&id)).args([IMAGE, &id, "sh"]);
    let term = Terminal::spawn(cmd, 40, 120);
    term.wait_for("# ");
    term.write(&format!("{WAIT_FOR_SIZE} echo \"t=$(tty) s=$(stty size) p=$((6*7))\"\n"));
    term.wait_for("t=/dev/pts/0 s=40 120 p=42");
    assert_runs_under_berth_oci(&id);
    term.write("exit 4\n");
    let (code, output) = term.wait();
    assert_eq!(code, 4, "ctr run --tty exit code; terminal: {output:?}");
    assert_gone(&id);
}

/// Entries left in a directory (the runtime root after the suite).
pub fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path().display().to_string()).collect()).unwrap_or_default()
}
