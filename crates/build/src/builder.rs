//! The build: stages run in order (only those the target needs), each instruction applied to
//! the stage's state (its layers and image config). A step that changes files makes a layer
//! and registers an untagged image for it, which is also its cache entry: the next build
//! whose step has the same cache key (the parent state, the instruction as expanded, the
//! build args it sees, the checksum of what it copies) reuses it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

use berth_engine::container::config::NetworkMode;
use berth_engine::Engine;
use berth_image::auth::AuthFile;
use berth_image::store::NewLayer;
use berth_storage::{Compression, Digest};
use berth_sys::{Error, Kind};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use crate::copy::{self, Origin};
use crate::ignore::Ignore;
use crate::layer::{self, Format};
use crate::parse::{self, Containerfile, Instruction, Keyword, ParseError};
use crate::words;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull a base image the store does not have.
    Missing,
    Always,
    Never,
}

pub struct BuildOptions {
    /// The build context; None when there is none (a Containerfile on stdin with `-`).
    pub context: Option<PathBuf>,
    pub containerfile: String,
    /// How the Containerfile is named in errors.
    pub containerfile_name: String,
    pub ignore: Ignore,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub pull: PullPolicy,
    pub labels: BTreeMap<String, String>,
    pub network: NetworkMode,
    pub format: Format,
    pub compression: Compression,
    /// `--secret id=ID,src=PATH`
    pub secrets: BTreeMap<String, PathBuf>,
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image ID (its config's digest).
    pub id: Digest,
    pub manifest: Digest,
    pub tags: Vec<String>,
}

/// Build args any Containerfile may use without declaring them (the proxies), and those the
/// builder sets for the platform.
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn platform_args() -> BTreeMap<String, String> {
    let host = berth_image::manifest::Platform::host();
    let platform = match &host.variant {
        Some(v) => format!("linux/{}/{v}", host.architecture),
        None => format!("linux/{}", host.architecture),
    };
    let mut m = BTreeMap::new();
    for side in ["TARGET", "BUILD"] {
        m.insert(format!("{side}PLATFORM"), platform.clone());
        m.insert(format!("{side}OS"), "linux".into());
        m.insert(format!("{side}ARCH"), host.architecture.clone());
        m.insert(format!("{side}VARIANT"), host.variant.clone().unwrap_or_default());
    }
    m
}

/// A stage's state as the build goes.
#[derive(Clone)]
pub(crate) struct State {
    pub layers: Vec<NewLayer>,
    /// The whole image config (the base's unknown fields kept).
    pub config: Value,
    /// A registered image with exactly `layers` (RUN's containers are made from it).
    pub image: Option<String>,
    /// The cache key of everything so far.
    pub key: String,
    /// ARGs declared in this stage, with their values (None: declared, no value).
    pub args: BTreeMap<String, Option<String>>,
    /// Whether CMD still is the base image's (ENTRYPOINT then resets it, as docker does).
    pub cmd_from_base: bool,
}

impl State {
    fn container(&mut self) -> &mut Map<String, Value> {
        if !self.config["config"].is_object() {
            self.config["config"] = json!({});
        }
        self.config["config"].as_object_mut().expect("an object")
    }

    pub fn env(&self) -> Vec<String> {
        self.config["config"]["Env"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    fn env_value(&self, name: &str) -> Option<String> {
        self.env().iter().rev().find_map(|e| e.strip_prefix(name)?.strip_prefix('=').map(String::from))
    }

    fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.env();
        let entry = format!("{key}={value}");
        match env.iter_mut().find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key) {
            Some(e) => *e = entry,
            None => env.push(entry),
        }
        self.container().insert("Env".into(), json!(env));
    }

    /// A variable as instructions see it: ENV first, then ARG.
    pub fn var(&self, name: &str) -> Option<String> {
        self.env_value(name).or_else(|| self.args.get(name).cloned().flatten())
    }

    pub fn string(&self, key: &str) -> String {
        self.config["config"][key].as_str().unwrap_or_default().to_string()
    }

    pub fn shell(&self) -> Vec<String> {
        match self.config["config"]["Shell"].as_array() {
            Some(a) if !a.is_empty() => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            _ => vec!["/bin/sh".into(), "-c".into()],
        }
    }

