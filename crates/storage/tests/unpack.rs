//! The extractor against real layers (built with the test kit) and a hostile-layer corpus.
//! Each hostile layer must fail with an error naming the layer and the entry, and nothing may
//! appear outside the layer root.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use berth_storage::{unpack, Compression, Digest};
use berth_testkit::host::xattr;
use berth_testkit::image::{compress, Compression as C, LayerBuilder};

const LAYER: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

struct Sandbox {
    _tmp: tempfile::TempDir,
    outside: std::path::PathBuf,
    layer: std::path::PathBuf,
}

fn sandbox() -> Sandbox {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    let layer = outside.join("a/b/layer");
    fs::create_dir_all(&layer).unwrap();
    fs::write(outside.join("victim"), b"original").unwrap();
    fs::write(outside.join("a/victim"), b"original").unwrap();
    Sandbox { _tmp: tmp, outside, layer }
}

/// Everything under `dir` except below `skip`, as sorted relative paths.
fn listing(dir: &Path, skip: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p == skip {
                continue;
            }
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn unpack_bytes(blob: &[u8], c: Compression, dest: &Path) -> Result<berth_storage::UnpackStats, berth_storage::Error> {
    let mut r = blob;
    unpack(&mut r, c, dest, LAYER)
}

fn expect_rejected(layer: Vec<u8>, entry: &str, why: &str) {
    let sb = sandbox();
    let before = listing(&sb.outside, &sb.layer);
    let err = unpack_bytes(&layer, Compression::None, &sb.layer).expect_err("hostile layer was accepted");
    let msg = err.to_string();
    assert!(msg.contains(LAYER), "error does not name the layer: {msg}");
    assert!(msg.contains(entry), "error does not name the entry {entry:?}: {msg}");
    assert!(msg.contains(why), "error does not say {why:?}: {msg}");
    assert_eq!(listing(&sb.outside, &sb.layer), before, "something was written outside the layer root");
    assert_eq!(fs::read(sb.outside.join("victim")).unwrap(), b"original");
    assert_eq!(fs::read(sb.outside.join("a/victim")).unwrap(), b"original");
}

#[test]
fn hostile_parent_traversal_rejected() {
    let mut b = LayerBuilder::new();
    b.file("ok", 0o644, b"x").file("../../victim", 0o644, b"pwned");
    expect_rejected(b.finish(), "../../victim", "..");
}

#[test]
fn hostile_absolute_path_rejected() {
    let mut b = LayerBuilder::new();
    b.file("/tmp/berth-absolute-escape", 0o644, b"pwned");
    expect_rejected(b.finish(), "/tmp/berth-absolute-escape", "absolute path");
    assert!(!Path::new("/tmp/berth-absolute-escape").exists());
}

#[test]
fn hostile_symlink_parent_escape_rejected() {
    let mut b = LayerBuilder::new();
    b.symlink("escape", "../..").file("escape/victim", 0o644, b"pwned");
    expect_rejected(b.finish(), "escape/victim", "symlink");
}

#[test]
fn hostile_absolute_symlink_parent_rejected() {
    let sb = sandbox();
    let mut b = LayerBuilder::new();
    let target = sb.outside.to_string_lossy().into_owned();
    b.symlink("abs", &target).file("abs/victim", 0o644, b"pwned");
    let err = unpack_bytes(&b.finish(), Compression::None, &sb.layer).unwrap_err().to_string();
    assert!(err.contains("abs/victim") && err.contains("symlink"), "{err}");
    assert_eq!(fs::read(sb.outside.join("victim")).unwrap(), b"original");
}

#[test]
fn hostile_symlink_then_file_through_it_rejected() {
    // Even a symlink that stays inside the root is never followed for a later entry.
    let mut b = LayerBuilder::new();
    b.dir("real/", 0o755).symlink("link", "real").file("link/file", 0o644, b"through a symlink");
    expect_rejected(b.finish(), "link/file", "symlink");
}

#[test]
fn hostile_hardlink_escape_rejected() {
    let mut b = LayerBuilder::new();
    b.hardlink("stolen", "../../victim");
    expect_rejected(b.finish(), "stolen", "..");
    let mut b = LayerBuilder::new();
    b.hardlink("stolen", "/etc/passwd");
    expect_rejected(b.finish(), "stolen", "absolute path");
}

#[test]
fn hostile_hardlink_through_symlink_rejected() {
    let mut b = LayerBuilder::new();
    b.symlink("up", "../..").hardlink("stolen", "up/victim");
    expect_rejected(b.finish(), "stolen", "symlink");
}

#[test]
fn hostile_huge_size_claim_rejected() {
    let mut b = LayerBuilder::new();
    b.file_claiming("huge", 1 << 60, b"tiny");
    let mut tar = b.finish();
    tar.truncate(512 + 4);
    expect_rejected(tar, "huge", "bytes free");
}

#[test]
fn hostile_size_claim_beyond_stream_rejected() {
    let mut b = LayerBuilder::new();
    b.file_claiming("short", 10_000, &[7u8; 1024]);
    let mut tar = std::mem::take(b.raw());
    tar.truncate(512 + 1024);
    let sb = sandbox();
    let err = unpack_bytes(&tar, Compression::None, &sb.layer).unwrap_err().to_string();
    assert!(err.contains(LAYER) && err.contains("short"), "{err}");
}

#[test]
fn hostile_truncated_gzip_rejected() {
    let mut b = LayerBuilder::new();
    b.file("big", 0o644, &berth_testkit::image::filler(1, 200_000));
    let gz = compress(&b.finish(), C::Gzip);
    let sb = sandbox();
    let err = unpack_bytes(&gz[..gz.len() / 2], Compression::Gzip, &sb.layer).unwrap_err().to_string();
    assert!(err.contains(LAYER), "{err}");
    assert_eq!(listing(&sb.outside, &sb.layer), vec!["a", "a/b", "a/victim", "victim"]);
}

#[test]
fn hostile_overlay_xattr_rejected() {
    let mut b = LayerBuilder::new();
    b.file_with_xattr("f", b"x", "trusted.overlay.redirect", b"/etc");
    expect_rejected(b.finish(), "f", "trusted.overlay.redirect");
}

#[test]
fn hostile_file_replacing_parent_is_not_followed() {
    // A directory replaced by a symlink later in the same layer: entries after it must not
    // be written through the symlink.
    let mut b = LayerBuilder::new();
    b.dir("d/", 0o755).file("d/one", 0o644, b"1").symlink("d", "../..").file("d/two", 0o644, b"2");
    expect_rejected(b.finish(), "d/two", "symlink");
}

#[test]
fn unpack_regular_layer_with_links_devices_and_metadata() {
    let mut b = LayerBuilder::new();
    b.uid = 1000;
    b.gid = 1001;
    b.mtime = 1_234_567_890;
    b.dir("etc/", 0o755)
        .file("etc/config", 0o640, b"hello")
        .file("usr/lib/implicit/parent.txt", 0o600, b"parents created")
        .symlink("etc/link", "/etc/config")
        .hardlink("etc/hard", "etc/config")
        .char_dev("dev-null", 1, 3)
        .fifo("pipe")
        .file("setuid", 0o4755, b"#!");
    b.file_with_xattr("with-xattr", b"x", "user.berth", b"value");
    let tar = b.finish();
    for c in [C::None, C::Gzip, C::Zstd] {
        let sb = sandbox();
        let blob = compress(&tar, c);
        let comp = match c {
            C::None => Compression::None,
            C::Gzip => Compression::Gzip,
            C::Zstd => Compression::Zstd,
        };
        let stats = unpack_bytes(&blob, comp, &sb.layer).unwrap();
        assert_eq!(stats.diff_id, Digest::of(&tar), "DiffID is the sha256 of the uncompressed tar");
        assert_eq!(stats.tar_size, tar.len() as u64);
        let l = &sb.layer;
        let md = fs::metadata(l.join("etc/config")).unwrap();
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777, md.mtime()), (1000, 1001, 0o640, 1_234_567_890));
        assert_eq!(fs::read(l.join("etc/config")).unwrap(), b"hello");
        assert_eq!(fs::read_link(l.join("etc/link")).unwrap().to_str().unwrap(), "/etc/config");
        assert_eq!(fs::symlink_metadata(l.join("etc/link")).unwrap().uid(), 1000);
        assert_eq!(fs::metadata(l.join("etc/hard")).unwrap().ino(), md.ino());
        let dev = fs::symlink_metadata(l.join("dev-null")).unwrap();
        assert!(dev.file_type().is_char_device());
        assert_eq!(dev.rdev(), libc::makedev(1, 3));
        assert!(fs::symlink_metadata(l.join("pipe")).unwrap().file_type().is_fifo());
        assert_eq!(fs::metadata(l.join("setuid")).unwrap().mode() & 0o7777, 0o4755);
        assert_eq!(fs::metadata(l.join("etc")).unwrap().mtime(), 1_234_567_890, "directory mtime applied last");
        assert_eq!(fs::read(l.join("usr/lib/implicit/parent.txt")).unwrap(), b"parents created");
        assert_eq!(xattr(&l.join("with-xattr"), "user.berth").as_deref(), Some(&b"value"[..]));
    }
}

