//! The default config.json `berth-oci spec` writes: runc's example configuration (so tools and
//! people used to `runc spec` get what they expect), with berth's hostname and a cgroup
//! namespace.

use serde_json::{json, Value};

/// The default spec; `rootless` adapts it for an unprivileged user, as `runc spec --rootless`.
pub fn default_spec(rootless: bool) -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut devpts = vec!["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"];
    if !rootless {
        devpts.push("gid=5");
    }
    let sys = if rootless {
        json!({ "destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"] })
    } else {
        json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] })
    };
    let mut namespaces = vec![json!({ "type": "pid" })];
    if !rootless {
        namespaces.push(json!({ "type": "network" }));
    }
    namespaces.extend([
        json!({ "type": "ipc" }),
        json!({ "type": "uts" }),
        json!({ "type": "mount" }),
        json!({ "type": "cgroup" }),
    ]);
    let mut linux = json!({
        "namespaces": namespaces,
        "maskedPaths": [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
        ],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    });
    if rootless {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        linux["uidMappings"] = json!([{ "containerID": 0, "hostID": uid, "size": 1 }]);
        linux["gidMappings"] = json!([{ "containerID": 0, "hostID": gid, "size": 1 }]);
        linux["namespaces"].as_array_mut().expect("array").push(json!({ "type": "user" }));
    } else {
        linux["resources"] = json!({ "devices": [{ "allow": false, "access": "rwm" }] });
    }
    json!({
        "ociVersion": crate::config::OCI_VERSION,
        "process": {
            "terminal": true,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "berth",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": devpts },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            sys,
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": linux
    })
}

/// JSON with tab indentation, as `runc spec` writes it.
pub fn to_tabbed_json(v: &Value) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    v.serialize(&mut ser).expect("JSON values serialise");
    String::from_utf8(out).expect("JSON is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_parses_and_validates() {
        for rootless in [false, true] {
            let v = default_spec(rootless);
            let spec = crate::config::parse_spec(v.to_string().as_bytes(), "default").unwrap();
            crate::config::validate(&spec).unwrap();
        }
    }
}
