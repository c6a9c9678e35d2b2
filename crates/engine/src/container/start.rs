//! `start`: network, then the monitor, which runs the runtime's `create`; the engine's side of
//! the monitor protocol (`berth_monitor::protocol`) until the monitor says `started`.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_monitor::protocol::{self, MonitorArgs, ToEngine};

use super::*;
use crate::error::{bail, Context, Error, Result};
use crate::runtime::Runtime;
use crate::spec;
use crate::{time, Engine};

impl Engine {
    pub(crate) fn monitor_path(&self) -> Result<PathBuf> {
        crate::config::find_program("berth-monitor", self.config.monitor.as_deref()).filter(|p| p.is_file()).ok_or_else(
            || Error::not_found("berth-monitor not found (beside berth, on PATH, or engine.monitor in berth.toml)"),
        )
    }

    /// `start`: network, monitor, runtime create; `before_start` runs once the container is
    /// created and the attach socket is up (to attach before the first output), then the
    /// monitor starts it. Starting a running container does nothing.
    pub fn start_with<T>(&self, name_or_id: &str, before_start: impl FnOnce(&Path) -> Result<T>) -> Result<Option<T>> {
        let id = self.resolve_id(name_or_id)?;
        // A previous run's monitor finishes first: it deletes the runtime's state of the
        // container it watched, then runs the exit hook (which needs this lock). A new run
        // started before that would have its container deleted under it.
        if let Some(prev) = self.load(&id)? {
            if prev.state.status != "running" || self.exit_file(&id).exists() {
                self.wait_monitor_gone(&prev, Duration::from_secs(30));
            }
        }
        let _lock = self.lock(&id)?;
        let mut c = self.load(&id)?.ok_or_else(|| Error::not_found(format!("no such container: {name_or_id}")))?;
        self.refresh_locked(&mut c)?;
        match c.state.status.as_str() {
            "running" => return Ok(None),
            "creating" => bail!(InvalidState, "container {} was not completely created (the command creating it was interrupted): remove it with rm -f", c.name),
            _ => {}
        }
        if !c.state.cleaned && c.state.status == "exited" {
            self.cleanup_locked(&mut c);
        }
        self.start_locked(&mut c, before_start)
    }

    pub fn start(&self, name_or_id: &str) -> Result<()> {
        self.start_with(name_or_id, |_| Ok(())).map(|_| ())
    }

