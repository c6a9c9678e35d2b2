//! `berth build`: docker's command line over berth-build.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use berth_build::{BuildOptions, Format, PullPolicy};
use berth_engine::error::{Error, Result};
use berth_image::auth::AuthFile;
use berth_storage::Compression;
use clap::Args;

use crate::Cli;

#[derive(Args)]
pub struct BuildArgs {
    /// Name the image (NAME[:TAG]); may be given several times
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Containerfile (default: CONTEXT/Containerfile, else CONTEXT/Dockerfile; - for stdin)
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// A build argument (KEY=VALUE, or KEY to take it from the environment)
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The stage to build (default: the last)
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache: run every step
    #[arg(long)]
    pub no_cache: bool,
    /// Pull base images: missing (default), always (--pull alone), never
    #[arg(long, num_args = 0..=1, default_missing_value = "always")]
    pub pull: Option<String>,
    /// A label on the image (KEY=VALUE)
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// RUN steps' network: bridge (default), host or none
    #[arg(long)]
    pub network: Option<String>,
    /// The platform to build for (this host's only)
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image ID
    #[arg(short, long)]
    pub quiet: bool,
    /// Write the image ID to this file
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Image format: oci (default) or docker
    #[arg(long, default_value = "oci")]
    pub format: String,
    /// Layer compression: gzip (default) or zstd
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// A secret for RUN --mount=type=secret (id=ID,src=PATH)
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// The build context: a directory, or - for a Containerfile on stdin and no context
    pub context: String,
}

pub(crate) fn build_cmd(cli: &Cli, a: &BuildArgs) -> Result<i32> {
    let (context, containerfile, name) = containerfile(a)?;
    let ignore = match &context {
        Some(dir) => ignore_file(dir)?,
        None => Default::default(),
    };
    let mut build_args = BTreeMap::new();
    for b in &a.build_args {
        match b.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(b) {
                    build_args.insert(b.clone(), v);
                }
            }
        }
    }
    let mut labels = BTreeMap::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let pull = match a.pull.as_deref() {
        None | Some("missing") | Some("false") => PullPolicy::Missing,
        Some("always") | Some("true") => PullPolicy::Always,
        Some("never") => PullPolicy::Never,
        Some(other) => return Err(Error::invalid(format!("--pull={other}: always, missing or never"))),
    };
    let network = match a.network.as_deref() {
        None | Some("bridge") | Some("default") => berth_engine::container::config::NetworkMode::Bridge,
        Some("host") => berth_engine::container::config::NetworkMode::Host,
        Some("none") => berth_engine::container::config::NetworkMode::None,
        Some(other) => return Err(Error::invalid(format!("--network={other}: bridge, host or none"))),
    };
    if let Some(p) = &a.platform {
        let host = berth_image::manifest::Platform::host();
        let ours = format!("linux/{}", host.architecture);
        if p != &ours && !p.starts_with(&format!("{ours}/")) {
            return Err(Error::unsupported(format!(
                "--platform {p}: berth builds for this host's platform ({ours}) only"
            )));
        }
    }
    let format = match a.format.as_str() {
        "oci" => Format::Oci,
        "docker" => Format::Docker,
        other => return Err(Error::invalid(format!("--format {other}: oci or docker"))),
    };
    let compression = match a.compression.as_str() {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        other => return Err(Error::invalid(format!("--compression {other}: gzip or zstd"))),
    };
    let mut secrets = BTreeMap::new();
    for s in &a.secrets {
        let mut id = None;
        let mut src = None;
        for kv in s.split(',') {
            match kv.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src", v)) | Some(("source", v)) => src = Some(PathBuf::from(v)),
                _ => return Err(Error::invalid(format!("--secret {s}: id=ID,src=PATH"))),
            }
        }
        let (Some(id), Some(src)) = (id, src) else {
            return Err(Error::invalid(format!("--secret {s}: id=ID,src=PATH")));
        };
        if !src.is_file() {
            return Err(Error::invalid(format!("--secret {s}: {} is not a file", src.display())));
        }
        secrets.insert(id, std::fs::canonicalize(&src).map_err(|e| Error::invalid(format!("--secret {s}: {e}")))?);
    }
    let opts = BuildOptions {
        context,
        containerfile,
        containerfile_name: name,
        ignore,
        tags: a.tags.clone(),
        build_args,
        target: a.target.clone(),
        no_cache: a.no_cache,
        pull,
        labels,
        network,
        format,
        compression,
        secrets,
    };
    let e = crate::containers::open(cli)?;
    let auth = AuthFile::locate(None);
    let mut stdout = std::io::stdout();
    let mut sink = std::io::sink();
    let out: &mut dyn Write = if a.quiet { &mut sink } else { &mut stdout };
    let built = berth_build::build(&e, &opts, &auth, out)?;
    println!("{}", built.id);
    if let Some(f) = &a.iidfile {
        std::fs::write(f, built.id.to_string()).map_err(|err| Error::from_io(err).context(f.display().to_string()))?;
    }
    Ok(0)
}

/// The context directory (None for `-`), the Containerfile's text and its name for errors.
fn containerfile(a: &BuildArgs) -> Result<(Option<PathBuf>, String, String)> {
    let read_stdin = || {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Error::invalid(format!("the Containerfile on stdin: {e}")))?;
        Ok::<_, Error>(s)
    };
    if a.context == "-" {
        if a.file.is_some() {
            return Err(Error::invalid("with a Containerfile on stdin (-), -f has nothing to add"));
        }
        return Ok((None, read_stdin()?, "<stdin>".into()));
    }
    let dir = PathBuf::from(&a.context);
    if !dir.is_dir() {
        return Err(Error::invalid(format!("{}: the build context must be a directory", dir.display())));
    }
    let file = match &a.file {
        Some(f) if f == Path::new("-") => return Ok((Some(dir), read_stdin()?, "<stdin>".into())),
        Some(f) => f.clone(),
        None => ["Containerfile", "Dockerfile"].iter().map(|n| dir.join(n)).find(|p| p.is_file()).ok_or_else(|| {
            Error::not_found(format!("{}: no Containerfile or Dockerfile in it (or give -f)", dir.display()))
        })?,
    };
    let text = std::fs::read_to_string(&file).map_err(|e| Error::invalid(format!("{}: {e}", file.display())))?;
    Ok((Some(dir), text, file.display().to_string()))
}

fn ignore_file(dir: &Path) -> Result<berth_build::ignore::Ignore> {
    for name in [".containerignore", ".dockerignore"] {
        let p = dir.join(name);
        match std::fs::read_to_string(&p) {
            Ok(text) => {
                return berth_build::ignore::Ignore::parse(&text, &p.display().to_string()).map_err(Error::invalid)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::invalid(format!("{}: {e}", p.display()))),
        }
    }
    Ok(Default::default())
}