    fn history(&mut self, created_by: &str, empty_layer: bool) {
        let mut h =
            json!({"created": berth_image::archive::now_rfc3339(), "created_by": created_by, "comment": "berth build"});
        if empty_layer {
            h["empty_layer"] = json!(true);
        }
        match self.config["history"].as_array_mut() {
            Some(a) => a.push(h),
            None => self.config["history"] = json!([h]),
        }
    }

    pub(crate) fn chain(&self) -> Option<&Digest> {
        self.layers.last().map(|l| &l.chain_id)
    }
}

pub(crate) fn sha(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    format!("{:x}", h.finalize())
}

/// What a layer step does when its cache misses: the layer made, or None for no change.
pub(crate) type MakeLayer<'f, 'a> = dyn FnMut(&mut Builder<'a>, &State) -> Result<Option<NewLayer>, Error> + 'f;

pub(crate) struct Builder<'a> {
    pub engine: &'a Engine,
    pub opts: &'a BuildOptions,
    pub auth: &'a AuthFile,
    pub out: &'a mut dyn Write,
    pub cf: Containerfile,
    /// Global ARGs (before the first FROM) with their values.
    global: BTreeMap<String, Option<String>>,
    /// Build args some ARG (or the proxies) used.
    used_args: BTreeSet<String>,
    /// Finished stages' states, by index.
    pub stages: Vec<Option<State>>,
    step: usize,
    steps: usize,
}

/// Builds the image `opts` describe, printing progress (and RUN's output) to `out`.
pub fn build(engine: &Engine, opts: &BuildOptions, auth: &AuthFile, out: &mut dyn Write) -> Result<Built, Error> {
    let cf = parse::parse(&opts.containerfile).map_err(|e| parse_error(&opts.containerfile_name, e))?;
    if opts.format == Format::Docker && opts.compression == Compression::Zstd {
        return Err(Error::invalid("--format docker layers are gzip: zstd is OCI only"));
    }
    let target = match &opts.target {
        Some(t) => cf.stage_index(t).ok_or_else(|| Error::not_found(format!("--target {t}: no such stage")))?,
        None => cf.stages.len() - 1,
    };
    // GC waits until the build has registered what it made.
    let _lock = engine.store.lock_shared()?;
    sweep_abandoned(engine);
    let mut b = Builder {
        engine,
        opts,
        auth,
        out,
        global: BTreeMap::new(),
        used_args: BTreeSet::new(),
        stages: vec![None; cf.stages.len()],
        step: 0,
        steps: 0,
        cf,
    };
    b.global_args()?;
    let needed = b.needed(target)?;
    b.steps = needed.iter().map(|i| 1 + b.cf.stages[*i].instructions.len()).sum();
    for i in 0..b.cf.stages.len() {
        if needed.contains(&i) {
            let state = b.stage(i)?;
            b.stages[i] = Some(state);
        }
    }
    let unused: Vec<&String> = opts.build_args.keys().filter(|k| !b.used_args.contains(*k)).collect();
    if !unused.is_empty() {
        let _ = writeln!(b.out, "[Warning] one or more build args were not consumed: {unused:?}");
    }
    let mut state = b.stages[target].take().expect("the target was built");
    for (k, v) in &opts.labels {
        let labels = state.container().entry("Labels").or_insert_with(|| json!({}));
        labels[k] = json!(v);
    }
    let mut tags = Vec::new();
    for t in &opts.tags {
        let r = engine.store.config.resolve(t)?;
        tags.push(r.tagged().ok_or_else(|| Error::invalid(format!("{t}: a tag is needed, not a digest")))?);
    }
    let _ = writeln!(b.out, "COMMIT{}", tags.first().map(|t| format!(" {t}")).unwrap_or_default());
    // The same build again gives the same image (its creation time too).
    let final_key = sha(&[state.key.as_bytes(), b"commit", format!("{:?} {:?}", opts.labels, opts.format).as_bytes()]);
    let cached = match opts.no_cache {
        false => engine.store.build_cache_get(&final_key)?.filter(|img| {
            img.layers.len() == state.layers.len()
                && img.layers.iter().zip(&state.layers).all(|(a, b)| a.chain_id == b.chain_id.as_str())
        }),
        true => None,
    };
    let (manifest, id) = match cached {
        Some(img) => {
            for t in &tags {
                engine.store.tag(&img, t)?;
            }
            (Digest::parse(&img.row.manifest_digest)?, img.id())
        }
        None => {
            state.config["created"] = json!(berth_image::archive::now_rfc3339());
            let (md, id) = layer::register(
                &engine.store,
                state.config,
                &state.layers,
                opts.format,
                tags.first().map(String::as_str),
            )?;
            engine.store.build_cache_put(&final_key, &md)?;
            (md, id)
        }
    };
    if tags.len() > 1 {
        let img =
            engine.store.image_by_manifest(manifest.as_str())?.ok_or_else(|| Error::msg("the built image vanished"))?;
        for t in &tags[1..] {
            engine.store.tag(&img, t)?;
        }
    }
    let tag_names = tags.join(",");
    berth_image::events::emit(&engine.store.root, "image", "build", id.as_str(), &[("name", &tag_names)]);
    let _ = writeln!(b.out, "--> {}", id.short());
    for t in &tags {
        let _ = writeln!(b.out, "Successfully tagged {t}");
    }
    Ok(Built { id, manifest, tags })
}

fn parse_error(name: &str, e: ParseError) -> Error {
    Error::invalid(format!("{name}: {e}"))
}

impl<'a> Builder<'a> {
    pub(crate) fn err(&self, ins: &Instruction, msg: impl std::fmt::Display) -> Error {
        Error::invalid(format!("{}: line {}: {}: {msg}", self.opts.containerfile_name, ins.line, ins.keyword))
    }

