//! The container's root filesystem, assembled in the container's mount namespace: propagation,
//! the config.json mounts, /dev, masked and read-only paths, and pivot_root.
//!
//! Every target inside the rootfs is reached through [`crate::fs::resolve`] and every mount is
//! attached by descriptor, so no path taken from the bundle is ever handed to the kernel to
//! follow.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_sys::file;
use berth_sys::mount::{self, MountAttr};

use crate::error::{Context, Error, Result};
use crate::fs::{self, Create, Resolve};
use crate::mounts::{self, MountOptions, MountSpec, Propagation};

/// A device node from linux.devices (or the default set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub path: PathBuf,
    /// libc::S_IFCHR, S_IFBLK or S_IFIFO.
    pub kind: u32,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl DeviceNode {
    fn char(name: &str, major: u64, minor: u64) -> DeviceNode {
        DeviceNode {
            path: PathBuf::from("/dev").join(name),
            kind: libc::S_IFCHR,
            major,
            minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        }
    }

    pub fn from_spec(d: &oci_spec::runtime::LinuxDevice, at: &str) -> Result<DeviceNode> {
        use oci_spec::runtime::LinuxDeviceType as T;
        let kind = match d.typ() {
            T::C | T::U => libc::S_IFCHR,
            T::B => libc::S_IFBLK,
            T::P => libc::S_IFIFO,
            T::A => return Err(Error::invalid(format!("{at}.type: 'a' is not a device node type (use c, b, u or p)"))),
        };
        if d.typ() != T::P && (d.major() < 0 || d.minor() < 0) {
            return Err(Error::invalid(format!(
                "{at}: major and minor numbers must be given for a {} device",
                d.typ().as_str()
            )));
        }
        Ok(DeviceNode {
            path: d.path().clone(),
            kind,
            major: d.major().max(0) as u64,
            minor: d.minor().max(0) as u64,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        })
    }
}

/// The devices every container gets when /dev is not bind-mounted from the host.
pub fn default_devices() -> Vec<DeviceNode> {
    vec![
        DeviceNode::char("null", 1, 3),
        DeviceNode::char("zero", 1, 5),
        DeviceNode::char("full", 1, 7),
        DeviceNode::char("random", 1, 8),
        DeviceNode::char("urandom", 1, 9),
        DeviceNode::char("tty", 5, 0),
    ]
}

/// A "cgroup" mount's parts: one directory per hierarchy, bound from the container's cgroup.
#[derive(Debug, Clone)]
pub struct CgroupMount {
    /// Name under the mount point ("memory", "cpu,cpuacct", "unified"; empty for pure v2).
    pub name: String,
    pub host_dir: PathBuf,
}

#[derive(Debug)]
pub struct RootfsPlan {
    pub rootfs: PathBuf,
    pub readonly: bool,
    pub mounts: Vec<MountSpec>,
    pub cgroup_mounts: Vec<CgroupMount>,
    /// A new cgroup namespace: cgroup2 is mounted fresh instead of bound.
    pub cgroupns: bool,
    pub devices: Vec<DeviceNode>,
    pub default_devices: bool,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub propagation: Option<Propagation>,
    pub no_pivot: bool,
    /// Inside a user namespace mknod is refused: device nodes are bind-mounted from the host.
    pub in_userns: bool,
    /// The rootfs as an ID-mapped tree the runtime prepared (annotation
    /// org.berth.rootfs.idmap), attached instead of a plain bind.
    pub prepared_root: Option<OwnedFd>,
    /// Without a mount namespace of its own the container shares a mount table: nothing is
    /// mounted, and its root is this directory (root.path, opened by the runtime in its own
    /// mount namespace), entered with chroot.
    pub shared_root: Option<OwnedFd>,
}

