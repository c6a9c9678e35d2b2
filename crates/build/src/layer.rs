//! A build step's filesystem change as a layer of the store, and a build state as an image:
//! the step's upper directory written as a compressed OCI layer into the content store and
//! unpacked under its chain ID, then the config and manifest written and the image
//! registered (untagged for a step, tagged for the result).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use berth_image::manifest;
use berth_image::store::{NewLayer, Store};
use berth_storage::{Compression, Digest, SizeLimit};
use berth_sys::Error;
use serde_json::{json, Value};

/// The image format a build writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Oci,
    /// Docker schema2, which keeps HEALTHCHECK, ONBUILD and SHELL as docker does.
    Docker,
}

impl Format {
    fn manifest_type(self) -> &'static str {
        match self {
            Format::Oci => manifest::OCI_MANIFEST,
            Format::Docker => manifest::DOCKER_MANIFEST,
        }
    }

    fn config_type(self) -> &'static str {
        match self {
            Format::Oci => manifest::OCI_CONFIG,
            Format::Docker => manifest::DOCKER_CONFIG,
        }
    }

    fn layer_type(self, c: Compression) -> &'static str {
        match (self, c) {
            (Format::Docker, Compression::None) => "application/vnd.docker.image.rootfs.diff.tar",
            (Format::Docker, _) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            (Format::Oci, c) => c.oci_media_type(),
        }
    }
}

/// Writes `upper` (less the paths in `skip`) as a layer on top of `parent_chain`: the blob
/// in the content store, the layer directory under its chain ID. With `adopt` (the upper
/// directory is the caller's to give away), the directory itself becomes the layer's (its
/// skipped paths and overlayfs' bookkeeping removed), instead of the blob unpacked again.
pub fn commit_layer(
    store: &Store,
    upper: &Path,
    parent_chain: Option<&Digest>,
    compression: Compression,
    format: Format,
    skip: &BTreeSet<String>,
    adopt: bool,
) -> Result<NewLayer, Error> {
    let w = store.content.writer()?;
    let (stats, w) = berth_storage::write_layer(upper, compression, w, &|p| skip.contains(p))?;
    let size = w.len();
    let blob = w.commit(&store.content, None)?;
    let chain = Digest::chain(parent_chain, &stats.diff_id);
    let present = store.layers.contains(&chain) || (adopt && adopt_upper(store, upper, skip, &chain)?);
    if !present {
        let limit = SizeLimit::new(store.config.max_image_size(), "storage.max-image-size in berth.toml");
        berth_image::pull::unpack_local(store, &blob, compression, &stats.diff_id, &chain, &limit)?;
    }
    Ok(NewLayer {
        blob,
        media_type: format.layer_type(compression).to_string(),
        size,
        diff_id: stats.diff_id,
        chain_id: chain,
        tar_size: stats.tar_size,
        content_size: stats.content_bytes,
    })
}

/// Moves `upper` into the layer store under `chain`, as the layer that was just written from
/// it; false when it cannot be moved there (another filesystem).
fn adopt_upper(store: &Store, upper: &Path, skip: &BTreeSet<String>, chain: &Digest) -> Result<bool, Error> {
    let io = |p: &Path, e: std::io::Error| Error::from_io(e).context(p.display().to_string());
    // Deepest first: a skipped directory may hold skipped entries.
    for rel in skip.iter().rev() {
        let p = upper.join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p).map_err(|e| io(&p, e))?,
            Ok(_) => std::fs::remove_file(&p).map_err(|e| io(&p, e))?,
            Err(_) => {}
        }
    }
    // What the layer leaves out anyway.
    remove_sockets(upper)?;
    berth_storage::diff::strip_overlay_bookkeeping(upper)?;
    let mut tmp = store.layers.temp().map_err(|e| io(store.layers.dir(), e))?;
    std::fs::remove_dir(tmp.path()).map_err(|e| io(tmp.path(), e))?;
    match std::fs::rename(upper, tmp.path()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let _ = std::fs::create_dir(tmp.path());
            return Ok(false);
        }
        Err(e) => return Err(io(upper, e)),
    }
    store.commit_layer(&mut tmp, chain)?;
    Ok(true)
}

