//! The content store: blobs by digest in `content/blobs/sha256/<hex>` (an OCI image layout),
//! written through `content/ingest/`: a blob is visible under its digest only once it is
//! complete, verified and fsynced (temp file → verify → fsync → rename). An interrupted
//! download stays in `ingest/<hex>/data` and is resumed from where it stopped; each ingest
//! is held under an exclusive lock so two processes never write the same one. Ingests, and
//! so blobs, are created 0600 (inside the 0700 `content/`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use berth_storage::digest::{Hasher, HashingReader};
use berth_storage::Digest;
use berth_sys::file::{self, flock};

use crate::error::{bail, Context, Result};
use crate::manifest::MAX_DOCUMENT;

pub struct ContentStore {
    root: PathBuf,
}

/// An in-progress write of a blob whose digest is known in advance.
pub struct Ingest {
    dir: PathBuf,
    pub file: File,
    pub hasher: Hasher,
    pub expected: Digest,
    pub expected_size: Option<u64>,
}

/// An in-progress write of content whose digest is learnt at the end (imports).
pub struct Writer {
    dir: PathBuf,
    file: File,
    hasher: Hasher,
}

pub fn fsync_dir(p: &Path) -> Result<()> {
    file::fsync_dir(p).ctx(format!("fsync {}", p.display()))
}

impl ContentStore {
    pub fn open(root: &Path) -> Result<ContentStore> {
        for d in ["blobs/sha256", "ingest"] {
            fs::create_dir_all(root.join(d)).ctx(format!("create {}", root.join(d).display()))?;
        }
        Ok(ContentStore { root: root.to_path_buf() })
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    pub fn size(&self, d: &Digest) -> Result<u64> {
        Ok(fs::metadata(self.path(d)).ctx(format!("blob {d}"))?.len())
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.path(d)).ctx(format!("blob {d} is missing from the content store"))
    }