    /// `e` with the instruction's place in front.
    pub(crate) fn ctx(&self, ins: &Instruction, e: Error) -> Error {
        let place = format!("{}: line {}: {}", self.opts.containerfile_name, ins.line, ins.keyword);
        e.context(place)
    }

    fn arg_value(&mut self, name: &str, default: Option<String>) -> Option<String> {
        match self.opts.build_args.get(name) {
            Some(v) => {
                self.used_args.insert(name.to_string());
                Some(v.clone())
            }
            None => default,
        }
    }

    fn global_args(&mut self) -> Result<(), Error> {
        for (k, v) in platform_args() {
            self.global.insert(k, Some(v));
        }
        for ins in self.cf.global_args.clone() {
            let vars = self.global.clone();
            for (name, default) in self.arg_decls(&ins, &|n: &str| vars.get(n).cloned().flatten())? {
                let v = self.arg_value(&name, default);
                self.global.insert(name, v);
            }
        }
        Ok(())
    }

    /// An ARG's declarations: (name, default expanded).
    fn arg_decls(&self, ins: &Instruction, vars: &dyn words::Vars) -> Result<Vec<(String, Option<String>)>, Error> {
        let mut out = Vec::new();
        for w in parse::raw_words(&ins.args, self.cf.escape) {
            let (name, default) = match w.split_once('=') {
                Some((n, d)) => {
                    (n.to_string(), Some(words::expand_word(d, self.cf.escape, vars).map_err(|e| self.err(ins, e))?))
                }
                None => (w.clone(), None),
            };
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.is_empty() {
                return Err(self.err(ins, format!("{name:?} is not a valid ARG name")));
            }
            out.push((name, default));
        }
        Ok(out)
    }

    fn base_name(&self, stage: usize) -> Result<String, Error> {
        let s = &self.cf.stages[stage];
        let g = self.global.clone();
        words::expand_word(&s.base, self.cf.escape, &move |n: &str| g.get(n).cloned().flatten())
            .map_err(|e| self.err(&s.from, e))
    }

    /// The stages `target` needs (itself, its bases, the stages its COPY --from names).
    fn needed(&self, target: usize) -> Result<BTreeSet<usize>, Error> {
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !needed.insert(i) {
                continue;
            }
            let base = self.base_name(i)?;
            if let Some(j) = self.cf.stage_index(&base).filter(|j| *j < i) {
                todo.push(j);
            }
            for ins in &self.cf.stages[i].instructions {
                let from = ins.flag("from").and_then(|f| f.value.clone());
                let mount_froms = ins.flags_named("mount").filter_map(|f| {
                    f.value.as_deref()?.split(',').find_map(|kv| kv.strip_prefix("from=").map(String::from))
                });
                for name in from.into_iter().chain(mount_froms) {
                    let g = self.global.clone();
                    let name = words::expand_word(&name, self.cf.escape, &move |n: &str| g.get(n).cloned().flatten())
                        .unwrap_or(name);
                    if let Some(j) = self.cf.stage_index(&name) {
                        if j >= i {
                            return Err(
                                self.err(ins, format!("stage {name:?} comes later: a stage uses only earlier ones"))
                            );
                        }
                        todo.push(j);
                    }
                }
            }
        }
        Ok(needed)
    }

