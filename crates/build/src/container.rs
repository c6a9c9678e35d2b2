//! docker's `diff`, `commit` and `export` for a container: its snapshot's upper directory
//! read as changes, written as a layer of a new image, or its whole root filesystem as a tar.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use berth_engine::{Container, Engine};
use berth_storage::{Compression, Digest};
use berth_sys::Error;
use serde_json::{json, Value};

use crate::layer::{self, Format};

/// A change in a container's files, as `diff` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// 'A' added, 'C' changed, 'D' deleted
    pub kind: char,
    /// absolute in the container
    pub path: String,
}

/// The container's upper directory and its image's layer directories; `Unsupported` for a
/// store without an upper directory (the copy driver).
fn upper_and_lowers(engine: &Engine, c: &Container) -> Result<(PathBuf, Vec<PathBuf>), Error> {
    let upper = engine.store.snapshots.path(&c.id).join("upper");
    if !upper.is_dir() {
        return Err(Error::unsupported(format!(
            "container {}: its snapshot has no upper directory (the copy storage driver keeps none)",
            c.name
        )));
    }
    let img = engine.store.resolve(&c.image_id)?;
    Ok((upper, engine.store.layer_dirs(&img)?))
}

/// What the runtime made in the container's root for its mounts (and the image lacked).
fn made_for_mounts(c: &Container, lowers: &[PathBuf], upper: &Path) -> std::collections::BTreeSet<String> {
    let mut targets: Vec<String> = layer::RUNTIME_MOUNTS.iter().map(|s| s.to_string()).collect();
    targets.extend(c.config.mounts.iter().map(|m| m.destination.trim_start_matches('/').to_string()));
    layer::runtime_made(lowers, upper, &targets)
}

