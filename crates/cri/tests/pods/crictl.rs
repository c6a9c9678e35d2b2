//! The real crictl (cri-tools 1.36, `$CRICTL` or ../shared/bin/crictl) running a pod on
//! berthd, as an operator would.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// crictl from `$CRICTL`, else `../shared/bin/crictl` beside the workspace; `None` (after a
/// loud message) when it is absent, a failure under CI.
pub fn crictl_path() -> Option<PathBuf> {
    let path = std::env::var_os("CRICTL")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/bin/crictl"));
    if path.is_file() {
        return Some(path);
    }
    let msg = format!("crictl not found at {} (set CRICTL): the crictl test did not run", path.display());
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("\n!!!!!!!!!! SKIPPED !!!!!!!!!!\n!!! {msg}\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
    None
}

/// `crictl ARGS` on the suite's berthd, as a command to run.
pub fn crictl_command(bin: &PathBuf, args: &[&str]) -> Command {
    let s = suite();
    let mut c = Command::new(bin);
    c.arg("--config")
        .arg("/dev/null")
        .arg("--timeout")
        .arg("60s")
        .arg("--runtime-endpoint")
        .arg(format!("unix://{}", s.socket.display()))
        .arg("--image-endpoint")
        .arg(format!("unix://{}", s.socket.display()))
        .args(args)
        .env_remove("CONTAINER_RUNTIME_ENDPOINT")
        .env_remove("IMAGE_SERVICE_ENDPOINT");
    c
}

/// `crictl ARGS` (with `stdin`, if any): its output, whatever its exit code.
pub fn crictl_output(bin: &PathBuf, args: &[&str], stdin: Option<&[u8]>) -> berth_testkit::children::Output {
    let mut c = crictl_command(bin, args);
    berth_testkit::children::spawn(&mut c, stdin.map(<[u8]>::to_vec)).wait(Duration::from_secs(120))
}

/// `crictl ARGS`, which must succeed: its stdout.
pub fn crictl(bin: &PathBuf, args: &[&str]) -> String {
    let o = crictl_output(bin, args, None);
    assert_eq!(o.code, 0, "crictl {args:?}:\n{}\n{}", o.stdout, o.stderr);
    o.stdout
}

pub fn runs_a_pod_end_to_end() {
    let Some(bin) = crictl_path() else { return };
    let s = suite();
    let name = unique("crictl");
    let logs = s.dir.join("logs").join(&name);
    std::fs::create_dir_all(&logs).unwrap();
    let pod_json = s.dir.join(format!("{name}-pod.json"));
    let ctr_json = s.dir.join(format!("{name}-ctr.json"));
    std::fs::write(
        &pod_json,
        serde_json::json!({
            "metadata": {"name": name, "namespace": "berthd-test", "uid": format!("uid-{name}")},
            "hostname": name,
            "log_directory": logs,
            "linux": {"cgroup_parent": format!("{}/pod-{name}", s.cgroup_parent)}
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        &ctr_json,
        serde_json::json!({
            "metadata": {"name": "web"},
            "image": {"image": IMAGE},
            "command": ["sh", "-c", "echo ready; exec sleep 1000"],
            "log_path": "web.log",
            "labels": {"io.kubernetes.container.name": "web"}
        })
        .to_string(),
    )
    .unwrap();
    let pod = crictl(&bin, &["runp", pod_json.to_str().unwrap()]).trim().to_string();
    assert_eq!(pod.len(), 64, "{pod}");
    let id = crictl(&bin, &["create", &pod, ctr_json.to_str().unwrap(), pod_json.to_str().unwrap()]).trim().to_string();
    crictl(&bin, &["start", &id]);
    wait_until("the container's first line", Duration::from_secs(30), || {
        crictl(&bin, &["logs", &id]).contains("ready")
    });
    assert!(crictl(&bin, &["ps", "-q"]).contains(&id));
    assert!(crictl(&bin, &["pods", "-q", "--name", &name]).contains(&pod));
    assert_eq!(crictl(&bin, &["exec", "-s", &id, "hostname"]).trim(), name);
    let inspect: serde_json::Value = serde_json::from_str(&crictl(&bin, &["inspect", &id])).unwrap();
    assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING", "{inspect}");
    let inspectp: serde_json::Value = serde_json::from_str(&crictl(&bin, &["inspectp", &pod])).unwrap();
    assert_eq!(inspectp["status"]["state"], "SANDBOX_READY", "{inspectp}");
    assert!(crictl(&bin, &["stats", "-o", "json"]).contains(&id));
    assert!(crictl(&bin, &["images", "-q"]).contains("sha256:"));
    crictl(&bin, &["stopp", &pod]);
    crictl(&bin, &["rmp", &pod]);
    assert!(!crictl(&bin, &["ps", "-a", "-q"]).contains(&id));
    berth_testkit::host::remove_cgroups(&format!("{}/pod-{name}", s.cgroup_parent.trim_start_matches('/')));
}
