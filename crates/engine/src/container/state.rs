//! A container's state checked against the truth (the monitor's exit file, the monitor's and
//! the init's processes), the clean-up of a dead container's resources, and removal.

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

    /// Brings a record up to date with the truth, for a caller that does not hold the
    /// container's lock. A record changes only under the lock and as it is stored then: a
    /// reader that looked before a `start` must not write its stale view (an exit it saw, a
    /// dead monitor) over the new run's. When someone else holds the lock (a start, a stop,
    /// the monitor's exit hook), the stored record is read again and brought up to date in
    /// memory only: the holder records what it does.
    pub(crate) fn refresh(&self, c: &mut Container) -> Result<()> {
        let stale = match c.state.status.as_str() {
            "running" => self.observe(&mut c.clone()),
            "exited" => !c.state.cleaned,
            _ => false,
        };
        if !stale {
            return Ok(());
        }
        let lock = self.try_lock(&c.id)?;
        match self.load(&c.id)? {
            Some(fresh) => *c = fresh,
            // Removed meanwhile (a `--rm` container's own exit hook).
            None => {
                c.state.status = "removed".into();
                return Ok(());
            }
        }
        match lock {
            Some(_held) => self.refresh_locked(c),
            None => {
                self.observe(c);
                Ok(())
            }
        }
    }

    /// As `refresh`, for a caller that holds the container's lock: records the exit the
    /// monitor wrote, or an exit no one saw (monitor and init both gone), and releases what a
    /// dead container still holds.
    pub(crate) fn refresh_locked(&self, c: &mut Container) -> Result<()> {
        if self.observe(c) {
            self.save(c)?;
        }
        // The monitor's own exit hook cleans up after it; a dead container whose monitor is
        // gone too is cleaned up here.
        if c.state.status == "exited" && !c.state.cleaned && !alive(c.state.monitor_pid, c.state.monitor_start) {
            self.cleanup_locked(c);
            if c.config.auto_remove {
                self.destroy(c, true)?;
                c.state.status = "removed".into();
            }
        }
        Ok(())
    }

    /// Updates a `running` record in memory from the truth: the exit the monitor recorded, or
    /// an exit no one saw (the monitor and the init both gone). Whether it changed.
    fn observe(&self, c: &mut Container) -> bool {
        if c.state.status != "running" {
            return false;
        }
        if let Some(x) = read_exit_record(&self.exit_file(&c.id)) {
            c.state.record_exit(x);
            return true;
        }
        if alive(c.state.monitor_pid, c.state.monitor_start) || alive(c.state.pid, c.state.pid_start) {
            return false;
        }
        // Written between the two looks?
        if let Some(x) = read_exit_record(&self.exit_file(&c.id)) {
            c.state.record_exit(x);
            return true;
        }
        c.state.status = "exited".into();
        c.state.exit_code = Some(EXIT_UNKNOWN);
        c.state.finished_at = time::now_rfc3339();
        c.state.error =
            "the container's monitor died before the container's exit was recorded; exit status unknown".into();
        true
    }

    /// The container's lock if no one holds it now.
    pub(crate) fn try_lock(&self, id: &str) -> Result<Option<crate::Lock>> {
        crate::Lock::acquire(&self.run_root.join("locks").join(id), false)
    }

    /// Releases what a stopped container holds: runtime state and cgroups, CNI attachments and
    /// network namespace, root filesystem mount. Idempotent; errors are recorded, not fatal.
    pub(crate) fn cleanup_locked(&self, c: &mut Container) {
        self.cleanup_locked_with(c, false)
    }

    /// `runtime_deleted`: the monitor already ran the runtime's `delete` (the exit hook).
    pub(crate) fn cleanup_locked_with(&self, c: &mut Container, runtime_deleted: bool) {
        // The first clean-up after an exit is where the exit is known once, whoever sees it
        // (the monitor's exit hook, or a command that found the container dead).
        let died = !c.state.cleaned && c.state.status == "exited";
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
        for snapshot in super::create::image_volume_snapshots(c) {
            if let Err(e) = self.store.snapshots.unmount(&snapshot) {
                errors.push(e.to_string());
            }
        }
        c.state.cleaned = true;
        c.state.pid = 0;
        if !errors.is_empty() {
            c.state.error = format!("cleanup: {}", errors.join("; "));
        }
        let _ = self.save(c);
        if died {
            if c.state.oom_killed {
                self.event(c, "oom", &[]);
            }
            let code = c.state.exit_code.unwrap_or(0).to_string();
            self.event(c, "die", &[("exitCode", &code)]);
        }
    }

    /// Removes everything a container has and its record. `anonymous_volumes`: also its
    /// anonymous volumes.
    pub(crate) fn destroy(&self, c: &Container, anonymous_volumes: bool) -> Result<()> {
        // Removed before any clean-up saw its exit (`run` then `rm` at once): the exit is
        // known here.
        if !c.state.cleaned && matches!(c.state.status.as_str(), "running" | "exited") {
            let code = c.state.exit_code.or_else(|| read_exit_record(&self.exit_file(&c.id)).map(|x| x.exit_code));
            self.event(c, "die", &[("exitCode", &code.unwrap_or(0).to_string())]);
        }
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
        for snapshot in super::create::image_volume_snapshots(c) {
            if let Err(e) = self.store.remove_snapshot(&snapshot) {
                errors.push(e.to_string());
            }
        }
        // The exit of a --rm container outlives it briefly, for the `run` that waits for it.
        let exit = self.exit_file(&c.id);
        if c.config.auto_remove && exit.exists() {
            let _ = std::fs::rename(&exit, self.kept_exit(&c.id));
        }
        self.sweep_kept_exits();
        self.remove_leftover_cgroups(&c.id);
        for d in [self.container_dir(&c.id), self.run_dir(&c.id)] {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    errors.push(format!("{}: {e}", d.display()));
                }
            }
        }
        crate::crash_point("rm-files");
        self.delete_record(&c.id)?;
        self.event(c, "destroy", &[]);
        if anonymous_volumes {
            for m in c.mounts.iter().filter(|m| m.kind == "volume" && m.anonymous) {
                let _ = self.volume_remove(&m.name, false);
            }
        }
        if !errors.is_empty() {
            bail!(System, "removing container {}: {}", c.short_id(), errors.join("; "));
        }
        Ok(())
    }

    /// The container's cgroups in every hierarchy, where its runtime left them: a runtime that
    /// failed midway through `create` may have made some and kept no state to delete them by
    /// (Debian's crun on a host it refuses). Only empty cgroups go (rmdir), deepest first; the
    /// path is the one the bundle gave the runtime.
    fn remove_leftover_cgroups(&self, id: &str) {
        let bundle = self.container_dir(id).join("config.json");
        let Some(path) = std::fs::read(&bundle)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(String::from))
        else {
            return;
        };
        // A systemd slice:prefix:name path is systemd's to remove.
        let Some(rel) = path.strip_prefix('/').filter(|r| !r.is_empty() && !r.split('/').any(|c| c == "..")) else {
            return;
        };
        let root = std::path::Path::new("/sys/fs/cgroup");
        let hierarchies = std::fs::read_dir(root).into_iter().flatten().flatten().map(|e| e.path());
        for h in std::iter::once(root.to_path_buf()).chain(hierarchies) {
            remove_cgroup_tree(&h.join(rel));
        }
    }

    /// `system prune`'s container part: removes every container that is not running.
    pub fn prune_containers(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for c in self.list()? {
            // A pod's containers are berthd's (kubelet's) to remove.
            if c.config.sandbox.is_some() {
                continue;
            }
            if !c.running() && c.state.status != "creating" {
                self.remove(&c.id, false, false)?;
                out.push(c.id);
            }
        }
        Ok(out)
    }
}

/// rmdir of a cgroup and the cgroups below it, deepest first; what is busy stays.
fn remove_cgroup_tree(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}
