//! berth: the daemonless command line. Image commands today; container commands join them
//! as new variants of `Command` with their own modules.

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match images::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}
