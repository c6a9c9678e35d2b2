//! The image store: one root directory shared by every berth process and the daemon.
//!
//! ```text
//! <root>/berth.db                       metadata (SQLite, WAL)
//! <root>/store.lock                     shared by writers, exclusive for garbage collection
//! <root>/content/blobs/sha256/<hex>     verified blobs (OCI image layout)
//! <root>/content/ingest/<hex>/data      downloads in progress (resumable)
//! <root>/layers/<chain-id hex>/         unpacked layers (overlayfs whiteout format)
//! <root>/snapshots/<id>/                container root filesystems
//! ```

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use berth_storage::layers::TempLayer;
use berth_storage::{Digest, LayerStore, Snapshotter};
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

use crate::config::Config;
use crate::content::ContentStore;
use crate::db::{self, Db, ImageRow};
use crate::error::{bail, Context, Error, Result};
use crate::manifest::{self, Document, ImageConfig};
use crate::reference::Reference;

pub const DEFAULT_ROOT: &str = "/var/lib/berth";

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).ctx(format!("chmod {mode:o} {}", p.display()))
}

/// Opens (creating it 0600) and flocks the lock file at `path`.
fn lock_file(path: &Path, op: libc::c_int) -> Result<Lock> {
    use std::os::unix::fs::OpenOptionsExt;
    let f =
        fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path).ctx(path.display())?;
    berth_sys::file::flock(&f, op).ctx(format!("lock {}", path.display()))?;
    Ok(Lock { _file: f })
}

/// What the store holds besides its database, one phrase per kind ("3 blobs"): blobs and
/// downloads, layers (with unpacks and removals in progress), container snapshots, and the
/// engine's containers and volumes kept beside. Empty for a new store.
fn store_content(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (dir, one, many) in [
        ("content/blobs/sha256", "blob", "blobs"),
        ("content/ingest", "download in progress", "downloads in progress"),
        ("layers", "layer directory", "layer directories"),
        ("snapshots", "container snapshot", "container snapshots"),
        ("containers", "container directory", "container directories"),
        ("volumes", "volume", "volumes"),
    ] {
        let p = root.join(dir);
        let n = match fs::read_dir(&p) {
            Ok(rd) => rd.count(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).ctx(format!("list {}", p.display())),
        };
        if n > 0 {
            out.push(format!("{n} {} ({dir}/)", if n == 1 { one } else { many }));
        }
    }
    Ok(out)
}

/// Opens `<root>/berth.db`, creating it only for a new store. Whether the store is new is
/// decided from the store itself, never from the database file: a missing, empty, truncated
/// or corrupt database beside existing content stops here with what to do, since a fresh
/// database would lose every record and garbage collection would then delete the content.
fn open_db(root: &Path) -> Result<Db> {
    let path = root.join("berth.db");
    match Db::open(&path) {
        Ok(db) => return Ok(db),
        Err(db::OpenError::Other(e)) => return Err(e),
        Err(_) => {}
    }
    // Set-up under the exclusive store lock: one process at a time decides and creates, and
    // no pull or load that opened the store before is still adding content.
    let _lock = lock_file(&root.join("store.lock"), libc::LOCK_EX)?;
    let why = match Db::open(&path) {
        Ok(db) => return Ok(db),
        Err(db::OpenError::Other(e)) => return Err(e),
        Err(db::OpenError::Missing) => None,
        Err(db::OpenError::Damaged(w)) => Some(w),
    };
    let content = store_content(root)?;
    if !content.is_empty() {
        let state = why.as_deref().unwrap_or("is missing");
        bail!(
            DataLoss,
            "store {root}: the metadata database {db} {state}, but the store holds {content}: refusing to start a new \
             database over them (the records of images, tags and containers would be lost and garbage collection would \
             then delete the content). Stop every berth process, then restore {db} from a backup, or salvage what SQLite \
             can still read (sqlite3 .recover), or move the whole store aside (mv {root} {root}.damaged) to start afresh \
             and pull the images again: see \"Recovering the metadata database\" in berth's docs/ARCHITECTURE.md",
            root = root.display(),
            db = path.display(),
            content = content.join(", "),
        );
    }
    // A new store. Leftovers of a set-up that crashed before its rename go first.
    if let Ok(rd) = fs::read_dir(root) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".berth.db.tmp-") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Db::create(&path, why.is_some())?;
    Db::open(&path).map_err(|e| match e {
        db::OpenError::Other(e) => e,
        db::OpenError::Missing => Error::msg(format!("{}: vanished right after it was created", path.display())),
        db::OpenError::Damaged(w) => Error::msg(format!("{}: the database just created {w}", path.display())),
    })
}

