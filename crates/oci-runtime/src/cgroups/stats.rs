//! Resource usage of a container's cgroup, in the JSON shape runc's `events --stats` prints
//! (which containerd and podman parse).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{read_file, Cgroup, Mode};
use crate::error::Result;

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    pub hugetlb: BTreeMap<String, Hugetlb>,
}

#[derive(Debug, Default, Serialize)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Debug, Default, Serialize)]
pub struct CpuUsage {
    /// Nanoseconds.
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Throttling {
    #[serde(skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(rename = "throttledPeriods", skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    #[serde(rename = "throttledTime", skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Memory {
    #[serde(skip_serializing_if = "is_zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Pids {
    #[serde(skip_serializing_if = "is_zero")]
    pub current: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Blkio {
    #[serde(rename = "ioServiceBytesRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioServicedRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Default, Serialize)]
pub struct Hugetlb {
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A number from a cgroup file; "max" (and v1's huge "unlimited" values) read as u64::MAX.
fn num(dir: &Path, file: &str) -> u64 {
    read_file(dir, file).map(|s| parse(s.trim())).unwrap_or(0)
}

fn parse(s: &str) -> u64 {
    if s == "max" {
        u64::MAX
    } else {
        s.parse().unwrap_or(0)
    }
}

/// "key value" lines (memory.stat, cpu.stat) into a map.
fn keyed(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    read_file(dir, file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), parse(it.next()?)))
        })
        .collect()
}

/// USER_HZ ticks (cpuacct.stat) to nanoseconds.
fn ticks_to_ns(ticks: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks.saturating_mul(1_000_000_000 / hz)
}

pub fn collect(cg: &Cgroup) -> Result<Stats> {
    if cg.shared {
        return Err(super::no_cgroup("statistics"));
    }
    Ok(match cg.mode {
        Mode::Unified => collect_v2(cg.unified.as_deref().expect("unified")),
        _ => collect_v1(cg),
    })
}

fn collect_v1(cg: &Cgroup) -> Stats {
    let mut s = Stats::default();
    if let Some(dir) = cg.v1_dir("cpuacct") {
        s.cpu.usage.total = num(dir, "cpuacct.usage");
        s.cpu.usage.percpu =
            read_file(dir, "cpuacct.usage_percpu").unwrap_or_default().split_whitespace().map(parse).collect();
        let st = keyed(dir, "cpuacct.stat");
        s.cpu.usage.user = ticks_to_ns(st.get("user").copied().unwrap_or(0));
        s.cpu.usage.kernel = ticks_to_ns(st.get("system").copied().unwrap_or(0));
    }
    if let Some(dir) = cg.v1_dir("cpu") {
        let st = keyed(dir, "cpu.stat");
        s.cpu.throttling = Throttling {
            periods: st.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: st.get("nr_throttled").copied().unwrap_or(0),
            throttled_time: st.get("throttled_time").copied().unwrap_or(0),
        };
    }
    if let Some(dir) = cg.v1_dir("memory") {
        let entry = |prefix: &str| MemoryEntry {
            limit: num(dir, &format!("{prefix}limit_in_bytes")),
            usage: num(dir, &format!("{prefix}usage_in_bytes")),
            max: num(dir, &format!("{prefix}max_usage_in_bytes")),
            failcnt: num(dir, &format!("{prefix}failcnt")),
        };
        s.memory.usage = entry("memory.");
        s.memory.swap = entry("memory.memsw.");
        s.memory.kernel = entry("memory.kmem.");
        s.memory.kernel_tcp = entry("memory.kmem.tcp.");
        s.memory.raw = keyed(dir, "memory.stat");
        s.memory.cache = s.memory.raw.get("total_cache").or(s.memory.raw.get("cache")).copied().unwrap_or(0);
    }
    if let Some(dir) = cg.v1_dir("pids") {
        s.pids = Pids { current: num(dir, "pids.current"), limit: num(dir, "pids.max") };
    }
    if let Some(dir) = cg.v1_dir("blkio") {
        s.blkio.io_service_bytes_recursive = v1_blkio(dir, "blkio.throttle.io_service_bytes_recursive");
        s.blkio.io_serviced_recursive = v1_blkio(dir, "blkio.throttle.io_serviced_recursive");
    }
    // Hybrid hosts may keep hugetlb on the cgroup2 side only.
    let sizes = super::hugepage_sizes();
    let unified_hugetlb = cg
        .unified
        .as_deref()
        .filter(|d| sizes.first().is_some_and(|sz| d.join(format!("hugetlb.{sz}.current")).exists()));
    let hugetlb_dir = cg.v1_dir("hugetlb").map(|d| (d, false)).or(unified_hugetlb.map(|d| (d, true)));
    if let Some((dir, v2_names)) = hugetlb_dir {
        s.hugetlb = hugetlb(dir, v2_names);
    }
    s
}

fn v1_blkio(dir: &Path, file: &str) -> Vec<BlkioEntry> {
    read_file(dir, file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 3 {
                return None;
            }
            let (major, minor) = f[0].split_once(':')?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: f[1].to_string(),
                value: f[2].parse().ok()?,
            })
        })
        .collect()
}

