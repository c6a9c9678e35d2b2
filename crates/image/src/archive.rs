//! Image archives: `berth save` / `berth load` in the docker-archive format (`docker save`:
//! manifest.json, `<config>.json`, `<diffid>/layer.tar`) and as OCI image layouts (a
//! directory or a tar of one), and `berth import` of a root filesystem tarball as a
//! one-layer image.
//!
//! Loading streams the archive once: blobs go straight into the content store (verified
//! against their names in an OCI layout, hashed for docker-archive layers, image configs
//! too); only the archive's own documents (manifest.json, index.json, oci-layout,
//! repositories) are kept in memory.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use berth_storage::digest::HashingReader;
use berth_storage::tarstream::TarStream;
use berth_storage::{Compression, Digest};
use serde_json::{json, Value};

use crate::error::{bail, Context, Error, Result};
use crate::manifest::{self, Document, Platform};
use crate::pull::{fetch_layers, Progress};
use crate::store::{Image, Store};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    DockerArchive,
    OciArchive,
    OciDir,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format> {
        match s {
            "docker-archive" | "docker" => Ok(Format::DockerArchive),
            "oci-archive" | "oci" => Ok(Format::OciArchive),
            "oci-dir" => Ok(Format::OciDir),
            o => bail!("unknown archive format {o:?} (docker-archive, oci-archive, oci-dir)"),
        }
    }
}

const MAX_JSON: u64 = 16 << 20;

/// The documents of an archive kept in memory while it is read (at most `MAX_JSON` bytes
/// each); everything else, image configs included, goes to the content store.
const TOP_DOCUMENTS: [&str; 4] = ["manifest.json", "index.json", "oci-layout", "repositories"];

fn header(path: &str, size: u64, mode: u32, kind: tar::EntryType) -> Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_path(path).ctx(format!("archive entry {path}"))?;
    h.set_cksum();
    Ok(h)
}

