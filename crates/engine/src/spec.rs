//! A container's OCI runtime spec, with docker's defaults: the default capability set, the
//! default seccomp profile (when the runtime can apply one), masked and read-only paths,
//! /dev/shm of 64 MiB, per-container /etc/hosts, /etc/hostname and /etc/resolv.conf, the
//! device allowlist, resources, and the user's mounts.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{bail, Result};

pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability, in the kernel's number order.
pub const ALL_CAPS: &[&str] = &oci_runtime::caps::NAMES;

pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// `chown` → `CAP_CHOWN`; `ALL` stays.
pub fn normalize_cap(c: &str) -> Result<String> {
    let up = c.trim().to_ascii_uppercase();
    if up == "ALL" {
        return Ok(up);
    }
    let full = if up.starts_with("CAP_") { up } else { format!("CAP_{up}") };
    if !ALL_CAPS.contains(&full.as_str()) {
        bail!(InvalidInput, "unknown capability {c:?}");
    }
    Ok(full)
}

/// The capabilities this process may hand on (its bounding set; `ALL_CAPS` is in capability
/// number order).
pub fn available_caps() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(u64::MAX);
    ALL_CAPS.iter().enumerate().filter(|(i, _)| bnd & (1u64 << i) != 0).map(|(_, c)| *c).collect()
}

/// The container's capabilities: docker's default set (with --privileged, every one this host
/// lets berth hand on), then `--cap-drop`, then `--cap-add` (each may be ALL).
pub fn capabilities(privileged: bool, add: &[String], drop: &[String]) -> Result<Vec<String>> {
    let add: Vec<String> = add.iter().map(|c| normalize_cap(c)).collect::<Result<_>>()?;
    let drop: Vec<String> = drop.iter().map(|c| normalize_cap(c)).collect::<Result<_>>()?;
    let available = available_caps();
    for c in &add {
        if c != "ALL" && !available.contains(&c.as_str()) {
            bail!(
                InvalidInput,
                "--cap-add {c}: this capability is not available to berth on this host (not in its bounding set)"
            );
        }
    }
    let mut caps: Vec<String> = if privileged || add.iter().any(|c| c == "ALL") {
        available.iter().map(|s| s.to_string()).collect()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    if drop.iter().any(|c| c == "ALL") {
        caps.clear();
    }
    caps.retain(|c| !drop.contains(c));
    for c in add {
        if c != "ALL" && !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

/// One of the container's mounts beyond the defaults, as `inspect` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct MountInfo {
    /// bind, volume or tmpfs
    #[serde(rename = "Type")]
    pub kind: String,
    /// volume name (volume), host path (bind), empty (tmpfs)
    pub name: String,
    pub source: String,
    pub destination: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    pub options: Vec<String>,
    #[serde(default)]
    pub anonymous: bool,
}

fn check_destination(d: &str, spec: &str) -> Result<()> {
    if !d.starts_with('/') {
        bail!(InvalidInput, "{spec:?}: the container path {d:?} is not absolute");
    }
    if d.split('/').any(|c| c == "..") {
        bail!(InvalidInput, "{spec:?}: the container path {d:?} contains '..'");
    }
    if d == "/" {
        bail!(InvalidInput, "{spec:?}: cannot mount over the container's /");
    }
    Ok(())
}

/// An image's `VOLUME`: only ever a path inside the container (as docker treats the keys of
/// the image config's `Volumes`), never parsed as `-v`'s `SOURCE:DEST` — a key such as
/// `/:/host` is the container directory named `/:/host`, not a bind of the host's root.
/// Cleaned as a path (`//`, `.` and a trailing `/` dropped; a relative key is taken from the
/// container's `/`, as docker resolves it); `..`, `/` itself and NUL are refused.
pub fn image_volume(key: &str) -> Result<MountInfo> {
    let what = format!("image config Volumes key {key:?}");
    if key.contains('\0') {
        bail!(InvalidInput, "{what}: contains a NUL byte");
    }
    let parts: Vec<&str> = key.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if parts.contains(&"..") {
        bail!(InvalidInput, "{what}: contains '..'");
    }
    if parts.is_empty() {
        bail!(InvalidInput, "{what}: cannot be the container's /");
    }
    Ok(MountInfo {
        kind: "volume".into(),
        name: String::new(),
        source: String::new(),
        destination: format!("/{}", parts.join("/")),
        rw: true,
        options: vec!["rw".into()],
        anonymous: true,
    })
}

pub fn valid_volume_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() >= 2
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `-v`: `HOST_PATH:CTR_PATH[:ro|rw]` (a bind mount of an existing host path),
/// `NAME:CTR_PATH[:ro|rw]` (a named volume) or `CTR_PATH` (an anonymous volume).
pub fn parse_volume(spec: &str) -> Result<MountInfo> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [d] => ("", *d, ""),
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => bail!(InvalidInput, "volume {spec:?}: expected [SOURCE:]CONTAINER_PATH[:ro|rw]"),
    };
    check_destination(dst, spec)?;
    let mut rw = true;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" | "readonly" => rw = false,
            "rw" => rw = true,
            other => bail!(InvalidInput, "volume {spec:?}: unknown option {other:?} (ro or rw)"),
        }
    }
    let options = vec![if rw { "rw".into() } else { "ro".into() }];
    if src.is_empty() {
        return Ok(MountInfo {
            kind: "volume".into(),
            name: String::new(),
            source: String::new(),
            destination: dst.into(),
            rw,
            options,
            anonymous: true,
        });
    }
    if src.starts_with('/') || src.starts_with('.') {
        if !src.starts_with('/') {
            bail!(InvalidInput, "volume {spec:?}: the host path {src:?} must be absolute");
        }
        let p = Path::new(src);
        if !p.exists() {
            bail!(InvalidInput, "volume {spec:?}: bind mount source path {src} does not exist");
        }
        return Ok(MountInfo {
            kind: "bind".into(),
            name: String::new(),
            source: src.into(),
            destination: dst.into(),
            rw,
            options,
            anonymous: false,
        });
    }
    if !valid_volume_name(src) {
        bail!(InvalidInput, "volume {spec:?}: {src:?} is neither an absolute host path nor a valid volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)");
    }
    Ok(MountInfo {
        kind: "volume".into(),
        name: src.into(),
        source: String::new(),
        destination: dst.into(),
        rw,
        options,
        anonymous: false,
    })
}