fn hugetlb(dir: &Path, v2: bool) -> BTreeMap<String, Hugetlb> {
    let mut out = BTreeMap::new();
    for size in super::hugepage_sizes() {
        let h = if v2 {
            Hugetlb {
                usage: num(dir, &format!("hugetlb.{size}.current")),
                max: num(dir, &format!("hugetlb.{size}.max")),
                failcnt: keyed(dir, &format!("hugetlb.{size}.events")).get("max").copied().unwrap_or(0),
            }
        } else {
            Hugetlb {
                usage: num(dir, &format!("hugetlb.{size}.usage_in_bytes")),
                max: num(dir, &format!("hugetlb.{size}.max_usage_in_bytes")),
                failcnt: num(dir, &format!("hugetlb.{size}.failcnt")),
            }
        };
        out.insert(size, h);
    }
    out
}

fn collect_v2(dir: &Path) -> Stats {
    let mut s = Stats::default();
    let cpu = keyed(dir, "cpu.stat");
    let get = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    s.cpu.usage = CpuUsage {
        total: get(&cpu, "usage_usec") * 1000,
        percpu: Vec::new(),
        kernel: get(&cpu, "system_usec") * 1000,
        user: get(&cpu, "user_usec") * 1000,
    };
    s.cpu.throttling = Throttling {
        periods: get(&cpu, "nr_periods"),
        throttled_periods: get(&cpu, "nr_throttled"),
        throttled_time: get(&cpu, "throttled_usec") * 1000,
    };
    let events = keyed(dir, "memory.events");
    s.memory.usage = MemoryEntry {
        limit: num(dir, "memory.max"),
        usage: num(dir, "memory.current"),
        max: num(dir, "memory.peak"),
        failcnt: get(&events, "max"),
    };
    if dir.join("memory.swap.current").exists() {
        s.memory.swap = MemoryEntry {
            limit: num(dir, "memory.swap.max"),
            usage: num(dir, "memory.swap.current") + s.memory.usage.usage,
            max: 0,
            failcnt: keyed(dir, "memory.swap.events").get("max").copied().unwrap_or(0),
        };
    }
    s.memory.raw = keyed(dir, "memory.stat");
    s.memory.cache = get(&s.memory.raw, "file");
    s.pids = Pids { current: num(dir, "pids.current"), limit: num(dir, "pids.max") };
    for line in read_file(dir, "io.stat").unwrap_or_default().lines() {
        let mut it = line.split_whitespace();
        let Some((major, minor)) = it.next().and_then(|d| d.split_once(':')) else { continue };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else { continue };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else { continue };
            let value = v.parse().unwrap_or(0);
            let entry = |op: &str| BlkioEntry { major, minor, op: op.to_string(), value };
            match k {
                "rbytes" => s.blkio.io_service_bytes_recursive.push(entry("Read")),
                "wbytes" => s.blkio.io_service_bytes_recursive.push(entry("Write")),
                "rios" => s.blkio.io_serviced_recursive.push(entry("Read")),
                "wios" => s.blkio.io_serviced_recursive.push(entry("Write")),
                _ => {}
            }
        }
    }
    s.hugetlb = hugetlb(dir, true);
    s
}
