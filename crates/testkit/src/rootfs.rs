//! A deterministic busybox root filesystem built from Debian's `busybox-static`.
//!
//! Deterministic means: the same busybox binary gives the same tree, byte for byte, with the
//! same modes, owners and timestamps, so images built from it have stable digests.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every file in the tree gets this modification time (2000-01-01T00:00:00Z).
pub const FIXED_MTIME: i64 = 946_684_800;

/// Where the static busybox comes from: `$BERTH_BUSYBOX`, else Debian's `/bin/busybox`.
pub fn busybox_path() -> PathBuf {
    std::env::var_os("BERTH_BUSYBOX").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

const DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("home", 0o755),
    ("home/user", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("sbin", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
    ("var/www", 0o755),
];

const FILES: &[(&str, u32, &str)] = &[
    (
        "etc/passwd",
        0o644,
        "root:x:0:0:root:/root:/bin/sh\n\
         daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
         user:x:1000:1000:unprivileged user:/home/user:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ),
    (
        "etc/group",
        0o644,
        "root:x:0:\n\
         daemon:x:1:\n\
         wheel:x:10:user\n\
         audio:x:29:user\n\
         user:x:1000:\n\
         nogroup:x:65534:\n",
    ),
    ("etc/hostname", 0o644, "busybox\n"),
    (
        "etc/os-release",
        0o644,
        "NAME=\"berth busybox\"\nID=berth-busybox\nPRETTY_NAME=\"berth test rootfs (Debian busybox-static)\"\n",
    ),
    ("var/www/index.html", 0o644, "<html><body>hello from berth</body></html>\n"),
];

/// Builds the busybox tree at `dest`, which must not exist or be an empty directory.
pub fn build_busybox_rootfs(dest: &Path) -> io::Result<()> {
    let busybox = busybox_path();
    check_static_elf(&busybox)?;
    fs::create_dir_all(dest)?;
    if fs::read_dir(dest)?.next().is_some() {
        return Err(io::Error::other(format!("{}: rootfs destination is not empty", dest.display())));
    }
    let mut entries: Vec<PathBuf> = Vec::new();
    for (dir, mode) in DIRS {
        let path = dest.join(dir);
        fs::create_dir(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode))?;
        entries.push(path);
    }
    let target = dest.join("bin/busybox");
    fs::copy(&busybox, &target)?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
    entries.push(target);

    for applet in list_applets(&busybox)? {
        if applet == "bin/busybox" {
            continue;
        }
        let link = dest.join(&applet);
        symlink("/bin/busybox", &link)?;
        entries.push(link);
    }
    for (name, mode, content) in FILES {
        let path = dest.join(name);
        fs::write(&path, content)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode))?;
        entries.push(path);
    }
    let am_root = unsafe { libc::geteuid() } == 0;
    let user_home = dest.join("home/user");
    // Directories last, deepest first, so setting a file's time does not change its parent's.
    entries.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for path in &entries {
        if am_root {
            let (uid, gid) = if *path == user_home { (1000, 1000) } else { (0, 0) };
            lchown(path, uid, gid)?;
        }
        set_fixed_mtime(path)?;
    }
    set_fixed_mtime(dest)
}

fn list_applets(busybox: &Path) -> io::Result<Vec<String>> {
    let out = crate::children::output(Command::new(busybox).arg("--list-full"))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} --list-full failed: {}",
            busybox.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let mut applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty() && !l.contains(".."))
        .collect();
    applets.sort();
    applets.dedup();
    Ok(applets)
}

/// The rootfs must run without a dynamic loader inside the container: refuse a dynamically
/// linked busybox (Debian's `busybox` package) with a message naming the right package.
fn check_static_elf(path: &Path) -> io::Result<()> {
    let mut header = Vec::new();
    fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e} (install busybox-static)", path.display())))?
        .take(64 * 1024)
        .read_to_end(&mut header)?;
    if header.len() < 64 || &header[..4] != b"\x7fELF" || header[4] != 2 {
        return Err(io::Error::other(format!("{}: not a 64-bit ELF file", path.display())));
    }
    let u16_at = |o: usize| u16::from_le_bytes([header[o], header[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(header[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        if off + 4 > header.len() {
            break;
        }
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(header[off..off + 4].try_into().unwrap()) == PT_INTERP {
            return Err(io::Error::other(format!(
                "{} is dynamically linked: install Debian's busybox-static",
                path.display()
            )));
        }
    }
    Ok(())
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("path contains NUL"))
}

fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstring(path)?;
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_fixed_mtime(path: &Path) -> io::Result<()> {
    let c = cstring(path)?;
    let t = libc::timespec { tv_sec: FIXED_MTIME as libc::time_t, tv_nsec: 0 };
    let times = [t, t];
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