/// `--tmpfs CTR_PATH[:OPTIONS]` (default rw,noexec,nosuid,nodev).
pub fn parse_tmpfs(spec: &str) -> Result<MountInfo> {
    let (dst, opts) = spec.split_once(':').unwrap_or((spec, ""));
    check_destination(dst, spec)?;
    let mut options: Vec<String> = vec!["rw".into(), "noexec".into(), "nosuid".into(), "nodev".into()];
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        let known = matches!(
            o,
            "ro" | "rw"
                | "exec"
                | "noexec"
                | "suid"
                | "nosuid"
                | "dev"
                | "nodev"
                | "atime"
                | "noatime"
                | "relatime"
                | "strictatime"
        ) || o.starts_with("size=")
            || o.starts_with("mode=")
            || o.starts_with("uid=")
            || o.starts_with("gid=")
            || o.starts_with("nr_inodes=");
        if !known {
            bail!(InvalidInput, "--tmpfs {spec:?}: unknown option {o:?}");
        }
        let opposite = |a: &str| match a {
            "ro" => Some("rw"),
            "rw" => Some("ro"),
            "exec" => Some("noexec"),
            "noexec" => Some("exec"),
            "suid" => Some("nosuid"),
            "nosuid" => Some("suid"),
            "dev" => Some("nodev"),
            "nodev" => Some("dev"),
            _ => None,
        };
        if let Some(x) = opposite(o) {
            options.retain(|e| e != x);
        }
        if !options.iter().any(|e| e == o) {
            options.push(o.to_string());
        }
    }
    let rw = !options.iter().any(|o| o == "ro");
    Ok(MountInfo {
        kind: "tmpfs".into(),
        name: String::new(),
        source: "tmpfs".into(),
        destination: dst.into(),
        rw,
        options,
        anonymous: false,
    })
}

