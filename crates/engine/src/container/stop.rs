//! Signals, `stop` (the stop signal, then SIGKILL), `kill`, `restart`, `rm` and `wait`.

use std::time::Duration;

use super::*;
use crate::error::{bail, Result};
use crate::Engine;

impl Engine {
    pub(crate) fn wait_monitor_gone(&self, c: &Container, timeout: Duration) -> bool {
        wait_ended(c.state.monitor_pid, c.state.monitor_start, timeout)
    }

    /// Waits until the container's init has exited (the monitor records the exit just
    /// after), or `timeout` passes.
    pub(crate) fn wait_exit(&self, id: &str, c: &Container, timeout: Duration) -> bool {
        if self.exit_file(id).exists() {
            return true;
        }
        if c.state.pid > 0 {
            return wait_ended(c.state.pid, c.state.pid_start, timeout);
        }
        // No init recorded (a start that failed half-way): the monitor's end, then.
        wait_ended(c.state.monitor_pid, c.state.monitor_start, timeout)
    }

    /// Sends `signal` to the container's init (through the runtime; directly when the
    /// runtime's state is gone but the process lives on).
    pub(crate) fn signal(&self, c: &Container, signal: i32) -> Result<()> {
        let rt = self.runtime(Some(&c.runtime))?;
        match rt.kill(&c.id, signal) {
            Ok(()) => Ok(()),
            Err(e) => {
                if alive(c.state.pid, c.state.pid_start) {
                    // SAFETY: signalling the container's init, verified by its start time.
                    if unsafe { libc::kill(c.state.pid, signal) } == 0 {
                        return Ok(());
                    }
                }
                if !alive(c.state.pid, c.state.pid_start) {
                    return Ok(());
                }
                Err(e)
            }
        }
    }

    /// `stop`: the stop signal, then SIGKILL after `timeout` seconds (default: the
    /// container's --stop-timeout, else 10). Waits for the exit and its cleanup.
    pub fn stop(&self, name_or_id: &str, timeout: Option<u32>) -> Result<Container> {
        let mut c = self.get(name_or_id)?;
        // Marked first, under the lock: an exit being handled now restarts nothing after this.
        self.mark_stopped_by_user(&mut c)?;
        self.refresh(&mut c)?;
        if !c.running() {
            return Ok(c);
        }
        let timeout = timeout.unwrap_or(c.stop_timeout);
        if timeout > 0 {
            self.signal(&c, c.stop_signal)?;
            self.thaw(&c);
        }
        if timeout == 0 || !self.wait_exit(&c.id, &c, Duration::from_secs(timeout as u64)) {
            self.signal(&c, libc::SIGKILL)?;
            self.thaw(&c);
            if !self.wait_exit(&c.id, &c, Duration::from_secs(30)) {
                bail!(System, "container {} did not exit after SIGKILL", c.name);
            }
        }
        self.wait_monitor_gone(&c, Duration::from_secs(30));
        self.event(&c, "stop", &[]);
        self.get(&c.id)
    }

    /// A paused container is thawed once signalled, as docker does: a frozen process acts on
    /// no signal.
    fn thaw(&self, c: &Container) {
        if c.state.paused {
            if let Ok(rt) = self.runtime(Some(&c.runtime)) {
                let _ = rt.run(&["resume", &c.id]);
            }
            if let Ok(_l) = self.lock(&c.id) {
                if let Ok(Some(mut fresh)) = self.load(&c.id) {
                    fresh.state.paused = false;
                    let _ = self.save(&fresh);
                }
            }
        }
    }

    pub(crate) fn mark_stopped_by_user(&self, c: &mut Container) -> Result<()> {
        let _l = self.lock(&c.id)?;
        if let Some(fresh) = self.load(&c.id)? {
            *c = fresh;
        }
        c.state.stopped_by_user = true;
        self.save(c)
    }

    /// `kill`: a signal to a running container.
    pub fn kill(&self, name_or_id: &str, signal: i32) -> Result<()> {
        let mut c = self.get(name_or_id)?;
        if !c.running() {
            bail!(InvalidState, "container {} is not running", c.name);
        }
        if matches!(signal, libc::SIGKILL | libc::SIGTERM | libc::SIGINT) || signal == c.stop_signal {
            self.mark_stopped_by_user(&mut c)?;
        }
        self.signal(&c, signal)?;
        self.thaw(&c);
        self.event(&c, "kill", &[("signal", &signal.to_string())]);
        Ok(())
    }

    /// `restart`: stop (if running), then start.
    pub fn restart(&self, name_or_id: &str, timeout: Option<u32>) -> Result<()> {
        let c = self.stop(name_or_id, timeout)?;
        self.start(&c.id)
    }

    /// `rm`: a running container needs `force` (it is killed). `volumes`: its anonymous
    /// volumes go too.
    pub fn remove(&self, name_or_id: &str, force: bool, volumes: bool) -> Result<()> {
        let c = self.get(name_or_id)?;
        if c.running() {
            if !force {
                bail!(InvalidState, "container {} is running: stop it first, or remove it with -f", c.name);
            }
            self.stop(&c.id, Some(0))?;
        }
        let _l = self.lock(&c.id)?;
        let Some(c) = self.load(&c.id)? else { return Ok(()) };
        if c.running() && !force {
            bail!(InvalidState, "container {} was started again meanwhile", c.name);
        }
        self.destroy(&c, volumes || c.config.auto_remove)
    }

    /// `wait`: blocks until the container is not running; its exit code.
    pub fn wait(&self, name_or_id: &str) -> Result<i32> {
        let id = self.resolve_id(name_or_id)?;
        loop {
            let c = match self.get(&id) {
                Ok(c) => c,
                Err(e) if e.is(crate::Kind::NotFound) => {
                    bail!(NotFound, "container {name_or_id} was removed while waiting")
                }
                Err(e) => return Err(e),
            };
            if !c.running() && c.state.status != "creating" {
                return Ok(c.state.exit_code.unwrap_or(0));
            }
            // Woken by the monitor's end (it records the exit, then ends); a second at most,
            // for a container still being created or started again meanwhile.
            let (pid, start) = match c.state.monitor_pid {
                0 => (c.state.pid, c.state.pid_start),
                m => (m, c.state.monitor_start),
            };
            if pid <= 0 || !alive(pid, start) {
                std::thread::sleep(Duration::from_millis(20));
            } else {
                wait_ended(pid, start, Duration::from_secs(1));
            }
        }
    }
}
