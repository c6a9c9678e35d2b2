//! docker's flag syntax, translated into the engine's typed container configuration: `-v`,
//! `--tmpfs`, `--memory`, `--cpus`, `--add-host`, `--dns`, `--network`, `--restart`. Errors
//! name the flag; the engine's own checks name the configuration's fields.

use std::path::{Path, PathBuf};

use berth_engine::container::config::{HostEntry, Mount, MountSource, NetworkMode, Propagation, RestartPolicy};
use berth_engine::spec::{check_container_path, valid_volume_name, MAX_MEMORY, MAX_PIDS_LIMIT, MIN_CPUS};
use berth_engine::{Error, Result};

macro_rules! bail {
    ($($t:tt)*) => { return Err(Error::invalid(format!($($t)*))) };
}

fn mount(source: MountSource, destination: &str, readonly: bool, options: Vec<String>) -> Mount {
    Mount {
        source,
        destination: destination.into(),
        readonly,
        recursive_readonly: false,
        propagation: Propagation::Private,
        options,
    }
}

/// `-v`: `HOST_PATH:CTR_PATH[:ro|rw]` (a bind mount of an existing host path),
/// `NAME:CTR_PATH[:ro|rw]` (a named volume) or `CTR_PATH` (an anonymous volume).
pub fn parse_volume(spec: &str) -> Result<Mount> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [d] => ("", *d, ""),
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => bail!("-v {spec:?}: expected [SOURCE:]CONTAINER_PATH[:ro|rw]"),
    };
    check_container_path(dst).map_err(|e| e.context(format!("-v {spec:?}")))?;
    let mut readonly = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" | "readonly" => readonly = true,
            "rw" => readonly = false,
            other => bail!("-v {spec:?}: unknown option {other:?} (ro or rw)"),
        }
    }
    if src.is_empty() {
        return Ok(mount(MountSource::Anonymous, dst, readonly, Vec::new()));
    }
    if src.starts_with('/') || src.starts_with('.') {
        if !src.starts_with('/') {
            bail!("-v {spec:?}: the host path {src:?} must be absolute");
        }
        if !Path::new(src).exists() {
            bail!("-v {spec:?}: bind mount source path {src} does not exist");
        }
        return Ok(mount(MountSource::Bind(PathBuf::from(src)), dst, readonly, Vec::new()));
    }
    if !valid_volume_name(src) {
        bail!(
            "-v {spec:?}: {src:?} is neither an absolute host path nor a valid volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
        );
    }
    Ok(mount(MountSource::Volume(src.into()), dst, readonly, Vec::new()))
}

/// `--tmpfs CTR_PATH[:OPTIONS]` (default rw,noexec,nosuid,nodev).
pub fn parse_tmpfs(spec: &str) -> Result<Mount> {
    let (dst, opts) = spec.split_once(':').unwrap_or((spec, ""));
    check_container_path(dst).map_err(|e| e.context(format!("--tmpfs {spec:?}")))?;
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
            bail!("--tmpfs {spec:?}: unknown option {o:?}");
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
    let readonly = options.iter().any(|o| o == "ro");
    Ok(mount(MountSource::Tmpfs, dst, readonly, options))
}

/// `--memory`: `512m`, `1g`, `1.5g`, `1048576`, `64k` (binary units, as docker): digits with an
/// optional fraction, then an optional unit (k, m, g, t, p) and `b`. No exponents, signs or
/// spaces; 6m up to what the kernel's page counters hold.
pub fn parse_memory(s: &str) -> Result<i64> {
    let bad = || Error::invalid(format!("invalid memory value {s:?} (examples: 512m, 1.5g, 1048576)"));
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
        bail!("invalid memory value {s:?}: must be positive");
    }
    if bytes < 6 << 20 {
        bail!("memory limit {s:?} is too small: the minimum is 6m");
    }
    if bytes > MAX_MEMORY as u128 {
        bail!("memory limit {s:?} is larger than the kernel can enforce (at most {MAX_MEMORY} bytes)");
    }
    Ok(bytes as i64)
}

/// `--cpus N`: a CFS quota of N × a 100 ms period; from 0.01 (the kernel's 1 ms minimum quota)
/// to the host's CPUs.
pub fn parse_cpus(s: &str) -> Result<(i64, u64)> {
    let c: f64 = s.parse().map_err(|_| Error::invalid(format!("--cpus {s:?}: not a number")))?;
    let max = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    if !(c.is_finite() && c >= MIN_CPUS) || c > max {
        bail!("--cpus {s}: must be from {MIN_CPUS} to the {max} CPUs of this host");
    }
    Ok(((c * 100_000.0).round() as i64, 100_000))
}

/// `--pids-limit N` (-1: unlimited).
pub fn check_pids_limit(p: i64) -> Result<()> {
    if p == 0 || p < -1 {
        bail!("--pids-limit {p}: must be positive (or -1 for unlimited)");
    }
    if p > MAX_PIDS_LIMIT {
        bail!("--pids-limit {p}: the kernel's limit is at most {MAX_PIDS_LIMIT}");
    }
    Ok(())
}

/// `--add-host NAME:IP`
pub fn parse_add_host(h: &str) -> Result<HostEntry> {
    let Some((name, ip)) = h.split_once(':').or_else(|| h.split_once('=')) else {
        bail!("--add-host {h:?}: expected NAME:IP");
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        bail!("--add-host {h:?}: invalid host name");
    }
    let ip = ip.parse().map_err(|_| Error::invalid(format!("--add-host {h:?}: {ip:?} is not an IP address")))?;
    Ok(HostEntry { name: name.into(), ip })
}

/// `--network bridge|host|none|container:NAME|NAME`
pub fn parse_network(n: Option<&str>) -> NetworkMode {
    match n.unwrap_or("bridge") {
        "bridge" | "default" => NetworkMode::Bridge,
        "host" => NetworkMode::Host,
        "none" => NetworkMode::None,
        other => match other.strip_prefix("container:") {
            Some(c) => NetworkMode::Container(c.into()),
            None => NetworkMode::Network(other.into()),
        },
    }
}

/// `--restart no|on-failure[:N]|always|unless-stopped`
pub fn parse_restart(s: Option<&str>) -> Result<RestartPolicy> {
    RestartPolicy::parse(s.unwrap_or("no")).map_err(|e| Error::invalid(format!("--restart: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_and_tmpfs() {
        let m = parse_volume("data:/var/lib/x:ro").unwrap();
        assert_eq!((m.source, m.readonly), (MountSource::Volume("data".into()), true));
        assert_eq!(parse_volume("/var/lib").unwrap().source, MountSource::Anonymous);
        assert_eq!(parse_volume("/tmp:/mnt").unwrap().source, MountSource::Bind("/tmp".into()));
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
    fn hosts_networks_restart() {
        assert_eq!(parse_add_host("db:10.0.0.3").unwrap().name, "db");
        assert!(parse_add_host("db:nope").is_err());
        assert_eq!(parse_network(Some("container:web")), NetworkMode::Container("web".into()));
        assert_eq!(parse_network(None), NetworkMode::Bridge);
        assert!(parse_restart(Some("on-failure:x")).is_err());
        assert_eq!(parse_restart(Some("on-failure:3")).unwrap().maximum_retry_count, 3);
    }
}
