//! The container commands' arguments, docker's flags and defaults.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Args, Debug, Clone)]
pub struct CreateFlags {
    /// Keep stdin open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal
    #[arg(short, long)]
    pub tty: bool,
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable NAME=VALUE (NAME alone takes this process's value)
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// File of NAME=VALUE lines
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// USER[:GROUP] (names or ids)
    #[arg(short, long)]
    pub user: Option<String>,
    /// Override the image's entrypoint ("" clears it)
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Bind mount HOST:CTR[:ro], named volume NAME:CTR[:ro], or anonymous volume CTR
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// tmpfs mount CTR[:OPTIONS]
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Publish [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]
    #[arg(short, long = "publish")]
    pub publish: Vec<String>,
    /// Publish every exposed port on a free host port
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// bridge (default), host, none, or a network's name
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    #[arg(long)]
    pub dns: Vec<String>,
    /// NAME:IP line for /etc/hosts
    #[arg(long)]
    pub add_host: Vec<String>,
    /// Memory limit (e.g. 512m, 1g)
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPUs (e.g. 1.5)
    #[arg(long)]
    pub cpus: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    #[arg(long)]
    pub cap_add: Vec<String>,
    #[arg(long)]
    pub cap_drop: Vec<String>,
    #[arg(long)]
    pub privileged: bool,
    /// Read-only root filesystem
    #[arg(long)]
    pub read_only: bool,
    /// seccomp=FILE, seccomp=unconfined, no-new-privileges
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// Run a minimal init as PID 1 (reaps zombies, forwards signals)
    #[arg(long)]
    pub init: bool,
    /// no, on-failure[:N], always, unless-stopped
    #[arg(long)]
    pub restart: Option<String>,
    /// Runtime handler (berth-oci, runc, crun, or one from berth.toml)
    #[arg(long)]
    pub runtime: Option<String>,
    /// KEY=VALUE
    #[arg(short, long = "label")]
    pub label: Vec<String>,
    #[arg(long)]
    pub stop_signal: Option<String>,
    #[arg(long)]
    pub stop_timeout: Option<u32>,
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Pull the image: missing (default: when the store lacks it), always, never
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Health check command (run with /bin/sh -c), over the image's HEALTHCHECK
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Time between health checks (e.g. 30s)
    #[arg(long)]
    pub health_interval: Option<String>,
    /// Time a health check may take
    #[arg(long)]
    pub health_timeout: Option<String>,
    /// Failures in a row that make the container unhealthy
    #[arg(long)]
    pub health_retries: Option<u32>,
    /// Time after the start when failures do not count
    #[arg(long)]
    pub health_start_period: Option<String>,
    /// No health check, not even the image's
    #[arg(long)]
    pub no_healthcheck: bool,
    /// The image, then the command and its arguments: everything after the image is the
    /// command's, options included (`run IMAGE ls -l`, `run IMAGE -x` with an entrypoint)
    #[arg(value_name = "IMAGE [COMMAND [ARG...]]", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub image_and_command: Vec<String>,
}

impl CreateFlags {
    pub fn image(&self) -> &str {
        &self.image_and_command[0]
    }

    pub fn command(&self) -> &[String] {
        &self.image_and_command[1..]
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run in the background and print the container ID
    #[arg(short, long)]
    pub detach: bool,
    #[command(flatten)]
    pub c: CreateFlags,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach to its output (and wait for it)
    #[arg(short, long)]
    pub attach: bool,
    /// Attach stdin too
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before SIGKILL (default: the container's --stop-timeout, else 10)
    #[arg(short = 't', long = "time", alias = "timeout")]
    pub time: Option<u32>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill and remove a running container
    #[arg(short, long)]
    pub force: bool,
    /// Remove its anonymous volumes too
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// All containers, not only running ones
    #[arg(short, long)]
    pub all: bool,
    /// Only IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
    /// status=, name=, id=, label=KEY[=VALUE], ancestor=
    #[arg(short, long)]
    pub filter: Vec<String>,
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines from the end, or "all"
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// RFC 3339 time, Unix time, or a duration ago (10m)
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub until: Option<String>,
    #[arg(short, long)]
    pub timestamps: bool,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(short, long)]
    pub tty: bool,
    #[arg(short, long)]
    pub detach: bool,
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(short, long)]
    pub workdir: Option<String>,
    #[arg(long)]
    pub privileged: bool,
    /// The container, then the command and its arguments (options included)
    #[arg(value_name = "CONTAINER COMMAND [ARG...]", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub name_and_command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach stdin
    #[arg(long)]
    pub no_stdin: bool,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NameArg {
    pub name: String,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// One sample, then exit
    #[arg(long)]
    pub no_stream: bool,
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PortArgs {
    pub name: String,
    /// PORT[/PROTO]
    pub port: Option<String>,
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// CONTAINER:PATH or a host path
    pub src: String,
    /// CONTAINER:PATH or a host path
    pub dst: String,
}

#[derive(Args, Debug)]
pub struct FormatArgs {
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    Create {
        name: Option<String>,
        #[arg(short, long = "label")]
        label: Vec<String>,
    },
    #[command(alias = "list")]
    Ls(FormatArgs),
    Inspect(NamesArgs),
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container uses
    Prune {
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    Create {
        name: String,
        /// e.g. 10.90.3.0/24 (default: a free 10.90.N.0/24)
        #[arg(long)]
        subnet: Option<String>,
        /// Bridge interface name (default: berthN)
        #[arg(long)]
        bridge: Option<String>,
    },
    #[command(alias = "list")]
    Ls(FormatArgs),
    Inspect(NamesArgs),
    Rm(NamesArgs),
    /// CNI CHECK: verify a running container's network attachments
    Check(NameArg),
}

#[derive(Args, Debug)]
pub struct SystemPruneArgs {
    /// Also remove every unused image, not only untagged ones
    #[arg(short, long)]
    pub all: bool,
    /// Also remove unused volumes
    #[arg(long)]
    pub volumes: bool,
    /// Do not ask (berth never asks; accepted for docker compatibility)
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Run by berth-monitor when a container exits: record the exit, release its resources,
    /// restart or remove it
    #[command(hide = true)]
    Cleanup { id: String },
    /// Run a container's health checks while it runs (started with it by `run` and `start`)
    #[command(hide = true)]
    HealthcheckLoop { id: String },
}

#[derive(Subcommand, Debug)]
pub enum HealthcheckCommand {
    /// Run a container's health check once: exit status 0 when healthy
    Run { name: String },
}