    pub(crate) fn start_locked<T>(
        &self,
        c: &mut Container,
        before_start: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<Option<T>> {
        let rt = self.runtime(Some(&c.runtime))?;
        let monitor = self.monitor_path()?;
        let id = c.id.clone();
        crate::runtime::prepare_cgroup_parent(self.config.cgroup_parent())?;
        // A container that did not start holds no mount: what is mounted here is undone on
        // an error before the start proper (whose failures `fail` below cleans up).
        let volumes = super::create::image_volume_snapshots(c);
        let unmount_all = || {
            let _ = self.store.snapshots.unmount(&id);
            for snapshot in &volumes {
                let _ = self.store.snapshots.unmount(snapshot);
            }
        };
        let mounted = (|| -> Result<Vec<PortMapping>> {
            self.store.mount_snapshot(&id)?;
            for snapshot in &volumes {
                self.store.mount_snapshot(snapshot)?;
            }
            // Ports: host port 0 is chosen now.
            let mut ports = c.port_specs.clone();
            for p in ports.iter_mut() {
                if p.host_port == 0 {
                    p.host_port = berth_network::ports::free_port(&p.protocol)?;
                }
            }
            Ok(ports)
        })();
        let ports = match mounted {
            Ok(p) => p,
            Err(e) => {
                unmount_all();
                return Err(e);
            }
        };
        let own_netns = c.config.network.own_namespace();
        // A container that never ran stays `created` when its start fails.
        let ran_before = !c.state.started_at.is_empty();
        let fail = |e: Error, c: &mut Container, s: &Engine| -> Error {
            s.cleanup_locked(c);
            if !ran_before {
                c.state.started_at.clear();
            }
            c.state.status = if ran_before { "exited".into() } else { "created".into() };
            c.state.error = e.to_string();
            let _ = s.save(c);
            e
        };
        c.state.ip_address.clear();
        c.state.gateway.clear();
        if own_netns {
            match self.network_setup(&id, c.network_name(self).as_deref(), &ports, None) {
                Ok(Some(result)) => {
                    if let Some((ip, gw)) = berth_network::cni::ipv4_of(&result) {
                        c.state.ip_address = ip;
                        c.state.gateway = gw.unwrap_or_default();
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(fail(e, c, self)),
            }
        }
        c.state.ports = ports;
        crate::crash_point("network");
        let dir = self.container_dir(&id);
        let ip = if c.state.ip_address.is_empty() { None } else { Some(c.state.ip_address.as_str()) };
        if own_netns {
            if let Err(e) = std::fs::write(dir.join("hosts"), spec::hosts_file(&c.hostname, ip, &c.config.extra_hosts))
            {
                return Err(fail(e.into(), c, self));
            }
        }
        let run = self.run_dir(&id);
        let _ = std::fs::remove_dir_all(&run);
        if let Err(e) = crate::private_dir(&run) {
            return Err(fail(e, c, self));
        }
        let (mut conn, monitor_pid, ctr_pid) = match self.spawn_monitor(c, &rt, &monitor) {
            Ok(v) => v,
            Err(e) => return Err(fail(e, c, self)),
        };
        c.state.status = "running".into();
        c.state.pid = ctr_pid;
        c.state.pid_start = process_start(ctr_pid).unwrap_or(0);
        c.state.monitor_pid = monitor_pid;
        c.state.monitor_start = process_start(monitor_pid).unwrap_or(0);
        c.state.cleaned = false;
        c.state.stopped_by_user = false;
        c.state.paused = false;
        c.state.exit_code = None;
        c.state.oom_killed = false;
        c.state.error.clear();
        c.state.finished_at.clear();
        c.state.started_at = time::now_rfc3339();
        if let Err(e) = self.save(c) {
            return Err(fail(e, c, self));
        }
        crate::crash_point("monitor");
        let hook = match before_start(&run) {
            Ok(v) => v,
            Err(e) => {
                drop(conn);
                self.wait_monitor_gone(c, Duration::from_secs(10));
                return Err(fail(e, c, self));
            }
        };
        if let Err(e) = conn.start() {
            self.wait_monitor_gone(c, Duration::from_secs(10));
            return Err(fail(e.context(format!("starting container {}", c.name)), c, self));
        }
        self.event(c, "start", &[]);
        Ok(Some(hook))
    }

    /// Starts the container's monitor, which runs the runtime's `create`: the connection to
    /// it, its pid and the container init's, once the monitor says `created`.
    pub(crate) fn spawn_monitor(&self, c: &Container, rt: &Runtime, monitor: &Path) -> Result<(MonitorConn, i32, i32)> {
        let (ours, theirs) = UnixStream::pair().ctx("socketpair")?;
        let theirs: OwnedFd = theirs.into();
        let fd = theirs.as_raw_fd();
        let exit = self.exit_command.as_ref();
        let args = MonitorArgs {
            id: c.id.clone(),
            runtime: rt.path.to_string_lossy().into_owned(),
            runtime_args: rt.global_args(),
            hide_cgroup2: rt.hide_cgroup2,
            bundle: self.container_dir(&c.id).to_string_lossy().into_owned(),
            dir: self.run_dir(&c.id).to_string_lossy().into_owned(),
            log: self.log_path(c).to_string_lossy().into_owned(),
            log_max: c.config.log.max_size.or(self.config.log_max_size).unwrap_or(crate::config::DEFAULT_LOG_MAX),
            log_line_max: c.config.log.max_line.unwrap_or(0),
            stdin: c.config.stdin,
            terminal: c.config.tty,
            sync_fd: fd,
            exit_command: exit.map(|e| e[0].clone()),
            exit_args: exit.map(|e| e[1..].iter().cloned().chain([c.id.clone()]).collect()).unwrap_or_default(),
        };
        let mut cmd = Command::new(monitor);
        cmd.args(args.to_args());
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // SAFETY: clearing FD_CLOEXEC on the monitor's end of the socket in the child.
        unsafe {
            cmd.pre_exec(move || {
                let fl = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
                Ok(())
            });
        }
        let out = cmd.output().map_err(|e| Error::msg(format!("{}: {e}", monitor.display())))?;
        drop(theirs);
        if !out.status.success() {
            bail!(System, "berth-monitor: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let mut conn = MonitorConn { reader: BufReader::new(ours.try_clone().ctx("socket")?), writer: ours };
        let mut monitor_pid = 0;
        loop {
            match conn.recv()? {
                None => bail!(System, "berth-monitor exited without a word"),
                Some(ToEngine::Monitor(pid)) => monitor_pid = pid,
                Some(ToEngine::Created(pid)) => return Ok((conn, monitor_pid, pid)),
                Some(ToEngine::Error(e)) => bail!(System, "{e}"),
                Some(ToEngine::Started) => bail!(System, "berth-monitor said started before it was asked to start"),
            }
        }
    }
}

/// The engine's end of a monitor's sync socket.
pub(crate) struct MonitorConn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl MonitorConn {
    /// The monitor's next message; None when it closed the socket.
    fn recv(&mut self) -> Result<Option<ToEngine>> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ctx("the monitor's sync socket")? == 0 {
                return Ok(None);
            }
            // A line this engine does not know (a newer monitor's) is skipped.
            if let Some(m) = ToEngine::parse(&line) {
                return Ok(Some(m));
            }
        }
    }

    /// Tells the monitor to start the container; Ok once it says `started`.
    fn start(&mut self) -> Result<()> {
        const GONE: &str = "the monitor exited without starting the container";
        let line = format!("{}\n", protocol::START);
        self.writer.write_all(line.as_bytes()).map_err(|e| Error::msg(format!("{GONE} ({e})")))?;
        match self.recv().map_err(|e| Error::msg(format!("{GONE} ({e})")))? {
            Some(ToEngine::Started) => Ok(()),
            Some(ToEngine::Error(e)) => Err(Error::msg(e)),
            _ => Err(Error::msg(GONE)),
        }
    }
}
