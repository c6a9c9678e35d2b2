//! Container root filesystems over shared layers: an overlayfs mount of the image's layers
//! with the container's own upper and work directories, or, where overlayfs is unavailable, a
//! private copy of the layers with their whiteouts applied.
//!
//! `snapshots/<id>/` holds `upper/`, `work/` and the mount point `rootfs/` (overlay), or just
//! `rootfs/` (copy); `l/` holds short links to the layers when an older kernel needs them.
//!
//! An ID-mapped snapshot (for a pod with a user namespace of its own) records its mappings in
//! `idmap`: its layers are mounted through ID-mapped mounts of them (`idmapped/<n>`, detached
//! again once overlayfs holds them), so files the host's root owns in a layer appear owned
//! by the pod's root, and its upper directory belongs to the pod's root on the host (the
//! snapshot's directory is root's, 0710 with the pod's group). The shared layers are never
//! chowned.
//! Long lower-directory lists are passed one by one with the new mount API (`lowerdir+`, Linux
//! 6.8+), so the length of a mount option page does not limit the number of layers; older
//! kernels get mount(2) with short relative names (see `Snapshotter::mount`).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_sys::file;
use berth_sys::mount::{self, FsContext};
use berth_sys::userns::IdMap;

use crate::unpack::OPAQUE_XATTR;
use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    Overlay,
    Copy,
}

impl Driver {
    pub fn parse(s: &str) -> Result<Driver, Error> {
        match s {
            "overlay" | "overlayfs" => Ok(Driver::Overlay),
            "copy" | "vfs" => Ok(Driver::Copy),
            other => {
                Err(Error::invalid(format!("unknown storage driver {other:?} (expected \"overlay\" or \"copy\")")))
            }
        }
    }

    /// overlay when we may mount overlayfs, copy otherwise. fsopen("overlay") answers both
    /// (and loads the module if it is not loaded yet, which /proc/filesystems would miss).
    pub fn detect() -> Driver {
        if FsContext::open("overlay").is_ok() {
            Driver::Overlay
        } else {
            Driver::Copy
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Driver::Overlay => "overlay",
            Driver::Copy => "copy",
        }
    }
}

/// The user and group ID mappings a snapshot's files are seen through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdMapping {
    pub uids: Vec<IdMap>,
    pub gids: Vec<IdMap>,
}

impl IdMapping {
    /// The host IDs of the mapped root (ID 0 inside).
    fn root(&self) -> Option<(u32, u32)> {
        let host = |maps: &[IdMap]| maps.iter().find(|m| m.container_id == 0).map(|m| m.host_id);
        Some((host(&self.uids)?, host(&self.gids)?))
    }

    /// `uid C H L` and `gid C H L` lines.
    fn to_text(&self) -> String {
        let line = |kind: &str, m: &IdMap| format!("{kind} {} {} {}\n", m.container_id, m.host_id, m.length);
        self.uids.iter().map(|m| line("uid", m)).chain(self.gids.iter().map(|m| line("gid", m))).collect()
    }

    fn parse(text: &str) -> Option<IdMapping> {
        let mut m = IdMapping { uids: Vec::new(), gids: Vec::new() };
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [kind, c, h, l] = f.as_slice() else { return None };
            let map = IdMap { container_id: c.parse().ok()?, host_id: h.parse().ok()?, length: l.parse().ok()? };
            match *kind {
                "uid" => m.uids.push(map),
                "gid" => m.gids.push(map),
                _ => return None,
            }
        }
        Some(m)
    }
}

pub struct Snapshotter {
    dir: PathBuf,
    overlay_mount: OverlayMount,
}

/// How overlay snapshots are mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlayMount {
    /// The new mount API with `lowerdir+` where the kernel has it, mount(2) otherwise.
    Auto,
    /// Always mount(2) with an option string (what kernels before 6.8 get).
    Classic,
}

/// Whether overlayfs has its own mount parameter parser (Linux 6.5+): it refuses a key it
/// does not know, where the kernel's legacy parser (earlier kernels) accepts any key and the
/// error only comes when the superblock is created. Probed once per process.
fn overlay_parses_its_parameters() -> bool {
    static PARSES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PARSES.get_or_init(|| match FsContext::open("overlay") {
        Ok(ctx) => ctx.set_string("berth-probe-unknown-key", b"1").is_err(),
        Err(_) => false,
    })
}

pub fn validate_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::msg(format!("invalid snapshot id {id:?} (letters, digits, '_', '-', '.')")))
    }
}

