//! Loading and validating a bundle's config.json.
//!
//! Everything that can be checked before touching the system is checked here, so a bad bundle
//! fails before any state, cgroup or process exists, and each error names the JSON path of the
//! offending field (`linux.namespaces[2].type: ...`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Context, Error, ErrorKind, Result};

/// The runtime-spec versions accepted: every 1.x (minor versions are backwards compatible).
pub const OCI_VERSION_MAJOR: &str = "1.";
/// The runtime-spec version this runtime implements, reported in state and features.
pub const OCI_VERSION: &str = "1.2.0";

#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute path of the bundle directory.
    pub dir: PathBuf,
    pub spec: Spec,
    /// Absolute path of the root filesystem (root.path resolved against the bundle).
    pub rootfs: PathBuf,
}

/// Reads and parses `<bundle>/config.json` (validated with the rest of what create derives
/// from it: [`crate::plans::derive_plans`]).
pub fn load_bundle(dir: &Path) -> Result<Bundle> {
    let dir = std::fs::canonicalize(dir).with_ctx(|| format!("bundle {}", dir.display()))?;
    let config_path = dir.join("config.json");
    let bytes = std::fs::read(&config_path).with_ctx(|| config_path.display().to_string())?;
    let spec = parse_spec(&bytes, "config.json")?;
    let rootfs = rootfs_path(&dir, &spec)?;
    Ok(Bundle { dir, spec, rootfs })
}

/// Names the runtime-spec gives that the oci-spec crate spells otherwise (its serde names for
/// `LinuxSchedulerFlag`): (the spec's, oci-spec's). Both are accepted; errors show the spec's.
const SCHEDULER_FLAG_SPELLINGS: &[(&str, &str)] =
    &[("SCHED_FLAG_RESET_ON_FORK", "SCHED_RESET_ON_FORK"), ("SCHED_FLAG_DL_OVERRUN", "SCHED_FLAG_D_L_OVERRUN")];

/// Rewrites the spec's spellings at `scheduler.flags` of a process object into oci-spec's.
fn respell_scheduler_flags(process: &mut serde_json::Value) {
    let Some(flags) = process.pointer_mut("/scheduler/flags").and_then(|f| f.as_array_mut()) else { return };
    for flag in flags {
        if let Some((_, theirs)) = SCHEDULER_FLAG_SPELLINGS.iter().find(|(spec, _)| flag.as_str() == Some(spec)) {
            *flag = serde_json::Value::String(theirs.to_string());
        }
    }
}

/// The JSON to hand to oci-spec: the bytes as they are unless they use a spelling it does not
/// know (then re-encoded with the spelling replaced at that very field, nowhere else).
fn respelled(bytes: &[u8], process_at: Option<&str>) -> Option<Vec<u8>> {
    let uses = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    if !SCHEDULER_FLAG_SPELLINGS.iter().any(|(spec, _)| uses(spec)) {
        return None;
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let process = match process_at {
        Some(at) => value.pointer_mut(at)?,
        None => &mut value,
    };
    respell_scheduler_flags(process);
    serde_json::to_vec(&value).ok()
}

/// An error message with oci-spec's spellings turned back into the spec's.
fn spec_spelling(message: String) -> String {
    SCHEDULER_FLAG_SPELLINGS.iter().fold(message, |m, (spec, theirs)| m.replace(theirs, spec))
}

/// Parses a runtime spec; errors carry the JSON path and the line/column.
pub fn parse_spec(bytes: &[u8], origin: &str) -> Result<Spec> {
    let respelled = respelled(bytes, Some("/process"));
    parse_json(respelled.as_deref().unwrap_or(bytes), origin)
}

/// Parses a process object (`exec --process`); errors carry the JSON path.
pub fn parse_process(bytes: &[u8], origin: &str) -> Result<oci_spec::runtime::Process> {
    let respelled = respelled(bytes, None);
    parse_json(respelled.as_deref().unwrap_or(bytes), origin)
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], origin: &str) -> Result<T> {
    // The path-tracking parser is slower and much larger in code: it only runs to explain an
    // error the plain one found.
    if let Ok(spec) = serde_json::from_slice(bytes) {
        return Ok(spec);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize::<_, T>(de).map(Ok).unwrap_or_else(|e| {
        let path = e.path().to_string();
        let inner = spec_spelling(e.into_inner().to_string());
        if path.is_empty() || path == "." {
            Err(Error::invalid(format!("{origin}: {inner}")))
        } else {
            Err(Error::invalid(format!("{origin}: {path}: {inner}")))
        }
    })
}

fn rootfs_path(bundle: &Path, spec: &Spec) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::invalid("config.json: root: missing (a Linux container needs a root filesystem)"))?;
    let path = root.path();
    if path.as_os_str().is_empty() {
        return Err(Error::invalid("config.json: root.path: empty"));
    }
    let full = if path.is_absolute() { path.clone() } else { bundle.join(path) };
    match std::fs::metadata(&full) {
        Ok(m) if m.is_dir() => Ok(full),
        Ok(_) => Err(Error::invalid(format!("config.json: root.path: {} is not a directory", full.display()))),
        Err(e) => Err(Error::from_io(e).context(format!("config.json: root.path: {}", full.display()))),
    }
}

