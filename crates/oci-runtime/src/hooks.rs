//! config.json hooks: programs the runtime runs at fixed points of the lifecycle, with the
//! container's state on stdin (runtime-spec, "POSIX-platform Hooks").
//!
//! prestart and createRuntime run in the runtime's namespaces once the container's are set up,
//! before pivot_root; createContainer runs in the container's namespaces at the same point;
//! startContainer in the container, just before its program; poststart after `start`;
//! poststop after `delete`.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_sys::{file, process};
use oci_spec::runtime::{Hook, Hooks};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        }
    }

    pub fn of(self, hooks: &Hooks) -> &[Hook] {
        #[allow(deprecated)]
        let list = match self {
            Kind::Prestart => hooks.prestart(),
            Kind::CreateRuntime => hooks.create_runtime(),
            Kind::CreateContainer => hooks.create_container(),
            Kind::StartContainer => hooks.start_container(),
            Kind::Poststart => hooks.poststart(),
            Kind::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or(&[])
    }
}

pub const ALL: [Kind; 6] =
    [Kind::Prestart, Kind::CreateRuntime, Kind::CreateContainer, Kind::StartContainer, Kind::Poststart, Kind::Poststop];

/// Checks hook fields without running anything: absolute paths, positive timeouts.
pub fn validate(hooks: &Hooks) -> Result<()> {
    for kind in ALL {
        for (i, h) in kind.of(hooks).iter().enumerate() {
            let at = format!("hooks.{}[{i}]", kind.name());
            if !h.path().is_absolute() {
                return Err(Error::invalid(format!("{at}.path: '{}' is not an absolute path", h.path().display())));
            }
            if let Some(t) = h.timeout() {
                if t <= 0 {
                    return Err(Error::invalid(format!("{at}.timeout: {t} is not a positive number of seconds")));
                }
            }
            for (j, e) in h.env().iter().flatten().enumerate() {
                if !e.contains('=') {
                    return Err(Error::invalid(format!("{at}.env[{j}]: '{e}' is not of the form KEY=value")));
                }
            }
        }
    }
    Ok(())
}

/// The state document hooks read on stdin.
pub fn state(
    id: &str,
    status: &str,
    pid: i32,
    bundle: &std::path::Path,
    annotations: &std::collections::HashMap<String, String>,
) -> Value {
    let mut s = serde_json::json!({
        "ociVersion": crate::config::OCI_VERSION,
        "id": id,
        "status": status,
        "bundle": bundle,
    });
    if pid > 0 {
        s["pid"] = serde_json::json!(pid);
    }
    if !annotations.is_empty() {
        s["annotations"] = serde_json::json!(annotations);
    }
    s
}

/// Runs every hook of `kind` in order; the first failure stops them and is returned. A hook
/// without `env` gets `environment`: None for this process's own (the runtime's), or the
/// container process's for the hooks that run in the container (as runc's init has it).
pub fn run_all(hooks: Option<&Hooks>, kind: Kind, state: &Value, environment: Option<&[String]>) -> Result<()> {
    let Some(hooks) = hooks else { return Ok(()) };
    let input = state.to_string();
    for (i, h) in kind.of(hooks).iter().enumerate() {
        run_one(h, &input, environment)
            .map_err(|e| e.context(format!("hooks.{}[{i}] ({})", kind.name(), h.path().display())))?;
    }
    Ok(())
}

/// Runs every hook of `kind`; failures are collected (poststart and poststop failures are
/// warnings: the lifecycle goes on).
pub fn run_all_warn(hooks: Option<&Hooks>, kind: Kind, state: &Value) -> Vec<String> {
    let Some(hooks) = hooks else { return Vec::new() };
    let input = state.to_string();
    let mut warnings = Vec::new();
    for (i, h) in kind.of(hooks).iter().enumerate() {
        if let Err(e) = run_one(h, &input, None) {
            warnings.push(format!("hooks.{}[{i}] ({}): {e}", kind.name(), h.path().display()));
        }
    }
    warnings
}

/// Most of a failing hook's stderr that goes into the error.
const STDERR_LIMIT: usize = 4096;

/// The state a hook reads on stdin, in a memfd: a hook may exit without reading it (`/bin/true`)
/// or read it slowly. Written to a pipe, the first raised SIGPIPE in the writer (which killed the
/// container's init: it had a handler for it, or had it blocked until the handler came) and the
/// second could block past the hook's timeout once the state outgrew the pipe's buffer.
fn state_input(input: &str) -> Result<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    let fd = file::memfd_create(c"hook-state", file::MFD_CLOEXEC)
        .map_err(|e| Error::from_io(e).context("the hook's stdin"))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(input.as_bytes())
        .and_then(|_| file.seek(SeekFrom::Start(0)).map(drop))
        .map_err(|e| Error::from_io(e).context("the hook's stdin"))?;
    Ok(file)
}

fn run_one(h: &Hook, input: &str, environment: Option<&[String]>) -> Result<()> {
    let args = h.args().as_deref().unwrap_or(&[]);
    let mut cmd = Command::new(h.path());
    if let Some((first, rest)) = args.split_first() {
        cmd.arg0(first).args(rest);
    }
    // `env` given (even empty): exactly that. Absent: execv's semantics, the caller's
    // environment, as runc and crun give it.
    if let Some(env) = h.env().as_deref().or(environment) {
        cmd.env_clear();
        for e in env {
            if let Some((k, v)) = e.split_once('=') {
                cmd.env(k, v);
            }
        }
    }
    cmd.stdin(Stdio::from(state_input(input)?)).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Error::from_io(e).context("starting the hook"))?;
    let stderr: OwnedFd = child.stderr.take().map(OwnedFd::from).expect("piped");
    file::set_nonblocking(&stderr, true)?;
    let deadline = h.timeout().map(|t| Instant::now() + Duration::from_secs(t as u64));
    let mut captured = Vec::new();
    let mut stderr_open = true;
    let mut buf = [0u8; 4096];
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| Error::from_io(e).context("waiting for the hook"))? {
            break status;
        }
        let left_ms = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => left.as_millis().min(50) as i32,
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::new(
                        ErrorKind::System,
                        format!("timed out after {} s", h.timeout().unwrap_or(0)),
                    ));
                }
            },
            None => 50,
        };
        if stderr_open {
            process::poll_readable(&[stderr.as_fd()], left_ms)?;
            match file::read(&stderr, &mut buf) {
                Ok(0) => stderr_open = false,
                Ok(n) if captured.len() < STDERR_LIMIT => {
                    captured.extend_from_slice(&buf[..n.min(STDERR_LIMIT - captured.len())])
                }
                _ => {}
            }
        } else {
            std::thread::sleep(Duration::from_millis(left_ms.max(1) as u64));
        }
    };
    while let Ok(n) = file::read(&stderr, &mut buf) {
        if n == 0 || captured.len() >= STDERR_LIMIT {
            break;
        }
        captured.extend_from_slice(&buf[..n.min(STDERR_LIMIT - captured.len())]);
    }
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&captured).trim().to_string();
    let how = match status.code() {
        Some(code) => format!("exit status {code}"),
        None => format!("killed by signal {}", std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)),
    };
    Err(Error::new(ErrorKind::System, if text.is_empty() { how } else { format!("{how}: {text}") }))
}