/// The smallest `--cpus`: a quota of 1 ms per 100 ms period, the kernel's minimum quota.
pub const MIN_CPUS: f64 = 0.01;

/// The largest pids limit the kernel takes (PID_MAX_LIMIT, 2^22).
pub const MAX_PIDS_LIMIT: i64 = 1 << 22;

/// The largest memory limit the kernel honours: its page counters hold at most
/// `i64::MAX / PAGE_SIZE` pages, and a larger value is silently taken as "no limit".
pub const MAX_MEMORY: i64 = i64::MAX / 4096 * 4096;

/// `--memory`: `512m`, `1g`, `1.5g`, `1048576`, `64k` (binary units, as docker): digits with an
/// optional fraction, then an optional unit (k, m, g, t, p) and `b`. No exponents, signs or
/// spaces; 6m to MAX_MEMORY.
pub fn parse_memory(s: &str) -> Result<i64> {
    let bad = || crate::Error::invalid(format!("invalid memory value {s:?} (examples: 512m, 1.5g, 1048576)"));
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        Some('p') => (&t[..t.len() - 1], 50),
        _ => (t, 0),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let digits = |d: &str| !d.is_empty() && d.len() <= 30 && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || (num.contains('.') && !digits(frac)) {
        return Err(bad());
    }
    let frac = &frac[..frac.len().min(18)];
    let int: u128 = int.parse().map_err(|_| bad())?;
    let frac_value: u128 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| bad())? };
    let bytes = (int << shift).saturating_add((frac_value << shift) / 10u128.pow(frac.len() as u32));
    if bytes == 0 {
        bail!(InvalidInput, "invalid memory value {s:?}: must be positive");
    }
    if bytes < 6 << 20 {
        bail!(InvalidInput, "memory limit {s:?} is too small: the minimum is 6m");
    }
    if bytes > MAX_MEMORY as u128 {
        bail!(InvalidInput, "memory limit {s:?} is larger than the kernel can enforce (at most {MAX_MEMORY} bytes)");
    }
    Ok(bytes as i64)
}

pub struct SpecInput<'a> {
    pub rootfs: &'a Path,
    pub read_only: bool,
    pub terminal: bool,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub caps: Vec<String>,
    pub privileged: bool,
    pub no_new_privileges: bool,
    pub seccomp: Option<Value>,
    /// None: the host's network namespace
    pub netns: Option<&'a Path>,
    pub etc_files: &'a Path,
    pub mounts: &'a [MountInfo],
    /// host paths of the mounts' sources (volumes resolved)
    pub sources: &'a [String],
    pub init: Option<&'a Path>,
    pub memory: Option<i64>,
    /// the host accounts swap per cgroup: a memory limit gets docker's default swap limit
    pub swap_accounting: bool,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub cgroups_path: String,
    pub cgroup_ns: bool,
    pub annotations: serde_json::Map<String, Value>,
}

