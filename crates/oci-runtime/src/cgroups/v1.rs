//! linux.resources on cgroup v1 hierarchies (and, on hybrid hosts, the controllers that live only
//! in the cgroup2 mount, such as hugetlb here).

use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use super::devices::{self, DeviceRule};
use super::{hugepage_sizes, read_file, v2, write_file, Cgroup, Mode};
use crate::error::{Error, Result};

fn dir_for<'a>(cg: &'a Cgroup, controller: &str, field: &str) -> Result<&'a Path> {
    cg.v1_dir(controller).ok_or_else(|| {
        Error::unsupported(format!("{field}: the {controller} cgroup controller is not mounted on this host"))
    })
}

fn set(dir: &Path, file: &str, value: impl ToString, field: &str) -> Result<()> {
    write_file(dir, file, &value.to_string()).map_err(|e| e.context(field))
}

/// Gives a cpuset with no CPUs or memory nodes those of its parent, filling in an empty parent
/// first: another container's create may have made that parent and not yet filled it in, and
/// copying its emptiness would leave a cpuset no process can join (ENOSPC).
pub(super) fn init_cpuset(dir: &Path) -> Result<()> {
    let parent = dir.parent().expect("a new cgroup has a parent");
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let current = read_file(dir, file)?;
        if current.trim().is_empty() {
            let mut value = read_file(parent, file)?;
            if value.trim().is_empty() {
                init_cpuset(parent)?;
                value = read_file(parent, file)?;
            }
            write_file(dir, file, value.trim())?;
        }
    }
    Ok(())
}

const RT_RUNTIME: &str = "cpu.rt_runtime_us";

fn rt_value(dir: &Path, file: &str) -> Result<i64> {
    read_file(dir, file)?
        .trim()
        .parse()
        .map_err(|_| Error::new(crate::error::ErrorKind::System, format!("{}/{file}: not a number", dir.display())))
}

/// A group's real-time runtime and period (µs); an unlimited runtime (-1) counts as its period.
fn rt_budget(dir: &Path) -> Result<(i64, i64)> {
    let period = rt_value(dir, "cpu.rt_period_us")?;
    let runtime = rt_value(dir, RT_RUNTIME)?;
    Ok((if runtime < 0 { period } else { runtime }, period))
}

/// The share of the CPU (runtime/period) a group has not handed to its children, in its own
/// period's µs.
fn rt_spare(dir: &Path) -> Result<i64> {
    let (own, period) = rt_budget(dir)?;
    let mut given = 0.0;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::from_io(e).context(dir.display().to_string()))?.flatten() {
        let child = entry.path();
        if child.join(RT_RUNTIME).exists() {
            let (runtime, child_period) = rt_budget(&child)?;
            given += runtime.max(0) as f64 * period as f64 / child_period as f64;
        }
    }
    Ok(own - given.ceil() as i64)
}