fn invalid(path: impl std::fmt::Display, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{path}: {msg}"))
}

fn unsupported(path: &str, what: &str) -> Error {
    Error::new(ErrorKind::Unsupported, format!("{path}: {what} is not supported by berth-oci yet"))
}

pub fn namespace_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Time => "time",
    }
}

/// Checks a parsed spec for everything that does not need the system: required fields, absolute
/// paths, namespace consistency, and fields this runtime does not implement.
pub fn validate(spec: &Spec) -> Result<()> {
    if !spec.version().starts_with(OCI_VERSION_MAJOR) {
        return Err(invalid("ociVersion", format!("'{}' is not a 1.x runtime-spec version", spec.version())));
    }
    if spec.solaris().is_some() || spec.windows().is_some() || spec.vm().is_some() || spec.zos().is_some() {
        return Err(invalid("config", "only Linux containers are supported (solaris, windows, vm or zos is set)"));
    }
    if let Some(hooks) = spec.hooks() {
        crate::hooks::validate(hooks)?;
    }
    validate_process(spec)?;
    let linux = spec.linux().as_ref().ok_or_else(|| invalid("linux", "missing"))?;
    let namespaces = validate_namespaces(spec)?;

    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !namespaces.contains(&LinuxNamespaceType::Uts) {
        return Err(invalid("hostname", "setting the hostname needs a uts namespace (add it to linux.namespaces)"));
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty()) && !namespaces.contains(&LinuxNamespaceType::Uts) {
        return Err(invalid("domainname", "setting the domainname needs a uts namespace (add it to linux.namespaces)"));
    }
    if let Some(mounts) = spec.mounts() {
        for (i, m) in mounts.iter().enumerate() {
            let at = format!("mounts[{i}]");
            if m.destination().as_os_str().is_empty() {
                return Err(invalid(format!("{at}.destination"), "empty"));
            }
            let has_uid = m.uid_mappings().as_ref().is_some_and(|v| !v.is_empty());
            let has_gid = m.gid_mappings().as_ref().is_some_and(|v| !v.is_empty());
            if has_uid != has_gid {
                return Err(invalid(
                    format!("{at}.uidMappings"),
                    "an ID-mapped mount needs both uidMappings and gidMappings",
                ));
            }
            for (field, maps) in [("uidMappings", m.uid_mappings()), ("gidMappings", m.gid_mappings())] {
                for (j, map) in maps.iter().flatten().enumerate() {
                    check_mapping(map, &format!("{at}.{field}[{j}]"))?;
                }
            }
            crate::mounts::MountOptions::parse(m.options().as_deref().unwrap_or(&[]))
                .map_err(|e| e.context(format!("{at}.options")))?;
        }
    }
    if let Some(sysctl) = linux.sysctl() {
        let mut keys: Vec<&String> = sysctl.keys().collect();
        keys.sort();
        for key in keys {
            check_sysctl(key, &namespaces)?;
        }
    }
    if let Some(devices) = linux.devices() {
        for (i, d) in devices.iter().enumerate() {
            if !d.path().is_absolute() {
                return Err(invalid(
                    format!("linux.devices[{i}].path"),
                    format!("'{}' is not an absolute path", d.path().display()),
                ));
            }
            if d.path().components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(invalid(
                    format!("linux.devices[{i}].path"),
                    format!("'{}' contains '..'", d.path().display()),
                ));
            }
        }
    }
    for (field, paths) in [("linux.maskedPaths", linux.masked_paths()), ("linux.readonlyPaths", linux.readonly_paths())]
    {
        for (i, p) in paths.iter().flatten().enumerate() {
            if !p.starts_with('/') {
                return Err(invalid(format!("{field}[{i}]"), format!("'{p}' is not an absolute path")));
            }
        }
    }
    if let Some(prop) = linux.rootfs_propagation() {
        crate::mounts::propagation_flag(prop).ok_or_else(|| {
            invalid(
                "linux.rootfsPropagation",
                format!("'{prop}' is not one of shared, slave, private, unbindable (or their r-prefixed forms)"),
            )
        })?;
    }
    if linux.intel_rdt().is_some() {
        return Err(unsupported("linux.intelRdt", "Intel RDT"));
    }
    if let Some(p) = linux.personality() {
        crate::attrs::personality(p)?;
    }
    if let Some(p) = linux.memory_policy() {
        crate::attrs::memory_policy(p)?;
    }
    if linux.net_devices().is_some() {
        return Err(unsupported("linux.netDevices", "moving network devices"));
    }
    if linux.mount_label().as_deref().is_some_and(|l| !l.is_empty()) && !crate::attrs::selinux_enabled() {
        return Err(Error::unsupported(
            "linux.mountLabel: an SELinux mount label is given, but SELinux is not enabled on this host",
        ));
    }
    if let Some(offsets) = linux.time_offsets() {
        if !namespaces.contains(&LinuxNamespaceType::Time) {
            return Err(invalid("linux.timeOffsets", "needs a new time namespace in linux.namespaces"));
        }
        for clock in offsets.keys() {
            if clock != "monotonic" && clock != "boottime" {
                return Err(invalid(
                    format!("linux.timeOffsets.{clock}"),
                    "only the monotonic and boottime clocks can be offset",
                ));
            }
        }
    }
    if let Some(resources) = linux.resources() {
        crate::cgroups::validate_resources(resources).map_err(|e| e.context("linux.resources"))?;
    }
    Ok(())
}