pub fn build(i: &SpecInput) -> Value {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": if i.privileged { json!(["nosuid", "noexec", "nodev"]) } else { json!(["nosuid", "noexec", "nodev", "ro"]) }}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]}),
    ];
    for f in ["hosts", "hostname", "resolv.conf"] {
        let dst = format!("/etc/{f}");
        if i.mounts.iter().any(|m| m.destination == dst) {
            continue;
        }
        let mut opts = vec!["bind", "rprivate"];
        if i.read_only {
            opts.push("ro");
        }
        mounts.push(json!({"destination": dst, "type": "bind", "source": i.etc_files.join(f), "options": opts}));
    }
    for (m, src) in i.mounts.iter().zip(i.sources) {
        let mut opts: Vec<String> = match m.kind.as_str() {
            "tmpfs" => m.options.clone(),
            _ => vec!["rbind".into(), "rprivate".into()],
        };
        if m.kind != "tmpfs" && !m.rw {
            opts.push("ro".into());
        }
        let kind = if m.kind == "tmpfs" { "tmpfs" } else { "bind" };
        mounts.push(json!({"destination": m.destination, "type": kind, "source": src, "options": opts}));
    }
    let mut args = i.args.clone();
    if let Some(init) = i.init {
        mounts.push(
            json!({"destination": "/dev/init", "type": "bind", "source": init, "options": ["bind", "ro", "rprivate"]}),
        );
        args.splice(0..0, ["/dev/init".to_string(), "--".to_string()]);
    }
    let mut namespaces =
        vec![json!({"type": "pid"}), json!({"type": "ipc"}), json!({"type": "uts"}), json!({"type": "mount"})];
    if let Some(p) = i.netns {
        namespaces.push(json!({"type": "network", "path": p}));
    }
    if i.cgroup_ns {
        namespaces.push(json!({"type": "cgroup"}));
    }
    let mut devices = vec![json!({"allow": false, "access": "rwm"})];
    if i.privileged {
        devices = vec![json!({"allow": true, "access": "rwm"})];
    } else {
        for (kind, major, minor) in
            [("c", 1, 3), ("c", 1, 5), ("c", 1, 7), ("c", 1, 8), ("c", 1, 9), ("c", 5, 0), ("c", 5, 1), ("c", 5, 2)]
        {
            devices.push(json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": "rwm"}));
        }
        devices.push(json!({"allow": true, "type": "c", "major": 136, "access": "rwm"}));
    }
    let mut resources = json!({ "devices": devices });
    if let Some(m) = i.memory {
        resources["memory"] = json!({ "limit": m });
        // docker's default: as much swap as memory (the OCI swap value is memory + swap), so a
        // container over its limit is OOM-killed instead of swapping without bound.
        if i.swap_accounting {
            resources["memory"]["swap"] = json!(m.saturating_mul(2).min(MAX_MEMORY));
        }
    }
    if let Some(c) = i.cpus {
        resources["cpu"] = json!({ "quota": (c * 100_000.0).round() as i64, "period": 100_000 });
    }
    if let Some(p) = i.pids_limit {
        resources["pids"] = json!({ "limit": p });
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": i.cgroups_path,
        "resources": resources,
    });
    if !i.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }
    if let Some(s) = &i.seccomp {
        linux["seccomp"] = s.clone();
    }
    let mut user = json!({"uid": i.uid, "gid": i.gid});
    if !i.additional_gids.is_empty() {
        user["additionalGids"] = json!(i.additional_gids);
    }
    let mut process = json!({
        "terminal": i.terminal,
        "user": user,
        "args": args,
        "env": i.env,
        "cwd": i.cwd,
        "capabilities": {"bounding": i.caps, "effective": i.caps, "permitted": i.caps},
        "noNewPrivileges": i.no_new_privileges,
    });
    if i.terminal {
        process["consoleSize"] = json!({"height": 24, "width": 80});
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": i.rootfs, "readonly": i.read_only},
        "hostname": i.hostname,
        "mounts": mounts,
        "linux": linux,
    });
    if !i.annotations.is_empty() {
        spec["annotations"] = Value::Object(i.annotations.clone());
    }
    spec
}

/// /etc/hosts: localhost, the container's own name on its address, then `--add-host` entries.
pub fn hosts_file(hostname: &str, ip: Option<&str>, add_hosts: &[String]) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    s.push_str(&format!("{}\t{hostname}\n", ip.unwrap_or("127.0.1.1")));
    for h in add_hosts {
        if let Some((name, addr)) = h.split_once(':').or_else(|| h.split_once('=')) {
            s.push_str(&format!("{addr}\t{name}\n"));
        }
    }
    s
}

