//! linux.resources on the unified (cgroup v2) hierarchy.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use super::devices::{self, DeviceRule};
use super::{hugepage_sizes, read_file, write_file, Cgroup};
use crate::error::{Error, Result};

fn set(dir: &Path, file: &str, value: impl ToString, field: &str) -> Result<()> {
    write_file(dir, file, &value.to_string()).map_err(|e| e.context(field))
}

/// Enables every available controller on the way down to `leaf`, so the leaf gets the
/// interface files of each (the leaf itself keeps none enabled: it holds processes).
pub(super) fn enable_controllers(leaf: &Path) -> Result<()> {
    let mut levels: Vec<PathBuf> =
        leaf.ancestors().skip(1).take_while(|p| p.join("cgroup.controllers").exists()).map(Path::to_path_buf).collect();
    levels.reverse();
    for level in levels {
        let available = read_file(&level, "cgroup.controllers")?;
        let enabled = read_file(&level, "cgroup.subtree_control")?;
        let missing: Vec<String> = available
            .split_whitespace()
            .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
            .map(|c| format!("+{c}"))
            .collect();
        if missing.is_empty() {
            continue;
        }
        if let Err(e) = write_file(&level, "cgroup.subtree_control", &missing.join(" ")) {
            // One at a time, so one controller the kernel refuses here (e.g. a threaded
            // subtree) does not keep the others away.
            for c in &missing {
                if write_file(&level, "cgroup.subtree_control", c).is_err() && c == "+memory" {
                    return Err(e.context(format!("enabling controllers in {}", level.display())));
                }
            }
        }
    }
    Ok(())
}

/// cpu.shares (2..262144) to cpu.weight (1..10000), the conversion runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

/// blkio.weight (10..1000) to io.weight (1..10000).
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    1 + ((weight.clamp(10, 1000) as u64 - 10) * 9999) / 990
}

pub(super) fn rdma_line(device: &str, limit: &oci_spec::runtime::LinuxRdma) -> String {
    let n = |v: Option<u32>| v.map_or("max".to_string(), |v| v.to_string());
    format!("{device} hca_handle={} hca_object={}", n(limit.hca_handles()), n(limit.hca_objects()))
}

