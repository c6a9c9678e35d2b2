//! The steps that change files: RUN (a container made by the engine from the stage's state,
//! its upper directory the layer) and COPY/ADD (files copied into a snapshot of the state,
//! its upper directory the layer).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_engine::attach::AttachConn;
use berth_engine::container::config::{Mount, MountSource, NetworkMode, UserSpec};
use berth_engine::{ContainerConfig, Engine};
use berth_image::store::{NewLayer, Store};
use berth_storage::Driver;
use berth_sys::Error;

use crate::builder::{in_workdir, Builder, State};
use crate::copy::{self, CopyOptions, Destination, Origin};
use crate::layer;
use crate::parse::{Instruction, Keyword};

/// A cache key from its parts.
fn key(parts: &[&str]) -> String {
    crate::builder::sha(&parts.iter().map(|p| p.as_bytes()).collect::<Vec<_>>())
}

/// A snapshot the builder works in, removed when dropped: mounted over `lowers` (overlay),
/// or, with no lowers (FROM scratch), a plain directory that is its own upper.
struct WorkSnapshot<'a> {
    store: &'a Store,
    id: String,
    rootfs: PathBuf,
    upper: PathBuf,
}

impl<'a> WorkSnapshot<'a> {
    fn new(store: &'a Store, lowers: &[PathBuf]) -> Result<WorkSnapshot<'a>, Error> {
        let id = format!("{}{}", crate::builder::owner_tag(), &berth_engine::random_id()[..16]);
        let snaps = &store.snapshots;
        if lowers.is_empty() {
            let upper = snaps.path(&id).join("upper");
            std::fs::create_dir_all(&upper).map_err(|e| Error::from_io(e).context(upper.display().to_string()))?;
            let s = WorkSnapshot { store, id, rootfs: upper.clone(), upper };
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&s.upper, std::fs::Permissions::from_mode(0o755));
            return Ok(s);
        }
        if store.config.driver() != Driver::Overlay {
            return Err(Error::unsupported(format!(
                "berth build needs the overlay storage driver (this store uses {})",
                store.config.driver().name()
            )));
        }
        let rootfs = snaps.prepare(&id, lowers, Driver::Overlay)?;
        let upper = snaps.path(&id).join("upper");
        Ok(WorkSnapshot { store, id, rootfs, upper })
    }

    fn unmount(&self) -> Result<(), Error> {
        self.store.snapshots.unmount(&self.id)
    }
}

impl Drop for WorkSnapshot<'_> {
    fn drop(&mut self) {
        let _ = self.store.snapshots.remove(&self.id);
    }
}

// ---------------------------------------------------------------------------------- RUN

