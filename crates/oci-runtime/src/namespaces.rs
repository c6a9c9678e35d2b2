//! linux.namespaces: which to create, which to join (opened and type-checked up front), and the
//! process-tree shape that needs.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use berth_sys::{file, process};
use oci_spec::runtime::{Linux, LinuxNamespaceType};

use crate::config::namespace_name;
use crate::error::{Context, Error, Result};

pub fn clone_flag(t: LinuxNamespaceType) -> i32 {
    match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    }
}

/// /proc/self/ns entry name of a namespace type.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

#[derive(Debug)]
pub struct Join {
    pub typ: LinuxNamespaceType,
    pub path: PathBuf,
    pub fd: OwnedFd,
}

#[derive(Debug, Default)]
pub struct NamespacePlan {
    /// CLONE_NEW* flags of the namespaces to create.
    pub new: i32,
    /// Namespaces to join, the user namespace first.
    pub join: Vec<Join>,
    /// linux.timeOffsets: (clock, seconds, nanoseconds).
    pub time_offsets: Vec<(String, i64, u32)>,
}

const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

impl NamespacePlan {
    pub fn from_spec(linux: &Linux) -> Result<NamespacePlan> {
        let mut plan = NamespacePlan::default();
        for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
            let flag = clone_flag(ns.typ());
            let proc_entry = format!("/proc/self/ns/{}", proc_name(ns.typ()));
            if !std::path::Path::new(&proc_entry).exists() {
                return Err(Error::unsupported(format!(
                    "linux.namespaces[{i}]: this kernel has no {} namespaces",
                    namespace_name(ns.typ())
                )));
            }
            match ns.path() {
                None => plan.new |= flag,
                Some(path) => {
                    let at = format!("linux.namespaces[{i}].path");
                    let fd = file::open(path, libc::O_RDONLY).with_ctx(|| format!("{at}: {}", path.display()))?;
                    // SAFETY: ioctl on a descriptor we own.
                    let actual = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
                    if actual < 0 {
                        return Err(Error::invalid(format!("{at}: {} is not a namespace file", path.display())));
                    }
                    if actual != flag {
                        return Err(Error::invalid(format!(
                            "{at}: {} is not a {} namespace",
                            path.display(),
                            namespace_name(ns.typ())
                        )));
                    }
                    plan.join.push(Join { typ: ns.typ(), path: path.clone(), fd });
                }
            }
        }
        plan.join.sort_by_key(|j| j.typ != LinuxNamespaceType::User);
        for (clock, off) in linux.time_offsets().iter().flatten() {
            plan.time_offsets.push((clock.clone(), off.secs().unwrap_or(0), off.nanosecs().unwrap_or(0)));
        }
        Ok(plan)
    }

    pub fn creates(&self, t: LinuxNamespaceType) -> bool {
        self.new & clone_flag(t) != 0
    }

    pub fn joins(&self, t: LinuxNamespaceType) -> bool {
        self.join.iter().any(|j| j.typ == t)
    }

    /// The namespaces the init joins itself after clone (not pid and time, which the runtime
    /// enters before cloning, because they only take effect for children).
    pub fn late_joins(&self) -> impl Iterator<Item = &Join> {
        self.join.iter().filter(|j| !matches!(j.typ, LinuxNamespaceType::Pid | LinuxNamespaceType::Time))
    }

    /// One clone3 with all the new namespaces suffices unless a user namespace must be entered
    /// before other namespaces are created or joined: then an intermediate process joins and
    /// unshares in the right order, and clones the init (as runc's nsexec does).
    pub fn needs_intermediate(&self) -> bool {
        let joins_user = self.joins(LinuxNamespaceType::User);
        let joins_other = self.late_joins().any(|j| j.typ != LinuxNamespaceType::User);
        joins_user || (self.creates(LinuxNamespaceType::User) && joins_other)
    }

    /// Flags for the clone that creates the init (single-stage), or for the intermediate's
    /// unshare (two-stage, user namespace excluded). Cgroup and time namespaces are made
    /// separately (cgroup: once the init is in its cgroup; time: before clone, with offsets).
    pub fn clone_flags(&self) -> i32 {
        self.new & !libc::CLONE_NEWCGROUP & !libc::CLONE_NEWTIME
    }

    /// Enters the pid and time namespaces for the children of this process.
    pub fn enter_for_children(&self) -> Result<()> {
        for j in self.join.iter().filter(|j| matches!(j.typ, LinuxNamespaceType::Pid | LinuxNamespaceType::Time)) {
            process::setns(&j.fd, clone_flag(j.typ))
                .with_ctx(|| format!("joining the {} namespace {}", namespace_name(j.typ), j.path.display()))?;
        }
        if self.creates(LinuxNamespaceType::Time) {
            process::unshare(libc::CLONE_NEWTIME).ctx("creating a time namespace")?;
            let offsets: String =
                self.time_offsets.iter().map(|(clock, s, ns)| format!("{clock} {s} {ns}\n")).collect();
            if !offsets.is_empty() {
                std::fs::write("/proc/self/timens_offsets", offsets)
                    .ctx("linux.timeOffsets: writing /proc/self/timens_offsets")?;
            }
        }
        Ok(())
    }

    pub fn join_late(&self) -> Result<()> {
        for j in self.late_joins() {
            process::setns(&j.fd, clone_flag(j.typ))
                .with_ctx(|| format!("joining the {} namespace {}", namespace_name(j.typ), j.path.display()))?;
            if j.typ == LinuxNamespaceType::User {
                become_namespace_root()?;
            }
        }
        Ok(())
    }
}

