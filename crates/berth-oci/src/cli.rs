//! runc's command line, as containerd-shim-runc-v2 (go-runc), podman/conmon and CRI-O call it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "berth-oci", version = crate::VERSION_LINE, about = "berth's OCI container runtime (runc-compatible command line)", disable_version_flag = true)]
pub struct Cli {
    /// Root directory for the containers' state.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Log file (errors and, with --debug, debug messages); default: stderr.
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    pub log_format: String,
    /// Also log debug messages.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Manage cgroups through systemd (not supported yet: a clear error).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Rootless mode: auto, true or false (before the command, as with runc).
    #[arg(long, value_name = "VALUE", default_missing_value = "true", num_args = 0..=1, require_equals = true)]
    pub rootless: Option<String>,
    /// Path to criu (only used by checkpoint/restore, which berth-oci does not offer).
    #[arg(long, global = true, value_name = "PATH", hide = true)]
    pub criu: Option<PathBuf>,
    /// Print the version.
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    pub version: Option<bool>,
    #[command(subcommand)]
    pub command: Command,
}

/// Rewrites what Go's flag package accepts and clap does not, as runc's callers send it:
/// single-dash long options (`-root X`, `-no-subreaper`) and boolean flags with a value
/// (`--no-pivot=false`, `--detach=true`).
pub fn normalize_args(command: &clap::Command, args: Vec<String>) -> Vec<String> {
    use std::collections::HashSet;
    fn collect(cmd: &clap::Command, longs: &mut HashSet<String>, bools: &mut HashSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                longs.insert(long.to_string());
                if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
                    bools.insert(long.to_string());
                }
            }
        }
        for sub in cmd.get_subcommands() {
            collect(sub, longs, bools);
        }
    }
    let (mut longs, mut bools) = (HashSet::new(), HashSet::new());
    collect(command, &mut longs, &mut bools);
    let mut out = Vec::with_capacity(args.len());
    let mut options_ended = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || options_ended || !arg.starts_with('-') {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            options_ended = true;
            out.push(arg);
            continue;
        }
        let mut arg = arg;
        if !arg.starts_with("--") && arg.len() > 2 {
            let name = arg[1..].split('=').next().unwrap_or_default();
            if longs.contains(name) {
                arg.insert(0, '-');
            }
        }
        if let Some((name, value)) = arg.strip_prefix("--").and_then(|a| a.split_once('=')) {
            if bools.contains(name) {
                match value {
                    "true" | "1" => out.push(format!("--{name}")),
                    "false" | "0" => {}
                    _ => out.push(arg),
                }
                continue;
            }
        }
        out.push(arg);
    }
    out
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container: set it up and hold its process until `start`.
    Create(CreateArgs),
    /// Start a created container's process.
    Start(IdArg),
    /// Print a container's state (OCI state JSON).
    State(IdArg),
    /// Send a signal to a container's init (or, with --all, to all its processes).
    Kill(KillArgs),
    /// Delete a container and release what it holds.
    Delete(DeleteArgs),
    /// Create and start a container; in the foreground, wait for it and return its exit code.
    Run(RunArgs),
    /// List containers.
    List(ListArgs),
    /// List a container's processes.
    Ps(PsArgs),
    /// Freeze all processes of a container.
    Pause(IdArg),
    /// Thaw a paused container.
    Resume(IdArg),
    /// Print resource usage statistics and OOM events.
    Events(EventsArgs),
    /// Change a running container's resource limits.
    Update(Box<UpdateArgs>),
    /// Write a default config.json.
    Spec(SpecArgs),
    /// Print the OCI features document (what this runtime supports).
    Features,
}

#[derive(Args, Debug)]
pub struct IdArg {
    pub id: String,
}

#[derive(Args, Debug, Clone)]
pub struct CreateFlags {
    /// Bundle directory (config.json and the root filesystem).
    #[arg(short, long, default_value = ".", value_name = "DIR")]
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master when process.terminal is true.
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Write the init's pid to this file.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Enter the root filesystem with MS_MOVE + chroot instead of pivot_root (ramfs roots).
    #[arg(long)]
    pub no_pivot: bool,
    /// Keep the caller's session keyring instead of a new one.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass N more descriptors (3 .. 3+N-1) to the container.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub preserve_fds: i32,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub flags: CreateFlags,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub flags: CreateFlags,
    /// Return once the container runs.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container's state after it exits.
    #[arg(long)]
    pub keep: bool,
    /// Do not become the subreaper of the container's orphans.
    #[arg(long)]
    pub no_subreaper: bool,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal every process of the container.
    #[arg(short, long)]
    pub all: bool,
    pub id: String,
    /// Signal name (KILL, SIGKILL) or number; default SIGTERM.
    pub signal: Option<String>,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Kill the container first if it still runs.
    #[arg(short, long)]
    pub force: bool,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// table or json.
    #[arg(short, long, default_value = "table")]
    pub format: String,
    /// Only container ids.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// table or json.
    #[arg(short, long, default_value = "table")]
    pub format: String,
    pub id: String,
    /// Options for ps(1) (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Print statistics once and exit.
    #[arg(long)]
    pub stats: bool,
    /// How often to print statistics (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s")]
    pub interval: String,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// JSON file with linux.resources (- for stdin); other flags then are not allowed.
    #[arg(short, long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    #[arg(long)]
    pub cpu_period: Option<u64>,
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    #[arg(long)]
    pub cpu_share: Option<u64>,
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or with a unit: 100m, 1g; -1 for none).
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Memory + swap limit (-1 for unlimited swap).
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub kernel_memory: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub kernel_memory_tcp: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    #[arg(long)]
    pub l3_cache_schema: Option<String>,
    #[arg(long)]
    pub mem_bw_schema: Option<String>,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct SpecArgs {
    /// Where to write config.json (default: the current directory).
    #[arg(short, long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// A configuration for an unprivileged user (user namespace, no network namespace).
    #[arg(long = "rootless", id = "spec_rootless")]
    pub rootless: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_args(&Cli::command(), args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn go_style_flags_are_accepted() {
        assert_eq!(
            norm(&["rt", "-root", "/r", "create", "-bundle=/b", "x"]),
            vec!["rt", "--root", "/r", "create", "--bundle=/b", "x"]
        );
        assert_eq!(
            norm(&["rt", "create", "--no-pivot=false", "--no-new-keyring=true", "x"]),
            vec!["rt", "create", "--no-new-keyring", "x"]
        );
        assert_eq!(norm(&["rt", "kill", "-a", "x", "9"]), vec!["rt", "kill", "-a", "x", "9"]);
        assert_eq!(norm(&["rt", "run", "--", "-root"]), vec!["rt", "run", "--", "-root"]);
    }
}
