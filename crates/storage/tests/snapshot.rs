//! Snapshots over many layers: overlayfs with a lower-directory list far longer than one
//! mount option page, and the copy driver giving the same view.

use std::fs;
use std::path::{Path, PathBuf};

use berth_storage::{unpack, Compression, Driver, OverlayMount, Snapshotter};
use berth_testkit::host::{kernel_at_least, UnmountOnDrop};
use berth_testkit::image::LayerBuilder;

fn layer(dir: &Path, b: LayerBuilder) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let tar = b.finish();
    let mut r = &tar[..];
    unpack(&mut r, Compression::None, dir, "sha256:test").unwrap();
    dir.to_path_buf()
}

/// 120 layers with long paths, as a deep store root would give: far beyond 4 KiB joined.
fn many_layers(tmp: &Path) -> Vec<PathBuf> {
    let base = tmp.join("a-rather-long-store-root-directory-name/layers-with-long-names");
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
    lowers
}

#[test]
fn snapshot_long_lowerdir_list_and_copy_driver_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let _guard = UnmountOnDrop(tmp.path().to_path_buf());
    let lowers = many_layers(tmp.path());
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

/// What kernels before 6.8 get (forced here; tools/test-storage-kernel61.sh runs the test
/// above on Debian's 6.1, where it is the automatic choice): mount(2), with short relative
/// lower names when the absolute ones do not fit in a page.
#[test]
fn snapshot_classic_mount_takes_a_long_lowerdir_list() {
    let tmp = tempfile::tempdir().unwrap();
    let _guard = UnmountOnDrop(tmp.path().to_path_buf());
    let lowers = many_layers(tmp.path());
    let mut snaps = Snapshotter::open(&tmp.path().join("snapshots")).unwrap();
    snaps.set_overlay_mount(OverlayMount::Classic);
    let cwd = std::env::current_dir().unwrap();
    let rootfs = snaps.prepare("classic", &lowers, Driver::Overlay).unwrap();
    assert_eq!(std::env::current_dir().unwrap(), cwd, "the process's working directory changed");
    assert_eq!(fs::read_dir(rootfs.join("files")).unwrap().count(), 119);
    assert_eq!(fs::read_to_string(rootfs.join("files/f001")).unwrap(), "replaced\n");
    assert_eq!(fs::read_to_string(rootfs.join("files/f118")).unwrap(), "118\n");
    fs::write(rootfs.join("files/new"), b"upper").unwrap();
    // Mounted again (after a reboot): the same view, the upper layer kept.
    snaps.unmount("classic").unwrap();
    snaps.mount("classic", &lowers).unwrap();
    assert_eq!(fs::read(rootfs.join("files/new")).unwrap(), b"upper");
    assert!(!rootfs.join("files/f000").exists());
    // A few short layers fit as they are: no links then.
    let few = snaps.prepare("few", &lowers[..3], Driver::Overlay).unwrap();
    assert_eq!(fs::read_dir(few.join("files")).unwrap().count(), 3);
    assert!(!snaps.path("few").join("l").exists());
    snaps.remove("classic").unwrap();
    snaps.remove("few").unwrap();
}

#[test]
fn snapshot_of_a_few_layers_mounts() {
    // The common case, on whatever kernel runs the test (before 6.5 it never mounted).
    let tmp = tempfile::tempdir().unwrap();
    let _guard = UnmountOnDrop(tmp.path().to_path_buf());
    let mut lowers = Vec::new();
    for i in 0..2 {
        let mut b = LayerBuilder::new();
        b.file(&format!("f{i}"), 0o644, b"x");
        lowers.push(layer(&tmp.path().join(format!("layer{i}")), b));
    }
    let snaps = Snapshotter::open(&tmp.path().join("snapshots")).unwrap();
    let rootfs = snaps.prepare("s", &lowers, Driver::Overlay).unwrap();
    assert!(rootfs.join("f0").exists() && rootfs.join("f1").exists());
    snaps.remove("s").unwrap();
}

#[test]
fn overlay_errors_carry_the_kernels_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let _guard = UnmountOnDrop(tmp.path().to_path_buf());
    let mut b = LayerBuilder::new();
    b.file("f", 0o644, b"x");
    let good = layer(&tmp.path().join("good"), b);
    let not_a_dir = tmp.path().join("not-a-directory");
    fs::write(&not_a_dir, b"").unwrap();
    let snaps = Snapshotter::open(&tmp.path().join("snapshots")).unwrap();
    let err = snaps.prepare("bad", &[good, not_a_dir], Driver::Overlay).unwrap_err().to_string();
    assert!(err.contains("snapshot bad") && err.contains("not-a-directory"), "{err}");
    // The kernel explains itself on a mount API context (6.8+ here); mount(2) has no channel.
    if kernel_at_least(6, 8) {
        assert!(err.contains("kernel: overlay:"), "the kernel's own words are missing: {err}");
    }
    assert!(snaps.list().unwrap().is_empty(), "a failed snapshot is removed");
}

#[test]
fn copy_snapshot_keeps_sparse_files_sparse() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut b = LayerBuilder::new();
    let size: u64 = 4 << 30;
    b.gnu_sparse("disk.img", size, &[(0, &[1u8; 512]), (size - 512, &[2u8; 512])]).file("plain", 0o644, b"x\n");
    let lower = layer(&tmp.path().join("layer"), b);
    let snaps = Snapshotter::open(&tmp.path().join("snapshots")).unwrap();
    let rootfs = snaps.prepare("cp", &[lower], Driver::Copy).unwrap();
    let copy = rootfs.join("disk.img");
    let md = fs::metadata(&copy).unwrap();
    assert_eq!(md.len(), size);
    assert!(md.blocks() * 512 <= 1 << 20, "the copy wrote {} bytes for 1 KiB of data", md.blocks() * 512);
    let data = {
        use std::os::unix::fs::FileExt;
        let f = fs::File::open(&copy).unwrap();
        let mut head = [0u8; 512];
        let mut tail = [0u8; 512];
        f.read_exact_at(&mut head, 0).unwrap();
        f.read_exact_at(&mut tail, size - 512).unwrap();
        (head, tail)
    };
    assert_eq!(data, ([1u8; 512], [2u8; 512]));
    assert_eq!(fs::read(rootfs.join("plain")).unwrap(), b"x\n");
}

#[test]
fn a_snapshot_held_open_is_still_unmounted() {
    // A file of the root filesystem open elsewhere (a server's child between fork and exec
    // holds its parent's descriptors) makes umount busy: the mount is detached all the same.
    let tmp = tempfile::tempdir().unwrap();
    let _guard = UnmountOnDrop(tmp.path().to_path_buf());
    let mut b = LayerBuilder::new();
    b.file("f", 0o644, b"x");
    let lowers = vec![layer(&tmp.path().join("layer"), b)];
    let snaps = Snapshotter::open(&tmp.path().join("snapshots")).unwrap();
    let rootfs = snaps.prepare("held", &lowers, Driver::Overlay).unwrap();
    let held = fs::File::open(rootfs.join("f")).unwrap();
    snaps.unmount("held").expect("unmount with a file held open");
    assert!(!berth_sys::proc::is_mountpoint(&rootfs).unwrap(), "still mounted");
    drop(held);
    snaps.remove("held").unwrap();
}