/// Takes uid and gid 0 of the user namespace just entered, so files are created as its root.
pub fn become_namespace_root() -> Result<()> {
    // SAFETY: plain syscalls.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 {
            return Err(Error::last_os("becoming gid 0 in the user namespace (is gid 0 mapped?)"));
        }
        if libc::setresuid(0, 0, 0) != 0 {
            return Err(Error::last_os("becoming uid 0 in the user namespace (is uid 0 mapped?)"));
        }
    }
    Ok(())
}

/// Writes a child's uid_map and gid_map.
pub fn write_id_maps(pid: i32, linux: &Linux) -> Result<()> {
    let render = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> String {
        maps.iter().flatten().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect()
    };
    let proc = crate::procfs::Proc::open()?;
    let unprivileged = !process::is_root();
    let explain = |e: Error, field: &str| {
        if unprivileged && e.errno() == Some(libc::EPERM) {
            e.context(format!(
                "{field}: an unprivileged user may map only its own id, with size 1 (larger mappings need newuidmap/newgidmap, which berth-oci does not use)"
            ))
        } else {
            e.context(field.to_string())
        }
    };
    proc.write(format!("{pid}/uid_map"), render(linux.uid_mappings()).as_bytes())
        .map_err(|e| explain(e, "linux.uidMappings"))?;
    if unprivileged {
        // The kernel lets an unprivileged process write gid_map only once setgroups is denied.
        proc.write(format!("{pid}/setgroups"), b"deny").map_err(|e| explain(e, "linux.gidMappings"))?;
    }
    proc.write(format!("{pid}/gid_map"), render(linux.gid_mappings()).as_bytes())
        .map_err(|e| explain(e, "linux.gidMappings"))?;
    Ok(())
}

/// A user namespace with these mappings, to ID-map mounts with: a child is cloned into a new
/// user namespace, its maps written, its namespace file kept, and the child ended.
pub fn idmap_userns(
    uid: &[oci_spec::runtime::LinuxIdMapping],
    gid: &[oci_spec::runtime::LinuxIdMapping],
) -> Result<OwnedFd> {
    let maps = |ms: &[oci_spec::runtime::LinuxIdMapping]| -> Vec<berth_sys::userns::IdMap> {
        ms.iter()
            .map(|m| berth_sys::userns::IdMap {
                container_id: m.container_id(),
                host_id: m.host_id(),
                length: m.size(),
            })
            .collect()
    };
    berth_sys::userns::create(&maps(uid), &maps(gid)).ctx("creating a user namespace for an ID-mapped mount")
}
