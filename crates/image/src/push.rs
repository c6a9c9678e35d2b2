//! `berth push`: an image of the store to a registry. Each blob (layers, config) is checked
//! first (HEAD); a missing one is mounted from another repository of the same registry it is
//! known to be in, when the registry allows it, and uploaded otherwise; the manifest last.

use berth_storage::Digest;

use crate::auth::AuthFile;
use crate::error::{Context, Result};
use crate::pull::Progress;
use crate::registry::Client;
use crate::store::Store;

pub struct PushOptions<'a> {
    pub auth: &'a AuthFile,
    /// Credentials given directly, used instead of the auth file's.
    pub credentials: Option<crate::auth::Credentials>,
    pub progress: &'a dyn Progress,
}

#[derive(Debug, Default)]
pub struct Pushed {
    pub manifest_digest: String,
    pub uploaded: usize,
    pub mounted: usize,
    pub existing: usize,
}

/// Pushes local image `source` as `dest` (a reference with a registry; defaults to `source`).
pub fn push(store: &Store, source: &str, dest: Option<&str>, opts: &PushOptions) -> Result<Pushed> {
    let img = store.resolve(source)?;
    let dest = store.config.resolve(dest.unwrap_or(source))?;
    // Garbage collection waits until the blobs are sent.
    let _lock = store.lock_shared()?;
    let repo = dest.repository.clone();
    let manifest = store.manifest_bytes(&img)?;
    let mut blobs: Vec<(Digest, String)> = Vec::new();
    for l in &img.layers {
        blobs.push((Digest::parse(&l.blob_digest)?, l.media_type.clone()));
    }
    blobs.push((img.id(), "config".into()));
    // Where each blob is known to be on this registry (for cross-repository mounts).
    let mut sources = Vec::new();
    for (d, _) in &blobs {
        let from: Vec<String> =
            store.db().blob_sources(d.as_str(), &dest.registry)?.into_iter().filter(|r| *r != repo).collect();
        sources.push(from);
    }
    let mut scopes = vec![format!("repository:{repo}:pull,push")];
    for s in sources.iter().flatten() {
        let sc = format!("repository:{s}:pull");
        if !scopes.contains(&sc) {
            scopes.push(sc);
        }
    }
    let creds = match &opts.credentials {
        Some(c) => Some(c.clone()),
        None => opts.auth.get(&dest.registry)?,
    };
    let client = Client::new(&store.config, &dest.registry, &dest.registry, creds, scopes);
    let mut out = Pushed::default();
    for ((digest, _), from) in blobs.iter().zip(&sources) {
        let id = digest.short().to_string();
        let size = store.content.size(digest)?;
        opts.progress.begin(&id, &format!("blob {id}"), size);
        if client.blob_exists(&repo, digest)? {
            opts.progress.end(&id, "already exists");
            out.existing += 1;
            continue;
        }
        let mut location = None;
        let mut mounted = false;
        for f in from {
            match client.mount_blob(&repo, digest, f) {
                Ok(None) => {
                    mounted = true;
                    out.mounted += 1;
                    opts.progress.end(&id, &format!("mounted from {f}"));
                    break;
                }
                Ok(Some(loc)) => {
                    // Not mountable from there: the registry opened an upload instead.
                    location = Some(loc);
                    break;
                }
                Err(e) => opts.progress.note(&format!("mount of {digest} from {f}: {e}")),
            }
        }
        if mounted {
            continue;
        }
        let location = match location {
            Some(l) => l,
            None => client.start_upload(&repo)?,
        };
        let path = store.content.path(digest);
        let open = || -> std::io::Result<Box<dyn std::io::Read>> { Ok(Box::new(std::fs::File::open(&path)?)) };
        client.finish_upload(&location, digest, &open, size).ctx(format!("push {dest}"))?;
        opts.progress.advance(&id, size);
        opts.progress.end(&id, "pushed");
        out.uploaded += 1;
    }
    let tag = dest.tag.clone().unwrap_or_else(|| img.manifest_digest().to_string());
    client.put_manifest(&repo, &tag, &manifest, &img.row.media_type)?;
    store.db().write(|tx| {
        for (d, _) in &blobs {
            crate::db::record_blob_source(tx, d.as_str(), &dest.registry, &repo)?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO repo_digests (manifest_digest, name) VALUES (?1, ?2)",
            rusqlite::params![img.row.manifest_digest, format!("{}@{}", dest.name(), img.row.manifest_digest)],
        )?;
        Ok(())
    })?;
    out.manifest_digest = img.row.manifest_digest.clone();
    crate::events::emit(&store.root, "image", "push", img.id().as_str(), &[("name", &dest.to_string())]);
    Ok(out)
}
