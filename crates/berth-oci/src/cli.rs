//! runc's command line, as containerd-shim-runc-v2 (go-runc), podman/conmon and CRI-O call it,
//! parsed the way Go's flag package parses it: global options before the command, each
//! command's options before its arguments; `--name value`, `--name=value`, `-name value`, short
//! aliases, and booleans as `--flag`, `--flag=true` or `--flag=false`.
//!
//! Hand-written rather than clap: the runtime runs for every container operation, and this keeps
//! its start-up and resident size small (see docs/ARCHITECTURE.md).

use std::path::PathBuf;

#[derive(Debug)]
pub struct Cli {
    pub root: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub log_format: String,
    pub debug: bool,
    pub systemd_cgroup: bool,
    pub rootless: Option<String>,
    pub command: Command,
}

#[derive(Debug)]
pub enum Command {
    Create(CreateArgs),
    Start(IdArg),
    State(IdArg),
    Kill(KillArgs),
    Delete(DeleteArgs),
    Run(RunArgs),
    List(ListArgs),
    Ps(PsArgs),
    Pause(IdArg),
    Resume(IdArg),
    Events(EventsArgs),
    Update(Box<UpdateArgs>),
    Spec(SpecArgs),
    Features,
    Exec(Box<ExecArgs>),
}

#[derive(Debug, Default)]
pub struct ExecArgs {
    pub process: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<String>,
    pub tty: bool,
    pub user: Option<String>,
    pub additional_gids: Vec<String>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub process_label: Option<String>,
    pub apparmor: Option<String>,
    pub no_new_privs: bool,
    pub caps: Vec<String>,
    pub preserve_fds: i32,
    pub cgroup: Option<String>,
    pub ignore_paused: bool,
    pub id: String,
    pub args: Vec<String>,
}

#[derive(Debug)]
pub struct IdArg {
    pub id: String,
}

#[derive(Debug, Clone)]
pub struct CreateFlags {
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: i32,
}

#[derive(Debug)]
pub struct CreateArgs {
    pub flags: CreateFlags,
    pub id: String,
}

#[derive(Debug)]
pub struct RunArgs {
    pub flags: CreateFlags,
    pub detach: bool,
    pub keep: bool,
    pub no_subreaper: bool,
    pub id: String,
}

#[derive(Debug)]
pub struct KillArgs {
    pub all: bool,
    pub id: String,
    pub signal: Option<String>,
}

#[derive(Debug)]
pub struct DeleteArgs {
    pub force: bool,
    pub id: String,
}

#[derive(Debug)]
pub struct ListArgs {
    pub format: String,
    pub quiet: bool,
}

#[derive(Debug)]
pub struct PsArgs {
    pub format: String,
    pub id: String,
    pub ps_args: Vec<String>,
}

#[derive(Debug)]
pub struct EventsArgs {
    pub stats: bool,
    pub interval: String,
    pub id: String,
}

#[derive(Debug, Default)]
pub struct UpdateArgs {
    pub resources: Option<PathBuf>,
    pub blkio_weight: Option<u16>,
    pub cpu_period: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_share: Option<u64>,
    pub cpu_rt_period: Option<u64>,
    pub cpu_rt_runtime: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub memory: Option<String>,
    pub memory_reservation: Option<String>,
    pub memory_swap: Option<String>,
    pub kernel_memory: Option<String>,
    pub kernel_memory_tcp: Option<String>,
    pub pids_limit: Option<i64>,
    pub l3_cache_schema: Option<String>,
    pub mem_bw_schema: Option<String>,
    pub id: String,
}

#[derive(Debug)]
pub struct SpecArgs {
    pub bundle: Option<PathBuf>,
    pub rootless: bool,
}

/// What parsing ends in besides a command: help or the version, or a usage error.
#[derive(Debug)]
pub enum Exit {
    Print(String),
    Usage(String),
}

/// One option a command accepts: long name, short alias, and whether it takes a value.
struct Opt {
    long: &'static str,
    short: Option<char>,
    value: bool,
    help: &'static str,
}