/// Gives the v1 cpu cgroup `dir` real-time runtime (cpu.rt_runtime_us): `target` µs in all, or
/// without one all that its nearest ancestor with some to spare has left. A new cgroup has
/// none, and the kernel lets a group have only the share of the CPU its parent has not given
/// away: the ancestors on the way that have none to spare get the difference first, from the
/// top (each in its own period's µs), and get their old values back if a write fails.
/// Returns what each ancestor was given (for [`Cgroup::destroy`] to take back).
pub(crate) fn ensure_rt_runtime(dir: &Path, target: Option<i64>) -> Result<Vec<(std::path::PathBuf, i64)>> {
    let (current, period) = rt_budget(dir)?;
    if let Some(t) = target.filter(|t| *t <= current) {
        write_file(dir, RT_RUNTIME, &t.to_string())?;
        return Ok(Vec::new());
    }
    // Up from the parent to the first ancestor with runtime to spare, within the hierarchy.
    let mut chain = vec![dir.to_path_buf()];
    let mut giver = None;
    let mut at = dir.parent();
    while let Some(p) = at.filter(|p| p.join(RT_RUNTIME).exists()) {
        let spare = rt_spare(p)?;
        if spare > 0 {
            giver = Some((p.to_path_buf(), spare));
            break;
        }
        chain.push(p.to_path_buf());
        at = p.parent();
    }
    let Some((giver, spare)) = giver else {
        return Err(Error::unsupported(format!(
            "none of the parents of {} up to the hierarchy's root has real-time CPU time ({RT_RUNTIME}) left to give",
            dir.display()
        )));
    };
    let giver_period = rt_value(&giver, "cpu.rt_period_us")?;
    // The share asked for, as a fraction of the CPU.
    let share = match target {
        Some(t) => (t - current) as f64 / period as f64,
        None => spare as f64 / giver_period as f64,
    };
    if share * giver_period as f64 > spare as f64 + 0.5 {
        return Err(Error::unsupported(format!(
            "{} asks {:.0}% of the CPU more for real-time tasks than {} has left to give ({:.0}%)",
            dir.display(),
            share * 100.0,
            giver.display(),
            spare as f64 * 100.0 / giver_period as f64
        )));
    }
    let mut written: Vec<(&Path, i64, i64)> = Vec::new();
    let result = chain.iter().rev().try_for_each(|d| {
        let (old, d_period) = rt_budget(d)?;
        let new = match (d == dir, target) {
            (true, Some(t)) => t,
            _ => old + (share * d_period as f64).floor() as i64,
        };
        write_file(d, RT_RUNTIME, &new.to_string())?;
        written.push((d, old, new - old));
        Ok(())
    });
    if let Err(e) = result {
        for (d, old, _) in written.into_iter().rev() {
            let _ = write_file(d, RT_RUNTIME, &old.to_string());
        }
        return Err(e);
    }
    Ok(written.into_iter().filter(|(d, _, _)| *d != dir).map(|(d, _, added)| (d.to_path_buf(), added)).collect())
}

/// Takes back the real-time runtime given to ancestors (deepest first), once the container's
/// own group is gone; one a sibling has taken from meanwhile keeps it.
pub(super) fn return_rt_runtime(given: &[(std::path::PathBuf, i64)]) {
    for (dir, added) in given.iter().rev() {
        if let Ok(current) = rt_value(dir, RT_RUNTIME) {
            let _ = write_file(dir, RT_RUNTIME, &(current - added).max(0).to_string());
        }
    }
}

