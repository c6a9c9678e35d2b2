//! berth: the daemonless command line: image commands (`images.rs`) and container, volume
//! and network commands (`containers.rs`, over berth-engine).

mod build;
mod containers;
mod images;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth", version, about = "berth: containers and images, daemonless")]
pub struct Cli {
    /// Store root (default: $BERTH_ROOT, else /var/lib/berth)
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    /// Configuration file (default: $BERTH_CONFIG, else /etc/berth/berth.toml)
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Build an image from a Containerfile (or Dockerfile)
    Build(build::BuildArgs),
    /// Pull an image from a registry
    Pull(images::PullArgs),
    /// Push an image to a registry
    Push(images::PushArgs),
    /// List images
    Images(images::ListArgs),
    /// Add a name to an image
    Tag(images::TagArgs),
    /// Remove images
    Rmi(images::RmiArgs),
    /// Log in to a registry (credentials go to a docker-compatible auth.json)
    Login(images::LoginArgs),
    /// Log out of a registry
    Logout(images::LogoutArgs),
    /// Load images from a docker-archive or OCI layout (tar or directory)
    Load(images::LoadArgs),
    /// Save images to a docker-archive, OCI archive or OCI layout directory
    Save(images::SaveArgs),
    /// Import a root filesystem tarball as a one-layer image
    Import(images::ImportArgs),
    /// Manage images
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Store-wide information and maintenance
    #[command(subcommand)]
    System(images::SystemCommand),
    /// Create and start a container
    Run(containers::RunArgs),
    /// Create a container (start it with `start`)
    Create(containers::CreateFlags),
    /// Start containers
    Start(containers::StartArgs),
    /// Stop containers: their stop signal, then SIGKILL after the timeout
    Stop(containers::StopArgs),
    /// Stop and start containers
    Restart(containers::StopArgs),
    /// Send a signal to containers
    Kill(containers::KillArgs),
    /// Remove containers
    Rm(containers::RmArgs),
    /// List containers
    Ps(containers::PsArgs),
    /// Show a container's output
    Logs(containers::LogsArgs),
    /// Run a command in a running container
    Exec(containers::ExecArgs),
    /// Attach to a running container's stdio
    Attach(containers::AttachArgs),
    /// Show containers (or images) as JSON
    Inspect(containers::NamesArgs),
    /// Wait for containers to exit; print their exit codes
    Wait(containers::NamesArgs),
    /// A container's processes
    Top(containers::NameArg),
    /// Containers' resource usage
    Stats(containers::StatsArgs),
    /// A container's published ports
    Port(containers::PortArgs),
    /// Copy files between a container and the host
    Cp(containers::CpArgs),
    /// Freeze a container's processes
    Pause(containers::NamesArgs),
    /// Thaw a paused container
    Unpause(containers::NamesArgs),
    /// Give a container a new name
    Rename(containers::RenameArgs),
    /// Change a container's resource limits or restart policy
    Update(containers::UpdateArgs),
    /// A container's changes to its image's files (A added, C changed, D deleted)
    Diff(containers::NameArg),
    /// Make an image of a container's changes
    Commit(containers::CommitArgs),
    /// A container's root filesystem as a tar
    Export(containers::ExportArgs),
    /// An image's history
    History(containers::HistoryArgs),
    /// berth's version
    Version(containers::VersionArgs),
    /// Container and image events, then new ones as they happen
    Events(containers::EventsArgs),
    /// Health checks
    #[command(subcommand)]
    Healthcheck(containers::HealthcheckCommand),
    /// Manage volumes
    #[command(subcommand)]
    Volume(containers::VolumeCommand),
    /// Manage networks
    #[command(subcommand)]
    Network(containers::NetworkCommand),
    /// The runtimes, storage, cgroups and kernel features berth sees
    Info(containers::InfoArgs),
    #[command(subcommand, hide = true)]
    Container(containers::ContainerCommand),
}

fn main() -> ExitCode {
    // A reader that goes away (`berth inspect | head`) ends us quietly, as it does other
    // command-line tools, instead of a panic on the failed write.
    // SAFETY: restoring the default disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    if let Some(r) = containers::run(&cli) {
        return match r {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("berth: {e}");
                // As docker: 125 when berth itself failed running or executing a container.
                let engine_failure = matches!(cli.command, Command::Run(_) | Command::Exec(_));
                ExitCode::from(if engine_failure { 125 } else { 1 })
            }
        };
    }
    match images::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}
