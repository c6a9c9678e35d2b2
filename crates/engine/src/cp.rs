//! `cp` between the host and a container's root filesystem, and the copy of an image's
//! content into a new volume. The container side is hostile: its paths are resolved with
//! `openat2(RESOLVE_IN_ROOT)` (absolute symlinks and `..` stay inside the root), and below
//! that every entry is opened relative to its parent's descriptor with `O_NOFOLLOW`, so a
//! symlink is copied as a symlink and never followed out of the container, and nothing is
//! created through one.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_sys::file;

/// Lexically normalised components of a container path (`..` clamped at the root).
fn components(path: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// The directory holding `path` inside the root, and the last component (`.` for the root).
fn resolve_parent(root: BorrowedFd, path: &str) -> io::Result<(OwnedFd, CString)> {
    let comps = components(path);
    let Some((last, parents)) = comps.split_last() else {
        return Ok((file::open_in_root(root, b".", libc::O_PATH | libc::O_DIRECTORY)?, CString::new(".").unwrap()));
    };
    let parent = if parents.is_empty() { ".".to_string() } else { parents.join("/") };
    let fd = file::open_in_root(root, parent.as_bytes(), libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| io::Error::new(e.kind(), format!("/{parent}: {e}")))?;
    Ok((fd, CString::new(*last).map_err(|_| io::Error::other("path contains NUL"))?))
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Copies `src` (a path inside the container root `rootfs`) to the host path `dst`. With
/// `contents_only`, a directory's entries go into `dst` itself (volume copy-up); a missing
/// source is then no error.
pub fn copy_from_root(rootfs: &Path, src: &str, dst: &Path, contents_only: bool) -> io::Result<()> {
    let root = file::open_dir(rootfs)?;
    let (parent, name) = match resolve_parent(root.as_fd(), src) {
        Ok(v) => v,
        Err(e) if contents_only && e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let st = match file::lstatat(parent.as_fd(), &name) {
        Ok(st) => st,
        Err(e) if contents_only && e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{src}: {e}"))),
    };
    if contents_only {
        if !is_dir(&st) {
            return Ok(());
        }
        let d = file::openat(parent.as_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
        for child in file::read_dir_names(d.as_fd())? {
            let target = dst.join(std::ffi::OsStr::from_bytes(child.to_bytes()));
            copy_out(d.as_fd(), &child, &target)?;
        }
        return Ok(());
    }
    let base = if name.to_bytes() == b"." {
        PathBuf::from("rootfs")
    } else {
        PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()))
    };
    let target = if dst.is_dir() { dst.join(base) } else { dst.to_path_buf() };
    copy_out(parent.as_fd(), &name, &target)
}

fn copy_out(dir: BorrowedFd, name: &CStr, target: &Path) -> io::Result<()> {
    let st = file::lstatat(dir, name)?;
    let mode = st.st_mode & 0o7777;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            match fs::symlink_metadata(target) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(io::Error::other(format!("{}: exists and is not a directory", target.display()))),
                Err(_) => fs::create_dir(target)?,
            }
            let d = file::openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
            for child in file::read_dir_names(d.as_fd())? {
                copy_out(d.as_fd(), &child, &target.join(std::ffi::OsStr::from_bytes(child.to_bytes())))?;
            }
            set_meta(target, &st, mode)?;
        }
        libc::S_IFREG => {
            let src = file::openat(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0)?;
            if fs::symlink_metadata(target).map(|m| m.file_type().is_symlink()).unwrap_or(false) {
                fs::remove_file(target)?;
            }
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(target)?;
            io::copy(&mut fs::File::from(src), &mut out)?;
            drop(out);
            set_meta(target, &st, mode)?;
        }
        libc::S_IFLNK => {
            let link = file::readlinkat(dir, name)?;
            if fs::symlink_metadata(target).is_ok() {
                fs::remove_file(target)?;
            }
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&link), target)?;
            let _ = std::os::unix::fs::lchown(target, Some(st.st_uid), Some(st.st_gid));
        }
        _ => {
            let c = CString::new(target.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL"))?;
            // SAFETY: mknod of a device or fifo as it was in the container.
            if unsafe { libc::mknod(c.as_ptr(), st.st_mode, st.st_rdev) } != 0 {
                return Err(io::Error::last_os_error());
            }
            set_meta(target, &st, mode)?;
        }
    }
    Ok(())
}

fn set_meta(target: &Path, st: &libc::stat, mode: u32) -> io::Result<()> {
    let _ = std::os::unix::fs::chown(target, Some(st.st_uid), Some(st.st_gid));
    fs::set_permissions(target, fs::Permissions::from_mode(mode))?;
    let f = fs::File::open(target).ok();
    if let Some(f) = f {
        let _ = file::futimens(f.as_fd(), st.st_mtime, st.st_mtime_nsec as u32);
    }
    Ok(())
}