fn remove_sockets(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::FileTypeExt;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::from_io(e).context(dir.display().to_string()))?;
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_socket() {
            let _ = std::fs::remove_file(e.path());
        } else if t.is_dir() {
            remove_sockets(&e.path())?;
        }
    }
    Ok(())
}

/// The layers of a stored image, as a build carries them on.
pub fn image_layers(img: &berth_image::store::Image) -> Result<Vec<NewLayer>, Error> {
    let mut out = Vec::new();
    for l in &img.layers {
        let parse = |d: &str, what: &str| {
            Digest::parse(d).map_err(|e| Error::msg(format!("image {}: layer {}: {what}: {e}", img.id(), l.idx)))
        };
        out.push(NewLayer {
            blob: parse(&l.blob_digest, "blob")?,
            media_type: l.media_type.clone(),
            size: l.size.max(0) as u64,
            diff_id: parse(&l.diff_id, "diff_id")?,
            chain_id: parse(&l.chain_id, "chain_id")?,
            tar_size: 0,
            content_size: 0,
        });
    }
    Ok(out)
}

/// The unpacked directories of `layers`, bottom first.
pub fn layer_dirs(store: &Store, layers: &[NewLayer]) -> Result<Vec<PathBuf>, Error> {
    layers
        .iter()
        .map(|l| {
            let p = store.layers.path(&l.chain_id);
            if p.is_dir() {
                Ok(p)
            } else {
                Err(Error::msg(format!("layer {} (chain {}) is missing from {}", l.blob, l.chain_id, p.display())))
            }
        })
        .collect()
}

/// Registers `config` (the whole image config, its `rootfs` set here from `layers`) with
/// `layers` as an image, tagged `tag` if given: (manifest digest, config digest).
pub fn register(
    store: &Store,
    mut config: Value,
    layers: &[NewLayer],
    format: Format,
    tag: Option<&str>,
) -> Result<(Digest, Digest), Error> {
    config["rootfs"] = json!({
        "type": "layers",
        "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
    });
    let cfg_bytes = serde_json::to_vec(&config).map_err(|e| Error::msg(format!("image config: {e}")))?;
    let cfg_digest = store.content.write_blob(&cfg_bytes, None)?;
    let typed = manifest::parse_config(&cfg_bytes, "the built image's config")?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": format.manifest_type(),
        "config": {"mediaType": format.config_type(), "digest": cfg_digest.to_string(), "size": cfg_bytes.len()},
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type,
            "digest": l.blob.to_string(),
            "size": l.size,
        })).collect::<Vec<_>>(),
    });
    let mbytes = serde_json::to_vec(&manifest).map_err(|e| Error::msg(format!("manifest: {e}")))?;
    store.content.write_blob(&mbytes, None)?;
    let md = store.register(&mbytes, format.manifest_type(), &typed, layers, tag, None, None)?;
    Ok((md, cfg_digest))
}

/// Whether `rel` exists in the merged view of `lowers` (bottom first): the topmost layer
/// that has it or hides it (a whiteout, an opaque directory above it) decides.
pub fn exists_in_layers(lowers: &[PathBuf], rel: &str) -> bool {
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    if comps.is_empty() {
        return true;
    }
    'layers: for layer in lowers.iter().rev() {
        let mut path = layer.clone();
        for (i, c) in comps.iter().enumerate() {
            path.push(c);
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                // Absent here: an opaque directory above it hides the layers below.
                let parent = path.parent().unwrap_or(layer);
                if i > 0 && is_opaque(parent) {
                    return false;
                }
                continue 'layers;
            };
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            if m.file_type().is_char_device() && m.rdev() == 0 {
                return false;
            }
            if i + 1 == comps.len() {
                return true;
            }
            if !m.is_dir() {
                // A file (or symlink) where a directory would be: the path is not there as
                // such; a symlinked parent is taken as present.
                return m.file_type().is_symlink();
            }
        }
    }
    false
}