/// The root of a container that shares a mount table: chroot into root.path, no pivot_root,
/// no mount anywhere.
pub fn enter_shared(root: BorrowedFd<'_>) -> Result<()> {
    file::fchdir(root).ctx("entering the rootfs")?;
    mount::chroot(".").ctx("chroot into the rootfs (no mount namespace of its own)")?;
    file::chdir("/").ctx("chdir /")
}

/// Host objects opened before the root filesystem is assembled, verified once.
struct HostDevNull(OwnedFd);

impl HostDevNull {
    fn open() -> Result<HostDevNull> {
        let fd = file::open("/dev/null", libc::O_PATH).ctx("opening the host's /dev/null")?;
        check_char_device(fd.as_fd(), 1, 3).ctx("the host's /dev/null")?;
        Ok(HostDevNull(fd))
    }
}

fn check_char_device(fd: BorrowedFd<'_>, major: u32, minor: u32) -> Result<()> {
    let st = file::fstat(fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR
        || libc::major(st.st_rdev) != major
        || libc::minor(st.st_rdev) != minor
    {
        return Err(Error::invalid(format!("is not the character device {major}:{minor}")));
    }
    Ok(())
}

/// The root filesystem while it is assembled: its directory and the host's verified /dev/null.
pub struct Assembly {
    pub root: OwnedFd,
    devnull: HostDevNull,
}

/// First half: propagation, the rootfs bind, config.json mounts and /dev. The terminal (which
/// needs the container's devpts) is opened between the two halves.
pub fn prepare(plan: &RootfsPlan) -> Result<Assembly> {
    let devnull = HostDevNull::open()?;
    // Nothing mounted from here on may propagate back to the host.
    // Shared and unbindable are the container root's own propagation, applied once it is the
    // root (finish): a shared tree here would propagate back, an unbindable one could not be
    // bound to make the root.
    let prop = plan.propagation.unwrap_or(Propagation { flag: libc::MS_SLAVE, recursive: true });
    if prop.flag == libc::MS_SHARED {
        // A shared root: the host's mounts keep their peer groups here, so a bind mount of a
        // shared host path stays the host's peer and mounts propagate both ways (runc does
        // the same). Only the mount the rootfs is on becomes private: the rootfs bind and
        // everything under it (proc, dev, the config's mounts) never reach the host.
        let canonical = std::fs::canonicalize(&plan.rootfs).with_ctx(|| plan.rootfs.display().to_string())?;
        let on = berth_sys::proc::mount_propagation(&canonical).ctx("finding the mount the rootfs is on")?;
        mount::mount(None, &on.mount_point, None, libc::MS_PRIVATE, None)
            .with_ctx(|| format!("making {} (the rootfs's mount) private", on.mount_point.display()))?;
    } else {
        let root_flag = if prop.flag == libc::MS_PRIVATE { libc::MS_PRIVATE } else { libc::MS_SLAVE };
        mount::mount(None, "/", None, root_flag | libc::MS_REC, None).ctx("making / a slave/private mount")?;
    }
    // pivot_root needs the rootfs to be a mount point, whose parent is not shared.
    match &plan.prepared_root {
        Some(tree) => {
            let target = file::open(&plan.rootfs, libc::O_PATH | libc::O_DIRECTORY)
                .with_ctx(|| plan.rootfs.display().to_string())?;
            mount::move_mount(tree, &target).ctx("attaching the ID-mapped rootfs")?;
        }
        None => mount::mount(Some(&plan.rootfs), &plan.rootfs, None, libc::MS_BIND | libc::MS_REC, None)
            .with_ctx(|| format!("bind-mounting the rootfs {}", plan.rootfs.display()))?,
    }
    let root =
        file::open(&plan.rootfs, libc::O_PATH | libc::O_DIRECTORY).with_ctx(|| plan.rootfs.display().to_string())?;
    let root_fd = root.as_fd();
    for m in &plan.mounts {
        if m.fstype == "cgroup" && !m.is_bind() {
            mount_cgroup(root_fd, m, plan)?;
        } else {
            mounts::mount_one(root_fd, m)?;
        }
    }
    if plan.default_devices {
        for dev in default_devices() {
            create_device(root_fd, &dev, plan.in_userns)
                .map_err(|e| e.context(format!("creating {}", dev.path.display())))?;
        }
        create_dev_symlinks(root_fd)?;
    }
    for (i, dev) in plan.devices.iter().enumerate() {
        // /dev/ptmx stays the link to the container's own devpts, as runc makes it: podman's
        // --privileged lists every host device, the ptmx node among them.
        if plan.default_devices && dev.path == Path::new("/dev/ptmx") {
            continue;
        }
        create_device(root_fd, dev, plan.in_userns)
            .map_err(|e| e.context(format!("linux.devices[{i}] {}", dev.path.display())))?;
    }
    Ok(Assembly { root, devnull })
}

/// Second half: /dev/console, read-only and masked paths, a read-only root, pivot_root.
pub fn finish(plan: &RootfsPlan, asm: Assembly, console: Option<&OwnedFd>) -> Result<()> {
    let root_fd = asm.root.as_fd();
    if let Some(pty) = console {
        bind_file_over(root_fd, pty, Path::new("/dev/console"), true).ctx("mounting the terminal on /dev/console")?;
    }
    for (i, path) in plan.readonly_paths.iter().enumerate() {
        readonly_path(root_fd, Path::new(path)).map_err(|e| e.context(format!("linux.readonlyPaths[{i}]")))?;
    }
    for (i, path) in plan.masked_paths.iter().enumerate() {
        mask_path(root_fd, Path::new(path), &asm.devnull).map_err(|e| e.context(format!("linux.maskedPaths[{i}]")))?;
    }
    if plan.readonly {
        let attr = MountAttr { attr_set: mount::MOUNT_ATTR_RDONLY, ..Default::default() };
        mount::mount_setattr(root_fd, "", false, &attr).ctx("root.readonly: making the root filesystem read-only")?;
    }
    enter_root(plan, &asm.root)?;
    let prop = plan.propagation.unwrap_or(Propagation { flag: libc::MS_SLAVE, recursive: true });
    if prop.flag == libc::MS_SHARED || prop.flag == libc::MS_UNBINDABLE {
        let what = if prop.flag == libc::MS_SHARED { "shared" } else { "unbindable" };
        mount::mount(None, "/", None, prop.flag | if prop.recursive { libc::MS_REC } else { 0 }, None)
            .with_ctx(|| format!("linux.rootfsPropagation: making / {what}"))?;
    }
    Ok(())
}

fn enter_root(plan: &RootfsPlan, root: &OwnedFd) -> Result<()> {
    file::fchdir(root).ctx("entering the rootfs")?;
    if plan.no_pivot {
        // For roots that cannot be pivoted (ramfs): move the rootfs over / and chroot.
        mount::mount(Some(Path::new(".")), "/", None, libc::MS_MOVE, None).ctx("--no-pivot: moving the rootfs to /")?;
        mount::chroot(".").ctx("--no-pivot: chroot")?;
    } else {
        // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves
        // the container's root alone, with no directory of the host reachable. The old root is
        // reached through a descriptor: "." names the new root's mount (a lookup of "." does
        // not climb the mounts stacked on it), and making that tree a slave would cut the
        // container's shared mounts off from their host peers.
        let old_root = file::open("/", libc::O_PATH | libc::O_DIRECTORY).ctx("opening the old root")?;
        mount::pivot_root(".", ".").ctx("pivot_root")?;
        file::fchdir(&old_root).ctx("entering the old root")?;
        mount::mount(None, ".", None, libc::MS_SLAVE | libc::MS_REC, None).ctx("making the old root a slave")?;
        mount::umount2(".", libc::MNT_DETACH).ctx("detaching the old root")?;
    }
    file::chdir("/").ctx("chdir /")
}

/// The config's "cgroup" mount: cgroup2 directly (pure v2), or a tmpfs with one directory per
/// v1 hierarchy (and the unified one on hybrid hosts), each the container's own cgroup.
fn mount_cgroup(root: BorrowedFd<'_>, m: &MountSpec, plan: &RootfsPlan) -> Result<()> {
    let target =
        fs::resolve(root, &m.destination, Resolve { create: Create::Dir, no_symlinks: true, nofollow_final: false })
            .map_err(|e| e.context(&m.at))?;
    if plan.cgroup_mounts.len() == 1 && plan.cgroup_mounts[0].name.is_empty() {
        let tree = if plan.cgroupns {
            mounts::new_filesystem("cgroup2", "cgroup2", &m.options, &m.at)?
        } else {
            let t = mount::open_tree_clone(file::CWD, &plan.cgroup_mounts[0].host_dir, false)
                .with_ctx(|| format!("{}: {}", m.at, plan.cgroup_mounts[0].host_dir.display()))?;
            mounts::set_attrs(&t, &m.options, &m.at)?;
            t
        };
        return mount::move_mount(&tree, &target).with_ctx(|| format!("{}: mounting cgroup2", m.at));
    }
    let tmpfs_opts = MountOptions {
        attrs: crate::mounts::AttrChange { set: m.options.attrs.set & !mount::MOUNT_ATTR_RDONLY, clear: 0 },
        data: vec!["mode=755".to_string()],
        ..Default::default()
    };
    let tmpfs = mounts::new_filesystem("tmpfs", "cgroup", &tmpfs_opts, &m.at)?;
    mount::move_mount(&tmpfs, &target).with_ctx(|| format!("{}: mounting the cgroup tmpfs", m.at))?;
    let base = fs::resolve(root, &m.destination, Resolve::EXISTING)?;
    let bind_opts = MountOptions { attrs: m.options.attrs, ..Default::default() };
    for cg in &plan.cgroup_mounts {
        file::mkdirat(&base, &cg.name, 0o755).with_ctx(|| format!("{}: creating {}", m.at, cg.name))?;
        let dir = file::openat(&base, &cg.name, libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY, 0)?;
        let tree = mount::open_tree_clone(file::CWD, &cg.host_dir, false)
            .with_ctx(|| format!("{}: {}", m.at, cg.host_dir.display()))?;
        mounts::set_attrs(&tree, &bind_opts, &m.at)?;
        mount::move_mount(&tree, &dir).with_ctx(|| format!("{}: mounting {}", m.at, cg.name))?;
        // Combined hierarchies are also reachable by each controller's name, as on the host.
        if cg.name.contains(',') {
            for part in cg.name.split(',') {
                let _ = file::symlinkat(&cg.name, &base, part);
            }
        }
    }
    if m.options.attrs.set & mount::MOUNT_ATTR_RDONLY != 0 {
        let attr = MountAttr { attr_set: mount::MOUNT_ATTR_RDONLY, ..Default::default() };
        mount::mount_setattr(&base, "", false, &attr)
            .with_ctx(|| format!("{}: making the cgroup tmpfs read-only", m.at))?;
    }
    Ok(())
}

fn create_device(root: BorrowedFd<'_>, dev: &DeviceNode, in_userns: bool) -> Result<()> {
    let (parent, name) = fs::resolve_parent(root, &dev.path, true)?;
    let name = PathBuf::from(name);
    // Whatever is at the path already must be this very device (or nothing).
    match file::lstatat(&parent, &name) {
        Ok(st) => {
            let same =
                st.st_mode & libc::S_IFMT == dev.kind && (dev.kind == libc::S_IFIFO || st.st_rdev == makedev(dev));
            if !same {
                return Err(Error::invalid("a different file exists at this path"));
            }
            return Ok(());
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    if in_userns && dev.kind != libc::S_IFIFO {
        // mknod is refused in a user namespace: bind the host's node over an empty file.
        let host = file::open(&dev.path, libc::O_PATH).with_ctx(|| format!("host device {}", dev.path.display()))?;
        let st = file::fstat(&host)?;
        if st.st_mode & libc::S_IFMT != dev.kind || st.st_rdev != makedev(dev) {
            return Err(Error::invalid(format!(
                "the host's {} is not device {}:{}",
                dev.path.display(),
                dev.major,
                dev.minor
            )));
        }
        bind_file_over(root, &host, &dev.path, false)?;
        return Ok(());
    }
    file::mknodat(&parent, &name, dev.kind | dev.mode, makedev(dev)).ctx("mknod")?;
    let node = file::openat(&parent, &name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    file::fchownat(&node, "", dev.uid, dev.gid, libc::AT_EMPTY_PATH).ctx("chown")?;
    // mknod applied the umask; set the mode exactly.
    file::fchmod_path_fd(&node, dev.mode).ctx("chmod")?;
    Ok(())
}

fn makedev(dev: &DeviceNode) -> libc::dev_t {
    libc::makedev(dev.major as u32, dev.minor as u32)
}

/// Bind-mounts the object `source` refers to over a file at `dest` (created if missing).
fn bind_file_over(root: BorrowedFd<'_>, source: &OwnedFd, dest: &Path, must_be_file: bool) -> Result<()> {
    let target = fs::resolve(root, dest, Resolve { create: Create::File, no_symlinks: true, nofollow_final: false })?;
    if must_be_file && fs::is_dir(target.as_fd())? {
        return Err(Error::invalid(format!("{} is a directory", dest.display())));
    }
    let tree = mount::open_tree_clone(source, "", false).ctx("cloning the source mount")?;
    mount::move_mount(&tree, &target).with_ctx(|| format!("mounting on {}", dest.display()))
}

fn create_dev_symlinks(root: BorrowedFd<'_>) -> Result<()> {
    let dev = fs::resolve(root, Path::new("/dev"), Resolve::create(Create::Dir))?;
    let links = [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
        ("ptmx", "pts/ptmx"),
    ];
    for (name, target) in links {
        match file::symlinkat(target, &dev, name) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(Error::from_io(e).context(format!("creating /dev/{name}"))),
        }
    }
    Ok(())
}

fn readonly_path(root: BorrowedFd<'_>, path: &Path) -> Result<()> {
    let target = match fs::resolve(root, path, Resolve::EXISTING) {
        Ok(fd) => fd,
        Err(e) if fs::not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let tree = mount::open_tree_clone(&target, "", true).with_ctx(|| path.display().to_string())?;
    let attr = MountAttr { attr_set: mount::MOUNT_ATTR_RDONLY, ..Default::default() };
    mount::mount_setattr(&tree, "", true, &attr).with_ctx(|| format!("{}: making read-only", path.display()))?;
    mount::move_mount(&tree, &target).with_ctx(|| format!("{}: mounting read-only", path.display()))
}

/// Hides a path: directories under an empty read-only tmpfs, anything else under the host's
/// /dev/null (verified to be the null device, never the container's own /dev/null, which the
/// container could have replaced: CVE-2025-31133).
fn mask_path(root: BorrowedFd<'_>, path: &Path, devnull: &HostDevNull) -> Result<()> {
    let target = match fs::resolve(root, path, Resolve::EXISTING) {
        Ok(fd) => fd,
        Err(e) if fs::not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let tree = if fs::is_dir(target.as_fd())? {
        let opts = MountOptions {
            attrs: crate::mounts::AttrChange { set: mount::MOUNT_ATTR_RDONLY, clear: 0 },
            data: vec!["size=0".into()],
            ..Default::default()
        };
        mounts::new_filesystem("tmpfs", "tmpfs", &opts, &path.display().to_string())?
    } else {
        mount::open_tree_clone(&devnull.0, "", false).ctx("cloning /dev/null")?
    };
    mount::move_mount(&tree, &target).with_ctx(|| format!("masking {}", path.display()))
}
