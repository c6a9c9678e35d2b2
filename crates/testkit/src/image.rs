//! Deterministic image fixtures: layer tarballs (from the busybox rootfs or entry by entry,
//! hostile ones included), compressed with gzip or zstd, assembled into OCI image layouts
//! that skopeo can push to a test registry. The same inputs always give the same digests.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::rootfs::FIXED_MTIME;

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

pub fn compress(data: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(data, 3).unwrap(),
    }
}

/// Builds a layer tarball entry by entry. Paths are written as given (no checks), so hostile
/// layers can be made too. Owner 0:0 and the fixed mtime unless set otherwise.
pub struct LayerBuilder {
    b: tar::Builder<Vec<u8>>,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Deterministic);
        LayerBuilder { b, uid: 0, gid: 0, mtime: FIXED_MTIME as u64 }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mtime(self.mtime);
        h.set_size(size);
        h
    }

    /// Appends with the raw path bytes, bypassing the tar crate's path checks. Long names
    /// get a GNU long-name entry.
    fn append(&mut self, mut h: tar::Header, path: &str, link: Option<&str>, data: &[u8]) -> &mut Self {
        let name = path.as_bytes();
        if name.len() > 99 {
            let mut l = tar::Header::new_gnu();
            l.set_entry_type(tar::EntryType::GNULongName);
            l.set_size(name.len() as u64 + 1);
            l.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
            l.set_mode(0o644);
            l.set_cksum();
            let mut d = name.to_vec();
            d.push(0);
            self.b.append(&l, &d[..]).unwrap();
        }
        {
            let gnu = h.as_gnu_mut().unwrap();
            let n = name.len().min(99);
            gnu.name[..n].copy_from_slice(&name[..n]);
            if let Some(t) = link {
                let t = t.as_bytes();
                assert!(t.len() < 100, "link target too long for the fixture builder");
                gnu.linkname[..t.len()].copy_from_slice(t);
            }
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let h = self.header(tar::EntryType::Directory, mode, 0);
        self.append(h, path, None, &[])
    }
    pub fn file(&mut self, path: &str, mode: u32, content: &[u8]) -> &mut Self {
        let h = self.header(tar::EntryType::Regular, mode, content.len() as u64);
        self.append(h, path, None, content)
    }
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let h = self.header(tar::EntryType::Symlink, 0o777, 0);
        self.append(h, path, Some(target), &[])
    }
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let h = self.header(tar::EntryType::Link, 0o644, 0);
        self.append(h, path, Some(target), &[])
    }
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = self.header(tar::EntryType::Char, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.append(h, path, None, &[])
    }
    pub fn fifo(&mut self, path: &str) -> &mut Self {
        let h = self.header(tar::EntryType::Fifo, 0o644, 0);
        self.append(h, path, None, &[])
    }
    /// An OCI whiteout hiding `path` of the lower layers.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let (dir, name) = path.rsplit_once('/').map(|(d, n)| (format!("{d}/"), n)).unwrap_or((String::new(), path));
        self.file(&format!("{dir}.wh.{name}"), 0o644, b"")
    }
    /// An opaque whiteout: `dir` hides the lower layers' contents.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&format!("{}/.wh..wh..opq", dir.trim_end_matches('/')), 0o644, b"")
    }
    /// A regular-file header claiming `size` bytes followed by `data` (hostile: size lies).
    pub fn file_claiming(&mut self, path: &str, size: u64, data: &[u8]) -> &mut Self {
        let mut h = self.header(tar::EntryType::Regular, 0o644, size);
        let name = path.as_bytes();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        // Write the header and the short data by hand: tar::Builder would pad to `size`.
        self.b.get_mut().extend_from_slice(h.as_bytes());
        self.b.get_mut().extend_from_slice(data);
        self
    }
    /// A file with pax extended attributes (SCHILY.xattr.*).
    pub fn file_with_xattr(&mut self, path: &str, content: &[u8], xattr: &str, value: &[u8]) -> &mut Self {
        let key = format!("SCHILY.xattr.{xattr}");
        self.pax_header(&[(key.as_bytes(), value)]);
        self.file(path, 0o644, content)
    }

    /// A PAX extended header with `records` (for the entry appended next).
    pub fn pax_header(&mut self, records: &[(&[u8], &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let len = k.len() + v.len() + 3; // ' ', '=', '\n'
            let mut total = len + 1;
            while total != len + total.to_string().len() {
                total = len + total.to_string().len();
            }
            body.extend_from_slice(total.to_string().as_bytes());
            body.push(b' ');
            body.extend_from_slice(k);
            body.push(b'=');
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let mut p = tar::Header::new_ustar();
        p.set_entry_type(tar::EntryType::XHeader);
        p.set_size(body.len() as u64);
        p.set_mode(0o644);
        p.as_ustar_mut().unwrap().name[..10].copy_from_slice(b"PaxHeaders");
        p.set_cksum();
        self.b.append(&p, &body[..]).unwrap();
        self
    }

    /// An old GNU sparse file (type 'S'): `real_size` bytes of which only the `segments`
    /// (offset, data) are stored, holes elsewhere. Every segment but the last must be whole
    /// 512-byte blocks (as GNU tar writes them); at most 4 segments (no extension blocks).
    pub fn gnu_sparse(&mut self, path: &str, real_size: u64, segments: &[(u64, &[u8])]) -> &mut Self {
        assert!(segments.len() <= 4, "the fixture builder writes the map in the header only");
        let data: Vec<u8> = segments.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        let mut h = self.header(tar::EntryType::GNUSparse, 0o644, data.len() as u64);
        {
            let g = h.as_gnu_mut().unwrap();
            for (i, (off, d)) in segments.iter().enumerate() {
                g.sparse[i].set_offset(*off);
                g.sparse[i].set_length(d.len() as u64);
            }
            g.realsize.copy_from_slice(format!("{real_size:011o}\0").as_bytes());
        }
        self.append(h, path, None, &data)
    }

    /// A sparse file in one of GNU tar's PAX formats ("0.0", "0.1" or "1.0"), written as
    /// GNU tar writes it: the map in PAX records (0.x) or before the data (1.0), the real name
    /// in GNU.sparse.name and a GNUSparseFile.0/ name in the header (0.1, 1.0).
    pub fn pax_sparse(&mut self, version: &str, path: &str, real_size: u64, segments: &[(u64, &[u8])]) -> &mut Self {
        let mut data: Vec<u8> = Vec::new();
        let mut recs: Vec<(String, String)> = Vec::new();
        let (dir, base) = path.rsplit_once('/').map(|(d, b)| (format!("{d}/"), b)).unwrap_or((String::new(), path));
        let sparse_name = format!("{dir}GNUSparseFile.0/{base}");
        let header_name = match version {
            "0.0" => {
                recs.push(("GNU.sparse.size".into(), real_size.to_string()));
                recs.push(("GNU.sparse.numblocks".into(), segments.len().to_string()));
                for (off, d) in segments {
                    recs.push(("GNU.sparse.offset".into(), off.to_string()));
                    recs.push(("GNU.sparse.numbytes".into(), d.len().to_string()));
                }
                path.to_string()
            }
            "0.1" => {
                recs.push(("GNU.sparse.size".into(), real_size.to_string()));
                recs.push(("GNU.sparse.numblocks".into(), segments.len().to_string()));
                let map: Vec<String> =
                    segments.iter().flat_map(|(o, d)| [o.to_string(), d.len().to_string()]).collect();
                recs.push(("GNU.sparse.map".into(), map.join(",")));
                recs.push(("GNU.sparse.name".into(), path.into()));
                sparse_name
            }
            "1.0" => {
                recs.push(("GNU.sparse.major".into(), "1".into()));
                recs.push(("GNU.sparse.minor".into(), "0".into()));
                recs.push(("GNU.sparse.name".into(), path.into()));
                recs.push(("GNU.sparse.realsize".into(), real_size.to_string()));
                let mut map = format!("{}\n", segments.len());
                for (off, d) in segments {
                    map.push_str(&format!("{off}\n{}\n", d.len()));
                }
                data.extend_from_slice(map.as_bytes());
                data.resize(data.len().div_ceil(512) * 512, 0);
                sparse_name
            }
            v => panic!("no GNU sparse format {v}"),
        };
        for (_, d) in segments {
            data.extend_from_slice(d);
        }
        let recs: Vec<(&[u8], &[u8])> = recs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
        self.pax_header(&recs);
        self.file(&header_name, 0o644, &data)
    }

    /// Adds every entry of the directory tree `root` (sorted, deterministic), with the
    /// owners, modes and mtimes found on disk.
    pub fn tree(&mut self, root: &Path) -> io::Result<&mut Self> {
        let mut paths = Vec::new();
        collect(root, root, &mut paths)?;
        paths.sort();
        let mut inodes = std::collections::HashMap::new();
        for rel in paths {
            let full = root.join(&rel);
            let md = fs::symlink_metadata(&full)?;
            let name = rel.to_string_lossy().into_owned();
            let (uid, gid, mtime) = (self.uid, self.gid, self.mtime);
            self.uid = md.uid() as u64;
            self.gid = md.gid() as u64;
            self.mtime = md.mtime() as u64;
            let mode = md.mode() & 0o7777;
            if md.is_dir() {
                self.dir(&format!("{name}/"), mode);
            } else if md.file_type().is_symlink() {
                let t = fs::read_link(&full)?;
                self.symlink(&name, &t.to_string_lossy());
            } else if md.is_file() {
                if md.nlink() > 1 {
                    if let Some(first) = inodes.get(&(md.dev(), md.ino())) {
                        let first: &String = first;
                        let first = first.clone();
                        self.hardlink(&name, &first);
                        (self.uid, self.gid, self.mtime) = (uid, gid, mtime);
                        continue;
                    }
                    inodes.insert((md.dev(), md.ino()), name.clone());
                }
                let data = fs::read(&full)?;
                self.file(&name, mode, &data);
            }
            (self.uid, self.gid, self.mtime) = (uid, gid, mtime);
        }
        Ok(self)
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }

    /// The bytes so far without the end-of-archive blocks (for truncation tests).
    pub fn raw(&mut self) -> &mut Vec<u8> {
        self.b.get_mut()
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        out.push(p.strip_prefix(root).unwrap().to_path_buf());
        if e.file_type()?.is_dir() {
            collect(root, &p, out)?;
        }
    }
    Ok(())
}

/// The busybox rootfs (see `rootfs`) as one layer tarball, built in a directory of its own
/// under `scratch` (tests running at once may each build one there).
pub fn busybox_layer(scratch: &Path) -> io::Result<Vec<u8>> {
    static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = scratch.join(format!("busybox-rootfs-{n}"));
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    crate::rootfs::build_busybox_rootfs(&dir)?;
    let mut b = LayerBuilder::new();
    b.tree(&dir)?;
    fs::remove_dir_all(&dir)?;
    Ok(b.finish())
}

/// A pseudo-random but compressible (text-like) stream, deterministic for a seed, for the
/// benchmark's generated layers.
pub fn filler(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "berth",
        "layer",
        "image",
        "overlay",
        "container",
        "runtime",
        "digest",
        "manifest",
        "registry",
        "blob",
        "snapshot",
        "kernel",
        "namespace",
        "cgroup",
        "mount",
        "tar",
        "gzip",
        "zstd",
        "chain",
        "config",
        "the",
        "of",
        "and",
        "a",
        "to",
        "in",
        "is",
        "for",
        "on",
        "with",
        "\n",
        "0x1f8b",
        "42",
        "1024",
        "/usr/lib",
    ];
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let w = WORDS[(s % WORDS.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        if s & 0x30 == 0 {
            // some incompressible bytes too
            out.extend_from_slice(&s.to_le_bytes());
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}

/// A layer of the image being assembled: the tar and how to compress it.
pub struct Layer {
    pub tar: Vec<u8>,
    pub compression: Compression,
}

/// An OCI image layout directory being written (`oci-layout`, `index.json`, `blobs/sha256`).
pub struct OciLayout {
    pub dir: PathBuf,
    index: Vec<Value>,
}

/// What `OciLayout::image` wrote.
#[derive(Clone, Debug)]
pub struct ImageInfo {
    pub manifest: Value,
    pub manifest_descriptor: Value,
    pub config_digest: String,
    pub diff_ids: Vec<String>,
}

impl OciLayout {
    pub fn create(dir: &Path) -> io::Result<OciLayout> {
        fs::create_dir_all(dir.join("blobs/sha256"))?;
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(OciLayout { dir: dir.to_path_buf(), index: Vec::new() })
    }

    pub fn add_blob(&self, data: &[u8]) -> io::Result<String> {
        let hex = sha256_hex(data);
        fs::write(self.dir.join("blobs/sha256").join(&hex), data)?;
        Ok(format!("sha256:{hex}"))
    }

    /// Writes an image (layers, config, manifest); returns its manifest descriptor.
    /// `config` is merged into the image config's `config` section (Cmd, Env, User, ...).
    pub fn image(&self, layers: &[Layer], config: Value, arch: &str) -> io::Result<ImageInfo> {
        self.image_with_diff_ids(layers, config, arch, None)
    }

    /// Like `image`, with the config's DiffIDs replaced (to make inconsistent images).
    pub fn image_with_diff_ids(
        &self,
        layers: &[Layer],
        config: Value,
        arch: &str,
        diff_ids_override: Option<Vec<String>>,
    ) -> io::Result<ImageInfo> {
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        for l in layers {
            diff_ids.push(format!("sha256:{}", sha256_hex(&l.tar)));
            let blob = compress(&l.tar, l.compression);
            let digest = self.add_blob(&blob)?;
            layer_descs.push(json!({"mediaType": l.compression.media_type(), "digest": digest, "size": blob.len()}));
        }
        let cfg = json!({
            "created": "2000-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids_override.clone().unwrap_or_else(|| diff_ids.clone())},
            "history": layers.iter().map(|_| json!({"created": "2000-01-01T00:00:00Z", "created_by": "berth-testkit"})).collect::<Vec<_>>(),
        });
        let cfg_bytes = serde_json::to_vec(&cfg)?;
        let cfg_digest = self.add_blob(&cfg_bytes)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_bytes.len()},
            "layers": layer_descs,
        });
        let mbytes = serde_json::to_vec(&manifest)?;
        let mdigest = self.add_blob(&mbytes)?;
        Ok(ImageInfo {
            manifest,
            manifest_descriptor: json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": mdigest,
                "size": mbytes.len(),
                "platform": {"architecture": arch, "os": "linux"},
            }),
            config_digest: cfg_digest,
            diff_ids: diff_ids.clone(),
        })
    }

    /// Writes an image index over `manifests`; returns its descriptor.
    pub fn index(&self, manifests: &[Value]) -> io::Result<Value> {
        let idx = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let bytes = serde_json::to_vec(&idx)?;
        let digest = self.add_blob(&bytes)?;
        Ok(json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": bytes.len()}))
    }

    /// Lists `descriptor` in index.json under the reference name `tag`.
    pub fn tag(&mut self, tag: &str, descriptor: &Value) -> io::Result<()> {
        let mut d = descriptor.clone();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.index.retain(|e| e["annotations"]["org.opencontainers.image.ref.name"] != tag);
        self.index.push(d);
        let idx = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": self.index});
        fs::write(self.dir.join("index.json"), serde_json::to_vec(&idx)?)
    }
}

