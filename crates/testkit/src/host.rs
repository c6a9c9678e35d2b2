//! What the tests look at on the host: who runs them, the kernel, cgroup hierarchies and the
//! processes in them, mounts, extended attributes; scripts written for tests to run.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exits (with `why`) unless the process runs as root: the suites run real containers.
pub fn require_root(why: &str) {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{why}");
        std::process::exit(1);
    }
}

/// The running kernel is `major.minor` or newer.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release.trim().split(['.', '-']).map(|x| x.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (major, minor)
}

/// The host runs the one cgroup2 hierarchy only (no v1 controllers).
pub fn is_cgroup2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Hierarchy directory names under /sys/fs/cgroup ("" on pure v2; on a hybrid host each v1
/// controller's and the cgroup2 mount's `unified`: it has a cgroup.procs too).
pub fn hierarchies() -> Vec<String> {
    if is_cgroup2() {
        return vec![String::new()];
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        if e.path().join("cgroup.procs").exists() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

/// The cgroup `rel` (a path below a hierarchy's root) in `hierarchy` (a v1 controller's
/// directory name), or on a pure v2 host its one directory.
pub fn cgroup_path(hierarchy: &str, rel: &str) -> PathBuf {
    let base = Path::new("/sys/fs/cgroup");
    let rel = rel.trim_start_matches('/');
    if is_cgroup2() {
        base.join(rel)
    } else {
        base.join(hierarchy).join(rel)
    }
}

/// The cgroup `rel` in every hierarchy that has it.
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    let base = Path::new("/sys/fs/cgroup");
    hierarchies().into_iter().map(|h| base.join(h).join(rel)).filter(|p| p.is_dir()).collect()
}

/// Removes the cgroup `rel` and everything below it, in every hierarchy; a cgroup still in use
/// is waited for a little (a killed process leaves its cgroup a moment later), then left.
pub fn remove_cgroups(rel: &str) {
    for dir in cgroup_dirs(rel) {
        remove_cgroup_tree(&dir);
    }
}

fn remove_cgroup_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            remove_cgroup_tree(&e.path());
        }
    }
    crate::check::poll_until(Duration::from_secs(10), || std::fs::remove_dir(dir).is_ok());
}

/// Whether process `pid` is gone or a zombie (exited, not yet reaped: it holds nothing).
pub fn is_dead(pid: i32) -> bool {
    berth_sys::proc::stat(pid).is_none_or(|s| s.state == 'Z')
}

/// Live processes with `component` as a component of their cgroup path (an id is not
/// matched by a longer id that starts with it).
pub fn processes_in_cgroups(component: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if is_dead(pid) {
            continue;
        }
        if let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            if cg.lines().any(|l| l.rsplit(':').next().unwrap_or("").split('/').any(|c| c == component)) {
                out.push(pid);
            }
        }
    }
    out
}

/// The mount points of this process's mount namespace, in mountinfo's order (a space, which
/// mountinfo writes as `\040`, given back).
pub fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .collect()
}

/// Whether something is mounted at `path`.
pub fn is_mounted(path: &Path) -> bool {
    mount_points().iter().any(|m| m == path)
}

/// Unmounts (detached) every mount at or below `dir` in this mount namespace, deepest first:
/// what podman's storage, the containers' root filesystems or a failed test's snapshots leave
/// before `dir` is removed.
pub fn unmount_all_under(dir: &Path) {
    let mut points: Vec<PathBuf> = mount_points().into_iter().filter(|m| m.starts_with(dir)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2 of a path string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Unmounts everything below its directory when dropped (a test that fails half-way leaves
/// no mounts behind).
pub struct UnmountOnDrop(pub PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        unmount_all_under(&self.0);
    }
}

/// The extended attribute `name` of `path` itself (not of a symlink's target).
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    // XATTR_SIZE_MAX: any value fits.
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: lgetxattr into a buffer of the length given.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

/// Writes `text` to `path` as an executable file (mode 0755): a hook, a runtime wrapper, a
/// script a container runs.
pub fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