    fn announce(&mut self, ins: &Instruction) {
        self.step += 1;
        let _ = writeln!(self.out, "STEP {}/{}: {}", self.step, self.steps, ins.text);
    }

    fn stage(&mut self, i: usize) -> Result<State, Error> {
        let stage = self.cf.stages[i].clone();
        self.announce(&stage.from);
        let mut state = self.from(i)?;
        // The base image's ONBUILD triggers run first, then are not passed on.
        let triggers: Vec<String> = state.config["config"]["OnBuild"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        if !triggers.is_empty() {
            state.container().remove("OnBuild");
            for t in triggers {
                let ins = parse::parse(&format!("FROM scratch\n{t}\n"))
                    .ok()
                    .and_then(|mut cf| cf.stages.pop()?.instructions.pop())
                    .ok_or_else(|| {
                        self.err(&stage.from, format!("the base image's ONBUILD trigger {t:?} does not parse"))
                    })?;
                let ins = Instruction { line: stage.from.line, ..ins };
                let _ = writeln!(self.out, "ONBUILD {}", ins.text);
                self.instruction(&mut state, &ins)?;
            }
        }
        for ins in &stage.instructions {
            self.announce(ins);
            self.instruction(&mut state, ins)?;
        }
        Ok(state)
    }

    /// The state FROM starts a stage with.
    fn from(&mut self, i: usize) -> Result<State, Error> {
        let stage = self.cf.stages[i].clone();
        if let Some(p) = stage.from.flag("platform").and_then(|f| f.value.clone()) {
            let g = self.global.clone();
            let p = words::expand_word(&p, self.cf.escape, &move |n: &str| g.get(n).cloned().flatten())
                .map_err(|e| self.err(&stage.from, e))?;
            let host = platform_args().remove("TARGETPLATFORM").unwrap_or_default();
            if p != host && format!("{p}/") != format!("{host}/").replace("//", "/") {
                return Err(self.err(&stage.from, format!("--platform {p}: this builder builds for {host} only")));
            }
        }
        let base = self.base_name(i)?;
        let mut state = if base.eq_ignore_ascii_case("scratch") {
            let host = berth_image::manifest::Platform::host();
            State {
                layers: Vec::new(),
                config: json!({"architecture": host.architecture, "os": "linux", "config": {}, "history": []}),
                image: None,
                key: "scratch".into(),
                args: BTreeMap::new(),
                cmd_from_base: false,
            }
        } else if let Some(j) = self.cf.stage_index(&base).filter(|j| *j < i) {
            let mut s =
                self.stages[j].clone().ok_or_else(|| self.err(&stage.from, format!("stage {base} was not built")))?;
            s.args.clear();
            s.cmd_from_base = true;
            s
        } else {
            let img = self.base_image(&base).map_err(|e| self.ctx(&stage.from, e))?;
            let raw = self.engine.store.content.read(&img.id())?;
            let mut config: Value = serde_json::from_slice(&raw)
                .map_err(|e| self.err(&stage.from, format!("image {base}: its config: {e}")))?;
            // The config is the new image's from here; the base's own identity goes.
            if let Some(o) = config.as_object_mut() {
                o.remove("rootfs");
                o.remove("id");
                o.remove("parent");
                o.remove("container");
                o.remove("container_config");
            }
            if config["history"].as_array().is_none() {
                config["history"] = json!([]);
            }
            let cmd_from_base = !config["config"]["Cmd"].is_null();
            State {
                layers: layer::image_layers(&img)?,
                config,
                image: Some(img.id().to_string()),
                key: format!("image {}", img.id()),
                args: BTreeMap::new(),
                cmd_from_base,
            }
        };
        // Every stage has a PATH, as docker's and buildah's builders give one to a base
        // that has none.
        if state.env_value("PATH").is_none() {
            let mut env = vec![format!("PATH={DEFAULT_PATH}")];
            env.extend(state.env());
            state.container().insert("Env".into(), json!(env));
        }
        state.key = sha(&[b"from", state.key.as_bytes()]);
        Ok(state)
    }

    fn base_image(&mut self, name: &str) -> Result<berth_image::store::Image, Error> {
        let store = &self.engine.store;
        let local = match store.resolve(name) {
            Ok(img) => Some(img),
            Err(e) if e.is(Kind::NotFound) => None,
            Err(e) => return Err(e),
        };
        match (self.opts.pull, local) {
            (PullPolicy::Never, Some(img)) | (PullPolicy::Missing, Some(img)) => return Ok(img),
            (PullPolicy::Never, None) => {
                return Err(Error::not_found(format!("image {name} is not in the store and --pull=never was given")))
            }
            _ => {}
        }
        let _ = writeln!(self.out, "Pulling {name}");
        let progress = berth_image::pull::NoProgress;
        let opts =
            berth_image::pull::PullOptions { platform: None, auth: self.auth, credentials: None, progress: &progress };
        // (The store's shared lock is this build's already: the pull takes it again.)
        let pulled = berth_image::pull::pull(store, name, &opts)?;
        store.resolve(&pulled.image_id.to_string())
    }

    fn vars(state: &State) -> impl Fn(&str) -> Option<String> + '_ {
        move |n: &str| state.var(n)
    }

