//! The image commands: pull, push, images, tag, rmi, login, logout, load, save, import,
//! image {ls, inspect, prune, ...}, system df.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use berth_image::archive::{self, Format};
use berth_image::auth::{AuthFile, Credentials};
use berth_image::error::Result;
use berth_image::manifest::Platform;
use berth_image::pull::{self, PullOptions};
use berth_image::push::{self, PushOptions};
use berth_image::registry::Client;
use berth_image::{Config, Store};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::progress::{human_bytes, Reporter};
use crate::{Cli, Command};

macro_rules! bail {
    ($($t:tt)*) => { return Err(berth_image::Error::msg(format!($($t)*))) };
}

#[derive(Args)]
pub struct PullArgs {
    /// Image reference (short names resolve through the configuration)
    pub name: String,
    /// Platform to pull from a multi-platform image (os/arch[/variant]; default: this host)
    #[arg(long)]
    pub platform: Option<String>,
    /// No progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// Credentials file (default: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json)
    #[arg(long)]
    pub authfile: Option<PathBuf>,
    /// Credentials for this pull only: USER:PASSWORD
    #[arg(long)]
    pub creds: Option<String>,
}

#[derive(Args)]
pub struct PushArgs {
    /// Local image (name or ID)
    pub source: String,
    /// Destination reference (default: the source name)
    pub destination: Option<String>,
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long)]
    pub authfile: Option<PathBuf>,
    /// Credentials for this push only: USER:PASSWORD
    #[arg(long)]
    pub creds: Option<String>,
}

#[derive(Args)]
pub struct ListArgs {
    /// Output format: table or json
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Only image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Also list the intermediate images builds made for their steps (their cache)
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Args)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Args)]
pub struct RmiArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Remove an image referenced by several tags when given by ID
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args)]
pub struct LoginArgs {
    pub registry: String,
    #[arg(short, long)]
    pub username: Option<String>,
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    pub password_stdin: bool,
    #[arg(long)]
    pub authfile: Option<PathBuf>,
}

#[derive(Args)]
pub struct LogoutArgs {
    pub registry: String,
    #[arg(long)]
    pub authfile: Option<PathBuf>,
}

#[derive(Args)]
pub struct LoadArgs {
    /// Archive file or OCI layout directory (default: standard input)
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct SaveArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Output file, or directory for oci-dir (default: standard output)
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// docker-archive, oci-archive or oci-dir
    #[arg(long, default_value = "docker-archive")]
    pub format: String,
}

#[derive(Args)]
pub struct ImportArgs {
    /// Root filesystem tarball (plain, gzip or zstd), or - for standard input
    pub file: PathBuf,
    /// Name for the new image
    pub name: Option<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all images without containers, not only untagged ones
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Args)]
pub struct DfArgs {
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// List images
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show an image's details as JSON
    Inspect(InspectArgs),
    /// An image's history
    History(crate::containers::HistoryArgs),
    /// Remove untagged (or, with --all, unused) images and unreferenced data
    Prune(PruneArgs),
    /// Remove images
    Rm(RmiArgs),
    /// Add a name to an image
    Tag(TagArgs),
    Pull(PullArgs),
    Push(PushArgs),
    Save(SaveArgs),
    Load(LoadArgs),
    Import(ImportArgs),
}

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Disk usage of images, layers and downloads
    Df(DfArgs),
    /// Remove stopped containers, unused networks, untagged images (and with --volumes, unused volumes)
    Prune(crate::containers::SystemPruneArgs),
    /// Container and image events, then new ones as they happen
    Events(crate::containers::EventsArgs),
}

fn open_store(cli: &Cli) -> Result<Store> {
    let config = Config::load(cli.config.as_deref())?;
    Store::open(&Store::default_root(cli.root.as_deref()), config)
}

