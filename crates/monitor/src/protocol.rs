//! The contract between the engine and berth-monitor, defined once for both sides: the
//! monitor's command line, the lines on the sync socket, the attach socket's messages, the
//! files in the container's run directory and the exit record. No dependencies at all: the
//! monitor's size is measured against conmon's.
//!
//! Sync socket (a socket pair; one line per message):
//! monitor → engine `monitor <pid>`, `created <pid>` (the runtime's create succeeded and the
//! attach socket is up), then `started` or `error <message>`; engine → monitor `start`
//! (anything else, or EOF, and the created container is deleted again).
//!
//! Attach socket (SOCK_SEQPACKET, one message per packet): client → monitor `0` + bytes
//! (stdin), `1` + rows (u16 LE) + cols (u16 LE) (terminal size), `2` (close stdin), `3` (reopen
//! the log file); monitor → client `1` + bytes (stdout), `2` + bytes (stderr), `3` + the reopen's
//! outcome (empty: done, else the error). Closed when the container exits.

/// Files in the container's run directory (`--dir`).
pub const ATTACH_SOCKET: &str = "attach";
pub const EXIT_FILE: &str = "exit";
pub const PID_FILE: &str = "pid";
pub const RUNTIME_LOG: &str = "runtime.log";

/// The exit code recorded when no one saw the container's exit status (its monitor was
/// killed, or the status could not be read): no process exits with it, so it never reads as
/// a real status (255 does: `exit 255`).
pub const EXIT_UNKNOWN: i32 = -1;

/// The monitor's command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorArgs {
    pub id: String,
    /// the OCI runtime's program and the arguments before its command (`--root …`)
    pub runtime: String,
    pub runtime_args: Vec<String>,
    /// run the runtime in a private mount namespace without /sys/fs/cgroup/unified
    pub hide_cgroup2: bool,
    pub bundle: String,
    /// the container's run directory: attach socket, exit file, pid file, runtime log
    pub dir: String,
    /// the CRI log file, rotated at `log_max` bytes (0: never)
    pub log: String,
    pub log_max: u64,
    /// a log record holds at most this many bytes of a line (the rest follows in more `P`
    /// records; 0: no limit), as containerd's max_container_log_line_size
    pub log_line_max: u64,
    pub stdin: bool,
    pub terminal: bool,
    /// the monitor's end of the sync socket
    pub sync_fd: i32,
    /// run after the container exited and its runtime state is deleted (the engine's cleanup)
    pub exit_command: Option<String>,
    pub exit_args: Vec<String>,
}

pub const USAGE: &str = "usage: berth-monitor --id ID --runtime PATH [--runtime-arg ARG]... [--hide-cgroup2] --bundle DIR --dir DIR --log FILE [--log-max-size BYTES] [--log-line-max BYTES] [--stdin] [--terminal] --sync-fd FD [--exit-command PATH [--exit-arg ARG]...]";

impl MonitorArgs {
    /// The arguments the engine passes (without the program's name).
    pub fn to_args(&self) -> Vec<String> {
        let mut v: Vec<String> = vec!["--id".into(), self.id.clone(), "--runtime".into(), self.runtime.clone()];
        for a in &self.runtime_args {
            v.extend(["--runtime-arg".into(), a.clone()]);
        }
        if self.hide_cgroup2 {
            v.push("--hide-cgroup2".into());
        }
        v.extend(["--bundle".into(), self.bundle.clone(), "--dir".into(), self.dir.clone()]);
        v.extend(["--log".into(), self.log.clone(), "--log-max-size".into(), self.log_max.to_string()]);
        if self.log_line_max > 0 {
            v.extend(["--log-line-max".into(), self.log_line_max.to_string()]);
        }
        if self.stdin {
            v.push("--stdin".into());
        }
        if self.terminal {
            v.push("--terminal".into());
        }
        v.extend(["--sync-fd".into(), self.sync_fd.to_string()]);
        if let Some(cmd) = &self.exit_command {
            v.extend(["--exit-command".into(), cmd.clone()]);
            for a in &self.exit_args {
                v.extend(["--exit-arg".into(), a.clone()]);
            }
        }
        v
    }