/// Streams exactly `size` bytes from `r` or fails (so a tar entry is never short or long).
struct Exact<R> {
    r: R,
    left: u64,
    what: String,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            if self.r.read(&mut probe)? != 0 {
                return Err(io::Error::other(format!("{}: longer than recorded", self.what)));
            }
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other(format!("{}: shorter than recorded", self.what)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Saves images (by name or ID) to `out` (a file, `-` for stdout, or a directory for
/// oci-dir).
pub fn save(store: &Store, names: &[String], format: Format, out: &Path) -> Result<()> {
    let _lock = store.lock_shared()?;
    let mut images: Vec<(Image, Vec<String>)> = Vec::new();
    for n in names {
        let img = store.resolve(n)?;
        // A name given by the user is the tag written; an ID saves all the image's tags.
        let r = store.config.resolve(n).ok().and_then(|r| r.tagged()).filter(|t| img.tags.contains(t));
        let tags = match r {
            Some(t) => vec![t],
            None => img.tags.clone(),
        };
        images.push((img, tags));
    }
    if format == Format::OciDir {
        return save_oci_dir(store, &images, out);
    }
    let write = |w: &mut dyn Write| -> Result<()> {
        let mut b = tar::Builder::new(w);
        match format {
            Format::DockerArchive => write_docker(store, &images, &mut b)?,
            Format::OciArchive => write_oci(store, &images, &mut b)?,
            Format::OciDir => unreachable!(),
        }
        b.into_inner().ctx("finish archive")?.flush().ctx("write archive")
    };
    if out == Path::new("-") {
        return write(&mut io::BufWriter::new(io::stdout().lock()));
    }
    // A temporary file beside the target, durable before it is renamed into place.
    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}",
        out.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        berth_storage::unique_suffix()
    ));
    let f = File::create(&tmp).ctx(format!("create {}", tmp.display()))?;
    let result = write(&mut io::BufWriter::with_capacity(1 << 20, &f))
        .and_then(|_| f.sync_all().ctx(format!("fsync {}", tmp.display())))
        .and_then(|_| fs::rename(&tmp, out).ctx(format!("write {}", out.display())))
        .and_then(|_| fsync_parent(out));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn fsync_parent(p: &Path) -> Result<()> {
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    crate::content::fsync_dir(dir)
}

/// Writes `data` to `target` through a uniquely named temporary file beside it (concurrent
/// saves into one directory do not share it), fsynced before the rename.
fn write_durably(target: &Path, data: &mut dyn Read) -> Result<()> {
    let tmp = target.with_file_name(format!(
        ".{}.tmp-{}",
        target.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        berth_storage::unique_suffix()
    ));
    let result = (|| {
        let mut f = File::create(&tmp).ctx(format!("create {}", tmp.display()))?;
        io::copy(data, &mut f).ctx(format!("write {}", tmp.display()))?;
        f.sync_all().ctx(format!("fsync {}", tmp.display()))?;
        fs::rename(&tmp, target).ctx(format!("write {}", target.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn add_bytes<W: Write>(b: &mut tar::Builder<W>, path: &str, data: &[u8]) -> Result<()> {
    let h = header(path, data.len() as u64, 0o644, tar::EntryType::Regular)?;
    b.append(&h, data).ctx(format!("archive entry {path}"))
}

fn add_blob<W: Write>(store: &Store, b: &mut tar::Builder<W>, path: &str, d: &Digest) -> Result<()> {
    let size = store.content.size(d)?;
    let f = store.content.open_blob(d)?;
    let h = header(path, size, 0o644, tar::EntryType::Regular)?;
    b.append(&h, Exact { r: BufReader::with_capacity(1 << 20, f), left: size, what: format!("blob {d}") })
        .ctx(format!("archive entry {path}"))
}

fn write_docker<W: Write>(store: &Store, images: &[(Image, Vec<String>)], b: &mut tar::Builder<W>) -> Result<()> {
    let mut manifest = Vec::new();
    let mut written = std::collections::HashSet::new();
    for (img, tags) in images {
        let (cfg_bytes, cfg) = store.image_config(img)?;
        let cfg_name = format!("{}.json", img.id().hex());
        if written.insert(cfg_name.clone()) {
            add_bytes(b, &cfg_name, &cfg_bytes)?;
        }
        let mut layer_paths = Vec::new();
        for (l, diff) in img.layers.iter().zip(&cfg.rootfs.diff_ids) {
            let diff = Digest::parse(diff)?;
            let path = format!("{}/layer.tar", diff.hex());
            layer_paths.push(path.clone());
            if !written.insert(path.clone()) {
                continue;
            }
            let blob = Digest::parse(&l.blob_digest)?;
            let comp = Compression::from_media_type(&l.media_type)?;
            let size = match store.db().layer(&l.chain_id)? {
                Some((t, _)) if t > 0 => t as u64,
                _ => {
                    let mut r = comp.decoder(BufReader::new(store.content.open_blob(&blob)?))?;
                    io::copy(&mut r, &mut io::sink()).ctx(format!("layer {blob}"))?
                }
            };
            let dec = comp.decoder(BufReader::with_capacity(1 << 20, store.content.open_blob(&blob)?))?;
            let mut hashing = HashingReader::new(Exact { r: dec, left: size, what: format!("layer {blob}") });
            let h = header(&path, size, 0o644, tar::EntryType::Regular)?;
            b.append(&h, &mut hashing).ctx(format!("archive entry {path}"))?;
            if hashing.hasher.digest() != diff {
                bail!(DataLoss, "layer {blob}: the stored blob does not match its DiffID {diff} any more");
            }
        }
        manifest.push(json!({"Config": cfg_name, "RepoTags": tags, "Layers": layer_paths}));
    }
    add_bytes(b, "manifest.json", &serde_json::to_vec(&manifest).unwrap())
}

fn oci_index(store: &Store, images: &[(Image, Vec<String>)]) -> Result<Vec<u8>> {
    let mut manifests = Vec::new();
    for (img, tags) in images {
        let size = store.content.size(&img.manifest_digest())?;
        let base = json!({"mediaType": img.row.media_type, "digest": img.row.manifest_digest, "size": size});
        if tags.is_empty() {
            manifests.push(base.clone());
        }
        for t in tags {
            let mut d = base.clone();
            d["annotations"] = json!({"org.opencontainers.image.ref.name": t, "io.containerd.image.name": t});
            manifests.push(d);
        }
    }
    Ok(serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": manifests}))
        .unwrap())
}

fn image_blobs(img: &Image) -> Result<Vec<Digest>> {
    let mut v = vec![img.manifest_digest(), img.id()];
    for l in &img.layers {
        v.push(Digest::parse(&l.blob_digest)?);
    }
    Ok(v)
}

fn write_oci<W: Write>(store: &Store, images: &[(Image, Vec<String>)], b: &mut tar::Builder<W>) -> Result<()> {
    add_bytes(b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut seen = std::collections::HashSet::new();
    for (img, _) in images {
        for d in image_blobs(img)? {
            if seen.insert(d.clone()) {
                add_blob(store, b, &format!("blobs/sha256/{}", d.hex()), &d)?;
            }
        }
    }
    add_bytes(b, "index.json", &oci_index(store, images)?)
}

fn save_oci_dir(store: &Store, images: &[(Image, Vec<String>)], out: &Path) -> Result<()> {
    let blobs = out.join("blobs/sha256");
    fs::create_dir_all(&blobs).ctx(format!("create {}", out.display()))?;
    write_durably(&out.join("oci-layout"), &mut &br#"{"imageLayoutVersion":"1.0.0"}"#[..])?;
    for (img, _) in images {
        for d in image_blobs(img)? {
            let target = blobs.join(d.hex());
            if !target.exists() {
                write_durably(&target, &mut store.content.open_blob(&d)?)
                    .map_err(|e| e.context(format!("blob {d}")))?;
            }
        }
    }
    crate::content::fsync_dir(&blobs)?;
    // index.json last: the layout is complete once it names the images.
    write_durably(&out.join("index.json"), &mut &oci_index(store, images)?[..])?;
    crate::content::fsync_dir(out)
}

/// What an archive held, read in one pass.
#[derive(Default)]
struct Scanned {
    /// Small JSON documents by path.
    docs: HashMap<String, Vec<u8>>,
    /// Other files by path: the digest they were stored under.
    files: HashMap<String, (Digest, u64)>,
    /// Symlinks and hardlinks: path → target path.
    links: HashMap<String, String>,
}

fn clean(p: &str) -> String {
    p.trim_start_matches("./").trim_start_matches('/').to_string()
}

impl Scanned {
    fn resolve(&self, p: &str) -> Option<(Digest, u64)> {
        let mut p = clean(p);
        for _ in 0..8 {
            if let Some(f) = self.files.get(&p) {
                return Some(f.clone());
            }
            if let Some(hex) = p.strip_prefix("blobs/sha256/") {
                if let Ok(d) = Digest::parse(&format!("sha256:{hex}")) {
                    return Some((d, 0));
                }
            }
            let t = self.links.get(&p)?;
            let base = Path::new(&p).parent().map(|x| x.to_string_lossy().into_owned()).unwrap_or_default();
            p = if t.starts_with('/') || base.is_empty() { clean(t) } else { clean(&format!("{base}/{t}")) };
            // collapse "a/../b"
            let mut parts: Vec<&str> = Vec::new();
            for c in p.split('/') {
                match c {
                    ".." => {
                        parts.pop();
                    }
                    "." | "" => {}
                    c => parts.push(c),
                }
            }
            p = parts.join("/");
        }
        None
    }
}

fn scan_tar(store: &Store, r: impl Read, origin: &str) -> Result<Scanned> {
    let mut s = Scanned::default();
    let mut tar = TarStream::new(r);
    while let Some(h) = tar.next_entry().ctx(format!("{origin}: reading the archive"))? {
        let path = clean(&String::from_utf8_lossy(&h.path));
        let kind = h.kind;
        let what = format!("{origin}: entry {path:?}");
        match kind {
            tar::EntryType::Directory => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let t = h.link.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                let t = if kind == tar::EntryType::Link { format!("/{}", clean(&t)) } else { t };
                s.links.insert(path, t);
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = h.size;
                if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                    let d = Digest::parse(&format!("sha256:{hex}")).map_err(|e| Error::msg(format!("{what}: {e}")))?;
                    if store.content.contains(&d) {
                        io::copy(&mut tar.data(), &mut io::sink()).ctx(&what)?;
                    } else {
                        let mut w = store.content.writer()?;
                        io::copy(&mut tar.data(), &mut w).ctx(&what)?;
                        w.commit(&store.content, Some(&d)).map_err(|e| e.context(&what))?;
                    }
                    s.files.insert(path, (d, size));
                } else if TOP_DOCUMENTS.contains(&path.as_str()) && size <= MAX_JSON {
                    let mut v = Vec::new();
                    tar.data().read_to_end(&mut v).ctx(&what)?;
                    s.docs.insert(path, v);
                } else {
                    let mut w = store.content.writer()?;
                    io::copy(&mut tar.data(), &mut w).ctx(&what)?;
                    let n = w.len();
                    let d = w.commit(&store.content, None)?;
                    s.files.insert(path, (d, n));
                }
            }
            other => bail!("{what}: unexpected entry type {other:?} in an image archive"),
        }
    }
    Ok(s)
}

fn scan_dir(store: &Store, dir: &Path) -> Result<Scanned> {
    let mut s = Scanned::default();
    for name in ["index.json", "oci-layout"] {
        if let Ok(b) = fs::read(dir.join(name)) {
            s.docs.insert(name.to_string(), b);
        }
    }
    let blobs = dir.join("blobs/sha256");
    for e in fs::read_dir(&blobs).ctx(format!("{}: not an OCI layout", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let what = format!("{}: blob {name}", dir.display());
        let d = Digest::parse(&format!("sha256:{name}")).map_err(|er| Error::msg(format!("{what}: {er}")))?;
        if !store.content.contains(&d) {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(e.path()).ctx(&what)?;
            let mut w = store.content.writer()?;
            io::copy(&mut f, &mut w).ctx(&what)?;
            w.commit(&store.content, Some(&d)).map_err(|er| er.context(&what))?;
        }
        s.files.insert(format!("blobs/sha256/{name}"), (d, 0));
    }
    Ok(s)
}

/// Loads every image of an archive (docker-archive or OCI layout tar, optionally gzip/zstd
/// compressed, `-` for stdin) or OCI layout directory. Returns the names (or IDs) loaded.
pub fn load(store: &Store, input: &Path, progress: &dyn Progress) -> Result<Vec<String>> {
    let _lock = store.lock_shared()?;
    let origin = input.display().to_string();
    let scanned = if input.is_dir() {
        scan_dir(store, input)?
    } else {
        let raw: Box<dyn Read> = if input == Path::new("-") {
            Box::new(io::stdin().lock())
        } else {
            Box::new(File::open(input).ctx(format!("open {origin}"))?)
        };
        let mut br = BufReader::with_capacity(1 << 20, raw);
        let magic = br.fill_buf().ctx(&origin)?.to_vec();
        let r = Compression::detect(&magic).decoder(br)?;
        scan_tar(store, r, &origin)?
    };
    if let Some(idx) = scanned.docs.get("index.json") {
        load_oci(store, idx, &origin, progress)
    } else if let Some(m) = scanned.docs.get("manifest.json") {
        load_docker(store, &scanned, m, &origin, progress)
    } else {
        bail!("{origin}: neither an OCI layout (index.json) nor a docker archive (manifest.json)")
    }
}

fn load_oci(store: &Store, idx: &[u8], origin: &str, progress: &dyn Progress) -> Result<Vec<String>> {
    let (doc, _) = manifest::parse_document(idx, Some(manifest::OCI_INDEX), &format!("{origin}: index.json"))?;
    let Document::Index(index) = doc else { bail!("{origin}: index.json is not an image index") };
    let mut loaded = Vec::new();
    for (i, desc) in index.manifests.iter().enumerate() {
        let what = format!("{origin}: index.json manifests[{i}]");
        let mut d = desc.digest(&what)?;
        let mut bytes = store.content.read(&d).map_err(|e| e.context(&what))?;
        let mut mt = desc.media_type.clone();
        let mut index_digest = None;
        let (mut doc, mut media) = manifest::parse_document(&bytes, Some(&mt), &what)?;
        if let Document::Index(inner) = &doc {
            // Nested indexes are blobs of the layout too (read back verified).
            let mut fetch = |_: &manifest::Descriptor, n: &Digest| store.content.read(n);
            let sel = manifest::select_manifest(inner, &d, &Platform::host(), &what, &mut fetch)?;
            index_digest = Some(d.clone());
            d = sel.digest(&what)?;
            bytes = store.content.read(&d).map_err(|e| e.context(&what))?;
            mt = sel.media_type.clone();
            (doc, media) = manifest::parse_document(&bytes, Some(&mt), &what)?;
        }
        let Document::Manifest(m) = doc else {
            bail!("{what}: {d} is listed as an image manifest, but it is an index")
        };
        let cfg_d = m.config.digest(&what)?;
        let cfg_bytes = store.content.read(&cfg_d).map_err(|e| e.context(&what))?;
        let cfg = manifest::parse_config(&cfg_bytes, &format!("{what}: config"))?;
        let layers = fetch_layers(store, None, &m.layers, &cfg, progress).map_err(|e| e.context(&what))?;
        let name = desc
            .annotations
            .as_ref()
            .and_then(|a| a.get("io.containerd.image.name").or_else(|| a.get("org.opencontainers.image.ref.name")))
            .and_then(|n| {
                store.config.resolve(n).ok().filter(|_| n.contains('/') || n.contains(':') || n.contains('.'))
            })
            .and_then(|r| r.tagged());
        store.register(&bytes, &media, &cfg, &layers, name.as_deref(), index_digest.as_ref(), None)?;
        crate::events::emit(&store.root, "image", "load", cfg_d.as_str(), &[("name", name.as_deref().unwrap_or(""))]);
        loaded.push(name.unwrap_or_else(|| cfg_d.to_string()));
    }
    Ok(loaded)
}

fn load_docker(store: &Store, s: &Scanned, m: &[u8], origin: &str, progress: &dyn Progress) -> Result<Vec<String>> {
    let entries: Vec<Value> = serde_json::from_slice(m).ctx(format!("{origin}: manifest.json"))?;
    let mut loaded = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let what = format!("{origin}: manifest.json[{i}]");
        let cfg_path =
            e.get("Config").and_then(Value::as_str).ok_or_else(|| Error::msg(format!("{what}: no Config")))?;
        let cfg_bytes = match s.resolve(cfg_path) {
            Some((d, _)) => store.content.read(&d).map_err(|e| e.context(format!("{what}.Config")))?,
            None => bail!("{what}.Config: {cfg_path:?} is not in the archive"),
        };
        let cfg_d = store.content.write_blob(&cfg_bytes, None)?;
        let cfg = manifest::parse_config(&cfg_bytes, &format!("{what}: config"))?;
        let paths =
            e.get("Layers").and_then(Value::as_array).ok_or_else(|| Error::msg(format!("{what}: no Layers")))?;
        if paths.len() > manifest::MAX_LAYERS {
            bail!("{what}.Layers: {} layers, more than the {} berth supports", paths.len(), manifest::MAX_LAYERS);
        }
        let mut descs = Vec::new();
        for (j, p) in paths.iter().enumerate() {
            let p = p.as_str().ok_or_else(|| Error::msg(format!("{what}.Layers[{j}]: not a string")))?;
            let (d, _) =
                s.resolve(p).ok_or_else(|| Error::msg(format!("{what}.Layers[{j}]: {p:?} is not in the archive")))?;
            let size = store.content.size(&d)?;
            let mut magic = [0u8; 4];
            let n = store.content.open_blob(&d)?.read(&mut magic)?;
            let comp = Compression::detect(&magic[..n]);
            descs.push(manifest::Descriptor {
                media_type: comp.oci_media_type().into(),
                digest: d.to_string(),
                size: size as i64,
                platform: None,
                annotations: None,
                urls: None,
            });
        }
        let layers = fetch_layers(store, None, &descs, &cfg, progress).map_err(|e| e.context(&what))?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_MANIFEST,
            "config": {"mediaType": manifest::OCI_CONFIG, "digest": cfg_d.to_string(), "size": cfg_bytes.len()},
            "layers": descs,
        });
        let mbytes = serde_json::to_vec(&manifest).unwrap();
        store.content.write_blob(&mbytes, None)?;
        let tags: Vec<String> = e
            .get("RepoTags")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let mut names = Vec::new();
        for t in &tags {
            names.push(
                store
                    .config
                    .resolve(t)
                    .map_err(|er| er.context(format!("{what}.RepoTags")))?
                    .tagged()
                    .unwrap_or_default(),
            );
        }
        let md = store.register(
            &mbytes,
            manifest::OCI_MANIFEST,
            &cfg,
            &layers,
            names.first().map(String::as_str),
            None,
            None,
        )?;
        if names.len() > 1 {
            let img = store.image_by_manifest(md.as_str())?.ok_or_else(|| Error::msg("loaded image vanished"))?;
            for n in &names[1..] {
                store.tag(&img, n)?;
            }
        }
        crate::events::emit(&store.root, "image", "load", cfg_d.as_str(), &[("name", &names.join(","))]);
        if names.is_empty() {
            loaded.push(cfg_d.to_string());
        }
        loaded.extend(names);
    }
    Ok(loaded)
}

/// RFC 3339 UTC timestamp of now.
pub fn now_rfc3339() -> String {
    berth_time::format_rfc3339_seconds(crate::db::now())
}

/// Imports a root filesystem tarball (plain, gzip or zstd; `-` for stdin) as a one-layer
/// image, stored gzip-compressed, tagged `name` if given.
pub fn import(store: &Store, input: &Path, name: Option<&str>) -> Result<Digest> {
    let _lock = store.lock_shared()?;
    let origin = input.display().to_string();
    let tag = match name {
        Some(n) => Some(store.config.resolve(n)?.tagged().ok_or_else(|| Error::msg(format!("{n}: a tag is needed")))?),
        None => None,
    };
    let raw: Box<dyn Read> = if input == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(input).ctx(format!("open {origin}"))?)
    };
    let mut br = BufReader::with_capacity(1 << 20, raw);
    let magic = br.fill_buf().ctx(&origin)?.to_vec();
    let mut tar_reader = HashingReader::new(Compression::detect(&magic).decoder(br)?);
    let w = store.content.writer()?;
    let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
    io::copy(&mut tar_reader, &mut gz).ctx(format!("import {origin}"))?;
    let w = gz.finish().ctx(format!("import {origin}"))?;
    let size = w.len();
    let blob = w.commit(&store.content, None)?;
    let diff_id = tar_reader.hasher.digest();
    let created = now_rfc3339();
    let host = Platform::host();
    let cfg_json = json!({
        "created": created,
        "architecture": host.architecture,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [{"created": created, "created_by": format!("berth import {origin}")}],
    });
    let cfg_bytes = serde_json::to_vec(&cfg_json).unwrap();
    let cfg_d = store.content.write_blob(&cfg_bytes, None)?;
    let cfg = manifest::parse_config(&cfg_bytes, "imported config")?;
    let desc = manifest::Descriptor {
        media_type: Compression::Gzip.oci_media_type().into(),
        digest: blob.to_string(),
        size: size as i64,
        platform: None,
        annotations: None,
        urls: None,
    };
    let layers = fetch_layers(store, None, std::slice::from_ref(&desc), &cfg, &crate::pull::NoProgress)
        .map_err(|e| e.context(format!("import {origin}")))?;
    let mbytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": manifest::OCI_CONFIG, "digest": cfg_d.to_string(), "size": cfg_bytes.len()},
        "layers": [desc],
    }))
    .unwrap();
    store.content.write_blob(&mbytes, None)?;
    store.register(&mbytes, manifest::OCI_MANIFEST, &cfg, &layers, tag.as_deref(), None, None)?;
    crate::events::emit(&store.root, "image", "import", cfg_d.as_str(), &[("name", tag.as_deref().unwrap_or(""))]);
    Ok(cfg_d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `header`, then `body` bytes of 'a' (generated), counting what is read.
    struct Stream {
        header: Vec<u8>,
        body: u64,
        pos: u64,
    }

    impl Read for Stream {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let total = self.header.len() as u64 + self.body;
            let n = buf.len().min((total - self.pos) as usize);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                let at = self.pos as usize + i;
                *b = if at < self.header.len() { self.header[at] } else { b'a' };
            }
            self.pos += n as u64;
            Ok(n)
        }
    }

    fn store(dir: &Path) -> Store {
        Store::open(&dir.join("root"), crate::Config::default()).unwrap()
    }

    #[test]
    fn load_refuses_huge_extension_headers_without_reading_them() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(64 << 20);
        h.as_gnu_mut().unwrap().name[..15].copy_from_slice(b"PaxHeaders/big1");
        h.set_cksum();
        let mut r = Stream { header: h.as_bytes().to_vec(), body: 64 << 20, pos: 0 };
        let err = scan_tar(&store, &mut r, "img.tar").err().expect("accepted").to_string();
        assert!(err.contains("img.tar") && err.contains("PaxHeaders/big1"), "{err}");
        assert!(err.contains("over the 1048576-byte limit"), "{err}");
        assert!(r.pos <= 1 << 20, "{} bytes read", r.pos);
    }

    #[test]
    fn load_keeps_only_the_archive_documents_in_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path());
        let mut b = tar::Builder::new(Vec::new());
        let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cfg_name = format!("{}.json", Digest::of(cfg).hex());
        let mut files: Vec<(String, Vec<u8>)> = vec![
            ("manifest.json".into(), format!(r#"[{{"Config":"{cfg_name}","RepoTags":[],"Layers":[]}}]"#).into_bytes()),
            (cfg_name.clone(), cfg.to_vec()),
        ];
        for i in 0..50 {
            files.push((format!("extra/{i}.json"), vec![b' '; 100_000]));
        }
        for (p, data) in &files {
            b.append(&header(p, data.len() as u64, 0o644, tar::EntryType::Regular).unwrap(), &data[..]).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let s = scan_tar(&store, &bytes[..], "img.tar").unwrap();
        assert_eq!(s.docs.keys().collect::<Vec<_>>(), vec!["manifest.json"]);
        assert_eq!(s.files.len(), 51, "the config and the other JSON files are stored as blobs");
        let loaded = load_docker(&store, &s, &s.docs["manifest.json"], "img.tar", &crate::pull::NoProgress).unwrap();
        assert_eq!(loaded, vec![Digest::of(cfg).to_string()]);
    }

    #[test]
    fn docker_archive_layer_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path());
        let layers: Vec<String> = (0..501).map(|i| format!("{i}/layer.tar")).collect();
        let m = serde_json::to_vec(&json!([{"Config": "c.json", "RepoTags": [], "Layers": layers}])).unwrap();
        let mut s = Scanned::default();
        let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let d = store.content.write_blob(cfg, None).unwrap();
        s.files.insert("c.json".into(), (d, cfg.len() as u64));
        let err = load_docker(&store, &s, &m, "img.tar", &crate::pull::NoProgress).unwrap_err().to_string();
        assert!(err.contains("img.tar: manifest.json[0].Layers: 501 layers, more than the 500"), "{err}");
    }
}