const fn flag(long: &'static str, short: Option<char>, help: &'static str) -> Opt {
    Opt { long, short, value: false, help }
}

const fn valued(long: &'static str, short: Option<char>, help: &'static str) -> Opt {
    Opt { long, short, value: true, help }
}

const GLOBAL: &[Opt] = &[
    valued("root", None, "root directory for the containers' state (default /run/berth-oci)"),
    valued("log", None, "log file for errors (and debug messages); default stderr"),
    valued("log-format", None, "log format: text (default) or json"),
    flag("debug", None, "also log debug messages"),
    flag("systemd-cgroup", None, "manage cgroups through systemd (not supported yet)"),
    valued("rootless", None, "rootless mode: auto, true or false"),
    valued("criu", None, "path to criu (berth-oci has no checkpoint/restore)"),
];

const CREATE: &[Opt] = &[
    valued("bundle", Some('b'), "bundle directory (config.json and the root filesystem), default ."),
    valued("console-socket", None, "unix socket that receives the pty master when process.terminal is true"),
    valued("pid-file", None, "write the init's pid to this file"),
    flag("no-pivot", None, "enter the rootfs with MS_MOVE + chroot instead of pivot_root"),
    flag("no-new-keyring", None, "keep the caller's session keyring"),
    valued("preserve-fds", None, "pass N more descriptors (3 .. 3+N-1) to the container"),
];

const RUN: &[Opt] = &[
    valued("bundle", Some('b'), "bundle directory (config.json and the root filesystem), default ."),
    valued("console-socket", None, "unix socket that receives the pty master when process.terminal is true"),
    valued("pid-file", None, "write the init's pid to this file"),
    flag("no-pivot", None, "enter the rootfs with MS_MOVE + chroot instead of pivot_root"),
    flag("no-new-keyring", None, "keep the caller's session keyring"),
    valued("preserve-fds", None, "pass N more descriptors (3 .. 3+N-1) to the container"),
    flag("detach", Some('d'), "return once the container runs"),
    flag("keep", None, "keep the container's state after it exits"),
    flag("no-subreaper", None, "do not become the subreaper of the container's orphans"),
];

const EXEC: &[Opt] = &[
    valued("process", Some('p'), "process.json with the whole process (other process flags are then ignored, as runc)"),
    valued("console-socket", None, "unix socket that receives the pty master (with --tty)"),
    valued("cwd", None, "working directory"),
    valued("env", Some('e'), "KEY=value to add (repeatable)"),
    flag("tty", Some('t'), "allocate a terminal"),
    valued("user", Some('u'), "uid[:gid]"),
    valued("additional-gids", Some('g'), "supplementary group (repeatable)"),
    flag("detach", Some('d'), "return once the process runs"),
    valued("pid-file", None, "write the process's pid to this file"),
    valued("process-label", None, "SELinux label for the process"),
    valued("apparmor", None, "AppArmor profile for the process"),
    flag("no-new-privs", None, "set no_new_privs"),
    valued("cap", Some('c'), "add a capability (repeatable)"),
    valued("preserve-fds", None, "pass N more descriptors (3 .. 3+N-1)"),
    valued("cgroup", None, "run in a sub-cgroup of the container (not supported)"),
    flag("ignore-paused", None, "exec even if the container is paused"),
];

const UPDATE: &[Opt] = &[
    valued("resources", Some('r'), "JSON file with linux.resources (- for stdin)"),
    valued("blkio-weight", None, "I/O weight, 10..1000"),
    valued("cpu-period", None, "CFS period, microseconds"),
    valued("cpu-quota", None, "CFS quota, microseconds (-1: none)"),
    valued("cpu-share", None, "CPU shares"),
    valued("cpu-rt-period", None, "real-time period, microseconds"),
    valued("cpu-rt-runtime", None, "real-time runtime, microseconds"),
    valued("cpuset-cpus", None, "CPUs to use (0-3,7)"),
    valued("cpuset-mems", None, "memory nodes to use"),
    valued("memory", None, "memory limit (bytes, or 100m, 1g; -1: none)"),
    valued("memory-reservation", None, "memory soft limit"),
    valued("memory-swap", None, "memory + swap limit (-1: unlimited swap)"),
    valued("kernel-memory", None, "kernel memory limit (obsolete in Linux)"),
    valued("kernel-memory-tcp", None, "kernel TCP buffer limit"),
    valued("pids-limit", None, "maximum number of processes (-1: none)"),
    valued("l3-cache-schema", None, "Intel RDT L3 cache schema (not supported)"),
    valued("mem-bw-schema", None, "Intel RDT memory bandwidth schema (not supported)"),
];