    /// Parses the monitor's arguments (without the program's name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<MonitorArgs, String> {
        let mut a = MonitorArgs { sync_fd: -1, ..Default::default() };
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag}: missing value"));
            match flag.as_str() {
                "--id" => a.id = value()?,
                "--runtime" => a.runtime = value()?,
                "--runtime-arg" => a.runtime_args.push(value()?),
                "--hide-cgroup2" => a.hide_cgroup2 = true,
                "--bundle" => a.bundle = value()?,
                "--dir" => a.dir = value()?,
                "--log" => a.log = value()?,
                "--log-max-size" => {
                    a.log_max = value()?.parse().map_err(|_| "--log-max-size: not a number".to_string())?
                }
                "--log-line-max" => {
                    a.log_line_max = value()?.parse().map_err(|_| "--log-line-max: not a number".to_string())?
                }
                "--stdin" => a.stdin = true,
                "--terminal" => a.terminal = true,
                "--sync-fd" => a.sync_fd = value()?.parse().map_err(|_| "--sync-fd: not a number".to_string())?,
                "--exit-command" => a.exit_command = Some(value()?),
                "--exit-arg" => a.exit_args.push(value()?),
                "--help" | "-h" => return Err(USAGE.into()),
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        let required =
            [(&a.id, "--id"), (&a.runtime, "--runtime"), (&a.bundle, "--bundle"), (&a.dir, "--dir"), (&a.log, "--log")];
        check_required(&required, a.sync_fd, USAGE)?;
        Ok(a)
    }
}

/// The options a command line must have: each value non-empty, and the sync descriptor.
fn check_required(values: &[(&String, &str)], sync_fd: i32, usage: &str) -> Result<(), String> {
    if let Some((_, name)) = values.iter().find(|(v, _)| v.is_empty()) {
        return Err(format!("{name} is required\n{usage}"));
    }
    if sync_fd < 0 {
        return Err(format!("--sync-fd is required\n{usage}"));
    }
    Ok(())
}

/// A line from the monitor to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToEngine {
    /// the monitor (the second process, in its own session) runs with this pid
    Monitor(i32),
    /// the runtime created the container; its init has this pid; the attach socket is up
    Created(i32),
    /// the runtime started the container
    Started,
    /// the monitor gave up: the runtime's own error, or the monitor's
    Error(String),
}

impl ToEngine {
    /// The line, newline-terminated; a message's own newlines become spaces.
    pub fn encode(&self) -> String {
        match self {
            ToEngine::Monitor(pid) => format!("monitor {pid}\n"),
            ToEngine::Created(pid) => format!("created {pid}\n"),
            ToEngine::Started => "started\n".into(),
            ToEngine::Error(m) => format!("error {}\n", m.replace('\n', " ")),
        }
    }

    pub fn parse(line: &str) -> Option<ToEngine> {
        let line = line.trim_end_matches('\n');
        let pid = |p: &str| p.parse::<i32>().ok().filter(|p| *p > 0);
        if let Some(p) = line.strip_prefix("monitor ") {
            return pid(p).map(ToEngine::Monitor);
        }
        if let Some(p) = line.strip_prefix("created ") {
            return pid(p).map(ToEngine::Created);
        }
        if let Some(m) = line.strip_prefix("error ") {
            return Some(ToEngine::Error(m.to_string()));
        }
        (line == "started").then_some(ToEngine::Started)
    }
}

/// The engine's one message to the monitor: start the created container.
pub const START: &str = "start";

