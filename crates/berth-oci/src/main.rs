//! berth-oci: berth's OCI runtime with runc's command line.

mod cli;
mod commands;
mod log;
mod parse;

use clap::{CommandFactory, FromArgMatches};

/// `--version`: the lines go-runc and moby parse ("... version X", "commit: ", "spec: ").
pub const VERSION_LINE: &str =
    concat!("version ", env!("CARGO_PKG_VERSION"), "\ncommit: ", env!("CARGO_PKG_VERSION"), "\nspec: 1.2.0");

fn main() {
    let mut command = cli::Cli::command();
    let args = cli::normalize_args(&command, std::env::args().collect());
    let cli = match command.try_get_matches_from_mut(args).and_then(|m| cli::Cli::from_arg_matches(&m)) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let logger = match log::Logger::new(cli.log.as_deref(), &cli.log_format, cli.debug) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth-oci: {e}");
            std::process::exit(1);
        }
    };
    match commands::dispatch(&cli, &logger) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            logger.error(&e.to_string());
            std::process::exit(1);
        }
    }
}