    pub(crate) fn expand(&self, state: &State, ins: &Instruction, text: &str) -> Result<String, Error> {
        words::expand_word(text, self.cf.escape, &Self::vars(state)).map_err(|e| self.err(ins, e))
    }

    pub(crate) fn expand_words(&self, state: &State, ins: &Instruction, text: &str) -> Result<Vec<String>, Error> {
        words::expand_words(text, self.cf.escape, &Self::vars(state)).map_err(|e| self.err(ins, e))
    }

    /// A step that changes no files: the key moves on, the history records it.
    fn config_step(&self, state: &mut State, ins: &Instruction, effect: &str) {
        state.key = sha(&[state.key.as_bytes(), effect.as_bytes()]);
        state.history(&ins.text, true);
    }

    fn instruction(&mut self, state: &mut State, ins: &Instruction) -> Result<(), Error> {
        match ins.keyword {
            Keyword::From => unreachable!("FROM starts a stage"),
            Keyword::Arg => {
                let vars = state.clone();
                for (name, default) in self.arg_decls(ins, &Self::vars(&vars))? {
                    // Declared again in a stage, a global ARG brings its value in.
                    let inherited = self.global.get(&name).cloned().flatten();
                    let v = self.arg_value(&name, default.or(inherited));
                    state.args.insert(name, v);
                }
                // Values are not in the key: the steps that use them are (RUN sees every ARG in
                // scope; the others their expanded text).
                let effect = format!("ARG {:?}", state.args.keys().collect::<Vec<_>>());
                self.config_step(state, ins, &effect);
            }
            Keyword::Env => {
                for (k, v) in
                    parse::key_values(ins, self.cf.escape).map_err(|e| parse_error(&self.opts.containerfile_name, e))?
                {
                    let k = self.expand(state, ins, &k)?;
                    let v = self.expand(state, ins, &v)?;
                    state.set_env(&k, &v);
                }
                let effect = format!("ENV {:?}", state.env());
                self.config_step(state, ins, &effect);
            }
            Keyword::Label => {
                for (k, v) in
                    parse::key_values(ins, self.cf.escape).map_err(|e| parse_error(&self.opts.containerfile_name, e))?
                {
                    let k = self.expand(state, ins, &k)?;
                    let v = self.expand(state, ins, &v)?;
                    let labels = state.container().entry("Labels").or_insert_with(|| json!({}));
                    if !labels.is_object() {
                        *labels = json!({});
                    }
                    labels[&k] = json!(v);
                }
                let effect = format!("LABEL {}", state.config["config"]["Labels"]);
                self.config_step(state, ins, &effect);
            }
            Keyword::Maintainer => {
                let who = self.expand(state, ins, &ins.args)?;
                state.config["author"] = json!(who);
                self.config_step(state, ins, &format!("MAINTAINER {who}"));
            }
            Keyword::Workdir => {
                let dir = self.expand(state, ins, &ins.args)?;
                let dir = if dir.starts_with('/') { dir } else { format!("{}/{dir}", state.string("WorkingDir")) };
                let clean = format!("/{}", copy::clean_relative(&dir).unwrap_or_default());
                state.container().insert("WorkingDir".into(), json!(clean));
                self.config_step(state, ins, &format!("WORKDIR {clean}"));
            }
            Keyword::User => {
                let user = self.expand(state, ins, &ins.args)?;
                state.container().insert("User".into(), json!(user));
                self.config_step(state, ins, &format!("USER {user}"));
            }
            Keyword::Expose => {
                let ports = self.expand_words(state, ins, &ins.args)?;
                let map = state.container().entry("ExposedPorts").or_insert_with(|| json!({}));
                for p in ports {
                    let (port, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                    let proto = proto.to_ascii_lowercase();
                    let valid = !port.is_empty()
                        && port.split('-').all(|n| n.parse::<u16>().is_ok_and(|n| n > 0))
                        && matches!(proto.as_str(), "tcp" | "udp" | "sctp");
                    if !valid {
                        return Err(self.err(ins, format!("{p:?} is not PORT[/tcp|udp|sctp]")));
                    }
                    map[format!("{port}/{proto}")] = json!({});
                }
                let effect = format!("EXPOSE {}", state.config["config"]["ExposedPorts"]);
                self.config_step(state, ins, &effect);
            }
            Keyword::Volume => {
                let vols = match ins.exec_form() {
                    Some(v) => v.iter().map(|v| self.expand(state, ins, v)).collect::<Result<Vec<_>, _>>()?,
                    None => self.expand_words(state, ins, &ins.args)?,
                };
                let map = state.container().entry("Volumes").or_insert_with(|| json!({}));
                for v in vols {
                    if v.is_empty() {
                        return Err(self.err(ins, "an empty volume path"));
                    }
                    map[v] = json!({});
                }
                let effect = format!("VOLUME {}", state.config["config"]["Volumes"]);
                self.config_step(state, ins, &effect);
            }
            Keyword::Stopsignal => {
                let sig = self.expand(state, ins, &ins.args)?;
                berth_image::spec::signal_number(&sig).map_err(|e| self.ctx(ins, e))?;
                state.container().insert("StopSignal".into(), json!(sig));
                self.config_step(state, ins, &format!("STOPSIGNAL {sig}"));
            }
            Keyword::Cmd | Keyword::Entrypoint => {
                let argv = match ins.exec_form() {
                    Some(v) => v,
                    None if ins.args.is_empty() => Vec::new(),
                    None => {
                        let mut v = state.shell();
                        v.push(ins.args.clone());
                        v
                    }
                };
                let key = if ins.keyword == Keyword::Cmd { "Cmd" } else { "Entrypoint" };
                if ins.keyword == Keyword::Cmd {
                    state.cmd_from_base = false;
                } else if state.cmd_from_base {
                    state.container().insert("Cmd".into(), Value::Null);
                    state.cmd_from_base = false;
                }
                let value = if argv.is_empty() && ins.exec_form().is_none() { Value::Null } else { json!(argv) };
                state.container().insert(key.into(), value);
                self.config_step(state, ins, &format!("{key} {argv:?}"));
            }
            Keyword::Shell => {
                let shell = ins.exec_form().unwrap_or_default();
                state.container().insert("Shell".into(), json!(shell));
                self.config_step(state, ins, &format!("SHELL {shell:?}"));
            }
            Keyword::Healthcheck => {
                let hc = self.healthcheck(state, ins)?;
                let effect = format!("HEALTHCHECK {hc}");
                state.container().insert("Healthcheck".into(), hc);
                self.config_step(state, ins, &effect);
            }
            Keyword::Onbuild => {
                let trigger = ins.args.clone();
                let list = state.container().entry("OnBuild").or_insert_with(|| json!([]));
                if !list.is_array() {
                    *list = json!([]);
                }
                list.as_array_mut().expect("an array").push(json!(trigger));
                self.config_step(state, ins, &format!("ONBUILD {trigger}"));
            }
            Keyword::Run => self.run(state, ins)?,
            Keyword::Copy | Keyword::Add => self.copy(state, ins)?,
        }
        Ok(())
    }

    fn healthcheck(&self, state: &State, ins: &Instruction) -> Result<Value, Error> {
        let (first, rest) = ins.args.split_once(char::is_whitespace).unwrap_or((&ins.args, ""));
        if first.eq_ignore_ascii_case("NONE") {
            return Ok(json!({"Test": ["NONE"]}));
        }
        let rest = rest.trim();
        let test = match parse::raw_words(rest, self.cf.escape).first().filter(|w| w.starts_with('[')) {
            Some(_) => match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) => {
                    let mut t = vec!["CMD".to_string()];
                    t.extend(v);
                    t
                }
                Err(_) => vec!["CMD-SHELL".into(), rest.into()],
            },
            None => vec!["CMD-SHELL".into(), rest.into()],
        };
        let mut hc = json!({"Test": test});
        for (flag, key) in [
            ("interval", "Interval"),
            ("timeout", "Timeout"),
            ("start-period", "StartPeriod"),
            ("start-interval", "StartInterval"),
        ] {
            if let Some(v) = ins.flag(flag).and_then(|f| f.value.clone()) {
                let v = self.expand(state, ins, &v)?;
                let ns = parse_duration(&v)
                    .ok_or_else(|| self.err(ins, format!("--{flag}={v}: not a duration (e.g. 30s, 1m30s)")))?;
                hc[key] = json!(ns);
            }
        }
        if let Some(v) = ins.flag("retries").and_then(|f| f.value.clone()) {
            let n: u32 = v.parse().map_err(|_| self.err(ins, format!("--retries={v}: not a count")))?;
            hc["Retries"] = json!(n);
        }
        Ok(hc)
    }

    // ------------------------------------------------------------------ layer steps

    /// A step that makes a layer: a cached image under `key`, or `make` (which gives the
    /// layer, or None when the step changed nothing), registered and cached.
    pub(crate) fn layer_step(
        &mut self,
        state: &mut State,
        ins: &Instruction,
        key: String,
        make: &mut MakeLayer<'_, 'a>,
    ) -> Result<(), Error> {
        let store = &self.engine.store;
        if !self.opts.no_cache {
            if let Some(img) = store.build_cache_get(&key)? {
                let layers = layer::image_layers(&img)?;
                // The cached image is this state plus one layer (or the same layers).
                let ok = layers.len() >= state.layers.len()
                    && layers[..state.layers.len()].iter().zip(&state.layers).all(|(a, b)| a.chain_id == b.chain_id)
                    && layer::layer_dirs(store, &layers).is_ok();
                if ok {
                    let _ = writeln!(self.out, "--> Using cache {}", img.id().short());
                    let added = layers.len() > state.layers.len();
                    state.layers = layers;
                    state.image = Some(img.id().to_string());
                    state.key = key;
                    state.history(&ins.text, !added);
                    return Ok(());
                }
            }
        }
        let made = make(self, state)?;
        let added = made.is_some();
        if let Some(l) = made {
            state.layers.push(l);
        }
        state.history(&ins.text, !added);
        state.key = key;
        state.config["created"] = json!(berth_image::archive::now_rfc3339());
        let (md, id) = layer::register(&self.engine.store, state.config.clone(), &state.layers, self.opts.format, None)
            .map_err(|e| self.ctx(ins, e))?;
        self.engine.store.build_cache_put(&state.key, &md)?;
        state.image = Some(id.to_string());
        let _ = writeln!(self.out, "--> {}", id.short());
        Ok(())
    }

    fn copy(&mut self, state: &mut State, ins: &Instruction) -> Result<(), Error> {
        crate::steps::copy(self, state, ins)
    }

    fn run(&mut self, state: &mut State, ins: &Instruction) -> Result<(), Error> {
        crate::steps::run(self, state, ins)
    }

    pub(crate) fn context_origin(&self, ins: &Instruction) -> Result<Origin, Error> {
        let Some(dir) = &self.opts.context else {
            return Err(self.err(ins, "there is no build context (the Containerfile came from stdin)"));
        };
        Origin::context(dir, self.opts.ignore.clone()).map_err(|e| self.err(ins, e))
    }

    /// Build args RUN sees as environment: the ARGs in scope with a value (ENV wins over
    /// them), and the proxies given.
    pub(crate) fn run_args(&mut self, state: &State) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in &state.args {
            if let Some(v) = v {
                if state.env_value(k).is_none() {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        for p in PROXY_ARGS {
            if let Some(v) = self.opts.build_args.get(*p) {
                self.used_args.insert(p.to_string());
                out.entry(p.to_string()).or_insert_with(|| v.clone());
            }
        }
        out
    }

    pub(crate) fn write_out(&mut self, data: &[u8]) {
        let _ = self.out.write_all(data);
        let _ = self.out.flush();
    }

    /// The root filesystem of an earlier stage or an image, for COPY --from and RUN
    /// --mount=from: a snapshot the caller removes.
    pub(crate) fn source_layers(
        &mut self,
        ins: &Instruction,
        state: &State,
        name: &str,
    ) -> Result<(String, Vec<NewLayer>), Error> {
        let name = self.expand(state, ins, name)?;
        if let Some(j) = self.cf.stage_index(&name) {
            let s = self.stages[j].as_ref().ok_or_else(|| self.err(ins, format!("stage {name} was not built")))?;
            return Ok((format!("stage {name}"), s.layers.clone()));
        }
        let img = self.base_image(&name).map_err(|e| self.ctx(ins, e))?;
        Ok((format!("image {name}"), layer::image_layers(&img)?))
    }
}

/// Go's duration syntax as docker takes it (`1h2m3.5s`, `300ms`): nanoseconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += value * unit;
    }
    Some(total as u64)
}