pub(super) fn apply(cg: &Cgroup, r: &LinuxResources, devices_extra: &[DeviceRule], updating: bool) -> Result<()> {
    let dir = cg.unified.as_deref().expect("v2 mode has a unified directory");
    #[allow(deprecated)]
    if let Some(m) = r.memory() {
        if m.swappiness().is_some() {
            return Err(Error::unsupported("memory.swappiness: cgroup v2 has no per-cgroup swappiness"));
        }
        if m.disable_oom_killer() == Some(true) {
            return Err(Error::unsupported("memory.disableOOMKiller: cgroup v2 cannot disable the OOM killer"));
        }
        let limit = m.limit().filter(|v| *v != 0);
        if m.check_before_update() == Some(true) && updating {
            if let Some(l) = limit.filter(|l| *l > 0) {
                let current: i64 = read_file(dir, "memory.current")?.trim().parse().unwrap_or(0);
                if l < current {
                    return Err(Error::invalid(format!("memory.limit: {l} is below the current usage {current}")));
                }
            }
        }
        if let Some(swap) = m.swap().filter(|v| *v != 0) {
            // OCI's swap is memory+swap; v2's memory.swap.max is swap alone.
            let value = match (swap, limit) {
                (-1, _) => "max".to_string(),
                (s, Some(l)) if l > 0 => (s - l).to_string(),
                (_, _) => {
                    return Err(Error::invalid("memory.swap: on cgroup v2 a swap limit needs memory.limit too"));
                }
            };
            if dir.join("memory.swap.max").exists() {
                set(dir, "memory.swap.max", value, "memory.swap")?;
            } else {
                return Err(Error::unsupported("memory.swap: swap accounting is not enabled (no memory.swap.max)"));
            }
        }
        if let Some(l) = limit {
            set(dir, "memory.max", if l == -1 { "max".to_string() } else { l.to_string() }, "memory.limit")?;
        }
        if let Some(v) = m.reservation().filter(|v| *v != 0) {
            set(dir, "memory.low", if v == -1 { "max".to_string() } else { v.to_string() }, "memory.reservation")?;
        }
    }
    if let Some(c) = r.cpu() {
        if c.realtime_period().is_some() || c.realtime_runtime().is_some() {
            return Err(Error::unsupported(
                "cpu.realtimeRuntime/realtimePeriod: cgroup v2 has no real-time CPU group scheduling",
            ));
        }
        if let Some(s) = c.shares().filter(|s| *s != 0) {
            set(dir, "cpu.weight", shares_to_weight(s), "cpu.shares")?;
        }
        if c.quota().is_some() || c.period().is_some() {
            let quota = match c.quota() {
                Some(q) if q > 0 => q.to_string(),
                Some(_) => "max".to_string(),
                None => read_file(dir, "cpu.max")?.split_whitespace().next().unwrap_or("max").to_string(),
            };
            let period = c.period().filter(|p| *p != 0).unwrap_or(100_000);
            set(dir, "cpu.max", format!("{quota} {period}"), "cpu.quota")?;
        }
        if let Some(b) = c.burst() {
            set(dir, "cpu.max.burst", b, "cpu.burst")?;
        }
        if let Some(i) = c.idle() {
            set(dir, "cpu.idle", i, "cpu.idle")?;
        }
        if let Some(v) = c.cpus().as_deref().filter(|v| !v.is_empty()) {
            set(dir, "cpuset.cpus", v, "cpu.cpus")?;
        }
        if let Some(v) = c.mems().as_deref().filter(|v| !v.is_empty()) {
            set(dir, "cpuset.mems", v, "cpu.mems")?;
        }
    }
    // 0 leaves the limit as it is; a negative one removes it.
    if let Some(p) = r.pids().filter(|p| p.limit() != 0) {
        set(dir, "pids.max", if p.limit() > 0 { p.limit().to_string() } else { "max".to_string() }, "pids.limit")?;
    }
    if let Some(b) = r.block_io() {
        if b.leaf_weight().is_some() {
            return Err(Error::unsupported("blockIO.leafWeight: cgroup v2 has no leaf weights"));
        }
        if let Some(w) = b.weight().filter(|w| *w != 0) {
            if dir.join("io.weight").exists() {
                set(dir, "io.weight", format!("default {}", blkio_weight_to_io_weight(w)), "blockIO.weight")?;
            } else if dir.join("io.bfq.weight").exists() {
                set(dir, "io.bfq.weight", w, "blockIO.weight")?;
            } else {
                return Err(Error::unsupported("blockIO.weight: neither io.weight nor io.bfq.weight exists (this host's I/O controller does not support weights)"));
            }
        }
        for (i, d) in b.weight_device().iter().flatten().enumerate() {
            if let Some(w) = d.weight() {
                let field = format!("blockIO.weightDevice[{i}]");
                if !dir.join("io.bfq.weight").exists() {
                    return Err(Error::unsupported(format!(
                        "{field}: io.bfq.weight does not exist (the disk's I/O scheduler is not BFQ)"
                    )));
                }
                set(dir, "io.bfq.weight", format!("{}:{} {}", d.major(), d.minor(), w), &field)?;
            }
        }
        let throttles = [
            ("throttleReadBpsDevice", "rbps", b.throttle_read_bps_device()),
            ("throttleWriteBpsDevice", "wbps", b.throttle_write_bps_device()),
            ("throttleReadIOPSDevice", "riops", b.throttle_read_iops_device()),
            ("throttleWriteIOPSDevice", "wiops", b.throttle_write_iops_device()),
        ];
        for (name, key, list) in throttles {
            for (i, d) in list.iter().flatten().enumerate() {
                set(
                    dir,
                    "io.max",
                    format!("{}:{} {key}={}", d.major(), d.minor(), d.rate()),
                    &format!("blockIO.{name}[{i}]"),
                )?;
            }
        }
    }
    for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
        let field = format!("hugepageLimits[{i}]");
        if !hugepage_sizes().iter().any(|s| s == h.page_size()) {
            return Err(Error::invalid(format!(
                "{field}.pageSize: '{}' is not a huge page size of this host (it has {:?})",
                h.page_size(),
                hugepage_sizes()
            )));
        }
        set(dir, &format!("hugetlb.{}.max", h.page_size()), h.limit(), &field)?;
    }
    if r.network().is_some() {
        return Err(Error::unsupported("network: cgroup v2 has no net_cls/net_prio controllers"));
    }
    if let Some(rdma) = r.rdma() {
        for (name, limit) in rdma {
            set(dir, "rdma.max", rdma_line(name, limit), &format!("rdma.{name}"))?;
        }
    }
    if let Some(rules) = r.devices() {
        let mut all: Vec<DeviceRule> = rules.iter().map(DeviceRule::from_spec).collect::<Result<_>>()?;
        all.extend_from_slice(devices_extra);
        devices::apply_v2(dir, &all).map_err(|e| e.context("devices"))?;
    }
    if let Some(unified) = r.unified() {
        apply_unified(dir, unified)?;
    }
    Ok(())
}

pub(super) fn apply_unified(dir: &Path, unified: &HashMap<String, String>) -> Result<()> {
    let mut keys: Vec<&String> = unified.keys().collect();
    keys.sort();
    for key in keys {
        set(dir, key, &unified[key], &format!("unified.{key}"))?;
    }
    Ok(())
}

pub(super) fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    write_file(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut delay = Duration::from_micros(100);
    loop {
        let events = read_file(dir, "cgroup.events")?;
        if events.lines().any(|l| l.trim() == want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::new(
                crate::error::ErrorKind::System,
                format!("{}: cgroup did not reach '{want}'", dir.display()),
            ));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
    }
}
