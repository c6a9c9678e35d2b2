//! `berth pull`: manifest (platform selected from an index), config, then every layer in
//! parallel (up to `max-concurrent-downloads`), each downloaded, decompressed and unpacked in
//! one pass: network → ingest file + sha256 → decompressor → sha256 (DiffID) → extractor.
//! The blob is committed once its digest and size are verified, the layer once its DiffID
//! matches the config; the image is recorded last, in one transaction. A layer whose chain
//! ID is already unpacked is not fetched again; an interrupted download resumes.

use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use berth_storage::{Compression, Digest, SizeLimit};

use crate::auth::AuthFile;
use crate::content::Ingest;
use crate::error::{bail, Context, Error, Result};
use crate::manifest::{self, Descriptor, Document, ImageConfig, Platform};
use crate::reference::Reference;
use crate::registry::{BlobStream, Client};
use crate::store::{NewLayer, Store};

/// Progress of a pull (or push), per blob. Implementations must be cheap: `advance` is
/// called for every read.
pub trait Progress: Sync {
    fn begin(&self, id: &str, label: &str, total: u64);
    fn advance(&self, id: &str, bytes: u64);
    fn end(&self, id: &str, status: &str);
    fn note(&self, msg: &str);
}

pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: &str, _: u64) {}
    fn advance(&self, _: &str, _: u64) {}
    fn end(&self, _: &str, _: &str) {}
    fn note(&self, _: &str) {}
}

pub struct PullOptions<'a> {
    pub platform: Option<Platform>,
    pub auth: &'a AuthFile,
    /// Credentials given directly (`--creds`, or by a CRI client): used instead of the
    /// auth file's.
    pub credentials: Option<crate::auth::Credentials>,
    pub progress: &'a dyn Progress,
}

#[derive(Debug, Clone)]
pub struct Pulled {
    pub reference: Reference,
    pub manifest_digest: Digest,
    pub image_id: Digest,
    pub index_digest: Option<Digest>,
}

fn short(d: &Digest) -> String {
    d.short().to_string()
}

/// Pulls `name` into the store.
pub fn pull(store: &Store, name: &str, opts: &PullOptions) -> Result<Pulled> {
    let reference = store.config.resolve(name)?;
    let scope = format!("repository:{}:pull", reference.repository);
    let _lock = store.lock_shared()?;
    // What a killed berth left: its temporary layer directories (named by its pid).
    store.layers.sweep_dead().ctx("sweep layers")?;
    // The configured mirrors in order, then the registry. The manifest comes from the first
    // that has it; each blob from that one or, when it fails there, from the next ones.
    let mut clients = Vec::new();
    for endpoint in store.config.endpoints(&reference.registry) {
        let creds = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None => opts.auth.get(&endpoint)?,
        };
        clients.push(Client::new(&store.config, &reference.registry, &endpoint, creds, vec![scope.clone()]));
    }
    let mut errors = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        match client.get_manifest(&reference.repository, &reference.reference()) {
            Ok(top) => return pull_from(store, &clients[i..], &reference, top, opts),
            Err(e) if i + 1 < clients.len() => {
                opts.progress.note(&format!("mirror {}: {e}; trying the next endpoint", client.endpoint()));
                errors.push(e.to_string());
            }
            Err(e) => {
                if errors.is_empty() {
                    return Err(e);
                }
                errors.push(e.to_string());
                bail!("pull {reference}: {}", errors.join("; "));
            }
        }
    }
    bail!("pull {reference}: no endpoint")
}

/// `f` with each endpoint in turn until one succeeds: a failure before the last is a note.
fn from_endpoints<T>(
    clients: &[Client],
    progress: &dyn Progress,
    what: &str,
    mut f: impl FnMut(&Client) -> Result<T>,
) -> Result<T> {
    for (i, client) in clients.iter().enumerate() {
        match f(client) {
            Ok(v) => return Ok(v),
            Err(e) if i + 1 < clients.len() => {
                progress.note(&format!("{what} from {}: {e}; trying the next endpoint", client.endpoint()))
            }
            Err(e) => return Err(e),
        }
    }
    bail!("{what}: no endpoint")
}

