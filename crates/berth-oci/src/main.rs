//! berth-oci: berth's OCI runtime with runc's command line.

mod cli;
mod commands;
mod log;
mod parse;

/// `--version`: the lines go-runc and moby parse ("... version X", "commit: ", "spec: ").
pub const VERSION_LINE: &str =
    concat!("version ", env!("CARGO_PKG_VERSION"), "\ncommit: ", env!("CARGO_PKG_VERSION"), "\nspec: 1.2.0");

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let cli = match cli::parse(&argv) {
        Ok(cli) => cli,
        Err(cli::Exit::Print(text)) => {
            print!("{text}");
            std::process::exit(0);
        }
        Err(cli::Exit::Usage(msg)) => {
            eprintln!("berth-oci: {msg} (berth-oci --help shows the usage)");
            std::process::exit(1);
        }
    };
    let logger = match log::Logger::new(cli.log.as_deref(), &cli.log_format, cli.debug) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth-oci: {e}");
            std::process::exit(1);
        }
    };
    // exec's own failures exit 255 (as runc's), apart from any exit code of the process.
    let failure = if matches!(cli.command, cli::Command::Exec(_)) { 255 } else { 1 };
    match commands::dispatch(&cli, &logger) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            logger.error(&e.to_string());
            std::process::exit(failure);
        }
    }
}