#[test]
fn unpack_converts_whiteouts_to_overlay_format() {
    let mut b = LayerBuilder::new();
    b.dir("etc/", 0o755).whiteout("etc/removed").opaque("var/cache").file("var/cache/new", 0o644, b"n");
    b.whiteout("gone-dir");
    let sb = sandbox();
    unpack_bytes(&b.finish(), Compression::None, &sb.layer).unwrap();
    let wh = fs::symlink_metadata(sb.layer.join("etc/removed")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!((wh.rdev(), wh.uid(), wh.gid()), (0, 0, 0));
    assert!(!sb.layer.join("etc/.wh.removed").exists());
    assert_eq!(xattr(&sb.layer.join("var/cache"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert!(!sb.layer.join("var/cache/.wh..wh..opq").exists());
    assert!(sb.layer.join("var/cache/new").exists());
    assert!(fs::symlink_metadata(sb.layer.join("gone-dir")).unwrap().file_type().is_char_device());
}

#[test]
fn unpack_whiteout_then_entries_below_it_becomes_opaque_directory() {
    let mut b = LayerBuilder::new();
    b.whiteout("d").file("d/new", 0o644, b"n");
    let sb = sandbox();
    unpack_bytes(&b.finish(), Compression::None, &sb.layer).unwrap();
    assert!(sb.layer.join("d").is_dir());
    assert_eq!(xattr(&sb.layer.join("d"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(fs::read(sb.layer.join("d/new")).unwrap(), b"n");
}

#[test]
fn unpack_busybox_rootfs_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = berth_testkit::image::busybox_layer(tmp.path()).unwrap();
    let dest = tmp.path().join("layer");
    fs::create_dir(&dest).unwrap();
    let stats = unpack_bytes(&compress(&tar, C::Gzip), Compression::Gzip, &dest).unwrap();
    assert_eq!(stats.diff_id, Digest::of(&tar));
    assert_eq!(fs::read_link(dest.join("bin/sh")).unwrap().to_str().unwrap(), "/bin/busybox");
    assert_eq!(fs::metadata(dest.join("tmp")).unwrap().mode() & 0o7777, 0o1777);
    assert_eq!(fs::metadata(dest.join("home/user")).unwrap().uid(), 1000);
    let out = std::process::Command::new(dest.join("bin/busybox")).arg("true").status().unwrap();
    assert!(out.success());
}

/// A layer stream: one extension header claiming `claim` bytes, then that many bytes of body
/// (generated, never held in memory), counting what the extractor reads.
struct HugeExtension {
    header: Vec<u8>,
    claim: u64,
    pos: u64,
}

impl std::io::Read for HugeExtension {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let total = self.header.len() as u64 + self.claim;
        let n = buf.len().min((total - self.pos) as usize);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = self.pos as usize + i;
            *b = if at < self.header.len() { self.header[at] } else { b'a' };
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[test]
fn hostile_huge_extension_headers_rejected_before_their_body_is_read() {
    for (kind, name, what) in [
        (tar::EntryType::XHeader, "PaxHeaders/huge", "PAX extended header"),
        (tar::EntryType::GNULongName, "././@LongLink", "GNU long name"),
        (tar::EntryType::GNULongLink, "././@LongLink", "GNU long link"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(64 << 20);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        let mut r = HugeExtension { header: h.as_bytes().to_vec(), claim: 64 << 20, pos: 0 };
        let sb = sandbox();
        let err = unpack(&mut r, Compression::None, &sb.layer, LAYER).expect_err("accepted").to_string();
        assert!(err.contains(LAYER) && err.contains(name), "{err}");
        assert!(err.contains(what) && err.contains("1048576-byte limit"), "{err}");
        assert!(r.pos <= 1 << 20, "{what}: {} bytes were read before refusing", r.pos);
    }
}

#[test]
fn pax_size_long_names_and_gnu_sparse_files_unpack() {
    // A PAX header whose size overrides the header's (Go writes files over 8 GiB so, with 0
    // in the header), a GNU long name and long link, and a GNU sparse file with a hole.
    let mut tar_bytes = Vec::new();
    let pax = |recs: &[(&str, &str)]| {
        let mut body = Vec::new();
        for (k, v) in recs {
            let rest = format!(" {k}={v}\n");
            let mut len = rest.len() + 1;
            while len != rest.len() + len.to_string().len() {
                len = rest.len() + len.to_string().len();
            }
            body.extend_from_slice(format!("{len}{rest}").as_bytes());
        }
        body
    };
    let block = |h: &tar::Header, data: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    };
    let body = pax(&[("size", "5"), ("path", "dir/from-pax-path")]);
    let mut x = tar::Header::new_ustar();
    x.set_entry_type(tar::EntryType::XHeader);
    x.set_size(body.len() as u64);
    x.set_cksum();
    block(&x, &body, &mut tar_bytes);
    let mut f = tar::Header::new_ustar();
    f.set_entry_type(tar::EntryType::Regular);
    f.set_path("short-name").unwrap();
    f.set_mode(0o644);
    f.set_uid(0);
    f.set_gid(0);
    f.set_mtime(0);
    f.set_size(0); // the PAX size wins
    f.set_cksum();
    block(&f, b"hello", &mut tar_bytes);
    let long = format!("dir/{}", "n".repeat(150));
    let mut b = LayerBuilder::new();
    b.dir("dir/", 0o755).file(&long, 0o644, b"long\n");
    let mut built = b.finish();
    built.truncate(built.len() - 1024);
    tar_bytes.extend_from_slice(&built);
    // GNU sparse: 1 KiB of data at offset 4096 of an 8 KiB file.
    let mut s = tar::Header::new_gnu();
    s.set_entry_type(tar::EntryType::GNUSparse);
    s.set_path("sparse").unwrap();
    s.set_mode(0o644);
    s.set_uid(0);
    s.set_gid(0);
    s.set_mtime(0);
    s.set_size(1024);
    {
        let g = s.as_gnu_mut().unwrap();
        g.sparse[0].set_offset(4096);
        g.sparse[0].set_length(1024);
        g.sparse[1].set_offset(8192);
        g.sparse[1].set_length(0);
        g.realsize.copy_from_slice(format!("{:011o}\0", 8192).as_bytes());
    }
    s.set_cksum();
    block(&s, &[7u8; 1024], &mut tar_bytes);
    tar_bytes.extend_from_slice(&[0u8; 1024]);

    let sb = sandbox();
    let stats = unpack_bytes(&tar_bytes, Compression::None, &sb.layer).unwrap();
    assert_eq!(stats.diff_id, Digest::of(&tar_bytes));
    assert_eq!(fs::read(sb.layer.join("dir/from-pax-path")).unwrap(), b"hello");
    assert!(!sb.layer.join("short-name").exists());
    assert_eq!(fs::read(sb.layer.join(&long)).unwrap(), b"long\n");
    let sparse = fs::read(sb.layer.join("sparse")).unwrap();
    assert_eq!(sparse.len(), 8192);
    assert!(sparse[..4096].iter().all(|b| *b == 0) && sparse[4096..5120].iter().all(|b| *b == 7));
    assert!(sparse[5120..].iter().all(|b| *b == 0));
}

/// Bytes a file takes on disk (its allocated blocks).
fn on_disk(p: &Path) -> u64 {
    fs::metadata(p).unwrap().blocks() * 512
}

fn read_at(p: &Path, off: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    fs::File::open(p).unwrap().read_exact_at(&mut buf, off).unwrap();
    buf
}

const GIB4: u64 = 4 << 30;

#[test]
fn old_gnu_sparse_file_of_4_gib_keeps_its_holes() {
    // The attack: a layer of about 2 KB holding an old-GNU sparse entry of 4 GiB used to write
    // 4 GiB of real zeros.
    let mut b = LayerBuilder::new();
    b.gnu_sparse("huge", GIB4, &[(0, &[1u8; 512]), (GIB4 - 512, &[2u8; 512])]);
    let tar = b.finish();
    assert!(tar.len() <= 4096, "{} bytes", tar.len());
    let sb = sandbox();
    let stats = unpack_bytes(&tar, Compression::None, &sb.layer).unwrap();
    let f = sb.layer.join("huge");
    assert_eq!(fs::metadata(&f).unwrap().len(), GIB4);
    assert!(on_disk(&f) <= 1 << 20, "{} bytes written for 1 KiB of data", on_disk(&f));
    assert_eq!(read_at(&f, 0, 512), vec![1u8; 512]);
    assert_eq!(read_at(&f, 1 << 30, 512), vec![0u8; 512]);
    assert_eq!(read_at(&f, GIB4 - 512, 512), vec![2u8; 512]);
    assert_eq!(stats.content_bytes, GIB4, "the content size counts the holes");
    assert_eq!(stats.diff_id, Digest::of(&tar));
}

#[test]
fn pax_sparse_formats_unpack_with_their_holes() {
    let (a, c) = (vec![b'a'; 512], vec![b'c'; 100]);
    let segments: [(u64, &[u8]); 3] = [(0, &a), (1 << 20, &a), ((1 << 30) - 100, &c)];
    for version in ["0.0", "0.1", "1.0"] {
        let mut b = LayerBuilder::new();
        b.dir("dir/", 0o755).pax_sparse(version, "dir/sparse", 1 << 30, &segments).file("dir/after", 0o644, b"next\n");
        let tar = b.finish();
        let sb = sandbox();
        let stats = unpack_bytes(&tar, Compression::None, &sb.layer).unwrap_or_else(|e| panic!("{version}: {e}"));
        assert_eq!(stats.diff_id, Digest::of(&tar));
        let f = sb.layer.join("dir/sparse");
        assert_eq!(fs::metadata(&f).unwrap().len(), 1 << 30, "{version}");
        assert!(on_disk(&f) <= 1 << 20, "{version}: {} bytes on disk", on_disk(&f));
        assert_eq!(read_at(&f, 0, 512), a, "{version}");
        assert_eq!(read_at(&f, 512, 512), vec![0u8; 512], "{version}");
        assert_eq!(read_at(&f, 1 << 20, 512), a, "{version}");
        assert_eq!(read_at(&f, (1 << 30) - 100, 100), c, "{version}");
        assert_eq!(fs::read(sb.layer.join("dir/after")).unwrap(), b"next\n", "{version}: the next entry");
        assert!(!sb.layer.join("dir/GNUSparseFile.0").exists(), "{version}: extracted in its condensed form");
    }
}

#[test]
fn sparse_archives_of_gnu_tar_unpack_exactly() {
    // What GNU tar itself writes, in each of its sparse formats.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let file = src.join("disk.img");
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(&file).unwrap();
        f.set_len(64 << 20).unwrap();
        for (i, off) in [0u64, 3 << 20, 40 << 20, (64 << 20) - 4096].iter().enumerate() {
            f.write_all_at(&[i as u8 + 1; 4096], *off).unwrap();
        }
    }
    let want = fs::read(&file).unwrap();
    for format in [
        &["--format=gnu"][..],
        &["--format=pax", "--sparse-version=0.0"],
        &["--format=pax", "--sparse-version=0.1"],
        &["--format=pax", "--sparse-version=1.0"],
    ] {
        let archive = tmp.path().join("sparse.tar");
        let out = std::process::Command::new("tar")
            .args(["--sparse", "-c", "-f"])
            .arg(&archive)
            .args(format)
            .arg("-C")
            .arg(&src)
            .arg("disk.img")
            .output()
            .expect("GNU tar (Debian package tar)");
        assert!(out.status.success(), "tar {format:?}: {}", String::from_utf8_lossy(&out.stderr));
        let tar = fs::read(&archive).unwrap();
        assert!(tar.len() < 1 << 20, "{format:?}: GNU tar did not write a sparse entry ({} bytes)", tar.len());
        let sb = sandbox();
        unpack_bytes(&tar, Compression::None, &sb.layer).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        let got = sb.layer.join("disk.img");
        assert!(fs::read(&got).unwrap() == want, "{format:?}: the content differs");
        assert!(on_disk(&got) <= 1 << 20, "{format:?}: {} bytes on disk", on_disk(&got));
    }
}

#[test]
fn hostile_sparse_maps_are_refused() {
    let rec = |b: &mut LayerBuilder, recs: &[(&str, &str)], data: &[u8]| {
        let recs: Vec<(&[u8], &[u8])> = recs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
        b.pax_header(&recs).file("s", 0o644, data);
    };
    let pad = |b: &[u8]| {
        let mut v = b.to_vec();
        v.resize(512, 0);
        v
    };
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("GNU.sparse.major", "2"), ("GNU.sparse.minor", "0"), ("GNU.sparse.realsize", "10")],
            vec![],
            "unsupported GNU sparse format version 2.0",
        ),
        (vec![("GNU.sparse.size", "4096"), ("GNU.sparse.map", "0,100")], vec![7; 50], "sparse map covers"),
        (vec![("GNU.sparse.size", "10"), ("GNU.sparse.map", "0,100")], vec![7; 100], "ends past the file's size"),
        (vec![("GNU.sparse.size", "4096"), ("GNU.sparse.map", "0,10,5,10")], vec![7; 20], "out of order"),
        (vec![("GNU.sparse.size", "4096"), ("GNU.sparse.map", "0,10,20")], vec![7; 10], "odd number"),
        (vec![("GNU.sparse.size", "4096"), ("GNU.sparse.offset", "0")], vec![], "complete map"),
        (
            vec![("GNU.sparse.size", "4096"), ("GNU.sparse.numblocks", "2"), ("GNU.sparse.map", "0,10")],
            vec![7; 10],
            "numblocks",
        ),
        (vec![("GNU.sparse.map", "0,10")], vec![7; 10], "without the file's size"),
        (
            vec![("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"), ("GNU.sparse.realsize", "4096")],
            {
                // A map of more entries than the entry holds: a full block of "0\n", no more.
                let mut m = b"9999999\n".to_vec();
                while m.len() < 512 {
                    m.extend_from_slice(b"0\n");
                }
                m
            },
            "runs past the entry's data",
        ),
        (
            vec![("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"), ("GNU.sparse.realsize", "4096")],
            pad(b"1\nx\n"),
            "invalid sparse map number",
        ),
    ];
    for (recs, data, why) in cases {
        let mut b = LayerBuilder::new();
        rec(&mut b, &recs, &data);
        expect_rejected(b.finish(), "\"s\"", why);
    }
}

#[test]
fn expanded_size_limit_refuses_before_writing() {
    use berth_storage::{unpack_within, SizeLimit};
    let setting = "storage.max-image-size in berth.toml";
    // The sparse file alone passes a 1 MiB limit: refused at its header, nothing created.
    let mut b = LayerBuilder::new();
    b.file("small", 0o644, b"fits").gnu_sparse("huge", GIB4, &[(GIB4 - 512, &[2u8; 512])]);
    let tar = b.finish();
    let sb = sandbox();
    let limit = SizeLimit::new(1 << 20, setting);
    let err = unpack_within(&mut &tar[..], Compression::None, &sb.layer, LAYER, &limit).unwrap_err().to_string();
    assert!(err.contains(LAYER) && err.contains("entry \"huge\"") && err.contains(setting), "{err}");
    assert!(err.contains("more than 1048576 bytes unpacked"), "{err}");
    assert!(!sb.layer.join("huge").exists() && sb.layer.join("small").exists());
    // One limit for the layers of an image: the second layer passes it.
    let limit = SizeLimit::new(1 << 20, setting);
    let mut b = LayerBuilder::new();
    b.file("half", 0o644, &vec![5u8; 600 << 10]);
    let layer = b.finish();
    let (one, two) = (sandbox(), sandbox());
    unpack_within(&mut &layer[..], Compression::None, &one.layer, LAYER, &limit).unwrap();
    let err = unpack_within(&mut &layer[..], Compression::None, &two.layer, LAYER, &limit).unwrap_err().to_string();
    assert!(err.contains("entry \"half\"") && err.contains(setting), "{err}");
    // Entries count even when empty: 4000 empty files are 2 MB of tar stream.
    let mut b = LayerBuilder::new();
    for i in 0..4000 {
        b.file(&format!("e{i}"), 0o644, b"");
    }
    let many = compress(&b.finish(), C::Gzip);
    assert!(many.len() < 200 << 10);
    let sb = sandbox();
    let limit = SizeLimit::new(1 << 20, setting);
    let err = unpack_within(&mut &many[..], Compression::Gzip, &sb.layer, LAYER, &limit).unwrap_err().to_string();
    assert!(err.contains(setting), "{err}");
}

#[test]
fn hostile_ids_and_device_numbers_refused() {
    // (uid_t)-1 means "unchanged" to chown: the file would stay root's.
    let mut b = LayerBuilder::new();
    b.uid = u32::MAX as u64;
    b.file("owned-by-minus-one", 0o4755, b"#!/bin/sh\n");
    expect_rejected(b.finish(), "owned-by-minus-one", "uid 4294967295 out of range");
    let mut b = LayerBuilder::new();
    b.pax_header(&[(b"gid", b"4294967295")]).file("group-minus-one", 0o644, b"x");
    expect_rejected(b.finish(), "group-minus-one", "gid 4294967295 out of range");
    let mut b = LayerBuilder::new();
    b.pax_header(&[(b"uid", b"4294967296")]).file("wide-uid", 0o644, b"x");
    expect_rejected(b.finish(), "wide-uid", "uid 4294967296 out of range");
    // Device numbers beyond the kernel's 12 + 20 bits would be cut to others.
    let mut b = LayerBuilder::new();
    b.char_dev("dev/big-major", 4096, 1);
    expect_rejected(b.finish(), "dev/big-major", "device major 4096 out of range");
    let mut b = LayerBuilder::new();
    b.char_dev("dev/big-minor", 1, 1 << 20);
    expect_rejected(b.finish(), "dev/big-minor", "device minor 1048576 out of range");
    // The largest valid ones are fine.
    let mut b = LayerBuilder::new();
    b.uid = 4294967294;
    b.file("top-uid", 0o644, b"x").char_dev("dev/top", 4095, (1 << 20) - 1);
    let sb = sandbox();
    unpack_bytes(&b.finish(), Compression::None, &sb.layer).unwrap();
    assert_eq!(fs::metadata(sb.layer.join("top-uid")).unwrap().uid(), 4294967294);
    let rdev = fs::metadata(sb.layer.join("dev/top")).unwrap().rdev();
    assert_eq!((libc::major(rdev), libc::minor(rdev)), (4095, (1 << 20) - 1));
}