/// The attach socket's message types.
pub mod attach {
    /// client → monitor: bytes for the container's stdin
    pub const STDIN: u8 = 0;
    /// client → monitor: the terminal's size, rows and columns as u16 LE
    pub const RESIZE: u8 = 1;
    /// client → monitor: close the container's stdin once what was sent is written
    pub const CLOSE_STDIN: u8 = 2;
    /// client → monitor: open the log file again at its path (the caller rotated it); the
    /// monitor answers `LOG_REOPENED` followed by `0` (done) or an error message
    pub const REOPEN_LOG: u8 = 3;
    /// monitor → client: the answer to `REOPEN_LOG`
    pub const LOG_REOPENED: u8 = 3;
    /// monitor → client: the container's stdout (or the terminal's output)
    pub const STDOUT: u8 = 1;
    /// monitor → client: the container's stderr
    pub const STDERR: u8 = 2;

    pub fn resize(rows: u16, cols: u16) -> [u8; 5] {
        let (r, c) = (rows.to_le_bytes(), cols.to_le_bytes());
        [RESIZE, r[0], r[1], c[0], c[1]]
    }
}

/// What the monitor records when the container exits (the run directory's `exit`, written
/// atomically before the attach clients are closed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitRecord {
    /// the exit status, 128 + the signal for a killed process, or EXIT_UNKNOWN
    pub exit_code: i32,
    /// the signal that killed it, 0 if it exited
    pub signal: i32,
    pub oom_killed: bool,
    pub pid: i32,
    /// RFC 3339 timestamps
    pub started_at: String,
    pub finished_at: String,
}

impl ExitRecord {
    /// One JSON object on one line: `{"exitCode":0,"signal":0,"oomKilled":false,"pid":…,
    /// "startedAt":"…","finishedAt":"…"}`.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"exitCode\":{},\"signal\":{},\"oomKilled\":{},\"pid\":{},\"startedAt\":\"{}\",\"finishedAt\":\"{}\"}}\n",
            self.exit_code,
            self.signal,
            self.oom_killed,
            self.pid,
            json_safe(&self.started_at),
            json_safe(&self.finished_at)
        )
    }

    /// Reads what `to_json` wrote: a flat object of numbers, booleans and strings without
    /// escapes. Anything else (a torn or foreign file) is None.
    pub fn parse(text: &str) -> Option<ExitRecord> {
        let body = text.trim().strip_prefix('{')?.strip_suffix('}')?;
        let mut r = ExitRecord::default();
        let mut seen_code = false;
        let mut rest = body.trim();
        while !rest.is_empty() {
            let after_quote = rest.strip_prefix('"')?;
            let (key, after_key) = after_quote.split_once('"')?;
            let after_colon = after_key.trim_start().strip_prefix(':')?.trim_start();
            let (value, after_value) = if let Some(s) = after_colon.strip_prefix('"') {
                let (v, r) = s.split_once('"')?;
                if v.contains('\\') {
                    return None;
                }
                (Value::Text(v), r)
            } else {
                let end = after_colon.find(',').unwrap_or(after_colon.len());
                let raw = after_colon[..end].trim();
                let v = match raw {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    n => Value::Number(n.parse().ok()?),
                };
                (v, &after_colon[end..])
            };
            match (key, value) {
                ("exitCode", Value::Number(n)) => {
                    r.exit_code = i32::try_from(n).ok()?;
                    seen_code = true;
                }
                ("signal", Value::Number(n)) => r.signal = i32::try_from(n).ok()?,
                ("pid", Value::Number(n)) => r.pid = i32::try_from(n).ok()?,
                ("oomKilled", Value::Bool(b)) => r.oom_killed = b,
                ("startedAt", Value::Text(t)) => r.started_at = t.to_string(),
                ("finishedAt", Value::Text(t)) => r.finished_at = t.to_string(),
                // A field a later monitor added: skipped, so older engines still read it.
                (_, _) => {}
            }
            let after_value = after_value.trim_start();
            rest = match after_value.strip_prefix(',') {
                Some(r) => r.trim_start(),
                None if after_value.is_empty() => after_value,
                None => return None,
            };
        }
        seen_code.then_some(r)
    }
}

