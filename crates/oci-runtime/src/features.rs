//! The OCI features document (runtime-spec features.md): what this build of berth-oci accepts.
//! It must say only what is implemented: callers (containerd, CRI-O) decide from it.

use serde_json::{json, Value};

use crate::mounts;

/// Mount options berth-oci understands in config.json (filesystem-specific options such as
/// size= or mode= go to the filesystem and are not listed).
const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "iversion",
    "lazytime",
    "loud",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "rexec",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "tmpcopyup",
    "unbindable",
];

pub fn features() -> Value {
    debug_assert!(MOUNT_OPTIONS.iter().all(|o| mounts::MountOptions::parse(&[o.to_string()]).is_ok()));
    let caps: Vec<String> = (0..=crate::caps::last_cap()).filter_map(crate::caps::name).map(String::from).collect();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::config::OCI_VERSION,
        "hooks": [],
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": true },
            "seccomp": crate::seccomp::features(),
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": false } },
            "memoryPolicy": {
                "modes": ["MPOL_DEFAULT", "MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_WEIGHTED_INTERLEAVE", "MPOL_PREFERRED", "MPOL_PREFERRED_MANY", "MPOL_LOCAL"],
                "flags": ["MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES"]
            }
        },
        "annotations": {
            "org.berth.oci.version": env!("CARGO_PKG_VERSION")
        }
    })
}
