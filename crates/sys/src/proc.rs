//! What /proc says: a process's stat line (its state, parent, CPU time and start time), the
//! mount table, the process a pidfd refers to.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

/// The fields of /proc/PID/stat berth reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The command name (field 2, without its parentheses).
    pub comm: String,
    /// R, S, D, Z (zombie), T, X (dead), ... (field 3).
    pub state: char,
    /// The parent's pid (field 4).
    pub ppid: i32,
    /// User and system CPU time, in clock ticks (fields 14 and 15).
    pub utime: u64,
    pub stime: u64,
    /// The start time, in clock ticks since boot (field 22): with the pid, it names one process
    /// for good (a pid alone may be reused).
    pub start: u64,
}

impl Stat {
    /// Parses a /proc/PID/stat line. The command name (field 2) is in parentheses and may
    /// itself hold spaces and parentheses: fields are counted from the last ')'.
    pub fn parse(line: &str) -> Option<Stat> {
        let close = line.rfind(')')?;
        let comm = line.get(line.find('(')? + 1..close)?.to_string();
        let fields: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
        Some(Stat {
            comm,
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            utime: fields.get(11)?.parse().ok()?,
            stime: fields.get(12)?.parse().ok()?,
            start: fields.get(19)?.parse().ok()?,
        })
    }
}

/// Process `pid`'s stat line; None if there is no such process (or it could not be read).
pub fn stat(pid: i32) -> Option<Stat> {
    if pid <= 0 {
        return None;
    }
    Stat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// A process's start time (see [`Stat::start`]). None if the process is gone or a zombie.
pub fn process_start(pid: i32) -> Option<u64> {
    stat(pid).filter(|s| s.state != 'Z' && s.state != 'X').map(|s| s.start)
}

/// Whether `pid` is still the process that had `start` (alive, not a zombie).
pub fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && process_start(pid) == Some(start)
}

/// The pid (in this process's pid namespace) of the process a pidfd refers to, from
/// /proc/self/fdinfo; None if it shows none (a kernel before 5.4).
pub fn pidfd_pid(pidfd: impl AsFd) -> io::Result<Option<i32>> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_fd().as_raw_fd()))?;
    Ok(info.lines().find_map(|l| l.strip_prefix("Pid:").and_then(|v| v.trim().parse().ok())))
}

/// A mountinfo field with its escapes (`\040` for a space, and tab, newline and backslash
/// alike) undone.
pub fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) if bytes[i] == b'\\' => {
                let v = (d[0] - b'0') as u32 * 64 + (d[1] - b'0') as u32 * 8 + (d[2] - b'0') as u32;
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// Whether `path` is a mount point in this process's mount namespace (as /proc/self/mountinfo
/// spells it: no symlink resolved).
pub fn is_mountpoint(path: &Path) -> io::Result<bool> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = path.as_os_str().as_encoded_bytes();
    Ok(mounts.lines().any(|l| l.split(' ').nth(4).is_some_and(|m| unescape_mountinfo(m) == want)))
}

/// How a mount propagates, from its optional fields in /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPropagation {
    /// where the mount is
    pub mount_point: std::path::PathBuf,
    /// in a peer group: mounts under it propagate to and from its peers (`shared:N`)
    pub shared: bool,
    /// receives from a master's peer group (`master:N`)
    pub slave: bool,
}

/// The propagation of the mount `path` is on, in this process's mount namespace: the last
/// mount (the one on top) of the longest mount point that contains `path`. `path` should be
/// canonical (symlinks resolved), as mountinfo's mount points are.
pub fn mount_propagation(path: &Path) -> io::Result<MountPropagation> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut best: Option<(usize, MountPropagation)> = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4) else { continue };
        let point = std::path::PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(
            unescape_mountinfo(point),
        ));
        if !path.starts_with(&point) {
            continue;
        }
        let depth = point.components().count();
        if best.as_ref().is_some_and(|(d, _)| *d > depth) {
            continue;
        }
        let optional = fields.iter().skip(6).take_while(|f| **f != "-");
        let (mut shared, mut slave) = (false, false);
        for f in optional {
            shared |= f.starts_with("shared:");
            slave |= f.starts_with("master:");
        }
        best = Some((depth, MountPropagation { mount_point: point, shared, slave }));
    }
    best.map(|(_, m)| m).ok_or_else(|| io::Error::other(format!("{}: on no mount in mountinfo", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        let line = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        let s = Stat::parse(line).unwrap();
        assert_eq!(s, Stat { comm: "a) b) c".into(), state: 'S', ppid: 1, utime: 1, stime: 2, start: 98765 });
        assert_eq!(Stat::parse("garbage"), None);
        assert_eq!(Stat::parse("1 (x) R 1 2"), None);
    }

    #[test]
    fn this_process() {
        let me = std::process::id() as i32;
        let start = process_start(me).expect("our own start time");
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
        assert_eq!(process_start(0), None);
        let s = stat(me).unwrap();
        assert!(s.state == 'R' || s.state == 'S', "{s:?}");
        assert!(s.start > 0);
    }

    #[test]
    fn the_root_mount_has_a_propagation() {
        let m = mount_propagation(Path::new("/proc/self")).unwrap();
        assert_eq!(m.mount_point, Path::new("/proc"));
        let root = mount_propagation(Path::new("/")).unwrap();
        assert_eq!(root.mount_point, Path::new("/"));
    }

    #[test]
    fn a_pidfd_names_its_process() {
        let me = std::process::id() as i32;
        let fd = crate::process::pidfd_open(me).unwrap();
        assert_eq!(pidfd_pid(&fd).unwrap(), Some(me));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b\011c\134d\012"), b"/a b\tc\\d\n");
        assert_eq!(unescape_mountinfo(r"\777\04"), b"?\\04");
        assert!(is_mountpoint(Path::new("/proc")).unwrap());
        assert!(!is_mountpoint(Path::new("/proc/self")).unwrap());
    }
}