/// The test images every registry test uses, in one OCI layout (tags in parentheses):
/// - `multi`: three layers: the busybox rootfs with extra files, hardlinks and symlinks;
///   whiteouts of a file and a directory and an opaque directory; a zstd layer; and a full
///   container config (Entrypoint, Cmd, Env, User, WorkingDir, ports, volumes, labels, signal)
/// - `simple`: the busybox rootfs alone (gzip), for schema2 conversion and round trips
/// - `multiarch`: an index of `simple` (linux/amd64) and a small linux/arm64 image
/// - `badiff`: `simple` with a config whose DiffID does not match its layer
/// - `hostile`: `simple` plus a layer with a path-traversal entry
pub struct Fixtures {
    pub layout: PathBuf,
    pub multi: ImageInfo,
    pub simple: ImageInfo,
    pub arm: ImageInfo,
    pub index: Value,
    pub badiff: ImageInfo,
    pub hostile: ImageInfo,
    /// The hostile layer's blob digest.
    pub hostile_layer: String,
}

pub fn multi_layers(scratch: &Path) -> io::Result<Vec<Layer>> {
    let mut l1 = LayerBuilder::new();
    let busybox = busybox_layer(scratch)?;
    // The busybox entries, then our own (appending to a finished tar: strip its end blocks).
    let mut b1 = busybox;
    let end = b1.len() - 1024;
    b1.truncate(end);
    l1.dir("var/cache/", 0o755)
        .file("var/cache/a", 0o644, b"a\n")
        .file("var/cache/b", 0o644, b"b\n")
        .dir("opt/", 0o755)
        .dir("opt/old/", 0o755)
        .file("opt/old/file", 0o644, b"old\n")
        .dir("data/", 0o755)
        .file("data/hard1", 0o600, b"linked content\n")
        .hardlink("data/hard2", "data/hard1")
        .symlink("data/link", "hard1")
        .file("etc/shadowed", 0o644, b"removed by layer 2\n");
    let mut extra = l1.finish();
    b1.append(&mut extra);
    let mut l2 = LayerBuilder::new();
    l2.whiteout("etc/shadowed").opaque("var/cache").file("var/cache/c", 0o644, b"c\n").whiteout("opt/old").file(
        "etc/layer2",
        0o644,
        b"layer 2\n",
    );
    let mut l3 = LayerBuilder::new();
    l3.dir("zstd/", 0o755).file("zstd/hello", 0o644, b"hello from a zstd layer\n");
    Ok(vec![
        Layer { tar: b1, compression: Compression::Gzip },
        Layer { tar: l2.finish(), compression: Compression::Gzip },
        Layer { tar: l3.finish(), compression: Compression::Zstd },
    ])
}