pub(super) fn apply(cg: &mut Cgroup, r: &LinuxResources, devices_extra: &[DeviceRule], updating: bool) -> Result<()> {
    if let Some(m) = r.memory() {
        let dir = dir_for(cg, "memory", "memory")?;
        if m.check_before_update() == Some(true) && updating {
            if let Some(limit) = m.limit().filter(|l| *l > 0) {
                let usage: i64 = read_file(dir, "memory.usage_in_bytes")?.trim().parse().unwrap_or(0);
                if limit < usage {
                    return Err(Error::invalid(format!("memory.limit: {limit} is below the current usage {usage}")));
                }
            }
        }
        set_memory_and_swap(dir, m.limit(), m.swap())?;
        if let Some(v) = m.reservation() {
            set(dir, "memory.soft_limit_in_bytes", v, "memory.reservation")?;
        }
        if let Some(v) = m.swappiness() {
            set(dir, "memory.swappiness", v, "memory.swappiness")?;
        }
        if let Some(v) = m.disable_oom_killer() {
            set(dir, "memory.oom_control", if v { 1 } else { 0 }, "memory.disableOOMKiller")?;
        }
        // Deprecated by the runtime-spec; applied where the kernel still has it, else a warning
        // (resource_warnings). memory.kernel is never applied: Linux ignores it.
        if let Some(v) = m.kernel_tcp().filter(|_| cg.kernel_tcp_limit_available()) {
            set(dir, "memory.kmem.tcp.limit_in_bytes", v, "memory.kernelTCP")?;
        }
        if let Some(v) = m.use_hierarchy() {
            set(dir, "memory.use_hierarchy", if v { 1 } else { 0 }, "memory.useHierarchy")?;
        }
    }
    if let Some(c) = r.cpu() {
        if c.shares().is_some()
            || c.quota().is_some()
            || c.period().is_some()
            || c.realtime_period().is_some()
            || c.realtime_runtime().is_some()
            || c.idle().is_some()
            || c.burst().is_some()
        {
            let dir_buf = dir_for(cg, "cpu", "cpu")?.to_path_buf();
            let dir = dir_buf.as_path();
            if let Some(v) = c.shares().filter(|v| *v != 0) {
                set(dir, "cpu.shares", v, "cpu.shares")?;
            }
            // The period first: the kernel checks a quota against the current period.
            if let Some(v) = c.period().filter(|v| *v != 0) {
                set(dir, "cpu.cfs_period_us", v, "cpu.period")?;
            }
            if let Some(v) = c.quota().filter(|v| *v != 0) {
                set(dir, "cpu.cfs_quota_us", v, "cpu.quota")?;
            }
            if let Some(v) = c.burst() {
                set(dir, "cpu.cfs_burst_us", v, "cpu.burst")?;
            }
            if let Some(v) = c.realtime_period().filter(|v| *v != 0) {
                set(dir, "cpu.rt_period_us", v, "cpu.realtimePeriod")?;
            }
            if let Some(v) = c.realtime_runtime().filter(|v| *v != 0) {
                if v > 0 {
                    // The parents must have it to give (a new cgroup has none).
                    let given = ensure_rt_runtime(dir, Some(v)).map_err(|e| e.context("cpu.realtimeRuntime"))?;
                    cg.rt_given.extend(given);
                } else {
                    set(dir, "cpu.rt_runtime_us", v, "cpu.realtimeRuntime")?;
                }
            }
            if let Some(v) = c.idle() {
                set(dir, "cpu.idle", v, "cpu.idle")?;
            }
        }
        if let Some(v) = c.cpus().as_deref().filter(|v| !v.is_empty()) {
            set(dir_for(cg, "cpuset", "cpu.cpus")?, "cpuset.cpus", v, "cpu.cpus")?;
        }
        if let Some(v) = c.mems().as_deref().filter(|v| !v.is_empty()) {
            set(dir_for(cg, "cpuset", "cpu.mems")?, "cpuset.mems", v, "cpu.mems")?;
        }
    }
    // 0 leaves the limit as it is; a negative one removes it.
    if let Some(p) = r.pids().filter(|p| p.limit() != 0) {
        let dir = dir_for(cg, "pids", "pids")?;
        let value = if p.limit() > 0 { p.limit().to_string() } else { "max".to_string() };
        set(dir, "pids.max", value, "pids.limit")?;
    }
    if let Some(b) = r.block_io() {
        apply_blkio(cg, b)?;
    }
    for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
        let field = format!("hugepageLimits[{i}]");
        let size = h.page_size();
        if !hugepage_sizes().iter().any(|s| s == size) {
            return Err(Error::invalid(format!(
                "{field}.pageSize: '{size}' is not a huge page size of this host (it has {:?})",
                hugepage_sizes()
            )));
        }
        if let Some(dir) = cg.v1_dir("hugetlb") {
            set(dir, &format!("hugetlb.{size}.limit_in_bytes"), h.limit(), &field)?;
        } else if let Some(dir) = cg.unified.as_deref().filter(|_| cg.mode == Mode::Hybrid) {
            // Hybrid hosts may run hugetlb on the cgroup2 side only (this one does).
            set(dir, &format!("hugetlb.{size}.max"), h.limit(), &field)?;
        } else {
            return Err(Error::unsupported(format!(
                "{field}: the hugetlb cgroup controller is not available on this host"
            )));
        }
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id() {
            set(dir_for(cg, "net_cls", "network.classID")?, "net_cls.classid", id, "network.classID")?;
        }
        for (i, p) in n.priorities().iter().flatten().enumerate() {
            let field = format!("network.priorities[{i}]");
            set(
                dir_for(cg, "net_prio", &field)?,
                "net_prio.ifpriomap",
                format!("{} {}", p.name(), p.priority()),
                &field,
            )?;
        }
    }
    if let Some(rdma) = r.rdma() {
        let dir = dir_for(cg, "rdma", "rdma")?;
        for (name, limit) in rdma {
            set(dir, "rdma.max", v2::rdma_line(name, limit), &format!("rdma.{name}"))?;
        }
    }
    if let Some(rules) = r.devices() {
        let dir = dir_for(cg, "devices", "devices")?;
        let mut all: Vec<DeviceRule> = rules.iter().map(DeviceRule::from_spec).collect::<Result<_>>()?;
        all.extend_from_slice(devices_extra);
        devices::apply_v1(dir, &all).map_err(|e| e.context("devices"))?;
    }
    if let Some(unified) = r.unified() {
        let dir = match (cg.mode, cg.unified.as_deref()) {
            (Mode::Hybrid, Some(dir)) => dir,
            _ => {
                return Err(Error::unsupported("unified: needs a cgroup2 hierarchy, and this host has only cgroup v1"))
            }
        };
        v2::apply_unified(dir, unified)?;
    }
    Ok(())
}

