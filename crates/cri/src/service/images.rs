//! The ImageService on the store the CLI shares: ListImages, ImageStatus, PullImage,
//! RemoveImage and ImageFsInfo. Images are known by their ID (`sha256:` and the config's
//! digest), the form kubelet passes back to CreateContainer.

use std::collections::HashMap;

use base64::Engine as _;
use berth_image::auth::{AuthFile, Credentials};
use berth_image::pull::{self, NoProgress, PullOptions};
use berth_image::store::Image;
use berth_image::Store;
use tonic::Status;

use super::{batches, required, Cri, ResponseStream};
use crate::proto as pb;

pub async fn list(cri: &Cri, r: pb::ListImagesRequest) -> Result<pb::ListImagesResponse, Status> {
    let wanted = r.filter.and_then(|f| f.image).map(|i| i.image).filter(|i| !i.is_empty());
    cri.blocking(move |e| {
        let only = match &wanted {
            Some(name) => match e.store.resolve(name) {
                Ok(img) => Some(img.id().to_string()),
                Err(err) if err.is(berth_engine::Kind::NotFound) => return Ok(Vec::new()),
                Err(err) => return Err(err),
            },
            None => None,
        };
        images(&e.store, only.as_deref())
    })
    .await
    .map(|images| pb::ListImagesResponse { images })
}

pub async fn stream(cri: &Cri, r: pb::StreamImagesRequest) -> Result<ResponseStream<pb::StreamImagesResponse>, Status> {
    let items = list(cri, pb::ListImagesRequest { filter: r.filter }).await?.images;
    Ok(batches(items, |images| pb::StreamImagesResponse { images }))
}

/// The image, or none (not an error) when the store does not have it.
pub async fn status(cri: &Cri, r: pb::ImageStatusRequest) -> Result<pb::ImageStatusResponse, Status> {
    let name = required(&r.image, "image")?.image.clone();
    if name.is_empty() {
        return Err(Status::invalid_argument("image.image: empty"));
    }
    let verbose = r.verbose;
    cri.blocking(move |e| {
        let img = match e.store.resolve(&name) {
            Ok(img) => img,
            Err(err) if err.is(berth_engine::Kind::NotFound) => {
                return Ok(pb::ImageStatusResponse { image: None, info: HashMap::new() })
            }
            Err(err) => return Err(err),
        };
        let id = img.id().to_string();
        let image = images(&e.store, Some(&id))?.pop();
        let mut info = HashMap::new();
        if verbose {
            info.insert("info".to_string(), e.store.inspect(&img)?.to_string());
        }
        Ok(pb::ImageStatusResponse { image, info })
    })
    .await
}

/// Pulls the image (the credentials given, else the auth file's) and returns its ID.
pub async fn pull(cri: &Cri, r: pb::PullImageRequest) -> Result<pb::PullImageResponse, Status> {
    let name = required(&r.image, "image")?.image.clone();
    if name.is_empty() {
        return Err(Status::invalid_argument("image.image: empty"));
    }
    let credentials = r.auth.as_ref().map(credentials).transpose()?.flatten();
    let image_ref = cri
        .blocking(move |e| {
            let auth = AuthFile::locate(None);
            let opts = PullOptions { platform: None, auth: &auth, credentials, progress: &NoProgress };
            let pulled = pull::pull(&e.store, &name, &opts)?;
            Ok(pulled.image_id.to_string())
        })
        .await?;
    Ok(pb::PullImageResponse { image_ref })
}

/// CRI's AuthConfig: a user name and password, or `auth` (base64 of `user:password`).
fn credentials(a: &pb::AuthConfig) -> Result<Option<Credentials>, Status> {
    if !a.username.is_empty() || !a.password.is_empty() {
        return Ok(Some(Credentials { username: a.username.clone(), password: a.password.clone() }));
    }
    if !a.auth.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|_| Status::invalid_argument("auth.auth: not base64"))?;
        let text = String::from_utf8(raw).map_err(|_| Status::invalid_argument("auth.auth: not UTF-8"))?;
        let (username, password) =
            text.split_once(':').ok_or_else(|| Status::invalid_argument("auth.auth: not user:password"))?;
        return Ok(Some(Credentials { username: username.into(), password: password.into() }));
    }
    if !a.identity_token.is_empty() || !a.registry_token.is_empty() {
        return Err(Status::unimplemented(
            "auth.identity_token, auth.registry_token: tokens are not supported by berthd yet",
        ));
    }
    Ok(None)
}

