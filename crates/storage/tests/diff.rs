//! Layer writing: a tree in the store's layer format (overlay whiteouts, opaque directories)
//! written as an OCI tar and unpacked again is the same tree, and the same tree gives the
//! same tar.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use berth_storage::{unpack, write_layer, Compression};

fn setxattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "setxattr {name} on {}: {}", path.display(), std::io::Error::last_os_error());
}

fn mknod(path: &Path, mode: u32, dev: libc::dev_t) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mknod(p.as_ptr(), mode, dev) }, 0, "mknod {}", path.display());
}

/// Every entry: type, mode, owner, size, content or target, device, xattrs (sorted).
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mut d = format!("mode={:o} uid={} gid={} mtime={}", m.mode(), m.uid(), m.gid(), m.mtime());
            if m.file_type().is_symlink() {
                d.push_str(&format!(" -> {}", std::fs::read_link(&p).unwrap().display()));
                d = d.replace(&format!(" mtime={}", m.mtime()), "");
            } else if m.is_file() {
                d.push_str(&format!(" nlink={} data={:?}", m.nlink(), std::fs::read(&p).unwrap()));
            } else if m.is_dir() {
                stack.push(p.clone());
                // A directory's time changes as entries are made in it.
                d = d.replace(&format!(" mtime={}", m.mtime()), "");
            } else {
                if m.rdev() == 0 {
                    // A whiteout: its time is not carried.
                    d = d.replace(&format!(" mtime={}", m.mtime()), "");
                }
                d.push_str(&format!(" rdev={}", m.rdev()));
            }
            if !m.file_type().is_symlink() && !m.file_type().is_fifo() {
                let mut names = xattr_names(&p);
                names.sort();
                for n in names {
                    d.push_str(&format!(" {n}={:?}", xattr(&p, &n)));
                }
            }
            out.insert(rel, d);
        }
    }
    out
}

use std::os::unix::fs::FileTypeExt;

fn xattr_names(p: &Path) -> Vec<String> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: a buffer of the size given.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0);
    buf.truncate(n as usize);
    buf.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

fn xattr(p: &Path, name: &str) -> Vec<u8> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 70000];
    // SAFETY: a buffer of the size given.
    let len = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(len >= 0);
    buf.truncate(len as usize);
    buf
}

fn build_tree(t: &Path) {
    std::fs::create_dir_all(t.join("etc/sub")).unwrap();
    std::fs::write(t.join("etc/config"), "key=value\n").unwrap();
    std::fs::set_permissions(t.join("etc/config"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(t.join("etc/config"), Some(1000), Some(1001)).unwrap();
    std::fs::write(t.join("suid"), "x").unwrap();
    std::fs::set_permissions(t.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(t.join("big"), vec![7u8; 300_000]).unwrap();
    std::fs::hard_link(t.join("big"), t.join("etc/sub/big-link")).unwrap();
    std::os::unix::fs::symlink("../big", t.join("etc/link")).unwrap();
    let long = "d".repeat(120);
    std::fs::create_dir_all(t.join(&long).join(&long)).unwrap();
    std::fs::write(t.join(&long).join(&long).join("f".repeat(100)), "deep").unwrap();
    std::os::unix::fs::symlink("t".repeat(150), t.join("longlink")).unwrap();
    // Overlay's forms: a whiteout, an opaque directory.
    mknod(&t.join("gone"), libc::S_IFCHR | 0o600, 0);
    mknod(&t.join("etc/sub/gone-too"), libc::S_IFCHR | 0o600, 0);
    std::fs::create_dir(t.join("opaque")).unwrap();
    std::fs::write(t.join("opaque/kept"), "k").unwrap();
    setxattr(&t.join("opaque"), "trusted.overlay.opaque", b"y");
    // Devices and a fifo; xattrs (a file capability, a user attribute larger than 256 bytes).
    mknod(&t.join("null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3));
    mknod(&t.join("fifo"), libc::S_IFIFO | 0o644, 0);
    std::fs::write(t.join("ping"), "bin").unwrap();
    let cap = [1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    setxattr(&t.join("ping"), "security.capability", &cap);
    setxattr(&t.join("etc/config"), "user.note", &[b'n'; 1000]);
    // overlayfs' own bookkeeping stays out of layers.
    setxattr(&t.join("etc"), "trusted.overlay.impure", b"y");
}

#[test]
fn a_tree_written_and_unpacked_is_the_same_tree() {
    berth_testkit::host::require_root(
        "the layer writing tests make devices, owners and trusted xattrs: run them as root",
    );
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&dst).unwrap();
    build_tree(&src);
    for compression in [Compression::Gzip, Compression::Zstd] {
        let (stats, blob) = write_layer(&src, compression, Vec::new(), &|_| false).unwrap();
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::create_dir(&dst).unwrap();
        let unpacked = unpack(&mut &blob[..], compression, &dst, "test").unwrap();
        assert_eq!(unpacked.diff_id, stats.diff_id, "{compression:?}");
        assert_eq!(unpacked.tar_size, stats.tar_size);
        let (mut a, mut b) = (describe(&src), describe(&dst));
        // The one difference by design: overlayfs' bookkeeping is not carried.
        let etc = a.get_mut("etc").unwrap();
        *etc = etc.replace(" trusted.overlay.impure=[121]", "");
        assert_eq!(a.len(), b.len());
        for (k, v) in &a {
            assert_eq!(Some(v), b.get(k), "{k}");
        }
        b.clear();
    }
}

#[test]
fn whiteouts_are_written_as_oci_whiteouts_and_the_same_tree_gives_the_same_tar() {
    berth_testkit::host::require_root(
        "the layer writing tests make devices, owners and trusted xattrs: run them as root",
    );
    let tmp = tempfile::tempdir().unwrap();
    build_tree(tmp.path());
    let (first, tar) =
        write_layer(tmp.path(), Compression::None, Vec::new(), &|p| p == "fifo" || p.starts_with("etc/sub")).unwrap();
    let (second, _) =
        write_layer(tmp.path(), Compression::None, Vec::new(), &|p| p == "fifo" || p.starts_with("etc/sub")).unwrap();
    assert_eq!(first.diff_id, second.diff_id);
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(&tar[..]);
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        names.push((e.path().unwrap().display().to_string(), e.header().entry_type()));
    }
    let find = |n: &str| names.iter().find(|(p, _)| p == n).map(|(_, t)| *t);
    assert_eq!(find(".wh.gone"), Some(tar::EntryType::Regular));
    assert_eq!(find("gone"), None);
    assert_eq!(find("opaque/.wh..wh..opq"), Some(tar::EntryType::Regular));
    assert_eq!(find("fifo"), None, "skipped");
    assert!(names.iter().all(|(p, _)| !p.starts_with("etc/sub")), "skipped with all below it");
    assert_eq!(find("big"), Some(tar::EntryType::Regular));
    let sorted: Vec<_> = names.iter().map(|(p, _)| p.clone()).collect();
    let mut resorted = sorted.clone();
    // (A whiteout sorts by the name it hides.)
    let key =
        |p: &String| p.trim_end_matches('/').replace(".wh.", "").split('/').map(str::to_string).collect::<Vec<_>>();
    resorted.sort_by_key(key);
    assert_eq!(sorted, resorted, "entries in name order");
}