struct CommandDef {
    name: &'static str,
    opts: &'static [Opt],
    args: &'static str,
    about: &'static str,
}

const COMMANDS: &[CommandDef] = &[
    CommandDef {
        name: "create",
        opts: CREATE,
        args: "ID",
        about: "create a container: set it up and hold its process until start",
    },
    CommandDef { name: "start", opts: &[], args: "ID", about: "start a created container's process" },
    CommandDef { name: "state", opts: &[], args: "ID", about: "print a container's state (OCI state JSON)" },
    CommandDef {
        name: "kill",
        opts: &[flag("all", Some('a'), "signal every process of the container")],
        args: "ID [SIGNAL]",
        about: "send a signal (name or number, default SIGTERM) to the container's init",
    },
    CommandDef {
        name: "delete",
        opts: &[flag("force", Some('f'), "kill the container first if it still runs")],
        args: "ID",
        about: "delete a container and release what it holds",
    },
    CommandDef {
        name: "run",
        opts: RUN,
        args: "ID",
        about: "create and start a container; in the foreground, wait and return its exit code",
    },
    CommandDef {
        name: "list",
        opts: &[valued("format", Some('f'), "table (default) or json"), flag("quiet", Some('q'), "only container ids")],
        args: "",
        about: "list containers",
    },
    CommandDef {
        name: "ps",
        opts: &[valued("format", Some('f'), "table (default) or json")],
        args: "ID [PS ARGS...]",
        about: "list a container's processes",
    },
    CommandDef { name: "pause", opts: &[], args: "ID", about: "freeze all processes of a container" },
    CommandDef { name: "resume", opts: &[], args: "ID", about: "thaw a paused container" },
    CommandDef {
        name: "events",
        opts: &[
            flag("stats", None, "print statistics once and exit"),
            valued("interval", None, "statistics interval (default 5s)"),
        ],
        args: "ID",
        about: "print resource statistics and OOM events",
    },
    CommandDef { name: "update", opts: UPDATE, args: "ID", about: "change a running container's resource limits" },
    CommandDef {
        name: "spec",
        opts: &[
            valued("bundle", Some('b'), "where to write config.json (default .)"),
            flag("rootless", None, "for an unprivileged user"),
        ],
        args: "",
        about: "write a default config.json",
    },
    CommandDef { name: "features", opts: &[], args: "", about: "print the OCI features document" },
    CommandDef { name: "exec", opts: EXEC, args: "ID [COMMAND [ARGS...]]", about: "run a new process in a container" },
];

fn usage() -> String {
    let mut s = String::from("berth-oci: berth's OCI container runtime (runc-compatible command line)\n\nUsage: berth-oci [GLOBAL OPTIONS] COMMAND [OPTIONS] [ARGS]\n\nCommands:\n");
    for c in COMMANDS {
        s += &format!("  {:<10} {}\n", c.name, c.about);
    }
    s += "\nGlobal options:\n";
    s += &options_help(GLOBAL);
    s += "  --version, -v    print the version\n\nberth-oci COMMAND --help shows a command's options.\n";
    s
}

fn options_help(opts: &[Opt]) -> String {
    opts.iter()
        .map(|o| {
            let name = match (o.short, o.value) {
                (Some(c), true) => format!("--{} VALUE, -{c}", o.long),
                (Some(c), false) => format!("--{}, -{c}", o.long),
                (None, true) => format!("--{} VALUE", o.long),
                (None, false) => format!("--{}", o.long),
            };
            format!("  {name:<28} {}\n", o.help)
        })
        .collect()
}