pub(crate) fn run(b: &mut Builder, state: &mut State, ins: &Instruction) -> Result<(), Error> {
    let Some(image) = state.image.clone() else {
        return Err(b.err(ins, "there is nothing to run a command in: the stage has no base image (FROM scratch)"));
    };
    let (argv, script) = run_command(b, state, ins)?;
    let network = match ins.flag("network").map(|f| f.value.as_deref().unwrap_or("")) {
        None | Some("default") => b.opts.network.clone(),
        Some("none") => NetworkMode::None,
        Some("host") => NetworkMode::Host,
        Some(other) => return Err(b.err(ins, format!("--network={other}: none, host or default"))),
    };
    match ins.flag("security").map(|f| f.value.as_deref().unwrap_or("")) {
        None | Some("sandbox") => {}
        Some(other) => {
            return Err(
                b.err(ins, format!("--security={other} is not supported: RUN steps run with berth run's isolation"))
            )
        }
    }
    let (mut mounts, mut mount_keys, mount_targets, _bind_sources) = run_mounts(b, state, ins)?;
    let script_dir = match &script {
        Some((name, text)) => {
            let dir = tempdir_in(&b.engine.store.root)?;
            let file = dir.path.join(name);
            std::fs::write(&file, text).map_err(|e| b.err(ins, format!("the script {name}: {e}")))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| b.err(ins, format!("the script {name}: {e}")))?;
            mounts.push(Mount {
                source: MountSource::Bind(file),
                destination: format!("/dev/pipes/{name}"),
                readonly: true,
                recursive_readonly: false,
                propagation: Default::default(),
                options: Vec::new(),
            });
            mount_keys.push(format!("script {name} {text}"));
            Some(dir)
        }
        None => None,
    };
    let args = b.run_args(state);
    let args_text: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let step_key = key(&[
        &state.key,
        "RUN",
        &serde_json::to_string(&argv).unwrap_or_default(),
        &args_text.join("\0"),
        &format!("{network:?}"),
        &mount_keys.join("\0"),
    ]);
    let volumes: Vec<String> =
        state.config["config"]["Volumes"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    b.layer_step(state, ins, step_key, &mut |b, state| {
        let mut env = state.env();
        env.extend(args_text.iter().cloned());
        let user = state.string("User");
        let workdir = state.string("WorkingDir");
        let mut mounts = mounts.clone();
        // VOLUMEs declared since the state's image: written to during RUN as docker's are
        // (into a volume, so not into the layer).
        for v in &volumes {
            if !mounts.iter().any(|m| &m.destination == v) {
                mounts.push(Mount {
                    source: MountSource::Anonymous,
                    destination: v.clone(),
                    readonly: false,
                    recursive_readonly: false,
                    propagation: Default::default(),
                    options: Vec::new(),
                });
            }
        }
        let cfg = ContainerConfig {
            name: Some(format!("berth-build-{}", &berth_engine::random_id()[..12])),
            image: image.clone(),
            entrypoint: Some(Vec::new()),
            command: Some(argv.clone()),
            env,
            workdir: (!workdir.is_empty()).then_some(workdir),
            user: (!user.is_empty()).then(|| UserSpec::parse(&user)),
            network: network.clone(),
            mounts,
            labels: BTreeMap::from([
                ("io.berth.build.step".to_string(), ins.text.clone()),
                (crate::builder::OWNER_LABEL.to_string(), crate::builder::owner_tag()),
            ]),
            ..Default::default()
        };
        let mut targets: Vec<String> = layer::RUNTIME_MOUNTS.iter().map(|s| s.to_string()).collect();
        targets.extend(mount_targets.iter().cloned());
        targets.extend(volumes.iter().map(|v| v.trim_start_matches('/').to_string()));
        run_container(b, state, ins, &cfg, &targets).map(Some)
    })?;
    drop(script_dir);
    Ok(())
}

/// A here-document RUN runs as a program of its own (it starts with `#!`): its name and text.
type Script = Option<(String, String)>;

/// The command RUN runs: the exec form as is; the shell form (or a here-document script)
/// through the stage's SHELL; a here-document that starts with `#!` as a program of its own
/// (its interpreter the one it names), mounted at /dev/pipes/NAME as BuildKit does.
fn run_command(b: &Builder, state: &State, ins: &Instruction) -> Result<(Vec<String>, Script), Error> {
    if let Some(argv) = ins.exec_form() {
        if argv.is_empty() {
            return Err(b.err(ins, "an empty command"));
        }
        return Ok((argv, None));
    }
    let mut script = ins.args.clone();
    if let Some(first) = ins.heredocs.first() {
        let only_heredoc = ins.heredocs.len() == 1 && {
            let t = ins.args.trim();
            let t = t.strip_prefix("<<").unwrap_or(t);
            let t = t.strip_prefix('-').unwrap_or(t);
            t.trim_matches(|c| c == '"' || c == '\'') == first.name
        };
        if only_heredoc && first.content.starts_with("#!") {
            let path = format!("/dev/pipes/{}", first.name);
            return Ok((vec![path], Some((first.name.clone(), first.content.clone()))));
        }
        if only_heredoc {
            // The here-document is the script.
            script = first.content.clone();
        } else {
            // The shell reads the here-documents after the command line, as it would in a
            // script.
            for h in &ins.heredocs {
                script.push('\n');
                script.push_str(&h.content);
                script.push_str(&h.name);
            }
        }
    }
    let mut argv = state.shell();
    argv.push(script);
    Ok((argv, None))
}