pub fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Pull(a) => pull_cmd(cli, a),
        Command::Push(a) => push_cmd(cli, a),
        Command::Images(a) => list(cli, a),
        Command::Tag(a) => tag(cli, a),
        Command::Rmi(a) => rmi(cli, a),
        Command::Login(a) => login(cli, a),
        Command::Logout(a) => logout(a),
        Command::Load(a) => load(cli, a),
        Command::Save(a) => save(cli, a),
        Command::Import(a) => import(cli, a),
        Command::Image(c) => match c {
            ImageCommand::Ls(a) => list(cli, a),
            ImageCommand::Inspect(a) => inspect(cli, a),
            ImageCommand::Prune(a) => prune(cli, a),
            ImageCommand::Rm(a) => rmi(cli, a),
            ImageCommand::Tag(a) => tag(cli, a),
            ImageCommand::Pull(a) => pull_cmd(cli, a),
            ImageCommand::Push(a) => push_cmd(cli, a),
            ImageCommand::Save(a) => save(cli, a),
            ImageCommand::Load(a) => load(cli, a),
            ImageCommand::Import(a) => import(cli, a),
            ImageCommand::History(_) => unreachable!("run by containers::run"),
        },
        Command::System(SystemCommand::Df(a)) => df(cli, a),
        // Container commands are run by containers::run before this is called.
        _ => unreachable!("not an image command"),
    }
}

fn parse_creds(s: Option<&str>) -> Result<Option<Credentials>> {
    match s {
        None => Ok(None),
        Some(s) => match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Some(Credentials { username: u.into(), password: p.into() })),
            _ => bail!("--creds: expected USER:PASSWORD"),
        },
    }
}

fn pull_cmd(cli: &Cli, a: &PullArgs) -> Result<()> {
    let store = open_store(cli)?;
    let platform = a.platform.as_deref().map(Platform::parse).transpose()?;
    let auth = AuthFile::locate(a.authfile.as_deref());
    let reporter = Reporter::new(a.quiet);
    let opts =
        PullOptions { platform, auth: &auth, credentials: parse_creds(a.creds.as_deref())?, progress: &reporter };
    let p = pull::pull(&store, &a.name, &opts);
    reporter.finish();
    let p = p?;
    if !a.quiet {
        eprintln!("Digest: {}", p.index_digest.as_ref().unwrap_or(&p.manifest_digest));
        eprintln!("Pulled {}", p.reference);
    }
    println!("{}", p.image_id);
    Ok(())
}

fn push_cmd(cli: &Cli, a: &PushArgs) -> Result<()> {
    let store = open_store(cli)?;
    let auth = AuthFile::locate(a.authfile.as_deref());
    let reporter = Reporter::new(a.quiet);
    let opts = PushOptions { auth: &auth, credentials: parse_creds(a.creds.as_deref())?, progress: &reporter };
    let p = push::push(&store, &a.source, a.destination.as_deref(), &opts);
    reporter.finish();
    let p = p?;
    if !a.quiet {
        eprintln!(
            "Pushed {} ({} uploaded, {} mounted, {} already present)",
            a.destination.as_deref().unwrap_or(&a.source),
            p.uploaded,
            p.mounted,
            p.existing
        );
    }
    println!("{}", p.manifest_digest);
    Ok(())
}