fn pull_from(
    store: &Store,
    clients: &[Client],
    reference: &Reference,
    top: crate::registry::Fetched,
    opts: &PullOptions,
) -> Result<Pulled> {
    let repo = &reference.repository;
    let what = format!("manifest {reference}");
    let (doc, media_type) = manifest::parse_document(&top.bytes, top.content_type.as_deref(), &what)?;
    let (manifest_fetch, media_type, manifest, index_digest) = match doc {
        Document::Index(idx) => {
            let want = opts.platform.clone().unwrap_or_else(Platform::host);
            // Nested indexes are read from the endpoints as manifests, by digest (verified).
            let mut fetch = |_: &Descriptor, d: &Digest| -> Result<Vec<u8>> {
                let what = format!("index {d}");
                Ok(from_endpoints(clients, opts.progress, &what, |c| c.get_manifest(repo, d.as_str()))?.bytes)
            };
            let desc = manifest::select_manifest(&idx, &top.digest, &want, &format!("index {reference}"), &mut fetch)?;
            let d = desc.digest("index manifests")?;
            let f =
                from_endpoints(clients, opts.progress, &format!("manifest {d}"), |c| c.get_manifest(repo, d.as_str()))?;
            if f.bytes.len() as u64 != desc.size("index manifest")? {
                bail!(DataLoss, "manifest {d}: size mismatch with the index ({} vs {})", f.bytes.len(), desc.size);
            }
            let w = format!("manifest {}@{d}", reference.name());
            let (doc, mt) = manifest::parse_document(&f.bytes, f.content_type.as_deref(), &w)?;
            let Document::Manifest(m) = doc else { bail!("{w}: listed as an image manifest, but it is an index") };
            store.content.write_blob(&top.bytes, Some(&top.digest))?;
            (f, mt, m, Some(top.digest.clone()))
        }
        Document::Manifest(m) => {
            if let Some(p) = &opts.platform {
                opts.progress.note(&format!(
                    "{reference} is a single-platform image; --platform {p} is checked against its config"
                ));
            }
            (top, media_type, m, None)
        }
    };
    let manifest_digest = manifest_fetch.digest.clone();
    let config_digest = manifest.config.digest("config")?;
    let config_size = manifest.config.size("config")?;
    let config_bytes = if store.content.contains(&config_digest) {
        store.content.read(&config_digest)?
    } else {
        let b = from_endpoints(clients, opts.progress, &format!("config {config_digest}"), |c| {
            c.get_small_blob(repo, &config_digest, config_size)
        })?;
        store.content.write_blob(&b, Some(&config_digest))?;
        b
    };
    let config = manifest::parse_config(&config_bytes, &format!("image config {config_digest}"))?;
    if let Some(p) = &opts.platform {
        if config.os != p.os || config.architecture != p.architecture {
            bail!("{reference}: image is {}/{}, not {p}", config.os, config.architecture);
        }
    }
    let layers = fetch_layers(store, Some((clients, repo)), &manifest.layers, &config, opts.progress)?;
    store.content.write_blob(&manifest_fetch.bytes, Some(&manifest_digest))?;
    let tag = reference.tagged();
    store.register(
        &manifest_fetch.bytes,
        &media_type,
        &config,
        &layers,
        tag.as_deref(),
        index_digest.as_ref(),
        Some(reference),
    )?;
    crate::events::emit(&store.root, "image", "pull", config_digest.as_str(), &[("name", &reference.to_string())]);
    Ok(Pulled { reference: reference.clone(), manifest_digest, image_id: config_digest, index_digest })
}