/// Copies the host path `src` into the container root `rootfs` at `dst` (into it, when `dst`
/// is an existing directory). The parent of `dst` must exist in the container.
pub fn copy_to_root(src: &Path, rootfs: &Path, dst: &str) -> io::Result<()> {
    let meta = fs::symlink_metadata(src).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", src.display())))?;
    let root = file::open_dir(rootfs)?;
    let (parent, name) = resolve_parent(root.as_fd(), dst)?;
    let src_name =
        CString::new(src.file_name().map(|n| n.as_bytes()).unwrap_or(b"file")).map_err(|_| io::Error::other("NUL"))?;
    let existing = file::lstatat(parent.as_fd(), &name).ok();
    let into_dir = name.to_bytes() == b"." || existing.as_ref().map(is_dir).unwrap_or(false);
    if into_dir && !dst.ends_with("/.") {
        let d = file::openat(parent.as_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
        return copy_in(src, &meta, d.as_fd(), &src_name);
    }
    if dst.ends_with('/') && existing.is_none() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{dst}: no such directory in the container")));
    }
    copy_in(src, &meta, parent.as_fd(), &name)
}

fn copy_in(src: &Path, meta: &fs::Metadata, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    let existing = file::lstatat(dir, name).ok();
    let ft = meta.file_type();
    if ft.is_dir() {
        match existing {
            Some(st) if is_dir(&st) => {}
            Some(_) => {
                file::remove_all_at(dir, name)?;
                file::mkdirat(dir, name, 0o700)?;
            }
            None => file::mkdirat(dir, name, 0o700)?,
        }
        let d = file::openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
        for e in fs::read_dir(src)? {
            let e = e?;
            let m = fs::symlink_metadata(e.path())?;
            let n = CString::new(e.file_name().as_bytes()).map_err(|_| io::Error::other("NUL"))?;
            copy_in(&e.path(), &m, d.as_fd(), &n)?;
        }
        file::fchmod(d.as_fd(), meta.mode() & 0o7777)?;
        let _ = file::futimens(d.as_fd(), meta.mtime(), meta.mtime_nsec() as u32);
        return Ok(());
    }
    if let Some(st) = existing {
        if is_dir(&st) {
            return Err(io::Error::other(format!(
                "cannot overwrite directory {} with non-directory {}",
                name.to_string_lossy(),
                src.display()
            )));
        }
        file::unlinkat(dir, name, 0)?;
    }
    if ft.is_symlink() {
        let target = fs::read_link(src)?;
        let t = CString::new(target.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL"))?;
        return file::symlinkat(&t, dir, name);
    }
    if !ft.is_file() {
        return Err(io::Error::other(format!("{}: only files, directories and symlinks can be copied", src.display())));
    }
    let out = file::create_file(dir, name)?;
    let mut out = fs::File::from(out);
    io::copy(&mut fs::File::open(src)?, &mut out)?;
    file::fchmod(out.as_fd(), meta.mode() & 0o7777)?;
    let _ = file::futimens(out.as_fd(), meta.mtime(), meta.mtime_nsec() as u32);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(components("/a/./b/../c"), vec!["a", "c"]);
        assert_eq!(components("../../etc"), vec!["etc"]);
        assert!(components("/").is_empty());
    }

    #[test]
    fn symlinks_do_not_escape() {
        let t = std::env::temp_dir().join(format!("berth-cp-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&t);
        let root = t.join("root");
        let outside = t.join("outside");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "host").unwrap();
        fs::write(root.join("etc/secret"), "container").unwrap();
        // An absolute symlink to the host's directory: resolved inside the root.
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        std::os::unix::fs::symlink("../../../../../../", root.join("up")).unwrap();
        let host = t.join("copy");
        let r = copy_from_root(&root, "/evil/secret", &host, false);
        assert!(r.is_err(), "an absolute symlink must not lead to the host");
        copy_from_root(&root, "/up/etc/secret", &host, false).unwrap();
        assert_eq!(fs::read_to_string(&host).unwrap(), "container");
        // Writing through a symlink: the link is replaced, the host file untouched.
        fs::write(t.join("in"), "new").unwrap();
        copy_to_root(&t.join("in"), &root, "/evil").unwrap();
        assert_eq!(fs::read_to_string(outside.join("secret")).unwrap(), "host");
        assert!(fs::symlink_metadata(root.join("evil")).unwrap().is_file());
        assert!(copy_to_root(&t.join("in"), &root, "/up/etc/x").is_ok());
        assert!(root.join("etc/x").exists());
        fs::remove_dir_all(&t).unwrap();
    }
}
