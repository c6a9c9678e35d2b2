//! config.json mounts: option parsing and attaching each mount, with the fd-based mount API,
//! onto a target resolved safely inside the root filesystem.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_sys::file;
use berth_sys::mount::{self, FsContext, MountAttr};

use crate::error::{Context, Error, Result};
use crate::fs::{self, Create, Resolve};

/// Mount attribute changes: bits to set and bits to clear.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttrChange {
    pub set: u64,
    pub clear: u64,
}

impl AttrChange {
    fn apply(&mut self, set: u64, clear: u64) {
        self.set = (self.set & !clear) | set;
        self.clear = (self.clear & !set) | clear;
    }

    pub fn is_empty(&self) -> bool {
        self.set == 0 && self.clear == 0
    }

    pub fn mount_attr(&self) -> MountAttr {
        MountAttr { attr_set: self.set, attr_clr: self.clear, ..Default::default() }
    }
}

/// Propagation: MS_* flag and whether it applies to the whole subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Propagation {
    pub flag: u64,
    pub recursive: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    pub bind: bool,
    pub recursive_bind: bool,
    /// Attributes for the mount itself.
    pub attrs: AttrChange,
    /// Attributes for the mount and every mount below it (`rro`, `rnosuid`, ...).
    pub recursive_attrs: AttrChange,
    pub propagation: Option<Propagation>,
    /// Filesystem options handed to the filesystem (`size=64m`, `mode=755`, `newinstance`).
    pub data: Vec<String>,
    /// Superblock flags for a new filesystem (`sync`, `dirsync`, `lazytime`, ...).
    pub sb_flags: Vec<String>,
    /// Copy the directory's original contents into a new tmpfs (runc's `tmpcopyup`).
    pub tmpcopyup: bool,
    /// `idmap` (the mount itself) or `ridmap` (and every mount below it): an ID-mapped mount.
    pub idmap: Option<bool>,
}

/// MS_* propagation flag of a propagation keyword.
pub fn propagation_flag(name: &str) -> Option<Propagation> {
    let (flag, recursive) = match name {
        "shared" => (libc::MS_SHARED, false),
        "rshared" => (libc::MS_SHARED, true),
        "slave" => (libc::MS_SLAVE, false),
        "rslave" => (libc::MS_SLAVE, true),
        "private" => (libc::MS_PRIVATE, false),
        "rprivate" => (libc::MS_PRIVATE, true),
        "unbindable" => (libc::MS_UNBINDABLE, false),
        "runbindable" => (libc::MS_UNBINDABLE, true),
        _ => return None,
    };
    Some(Propagation { flag, recursive })
}