fn command_help(c: &CommandDef) -> String {
    format!(
        "berth-oci {}: {}\n\nUsage: berth-oci {} [OPTIONS] {}\n\nOptions:\n{}",
        c.name,
        c.about,
        c.name,
        c.args,
        options_help(c.opts)
    )
}

/// Options and positional arguments of one command line segment.
struct Parsed {
    values: Vec<(&'static str, String)>,
    flags: Vec<&'static str>,
    positionals: Vec<String>,
}

impl Parsed {
    fn value(&self, name: &str) -> Option<String> {
        self.values.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.values.iter().filter(|(n, _)| *n == name).map(|(_, v)| v.clone()).collect()
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }
}

/// Parses options until the first argument that is not one (Go's flag package stops there),
/// or to the end when `all` is set. Returns the index where parsing stopped.
fn parse_options(opts: &'static [Opt], args: &[String], stop_at_positional: bool) -> Result<(Parsed, usize), Exit> {
    let mut p = Parsed { values: Vec::new(), flags: Vec::new(), positionals: Vec::new() };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            p.positionals.extend(args[i + 1..].iter().cloned());
            return Ok((p, args.len()));
        }
        let is_option = arg.len() > 1 && arg.starts_with('-') && !arg[1..].starts_with(|c: char| c.is_ascii_digit());
        if !is_option {
            if stop_at_positional {
                return Ok((p, i));
            }
            p.positionals.push(arg.clone());
            i += 1;
            continue;
        }
        if arg == "--help" || arg == "-h" || arg == "-help" {
            return Err(Exit::Print(String::new()));
        }
        let body = arg.trim_start_matches('-');
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let single_dash = !arg.starts_with("--");
        let opt = opts
            .iter()
            .find(|o| o.long == name || (single_dash && name.len() == 1 && o.short == name.chars().next()))
            .ok_or_else(|| Exit::Usage(format!("flag provided but not defined: {arg}")))?;
        if opt.value {
            let v = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i).cloned().ok_or_else(|| Exit::Usage(format!("flag needs an argument: {arg}")))?
                }
            };
            p.values.push((opt.long, v));
        } else {
            match inline.as_deref() {
                None | Some("true") | Some("1") => p.flags.push(opt.long),
                Some("false") | Some("0") => p.flags.retain(|f| *f != opt.long),
                Some(v) => return Err(Exit::Usage(format!("invalid boolean value '{v}' for {arg}"))),
            }
        }
        i += 1;
    }
    Ok((p, i))
}

fn number<T: std::str::FromStr>(p: &Parsed, name: &str) -> Result<Option<T>, Exit> {
    p.value(name)
        .map(|v| v.parse::<T>().map_err(|_| Exit::Usage(format!("invalid value '{v}' for --{name}: not a number"))))
        .transpose()
}

fn exactly(c: &CommandDef, pos: &[String], n: usize) -> Result<(), Exit> {
    if pos.len() == n {
        Ok(())
    } else {
        Err(Exit::Usage(format!("\"{}\" requires exactly {n} argument(s): {}", c.name, c.args)))
    }
}

fn create_flags(p: &Parsed) -> Result<CreateFlags, Exit> {
    Ok(CreateFlags {
        bundle: PathBuf::from(p.value("bundle").unwrap_or_else(|| ".".into())),
        console_socket: p.value("console-socket").map(PathBuf::from),
        pid_file: p.value("pid-file").map(PathBuf::from),
        no_pivot: p.flag("no-pivot"),
        no_new_keyring: p.flag("no-new-keyring"),
        preserve_fds: number(p, "preserve-fds")?.unwrap_or(0),
    })
}