/// memory.limit_in_bytes and memory.memsw.limit_in_bytes must be written in the order that
/// keeps memsw >= limit at every step.
fn set_memory_and_swap(dir: &Path, limit: Option<i64>, swap: Option<i64>) -> Result<()> {
    let limit = limit.filter(|v| *v != 0);
    let swap = swap.filter(|v| *v != 0);
    let memsw_available = dir.join("memory.memsw.limit_in_bytes").exists();
    if swap.is_some() && !memsw_available {
        return Err(Error::unsupported(
            "memory.swap: swap accounting is not enabled in this kernel (no memory.memsw.limit_in_bytes)",
        ));
    }
    match (limit, swap) {
        (Some(l), Some(s)) => {
            let current_memsw: i64 = read_file(dir, "memory.memsw.limit_in_bytes")?.trim().parse().unwrap_or(i64::MAX);
            let raising = l == -1 || (l as u64) > current_memsw as u64 || s == -1;
            if raising {
                set(dir, "memory.memsw.limit_in_bytes", s, "memory.swap")?;
                set(dir, "memory.limit_in_bytes", l, "memory.limit")?;
            } else {
                set(dir, "memory.limit_in_bytes", l, "memory.limit")?;
                set(dir, "memory.memsw.limit_in_bytes", s, "memory.swap")?;
            }
        }
        (Some(l), None) => {
            set(dir, "memory.limit_in_bytes", l, "memory.limit")?;
        }
        (None, Some(s)) => set(dir, "memory.memsw.limit_in_bytes", s, "memory.swap")?,
        (None, None) => {}
    }
    Ok(())
}

fn apply_blkio(cg: &Cgroup, b: &oci_spec::runtime::LinuxBlockIo) -> Result<()> {
    let dir = dir_for(cg, "blkio", "blockIO")?;
    // CFQ's blkio.weight is gone from current kernels; BFQ offers blkio.bfq.weight. Neither
    // exists where the disks' schedulers have no weights (mq-deadline, kyber, none).
    let weight_file = |base: &str, field: &str| -> Result<String> {
        for f in [format!("blkio.{base}"), format!("blkio.bfq.{base}")] {
            if dir.join(&f).exists() {
                return Ok(f);
            }
        }
        Err(Error::unsupported(format!(
            "{field}: neither blkio.{base} nor blkio.bfq.{base} exists (the disk's I/O scheduler does not support weights)"
        )))
    };
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        set(dir, &weight_file("weight", "blockIO.weight")?, w, "blockIO.weight")?;
    }
    if let Some(w) = b.leaf_weight().filter(|w| *w != 0) {
        set(dir, &weight_file("leaf_weight", "blockIO.leafWeight")?, w, "blockIO.leafWeight")?;
    }
    for (i, d) in b.weight_device().iter().flatten().enumerate() {
        let field = format!("blockIO.weightDevice[{i}]");
        if let Some(w) = d.weight() {
            let file = weight_file("weight_device", &field)?;
            set(dir, &file, format!("{}:{} {}", d.major(), d.minor(), w), &field)?;
        }
        if let Some(w) = d.leaf_weight() {
            let file = weight_file("leaf_weight_device", &field)?;
            set(dir, &file, format!("{}:{} {}", d.major(), d.minor(), w), &field)?;
        }
    }
    let throttles = [
        ("throttleReadBpsDevice", "blkio.throttle.read_bps_device", b.throttle_read_bps_device()),
        ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device", b.throttle_write_bps_device()),
        ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device", b.throttle_read_iops_device()),
        ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device", b.throttle_write_iops_device()),
    ];
    for (name, file, list) in throttles {
        for (i, d) in list.iter().flatten().enumerate() {
            set(dir, file, format!("{}:{} {}", d.major(), d.minor(), d.rate()), &format!("blockIO.{name}[{i}]"))?;
        }
    }
    Ok(())
}

pub(super) fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut delay = Duration::from_micros(100);
    loop {
        write_file(dir, "freezer.state", want)?;
        let state = read_file(dir, "freezer.state")?;
        if state.trim() == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::new(
                crate::error::ErrorKind::System,
                format!("{}: freezer stuck in state {}", dir.display(), state.trim()),
            ));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}