fn ago(created: Option<&str>) -> String {
    let Some(t) = created.and_then(berth_engine::time::parse_rfc3339).map(|ns| (ns / 1_000_000_000) as i64) else {
        return "unknown".into();
    };
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let d = (now - t).max(0);
    let (n, unit) = match d {
        0..=59 => return "Less than a minute ago".into(),
        60..=3599 => (d / 60, "minute"),
        3600..=86399 => (d / 3600, "hour"),
        86400..=1_209_599 => (d / 86400, "day"),
        1_209_600..=5_183_999 => (d / 604_800, "week"),
        5_184_000..=63_071_999 => (d / 2_592_000, "month"),
        _ => (d / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

fn list(cli: &Cli, a: &ListArgs) -> Result<()> {
    let store = open_store(cli)?;
    let mut images = store.list()?;
    if !a.all {
        let intermediate = store.build_intermediates()?;
        images.retain(|i| !intermediate.contains(&i.row.manifest_digest));
    }
    match a.format.as_str() {
        "json" => {
            let mut v: Vec<Value> = Vec::new();
            for i in &images {
                v.push(json!({
                    "Id": i.row.config_digest,
                    "Digest": i.row.manifest_digest,
                    "RepoTags": i.tags,
                    "RepoDigests": i.repo_digests,
                    "Created": i.row.created,
                    "Size": store.unpacked_size(i)?,
                    "CompressedSize": i.row.size,
                    "Os": i.row.os,
                    "Architecture": i.row.architecture,
                }));
            }
            println!("{}", serde_json::to_string_pretty(&v).unwrap());
        }
        "table" => {
            let mut out = std::io::stdout().lock();
            if a.quiet {
                let mut seen = std::collections::HashSet::new();
                for i in &images {
                    if seen.insert(i.id().short().to_string()) {
                        let _ = writeln!(out, "{}", i.id().short());
                    }
                }
                return Ok(());
            }
            let mut rows =
                vec![["REPOSITORY".to_string(), "TAG".into(), "IMAGE ID".into(), "CREATED".into(), "SIZE".into()]];
            for i in &images {
                let when = ago(i.row.created.as_deref());
                let size = human_bytes(store.unpacked_size(i)?);
                if i.tags.is_empty() {
                    rows.push(["<none>".into(), "<none>".into(), i.id().short().into(), when, size]);
                } else {
                    for t in &i.tags {
                        let (repo, tag) = t.rsplit_once(':').unwrap_or((t, ""));
                        rows.push([repo.into(), tag.into(), i.id().short().into(), when.clone(), size.clone()]);
                    }
                }
            }
            let widths: Vec<usize> = (0..5).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
            for r in rows {
                let line: Vec<String> = r.iter().enumerate().map(|(c, v)| format!("{v:<w$}", w = widths[c])).collect();
                let _ = writeln!(out, "{}", line.join("   ").trim_end());
            }
        }
        f => bail!("--format {f:?}: expected table or json"),
    }
    Ok(())
}

fn inspect(cli: &Cli, a: &InspectArgs) -> Result<()> {
    let store = open_store(cli)?;
    let mut out = Vec::new();
    for n in &a.names {
        let img = store.resolve(n)?;
        out.push(store.inspect(&img)?);
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
    Ok(())
}

fn tag(cli: &Cli, a: &TagArgs) -> Result<()> {
    let store = open_store(cli)?;
    let img = store.resolve(&a.source)?;
    store.tag(&img, &a.target)?;
    Ok(())
}

fn rmi(cli: &Cli, a: &RmiArgs) -> Result<()> {
    let store = open_store(cli)?;
    let mut failed = Vec::new();
    for n in &a.names {
        match store.remove_image(n, a.force) {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(e) => {
                eprintln!("berth: {e}");
                failed.push(n.clone());
            }
        }
    }
    if !failed.is_empty() {
        bail!("could not remove {}", failed.join(", "));
    }
    Ok(())
}

fn prune(cli: &Cli, a: &PruneArgs) -> Result<()> {
    let store = open_store(cli)?;
    let r = store.prune(a.all)?;
    for i in &r.images {
        println!("Deleted: {i}");
    }
    println!(
        "Removed {} image(s), {} blob(s) ({}), {} layer(s), {} leftover(s)",
        r.images.len(),
        r.blobs,
        human_bytes(r.blob_bytes),
        r.layers,
        r.leftovers
    );
    Ok(())
}

fn df(cli: &Cli, a: &DfArgs) -> Result<()> {
    let store = open_store(cli)?;
    let u = store.usage()?;
    match a.format.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&u).unwrap()),
        "table" => {
            println!("{:<12} {:>6} {:>8} {:>12} {:>12}", "TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE");
            println!(
                "{:<12} {:>6} {:>8} {:>12} {:>12}",
                "Images",
                u.images,
                u.images_active,
                human_bytes(u.blob_bytes),
                human_bytes(u.blob_reclaimable)
            );
            println!(
                "{:<12} {:>6} {:>8} {:>12} {:>12}",
                "Layers",
                u.layers,
                "",
                human_bytes(u.layer_bytes),
                human_bytes(u.layer_reclaimable)
            );
            println!("{:<12} {:>6} {:>8} {:>12} {:>12}", "Snapshots", u.snapshots, "", "", "");
            println!(
                "{:<12} {:>6} {:>8} {:>12} {:>12}",
                "Downloads",
                "",
                "",
                human_bytes(u.ingest_bytes),
                human_bytes(u.ingest_bytes)
            );
        }
        f => bail!("--format {f:?}: expected table or json"),
    }
    Ok(())
}

fn read_password(a: &LoginArgs) -> Result<String> {
    if let Some(p) = &a.password {
        return Ok(p.clone());
    }
    if a.password_stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        return Ok(s.trim_end_matches(['\n', '\r']).to_string());
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password: use --password-stdin or --password");
    }
    eprint!("Password: ");
    let _ = std::io::stderr().flush();
    // Turn off echo while the password is typed.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    let have = unsafe { libc::tcgetattr(0, &mut t) } == 0;
    let saved = t;
    if have {
        t.c_lflag &= !libc::ECHO;
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
    }
    let mut s = String::new();
    let r = std::io::stdin().read_line(&mut s);
    if have {
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &saved) };
    }
    eprintln!();
    r?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

