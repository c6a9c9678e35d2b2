//! config.json hooks: each point of the lifecycle, its namespaces, its state on stdin, failures.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::*;

/// A hook script that records its state, arguments and environment in `out`. The busybox in the
/// bundle's rootfs runs it inside the container; Debian's /bin/sh on the host.
fn recorder(path: &Path, shell: &str, out: &str) {
    write_script(
        path,
        &format!(
            "#!{shell}\nname=\"$1\"\ncat > {out}/$name.json\necho \"$0 $* FOO=$FOO\" > {out}/$name.args\nreadlink /proc/self/ns/uts > {out}/$name.uts\n"
        ),
    );
}

fn hook(path: &Path, name: &str) -> Value {
    json!({"path": path, "args": ["recorder", name], "env": ["FOO=bar"], "timeout": 10})
}

pub fn every_hook_runs_with_its_state() {
    let mut c = Ctr::with_own_rootfs("hooks", &["sh", "-c", "echo ran"]);
    let out = c.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let host_hook = c.dir.join("hook.sh");
    recorder(&host_hook, "/bin/sh", out.to_str().unwrap());
    // startContainer runs inside the container: a script of its rootfs writing to a bind mount.
    recorder(&c.rootfs().join("hook.sh"), "/bin/sh", "/out");
    c.config()["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/out", "type": "bind", "source": out, "options": ["rbind", "rw"]}));
    c.config()["annotations"] = json!({"org.example": "yes"});
    c.config()["hooks"] = json!({
        "prestart": [hook(&host_hook, "prestart")],
        "createRuntime": [hook(&host_hook, "createRuntime")],
        "createContainer": [hook(&host_hook, "createContainer")],
        "startContainer": [hook(Path::new("/hook.sh"), "startContainer")],
        "poststart": [hook(&host_hook, "poststart")],
        "poststop": [hook(&host_hook, "poststop")],
    });
    let pid = c.create();
    let container_uts = std::fs::read_link(format!("/proc/{pid}/ns/uts")).unwrap().to_string_lossy().into_owned();
    let host_uts = std::fs::read_link("/proc/self/ns/uts").unwrap().to_string_lossy().into_owned();
    for (name, status, in_container) in
        [("prestart", "created", false), ("createRuntime", "created", false), ("createContainer", "created", true)]
    {
        let state: Value = serde_json::from_str(&read(out.join(format!("{name}.json")))).unwrap();
        assert_eq!(state["status"], status, "{name}");
        assert_eq!(state["id"], c.id.as_str());
        assert_eq!(state["pid"], pid, "{name}");
        assert_eq!(state["annotations"]["org.example"], "yes");
        assert_contains(&read(out.join(format!("{name}.args"))), &format!(" {name} FOO=bar"));
        let uts = read(out.join(format!("{name}.uts")));
        assert_eq!(uts.trim(), if in_container { &container_uts } else { &host_uts }, "{name}'s namespaces");
    }
    assert!(!out.join("startContainer.json").exists(), "startContainer ran before start");
    c.start();
    c.wait_status("stopped");
    let state: Value = serde_json::from_str(&read(out.join("startContainer.json"))).unwrap();
    assert_eq!(state["status"], "created");
    assert_eq!(read(out.join("startContainer.uts")).trim(), container_uts, "startContainer runs in the container");
    let state: Value = serde_json::from_str(&read(out.join("poststart.json"))).unwrap();
    assert_eq!(state["status"], "running");
    assert!(!out.join("poststop.json").exists());
    c.oci(&["delete", &c.id]).ok("delete");
    let state: Value = serde_json::from_str(&read(out.join("poststop.json"))).unwrap();
    assert_eq!(state["status"], "stopped");
    c.assert_gone();
}

pub fn failing_hooks() {
    let fail = suite().dir.join("failing-hook.sh");
    write_script(&fail, "#!/bin/sh\necho 'the hook says no' >&2\nexit 3\n");
    let slow = suite().dir.join("slow-hook.sh");
    write_script(&slow, "#!/bin/sh\nsleep 30\n");
    // A failing createRuntime or createContainer hook fails create, with its words, and the
    // poststop hooks still run (the create ends as a delete).
    for kind in ["prestart", "createRuntime", "createContainer"] {
        let mut c = Ctr::new(&format!("hookfail{}", kind.to_lowercase()), &["true"]);
        let marker = c.dir.join("poststop-ran");
        let poststop = c.dir.join("poststop.sh");
        write_script(&poststop, &format!("#!/bin/sh\ntouch {}\n", marker.display()));
        c.config()["hooks"] = json!({ kind: [{"path": fail}], "poststop": [{"path": poststop}] });
        let out = c.create_raw().failed(kind);
        assert_contains(&out.stderr, &format!("hooks.{kind}[0]"));
        assert_contains(&out.stderr, "exit status 3: the hook says no");
        c.assert_gone();
        assert!(marker.exists(), "poststop did not run after the failed {kind} hook");
    }
    let mut t = Ctr::new("hooktimeout", &["true"]);
    t.config()["hooks"] = json!({"createRuntime": [{"path": slow, "timeout": 1}]});
    assert_contains(&t.create_raw().failed("timeout").stderr, "timed out after 1 s");
    t.assert_gone();
    // poststart failures are warnings: the container runs.
    let mut p = Ctr::new("hookpoststart", &["sleep", "1000"]);
    p.config()["hooks"] = json!({"poststart": [{"path": fail}]});
    p.create();
    let log = p.dir.join("log.json");
    p.oci(&["--log", log.to_str().unwrap(), "--log-format", "json", "start", &p.id])
        .ok("start with a failing poststart hook");
    assert_eq!(p.status(), "running");
    let warning: Value = serde_json::from_str(read(&log).lines().last().unwrap()).unwrap();
    assert_eq!(warning["level"], "warning");
    assert_contains(warning["msg"].as_str().unwrap(), "hooks.poststart[0]");
    p.delete();
    let mut r = Ctr::new("hookrelative", &["true"]);
    r.config()["hooks"] = json!({"poststop": [{"path": "relative/hook"}]});
    assert_contains(&r.create_raw().failed("relative hook path").stderr, "hooks.poststop[0].path");
}