/// RUN --mount: the engine's mounts, what the cache key takes of them, and their targets
/// (relative), which stay out of the layer.
/// And the snapshots of other stages or images that binds come from, kept until the step ends.
type RunMounts<'a> = (Vec<Mount>, Vec<String>, Vec<String>, Vec<WorkSnapshot<'a>>);

fn run_mounts<'a>(b: &mut Builder<'a>, state: &State, ins: &Instruction) -> Result<RunMounts<'a>, Error> {
    let (mut mounts, mut keys, mut targets, mut snapshots) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let engine: &'a Engine = b.engine;
    for f in ins.flags_named("mount") {
        let spec = b.expand(state, ins, f.value.as_deref().unwrap_or(""))?;
        let mut kv: BTreeMap<String, String> = BTreeMap::new();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, "true"));
            kv.insert(k.to_ascii_lowercase(), v.to_string());
        }
        let kind = kv.remove("type").unwrap_or_else(|| "bind".into());
        let target = kv.remove("target").or_else(|| kv.remove("dst")).or_else(|| kv.remove("destination"));
        let readonly = kv.remove("ro").or_else(|| kv.remove("readonly")).is_some_and(|v| v != "false");
        let rw = kv.remove("rw").or_else(|| kv.remove("readwrite")).is_some_and(|v| v != "false");
        let mut mount_key = format!("{kind} {target:?}");
        let (source, dest, ro) = match kind.as_str() {
            "bind" => {
                let target = target.ok_or_else(|| b.err(ins, format!("--mount={spec}: target= is missing")))?;
                let src = kv.remove("source").or_else(|| kv.remove("src")).unwrap_or_default();
                if let Some(from) = kv.remove("from") {
                    // A stage's or an image's files, from a snapshot of them (writes, with rw,
                    // go to the snapshot and are discarded).
                    let (what, layers) = b.source_layers(ins, state, &from)?;
                    let lowers = layer::layer_dirs(&engine.store, &layers)?;
                    let snap = WorkSnapshot::new(&engine.store, &lowers)?;
                    let path = resolve_in(&snap.rootfs, &src)
                        .map_err(|e| b.err(ins, format!("--mount={spec}: {src} in {what}: {e}")))?;
                    let top = layers.last().map(|l| l.chain_id.to_string()).unwrap_or_default();
                    mount_key.push_str(&format!(" from {top} {src}"));
                    snapshots.push(snap);
                    targets.push(target.trim_start_matches('/').to_string());
                    keys.push(mount_key);
                    mounts.push(Mount {
                        source: MountSource::Bind(path),
                        destination: target,
                        readonly: !rw,
                        recursive_readonly: false,
                        propagation: Default::default(),
                        options: Vec::new(),
                    });
                    continue;
                }

                let origin = b.context_origin(ins)?;
                let rel = origin.expand(&src).map_err(|e| b.err(ins, e))?;
                let ctx = b.opts.context.clone().expect("a context");
                let path = if src.is_empty() { ctx } else { ctx.join(&rel[0]) };
                mount_key.push_str(&origin.checksum(&rel).map_err(|e| b.err(ins, e))?);
                (MountSource::Bind(path), target, true)
            }
            "cache" => {
                let target = target.ok_or_else(|| b.err(ins, format!("--mount={spec}: target= is missing")))?;
                let id = kv.remove("id").unwrap_or_else(|| target.clone());
                let _ = kv.remove("sharing");
                let dir = b.engine.store.root.join("build-cache-mounts").join(key(&[&id]));
                std::fs::create_dir_all(&dir).map_err(|e| b.err(ins, format!("cache mount {id}: {e}")))?;
                (MountSource::Bind(dir), target, readonly)
            }
            "tmpfs" => {
                let target = target.ok_or_else(|| b.err(ins, format!("--mount={spec}: target= is missing")))?;
                let mut options = Vec::new();
                if let Some(size) = kv.remove("size") {
                    options.push(format!("size={size}"));
                }
                targets.push(target.trim_start_matches('/').to_string());
                keys.push(mount_key);
                mounts.push(Mount {
                    source: MountSource::Tmpfs,
                    destination: target,
                    readonly: false,
                    recursive_readonly: false,
                    propagation: Default::default(),
                    options,
                });
                continue;
            }
            "secret" => {
                let id =
                    kv.remove("id").or_else(|| target.as_ref().map(|t| t.rsplit('/').next().unwrap_or("").to_string()));
                let id = id
                    .filter(|i| !i.is_empty())
                    .ok_or_else(|| b.err(ins, format!("--mount={spec}: id= is missing")))?;
                let required = kv.remove("required").is_some_and(|v| v != "false");
                for k in ["mode", "uid", "gid"] {
                    if kv.remove(k).is_some() {
                        return Err(b.err(ins, format!("--mount={spec}: {k}= is not supported for secrets")));
                    }
                }
                let Some(src) = b.opts.secrets.get(&id).cloned() else {
                    if required {
                        return Err(
                            b.err(ins, format!("secret {id} is required: give it with --secret id={id},src=FILE"))
                        );
                    }
                    continue;
                };
                let target = target.unwrap_or_else(|| format!("/run/secrets/{id}"));
                // The secret's content is not part of the cache key (it must not be kept
                // anywhere), only its name.
                (MountSource::Bind(src), target, true)
            }
            other => {
                return Err(b.err(ins, format!("--mount={spec}: type={other} is not one of bind, cache, tmpfs, secret")))
            }
        };
        if let Some(k) = kv.keys().next() {
            return Err(b.err(ins, format!("--mount={spec}: unknown option {k}")));
        }
        if !dest.starts_with('/') {
            return Err(b.err(ins, format!("--mount={spec}: target must be an absolute path")));
        }
        targets.push(dest.trim_start_matches('/').to_string());
        keys.push(mount_key);
        mounts.push(Mount {
            source,
            destination: dest,
            readonly: ro,
            recursive_readonly: false,
            propagation: Default::default(),
            options: Vec::new(),
        });
    }
    Ok((mounts, keys, targets, snapshots))
}