fn validate_process(spec: &Spec) -> Result<()> {
    let Some(process) = spec.process() else {
        return Err(invalid("process", "missing (a container needs a process to run)"));
    };
    validate_process_fields(process, "process")
}

/// The checks shared by config.json's `process` and `exec --process`.
pub fn validate_process_fields(process: &oci_spec::runtime::Process, at: &str) -> Result<()> {
    let args = process.args().as_deref().unwrap_or(&[]);
    if args.is_empty() || args[0].is_empty() {
        return Err(invalid(format!("{at}.args"), "empty (the first element names the program to run)"));
    }
    if process.command_line().is_some() {
        return Err(invalid(format!("{at}.commandLine"), "is for Windows containers"));
    }
    if !process.cwd().is_absolute() {
        return Err(invalid(format!("{at}.cwd"), format!("'{}' is not an absolute path", process.cwd().display())));
    }
    for (i, e) in process.env().iter().flatten().enumerate() {
        if !e.contains('=') {
            return Err(invalid(format!("{at}.env[{i}]"), format!("'{e}' is not of the form KEY=value")));
        }
        no_nul(e, &format!("{at}.env[{i}]"))?;
    }
    for (i, a) in args.iter().enumerate() {
        no_nul(a, &format!("{at}.args[{i}]"))?;
    }
    no_nul(&process.cwd().to_string_lossy(), &format!("{at}.cwd"))?;
    let user = process.user();
    check_process_id(user.uid(), &format!("{at}.user.uid"))?;
    check_process_id(user.gid(), &format!("{at}.user.gid"))?;
    for (i, g) in user.additional_gids().iter().flatten().enumerate() {
        check_process_id(*g, &format!("{at}.user.additionalGids[{i}]"))?;
    }
    crate::attrs::ProcessAttrs::from_spec(process, at)?;
    let mut seen = Vec::new();
    for (i, r) in process.rlimits().iter().flatten().enumerate() {
        if seen.contains(&r.typ()) {
            return Err(invalid(format!("{at}.rlimits[{i}].type"), format!("{:?} is given twice", r.typ())));
        }
        if r.soft() > r.hard() {
            return Err(invalid(
                format!("{at}.rlimits[{i}]"),
                format!("soft limit {} is above the hard limit {}", r.soft(), r.hard()),
            ));
        }
        seen.push(r.typ());
    }
    Ok(())
}