fn login(cli: &Cli, a: &LoginArgs) -> Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    let username = match &a.username {
        Some(u) => u.clone(),
        None => {
            if !std::io::stdin().is_terminal() || a.password_stdin {
                bail!("no username: use --username");
            }
            eprint!("Username: ");
            let _ = std::io::stderr().flush();
            let mut s = String::new();
            std::io::stdin().read_line(&mut s)?;
            s.trim().to_string()
        }
    };
    let password = read_password(a)?;
    let registry = a.registry.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
    let creds = Credentials { username, password };
    let client = Client::new(&config, registry, registry, Some(creds.clone()), Vec::new());
    client.check_login().map_err(|e| e.context(format!("login to {registry}")))?;
    let auth = AuthFile::locate(a.authfile.as_deref());
    auth.set(registry, &creds)?;
    println!("Login Succeeded ({})", auth.path.display());
    Ok(())
}

fn logout(a: &LogoutArgs) -> Result<()> {
    let auth = AuthFile::locate(a.authfile.as_deref());
    let registry = a.registry.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
    if !auth.remove(registry)? {
        bail!("not logged in to {registry} ({})", auth.path.display());
    }
    println!("Removed login credentials for {registry}");
    Ok(())
}

fn load(cli: &Cli, a: &LoadArgs) -> Result<()> {
    let store = open_store(cli)?;
    let input = a.input.clone().unwrap_or_else(|| PathBuf::from("-"));
    if input == Path::new("-") && std::io::stdin().is_terminal() {
        bail!("no archive: use --input FILE or redirect standard input");
    }
    let reporter = Reporter::new(a.quiet);
    let loaded = archive::load(&store, &input, &reporter);
    reporter.finish();
    for n in loaded? {
        println!("Loaded image: {n}");
    }
    Ok(())
}

fn save(cli: &Cli, a: &SaveArgs) -> Result<()> {
    let store = open_store(cli)?;
    let format = Format::parse(&a.format)?;
    let out = a.output.clone().unwrap_or_else(|| PathBuf::from("-"));
    if out == Path::new("-") {
        if format == Format::OciDir {
            bail!("--format oci-dir needs --output DIRECTORY");
        }
        if std::io::stdout().is_terminal() {
            bail!("refusing to write an archive to a terminal: use --output or redirect");
        }
    }
    archive::save(&store, &a.names, format, &out)
}

fn import(cli: &Cli, a: &ImportArgs) -> Result<()> {
    let store = open_store(cli)?;
    let id = archive::import(&store, &a.file, a.name.as_deref())?;
    println!("{id}");
    Ok(())
}