/// `path` inside the root filesystem `root`, resolved as that root's own `/` would resolve
/// it (a symlink in it never leads out): the real path on the host, for a bind mount.
fn resolve_in(root: &Path, path: &str) -> Result<PathBuf, String> {
    use std::os::fd::AsRawFd;
    let dir = berth_sys::file::open_dir(root).map_err(|e| e.to_string())?;
    let rel = copy::clean_relative(path).unwrap_or_default();
    let fd = berth_sys::file::open_in_root(&dir, if rel.is_empty() { "." } else { rel.as_str() }, libc::O_PATH)
        .map_err(|e| e.to_string())?;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| e.to_string())
}

fn run_container(
    b: &mut Builder,
    state: &State,
    ins: &Instruction,
    cfg: &ContainerConfig,
    targets: &[String],
) -> Result<NewLayer, Error> {
    let engine: &Engine = b.engine;
    let c = engine.create(cfg).map_err(|e| b.ctx(ins, e))?;
    // The container goes whatever happens.
    struct Remove<'e>(&'e Engine, String);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = self.0.remove(&self.1, true, true);
        }
    }
    let _remove = Remove(engine, c.id.clone());
    let conn = engine
        .start_with(&c.id, AttachConn::connect)
        .map_err(|e| b.ctx(ins, e))?
        .ok_or_else(|| b.err(ins, "the step's container was started by someone else"))?;
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(Some((_, n))) = conn.recv(&mut buf) {
        b.write_out(&buf[..n]);
    }
    let code = engine.exit_code(&c).map_err(|e| b.ctx(ins, e))?;
    if code != 0 {
        return Err(b.err(ins, format!("the command exited with status {code}")));
    }
    let store = &engine.store;
    store.snapshots.unmount(&c.id)?;
    let upper = store.snapshots.path(&c.id).join("upper");
    let lowers = layer::layer_dirs(store, &state.layers)?;
    let skip = layer::runtime_made(&lowers, &upper, targets);
    layer::commit_layer(store, &upper, state.chain(), b.opts.compression, b.opts.format, &skip, true)
        .map_err(|e| b.ctx(ins, e))
}

// ---------------------------------------------------------------------------------- COPY, ADD

