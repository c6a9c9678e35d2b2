//! berthd driven by the real crictl (cri-tools 1.36, `$CRICTL` or ../shared/bin/crictl).

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{crictl, Berthd};

/// Runs `crictl --runtime-endpoint unix://SOCK ARGS` with an empty crictl configuration (none of
/// the host's /etc/crictl.yaml).
fn run_crictl(crictl: &Path, dir: &Path, socket: &Path, args: &[&str]) -> Output {
    let config = dir.join("crictl.yaml");
    std::fs::write(&config, "").unwrap();
    Command::new(crictl)
        .arg("--config")
        .arg(&config)
        .arg("--runtime-endpoint")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .env_remove("CONTAINER_RUNTIME_ENDPOINT")
        .env_remove("IMAGE_SERVICE_ENDPOINT")
        .output()
        .expect("run crictl")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn crictl_version_names_berth() {
    let Some(crictl) = crictl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let berthd = Berthd::start(dir.path());
    let o = run_crictl(&crictl, dir.path(), &berthd.socket, &["version"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let fields: Vec<(&str, &str)> =
        out.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim(), v.trim())).collect();
    for (key, want) in [
        ("Version", berth_cri::KUBELET_API_VERSION),
        ("RuntimeName", "berth"),
        ("RuntimeVersion", env!("CARGO_PKG_VERSION")),
        ("RuntimeApiVersion", "v1"),
    ] {
        assert!(fields.contains(&(key, want)), "crictl version: no {key}: {want}\n{}", text(&o));
    }
}

#[test]
fn crictl_lists_an_empty_node() {
    let Some(crictl) = crictl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let berthd = Berthd::start(dir.path());
    for (args, header) in [
        (&["pods"][..], "POD ID"),
        (&["ps", "-a"][..], "CONTAINER"),
        (&["images"][..], "IMAGE"),
        (&["stats"][..], "CONTAINER"),
    ] {
        let o = run_crictl(&crictl, dir.path(), &berthd.socket, args);
        assert!(o.status.success(), "crictl {args:?}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(header) && out.lines().filter(|l| !l.trim().is_empty()).count() == 1, "{}", text(&o));
    }
    // crictl info: RuntimeReady from the runtime found, the cgroup driver berthd asks kubelet for.
    let o = run_crictl(&crictl, dir.path(), &berthd.socket, &["info"]);
    assert!(o.status.success(), "{}", text(&o));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let conditions = info["status"]["conditions"].as_array().unwrap();
    assert!(conditions.iter().any(|c| c["type"] == "RuntimeReady" && c["status"] == true), "{info}");
    assert_eq!(info["config"]["cgroupDriver"], "cgroupfs");
}
