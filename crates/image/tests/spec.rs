//! Image config → runtime spec defaults against hand-made root filesystems: the image's own
//! /etc/passwd and /etc/group are read only when they are regular files.

use std::ffi::CString;
use std::fs;
use std::path::Path;

use berth_image::manifest::parse_config;
use berth_image::spec::{runtime_defaults, Overrides};

fn mknod(p: &Path, mode: u32, major: u32, minor: u32) {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mknod(c.as_ptr(), mode, libc::makedev(major, minor)) }, 0, "mknod {}", p.display());
}

#[test]
fn users_file_must_be_a_regular_file() {
    let cfg = parse_config(
        br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"],"User":"app"},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        "config",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    let (passwd, group) = (rootfs.join("etc/passwd"), rootfs.join("etc/group"));
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    let good_group = "app:x:778:\n";
    fs::write(&group, good_group).unwrap();

    // Device nodes are never opened (a host device could be read, or a driver's open run):
    // /dev/zero as /etc/passwd, /dev/null as /etc/group.
    mknod(&passwd, libc::S_IFCHR | 0o644, 1, 5);
    let err = runtime_defaults(&cfg, &rootfs, &Overrides::default()).unwrap_err().to_string();
    assert!(err.contains("/etc/passwd") && err.contains("not a regular file"), "{err}");
    fs::remove_file(&passwd).unwrap();
    fs::write(&passwd, "app:x:777:778::/:/bin/sh\n").unwrap();
    fs::remove_file(&group).unwrap();
    mknod(&group, libc::S_IFCHR | 0o644, 1, 3);
    let err = runtime_defaults(&cfg, &rootfs, &Overrides::default()).unwrap_err().to_string();
    assert!(err.contains("/etc/group") && err.contains("not a regular file"), "{err}");
    fs::remove_file(&group).unwrap();
    fs::write(&group, good_group).unwrap();

    // A FIFO would block the reader forever.
    fs::remove_file(&passwd).unwrap();
    mknod(&passwd, libc::S_IFIFO | 0o644, 0, 0);
    let err = runtime_defaults(&cfg, &rootfs, &Overrides::default()).unwrap_err().to_string();
    assert!(err.contains("/etc/passwd") && err.contains("not a regular file"), "{err}");

    // Bytes that are not UTF-8 (a Latin-1 GECOS field) do not make the file unreadable.
    fs::remove_file(&passwd).unwrap();
    fs::write(&passwd, b"app:x:777:778:Jos\xe9:/:/bin/sh\n").unwrap();
    let d = runtime_defaults(&cfg, &rootfs, &Overrides::default()).unwrap();
    assert_eq!((d.uid, d.gid), (777, 778));
}
