//! berth-oci: berth's OCI runtime with runc's command line.

mod cli;
mod commands;
mod log;
mod parse;

use clap::Parser;

pub const VERSION_LINE: &str =
    concat!(env!("CARGO_PKG_VERSION"), "\ncommit: ", env!("CARGO_PKG_VERSION"), "\nspec: 1.2.0");

fn main() {
    let cli = cli::Cli::parse();
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