pub struct Store {
    pub root: PathBuf,
    pub config: Config,
    pub content: ContentStore,
    pub layers: LayerStore,
    pub snapshots: Snapshotter,
    pub db: Mutex<Db>,
    lock_path: PathBuf,
}

/// A held store lock (released on drop).
pub struct Lock {
    _file: File,
}

/// An image as stored: its manifest, config and layers.
#[derive(Debug, Clone)]
pub struct Image {
    pub row: ImageRow,
    pub tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub layers: Vec<db::LayerRow>,
}

impl Image {
    pub fn id(&self) -> Digest {
        Digest::parse(&self.row.config_digest).expect("stored digests are valid")
    }
    pub fn manifest_digest(&self) -> Digest {
        Digest::parse(&self.row.manifest_digest).expect("stored digests are valid")
    }
}

/// A layer of an image being registered.
#[derive(Debug, Clone)]
pub struct NewLayer {
    pub blob: Digest,
    pub media_type: String,
    pub size: u64,
    pub diff_id: Digest,
    pub chain_id: Digest,
    pub tar_size: u64,
    pub content_size: u64,
}

/// What garbage collection removed.
#[derive(Debug, Default, Clone)]
pub struct GcReport {
    pub images: Vec<String>,
    pub blobs: usize,
    pub blob_bytes: u64,
    pub layers: usize,
    pub leftovers: usize,
}

/// `berth system df`
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Usage {
    pub images: usize,
    pub images_active: usize,
    pub blobs: usize,
    pub blob_bytes: u64,
    pub blob_reclaimable: u64,
    pub layers: usize,
    pub layer_bytes: u64,
    pub layer_reclaimable: u64,
    pub snapshots: usize,
    pub ingest_bytes: u64,
}

impl Store {
    /// `--root`, else `$BERTH_ROOT`, else /var/lib/berth.
    pub fn default_root(explicit: Option<&Path>) -> PathBuf {
        explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("BERTH_ROOT").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
    }