pub fn multi_config() -> Value {
    json!({
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo hello"],
        "Env": ["PATH=/usr/bin:/bin", "GREETING=hi"],
        "User": "user",
        "WorkingDir": "/home/user",
        "ExposedPorts": {"8080/tcp": {}},
        "Volumes": {"/data": {}},
        "Labels": {"org.example.test": "berth"},
        "StopSignal": "SIGQUIT",
    })
}

pub fn build_fixtures(dir: &Path) -> io::Result<Fixtures> {
    let mut layout = OciLayout::create(&dir.join("layout"))?;
    let multi = layout.image(&multi_layers(dir)?, multi_config(), "amd64")?;
    layout.tag("multi", &multi.manifest_descriptor)?;
    let bb = busybox_layer(dir)?;
    let simple = layout.image(
        &[Layer { tar: bb.clone(), compression: Compression::Gzip }],
        json!({"Cmd": ["/bin/sh"]}),
        "amd64",
    )?;
    layout.tag("simple", &simple.manifest_descriptor)?;
    let mut a = LayerBuilder::new();
    a.file("arch", 0o644, b"arm64\n");
    let arm = layout.image(
        &[Layer { tar: a.finish(), compression: Compression::Gzip }],
        json!({"Cmd": ["/bin/sh"]}),
        "arm64",
    )?;
    let mut arm_desc = arm.manifest_descriptor.clone();
    arm_desc["platform"]["variant"] = json!("v8");
    let index = layout.index(&[simple.manifest_descriptor.clone(), arm_desc])?;
    layout.tag("multiarch", &index)?;
    let badiff = layout.image_with_diff_ids(
        &[Layer { tar: bb.clone(), compression: Compression::Gzip }],
        json!({"Cmd": ["/bin/sh"]}),
        "amd64",
        Some(vec![format!("sha256:{}", sha256_hex(b"not the layer"))]),
    )?;
    layout.tag("badiff", &badiff.manifest_descriptor)?;
    let mut h = LayerBuilder::new();
    h.file("innocent", 0o644, b"x").file("../../../berth-hostile-escape", 0o644, b"escaped");
    let htar = h.finish();
    let hostile_layer = format!("sha256:{}", sha256_hex(&compress(&htar, Compression::Gzip)));
    let hostile = layout.image(
        &[Layer { tar: bb, compression: Compression::Gzip }, Layer { tar: htar, compression: Compression::Gzip }],
        json!({"Cmd": ["/bin/sh"]}),
        "amd64",
    )?;
    layout.tag("hostile", &hostile.manifest_descriptor)?;
    Ok(Fixtures { layout: layout.dir.clone(), multi, simple, arm, index, badiff, hostile, hostile_layer })
}
