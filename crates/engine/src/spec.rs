//! A container's OCI runtime spec, with docker's defaults: the default capability set, the
//! default seccomp profile (when the runtime can apply one), masked and read-only paths,
//! /dev/shm of 64 MiB, per-container /etc/hosts, /etc/hostname and /etc/resolv.conf, the
//! device allowlist, resources, and the user's mounts.

use serde::{Deserialize, Serialize};

use crate::container::config::{DnsConfig, HostEntry};
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

/// A path in the container that can be mounted on: absolute, without `..`, not `/`.
pub fn check_container_path(d: &str) -> Result<()> {
    if !d.starts_with('/') {
        bail!(InvalidInput, "the container path {d:?} is not absolute");
    }
    if d.split('/').any(|c| c == "..") {
        bail!(InvalidInput, "the container path {d:?} contains '..'");
    }
    if d.trim_end_matches('/').is_empty() {
        bail!(InvalidInput, "cannot mount over the container's /");
    }
    if d.contains('\0') {
        bail!(InvalidInput, "the container path {d:?} contains a NUL byte");
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

/// The smallest `--cpus`: a quota of 1 ms per 100 ms period, the kernel's minimum quota.
pub const MIN_CPUS: f64 = 0.01;

/// The largest pids limit the kernel takes (PID_MAX_LIMIT, 2^22).
pub const MAX_PIDS_LIMIT: i64 = 1 << 22;

/// The largest memory limit the kernel honours: its page counters hold at most
/// `i64::MAX / PAGE_SIZE` pages, and a larger value is silently taken as "no limit".
pub const MAX_MEMORY: i64 = i64::MAX / 4096 * 4096;

/// /etc/hosts: localhost, the container's own name on its address, then the extra entries.
pub fn hosts_file(hostname: &str, ip: Option<&str>, extra: &[HostEntry]) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    s.push_str(&format!("{}\t{hostname}\n", ip.unwrap_or("127.0.1.1")));
    for h in extra {
        s.push_str(&format!("{}\t{}\n", h.ip, h.name));
    }
    s
}

/// /etc/resolv.conf: the host's (without loopback name servers, unreachable from the
/// container's own network namespace), or the configured servers, search domains and options.
pub fn resolv_conf(dns: &DnsConfig, host_network: bool) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::new();
    for l in host.lines() {
        let t = l.trim();
        if let Some(ns) = t.strip_prefix("nameserver") {
            let ns = ns.trim();
            let loopback = ns.parse::<std::net::IpAddr>().map(|a| a.is_loopback()).unwrap_or(false);
            if !dns.servers.is_empty() || (loopback && !host_network) {
                continue;
            }
        }
        if (t.starts_with("search") && !dns.searches.is_empty())
            || (t.starts_with("options") && !dns.options.is_empty())
        {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    for d in &dns.servers {
        out.push_str(&format!("nameserver {d}\n"));
    }
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
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
    fn etc_files() {
        let h =
            hosts_file("web", Some("10.0.0.2"), &[HostEntry { name: "db".into(), ip: "10.0.0.3".parse().unwrap() }]);
        assert!(h.contains("10.0.0.2\tweb\n") && h.contains("10.0.0.3\tdb\n"));
        let dns = DnsConfig {
            servers: vec!["9.9.9.9".parse().unwrap()],
            searches: vec!["svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        let r = resolv_conf(&dns, false);
        assert!(r.contains("nameserver 9.9.9.9\n") && r.contains("search svc.cluster.local\n"), "{r}");
        assert!(r.contains("options ndots:5\n"), "{r}");
    }

    #[test]
    fn container_paths() {
        for bad in ["relative", "/a/../b", "/", "//", "/x\0"] {
            assert!(check_container_path(bad).is_err(), "{bad:?}");
        }
        check_container_path("/data").unwrap();
    }
}
