//! The metadata database (SQLite in WAL mode, `berth.db`): images, their layers and tags,
//! unpacked layers, where blobs came from (for cross-repository mounts) and the container
//! snapshots that keep images alive. Several processes use it at once; every change is one
//! transaction, and writers wait for each other (busy timeout).

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::error::{bail, Context, Result};

/// Bumped with every schema change; `open` migrates older databases forward.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS images (
    manifest_digest TEXT PRIMARY KEY,
    media_type      TEXT NOT NULL,
    config_digest   TEXT NOT NULL,
    size            INTEGER NOT NULL,
    created         TEXT,
    os              TEXT NOT NULL,
    architecture    TEXT NOT NULL,
    added_at        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS images_config ON images(config_digest);
CREATE TABLE IF NOT EXISTS image_layers (
    manifest_digest TEXT NOT NULL REFERENCES images(manifest_digest) ON DELETE CASCADE,
    idx             INTEGER NOT NULL,
    blob_digest     TEXT NOT NULL,
    media_type      TEXT NOT NULL,
    size            INTEGER NOT NULL,
    diff_id         TEXT NOT NULL,
    chain_id        TEXT NOT NULL,
    PRIMARY KEY (manifest_digest, idx)
);
CREATE TABLE IF NOT EXISTS tags (
    name            TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL REFERENCES images(manifest_digest),
    index_digest    TEXT,
    updated_at      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS repo_digests (
    manifest_digest TEXT NOT NULL REFERENCES images(manifest_digest) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    PRIMARY KEY (manifest_digest, name)
);
CREATE TABLE IF NOT EXISTS layers (
    chain_id        TEXT PRIMARY KEY,
    diff_id         TEXT NOT NULL,
    parent          TEXT,
    tar_size        INTEGER NOT NULL,
    content_size    INTEGER NOT NULL,
    added_at        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_sources (
    digest          TEXT NOT NULL,
    registry        TEXT NOT NULL,
    repository      TEXT NOT NULL,
    PRIMARY KEY (digest, registry, repository)
);
CREATE TABLE IF NOT EXISTS build_cache (
    key             TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL REFERENCES images(manifest_digest) ON DELETE CASCADE,
    added_at        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    id              TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL REFERENCES images(manifest_digest),
    driver          TEXT NOT NULL,
    added_at        INTEGER NOT NULL
);
"#;

pub struct Db {
    pub conn: Connection,
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// One image's row.
#[derive(Debug, Clone)]
pub struct ImageRow {
    pub manifest_digest: String,
    pub media_type: String,
    pub config_digest: String,
    pub size: i64,
    pub created: Option<String>,
    pub os: String,
    pub architecture: String,
    pub added_at: i64,
}

#[derive(Debug, Clone)]
pub struct LayerRow {
    pub idx: i64,
    pub blob_digest: String,
    pub media_type: String,
    pub size: i64,
    pub diff_id: String,
    pub chain_id: String,
}

/// The tables of `SCHEMA`: a database at the current version lacking one is damaged.
const TABLES: [&str; 7] = ["images", "image_layers", "tags", "repo_digests", "layers", "blob_sources", "snapshots"];

/// The size of an SQLite database file's header: a shorter file is no database.
const SQLITE_HEADER_LEN: u64 = 100;

/// Why `Db::open` could not open the database.
#[derive(Debug)]
pub enum OpenError {
    /// There is no `berth.db`.
    Missing,
    /// The file is there but is no usable berth database: empty, not SQLite, truncated,
    /// corrupt, or without berth's schema. Says what was found.
    Damaged(String),
    /// Anything else (a newer schema, a lock held too long): not a sign of damage.
    Other(crate::Error),
}

fn damaged(what: impl std::fmt::Display) -> OpenError {
    OpenError::Damaged(what.to_string())
}

/// SQLite errors that mean the file is not a (sound) database.
fn is_damage(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => {
            matches!(
                f.code,
                DatabaseCorrupt | NotADatabase | SystemIoFailure | CannotOpen | ReadOnly | FileLockingProtocolFailed
            )
        }
        _ => false,
    }
}

fn sqlite_err(path: &Path, what: &str, e: rusqlite::Error) -> OpenError {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
        damaged(format!("is not an SQLite database ({what}: {e})"))
    } else if is_damage(&e) {
        damaged(format!("cannot be read as a database ({what}: {e})"))
    } else {
        OpenError::Other(crate::Error::msg(format!("metadata database {}: {what}: {e}", path.display())))
    }
}

/// Sets WAL mode. A new database's switch takes an exclusive lock without waiting for it:
/// several processes opening the store at once retry.
fn set_wal(conn: &Connection, path: &Path) -> std::result::Result<(), OpenError> {
    let mut tries = 0;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 600 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(sqlite_err(path, "journal_mode=WAL", e)),
        }
    }
}