    /// Opens (creating if needed) the store at `root`, as root. The tree is private whatever the umask,
    /// and made so again on every open (stores of older versions were not): the root is
    /// searchable only (0711), `content/`, `layers/` and `snapshots/` are 0700, since
    /// layers hold images' setuid binaries, file capabilities and device nodes, and the
    /// database and lock files 0600. The database is created only for a new store (nothing
    /// in it yet): see `open_db`.
    pub fn open(root: &Path, config: Config) -> Result<Store> {
        // Unpacking layers sets their files' owners and creates device nodes; overlay mounts
        // need CAP_SYS_ADMIN. Without root nothing would work, so say so at once.
        if unsafe { libc::geteuid() } != 0 {
            bail!("berth needs root (store {})", root.display());
        }
        fs::create_dir_all(root).ctx(format!("create store root {}", root.display()))?;
        let root = root.canonicalize().ctx(root.display())?;
        set_mode(&root, 0o711)?;
        for d in ["content", "layers"] {
            let p = root.join(d);
            fs::create_dir_all(&p).ctx(format!("create {}", p.display()))?;
            set_mode(&p, 0o700)?;
        }
        // Snapshots are traversable (0711), each private (0700; a pod's with a user namespace
        // of its own belongs to its root, which reaches its root filesystem by path). Stores
        // made before kept their snapshots 0755 inside a 0700 directory: closed first.
        let snapshots_dir = root.join("snapshots");
        fs::create_dir_all(&snapshots_dir).ctx(format!("create {}", snapshots_dir.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&snapshots_dir).ctx(snapshots_dir.display())?.permissions().mode() & 0o7777;
            if mode != 0o711 {
                for e in fs::read_dir(&snapshots_dir).ctx(snapshots_dir.display())?.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        set_mode(&e.path(), 0o700)?;
                    }
                }
                set_mode(&snapshots_dir, 0o711)?;
            }
        }
        let content = ContentStore::open(&root.join("content"))?;
        let layers = LayerStore::open(&root.join("layers")).ctx("layers directory")?;
        let snapshots = Snapshotter::open(&root.join("snapshots")).ctx("snapshots directory")?;
        // SQLite creates its -wal and -shm files with the database file's mode; the lock file
        // is private too (anyone who could open it could hold it and block every pull).
        for name in ["berth.db", "berth.db-wal", "berth.db-shm", "store.lock"] {
            let p = root.join(name);
            if fs::symlink_metadata(&p).map(|m| m.is_file()).unwrap_or(false) {
                // Another process closing the database may remove -wal and -shm meanwhile.
                use std::os::unix::fs::PermissionsExt;
                match fs::set_permissions(&p, fs::Permissions::from_mode(0o600)) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && name != "berth.db" => {}
                    r => r.ctx(format!("chmod 600 {}", p.display()))?,
                }
            }
        }
        let db = open_db(&root)?;
        Ok(Store { lock_path: root.join("store.lock"), root, config, content, layers, snapshots, db: Mutex::new(db) })
    }

    fn lock(&self, op: libc::c_int) -> Result<Lock> {
        lock_file(&self.lock_path, op)
    }

    /// Held while adding content (pull, load, import): GC waits for it.
    pub fn lock_shared(&self) -> Result<Lock> {
        self.lock(libc::LOCK_SH)
    }

    /// Held by garbage collection: no content is added meanwhile.
    pub fn lock_exclusive(&self) -> Result<Lock> {
        self.lock(libc::LOCK_EX)
    }

    pub fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db.lock().unwrap()
    }

    pub fn image_by_manifest(&self, manifest_digest: &str) -> Result<Option<Image>> {
        let db = self.db();
        let Some(row) = db.image(manifest_digest)? else { return Ok(None) };
        Ok(Some(Image {
            tags: db.tags_of(&row.manifest_digest)?,
            repo_digests: db.repo_digests(&row.manifest_digest)?,
            layers: db.image_layers(&row.manifest_digest)?,
            row,
        }))
    }

    /// The image a build step made before, by the step's cache key (its parent state and
    /// everything it depends on); None if there is none, or its image is gone.
    pub fn build_cache_get(&self, key: &str) -> Result<Option<Image>> {
        let md: Option<String> = self
            .db()
            .conn
            .query_row("SELECT manifest_digest FROM build_cache WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .ctx("build cache")?;
        match md {
            Some(md) => self.image_by_manifest(&md),
            None => Ok(None),
        }
    }

    /// Records the image a build step made under its cache key.
    pub fn build_cache_put(&self, key: &str, manifest_digest: &Digest) -> Result<()> {
        self.db().write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO build_cache (key, manifest_digest, added_at) VALUES (?1, ?2, ?3)",
                params![key, manifest_digest.as_str(), db::now()],
            )?;
            Ok(())
        })
    }

    /// Manifest digests of the untagged images builds made for their steps (`images` lists
    /// them only with `-a`, as docker lists intermediate images).
    pub fn build_intermediates(&self) -> Result<std::collections::HashSet<String>> {
        let db = self.db();
        let mut st = db
            .conn
            .prepare(
                "SELECT DISTINCT manifest_digest FROM build_cache
                 WHERE manifest_digest NOT IN (SELECT manifest_digest FROM tags)",
            )
            .ctx("build cache")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0)).ctx("build cache")?;
        rows.collect::<std::result::Result<_, _>>().ctx("build cache")
    }

    pub fn list(&self) -> Result<Vec<Image>> {
        let rows = self.db().images()?;
        let mut out = Vec::new();
        for r in rows {
            if let Some(i) = self.image_by_manifest(&r.manifest_digest)? {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// Finds an image by name (`busybox`, `reg/x:tag`, `x@sha256:...`), by ID (the config
    /// digest, or a unique prefix of at least 4 hex digits) or by manifest digest. Names come
    /// first, as in Docker: `cafe` is the image named `cafe` if there is one, and an ID
    /// prefix only otherwise; `sha256:...` and 64 hex digits are only ever IDs or digests.
    pub fn resolve(&self, name: &str) -> Result<Image> {
        let id_like = |h: &str| {
            h.len() >= 4 && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if let Some(hex) = name.strip_prefix("sha256:").filter(|h| id_like(h)) {
            return self
                .by_id_prefix(name, hex)?
                .ok_or_else(|| Error::not_found(format!("image {name} not found in the store")));
        }
        if name.len() == 64 && id_like(name) {
            return self
                .by_id_prefix(name, name)?
                .ok_or_else(|| Error::not_found(format!("image {name} not found in the store")));
        }
        let r = match self.config.resolve(name) {
            Ok(r) => r,
            Err(e) => {
                if id_like(name) {
                    if let Some(img) = self.by_id_prefix(name, name)? {
                        return Ok(img);
                    }
                }
                return Err(e);
            }
        };
        if let Some(img) = self.by_name(&r)? {
            return Ok(img);
        }
        if id_like(name) {
            if let Some(img) = self.by_id_prefix(name, name)? {
                return Ok(img);
            }
        }
        match r.tagged() {
            Some(t) if r.digest.is_none() => bail!(NotFound, "image {name} ({t}) not found in the store"),
            _ => bail!(NotFound, "image {name} not found in the store"),
        }
    }

    /// The image a reference names: by its digest, else by its tag.
    fn by_name(&self, r: &Reference) -> Result<Option<Image>> {
        if let Some(d) = &r.digest {
            return self.image_by_manifest(d.as_str());
        }
        let hit = self.db().tag(&r.tagged().unwrap_or_default())?;
        match hit {
            Some((md, _)) => Ok(Some(self.image_by_manifest(&md)?.ok_or_else(|| removed_meanwhile(&r.to_string()))?)),
            None => Ok(None),
        }
    }

    /// The image whose ID (config digest) or manifest digest starts with `hex`; an error when
    /// several images match.
    fn by_id_prefix(&self, name: &str, hex: &str) -> Result<Option<Image>> {
        let rows = self.db().images()?;
        let mut found: Vec<&ImageRow> = rows
            .iter()
            .filter(|r| r.config_digest[7..].starts_with(hex) || r.manifest_digest[7..].starts_with(hex))
            .collect();
        let ids: HashSet<&str> = found.iter().map(|r| r.config_digest.as_str()).collect();
        if ids.len() > 1 {
            bail!("image ID {name:?} is ambiguous: {} images match", ids.len());
        }
        let Some(r) = found.pop() else { return Ok(None) };
        // Of several manifests with the same config, prefer a tagged one.
        let md = rows
            .iter()
            .filter(|x| x.config_digest == r.config_digest)
            .find(|x| !self.db().tags_of(&x.manifest_digest).unwrap_or_default().is_empty())
            .unwrap_or(r)
            .manifest_digest
            .clone();
        Ok(Some(self.image_by_manifest(&md)?.ok_or_else(|| removed_meanwhile(name))?))
    }

    /// Bytes of file content of the image's layers once unpacked (what `berth images` shows,
    /// as Docker does); the compressed size is `row.size`.
    pub fn unpacked_size(&self, img: &Image) -> Result<u64> {
        let db = self.db();
        let mut total = 0u64;
        for l in &img.layers {
            total += db.layer(&l.chain_id)?.map(|(_, c)| c.max(0) as u64).unwrap_or(0);
        }
        Ok(total)
    }

    pub fn manifest_bytes(&self, img: &Image) -> Result<Vec<u8>> {
        self.content.read(&img.manifest_digest())
    }

    pub fn image_config(&self, img: &Image) -> Result<(Vec<u8>, ImageConfig)> {
        let bytes = self.content.read(&img.id())?;
        let cfg = manifest::parse_config(&bytes, &format!("image config {}", img.id()))?;
        Ok((bytes, cfg))
    }

    /// The directories of an image's unpacked layers, bottom first.
    pub fn layer_dirs(&self, img: &Image) -> Result<Vec<PathBuf>> {
        img.layers
            .iter()
            .map(|l| {
                let c = Digest::parse(&l.chain_id)?;
                let p = self.layers.path(&c);
                if !p.is_dir() {
                    bail!("image {}: layer {} (chain {c}) is missing from {}", img.id(), l.blob_digest, p.display());
                }
                Ok(p)
            })
            .collect()
    }

    /// Puts a verified unpacked layer under its chain ID. A directory already there is trusted
    /// only if the database records that layer (only verified layers are ever recorded);
    /// otherwise it is replaced. The check and the rename happen inside one write transaction,
    /// so an image being registered meanwhile cannot start using the directory replaced.
    pub fn commit_layer(&self, tmp: &mut TempLayer, chain: &Digest) -> Result<()> {
        self.db().write(|tx| {
            let recorded = tx
                .query_row("SELECT 1 FROM layers WHERE chain_id = ?1", [chain.as_str()], |_| Ok(()))
                .optional()?
                .is_some();
            self.layers.commit(tmp, chain, recorded).ctx(format!("commit layer {chain}"))?;
            Ok(())
        })
    }

    /// Records an image whose blobs are in the content store and whose layers are unpacked,
    /// with its tag (if any) and where it came from, in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &self,
        manifest_bytes: &[u8],
        media_type: &str,
        config: &ImageConfig,
        layers: &[NewLayer],
        tag: Option<&str>,
        index_digest: Option<&Digest>,
        source: Option<&Reference>,
    ) -> Result<Digest> {
        let md = Digest::of(manifest_bytes);
        for d in std::iter::once(&md).chain(index_digest) {
            if !self.content.contains(d) {
                bail!("register image: blob {d} is not in the content store");
            }
        }
        let Document::Manifest(m) = manifest::parse_document(manifest_bytes, Some(media_type), "manifest")?.0 else {
            bail!("register image {md}: not an image manifest");
        };
        let size: u64 =
            manifest_bytes.len() as u64 + m.config.size.max(0) as u64 + layers.iter().map(|l| l.size).sum::<u64>();
        // Layers are on disk before their records: make them durable first.
        if !layers.is_empty() {
            let fd = berth_sys::file::open_dir(self.layers.dir()).ctx("layers directory")?;
            if unsafe { libc::syncfs(fd.as_raw_fd()) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .ctx(format!("syncfs on the filesystem of {}", self.layers.dir().display()));
            }
        }
        let now = db::now();
        self.db().write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO images (manifest_digest, media_type, config_digest, size, created, os, architecture, added_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    md.as_str(),
                    media_type,
                    m.config.digest,
                    size as i64,
                    config.created,
                    config.os,
                    config.architecture,
                    now
                ],
            )?;
            let mut parent: Option<String> = None;
            for (i, l) in layers.iter().enumerate() {
                tx.execute(
                    "INSERT OR IGNORE INTO image_layers (manifest_digest, idx, blob_digest, media_type, size, diff_id, chain_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        md.as_str(),
                        i as i64,
                        l.blob.as_str(),
                        l.media_type,
                        l.size as i64,
                        l.diff_id.as_str(),
                        l.chain_id.as_str()
                    ],
                )?;
                tx.execute(
                    "INSERT OR IGNORE INTO layers (chain_id, diff_id, parent, tar_size, content_size, added_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![l.chain_id.as_str(), l.diff_id.as_str(), parent, l.tar_size as i64, l.content_size as i64, now],
                )?;
                parent = Some(l.chain_id.to_string());
            }
            if let Some(t) = tag {
                tx.execute(
                    "INSERT INTO tags (name, manifest_digest, index_digest, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(name) DO UPDATE SET manifest_digest = ?2, index_digest = ?3, updated_at = ?4",
                    params![t, md.as_str(), index_digest.map(|d| d.to_string()), now],
                )?;
            }
            if let Some(src) = source {
                let top = index_digest.unwrap_or(&md);
                tx.execute(
                    "INSERT OR IGNORE INTO repo_digests (manifest_digest, name) VALUES (?1, ?2)",
                    params![md.as_str(), format!("{}@{top}", src.name())],
                )?;
                for d in std::iter::once(m.config.digest.as_str()).chain(layers.iter().map(|l| l.blob.as_str())) {
                    db::record_blob_source(tx, d, &src.registry, &src.repository)?;
                }
            }
            Ok(())
        })?;
        Ok(md)
    }

    /// Points `name` (a full reference) at an image.
    pub fn tag(&self, img: &Image, name: &str) -> Result<String> {
        let r = self.config.resolve(name)?;
        if r.digest.is_some() {
            bail!("cannot tag with a digest reference ({name})");
        }
        let t = r.tagged().unwrap_or_default();
        let now = db::now();
        self.db().write(|tx| {
            tx.execute(
                "INSERT INTO tags (name, manifest_digest, index_digest, updated_at) VALUES (?1, ?2, NULL, ?3)
                 ON CONFLICT(name) DO UPDATE SET manifest_digest = ?2, index_digest = NULL, updated_at = ?3",
                params![t, img.row.manifest_digest, now],
            )?;
            Ok(())
        })?;
        crate::events::emit(&self.root, "image", "tag", img.id().as_str(), &[("name", &t)]);
        Ok(t)
    }

    /// `berth rmi`: by tag removes the tag (and the image with its last tag); by ID or
    /// digest removes the image and all its tags (several tags need `force`). An image used by
    /// a container snapshot is kept. Unreferenced blobs and layers are then collected.
    pub fn remove_image(&self, name: &str, force: bool) -> Result<Vec<String>> {
        // Everything is decided under the exclusive lock (no pull, load or snapshot creation
        // meanwhile) and inside the transaction that deletes (the tags and snapshots read are
        // the ones the deletion sees).
        let _lock = self.lock_exclusive()?;
        let img = self.resolve(name)?;
        let named = self.config.resolve(name).ok().and_then(|r| r.tagged());
        let md = img.row.manifest_digest.clone();
        let short = img.id().short().to_string();
        let (out, deleted) = self.db().write(|tx| {
            let list = |sql: &str| -> Result<Vec<String>> {
                let mut st = tx.prepare(sql)?;
                let rows = st.query_map([&md], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
                Ok(rows)
            };
            let tags = list("SELECT name FROM tags WHERE manifest_digest = ?1 ORDER BY name")?;
            let snaps = list("SELECT id FROM snapshots WHERE manifest_digest = ?1 ORDER BY id")?;
            let by_tag = named.filter(|t| tags.contains(t));
            let (untag, delete) = match &by_tag {
                Some(t) => (vec![t.clone()], tags.len() == 1),
                None => {
                    if tags.len() > 1 && !force {
                        bail!(
                            "image {short} is referenced by {} tags ({}): remove them by name or use --force",
                            tags.len(),
                            tags.join(", ")
                        );
                    }
                    (tags.clone(), true)
                }
            };
            if delete && !snaps.is_empty() {
                bail!("image {short} is in use by container snapshot(s) {}", snaps.join(", "));
            }
            let mut out = Vec::new();
            for t in &untag {
                tx.execute("DELETE FROM tags WHERE name = ?1", [t])?;
                out.push(format!("Untagged: {t}"));
            }
            if delete {
                tx.execute("DELETE FROM images WHERE manifest_digest = ?1", [&md])?;
                out.push(format!("Deleted: {}", img.id()));
            }
            Ok((out, delete))
        })?;
        for line in &out {
            if let Some(t) = line.strip_prefix("Untagged: ") {
                crate::events::emit(&self.root, "image", "untag", img.id().as_str(), &[("name", t)]);
            }
        }
        if deleted {
            crate::events::emit(&self.root, "image", "delete", img.id().as_str(), &[("name", name)]);
        }
        if deleted {
            self.collect_garbage_locked()?;
        }
        Ok(out)
    }

    /// `berth image prune`: removes untagged images (`all`: every image) not used by a
    /// snapshot, then unreferenced blobs, layers and leftovers.
    pub fn prune(&self, all: bool) -> Result<GcReport> {
        let _lock = self.lock_exclusive()?;
        let removed = self.db().write(|tx| {
            let mut st = tx.prepare(
                "SELECT manifest_digest, config_digest FROM images i WHERE NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.manifest_digest = i.manifest_digest)
                 AND (?1 OR NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_digest = i.manifest_digest))",
            )?;
            let victims: Vec<(String, String)> =
                st.query_map([all], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
            for (md, _) in &victims {
                tx.execute("DELETE FROM tags WHERE manifest_digest = ?1", [md])?;
                tx.execute("DELETE FROM images WHERE manifest_digest = ?1", [md])?;
            }
            Ok(victims.into_iter().map(|(_, c)| c).collect::<Vec<_>>())
        })?;
        let mut report = self.collect_garbage_locked()?;
        report.images = removed;
        Ok(report)
    }

    /// Removes what no image or snapshot references. Crash-safe: records go first (in one
    /// transaction), then files, and files without records are found again on the next run.
    /// The caller holds the exclusive lock.
    fn collect_garbage_locked(&self) -> Result<GcReport> {
        let mut report = GcReport::default();
        let (live_blobs, live_layers) = {
            let mut db = self.db();
            db.write(|tx| {
                tx.execute(
                    "DELETE FROM layers WHERE chain_id NOT IN (SELECT chain_id FROM image_layers)",
                    [],
                )?;
                tx.execute(
                    "DELETE FROM blob_sources WHERE digest NOT IN (SELECT blob_digest FROM image_layers UNION SELECT config_digest FROM images)",
                    [],
                )?;
                Ok(())
            })?;
            let conn = &db.conn;
            let mut blobs = HashSet::new();
            let mut st = conn.prepare(
                "SELECT manifest_digest FROM images UNION SELECT config_digest FROM images UNION SELECT blob_digest FROM image_layers
                 UNION SELECT index_digest FROM tags WHERE index_digest IS NOT NULL",
            )?;
            for d in st.query_map([], |r| r.get::<_, String>(0))? {
                blobs.insert(d?);
            }
            // Index digests also live on in repo digests (name@digest).
            let mut st = conn.prepare("SELECT name FROM repo_digests")?;
            for n in st.query_map([], |r| r.get::<_, String>(0))? {
                if let Some((_, d)) = n?.rsplit_once('@') {
                    blobs.insert(d.to_string());
                }
            }
            let mut layers = HashSet::new();
            let mut st = conn.prepare("SELECT chain_id FROM layers")?;
            for d in st.query_map([], |r| r.get::<_, String>(0))? {
                layers.insert(d?);
            }
            (blobs, layers)
        };
        for d in self.content.list()? {
            if !live_blobs.contains(d.as_str()) {
                report.blob_bytes += self.content.size(&d).unwrap_or(0);
                self.content.delete(&d)?;
                report.blobs += 1;
            }
        }
        for c in self.layers.list().ctx("list layers")? {
            if !live_layers.contains(c.as_str()) {
                self.layers.remove(&c).ctx(format!("remove layer {c}"))?;
                report.layers += 1;
            }
        }
        report.leftovers += self.layers.sweep_leftovers().ctx("sweep layers")? as usize;
        report.leftovers += self.content.sweep_ingests(std::time::Duration::from_secs(24 * 3600))?;
        Ok(report)
    }

    /// Garbage collection on its own (also removes all abandoned downloads).
    pub fn gc(&self, include_ingests: bool) -> Result<GcReport> {
        let _lock = self.lock_exclusive()?;
        let mut r = self.collect_garbage_locked()?;
        if include_ingests {
            r.leftovers += self.content.sweep_ingests(std::time::Duration::ZERO)?;
        }
        Ok(r)
    }

    pub fn usage(&self) -> Result<Usage> {
        let images = self.list()?;
        let mut u = Usage { images: images.len(), ..Default::default() };
        let mut tagged_blobs = HashSet::new();
        let mut tagged_layers = HashSet::new();
        for i in &images {
            let active = !i.tags.is_empty() || !self.db().snapshots_of(&i.row.manifest_digest)?.is_empty();
            if active {
                u.images_active += 1;
                tagged_blobs.insert(i.row.manifest_digest.clone());
                tagged_blobs.insert(i.row.config_digest.clone());
                for l in &i.layers {
                    tagged_blobs.insert(l.blob_digest.clone());
                    tagged_layers.insert(l.chain_id.clone());
                }
            }
        }
        for d in self.content.list()? {
            let s = self.content.size(&d).unwrap_or(0);
            u.blobs += 1;
            u.blob_bytes += s;
            if !tagged_blobs.contains(d.as_str()) {
                u.blob_reclaimable += s;
            }
        }
        for c in self.layers.list()? {
            let s = self
                .db()
                .layer(c.as_str())?
                .map(|(_, c)| c as u64)
                .unwrap_or_else(|| berth_storage::layers::disk_usage(&self.layers.path(&c)));
            u.layers += 1;
            u.layer_bytes += s;
            if !tagged_layers.contains(c.as_str()) {
                u.layer_reclaimable += s;
            }
        }
        u.snapshots = self.snapshots.list().map(|l| l.len()).unwrap_or(0);
        u.ingest_bytes = self.content.ingest_bytes();
        Ok(u)
    }

    /// A container root filesystem over an image's layers (overlay, or a copy), recorded so
    /// the image and its layers stay while it exists.
    pub fn create_snapshot(&self, id: &str, img: &Image) -> Result<PathBuf> {
        self.create_snapshot_mapped(id, img, None)
    }

    /// `create_snapshot` with the files seen through an ID mapping (a pod's user namespace).
    pub fn create_snapshot_mapped(
        &self,
        id: &str,
        img: &Image,
        idmap: Option<&berth_storage::snapshot::IdMapping>,
    ) -> Result<PathBuf> {
        berth_storage::snapshot::validate_id(id)?;
        let _lock = self.lock_shared()?;
        let driver = self.config.driver();
        self.db().write(|tx| {
            tx.execute(
                "INSERT INTO snapshots (id, manifest_digest, driver, added_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, img.row.manifest_digest, driver.name(), db::now()],
            )
            .map_err(|e| Error::msg(format!("snapshot {id}: {e}")))?;
            Ok(())
        })?;
        let dirs = self.layer_dirs(img)?;
        match self.snapshots.prepare_mapped(id, &dirs, driver, idmap) {
            Ok(p) => Ok(p),
            Err(e) => {
                let _ = self.db().write(|tx| {
                    tx.execute("DELETE FROM snapshots WHERE id = ?1", [id])?;
                    Ok(())
                });
                Err(e)
            }
        }
    }

    /// Mounts a snapshot's root filesystem again (after a reboot or an unmount); returns its
    /// path. Copy snapshots need no mount.
    pub fn mount_snapshot(&self, id: &str) -> Result<PathBuf> {
        berth_storage::snapshot::validate_id(id)?;
        let row: Option<(String, String)> = {
            self.db()
                .conn
                .query_row("SELECT manifest_digest, driver FROM snapshots WHERE id = ?1", [id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?
        };
        let Some((md, driver)) = row else { bail!(NotFound, "snapshot {id} not found") };
        let rootfs = self.snapshots.rootfs(id);
        if driver == "overlay" && !berth_sys::proc::is_mountpoint(&rootfs).unwrap_or(false) {
            let img =
                self.image_by_manifest(&md)?.ok_or_else(|| Error::msg(format!("snapshot {id}: image {md} is gone")))?;
            self.snapshots.mount(id, &self.layer_dirs(&img)?)?;
        }
        Ok(rootfs)
    }

    pub fn remove_snapshot(&self, id: &str) -> Result<()> {
        self.snapshots.remove(id)?;
        self.db().write(|tx| {
            tx.execute("DELETE FROM snapshots WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// `berth image inspect` output.
    pub fn inspect(&self, img: &Image) -> Result<Value> {
        let (_, cfg) = self.image_config(img)?;
        let raw_cfg: Value = serde_json::from_slice(&self.content.read(&img.id())?).unwrap_or(Value::Null);
        Ok(json!({
            "Id": img.id().to_string(),
            "Digest": img.row.manifest_digest,
            "RepoTags": img.tags,
            "RepoDigests": img.repo_digests,
            "MediaType": img.row.media_type,
            "Created": cfg.created,
            "Author": cfg.author,
            "Architecture": cfg.architecture,
            "Os": cfg.os,
            "Variant": cfg.variant,
            "Size": self.unpacked_size(img)?,
            "CompressedSize": img.row.size,
            "Config": raw_cfg.get("config").cloned().unwrap_or(Value::Null),
            "RootFS": {"Type": "layers", "Layers": cfg.rootfs.diff_ids},
            "Layers": img.layers.iter().map(|l| json!({
                "Digest": l.blob_digest, "MediaType": l.media_type, "Size": l.size,
                "DiffID": l.diff_id, "ChainID": l.chain_id,
            })).collect::<Vec<_>>(),
            "History": cfg.history.unwrap_or_default(),
        }))
    }
}

/// An image listed a moment before and gone when read: another caller removed it. Not found,
/// as it would have been a moment later (CRI's RemoveImage treats that as removed).
fn removed_meanwhile(name: &str) -> Error {
    Error::new(crate::error::Kind::NotFound, format!("image {name} not found in the store (removed meanwhile)"))
}