pub(crate) fn copy(b: &mut Builder, state: &mut State, ins: &Instruction) -> Result<(), Error> {
    for unsupported in ["parents", "exclude", "keep-git-dir", "unpack"] {
        if ins.flag(unsupported).is_some() {
            return Err(b.err(ins, format!("--{unsupported} is not supported yet")));
        }
    }
    let mut args = match ins.exec_form() {
        Some(v) => v.iter().map(|a| b.expand(state, ins, a)).collect::<Result<Vec<_>, _>>()?,
        None => {
            // Here-document words are names, not paths: kept as written.
            let mut out = Vec::new();
            for w in crate::parse::raw_words(&ins.args, b.cf.escape) {
                if w.starts_with("<<") {
                    out.push(w);
                } else {
                    out.extend(b.expand_words(state, ins, &w)?);
                }
            }
            out
        }
    };
    let dest = args.pop().ok_or_else(|| b.err(ins, "a destination is needed"))?;
    let dest_abs = in_workdir(state, &dest);
    let mode = match ins.flag("chmod").and_then(|f| f.value.clone()) {
        Some(m) => {
            let m = b.expand(state, ins, &m)?;
            Some(
                u32::from_str_radix(&m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| b.err(ins, format!("--chmod={m}: an octal mode (e.g. 0644)")))?,
            )
        }
        None => None,
    };
    let chown = ins.flag("chown").and_then(|f| f.value.clone()).map(|c| b.expand(state, ins, &c)).transpose()?;
    let checksum = ins.flag("checksum").and_then(|f| f.value.clone()).map(|c| b.expand(state, ins, &c)).transpose()?;
    let urls = ins.keyword == Keyword::Add && args.iter().any(|a| a.contains("://"));
    if urls && !args.iter().all(|a| a.starts_with("http://") || a.starts_with("https://")) {
        return Err(b.err(ins, "ADD takes http(s) URLs, or local sources, not both at once (and no other URL schemes)"));
    }
    if checksum.is_some() && !urls {
        return Err(b.err(ins, "--checksum is for URL sources"));
    }
    // The sources' origin: a stage or an image, here-documents, downloads, or the context.
    let from = ins.flag("from").and_then(|f| f.value.clone());
    let heredoc_dir;
    let download_dir;
    let mut from_snapshot = None;
    let origin = if urls {
        download_dir = tempdir_in(&b.engine.store.root)?;
        let mut names = Vec::new();
        for url in &args {
            let (path, _) =
                crate::add::download(url, &download_dir.path, checksum.as_deref()).map_err(|e| b.err(ins, e))?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if names.contains(&name) {
                return Err(b.err(ins, format!("two URLs download to the same name {name}")));
            }
            names.push(name);
        }
        args = names;
        Origin::root_filesystem(&download_dir.path, "the downloads".into()).map_err(|e| b.err(ins, e))?
    } else if let Some(name) = &from {
        let (what, layers) = b.source_layers(ins, state, name)?;
        let lowers = layer::layer_dirs(&b.engine.store, &layers)?;
        let snap = WorkSnapshot::new(&b.engine.store, &lowers)?;
        let o = Origin::root_filesystem(&snap.rootfs, what).map_err(|e| b.err(ins, e))?;
        from_snapshot = Some(snap);
        o
    } else if !ins.heredocs.is_empty() {
        heredoc_dir = tempdir_in(&b.engine.store.root)?;
        for h in &ins.heredocs {
            let content = if h.expand { b.expand(state, ins, &h.content)? } else { h.content.clone() };
            std::fs::write(heredoc_dir.path.join(&h.name), content).map_err(|e| b.err(ins, e))?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(heredoc_dir.path.join(&h.name), std::fs::Permissions::from_mode(0o644));
        }
        for a in args.iter_mut() {
            if let Some(name) = a.strip_prefix("<<") {
                *a = name.trim_start_matches('-').trim_matches(|c| c == '"' || c == '\'').to_string();
            }
        }
        Origin::root_filesystem(&heredoc_dir.path, "the here-documents".into()).map_err(|e| b.err(ins, e))?
    } else {
        b.context_origin(ins)?
    };
    let mut sources = Vec::new();
    for a in &args {
        sources.extend(origin.expand(a).map_err(|e| b.err(ins, e))?);
    }
    if sources.len() > 1 && !dest.ends_with('/') {
        return Err(
            b.err(ins, format!("{dest}: with several sources the destination must be a directory ending with /"))
        );
    }
    // ADD's local tar archives are unpacked, not copied.
    let mut archives = Vec::new();
    if ins.keyword == Keyword::Add && !urls && from.is_none() && ins.heredocs.is_empty() {
        let ctx = b.opts.context.clone().unwrap_or_default();
        for s in &sources {
            let path = ctx.join(s);
            if path.is_file() {
                if let Some(kind) = crate::add::archive_kind(&path).map_err(|e| b.err(ins, format!("{s}: {e}")))? {
                    archives.push((s.clone(), path, kind));
                }
            }
        }
        if !archives.is_empty() && (chown.is_some() || mode.is_some()) {
            return Err(b.err(ins, "--chown and --chmod on an unpacked archive are not supported yet"));
        }
    }
    let sum = origin.checksum(&sources).map_err(|e| b.err(ins, e))?;
    let step_key = key(&[
        &state.key,
        ins.keyword.name(),
        &format!("{from:?} {chown:?} {mode:?}"),
        &sources.join("\0"),
        &dest_abs,
        &sum,
    ]);
    let into_dir = dest.ends_with('/') || sources.len() > 1;
    b.layer_step(state, ins, step_key, &mut |b, state| {
        let store = &b.engine.store;
        let lowers = layer::layer_dirs(store, &state.layers)?;
        let snap = WorkSnapshot::new(store, &lowers)?;
        let owner = match &chown {
            Some(c) => Some(resolve_owner(&snap.rootfs, c).map_err(|e| b.err(ins, format!("--chown={c}: {e}")))?),
            None => None,
        };
        let dest = Destination { root: &snap.rootfs, path: &dest_abs };
        let plain: Vec<String> =
            sources.iter().filter(|s| !archives.iter().any(|(a, _, _)| a == *s)).cloned().collect();
        if !plain.is_empty() {
            copy::copy(&origin, &plain, &dest, into_dir, &CopyOptions { owner, mode }).map_err(|e| b.err(ins, e))?;
        }
        if !archives.is_empty() {
            let dir = copy::destination_dir(&snap.rootfs, &dest_abs).map_err(|e| b.err(ins, e))?;
            let scratch = tempdir_in(&store.root)?;
            let limit =
                berth_storage::SizeLimit::new(store.config.max_image_size(), "storage.max-image-size in berth.toml");
            for (name, path, kind) in &archives {
                crate::add::unpack(path, *kind, &dir, &scratch.path, &limit)
                    .map_err(|e| b.err(ins, format!("{name}: {e}")))?;
            }
        }
        snap.unmount()?;
        let l = layer::commit_layer(
            store,
            &snap.upper,
            state.chain(),
            b.opts.compression,
            b.opts.format,
            &Default::default(),
            true,
        )
        .map_err(|e| b.ctx(ins, e))?;
        Ok(Some(l))
    })?;
    drop(from_snapshot);
    Ok(())
}

/// `--chown=USER[:GROUP]` in the destination root: names through its /etc/passwd and
/// /etc/group; a user alone gives its uid as the gid too (docker's rule).
fn resolve_owner(rootfs: &Path, spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = match user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => berth_image::spec::resolve_user(rootfs, user).map_err(|e| e.to_string())?.0,
    };
    let gid = match group {
        None => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => berth_image::spec::resolve_user(rootfs, &format!("0:{g}")).map_err(|e| e.to_string())?.1,
        },
    };
    Ok((
        berth_image::spec::check_process_id(uid, "uid").map_err(|e| e.to_string())?,
        berth_image::spec::check_process_id(gid, "gid").map_err(|e| e.to_string())?,
    ))
}

/// A private directory in the store, removed when dropped.
struct TempDir {
    path: PathBuf,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn tempdir_in(root: &Path) -> Result<TempDir, Error> {
    let path =
        root.join("build-tmp").join(format!("{}{}", crate::builder::owner_tag(), &berth_engine::random_id()[..16]));
    std::fs::create_dir_all(&path).map_err(|e| Error::from_io(e).context(path.display().to_string()))?;
    Ok(TempDir { path })
}