enum Value<'a> {
    Number(i64),
    Bool(bool),
    Text(&'a str),
}

/// Timestamps never hold quotes or backslashes; anything else is dropped rather than escaped.
fn json_safe(s: &str) -> String {
    s.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect()
}

/// `berth-monitor exec-tty …`: one `exec --tty` into a running container, for a caller that
/// relays the terminal itself (berthd's streaming server). Runtimes hand a new pty's master
/// over only when they detach, and only a parent (or subreaper) learns a process's exit
/// status: this short-lived helper is the subreaper. It runs the runtime's `exec --detach
/// --tty --console-socket`, passes the master it receives to the caller, waits for the
/// process and reports its exit status, then exits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecTtyArgs {
    pub id: String,
    pub runtime: String,
    pub runtime_args: Vec<String>,
    pub hide_cgroup2: bool,
    /// the process (OCI `process` JSON) the runtime's `exec --process` runs
    pub process: String,
    /// the helper's end of a SOCK_SEQPACKET pair: it sends the `ExecEvent`s there
    pub sync_fd: i32,
}

pub const EXEC_TTY_USAGE: &str = "usage: berth-monitor exec-tty --id ID --runtime PATH [--runtime-arg ARG]... [--hide-cgroup2] --process FILE --sync-fd FD";

impl ExecTtyArgs {
    pub const COMMAND: &'static str = "exec-tty";

    /// The arguments the engine passes (without the program's name).
    pub fn to_args(&self) -> Vec<String> {
        let mut v: Vec<String> =
            vec![Self::COMMAND.into(), "--id".into(), self.id.clone(), "--runtime".into(), self.runtime.clone()];
        for a in &self.runtime_args {
            v.extend(["--runtime-arg".into(), a.clone()]);
        }
        if self.hide_cgroup2 {
            v.push("--hide-cgroup2".into());
        }
        v.extend(["--process".into(), self.process.clone(), "--sync-fd".into(), self.sync_fd.to_string()]);
        v
    }

    /// Parses the arguments after `exec-tty`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<ExecTtyArgs, String> {
        let mut a = ExecTtyArgs { sync_fd: -1, ..Default::default() };
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag}: missing value"));
            match flag.as_str() {
                "--id" => a.id = value()?,
                "--runtime" => a.runtime = value()?,
                "--runtime-arg" => a.runtime_args.push(value()?),
                "--hide-cgroup2" => a.hide_cgroup2 = true,
                "--process" => a.process = value()?,
                "--sync-fd" => a.sync_fd = value()?.parse().map_err(|_| "--sync-fd: not a number".to_string())?,
                "--help" | "-h" => return Err(EXEC_TTY_USAGE.into()),
                other => return Err(format!("unknown option {other}\n{EXEC_TTY_USAGE}")),
            }
        }
        check_required(
            &[(&a.id, "--id"), (&a.runtime, "--runtime"), (&a.process, "--process")],
            a.sync_fd,
            EXEC_TTY_USAGE,
        )?;
        Ok(a)
    }
}

/// What `exec-tty` tells its caller, one message per packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// the process runs with this pid; the pty's master is attached to the message
    Started(i32),
    /// the process ended: its exit code (128 + the signal that killed it)
    Exited(i32),
    /// the runtime failed (its own error), or the helper did
    Error(String),
}

impl ExecEvent {
    pub fn encode(&self) -> String {
        match self {
            ExecEvent::Started(pid) => format!("started {pid}"),
            ExecEvent::Exited(code) => format!("exited {code}"),
            ExecEvent::Error(m) => format!("error {m}"),
        }
    }