impl Snapshotter {
    pub fn open(dir: &Path) -> io::Result<Snapshotter> {
        fs::create_dir_all(dir)?;
        Ok(Snapshotter { dir: dir.to_path_buf(), overlay_mount: OverlayMount::Auto })
    }

    /// Chooses how overlay snapshots are mounted (`Auto` by default).
    pub fn set_overlay_mount(&mut self, how: OverlayMount) {
        self.overlay_mount = how;
    }

    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    pub fn rootfs(&self, id: &str) -> PathBuf {
        self.dir.join(id).join("rootfs")
    }

    /// Creates the snapshot `id` over `lowers` (bottom layer first) and returns its root
    /// filesystem path, mounted (overlay) or populated (copy).
    pub fn prepare(&self, id: &str, lowers: &[PathBuf], driver: Driver) -> Result<PathBuf, Error> {
        self.prepare_mapped(id, lowers, driver, None)
    }

    /// `prepare`, with the files seen through `idmap` when given (overlay only).
    pub fn prepare_mapped(
        &self,
        id: &str,
        lowers: &[PathBuf],
        driver: Driver,
        idmap: Option<&IdMapping>,
    ) -> Result<PathBuf, Error> {
        validate_id(id)?;
        let idmap_root = match idmap.map(|m| (m, m.root())) {
            None => None,
            Some((_, None)) => return Err(Error::msg(format!("snapshot {id}: the ID mapping does not map root (0)"))),
            Some((_, Some(_))) if driver != Driver::Overlay => {
                return Err(Error::msg(format!(
                    "snapshot {id}: an ID-mapped root filesystem needs the overlay driver (this store uses {})",
                    driver.name()
                )))
            }
            Some((_, root)) => root,
        };
        let base = self.path(id);
        fs::create_dir(&base).map_err(|e| Error::msg(format!("snapshot {id}: create {}: {e}", base.display())))?;
        let result = (|| -> Result<PathBuf, Error> {
            let rootfs = base.join("rootfs");
            fs::create_dir(&rootfs).map_err(|e| crate::io_error(&rootfs, e))?;
            // The container's / (the upper directory's mode, for overlay): 0755 whatever the umask.
            let mode = |p: &Path| {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(p, fs::Permissions::from_mode(0o755)).map_err(|e| crate::io_error(p, e))
            };
            mode(&rootfs)?;
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&base, fs::Permissions::from_mode(0o700)).map_err(|e| crate::io_error(&base, e))?;
            }
            fs::write(base.join("driver"), driver.name()).map_err(|e| crate::io_error(&base, e))?;
            match driver {
                Driver::Overlay => {
                    for d in ["upper", "work"] {
                        fs::create_dir(base.join(d)).map_err(|e| crate::io_error(&base.join(d), e))?;
                    }
                    mode(&base.join("upper"))?;
                    if let (Some(m), Some((uid, gid))) = (idmap, idmap_root) {
                        // The container's / belongs to its root, as the host sees it. Its
                        // runtime enters the snapshot's directory as that user: root's still
                        // (its `idmap` is not the pod's to change), searchable by the pod's
                        // group only (as Docker's 0710 root:remapped-group).
                        let upper = base.join("upper");
                        std::os::unix::fs::lchown(&upper, Some(uid), Some(gid))
                            .map_err(|e| crate::io_error(&upper, e))?;
                        std::os::unix::fs::lchown(&base, None, Some(gid)).map_err(|e| crate::io_error(&base, e))?;
                        use std::os::unix::fs::PermissionsExt;
                        fs::set_permissions(&base, fs::Permissions::from_mode(0o710))
                            .map_err(|e| crate::io_error(&base, e))?;
                        fs::write(base.join("idmap"), m.to_text()).map_err(|e| crate::io_error(&base, e))?;
                    }
                    self.mount(id, lowers)?;
                }
                Driver::Copy => {
                    let dst = file::open_dir(&rootfs).map_err(|e| crate::io_error(&rootfs, e))?;
                    for lower in lowers {
                        let src = file::open_dir(lower).map_err(|e| crate::io_error(lower, e))?;
                        let mut links = HashMap::new();
                        merge_layer(src.as_fd(), dst.as_fd(), dst.as_fd(), b"", &mut links)
                            .map_err(|e| Error::msg(format!("snapshot {id}: copy {}: {e}", lower.display())))?;
                    }
                }
            }
            Ok(rootfs)
        })();
        if result.is_err() {
            let _ = self.remove(id);
        }
        result
    }

    /// Mounts an overlay snapshot's root filesystem (again, e.g. after a reboot).
    ///
    /// With the new mount API and overlayfs's `lowerdir+` (Linux 6.8+), the lower directories
    /// are passed one by one, so their number and length are not limited by a mount option
    /// page. Older kernels get a classic mount(2) option string; when the absolute paths do
    /// not fit in a page, short relative names are used instead: `snapshots/<id>/l/<n>`
    /// symlinks to the layers, mounted from a thread whose working directory is `l/` (Docker's
    /// overlay2 does the same with its `l/` directory). Before 6.5 overlayfs had no mount
    /// parameter parser of its own: the kernel's legacy one accepts any key and the error only
    /// comes at creation, so that case is recognised first, by a key no parser knows.
    pub fn mount(&self, id: &str, lowers: &[PathBuf]) -> Result<(), Error> {
        validate_id(id)?;
        if lowers.is_empty() {
            return Err(Error::msg(format!("snapshot {id}: an image without layers cannot be mounted")));
        }
        let idmap = match fs::read_to_string(self.path(id).join("idmap")) {
            Ok(text) => Some(
                IdMapping::parse(&text)
                    .ok_or_else(|| Error::msg(format!("snapshot {id}: idmap: unreadable mapping")))?,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(crate::io_error(&self.path(id).join("idmap"), e)),
        };
        let Some(idmap) = idmap else { return self.mount_layers(id, lowers) };
        let mapped = self.attach_idmapped(id, lowers, &idmap);
        let r = mapped.and_then(|mapped| self.mount_layers(id, &mapped));
        // overlayfs holds private clones of its layers: the attached ones can go.
        let detached = self.detach_idmapped(id);
        r.and(detached)
    }

    /// ID-mapped mounts of the layers at `idmapped/<n>`, through a user namespace with the
    /// snapshot's mappings.
    fn attach_idmapped(&self, id: &str, lowers: &[PathBuf], idmap: &IdMapping) -> Result<Vec<PathBuf>, Error> {
        let dir = self.path(id).join("idmapped");
        self.detach_idmapped(id)?;
        fs::create_dir_all(&dir).map_err(|e| crate::io_error(&dir, e))?;
        let userns = berth_sys::userns::create(&idmap.uids, &idmap.gids)
            .map_err(|e| Error::msg(format!("snapshot {id}: a user namespace for its ID mapping: {e}")))?;
        let attr = mount::MountAttr {
            attr_set: mount::MOUNT_ATTR_IDMAP,
            userns_fd: userns.as_raw_fd() as u64,
            ..Default::default()
        };
        let mut mapped = Vec::new();
        for (i, l) in lowers.iter().enumerate() {
            let at = dir.join(i.to_string());
            fs::create_dir_all(&at).map_err(|e| crate::io_error(&at, e))?;
            let tree = mount::open_tree_clone(file::CWD, l, false)
                .and_then(|t| mount::mount_setattr(&t, "", false, &attr).map(|_| t))
                .and_then(|t| mount::move_mount_to(&t, &at))
                .map_err(|e| {
                    Error::msg(format!(
                        "snapshot {id}: ID-mapping layer {}: {e} (does its filesystem support ID-mapped mounts?)",
                        l.display()
                    ))
                });
            tree?;
            mapped.push(at);
        }
        Ok(mapped)
    }

    /// Detaches the layers' ID-mapped mounts; an error when one is still attached (the
    /// snapshot's directory must then not be removed: through it the shared layer is).
    fn detach_idmapped(&self, id: &str) -> Result<(), Error> {
        let Ok(entries) = fs::read_dir(self.path(id).join("idmapped")) else { return Ok(()) };
        for e in entries.flatten() {
            let p = e.path();
            let mounted = |p: &Path| berth_sys::proc::is_mountpoint(p).map_err(|err| crate::io_error(p, err));
            while mounted(&p)? {
                mount::umount2(&p, libc::MNT_DETACH)
                    .map_err(|err| Error::msg(format!("snapshot {id}: detach {}: {err}", p.display())))?;
            }
        }
        Ok(())
    }

    fn mount_layers(&self, id: &str, lowers: &[PathBuf]) -> Result<(), Error> {
        if self.overlay_mount == OverlayMount::Auto && overlay_parses_its_parameters() {
            if let Some(r) = self.mount_lowerdir_plus(id, lowers) {
                return r;
            }
        }
        self.mount_classic(id, lowers)
    }

    /// The new mount API with `lowerdir+`; None when this kernel's overlayfs does not know
    /// `lowerdir+` (before 6.8).
    fn mount_lowerdir_plus(&self, id: &str, lowers: &[PathBuf]) -> Option<Result<(), Error>> {
        let base = self.path(id);
        let (upper, work, rootfs) = (base.join("upper"), base.join("work"), base.join("rootfs"));
        let ctx = match FsContext::open("overlay") {
            Ok(c) => c,
            Err(e) => return Some(Err(Error::msg(format!("snapshot {id}: overlayfs: {e}")))),
        };
        let failed = |what: String, e: io::Error, ctx: &FsContext| {
            let kernel = ctx.messages();
            let kernel = if kernel.is_empty() { String::new() } else { format!(" (kernel: {kernel})") };
            Error::msg(format!("snapshot {id}: {what}: {e}{kernel}"))
        };
        for (i, l) in lowers.iter().rev().enumerate() {
            if let Err(e) = ctx.set_string("lowerdir+", l.as_os_str().as_encoded_bytes()) {
                if i == 0 && e.raw_os_error() == Some(libc::EINVAL) {
                    let kernel = ctx.messages();
                    if kernel.is_empty() || kernel.contains("Unknown parameter") {
                        return None; // kernel older than 6.8
                    }
                    return Some(Err(Error::msg(format!(
                        "snapshot {id}: overlay lowerdir {}: {e} (kernel: {kernel})",
                        l.display()
                    ))));
                }
                return Some(Err(failed(format!("overlay lowerdir {}", l.display()), e, &ctx)));
            }
        }
        for (key, value) in plain_upper_options() {
            if let Err(e) = ctx.set_string(key, value.as_bytes()) {
                return Some(Err(failed(format!("overlay option {key}={value}"), e, &ctx)));
            }
        }
        let r = ctx
            .set_string("upperdir", upper.as_os_str().as_encoded_bytes())
            .map_err(|e| failed(format!("overlay upperdir {}", upper.display()), e, &ctx))
            .and_then(|_| {
                ctx.set_string("workdir", work.as_os_str().as_encoded_bytes())
                    .map_err(|e| failed(format!("overlay workdir {}", work.display()), e, &ctx))
            })
            .and_then(|_| {
                ctx.mount_at(&rootfs, 0).map_err(|e| failed(format!("mount overlay on {}", rootfs.display()), e, &ctx))
            });
        Some(r)
    }

    /// mount(2) with an option string; short relative lower names when the absolute ones do
    /// not fit in a page.
    fn mount_classic(&self, id: &str, lowers: &[PathBuf]) -> Result<(), Error> {
        let base = self.path(id);
        let (upper, work, rootfs) = (base.join("upper"), base.join("work"), base.join("rootfs"));
        // mount(2) gives no reason beyond EINVAL (only the kernel log has it): check first
        // what the kernel would refuse, so the error names it.
        for l in lowers {
            match fs::metadata(l) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::msg(format!("snapshot {id}: overlay lowerdir {}: not a directory", l.display())))
                }
                Err(e) => return Err(Error::msg(format!("snapshot {id}: overlay lowerdir {}: {e}", l.display()))),
            }
        }
        let esc = |p: &Path| -> String {
            let mut s = String::new();
            for c in p.to_string_lossy().chars() {
                if matches!(c, ':' | ',' | '\\') {
                    s.push('\\');
                }
                s.push(c);
            }
            s
        };
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(4096);
        let lower: Vec<String> = lowers.iter().rev().map(|p| esc(p)).collect();
        let options: String = plain_upper_options().iter().map(|(k, v)| format!(",{k}={v}")).collect();
        let mut data = format!("lowerdir={},upperdir={},workdir={}{options}", lower.join(":"), esc(&upper), esc(&work));
        let mut cwd = None;
        if data.len() >= page {
            let links = base.join("l");
            match fs::remove_dir_all(&links) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(crate::io_error(&links, e)),
            }
            fs::create_dir(&links).map_err(|e| crate::io_error(&links, e))?;
            for (i, l) in lowers.iter().enumerate() {
                let link = links.join(i.to_string());
                std::os::unix::fs::symlink(l, &link).map_err(|e| crate::io_error(&link, e))?;
            }
            let short: Vec<String> = (0..lowers.len()).rev().map(|i| i.to_string()).collect();
            data = format!("lowerdir={},upperdir=../upper,workdir=../work{options}", short.join(":"));
            cwd = Some(links);
        }
        if data.len() >= page {
            return Err(Error::msg(format!(
                "snapshot {id}: {} layers do not fit in one overlay mount option page on this kernel (needs 6.8+ for more)",
                lowers.len()
            )));
        }
        let (target, data) = (
            berth_sys::cstring(rootfs.as_os_str().as_encoded_bytes()).map_err(|e| crate::io_error(&rootfs, e))?,
            berth_sys::cstring(data.as_bytes()).map_err(|e| crate::io_error(&rootfs, e))?,
        );
        let mount = || -> io::Result<()> {
            if let Some(dir) = &cwd {
                // This thread's own working directory: the process's is left alone.
                if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                std::env::set_current_dir(dir)?;
            }
            let r = unsafe {
                libc::mount(c"overlay".as_ptr(), target.as_ptr(), c"overlay".as_ptr(), 0, data.as_ptr().cast())
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        let r = if cwd.is_some() {
            std::thread::scope(|s| s.spawn(mount).join())
                .unwrap_or_else(|_| Err(io::Error::other("mount thread panicked")))
        } else {
            mount()
        };
        r.map_err(|e| Error::msg(format!("snapshot {id}: mount overlay on {}: {e}", rootfs.display())))
    }

    /// Unmounts the snapshot's root filesystem. Busy for a moment is expected in a server that
    /// starts processes from other threads (a child between fork and exec holds copies of the
    /// caller's descriptors, a rootfs directory among them): a few retries, then a lazy
    /// detach, which takes the mount out of the namespace and frees it with the last holder.
    pub fn unmount(&self, id: &str) -> Result<(), Error> {
        validate_id(id)?;
        let rootfs = self.rootfs(id);
        if !berth_sys::proc::is_mountpoint(&rootfs).unwrap_or(false) {
            return Ok(());
        }
        let failed = |e: io::Error| Error::msg(format!("snapshot {id}: unmount {}: {e}", rootfs.display()));
        for _ in 0..10 {
            match mount::umount2(&rootfs, libc::UMOUNT_NOFOLLOW) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(failed(e)),
            }
        }
        mount::umount2(&rootfs, libc::UMOUNT_NOFOLLOW | libc::MNT_DETACH).map_err(failed)
    }

    /// Unmounts and deletes a snapshot (its upper directory with it).
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        self.unmount(id)?;
        self.detach_idmapped(id)?;
        let base = self.path(id);
        match fs::remove_dir_all(&base) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::io_error(&base, e)),
        }
    }

    pub fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            out.push(e?.file_name().to_string_lossy().into_owned());
        }
        out.sort();
        Ok(out)
    }
}

