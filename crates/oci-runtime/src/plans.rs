//! What `create` derives from config.json before it touches the system, in one place: create
//! runs on it, and the property tests (tests/config_fuzz.rs) feed it hostile configs. Errors
//! name the field as create reports them (`config.json: mounts[1].options: ...`).

use std::path::Path;

use oci_spec::runtime::{LinuxResources, Spec};

use crate::attrs::{self, MemoryPolicy};
use crate::cgroups::{self, DeviceRule};
use crate::config;
use crate::error::{Error, Result};
use crate::mounts::MountSpec;
use crate::process::ProcessPlan;
use crate::rootfs::DeviceNode;
use crate::seccomp;

/// Everything derived from a spec without a system call. Namespace paths are not here: they
/// are opened ([`crate::namespaces::NamespacePlan`]).
#[derive(Debug)]
pub struct Plans {
    /// The user, capabilities, rlimits, attributes, environment, ... of `process`.
    pub process: ProcessPlan,
    /// config.json's mounts, with linux.mountLabel given to the filesystems they make.
    pub mounts: Vec<MountSpec>,
    /// linux.devices.
    pub devices: Vec<DeviceNode>,
    /// linux.sysctl, by key.
    pub sysctl: Vec<(String, String)>,
    /// linux.personality, as personality(2) takes it.
    pub personality: Option<u64>,
    /// linux.memoryPolicy, as set_mempolicy(2) takes it.
    pub memory_policy: Option<MemoryPolicy>,
    /// linux.seccomp, compiled.
    pub seccomp: Option<seccomp::Filter>,
    /// The device rules the runtime adds to linux.resources' own: the default devices and
    /// linux.devices.
    pub device_rules: Vec<DeviceRule>,
    /// The first resource linux.resources asks for, if any (limits need a cgroup of the
    /// container's own).
    pub requested_resource: Option<&'static str>,
}

/// Validates `spec` and derives everything create needs from it that takes no system call.
pub fn derive_plans(spec: &Spec, bundle_dir: &Path) -> Result<Plans> {
    let in_config = |e: Error| e.context("config.json");
    config::validate(spec).map_err(in_config)?;
    let linux = spec.linux().as_ref().expect("validated");
    let process = ProcessPlan::from_spec(spec.process().as_ref().expect("validated"), "process").map_err(in_config)?;
    let mut mounts = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let mut m = MountSpec::from_spec(m, i, bundle_dir).map_err(in_config)?;
        // linux.mountLabel labels the filesystems the container gets (SELinux's context=).
        if let Some(label) = linux.mount_label().as_deref().filter(|l| !l.is_empty()) {
            if !m.is_bind() && !matches!(m.fstype.as_str(), "proc" | "sysfs" | "cgroup" | "cgroup2") {
                m.options.data.push(format!("context=\"{label}\""));
            }
        }
        mounts.push(m);
    }
    let mut devices = Vec::new();
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        devices.push(DeviceNode::from_spec(d, &format!("linux.devices[{i}]")).map_err(in_config)?);
    }
    let mut sysctl: Vec<(String, String)> = linux.sysctl().clone().unwrap_or_default().into_iter().collect();
    sysctl.sort();
    Ok(Plans {
        process,
        mounts,
        devices,
        sysctl,
        personality: linux.personality().as_ref().map(attrs::personality).transpose()?,
        memory_policy: linux.memory_policy().as_ref().map(attrs::memory_policy).transpose()?,
        seccomp: linux
            .seccomp()
            .as_ref()
            .map(|s| seccomp::compile(s, "linux.seccomp"))
            .transpose()
            .map_err(in_config)?,
        device_rules: extra_device_rules(spec),
        requested_resource: linux.resources().as_ref().and_then(requested_resource),
    })
}

/// The first resource linux.resources asks for, if any.
fn requested_resource(r: &LinuxResources) -> Option<&'static str> {
    [
        ("devices", r.devices().as_ref().is_some_and(|d| !d.is_empty())),
        ("memory", r.memory().is_some()),
        ("cpu", r.cpu().is_some()),
        ("pids", r.pids().is_some()),
        ("blockIO", r.block_io().is_some()),
        ("hugepageLimits", r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())),
        ("network", r.network().is_some()),
        ("rdma", r.rdma().is_some()),
        ("unified", r.unified().as_ref().is_some_and(|u| !u.is_empty())),
    ]
    .into_iter()
    .find_map(|(name, set)| set.then_some(name))
}

/// Device rules the runtime adds to the spec's own: the default devices and linux.devices.
fn extra_device_rules(spec: &Spec) -> Vec<DeviceRule> {
    let mut rules = cgroups::default_device_rules();
    let linux = spec.linux().as_ref().expect("validated");
    for d in linux.devices().iter().flatten() {
        use oci_spec::runtime::LinuxDeviceType as T;
        let kind = match d.typ() {
            T::B => 'b',
            T::C | T::U => 'c',
            _ => continue,
        };
        rules.push(DeviceRule::allow(kind, d.major(), Some(d.minor()), "rwm"));
    }
    rules
}