/// Removes the image (all its tags); an image the store does not have is removed. One a
/// container still uses is refused.
pub async fn remove(cri: &Cri, r: pb::RemoveImageRequest) -> Result<pb::RemoveImageResponse, Status> {
    let name = required(&r.image, "image")?.image.clone();
    if name.is_empty() {
        return Err(Status::invalid_argument("image.image: empty"));
    }
    cri.blocking(move |e| {
        let img = match e.store.resolve(&name) {
            Ok(img) => img,
            Err(err) if err.is(berth_engine::Kind::NotFound) => return Ok(()),
            Err(err) => return Err(err),
        };
        // Another RemoveImage of the same image may finish first: gone is removed.
        match e.store.remove_image(&img.id().to_string(), true) {
            Err(err) if err.is(berth_engine::Kind::NotFound) => Ok(()),
            r => r.map(|_| ()),
        }
    })
    .await?;
    Ok(pb::RemoveImageResponse {})
}

/// The store's file system: bytes and inodes its images use (blobs and unpacked layers).
pub async fn fs_info(cri: &Cri, _r: pb::ImageFsInfoRequest) -> Result<pb::ImageFsInfoResponse, Status> {
    cri.blocking(|e| {
        let usage = e.store.usage()?;
        let inodes = berth_engine::stats::tree_usage(&e.store.root.join("layers")).1
            + berth_engine::stats::tree_usage(&e.store.root.join("content")).1;
        let timestamp = berth_time::now_nanos() as i64;
        Ok(pb::ImageFsInfoResponse {
            image_filesystems: vec![pb::FilesystemUsage {
                timestamp,
                fs_id: Some(pb::FilesystemIdentifier { mountpoint: e.store.root.display().to_string() }),
                used_bytes: Some(pb::UInt64Value { value: usage.blob_bytes + usage.layer_bytes }),
                inodes_used: Some(pb::UInt64Value { value: inodes }),
            }],
            container_filesystems: Vec::new(),
        })
    })
    .await
}

/// The store's images as CRI lists them (one per ID, with the tags and digests of all its
/// manifests); only `only` when given.
fn images(store: &Store, only: Option<&str>) -> berth_engine::Result<Vec<pb::Image>> {
    let mut by_id: Vec<(String, Image)> = Vec::new();
    let mut merged: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    for img in store.list()? {
        let id = img.id().to_string();
        if only.is_some_and(|o| o != id) {
            continue;
        }
        let entry = merged.entry(id.clone()).or_default();
        entry.0.extend(img.tags.iter().cloned());
        entry.1.extend(img.repo_digests.iter().cloned());
        if !by_id.iter().any(|(i, _)| *i == id) {
            by_id.push((id, img));
        }
    }
    let mut out = Vec::new();
    for (id, img) in by_id {
        let (mut repo_tags, mut repo_digests) = merged.remove(&id).unwrap_or_default();
        repo_tags.sort();
        repo_tags.dedup();
        repo_digests.sort();
        repo_digests.dedup();
        let user = store.image_config(&img).ok().and_then(|(_, c)| c.config).and_then(|c| c.user).unwrap_or_default();
        let user = user.split(':').next().unwrap_or_default().to_string();
        let (uid, username) = match user.parse::<i64>() {
            Ok(n) => (Some(pb::Int64Value { value: n }), String::new()),
            Err(_) => (None, user),
        };
        out.push(pb::Image {
            id: id.clone(),
            repo_tags,
            repo_digests,
            size: u64::try_from(img.row.size).unwrap_or(0),
            uid,
            username,
            spec: Some(pb::ImageSpec { image: id, ..Default::default() }),
            pinned: false,
        });
    }
    Ok(out)
}