fn is_whiteout(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

fn copy_meta(src: BorrowedFd, dst: BorrowedFd, st: &libc::stat, with_times: bool) -> io::Result<()> {
    file::fchown(dst, st.st_uid, st.st_gid)?;
    file::fchmod(dst, st.st_mode & 0o7777)?;
    for name in file::flistxattr(src)? {
        if name.as_bytes().starts_with(b"trusted.overlay.") {
            continue;
        }
        if let Some(v) = file::fgetxattr(src, &name)? {
            file::fsetxattr(dst, &name, &v)?;
        }
    }
    if with_times {
        file::futimens(dst, st.st_mtime, st.st_mtime_nsec as u32)?;
    }
    Ok(())
}

/// Copies the regular file `src` (`len` bytes) into the empty `dst`, keeping its holes as
/// holes: only the ranges SEEK_DATA finds are copied, and the size is set at the end (a
/// layer's sparse file would otherwise be written out as zeros into every copy snapshot).
fn copy_sparse(src: &fs::File, dst: &fs::File, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let fd = src.as_raw_fd();
    let mut buf = vec![0u8; 256 << 10];
    let mut at = 0u64;
    while at < len {
        // SAFETY: lseek on our descriptor.
        let data = unsafe { libc::lseek(fd, at as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole up to the end
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let (mut pos, end) = (data as u64, (hole as u64).min(len));
        while pos < end {
            let want = buf.len().min((end - pos) as usize);
            let n = src.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while it was copied"));
            }
            dst.write_all_at(&buf[..n], pos)?;
            pos += n as u64;
        }
        at = end;
    }
    dst.set_len(len)
}

/// Applies one unpacked layer (`src`, overlay whiteout format) on top of `dst`: whiteouts
/// delete, opaque directories replace, everything else is copied with its metadata.
/// `links` maps (dev, inode) of hardlinked files to their copy's path, to keep them linked.
fn merge_layer(
    src: BorrowedFd,
    dst: BorrowedFd,
    top: BorrowedFd,
    rel: &[u8],
    links: &mut HashMap<(u64, u64), Vec<u8>>,
) -> io::Result<()> {
    for name in file::read_dir_names(src)? {
        let st = file::lstatat(src, &name)?;
        let mut child_rel = rel.to_vec();
        if !child_rel.is_empty() {
            child_rel.push(b'/');
        }
        child_rel.extend_from_slice(name.to_bytes());
        let existing = file::lstatat(dst, &name).ok();
        if is_whiteout(&st) {
            file::remove_all_at(dst, &name)?;
            continue;
        }
        let fmt = st.st_mode & libc::S_IFMT;
        if fmt == libc::S_IFDIR {
            let sdir = file::open_beneath(src, name.to_bytes(), libc::O_RDONLY | libc::O_DIRECTORY)?;
            let opaque = file::fgetxattr(sdir.as_fd(), OPAQUE_XATTR)?.as_deref() == Some(b"y");
            match existing {
                Some(e) if e.st_mode & libc::S_IFMT == libc::S_IFDIR && !opaque => {}
                Some(_) => {
                    file::remove_all_at(dst, &name)?;
                    file::mkdirat(dst, &name, 0o700)?;
                }
                None => file::mkdirat(dst, &name, 0o700)?,
            }
            let ddir = file::open_beneath(dst, name.to_bytes(), libc::O_RDONLY | libc::O_DIRECTORY)?;
            copy_meta(sdir.as_fd(), ddir.as_fd(), &st, false)?;
            merge_layer(sdir.as_fd(), ddir.as_fd(), top, &child_rel, links)?;
            file::futimens(ddir.as_fd(), st.st_mtime, st.st_mtime_nsec as u32)?;
            continue;
        }
        if existing.is_some() {
            file::remove_all_at(dst, &name)?;
        }
        if fmt == libc::S_IFREG && st.st_nlink > 1 {
            if let Some(first) = links.get(&(st.st_dev, st.st_ino)) {
                // Hardlinked within this layer: link to the copy made for the first name.
                let (dir_part, file_part) = match first.iter().rposition(|b| *b == b'/') {
                    Some(i) => (&first[..i], &first[i + 1..]),
                    None => (&b""[..], &first[..]),
                };
                let fdir = file::open_beneath(top, dir_part, libc::O_PATH | libc::O_DIRECTORY)?;
                file::linkat(fdir.as_fd(), file_part, dst, &name)?;
                continue;
            }
            links.insert((st.st_dev, st.st_ino), child_rel.clone());
        }
        match fmt {
            libc::S_IFREG => {
                let sfd = file::open_beneath(src, name.to_bytes(), libc::O_RDONLY)?;
                let dfd = file::create_file(dst, &name)?;
                let sf = fs::File::from(sfd);
                let df = fs::File::from(dfd);
                copy_sparse(&sf, &df, st.st_size as u64)?;
                copy_meta(sf.as_fd(), df.as_fd(), &st, true)?;
            }
            libc::S_IFLNK => {
                let target = file::readlinkat(src, &name)?;
                file::symlinkat(&target, dst, &name)?;
                file::lchownat(dst, &name, st.st_uid, st.st_gid)?;
                file::lutimensat(dst, &name, st.st_mtime, st.st_mtime_nsec as u32)?;
            }
            _ => {
                file::mknodat(dst, &name, fmt | 0o600, st.st_rdev)?;
                file::lchownat(dst, &name, st.st_uid, st.st_gid)?;
                file::fchmodat(dst, &name, st.st_mode & 0o7777)?;
                file::lutimensat(dst, &name, st.st_mtime, st.st_mtime_nsec as u32)?;
            }
        }
    }
    Ok(())
}

/// Options that keep an upper directory a plain diff of its lowers, which a layer can carry
/// (build steps, commit and diff write uppers as layers): overlayfs' redirects (a renamed
/// lower directory) and metadata-only copy-ups are turned off where this kernel turns them on
/// by default. Asked only then, so a kernel without the options mounts as before.
fn plain_upper_options() -> Vec<(&'static str, &'static str)> {
    let on = |param: &str| {
        fs::read_to_string(format!("/sys/module/overlay/parameters/{param}")).is_ok_and(|v| v.trim() == "Y")
    };
    let mut out = Vec::new();
    if on("redirect_dir") {
        out.push(("redirect_dir", "off"));
    }
    if on("metacopy") {
        out.push(("metacopy", "off"));
    }
    out
}