/// The largest uid or gid a process may be given. The kernel's ids are 32 bits, but -1
/// (4294967295) means "leave unchanged" to setresuid/setresgid and setgroups-style calls, so a
/// process given it would silently keep the runtime's root; like runc, only the non-negative
/// 32-bit signed range is accepted.
pub const MAX_PROCESS_ID: u32 = i32::MAX as u32;

/// A process's uid or gid: within 0..=MAX_PROCESS_ID.
pub fn check_process_id(id: u32, field: &str) -> Result<()> {
    if id > MAX_PROCESS_ID {
        return Err(invalid(field, format!("{id} is out of range (a process id is 0 to {MAX_PROCESS_ID})")));
    }
    Ok(())
}

/// Strings that become C strings (arguments, environment, paths) cannot hold NUL: the kernel
/// would see them cut short, so they are refused rather than truncated or emptied.
fn no_nul(value: &str, field: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(invalid(field, format!("{value:?} contains a NUL byte")));
    }
    Ok(())
}

/// An id mapping's ranges: ids are 32 bits and 4294967295 is never a valid id, so
/// `containerID + size` and `hostID + size` must both stay within 2^32 - 1 (the kernel refuses
/// a range that wraps; checked here to name the field).
fn check_mapping(m: &oci_spec::runtime::LinuxIdMapping, field: &str) -> Result<()> {
    if m.size() == 0 {
        return Err(invalid(format!("{field}.size"), "0"));
    }
    for (name, start) in [("containerID", m.container_id()), ("hostID", m.host_id())] {
        if u64::from(start) + u64::from(m.size()) > u64::from(u32::MAX) {
            return Err(invalid(
                field,
                format!("{name} {start} + size {} goes past the last id {}", m.size(), u32::MAX - 1),
            ));
        }
    }
    Ok(())
}

/// Returns the set of namespace types the container gets (new or joined).
fn validate_namespaces(spec: &Spec) -> Result<HashSet<LinuxNamespaceType>> {
    let linux = spec.linux().as_ref().expect("checked by caller");
    let mut seen = HashSet::new();
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        let at = format!("linux.namespaces[{i}]");
        if !seen.insert(ns.typ()) {
            return Err(invalid(format!("{at}.type"), format!("duplicate namespace '{}'", namespace_name(ns.typ()))));
        }
        if let Some(path) = ns.path() {
            if !path.is_absolute() {
                return Err(invalid(format!("{at}.path"), format!("'{}' is not an absolute path", path.display())));
            }
        }
    }
    check_shared_mount_table(spec)?;
    let new_user =
        linux.namespaces().iter().flatten().any(|ns| ns.typ() == LinuxNamespaceType::User && ns.path().is_none());
    let has_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if new_user {
        for (field, maps) in [("linux.uidMappings", linux.uid_mappings()), ("linux.gidMappings", linux.gid_mappings())]
        {
            let maps = maps.as_deref().unwrap_or(&[]);
            if maps.is_empty() {
                return Err(invalid(field, "a new user namespace needs uid and gid mappings"));
            }
            for (i, m) in maps.iter().enumerate() {
                check_mapping(m, &format!("{field}[{i}]"))?;
            }
        }
    } else if has_maps {
        return Err(invalid("linux.uidMappings", "mappings are given but linux.namespaces creates no user namespace"));
    }
    Ok(seen)
}