/// `--add-host NAME:IP`
pub fn check_add_host(h: &str) -> Result<()> {
    let Some((name, ip)) = h.split_once(':').or_else(|| h.split_once('=')) else {
        bail!(InvalidInput, "--add-host {h:?}: expected NAME:IP");
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        bail!(InvalidInput, "--add-host {h:?}: invalid host name");
    }
    if ip.parse::<std::net::IpAddr>().is_err() {
        bail!(InvalidInput, "--add-host {h:?}: {ip:?} is not an IP address");
    }
    Ok(())
}

/// /etc/resolv.conf: the host's, without loopback name servers (unreachable from the
/// container's own network namespace), or the `--dns` servers.
pub fn resolv_conf(dns: &[String], host_network: bool) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::new();
    for l in host.lines() {
        let t = l.trim();
        if let Some(ns) = t.strip_prefix("nameserver") {
            let ns = ns.trim();
            let loopback = ns.parse::<std::net::IpAddr>().map(|a| a.is_loopback()).unwrap_or(false);
            if !dns.is_empty() || (loopback && !host_network) {
                continue;
            }
        }
        out.push_str(l);
        out.push('\n');
    }
    for d in dns {
        out.push_str(&format!("nameserver {d}\n"));
    }
    out
}

pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !h.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps() {
        let c = capabilities(false, &["net_admin".into()], &["chown".into()]).unwrap();
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()) && !c.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(capabilities(false, &[], &["ALL".into()]).unwrap().len(), 0);
        assert_eq!(capabilities(true, &[], &[]).unwrap().len(), available_caps().len());
        assert!(capabilities(false, &["bogus".into()], &[]).unwrap_err().to_string().contains("bogus"));
    }

    #[test]
    fn volumes_and_tmpfs() {
        let m = parse_volume("data:/var/lib/x:ro").unwrap();
        assert_eq!((m.kind.as_str(), m.name.as_str(), m.rw), ("volume", "data", false));
        assert!(parse_volume("/var/lib").unwrap().anonymous);
        assert_eq!(parse_volume("/tmp:/mnt").unwrap().kind, "bind");
        assert!(parse_volume("/no/such/berth/path:/mnt").unwrap_err().to_string().contains("does not exist"));
        assert!(parse_volume("data:relative").is_err());
        assert!(parse_volume("data:/x:bogus").is_err());
        assert!(parse_volume("a:/../x").is_err());
        let t = parse_tmpfs("/run:size=1m,exec").unwrap();
        assert!(t.options.contains(&"exec".to_string()) && !t.options.contains(&"noexec".to_string()));
        assert!(parse_tmpfs("/run:sizee=1").is_err());
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1.5g").unwrap(), 3 << 29);
        assert!(parse_memory("12x").is_err());
        assert!(parse_memory("-1m").is_err());
        assert!(parse_memory("1k").unwrap_err().to_string().contains("too small"));
        // Exponents, signs and values past what the kernel's page counters hold are refused
        // (1e30 once became i64::MAX, i.e. no limit at all).
        for v in ["1e30", "1e9", "+64m", "64 m", ".5g", "1.g", "nan", "inf", "9999999999999999p"] {
            assert!(parse_memory(v).is_err(), "{v} was accepted");
        }
        assert!(parse_memory("8192p").unwrap_err().to_string().contains("larger than the kernel can enforce"));
        assert_eq!(parse_memory("0.5g").unwrap(), 1 << 29);
        assert_eq!(parse_memory("7.9p").unwrap(), (79u128 * (1 << 50) / 10) as i64);
    }

    #[test]
    fn etc_files() {
        let h = hosts_file("web", Some("10.0.0.2"), &["db:10.0.0.3".into()]);
        assert!(h.contains("10.0.0.2\tweb\n") && h.contains("10.0.0.3\tdb\n"));
        assert!(check_add_host("db:nope").is_err());
        assert!(resolv_conf(&["9.9.9.9".into()], false).contains("nameserver 9.9.9.9"));
    }
}