impl Db {
    /// Opens the existing metadata database at `path` and checks it; never creates one (an
    /// empty or missing file is never taken for a new database: see `Store::open`, which
    /// decides whether the store is new). The file must be SQLite, pass `PRAGMA quick_check`
    /// (which also finds a truncated file) and hold berth's schema.
    pub fn open(path: &Path) -> std::result::Result<Db, OpenError> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(OpenError::Missing),
            Err(e) => return Err(damaged(format!("cannot be read ({e})"))),
        };
        if !meta.is_file() {
            return Err(damaged("is not a regular file"));
        }
        if meta.len() == 0 {
            return Err(damaged("is empty (0 bytes)"));
        }
        // The header is judged from the size and by SQLite itself, never by reading the file
        // through a descriptor of our own: while every command did that before SQLite opened
        // it, commands running side by side read container records older than writes other
        // commands had committed (seen as containers started again being "exited").
        if meta.len() < SQLITE_HEADER_LEN {
            return Err(damaged(format!("is truncated ({} bytes, less than a database header)", meta.len())));
        }
        // Without SQLITE_OPEN_CREATE: a file removed meanwhile is not made again.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| sqlite_err(path, "open", e))?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(|e| sqlite_err(path, "busy_timeout", e))?;
        set_wal(&conn, path)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| sqlite_err(path, "synchronous", e))?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(|e| sqlite_err(path, "foreign_keys", e))?;
        let problems: Vec<String> = conn
            .prepare("PRAGMA quick_check(5)")
            .and_then(|mut st| st.query_map([], |r| r.get::<_, String>(0))?.collect())
            .map_err(|e| {
                if is_damage(&e) {
                    damaged(format!("fails its integrity check ({e})"))
                } else {
                    sqlite_err(path, "quick_check", e)
                }
            })?;
        if problems != ["ok"] {
            return Err(damaged(format!("fails its integrity check ({})", problems.join("; "))));
        }
        // The schema check and any migration in one write transaction (BEGIN IMMEDIATE waits
        // for other writers; a deferred one could fail at once when upgrading its lock).
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| sqlite_err(path, "begin", e))?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| sqlite_err(path, "user_version", e))?;
        if version > SCHEMA_VERSION {
            return Err(OpenError::Other(crate::Error::msg(format!(
                "{}: metadata schema version {version} is newer than this berth supports ({SCHEMA_VERSION})",
                path.display()
            ))));
        }
        if version < 1 {
            return Err(damaged("holds no berth schema (user_version 0)"));
        }
        let tables: Vec<String> = tx
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .and_then(|mut st| st.query_map([], |r| r.get::<_, String>(0))?.collect())
            .map_err(|e| sqlite_err(path, "read the schema", e))?;
        if version == SCHEMA_VERSION {
            if let Some(t) = TABLES.iter().find(|t| !tables.iter().any(|x| x == *t)) {
                return Err(damaged(format!("lacks the {t} table of schema version {version}")));
            }
        } else {
            // Older schemas are migrated forward here (none yet: version 1 is the first).
            tx.execute_batch(SCHEMA).map_err(|e| sqlite_err(path, "migrate the schema", e))?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(|e| sqlite_err(path, "user_version", e))?;
        }
        tx.commit().map_err(|e| sqlite_err(path, "commit", e))?;
        Ok(Db { conn })
    }

    /// Creates a new database at `path` in one step: made and filled with the schema in a
    /// temporary file beside it (mode 0600), closed (which folds its WAL into it), fsynced,
    /// then renamed into place, so a crash leaves either no `berth.db` or a complete one.
    /// With `replace`, a damaged file already at `path` is replaced (with its stale -wal and
    /// -shm, which SQLite would otherwise apply to the new file); without, a database another
    /// process created meanwhile is kept. The caller decided that the store is new.
    pub fn create(path: &Path, replace: bool) -> Result<()> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", berth_storage::unique_suffix()));
        let r = create_at(&tmp, path, replace);
        if r.is_err() {
            remove_db_files(&tmp);
        }
        r
    }

    /// Runs `f` in an immediate (write-locked) transaction.
    pub fn write<T>(&mut self, f: impl FnOnce(&rusqlite::Transaction) -> Result<T>) -> Result<T> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let v = f(&tx)?;
        tx.commit()?;
        Ok(v)
    }

    pub fn images(&self) -> Result<Vec<ImageRow>> {
        let mut st = self.conn.prepare(
            "SELECT manifest_digest, media_type, config_digest, size, created, os, architecture, added_at FROM images ORDER BY added_at DESC, manifest_digest",
        )?;
        let rows = st.query_map([], row_image)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn image(&self, manifest_digest: &str) -> Result<Option<ImageRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT manifest_digest, media_type, config_digest, size, created, os, architecture, added_at FROM images WHERE manifest_digest = ?1",
                [manifest_digest],
                row_image,
            )
            .optional()?)
    }

    pub fn image_layers(&self, manifest_digest: &str) -> Result<Vec<LayerRow>> {
        let mut st = self.conn.prepare(
            "SELECT idx, blob_digest, media_type, size, diff_id, chain_id FROM image_layers WHERE manifest_digest = ?1 ORDER BY idx",
        )?;
        let rows = st
            .query_map([manifest_digest], |r| {
                Ok(LayerRow {
                    idx: r.get(0)?,
                    blob_digest: r.get(1)?,
                    media_type: r.get(2)?,
                    size: r.get(3)?,
                    diff_id: r.get(4)?,
                    chain_id: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn tags_of(&self, manifest_digest: &str) -> Result<Vec<String>> {
        let mut st = self.conn.prepare("SELECT name FROM tags WHERE manifest_digest = ?1 ORDER BY name")?;
        let rows = st.query_map([manifest_digest], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    }

    pub fn tag(&self, name: &str) -> Result<Option<(String, Option<String>)>> {
        Ok(self
            .conn
            .query_row("SELECT manifest_digest, index_digest FROM tags WHERE name = ?1", [name], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    pub fn repo_digests(&self, manifest_digest: &str) -> Result<Vec<String>> {
        let mut st = self.conn.prepare("SELECT name FROM repo_digests WHERE manifest_digest = ?1 ORDER BY name")?;
        let rows = st.query_map([manifest_digest], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    }

    pub fn layer(&self, chain_id: &str) -> Result<Option<(i64, i64)>> {
        Ok(self
            .conn
            .query_row("SELECT tar_size, content_size FROM layers WHERE chain_id = ?1", [chain_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    pub fn blob_sources(&self, digest: &str, registry: &str) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("SELECT repository FROM blob_sources WHERE digest = ?1 AND registry = ?2 ORDER BY repository")?;
        let rows = st.query_map(params![digest, registry], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    }

    pub fn snapshots_of(&self, manifest_digest: &str) -> Result<Vec<String>> {
        let mut st = self.conn.prepare("SELECT id FROM snapshots WHERE manifest_digest = ?1 ORDER BY id")?;
        let rows = st.query_map([manifest_digest], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    }
}

fn row_image(r: &rusqlite::Row) -> rusqlite::Result<ImageRow> {
    Ok(ImageRow {
        manifest_digest: r.get(0)?,
        media_type: r.get(1)?,
        config_digest: r.get(2)?,
        size: r.get(3)?,
        created: r.get(4)?,
        os: r.get(5)?,
        architecture: r.get(6)?,
        added_at: r.get(7)?,
    })
}

pub fn record_blob_source(tx: &rusqlite::Transaction, digest: &str, registry: &str, repository: &str) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO blob_sources (digest, registry, repository) VALUES (?1, ?2, ?3)",
        params![digest, registry, repository],
    )?;
    Ok(())
}

/// Removes a database file and its -wal, -shm and -journal files (those missing are fine).
pub fn remove_db_files(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

fn create_at(tmp: &Path, path: &Path, replace: bool) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .ctx(format!("create {}", tmp.display()))?;
    let conn = Connection::open_with_flags(tmp, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .ctx(format!("open {}", tmp.display()))?;
    let fail = |what: &str, e: rusqlite::Error| crate::Error::msg(format!("{}: {what}: {e}", tmp.display()));
    conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| fail("journal_mode=WAL", e))?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(|e| fail("synchronous", e))?;
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"))
        .map_err(|e| fail("create the schema", e))?;
    // Closing the only connection checkpoints the WAL into the file and removes it.
    conn.close().map_err(|(_, e)| fail("close", e))?;
    for suffix in ["-wal", "-journal"] {
        let mut p = tmp.as_os_str().to_owned();
        p.push(suffix);
        if std::fs::symlink_metadata(&p).map(|m| m.len() > 0).unwrap_or(false) {
            bail!("{}: SQLite left {} behind after closing it", tmp.display(), Path::new(&p).display());
        }
    }
    remove_db_files_except_main(tmp);
    std::fs::File::open(tmp).and_then(|f| f.sync_all()).ctx(format!("fsync {}", tmp.display()))?;
    if replace {
        // The damaged file's WAL and shared memory must not be applied to the new file.
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx(format!("remove {}", Path::new(&p).display())),
            }
        }
        std::fs::rename(tmp, path).ctx(format!("rename {} to {}", tmp.display(), path.display()))?;
    } else {
        match berth_sys::file::rename_noreplace(tmp, path) {
            Ok(()) => {}
            // Another process created it meanwhile: theirs is as good as ours.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => remove_db_files(tmp),
            Err(e) => return Err(e).ctx(format!("rename {} to {}", tmp.display(), path.display())),
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    berth_sys::file::fsync_dir(dir).ctx(format!("fsync {}", dir.display()))
}

fn remove_db_files_except_main(path: &Path) {
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}