/// Whether the container gets a mount namespace of its own (a new one). Without one (none
/// listed, or one joined by path) it shares a mount table that is not its to change.
pub fn owns_mount_namespace(linux: &oci_spec::runtime::Linux) -> bool {
    linux.namespaces().iter().flatten().any(|n| n.typ() == LinuxNamespaceType::Mount && n.path().is_none())
}

/// A container without a mount namespace of its own shares the runtime's (or the joined one's)
/// mount table: nothing may be mounted for it there. Its root is root.path, entered with
/// chroot, not pivot_root; what needs mounts is refused, naming the field.
fn check_shared_mount_table(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref().expect("checked by caller");
    if owns_mount_namespace(linux) {
        return Ok(());
    }
    let joined = linux.namespaces().iter().flatten().any(|n| n.typ() == LinuxNamespaceType::Mount);
    let whose = if joined { "the joined mount namespace's" } else { "the runtime's" };
    let refuse = |field: &str, what: &str| {
        invalid(
            field,
            format!("{what} needs a mount namespace of the container's own; without one the container shares {whose} mount table, which berth-oci does not change"),
        )
    };
    if spec.mounts().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(refuse("mounts", "mounting"));
    }
    if linux.masked_paths().as_ref().is_some_and(|p| !p.is_empty()) {
        return Err(refuse("linux.maskedPaths", "masking paths"));
    }
    if linux.readonly_paths().as_ref().is_some_and(|p| !p.is_empty()) {
        return Err(refuse("linux.readonlyPaths", "read-only paths"));
    }
    if linux.rootfs_propagation().is_some() {
        return Err(refuse("linux.rootfsPropagation", "the rootfs's propagation"));
    }
    if spec.root().as_ref().is_some_and(|r| r.readonly() == Some(true)) {
        return Err(refuse("root.readonly", "a read-only root"));
    }
    if linux.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(refuse("linux.devices", "creating devices"));
    }
    if spec.process().as_ref().is_some_and(|p| p.terminal() == Some(true)) {
        return Err(refuse("process.terminal", "a terminal (/dev/console, the container's devpts)"));
    }
    let idmap = crate::create::ROOTFS_IDMAP_ANNOTATION;
    if spec.annotations().as_ref().and_then(|a| a.get(idmap)).is_some_and(|v| v == "true") {
        return Err(refuse(&format!("annotations.{idmap}"), "an ID-mapped rootfs"));
    }
    Ok(())
}

/// Only namespaced sysctls may be set, and only when the container has that namespace: a
/// sysctl outside one would change the host.
fn check_sysctl(key: &str, namespaces: &HashSet<LinuxNamespaceType>) -> Result<()> {
    let at = format!("linux.sysctl.{key}");
    if key.is_empty() || key.contains("..") || key.starts_with(['.', '/']) {
        return Err(invalid(at, "not a valid sysctl name"));
    }
    // The uts namespace's names have fields of their own; a sysctl would fight them (which one
    // wins would depend on the order the runtime applies them). runc and crun refuse
    // kernel.hostname too; they take kernel.domainname, from before the spec's domainname field.
    for (name, field) in [("kernel.hostname", "hostname"), ("kernel.domainname", "domainname")] {
        if key == name || key == name.replace('.', "/") {
            return Err(invalid(at, format!("conflicts with the {field} field: set the {field} there")));
        }
    }
    let needed = if key.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else if key.starts_with("fs.mqueue.")
        || matches!(
            key,
            "kernel.msgmax"
                | "kernel.msgmnb"
                | "kernel.msgmni"
                | "kernel.sem"
                | "kernel.shmall"
                | "kernel.shmmax"
                | "kernel.shmmni"
                | "kernel.shm_rmid_forced"
        )
    {
        Some(LinuxNamespaceType::Ipc)
    } else {
        None
    };
    match needed {
        Some(ns) if namespaces.contains(&ns) => Ok(()),
        Some(ns) => Err(invalid(at, format!("needs a {} namespace, or it would change the host", namespace_name(ns)))),
        None => Err(invalid(at, "is not namespaced: setting it would change the host")),
    }
}

