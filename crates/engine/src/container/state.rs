//! A container's state checked against the truth (the monitor's exit file, the monitor's and
//! the init's processes), the clean-up of a dead container's resources, and removal.

use std::os::fd::AsRawFd;

use super::*;
use crate::error::{bail, Error, Result};
use crate::runtime::{self, Runtime};
use crate::{time, Engine};

impl Engine {
    pub fn runtime(&self, name: Option<&str>) -> Result<Runtime> {
        runtime::resolve(&self.config, &self.run_root, name)
    }

    /// A container with its current state (refreshed from the monitor's files and processes).
    pub fn get(&self, name_or_id: &str) -> Result<Container> {
        let id = self.resolve_id(name_or_id)?;
        let mut c = self.load(&id)?.ok_or_else(|| Error::not_found(format!("no such container: {name_or_id}")))?;
        self.refresh(&mut c)?;
        Ok(c)
    }

    /// Every container with its current state, newest first.
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut all = self.load_all()?;
        for c in all.iter_mut() {
            self.refresh(c)?;
        }
        // Containers removed by a lazy cleanup (--rm whose monitor died) are gone.
        all.retain(|c| c.state.status != "removed");
        Ok(all)
    }

    /// Brings a `running` record up to date; a container found dead with its cleanup not done
    /// is cleaned up now (if no one else holds its lock).
    pub(crate) fn refresh(&self, c: &mut Container) -> Result<()> {
        if c.state.status != "running" {
            if c.state.status == "exited" && !c.state.cleaned {
                self.try_cleanup(c)?;
            }
            return Ok(());
        }
        if let Some(x) = read_exit_record(&self.exit_file(&c.id)) {
            c.state.record_exit(x);
            self.save(c)?;
            if !alive(c.state.monitor_pid, c.state.monitor_start) {
                self.try_cleanup(c)?;
            }
            return Ok(());
        }
        if alive(c.state.monitor_pid, c.state.monitor_start) || alive(c.state.pid, c.state.pid_start) {
            return Ok(());
        }
        // Re-read: the exit file may have been written between the two checks.
        if self.exit_file(&c.id).exists() {
            return self.refresh(c);
        }
        c.state.status = "exited".into();
        c.state.exit_code = Some(EXIT_UNKNOWN);
        c.state.finished_at = time::now_rfc3339();
        c.state.error =
            "the container's monitor died before the container's exit was recorded; exit status unknown".into();
        self.save(c)?;
        self.try_cleanup(c)
    }

    pub(crate) fn try_cleanup(&self, c: &mut Container) -> Result<()> {
        let p = self.run_root.join("locks").join(&c.id);
        let Ok(f) = std::fs::File::options().create(true).truncate(false).write(true).open(&p) else { return Ok(()) };
        // SAFETY: flock on our descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Ok(());
        }
        if let Some(fresh) = self.load(&c.id)? {
            *c = fresh;
        }
        if c.state.status == "exited" && !c.state.cleaned {
            self.cleanup_locked(c);
            if c.options.auto_remove {
                self.destroy(c, true)?;
                c.state.status = "removed".into();
            }
        }
        Ok(())
    }

    /// Releases what a stopped container holds: runtime state and cgroups, CNI attachments and
    /// network namespace, root filesystem mount. Idempotent; errors are recorded, not fatal.
    pub(crate) fn cleanup_locked(&self, c: &mut Container) {
        self.cleanup_locked_with(c, false)
    }

    /// `runtime_deleted`: the monitor already ran the runtime's `delete` (the exit hook).
    pub(crate) fn cleanup_locked_with(&self, c: &mut Container, runtime_deleted: bool) {
        let mut errors = Vec::new();
        if !runtime_deleted {
            if let Ok(rt) = self.runtime(Some(&c.runtime)) {
                rt.delete_force(&c.id);
            }
        }
        errors.extend(self.network_teardown(&c.id));
        if let Err(e) = self.store.snapshots.unmount(&c.id) {
            errors.push(e.to_string());
        }
        c.state.cleaned = true;
        c.state.pid = 0;
        if !errors.is_empty() {
            c.state.error = format!("cleanup: {}", errors.join("; "));
        }
        let _ = self.save(c);
    }

    /// Removes everything a container has and its record. `anonymous_volumes`: also its
    /// anonymous volumes.
    pub(crate) fn destroy(&self, c: &Container, anonymous_volumes: bool) -> Result<()> {
        // A cleaned-up container has no runtime state left; any other may (a crash midway).
        if !c.state.cleaned {
            if let Ok(rt) = self.runtime(Some(&c.runtime)) {
                rt.delete_force(&c.id);
            }
        }
        let mut errors = self.network_teardown(&c.id);
        crate::crash_point("rm-network");
        if let Err(e) = self.store.remove_snapshot(&c.id) {
            errors.push(e.to_string());
        }
        // The exit of a --rm container outlives it briefly, for the `run` that waits for it.
        let exit = self.exit_file(&c.id);
        if c.options.auto_remove && exit.exists() {
            let _ = std::fs::rename(&exit, self.kept_exit(&c.id));
        }
        self.sweep_kept_exits();
        for d in [self.container_dir(&c.id), self.run_dir(&c.id)] {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    errors.push(format!("{}: {e}", d.display()));
                }
            }
        }
        crate::crash_point("rm-files");
        self.delete_record(&c.id)?;
        if anonymous_volumes {
            for m in c.mounts.iter().filter(|m| m.kind == "volume" && m.anonymous) {
                let _ = self.volume_remove(&m.name, false);
            }
        }
        let _ = std::fs::remove_file(self.run_root.join("locks").join(&c.id));
        if !errors.is_empty() {
            bail!(System, "removing container {}: {}", c.short_id(), errors.join("; "));
        }
        Ok(())
    }

    /// `system prune`'s container part: removes every container that is not running.
    pub fn prune_containers(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for c in self.list()? {
            if !c.running() && c.state.status != "creating" {
                self.remove(&c.id, false, false)?;
                out.push(c.id);
            }
        }
        Ok(out)
    }
}