/// Makes every layer of an image present (blob in the content store, unpacked under its
/// chain ID), fetching from `remote` (endpoints in order of preference, and the repository)
/// what is missing, in parallel.
pub fn fetch_layers(
    store: &Store,
    remote: Option<(&[Client], &str)>,
    descs: &[Descriptor],
    config: &ImageConfig,
    progress: &dyn Progress,
) -> Result<Vec<NewLayer>> {
    if descs.len() != config.rootfs.diff_ids.len() {
        bail!(
            "image has {} layers but its config lists {} diff_ids (rootfs.diff_ids)",
            descs.len(),
            config.rootfs.diff_ids.len()
        );
    }
    let mut plan = Vec::new();
    let mut parent: Option<Digest> = None;
    for (i, (d, diff)) in descs.iter().zip(&config.rootfs.diff_ids).enumerate() {
        let blob = d.digest(&format!("layers[{i}]"))?;
        let diff_id = Digest::parse(diff).map_err(|e| Error::msg(format!("rootfs.diff_ids[{i}]: {e}")))?;
        let chain = Digest::chain(parent.as_ref(), &diff_id);
        parent = Some(chain.clone());
        plan.push((d.clone(), blob, diff_id, chain));
    }
    // The image's unpacked size, counted by every layer (those already here too).
    let limit = berth_storage::SizeLimit::new(store.config.max_image_size(), "storage.max-image-size in berth.toml");
    let workers = store.config.registries.max_concurrent_downloads.min(plan.len()).max(1);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<NewLayer>>>> = Mutex::new((0..plan.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= plan.len() || failed.load(Ordering::SeqCst) {
                    break;
                }
                let (d, blob, diff_id, chain) = &plan[i];
                let r = ensure_layer(store, remote, d, blob, diff_id, chain, &limit, progress);
                if r.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    let mut out = Vec::new();
    for (i, r) in results.into_inner().unwrap().into_iter().enumerate() {
        match r {
            Some(Ok(l)) => out.push(l),
            Some(Err(e)) => return Err(e),
            None => {
                if failed.load(Ordering::SeqCst) {
                    continue;
                }
                bail!("layer {i} was not processed");
            }
        }
    }
    if out.len() != plan.len() {
        bail!("pull failed");
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn ensure_layer(
    store: &Store,
    remote: Option<(&[Client], &str)>,
    desc: &Descriptor,
    blob: &Digest,
    diff_id: &Digest,
    chain: &Digest,
    limit: &SizeLimit,
    progress: &dyn Progress,
) -> Result<NewLayer> {
    let id = short(blob);
    let size = desc.size("layer")?;
    let compression =
        Compression::from_media_type(&desc.media_type).map_err(|e| Error::msg(format!("layer {blob}: {e}")))?;
    let new_layer = |tar_size: u64, content_size: u64| NewLayer {
        blob: blob.clone(),
        media_type: desc.media_type.clone(),
        size,
        diff_id: diff_id.clone(),
        chain_id: chain.clone(),
        tar_size,
        content_size,
    };
    let recorded = store.db().layer(chain.as_str())?;
    let unpacked = recorded.is_some() && store.layers.contains(chain);
    if let (Some((t, c)), true) = (recorded, unpacked) {
        // Already unpacked: it counts as it was measured then.
        let size = t.max(c).max(0) as u64;
        limit.take(size).map_err(|m| Error::msg(format!("layer {blob} (already unpacked, {size} bytes): {m}")))?;
    }
    progress.begin(&id, &format!("layer {id}"), size);
    if unpacked && store.content.contains(blob) {
        progress.end(&id, "already exists");
        let (t, c) = recorded.unwrap();
        return Ok(new_layer(t as u64, c as u64));
    }
    if !store.content.contains(blob) {
        let Some((clients, repo)) = remote else {
            bail!("layer {blob} is not in the content store");
        };
        let layer = Layer { blob, diff_id, chain, compression, size, recorded: recorded.filter(|_| unpacked), limit };
        for (i, client) in clients.iter().enumerate() {
            // None: another process stored the blob meanwhile.
            let Some(ingest) = store.content.ingest(blob, Some(size))? else { break };
            match download_layer(store, client, repo, ingest, &layer, progress, &id) {
                Ok((tar_size, content_size, status)) => {
                    progress.end(&id, status);
                    return Ok(new_layer(tar_size, content_size));
                }
                Err((e, Failure::Transfer)) if i + 1 < clients.len() => {
                    progress.note(&format!("layer {blob} from {}: {e}; trying the next endpoint", client.endpoint()))
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
    // The blob is local: unpack it from the content store.
    if unpacked {
        progress.end(&id, "already exists");
        let (t, c) = recorded.unwrap();
        return Ok(new_layer(t as u64, c as u64));
    }
    let stats = unpack_local(store, blob, compression, diff_id, chain, limit)?;
    progress.end(&id, "unpacked");
    Ok(new_layer(stats.tar_size, stats.content_bytes))
}

/// A layer to fetch: what `download_layer` needs to know.
struct Layer<'a> {
    blob: &'a Digest,
    diff_id: &'a Digest,
    chain: &'a Digest,
    compression: Compression,
    size: u64,
    /// (tar size, content size) when the layer is unpacked and recorded (only its blob is
    /// missing).
    recorded: Option<(i64, i64)>,
    /// The image's unpacked size so far.
    limit: &'a SizeLimit,
}

/// Why a download failed: the transfer (the endpoint failed, or sent other content: another
/// endpoint may do better) or the content (the same everywhere: a hostile layer, a DiffID
/// that does not match) or a local error.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Transfer,
    Content,
}

/// Downloads a layer blob from `client` (resuming `ingest`) and unpacks it as it arrives;
/// both are committed once verified. Returns the tar and content sizes and how it went.
fn download_layer(
    store: &Store,
    client: &Client,
    repo: &str,
    mut ingest: Ingest,
    l: &Layer,
    progress: &dyn Progress,
    id: &str,
) -> std::result::Result<(u64, u64, &'static str), (Error, Failure)> {
    let transfer = |e: Error| (e, Failure::Transfer);
    let content = |e: Error| (e, Failure::Content);
    let (blob, size) = (l.blob, l.size);
    if let Some((t, c)) = l.recorded {
        // The layer is here but its blob was lost: fetch the blob only.
        let mut net = client.blob_stream(repo, blob, ingest.offset(), size);
        copy_into_ingest(&mut net, &mut ingest, progress, id).map_err(transfer)?;
        ingest.commit(&store.content).map_err(transfer)?;
        return Ok((t as u64, c as u64, "blob restored"));
    }
    let resumed = ingest.offset();
    let mut tmp = store.layers.temp().ctx("layers directory").map_err(content)?;
    let existing = ingest.existing().map_err(content)?.take(resumed);
    let net = client.blob_stream(repo, blob, resumed, size);
    let mut reader =
        TeeReader { existing: Some(existing), net, ingest: &mut ingest, progress, id, done: 0, net_failed: false };
    let unpacked = berth_storage::unpack_within(&mut reader, l.compression, tmp.path(), blob.as_str(), l.limit);
    // Read to the end so the digest covers everything, also after an unpack error: a corrupt
    // blob is then reported as the digest mismatch it is.
    let drained = io::copy(&mut reader, &mut io::sink());
    let net_failed = reader.net_failed;
    let stats = match (unpacked, drained) {
        (Ok(s), Ok(_)) => s,
        (Ok(_), Err(e)) => {
            let e = Error::msg(format!("layer {blob}: {e}"));
            return Err(if net_failed { transfer(e) } else { content(e) });
        }
        (Err(e), Ok(_)) => {
            let got = ingest.hasher.digest();
            if ingest.hasher.len == size && got != *blob {
                let _ = ingest.reset();
                return Err(transfer(Error::msg(format!(
                    "layer {blob}: digest mismatch: the registry sent content hashing to {got} ({e})"
                ))));
            }
            return Err(content(e));
        }
        (Err(e), Err(_)) => return Err(if net_failed { transfer(e) } else { content(e) }),
    };
    // Nothing is committed before everything is verified: the blob against its digest, then
    // the layer against the config's DiffID (a hostile config could otherwise claim another
    // image's DiffID and plant its files under that chain ID).
    ingest.verify().map_err(transfer)?;
    if let Err(e) = check_diff_id(blob, l.diff_id, &stats.diff_id) {
        ingest.discard();
        return Err(content(e));
    }
    ingest.commit(&store.content).map_err(content)?;
    store.commit_layer(&mut tmp, l.chain).map_err(content)?;
    Ok((stats.tar_size, stats.content_bytes, if resumed > 0 { "pulled (resumed)" } else { "pulled" }))
}

/// Unpacks a blob of the content store as layer `chain`, once its DiffID is verified.
pub fn unpack_local(
    store: &Store,
    blob: &Digest,
    compression: Compression,
    diff_id: &Digest,
    chain: &Digest,
    limit: &SizeLimit,
) -> Result<berth_storage::UnpackStats> {
    let mut tmp = store.layers.temp().ctx("layers directory")?;
    let file = store.content.open_blob(blob)?;
    let mut r = io::BufReader::with_capacity(256 << 10, file);
    let stats = berth_storage::unpack_within(&mut r, compression, tmp.path(), blob.as_str(), limit)?;
    check_diff_id(blob, diff_id, &stats.diff_id)?;
    store.commit_layer(&mut tmp, chain)?;
    Ok(stats)
}

pub fn check_diff_id(blob: &Digest, expected: &Digest, got: &Digest) -> Result<()> {
    if expected != got {
        bail!(DataLoss, "layer {blob}: DiffID mismatch: the image config (rootfs.diff_ids) says {expected}, the uncompressed layer is {got}");
    }
    Ok(())
}

fn copy_into_ingest(net: &mut BlobStream, ingest: &mut Ingest, progress: &dyn Progress, id: &str) -> Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    let mut done = ingest.offset();
    loop {
        let n = net.read(&mut buf).map_err(|e| Error::msg(e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        ingest.append(&buf[..n])?;
        done += n as u64;
        progress.advance(id, done);
    }
}

/// What was already downloaded (from the ingest file), then the network, whose bytes are
/// appended to the ingest (and hashed) as they pass.
struct TeeReader<'a> {
    existing: Option<io::Take<File>>,
    net: BlobStream,
    ingest: &'a mut Ingest,
    progress: &'a dyn Progress,
    id: &'a str,
    done: u64,
    /// Set when the network stream failed (its retries used up).
    net_failed: bool,
}

impl Read for TeeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &mut self.existing {
            let n = e.read(buf)?;
            if n > 0 {
                self.done += n as u64;
                return Ok(n);
            }
            self.existing = None;
        }
        let n = self.net.read(buf).inspect_err(|_| self.net_failed = true)?;
        if n > 0 {
            self.ingest.append(&buf[..n]).map_err(|e| io::Error::other(e.to_string()))?;
            self.done += n as u64;
            self.progress.advance(self.id, self.done);
        }
        Ok(n)
    }
}