/// The container's changes to its image's files, in path order.
pub fn changes(engine: &Engine, c: &Container) -> Result<Vec<Change>, Error> {
    let (upper, lowers) = upper_and_lowers(engine, c)?;
    let skip = made_for_mounts(c, &lowers, &upper);
    let mut out = Vec::new();
    walk(&upper, "", &lowers, &skip, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(
    dir: &Path,
    rel: &str,
    lowers: &[PathBuf],
    skip: &std::collections::BTreeSet<String>,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let entries = std::fs::read_dir(dir).map_err(|e| Error::from_io(e).context(dir.display().to_string()))?;
    for e in entries {
        let e = e.map_err(|e| Error::from_io(e).context(dir.display().to_string()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        if skip.contains(&path) {
            continue;
        }
        let m = std::fs::symlink_metadata(e.path()).map_err(|err| Error::from_io(err).context(path.clone()))?;
        let kind = if m.file_type().is_char_device() && m.rdev() == 0 {
            'D'
        } else if layer::exists_in_layers(lowers, &path) {
            'C'
        } else {
            'A'
        };
        let at = out.len();
        out.push(Change { kind, path: format!("/{path}") });
        if m.is_dir() {
            walk(&e.path(), &path, lowers, skip, out)?;
            // A directory of the image copied up only to hold mount targets (/etc for
            // /etc/hosts) changed nothing the user did.
            let held_only_mounts = std::fs::read_dir(e.path())
                .map(|d| d.flatten().all(|c| skip.contains(&format!("{path}/{}", c.file_name().to_string_lossy()))))
                .unwrap_or(false);
            if kind == 'C' && out.len() == at + 1 && held_only_mounts {
                out.pop();
            }
        }
    }
    Ok(())
}

/// What `commit` makes.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// REPOSITORY[:TAG]; None: an untagged image
    pub reference: Option<String>,
    pub message: Option<String>,
    pub author: Option<String>,
    /// Containerfile instructions applied to the image's config (`-c 'CMD ["sh"]'`)
    pub changes: Vec<String>,
    /// Freeze a running container while its files are read (docker's default).
    pub pause: bool,
}

/// A new image: the container's image, its changes as one more layer, and its config (the
/// container's own command, environment, working directory and user, then `changes`).
pub fn commit(engine: &Engine, c: &Container, opts: &CommitOptions) -> Result<Digest, Error> {
    let store = &engine.store;
    let _lock = store.lock_shared()?;
    let img = store.resolve(&c.image_id)?;
    let raw = store.content.read(&img.id())?;
    let mut config: Value =
        serde_json::from_slice(&raw).map_err(|e| Error::msg(format!("image {}: its config: {e}", c.image_id)))?;
    apply_container_config(&mut config, c);
    config = crate::builder::apply_changes(engine, config, &opts.changes)?;
    let (upper, lowers) = upper_and_lowers(engine, c)?;
    let skip = made_for_mounts(c, &lowers, &upper);
    let paused = opts.pause && c.running() && !c.state.paused;
    if paused {
        engine.pause(&c.id)?;
    }
    let mut layers = layer::image_layers(&img)?;
    let made =
        // (The container keeps its upper directory: the layer is unpacked from the blob.)
        layer::commit_layer(store, &upper, layers.last().map(|l| &l.chain_id), Compression::Gzip, Format::Oci, &skip, false);
    if paused {
        let _ = engine.unpause(&c.id);
    }
    layers.push(made?);
    let now = berth_image::archive::now_rfc3339();
    config["created"] = json!(now);
    if let Some(a) = &opts.author {
        config["author"] = json!(a);
    }
    let mut entry = json!({"created": now, "created_by": format!("berth commit {}", c.name)});
    if let Some(m) = &opts.message {
        entry["comment"] = json!(m);
    }
    if let Some(a) = &opts.author {
        entry["author"] = json!(a);
    }
    match config["history"].as_array_mut() {
        Some(h) => h.push(entry),
        None => config["history"] = json!([entry]),
    }
    let tag = match &opts.reference {
        Some(r) => Some(
            store
                .config
                .resolve(r)?
                .tagged()
                .ok_or_else(|| Error::invalid(format!("{r}: a tag is needed, not a digest")))?,
        ),
        None => None,
    };
    let (_, id) = layer::register(store, config, &layers, Format::Oci, tag.as_deref())?;
    berth_image::events::emit(
        &store.root,
        "image",
        "commit",
        id.as_str(),
        &[("name", tag.as_deref().unwrap_or("")), ("container", &c.name)],
    );
    Ok(id)
}

/// The container's own settings over its image's: its command, environment, working
/// directory and user (what `run` was given).
fn apply_container_config(config: &mut Value, c: &Container) {
    if !config["config"].is_object() {
        config["config"] = json!({});
    }
    let cfg = &mut config["config"];
    if !c.config.env.is_empty() {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut order = Vec::new();
        let old: Vec<String> = cfg["Env"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        for e in old.iter().chain(&c.config.env) {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            if env.insert(k.to_string(), v.to_string()).is_none() {
                order.push(k.to_string());
            }
        }
        cfg["Env"] = json!(order.iter().map(|k| format!("{k}={}", env[k])).collect::<Vec<_>>());
    }
    if let Some(ep) = &c.config.entrypoint {
        cfg["Entrypoint"] = if ep.is_empty() { Value::Null } else { json!(ep) };
        if c.config.command.is_none() {
            cfg["Cmd"] = Value::Null;
        }
    }
    if let Some(cmd) = &c.config.command {
        cfg["Cmd"] = json!(cmd);
    }
    if let Some(w) = &c.config.workdir {
        cfg["WorkingDir"] = json!(w);
    }
    if let Some(u) = c.config.user.as_ref().filter(|u| !u.user.is_empty()) {
        cfg["User"] = json!(u.as_user_group());
    }
}

/// Writes the container's whole root filesystem as a tar to `out` (mounting it for the
/// while if it is not).
pub fn export(engine: &Engine, c: &Container, out: impl Write) -> Result<(), Error> {
    let store = &engine.store;
    let rootfs = store.snapshots.rootfs(&c.id);
    let was_mounted = berth_sys::proc::is_mountpoint(&rootfs).unwrap_or(false);
    let rootfs = if was_mounted { rootfs } else { store.mount_snapshot(&c.id)? };
    let written = berth_storage::write_layer(&rootfs, Compression::None, out, &|_| false);
    if !was_mounted && !c.running() {
        let _ = store.snapshots.unmount(&c.id);
    }
    let (_, mut out) = written?;
    out.flush().map_err(|e| Error::from_io(e).context("export"))?;
    Ok(())
}