/// The label on a build's RUN containers naming the build (its process), and the prefix of
/// its work snapshots and temporary directories: `build-PID-START-`.
pub(crate) const OWNER_LABEL: &str = "io.berth.build.owner";

pub(crate) fn owner_tag() -> String {
    let pid = std::process::id() as i32;
    format!("build-{pid}-{}-", berth_sys::proc::process_start(pid).unwrap_or(0))
}

/// Whether the build that made something tagged `tag` is gone (killed midway).
fn abandoned(tag: &str) -> bool {
    let mut parts = tag.strip_prefix("build-").unwrap_or("").split('-');
    let (Some(pid), Some(start)) =
        (parts.next().and_then(|p| p.parse::<i32>().ok()), parts.next().and_then(|s| s.parse::<u64>().ok()))
    else {
        return false;
    };
    berth_sys::proc::process_start(pid) != Some(start)
}

/// What builds that were killed midway left: their RUN containers, work snapshots and
/// temporary directories (a build that fails removes its own).
fn sweep_abandoned(engine: &Engine) {
    for c in engine.list().unwrap_or_default() {
        if c.config.labels.get(OWNER_LABEL).is_some_and(|t| abandoned(t)) {
            let _ = engine.remove(&c.id, true, true);
        }
    }
    for id in engine.store.snapshots.list().unwrap_or_default() {
        if id.starts_with("build-") && abandoned(&id) {
            let _ = engine.store.snapshots.remove(&id);
        }
    }
    let tmp = engine.store.root.join("build-tmp");
    for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        if abandoned(&e.file_name().to_string_lossy()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A path in the destination root, made absolute with WORKDIR.
pub(crate) fn in_workdir(state: &State, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        let wd = state.string("WorkingDir");
        format!("{}/{path}", wd.trim_end_matches('/'))
    }
}

/// docker commit's `--change`: Containerfile instructions that change only the image config
/// (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL),
/// applied to `config` as a build would apply them.
pub fn apply_changes(engine: &Engine, config: Value, changes: &[String]) -> Result<Value, Error> {
    if changes.is_empty() {
        return Ok(config);
    }
    let text = format!("FROM scratch\n{}\n", changes.join("\n"));
    // Lines are counted from the first change, not the FROM put before them.
    let mut cf = parse::parse(&text).map_err(|mut e| {
        e.line -= 1;
        parse_error("--change", e)
    })?;
    for ins in &mut cf.stages[0].instructions {
        ins.line -= 1;
    }
    let opts = BuildOptions {
        context: None,
        containerfile: text.clone(),
        containerfile_name: "--change".into(),
        ignore: Ignore::default(),
        tags: Vec::new(),
        build_args: BTreeMap::new(),
        target: None,
        no_cache: true,
        pull: PullPolicy::Never,
        labels: BTreeMap::new(),
        network: NetworkMode::None,
        format: Format::Oci,
        compression: Compression::Gzip,
        secrets: BTreeMap::new(),
    };
    let auth = AuthFile::locate(None);
    let mut sink = std::io::sink();
    let instructions = cf.stages[0].instructions.clone();
    let mut b = Builder {
        engine,
        opts: &opts,
        auth: &auth,
        out: &mut sink,
        global: BTreeMap::new(),
        used_args: BTreeSet::new(),
        stages: vec![None],
        step: 0,
        steps: 0,
        cf,
    };
    let history = config["history"].clone();
    let cmd_from_base = !config["config"]["Cmd"].is_null();
    let mut state =
        State { layers: Vec::new(), config, image: None, key: String::new(), args: BTreeMap::new(), cmd_from_base };
    for ins in &instructions {
        use Keyword::*;
        if !matches!(
            ins.keyword,
            Cmd | Entrypoint | Env | Expose | Label | Onbuild | User | Volume | Workdir | Stopsignal
        ) {
            return Err(Error::invalid(format!(
                "--change {:?}: {} cannot be a change (only config instructions)",
                ins.text, ins.keyword
            )));
        }
        b.instruction(&mut state, ins)?;
    }
    // The changes are the commit's, not history entries of their own.
    state.config["history"] = history;
    Ok(state.config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("5x"), None);
    }
}