/// Container ids: what runc accepts (letters, digits, `_ + - .`), never `.` or `..`, so an id
/// is always a single safe path component.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("invalid container id '{id}': use letters, digits and _ + - . only")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {"namespaces": [{"type": "mount"}]}
        })
    }

    fn parses(edit: impl Fn(&mut serde_json::Value)) -> Result<Spec> {
        let mut v = minimal();
        edit(&mut v);
        parse_spec(v.to_string().as_bytes(), "config.json")
    }

    /// Every enumerated string the runtime-spec (1.2, config.md, config-linux.md) defines is
    /// understood by its spec name.
    #[test]
    fn every_enumerated_value_of_the_spec_parses() {
        let mut failures = Vec::new();
        let mut check = |what: String, result: Result<Spec>| {
            if let Err(e) = result {
                failures.push(format!("{what}: {e}"));
            }
        };
        for class in ["IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE"] {
            check(class.into(), parses(|v| v["process"]["ioPriority"] = serde_json::json!({"class": class})));
        }
        for policy in
            ["SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_ISO", "SCHED_IDLE", "SCHED_DEADLINE"]
        {
            check(policy.into(), parses(|v| v["process"]["scheduler"] = serde_json::json!({"policy": policy})));
        }
        for flag in [
            "SCHED_FLAG_RESET_ON_FORK",
            "SCHED_FLAG_RECLAIM",
            "SCHED_FLAG_DL_OVERRUN",
            "SCHED_FLAG_KEEP_POLICY",
            "SCHED_FLAG_KEEP_PARAMS",
            "SCHED_FLAG_UTIL_CLAMP_MIN",
            "SCHED_FLAG_UTIL_CLAMP_MAX",
        ] {
            check(
                flag.into(),
                parses(|v| v["process"]["scheduler"] = serde_json::json!({"policy": "SCHED_OTHER", "flags": [flag]})),
            );
        }
        for rlimit in [
            "RLIMIT_AS",
            "RLIMIT_CORE",
            "RLIMIT_CPU",
            "RLIMIT_DATA",
            "RLIMIT_FSIZE",
            "RLIMIT_LOCKS",
            "RLIMIT_MEMLOCK",
            "RLIMIT_MSGQUEUE",
            "RLIMIT_NICE",
            "RLIMIT_NOFILE",
            "RLIMIT_NPROC",
            "RLIMIT_RSS",
            "RLIMIT_RTPRIO",
            "RLIMIT_RTTIME",
            "RLIMIT_SIGPENDING",
            "RLIMIT_STACK",
        ] {
            check(
                rlimit.into(),
                parses(|v| v["process"]["rlimits"] = serde_json::json!([{"type": rlimit, "soft": 1, "hard": 1}])),
            );
        }
        for cap in crate::caps::NAMES {
            check(
                cap.to_string(),
                parses(|v| v["process"]["capabilities"] = serde_json::json!({"bounding": [format!("CAP_{cap}")]})),
            );
        }
        for ns in ["mount", "pid", "network", "uts", "ipc", "user", "cgroup", "time"] {
            check(ns.into(), parses(|v| v["linux"]["namespaces"] = serde_json::json!([{"type": ns}])));
        }
        for t in ["c", "b", "u", "p"] {
            check(
                format!("device {t}"),
                parses(|v| {
                    v["linux"]["devices"] = serde_json::json!([{"path": "/dev/x", "type": t, "major": 1, "minor": 1}])
                }),
            );
        }
        for t in ["a", "c", "b"] {
            check(
                format!("device rule {t}"),
                parses(|v| v["linux"]["resources"] = serde_json::json!({"devices": [{"allow": true, "type": t}]})),
            );
        }
        for action in [
            "SCMP_ACT_KILL",
            "SCMP_ACT_KILL_PROCESS",
            "SCMP_ACT_KILL_THREAD",
            "SCMP_ACT_TRAP",
            "SCMP_ACT_ERRNO",
            "SCMP_ACT_TRACE",
            "SCMP_ACT_ALLOW",
            "SCMP_ACT_LOG",
            "SCMP_ACT_NOTIFY",
        ] {
            check(action.into(), parses(|v| v["linux"]["seccomp"] = serde_json::json!({"defaultAction": action})));
        }
        for op in [
            "SCMP_CMP_NE",
            "SCMP_CMP_LT",
            "SCMP_CMP_LE",
            "SCMP_CMP_EQ",
            "SCMP_CMP_GE",
            "SCMP_CMP_GT",
            "SCMP_CMP_MASKED_EQ",
        ] {
            check(
                op.into(),
                parses(|v| {
                    v["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": op}]}
                    ]})
                }),
            );
        }
        for arch in [
            "SCMP_ARCH_X86",
            "SCMP_ARCH_X86_64",
            "SCMP_ARCH_X32",
            "SCMP_ARCH_ARM",
            "SCMP_ARCH_AARCH64",
            "SCMP_ARCH_MIPS",
            "SCMP_ARCH_MIPS64",
            "SCMP_ARCH_MIPS64N32",
            "SCMP_ARCH_MIPSEL",
            "SCMP_ARCH_MIPSEL64",
            "SCMP_ARCH_MIPSEL64N32",
            "SCMP_ARCH_PPC",
            "SCMP_ARCH_PPC64",
            "SCMP_ARCH_PPC64LE",
            "SCMP_ARCH_S390",
            "SCMP_ARCH_S390X",
            "SCMP_ARCH_PARISC",
            "SCMP_ARCH_PARISC64",
            "SCMP_ARCH_RISCV64",
        ] {
            check(
                arch.into(),
                parses(|v| {
                    v["linux"]["seccomp"] =
                        serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": [arch]})
                }),
            );
        }
        for flag in [
            "SECCOMP_FILTER_FLAG_TSYNC",
            "SECCOMP_FILTER_FLAG_LOG",
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
        ] {
            check(
                flag.into(),
                parses(|v| {
                    v["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": [flag]})
                }),
            );
        }
        for domain in ["LINUX", "LINUX32"] {
            check(domain.into(), parses(|v| v["linux"]["personality"] = serde_json::json!({"domain": domain})));
        }
        for mode in [
            "MPOL_DEFAULT",
            "MPOL_BIND",
            "MPOL_INTERLEAVE",
            "MPOL_WEIGHTED_INTERLEAVE",
            "MPOL_PREFERRED",
            "MPOL_PREFERRED_MANY",
            "MPOL_LOCAL",
        ] {
            check(mode.into(), parses(|v| v["linux"]["memoryPolicy"] = serde_json::json!({"mode": mode})));
        }
        for flag in ["MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES"] {
            check(
                flag.into(),
                parses(|v| v["linux"]["memoryPolicy"] = serde_json::json!({"mode": "MPOL_BIND", "flags": [flag]})),
            );
        }
        assert!(failures.is_empty(), "spec values not understood:\n{}", failures.join("\n"));
    }

    #[test]
    fn scheduler_flag_errors_use_the_spec_spelling_and_only_that_field_is_respelled() {
        let err = parses(|v| {
            v["process"]["scheduler"] = serde_json::json!({"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_NOPE"]})
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("process.scheduler.flags[0]") && err.contains("`SCHED_FLAG_RESET_ON_FORK`"), "{err}");
        assert!(!err.contains("`SCHED_RESET_ON_FORK`") && !err.contains("D_L_OVERRUN"), "{err}");
        let spec = parses(|v| {
            v["process"]["scheduler"] =
                serde_json::json!({"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_RESET_ON_FORK"]});
            v["annotations"] = serde_json::json!({"note": "SCHED_FLAG_RESET_ON_FORK"});
        })
        .unwrap();
        assert_eq!(spec.annotations().as_ref().unwrap()["note"], "SCHED_FLAG_RESET_ON_FORK");
        let process = parse_process(
            br#"{"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "scheduler": {"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_DL_OVERRUN"]}}"#,
            "--process p.json",
        )
        .unwrap();
        assert_eq!(process.scheduler().as_ref().unwrap().flags().as_ref().unwrap().len(), 1);
    }
}
