//! Snapshots over many layers: overlayfs with a lower-directory list far longer than one
//! mount option page, and the copy driver giving the same view.

use std::fs;
use std::path::{Path, PathBuf};

use berth_storage::{unpack, Compression, Driver, Snapshotter};
use berth_testkit::image::LayerBuilder;

struct UnmountOnDrop(PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        let prefix = self.0.to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for m in mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&prefix)) {
            let c = std::ffi::CString::new(m).unwrap();
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn layer(dir: &Path, b: LayerBuilder) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let tar = b.finish();
    let mut r = &tar[..];
    unpack(&mut r, Compression::None, dir, "sha256:test").unwrap();
    dir.to_path_buf()
}

#[test]
fn snapshot_long_lowerdir_list_and_copy_driver_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let _guard = UnmountOnDrop(tmp.path().to_path_buf());
    // Long layer paths, as a deep store root would give: 120 of them is far beyond 4 KiB.
    let base = tmp.path().join("a-rather-long-store-root-directory-name/layers-with-long-names");
    let mut lowers = Vec::new();
    for i in 0..120 {
        let mut b = LayerBuilder::new();
        b.dir("files/", 0o755).file(&format!("files/f{i:03}"), 0o644, format!("{i}\n").as_bytes());
        if i == 119 {
            b.whiteout("files/f000").file("files/f001", 0o644, b"replaced\n");
        }
        lowers.push(layer(&base.join(format!("{i:03}-{}", "x".repeat(64))), b));
    }
    let joined: usize = lowers.iter().map(|p| p.as_os_str().len() + 1).sum();
    assert!(joined > 4096, "the test needs a lowerdir list longer than a page");
    let snaps = Snapshotter::open(&tmp.path().join("snapshots")).unwrap();
    let mut views = Vec::new();
    for (id, driver) in [("ovl", Driver::Overlay), ("cp", Driver::Copy)] {
        let rootfs = snaps.prepare(id, &lowers, driver).unwrap();
        let mut names: Vec<String> = fs::read_dir(rootfs.join("files"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 119, "{driver:?}: f000 is whited out");
        assert!(!names.contains(&"f000".to_string()));
        assert_eq!(fs::read_to_string(rootfs.join("files/f001")).unwrap(), "replaced\n");
        assert_eq!(fs::read_to_string(rootfs.join("files/f118")).unwrap(), "118\n");
        views.push(names);
    }
    assert_eq!(views[0], views[1]);
    snaps.remove("ovl").unwrap();
    snaps.remove("cp").unwrap();
    assert!(snaps.list().unwrap().is_empty());
}