    /// Reads a document (a manifest, an index, a config: at most `MAX_DOCUMENT` bytes) and
    /// checks it still matches its digest.
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut f = self.open_blob(d)?;
        let data = read_all_limited(&mut f, MAX_DOCUMENT, &format!("blob {d}"))?;
        if Digest::of(&data) != *d {
            bail!(DataLoss, "blob {d} in the content store is corrupt (digest mismatch)");
        }
        Ok(data)
    }

    /// Stores small content (a manifest, a config); verifies it against `expected` if given.
    pub fn write_blob(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        let d = Digest::of(data);
        if let Some(e) = expected {
            if *e != d {
                bail!(DataLoss, "content digest mismatch: expected {e}, got {d}");
            }
        }
        if self.contains(&d) {
            return Ok(d);
        }
        let mut w = self.writer()?;
        w.write_all(data)?;
        w.commit(self, Some(&d))
    }

    /// Begins (or resumes) the ingest of `expected`. Blocks while another process holds it;
    /// None when the blob turned out to be present once the lock was ours.
    pub fn ingest(&self, expected: &Digest, expected_size: Option<u64>) -> Result<Option<Ingest>> {
        let dir = self.root.join("ingest").join(expected.hex());
        let path = dir.join("data");
        let mut tries = 0;
        let mut file = loop {
            tries += 1;
            fs::create_dir_all(&dir).ctx(format!("create {}", dir.display()))?;
            let f = match OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(&path) {
                Ok(f) => f,
                // The previous holder committed and removed the directory meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 100 => continue,
                Err(e) => return Err(e).ctx(format!("open {}", path.display())),
            };
            flock(&f, libc::LOCK_EX).ctx(format!("lock {}", path.display()))?;
            // The holder waited for may have committed the file (renamed into blobs/) or
            // given up on it (removed): the lock is then on a file no longer at `path`.
            if is_at(&f, &path) {
                break f;
            }
            if tries >= 100 {
                bail!("ingest of {expected}: {} keeps being replaced", path.display());
            }
        };
        if self.contains(expected) {
            // Nothing to resume: the blob is there (the lock keeps others out of `dir`).
            let _ = fs::remove_dir_all(&dir);
            return Ok(None);
        }
        // Rebuild the running hash over what an earlier attempt wrote.
        file.seek(SeekFrom::Start(0))?;
        let mut r = HashingReader::new(&mut file);
        r.drain().ctx(format!("read {}", path.display()))?;
        let mut hasher = r.hasher.clone();
        if expected_size.map(|s| hasher.len > s).unwrap_or(false) {
            file.set_len(0)?;
            hasher = Hasher::new();
        }
        Ok(Some(Ingest { dir, file, hasher, expected: expected.clone(), expected_size }))
    }

    pub fn writer(&self) -> Result<Writer> {
        let dir = self.root.join("ingest").join(format!("tmp-{}", berth_storage::unique_suffix()));
        fs::create_dir(&dir).ctx(format!("create {}", dir.display()))?;
        let path = dir.join("data");
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .ctx(format!("create {}", path.display()))?;
        flock(&file, libc::LOCK_EX)?;
        Ok(Writer { dir, file, hasher: Hasher::new() })
    }

    pub fn delete(&self, d: &Digest) -> Result<()> {
        match fs::remove_file(self.path(d)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx(format!("delete blob {d}")),
        }
    }

    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.blobs_dir()).ctx("list blobs")? {
            let name = e?.file_name();
            if let Ok(d) = Digest::parse(&format!("sha256:{}", name.to_string_lossy())) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Removes ingests that no process holds and that are older than `max_age` (all of them
    /// when zero). Returns how many were removed.
    pub fn sweep_ingests(&self, max_age: std::time::Duration) -> Result<usize> {
        let mut n = 0;
        for e in fs::read_dir(self.root.join("ingest"))? {
            let dir = e?.path();
            let data = dir.join("data");
            // Writers of content with unknown digests cannot be resumed: any age goes.
            let resumable = !dir.file_name().map(|n| n.to_string_lossy().starts_with("tmp-")).unwrap_or(false);
            let old = !resumable
                || fs::metadata(&data)
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default() >= max_age)
                    .unwrap_or(true);
            if !old {
                continue;
            }
            // Held until the directory is gone: a process that opened the file meanwhile
            // finds it no longer at its path once it has the lock (see `ingest`).
            let _held = match File::open(&data) {
                Ok(f) => {
                    if flock(&f, libc::LOCK_EX | libc::LOCK_NB).is_err() {
                        continue; // in use
                    }
                    Some(f)
                }
                Err(_) => None,
            };
            fs::remove_dir_all(&dir).ctx(format!("remove {}", dir.display()))?;
            n += 1;
        }
        Ok(n)
    }

    /// Bytes held in unfinished ingests.
    pub fn ingest_bytes(&self) -> u64 {
        fs::read_dir(self.root.join("ingest"))
            .map(|rd| rd.flatten().filter_map(|e| fs::metadata(e.path().join("data")).ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    }
}

/// Whether the open file `f` is (still) the file at `path`.
fn is_at(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Ingest {
    pub fn offset(&self) -> u64 {
        self.hasher.len
    }

    /// Starts over (the server ignored a range request).
    pub fn reset(&mut self) -> Result<()> {
        self.file.set_len(0)?;
        self.hasher = Hasher::new();
        Ok(())
    }

    pub fn append(&mut self, data: &[u8]) -> Result<()> {
        if let Some(s) = self.expected_size {
            if self.hasher.len + data.len() as u64 > s {
                bail!("blob {}: the registry sent more than the {s} bytes the manifest declares", self.expected);
            }
        }
        self.file.write_all(data).ctx(format!("write ingest of {}", self.expected))?;
        self.hasher.update(data);
        Ok(())
    }

    /// A reader over the bytes already ingested (for resuming a streaming unpack).
    pub fn existing(&self) -> Result<File> {
        let mut f = File::open(self.dir.join("data"))?;
        f.seek(SeekFrom::Start(0))?;
        Ok(f)
    }

    /// Checks the size and digest of what was received; on a mismatch the ingest is removed
    /// (it cannot be resumed) and the error says what was expected and what came.
    pub fn verify(&self) -> Result<()> {
        if let Some(s) = self.expected_size {
            if self.hasher.len != s {
                let _ = fs::remove_dir_all(&self.dir);
                bail!(DataLoss, "blob {}: size mismatch: expected {s} bytes, got {}", self.expected, self.hasher.len);
            }
        }
        let got = self.hasher.digest();
        if got != self.expected {
            let _ = fs::remove_dir_all(&self.dir);
            bail!(DataLoss, "blob {}: digest mismatch: the content received hashes to {got}", self.expected);
        }
        Ok(())
    }

    /// Throws away what was received: it is not to be stored, nor resumed.
    pub fn discard(self) {
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// Verifies size and digest, fsyncs and moves the blob into place.
    pub fn commit(self, store: &ContentStore) -> Result<Digest> {
        self.verify()?;
        publish(store, &self.dir, &self.file, &self.expected)?;
        Ok(self.expected)
    }
}

/// Makes `dir/data` (open as `file`) the blob `d`: fsync, rename into `blobs/`, fsync of the
/// directory; then the empty ingest directory goes.
fn publish(store: &ContentStore, dir: &Path, file: &File, d: &Digest) -> Result<()> {
    file.sync_all().ctx(format!("fsync blob {d}"))?;
    fs::rename(dir.join("data"), store.path(d)).ctx(format!("commit blob {d}"))?;
    fsync_dir(&store.blobs_dir())?;
    let _ = fs::remove_dir(dir);
    Ok(())
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Writer {
    pub fn len(&self) -> u64 {
        self.hasher.len
    }
    pub fn is_empty(&self) -> bool {
        self.hasher.len == 0
    }
    /// Verifies against `expected` (if given), fsyncs and moves the blob into place.
    pub fn commit(self, store: &ContentStore, expected: Option<&Digest>) -> Result<Digest> {
        let got = self.hasher.digest();
        if let Some(e) = expected {
            if *e != got {
                bail!(DataLoss, "blob {e}: digest mismatch: the content hashes to {got}");
            }
        }
        publish(store, &self.dir, &self.file, &got)?;
        Ok(got)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Reads a blob file, checking on the fly that it has `size` bytes; the caller checks the
/// digest from the hasher at the end.
pub fn read_all_limited(r: &mut dyn Read, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(limit + 1).read_to_end(&mut out).ctx(what)?;
    if out.len() as u64 > limit {
        bail!("{what}: larger than the {limit}-byte limit");
    }
    Ok(out)
}
