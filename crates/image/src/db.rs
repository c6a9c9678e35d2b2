//! The metadata database (SQLite in WAL mode, `berth.db`): images, their layers and tags,
//! unpacked layers, where blobs came from (for cross-repository mounts) and the container
//! snapshots that keep images alive. Several processes use it at once; every change is one
//! transaction, and writers wait for each other (busy timeout).

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::error::{Context, Result};

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

impl Db {
    pub fn open(path: &Path) -> Result<Db> {
        let mut conn = Connection::open(path).ctx(format!("open {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(60))?;
        // Switching a new database to WAL takes an exclusive lock without waiting for it:
        // several processes opening the store at once retry.
        let mut tries = 0;
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 600 =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e).ctx(format!("{}: journal_mode=WAL", path.display())),
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Schema check and creation in one write transaction (BEGIN IMMEDIATE waits for
        // other writers; a deferred one could fail at once when upgrading its lock).
        {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version > SCHEMA_VERSION {
                return Err(crate::Error::msg(format!(
                    "{}: metadata schema version {version} is newer than this berth supports ({SCHEMA_VERSION})",
                    path.display()
                )));
            }
            tx.execute_batch(SCHEMA).ctx(format!("{}: create schema", path.display()))?;
            if version < SCHEMA_VERSION {
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            tx.commit()?;
        }
        Ok(Db { conn })
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