    pub fn parse(msg: &str) -> Option<ExecEvent> {
        if let Some(p) = msg.strip_prefix("started ") {
            return p.parse().ok().filter(|p| *p > 0).map(ExecEvent::Started);
        }
        if let Some(c) = msg.strip_prefix("exited ") {
            return c.parse().ok().map(ExecEvent::Exited);
        }
        msg.strip_prefix("error ").map(|m| ExecEvent::Error(m.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let a = MonitorArgs {
            id: "abc".into(),
            runtime: "/usr/bin/runc".into(),
            runtime_args: vec!["--root".into(), "/run/x".into()],
            hide_cgroup2: true,
            bundle: "/b".into(),
            dir: "/d".into(),
            log: "/d/ctr.log".into(),
            log_max: 4096,
            log_line_max: 16384,
            stdin: true,
            terminal: false,
            sync_fd: 5,
            exit_command: Some("/bin/berth".into()),
            exit_args: vec!["container".into(), "cleanup".into(), "abc".into()],
        };
        assert_eq!(MonitorArgs::parse(a.to_args()).unwrap(), a);
        let missing = MonitorArgs::parse(vec!["--id".to_string(), "x".to_string()]).unwrap_err();
        assert!(missing.starts_with("--runtime is required"), "{missing}");
        assert!(MonitorArgs::parse(vec!["--bogus".to_string()]).unwrap_err().starts_with("unknown option --bogus"));
    }

    #[test]
    fn sync_lines() {
        for m in [ToEngine::Monitor(12), ToEngine::Created(34), ToEngine::Started, ToEngine::Error("no".into())] {
            assert_eq!(ToEngine::parse(&m.encode()), Some(m));
        }
        assert_eq!(ToEngine::Error("a\nb".into()).encode(), "error a b\n");
        assert_eq!(ToEngine::parse("created x"), None);
        assert_eq!(ToEngine::parse("created -4"), None);
        assert_eq!(ToEngine::parse("startedd"), None);
    }

    #[test]
    fn exit_records() {
        let r = ExitRecord {
            exit_code: 137,
            signal: 9,
            oom_killed: true,
            pid: 4242,
            started_at: "2026-12-06T06:00:00.123456789Z".into(),
            finished_at: "2026-12-06T06:00:01Z".into(),
        };
        assert_eq!(ExitRecord::parse(&r.to_json()), Some(r.clone()));
        let unknown = ExitRecord { exit_code: EXIT_UNKNOWN, ..Default::default() };
        assert_eq!(ExitRecord::parse(&unknown.to_json()).unwrap().exit_code, -1);
        // Torn, foreign or hostile files are not records.
        for bad in [
            "",
            "{",
            "{\"exitCode\":1",
            "{\"signal\":1}",
            "{\"exitCode\":99999999999}",
            "{\"exitCode\":1 2}",
            "{\"exitCode\":\"1\"}",
            "{\"exitCode\":1,\"startedAt\":\"a\\\"b\"}",
            "[1]",
        ] {
            assert_eq!(ExitRecord::parse(bad), None, "{bad}");
        }
        // Fields a later monitor may add are skipped.
        assert_eq!(ExitRecord::parse("{\"exitCode\":3,\"extra\":true}").unwrap().exit_code, 3);
    }

    #[test]
    fn exec_tty_args_and_events_round_trip() {
        let a = ExecTtyArgs {
            id: "c1".into(),
            runtime: "/usr/bin/runc".into(),
            runtime_args: vec!["--root".into(), "/run/x".into()],
            hide_cgroup2: true,
            process: "/run/c1/exec.json".into(),
            sync_fd: 5,
        };
        let args = a.to_args();
        assert_eq!(args[0], ExecTtyArgs::COMMAND);
        assert_eq!(ExecTtyArgs::parse(args.into_iter().skip(1)).unwrap(), a);
        assert!(ExecTtyArgs::parse(["--id".to_string(), "x".into()]).unwrap_err().contains("--runtime is required"));
        for e in [ExecEvent::Started(42), ExecEvent::Exited(130), ExecEvent::Error("no such container".into())] {
            assert_eq!(ExecEvent::parse(&e.encode()), Some(e));
        }
        assert_eq!(ExecEvent::parse("started 0"), None);
        assert_eq!(ExecEvent::parse("bogus"), None);
    }
}