/// (set, clear) mount attributes of a non-recursive attribute keyword.
fn attr_keyword(name: &str) -> Option<(u64, u64)> {
    use mount::*;
    Some(match name {
        "ro" => (MOUNT_ATTR_RDONLY, 0),
        "rw" => (0, MOUNT_ATTR_RDONLY),
        "nosuid" => (MOUNT_ATTR_NOSUID, 0),
        "suid" => (0, MOUNT_ATTR_NOSUID),
        "nodev" => (MOUNT_ATTR_NODEV, 0),
        "dev" => (0, MOUNT_ATTR_NODEV),
        "noexec" => (MOUNT_ATTR_NOEXEC, 0),
        "exec" => (0, MOUNT_ATTR_NOEXEC),
        "noatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME),
        "atime" | "relatime" | "nostrictatime" => (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
        "strictatime" | "norelatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
        "nodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "diratime" => (0, MOUNT_ATTR_NODIRATIME),
        "nosymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, 0),
        "symfollow" => (0, MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

const SB_FLAGS: &[&str] = &[
    "sync",
    "async",
    "dirsync",
    "mand",
    "nomand",
    "lazytime",
    "nolazytime",
    "silent",
    "loud",
    "iversion",
    "noiversion",
];

impl MountOptions {
    pub fn parse(options: &[String]) -> Result<MountOptions> {
        let mut o = MountOptions::default();
        for opt in options {
            let opt = opt.as_str();
            match opt {
                "" | "defaults" => {}
                "bind" => o.bind = true,
                "rbind" => {
                    o.bind = true;
                    o.recursive_bind = true;
                }
                "tmpcopyup" => o.tmpcopyup = true,
                "idmap" => o.idmap = Some(false),
                "ridmap" => o.idmap = Some(true),
                "remount" => {
                    return Err(Error::unsupported("'remount': remounting is not supported in config.json mounts"));
                }
                _ => {
                    if let Some(p) = propagation_flag(opt) {
                        o.propagation = Some(p);
                    } else if let Some((set, clear)) = attr_keyword(opt) {
                        o.attrs.apply(set, clear);
                    } else if let Some((set, clear)) = opt.strip_prefix('r').and_then(attr_keyword) {
                        o.recursive_attrs.apply(set, clear);
                    } else if SB_FLAGS.contains(&opt) {
                        o.sb_flags.push(opt.to_string());
                    } else {
                        o.data.push(opt.to_string());
                    }
                }
            }
        }
        Ok(o)
    }
}

/// One config.json mount, ready to attach.
#[derive(Debug)]
pub struct MountSpec {
    /// Where the mount goes, as the container sees it (absolute).
    pub destination: PathBuf,
    pub fstype: String,
    /// For bind mounts: the host path (absolute). Otherwise the filesystem's source string.
    pub source: String,
    pub options: MountOptions,
    /// "mounts[3]", for messages.
    pub at: String,
    /// uidMappings and gidMappings of the mount itself (else an ID-mapped mount uses the
    /// container's).
    pub id_mappings: Option<(Vec<oci_spec::runtime::LinuxIdMapping>, Vec<oci_spec::runtime::LinuxIdMapping>)>,
    /// A detached tree the runtime prepared (an ID-mapped bind needs the host's privileges),
    /// with its attributes already set; attached as it is.
    pub prepared: Option<OwnedFd>,
    /// Options given that do not apply to this mount (filesystem options on a bind), left out
    /// and logged.
    pub ignored_options: Vec<String>,
}

impl MountSpec {
    pub fn from_spec(m: &oci_spec::runtime::Mount, index: usize, bundle: &Path) -> Result<MountSpec> {
        let at = format!("mounts[{index}]");
        let options = MountOptions::parse(m.options().as_deref().unwrap_or(&[]))
            .map_err(|e| e.context(format!("{at}.options")))?;
        let fstype = m.typ().clone().unwrap_or_default();
        let bind = options.bind || fstype == "bind";
        let mut source = m.source().as_ref().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if bind {
            if source.is_empty() {
                return Err(Error::invalid(format!("{at}.source: a bind mount needs a source")));
            }
            if !source.starts_with('/') {
                source = bundle.join(&source).to_string_lossy().into_owned();
            }
        } else if fstype.is_empty() {
            return Err(Error::invalid(format!("{at}.type: missing (and the options do not say bind)")));
        }
        let mut options = options;
        // Filesystem options given to a bind mount (`mode=755`) have no filesystem to go to:
        // accepted and left out, as runc does (the kernel ignores them there), and logged.
        let mut ignored_options = Vec::new();
        if bind {
            ignored_options.append(&mut options.data);
            ignored_options.append(&mut options.sb_flags);
            if options.tmpcopyup {
                ignored_options.push("tmpcopyup".to_string());
                options.tmpcopyup = false;
            }
        }
        options.bind = bind;
        let id_mappings = match (m.uid_mappings(), m.gid_mappings()) {
            (Some(u), Some(g)) if !u.is_empty() => Some((u.clone(), g.clone())),
            _ => None,
        };
        if id_mappings.is_some() && options.idmap.is_none() {
            options.idmap = Some(false);
        }
        if options.idmap.is_some() && !bind {
            return Err(Error::unsupported(format!(
                "{at}.options: ID-mapped mounts are supported for bind mounts only"
            )));
        }
        let spec = MountSpec {
            destination: fs::absolute(m.destination()),
            fstype,
            source,
            options,
            at,
            id_mappings,
            prepared: None,
            ignored_options,
        };
        check_proc_destination(&spec)?;
        Ok(spec)
    }

    pub fn is_bind(&self) -> bool {
        self.options.bind
    }
}

/// Paths under /proc that may be mounted over (with files, as lxcfs does); anything else under
/// /proc could hide the kernel's own protections.
const PROC_OVERMOUNT_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

fn check_proc_destination(m: &MountSpec) -> Result<()> {
    let dest = m.destination.as_path();
    if dest == Path::new("/proc") {
        if m.fstype != "proc" {
            return Err(Error::invalid(format!(
                "{}: only a proc filesystem may be mounted at /proc (type is '{}')",
                m.at, m.fstype
            )));
        }
        return Ok(());
    }
    if dest.starts_with("/proc") && !PROC_OVERMOUNT_ALLOWED.iter().any(|p| dest == Path::new(p)) {
        return Err(Error::invalid(format!(
            "{}: mounting over {} is not allowed (it could hide /proc's protections)",
            m.at,
            dest.display()
        )));
    }
    Ok(())
}

/// Attaches a detached mount on `target` and then applies propagation to the new mount.
fn attach(tree: &OwnedFd, root: BorrowedFd<'_>, m: &MountSpec, target: &OwnedFd) -> Result<()> {
    mount::move_mount(tree, target).with_ctx(|| format!("{}: attaching on {}", m.at, m.destination.display()))?;
    if let Some(p) = m.options.propagation {
        // The target descriptor names the covered directory; resolve again to reach the new mount.
        let mounted = fs::resolve(root, &m.destination, Resolve::EXISTING)?;
        let attr = MountAttr { propagation: p.flag, ..Default::default() };
        mount::mount_setattr(&mounted, "", p.recursive, &attr)
            .with_ctx(|| format!("{}: setting propagation on {}", m.at, m.destination.display()))?;
    }
    Ok(())
}

/// Mounts one config.json mount inside the root filesystem whose directory fd is `root`.
pub fn mount_one(root: BorrowedFd<'_>, m: &MountSpec) -> Result<()> {
    if m.is_bind() {
        bind_mount(root, m)
    } else {
        fs_mount(root, m)
    }
}

/// A detached clone of a bind mount's source.
pub fn bind_source(m: &MountSpec) -> Result<OwnedFd> {
    mount::open_tree_clone(file::CWD, &m.source, m.options.recursive_bind)
        .with_ctx(|| format!("{}: bind source {}", m.at, m.source))
}

/// Prepares an ID-mapped bind in the runtime: the clone, its attributes, and the mapping of the
/// user namespace `userns` (idmapping needs privilege over the filesystem, which the
/// container's init, in its own user namespace, lacks).
pub fn prepare_idmapped(m: &MountSpec, userns: BorrowedFd<'_>) -> Result<OwnedFd> {
    let tree = bind_source(m)?;
    set_attrs(&tree, &m.options, &m.at)?;
    let attr =
        MountAttr { attr_set: mount::MOUNT_ATTR_IDMAP, userns_fd: userns.as_raw_fd() as u64, ..Default::default() };
    mount::mount_setattr(&tree, "", m.options.idmap == Some(true), &attr).map_err(|e| {
        let why = if e.raw_os_error() == Some(libc::EINVAL) {
            " (does the filesystem support ID-mapped mounts?)"
        } else {
            ""
        };
        Error::from_io(e).context(format!("{}: ID-mapping {}{why}", m.at, m.source))
    })?;
    Ok(tree)
}

fn bind_mount(root: BorrowedFd<'_>, m: &MountSpec) -> Result<()> {
    let tree = match &m.prepared {
        Some(fd) => file::dup(fd)?,
        None => bind_source(m)?,
    };
    let source_is_dir = fs::is_dir(tree.as_fd())?;
    let create = if source_is_dir { Create::Dir } else { Create::File };
    let target = fs::resolve(root, &m.destination, Resolve::create(create)).map_err(|e| e.context(&m.at))?;
    if fs::is_dir(target.as_fd())? != source_is_dir {
        return Err(Error::invalid(format!(
            "{}: cannot bind {} {} onto {} {}",
            m.at,
            if source_is_dir { "directory" } else { "file" },
            m.source,
            if source_is_dir { "non-directory" } else { "directory" },
            m.destination.display()
        )));
    }
    if m.prepared.is_none() {
        set_attrs(&tree, &m.options, &m.at)?;
    }
    attach(&tree, root, m, &target)
}

/// Applies the attribute changes of `options` to a detached tree.
pub fn set_attrs(tree: &OwnedFd, options: &MountOptions, at: &str) -> Result<()> {
    if !options.attrs.is_empty() {
        mount::mount_setattr(tree, "", false, &options.attrs.mount_attr())
            .with_ctx(|| format!("{at}: setting mount options"))?;
    }
    if !options.recursive_attrs.is_empty() {
        mount::mount_setattr(tree, "", true, &options.recursive_attrs.mount_attr())
            .with_ctx(|| format!("{at}: setting recursive mount options"))?;
    }
    Ok(())
}

/// Creates a new filesystem instance: fsopen + fsconfig per option + fsmount. The kernel's own
/// explanation of a refused option is included in the error.
pub fn new_filesystem(fstype: &str, source: &str, options: &MountOptions, at: &str) -> Result<OwnedFd> {
    let fs = FsContext::open(fstype).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENODEV) {
            Error::unsupported(format!("{at}: filesystem type '{fstype}' is not supported by this kernel"))
        } else {
            Error::from_io(e).context(format!("{at}: opening a {fstype} filesystem"))
        }
    })?;
    let explain = |e: std::io::Error, what: String| {
        let kernel = fs.messages();
        if kernel.is_empty() {
            Error::from_io(e).context(what)
        } else {
            Error::from_io(e).context(format!("{what} (kernel: {kernel})"))
        }
    };
    if !source.is_empty() {
        fs.set_string("source", source).map_err(|e| explain(e, format!("{at}: source '{source}'")))?;
    }
    for flag in &options.sb_flags {
        fs.set_flag(flag).map_err(|e| explain(e, format!("{at}: option '{flag}'")))?;
    }
    for opt in &options.data {
        let result = match opt.split_once('=') {
            Some((k, v)) => fs.set_string(k, v),
            None => fs.set_flag(opt),
        };
        result.map_err(|e| explain(e, format!("{at}: {fstype} option '{opt}'")))?;
    }
    fs.create().map_err(|e| explain(e, format!("{at}: creating the {fstype} filesystem")))?;
    // Only the attributes to set go to fsmount; the atime mode must be given whole.
    let attrs = options.attrs.set | options.recursive_attrs.set;
    fs.mount(attrs).with_ctx(|| format!("{at}: mounting the {fstype} filesystem"))
}

fn fs_mount(root: BorrowedFd<'_>, m: &MountSpec) -> Result<()> {
    // /proc and /sys must land on real directories: a symlink there is how CVE-2019-19921 and
    // CVE-2023-27561 redirected them.
    let strict = matches!(m.fstype.as_str(), "proc" | "sysfs");
    // tmpcopyup copies a directory that was there. One we create has nothing to copy, and its
    // mode is not given to the tmpfs, which keeps its own (1777 unless mode= says), as with
    // runc and crun: podman's `--tmpfs /new` must be writable by a non-root user.
    let existed = !m.options.tmpcopyup
        || match fs::resolve(root, &m.destination, Resolve::EXISTING) {
            Ok(_) => true,
            Err(e) if fs::not_found(&e) => false,
            Err(e) => return Err(e.context(&m.at)),
        };
    let opts = Resolve { create: Create::Dir, no_symlinks: strict, nofollow_final: false };
    let target = fs::resolve(root, &m.destination, opts).map_err(|e| e.context(&m.at))?;
    if !fs::is_dir(target.as_fd())? {
        return Err(Error::invalid(format!("{}: {} is not a directory", m.at, m.destination.display())));
    }
    let original = if m.options.tmpcopyup && existed {
        Some(fs::reopen(target.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?)
    } else {
        None
    };
    let tree = new_filesystem(&m.fstype, &m.source, &m.options, &m.at)?;
    attach(&tree, root, m, &target)?;
    if let Some(original) = original {
        let mounted = fs::resolve(root, &m.destination, Resolve::EXISTING)?;
        let dest = fs::reopen(mounted.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
        copy_tree(original.as_fd(), dest.as_fd())
            .with_ctx(|| format!("{}: tmpcopyup into {}", m.at, m.destination.display()))?;
    }
    Ok(())
}

/// Copies a directory's contents (files, directories, symlinks, with modes and owners) from one
/// directory fd to another, never following symlinks.
fn copy_tree(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> Result<()> {
    let st = file::fstat(from)?;
    file::fchmod(to, st.st_mode & 0o7777)?;
    file::fchown(to, st.st_uid, st.st_gid)?;
    let dir = std::fs::read_dir(format!("/proc/self/fd/{}", from.as_raw_fd()))?;
    for entry in dir {
        let entry = entry?;
        let name = PathBuf::from(entry.file_name());
        let est = file::fstatat(from, &name, libc::AT_SYMLINK_NOFOLLOW)?;
        match est.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                file::mkdirat(to, &name, est.st_mode & 0o7777)?;
                let src = file::openat(from, &name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
                let dst = file::openat(to, &name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
                copy_tree(src.as_fd(), dst.as_fd())?;
            }
            libc::S_IFREG => {
                let src = file::openat(from, &name, libc::O_RDONLY | libc::O_NOFOLLOW, 0)?;
                let dst = file::openat(
                    to,
                    &name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    est.st_mode & 0o7777,
                )?;
                let mut src_file = std::fs::File::from(src);
                let mut dst_file = std::fs::File::from(dst);
                std::io::copy(&mut src_file, &mut dst_file)?;
                file::fchown(&dst_file, est.st_uid, est.st_gid)?;
                file::fchmod(&dst_file, est.st_mode & 0o7777)?;
            }
            libc::S_IFLNK => {
                let link = std::fs::read_link(format!("/proc/self/fd/{}/{}", from.as_raw_fd(), name.display()))?;
                file::symlinkat(&link, to, &name)?;
                file::fchownat(to, &name, est.st_uid, est.st_gid, libc::AT_SYMLINK_NOFOLLOW)?;
            }
            _ => {
                file::mknodat(to, &name, est.st_mode, est.st_rdev)?;
                file::fchownat(to, &name, est.st_uid, est.st_gid, libc::AT_SYMLINK_NOFOLLOW)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> MountOptions {
        MountOptions::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn parses_attributes_data_and_propagation() {
        let o = opts(&["nosuid", "noexec", "mode=755", "size=65536k", "rslave", "ro"]);
        assert_eq!(o.attrs.set, mount::MOUNT_ATTR_NOSUID | mount::MOUNT_ATTR_NOEXEC | mount::MOUNT_ATTR_RDONLY);
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        assert_eq!(o.propagation, Some(Propagation { flag: libc::MS_SLAVE, recursive: true }));
        assert!(!o.bind);
    }

    #[test]
    fn later_options_override_earlier_ones() {
        let o = opts(&["ro", "rw"]);
        assert_eq!(o.attrs.set & mount::MOUNT_ATTR_RDONLY, 0);
        assert_eq!(o.attrs.clear & mount::MOUNT_ATTR_RDONLY, mount::MOUNT_ATTR_RDONLY);
    }

    #[test]
    fn recursive_attributes_are_separate() {
        let o = opts(&["rbind", "rro", "rnosuid"]);
        assert!(o.bind && o.recursive_bind);
        assert_eq!(o.recursive_attrs.set, mount::MOUNT_ATTR_RDONLY | mount::MOUNT_ATTR_NOSUID);
        assert!(o.attrs.is_empty());
    }

    #[test]
    fn atime_modes_replace_each_other() {
        let o = opts(&["noatime", "strictatime"]);
        assert_eq!(o.attrs.set, mount::MOUNT_ATTR_STRICTATIME);
        assert_eq!(o.attrs.clear, mount::MOUNT_ATTR__ATIME);
    }

    #[test]
    fn idmap_options() {
        assert_eq!(opts(&["rbind", "idmap"]).idmap, Some(false));
        assert_eq!(opts(&["rbind", "ridmap"]).idmap, Some(true));
        assert_eq!(opts(&["rbind"]).idmap, None);
    }
}