/// Parses `argv` (without the program name).
pub fn parse(argv: &[String]) -> Result<Cli, Exit> {
    if argv
        .iter()
        .take_while(|a| !COMMANDS.iter().any(|c| c.name == a.as_str()))
        .any(|a| matches!(a.as_str(), "--version" | "-v" | "-version"))
    {
        return Err(Exit::Print(format!("berth-oci {}\n", crate::VERSION_LINE)));
    }
    let (globals, at) = parse_options(GLOBAL, argv, true).map_err(|e| match e {
        Exit::Print(_) => Exit::Print(usage()),
        other => other,
    })?;
    let Some(name) = argv.get(at) else { return Err(Exit::Print(usage())) };
    if name == "help" {
        return Err(Exit::Print(usage()));
    }
    let def =
        COMMANDS.iter().find(|c| c.name == name).ok_or_else(|| Exit::Usage(format!("no such command: {name}")))?;
    let rest = &argv[at + 1..];
    let (p, stop) = parse_options(def.opts, rest, true).map_err(|e| match e {
        Exit::Print(_) => Exit::Print(command_help(def)),
        other => other,
    })?;
    let mut pos: Vec<String> = rest[stop..].to_vec();
    pos.extend(p.positionals.iter().cloned());
    let id = |pos: &[String]| pos.first().cloned().unwrap_or_default();
    let command = match def.name {
        "create" => {
            exactly(def, &pos, 1)?;
            Command::Create(CreateArgs { flags: create_flags(&p)?, id: id(&pos) })
        }
        "run" => {
            exactly(def, &pos, 1)?;
            Command::Run(RunArgs {
                flags: create_flags(&p)?,
                detach: p.flag("detach"),
                keep: p.flag("keep"),
                no_subreaper: p.flag("no-subreaper"),
                id: id(&pos),
            })
        }
        "start" | "state" | "pause" | "resume" => {
            exactly(def, &pos, 1)?;
            let a = IdArg { id: id(&pos) };
            match def.name {
                "start" => Command::Start(a),
                "state" => Command::State(a),
                "pause" => Command::Pause(a),
                _ => Command::Resume(a),
            }
        }
        "kill" => {
            if pos.is_empty() || pos.len() > 2 {
                return Err(Exit::Usage("\"kill\" requires an ID and at most a SIGNAL".into()));
            }
            Command::Kill(KillArgs { all: p.flag("all"), id: id(&pos), signal: pos.get(1).cloned() })
        }
        "delete" => {
            exactly(def, &pos, 1)?;
            Command::Delete(DeleteArgs { force: p.flag("force"), id: id(&pos) })
        }
        "list" => {
            exactly(def, &pos, 0)?;
            Command::List(ListArgs {
                format: p.value("format").unwrap_or_else(|| "table".into()),
                quiet: p.flag("quiet"),
            })
        }
        "ps" => {
            if pos.is_empty() {
                return Err(Exit::Usage("\"ps\" requires an ID".into()));
            }
            Command::Ps(PsArgs {
                format: p.value("format").unwrap_or_else(|| "table".into()),
                id: id(&pos),
                ps_args: pos[1..].to_vec(),
            })
        }
        "events" => {
            exactly(def, &pos, 1)?;
            Command::Events(EventsArgs {
                stats: p.flag("stats"),
                interval: p.value("interval").unwrap_or_else(|| "5s".into()),
                id: id(&pos),
            })
        }
        "update" => {
            exactly(def, &pos, 1)?;
            Command::Update(Box::new(UpdateArgs {
                resources: p.value("resources").map(PathBuf::from),
                blkio_weight: number(&p, "blkio-weight")?,
                cpu_period: number(&p, "cpu-period")?,
                cpu_quota: number(&p, "cpu-quota")?,
                cpu_share: number(&p, "cpu-share")?,
                cpu_rt_period: number(&p, "cpu-rt-period")?,
                cpu_rt_runtime: number(&p, "cpu-rt-runtime")?,
                cpuset_cpus: p.value("cpuset-cpus"),
                cpuset_mems: p.value("cpuset-mems"),
                memory: p.value("memory"),
                memory_reservation: p.value("memory-reservation"),
                memory_swap: p.value("memory-swap"),
                kernel_memory: p.value("kernel-memory"),
                kernel_memory_tcp: p.value("kernel-memory-tcp"),
                pids_limit: number(&p, "pids-limit")?,
                l3_cache_schema: p.value("l3-cache-schema"),
                mem_bw_schema: p.value("mem-bw-schema"),
                id: id(&pos),
            }))
        }
        "exec" => {
            if pos.is_empty() {
                return Err(Exit::Usage("\"exec\" requires an ID (and a command, unless --process is given)".into()));
            }
            Command::Exec(Box::new(ExecArgs {
                process: p.value("process").map(PathBuf::from),
                console_socket: p.value("console-socket").map(PathBuf::from),
                cwd: p.value("cwd").map(PathBuf::from),
                env: p.all("env"),
                tty: p.flag("tty"),
                user: p.value("user"),
                additional_gids: p.all("additional-gids"),
                detach: p.flag("detach"),
                pid_file: p.value("pid-file").map(PathBuf::from),
                process_label: p.value("process-label"),
                apparmor: p.value("apparmor"),
                no_new_privs: p.flag("no-new-privs"),
                caps: p.all("cap"),
                preserve_fds: number(&p, "preserve-fds")?.unwrap_or(0),
                cgroup: p.value("cgroup"),
                ignore_paused: p.flag("ignore-paused"),
                id: id(&pos),
                args: pos[1..].to_vec(),
            }))
        }
        "spec" => {
            exactly(def, &pos, 0)?;
            Command::Spec(SpecArgs { bundle: p.value("bundle").map(PathBuf::from), rootless: p.flag("rootless") })
        }
        _ => {
            exactly(def, &pos, 0)?;
            Command::Features
        }
    };
    Ok(Cli {
        root: globals.value("root").map(PathBuf::from),
        log: globals.value("log").map(PathBuf::from),
        log_format: globals.value("log-format").unwrap_or_else(|| "text".into()),
        debug: globals.flag("debug"),
        systemd_cgroup: globals.flag("systemd-cgroup"),
        rootless: globals.value("rootless"),
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, Exit> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn go_style_flags() {
        let c =
            cli(&["-root", "/r", "--log=/l", "create", "-bundle=/b", "--no-pivot=false", "--no-new-keyring=true", "x"])
                .unwrap();
        assert_eq!(c.root, Some(PathBuf::from("/r")));
        assert_eq!(c.log, Some(PathBuf::from("/l")));
        let Command::Create(a) = c.command else { panic!() };
        assert_eq!(a.flags.bundle, PathBuf::from("/b"));
        assert!(!a.flags.no_pivot);
        assert!(a.flags.no_new_keyring);
        assert_eq!(a.id, "x");
    }

    #[test]
    fn short_aliases_and_positionals() {
        let Command::Kill(k) = cli(&["kill", "-a", "x", "9"]).unwrap().command else { panic!() };
        assert!(k.all && k.id == "x" && k.signal.as_deref() == Some("9"));
        // Parsing stops at the first argument: "-9" after the id is the signal.
        let Command::Kill(k) = cli(&["kill", "x", "-9"]).unwrap().command else { panic!() };
        assert_eq!(k.signal.as_deref(), Some("-9"));
        let Command::Ps(p) = cli(&["ps", "-f", "json", "x", "-ef"]).unwrap().command else { panic!() };
        assert_eq!((p.format.as_str(), p.ps_args.clone()), ("json", vec!["-ef".to_string()]));
        let Command::Update(u) = cli(&["update", "--cpu-quota", "-1", "--memory=100m", "x"]).unwrap().command else {
            panic!()
        };
        assert_eq!((u.cpu_quota, u.memory.as_deref()), (Some(-1), Some("100m")));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = |args: &[&str]| match cli(args) {
            Err(Exit::Usage(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(e(&["create", "--bogus", "x"]).contains("--bogus"));
        assert!(e(&["state"]).contains("requires exactly 1"));
        assert!(e(&["frobnicate"]).contains("no such command"));
        assert!(e(&["create", "--preserve-fds", "many", "x"]).contains("--preserve-fds"));
        assert!(e(&["create", "--bundle"]).contains("needs an argument"));
        assert!(matches!(cli(&["--version"]), Err(Exit::Print(v)) if v.starts_with("berth-oci version ")));
        assert!(matches!(cli(&["create", "--help"]), Err(Exit::Print(h)) if h.contains("--console-socket")));
    }
}
