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

/// crictl ARGS fails, reporting berthd's Unimplemented status for `rpc`.
fn assert_unimplemented(o: &Output, rpc: &str) {
    assert!(!o.status.success(), "crictl succeeded against a berthd that implements nothing but Version:\n{}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    let want = format!("code = Unimplemented desc = {rpc} is not implemented by berthd yet");
    assert!(err.contains(&want), "crictl's error does not say {want:?}:\n{}", text(o));
}

#[test]
fn crictl_ps_fails_unimplemented() {
    let Some(crictl) = crictl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let berthd = Berthd::start(dir.path());
    let o = run_crictl(&crictl, dir.path(), &berthd.socket, &["ps"]);
    // crictl 1.36's ps checks the image service (ImageFsInfo, on the runtime endpoint when no
    // image endpoint is given) before it lists containers: that is the first refusal it meets.
    assert_unimplemented(&o, "ImageFsInfo");
}

#[test]
fn crictl_pods_fails_unimplemented() {
    let Some(crictl) = crictl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let berthd = Berthd::start(dir.path());
    // pods needs no image service: crictl goes straight to ListPodSandbox.
    let o = run_crictl(&crictl, dir.path(), &berthd.socket, &["pods"]);
    assert_unimplemented(&o, "ListPodSandbox");
}