fn is_opaque(dir: &Path) -> bool {
    let Ok(fd) = berth_sys::file::open_dir(dir) else { return false };
    matches!(berth_sys::file::fgetxattr(&fd, berth_storage::unpack::OPAQUE_XATTR), Ok(Some(v)) if v == b"y")
}

/// Where the runtime mounts things in every container: paths it creates in the root when the
/// image lacks them, which never belong in a layer.
pub const RUNTIME_MOUNTS: &[&str] = &[
    "proc",
    "dev",
    "dev/pts",
    "dev/shm",
    "dev/mqueue",
    "sys",
    "sys/fs/cgroup",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
];

/// The mount targets (and the directories made only to hold them) that the runtime created
/// in `upper` because the image lacked them.
pub fn runtime_made(lowers: &[PathBuf], upper: &Path, targets: &[String]) -> BTreeSet<String> {
    let mut skip = BTreeSet::new();
    for t in targets {
        let t = t.trim_matches('/');
        if t.is_empty() || exists_in_layers(lowers, t) || std::fs::symlink_metadata(upper.join(t)).is_err() {
            continue;
        }
        skip.insert(t.to_string());
    }
    // Parents made only for skipped targets go too (deepest first).
    let mut parents: Vec<String> = skip
        .iter()
        .flat_map(|t| {
            let mut v = Vec::new();
            let mut p = t.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                v.push(parent.to_string());
                p = parent;
            }
            v
        })
        .collect();
    parents.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    parents.dedup();
    for p in parents {
        if exists_in_layers(lowers, &p) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(upper.join(&p)) else { continue };
        let only_skipped =
            entries.flatten().all(|e| skip.contains(&format!("{p}/{}", e.file_name().to_string_lossy())));
        if only_skipped {
            skip.insert(p);
        }
    }
    skip
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_through_whiteouts() {
        let tmp = tempfile::tempdir().unwrap();
        let (l1, l2) = (tmp.path().join("l1"), tmp.path().join("l2"));
        std::fs::create_dir_all(l1.join("etc")).unwrap();
        std::fs::write(l1.join("etc/hosts"), "").unwrap();
        std::fs::create_dir_all(l1.join("proc")).unwrap();
        std::fs::create_dir_all(l2.join("etc")).unwrap();
        std::fs::write(l2.join("etc/other"), "").unwrap();
        std::fs::create_dir_all(l1.join("var/lib")).unwrap();
        std::fs::create_dir_all(l2.join("var")).unwrap();
        // l2 hides l1's /var/lib (a whiteout) and replaces /etc's contents (opaque).
        let wh = std::ffi::CString::new(l2.join("var/lib").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR | 0o600, 0) }, 0, "mknod (run as root)");
        let lowers = vec![l1.clone(), l2.clone()];
        assert!(exists_in_layers(&lowers, "/etc/hosts"));
        assert!(exists_in_layers(&lowers, "proc"));
        assert!(!exists_in_layers(&lowers, "var/lib"));
        assert!(exists_in_layers(&lowers, "var"));
        let etc = berth_sys::file::open_dir(&l2.join("etc")).unwrap();
        berth_sys::file::fsetxattr(&etc, berth_storage::unpack::OPAQUE_XATTR, b"y").unwrap();
        assert!(!exists_in_layers(&lowers, "etc/hosts"));
        assert!(exists_in_layers(&lowers, "etc/other"));
        assert!(!exists_in_layers(&lowers, "sys"));
        assert!(!exists_in_layers(&lowers, "etc/resolv.conf"));
        assert!(exists_in_layers(&lowers, "/"));
    }
}
