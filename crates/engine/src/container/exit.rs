//! After the exit: the monitor's exit command records it, releases the container's resources
//! and applies `--rm` or the restart policy; the exit record outlives a `--rm` container
//! briefly for the foreground `run` that waits for it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::error::Result;
use crate::Engine;

impl Engine {
    /// The monitor's exit command: records the exit, releases the container's resources,
    /// then removes it (`--rm`) or restarts it (`--restart`).
    pub fn on_exit(&self, name_or_id: &str) -> Result<()> {
        let id = self.resolve_id(name_or_id)?;
        let lock = self.lock(&id)?;
        let Some(mut c) = self.load(&id)? else { return Ok(()) };
        if c.running() {
            if let Some(x) = read_exit_record(&self.exit_file(&id)) {
                c.state.record_exit(x);
            }
        }
        if c.state.status != "exited" {
            return Ok(());
        }

        // Run by the monitor after its own `runtime delete`.
        self.cleanup_locked_with(&mut c, true);
        if c.config.auto_remove {
            return self.destroy(&c, true);
        }
        let p = &c.config.restart;
        let code = c.state.exit_code.unwrap_or(0);
        let again = !c.state.stopped_by_user
            && match p.name.as_str() {
                "always" | "unless-stopped" => true,
                "on-failure" => {
                    code != 0 && (p.maximum_retry_count == 0 || c.state.restart_count < p.maximum_retry_count)
                }
                _ => false,
            };
        if again {
            // Saved by the start (as running, or with its failure): the record never reads
            // as the old exit with the new count.
            c.state.restart_count += 1;
            let r = self.start_locked(&mut c, |_| Ok(()));
            drop(lock);
            r?;
        }
        Ok(())
    }

    pub(crate) fn kept_exit(&self, id: &str) -> PathBuf {
        self.run_root.join("containers").join(format!("{id}.exit"))
    }

    /// Kept exit files older than a minute: no one waits for them any more.
    pub(crate) fn sweep_kept_exits(&self) {
        for e in std::fs::read_dir(self.run_root.join("containers")).into_iter().flatten().flatten() {
            let old = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .map(|d| d.as_secs() > 60);
            if e.file_name().to_string_lossy().ends_with(".exit") && old == Some(true) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// The exit code the monitor recorded (also for a `--rm` container just removed; its
    /// kept copy is consumed).
    pub fn exit_code_of(&self, id: &str) -> Option<i32> {
        let kept = self.kept_exit(id);
        for p in [self.exit_file(id), kept.clone()] {
            if let Some(x) = read_exit_record(&p) {
                if p == kept {
                    let _ = std::fs::remove_file(&kept);
                }
                return Some(x.exit_code);
            }
        }
        None
    }

    /// The exit code of a container whose output stream ended, as a foreground `run` reports
    /// it: from its exit file (kept for a `--rm` container after its removal, which is waited
    /// for), else by waiting for its state. An exit status no one saw (the monitor was
    /// killed) is an error, not a made-up code.
    pub fn exit_code(&self, c: &Container) -> Result<i32> {
        for _ in 0..500 {
            if let Some(code) = self.exit_code_of(&c.id) {
                if c.config.auto_remove {
                    self.wait_removed(&c.id, Duration::from_secs(30));
                }
                return Ok(code);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match self.wait(&c.id) {
            Ok(EXIT_UNKNOWN) => Err(crate::Error::msg(format!(
                "container {}: exit status unknown (its monitor died before recording the exit)",
                c.name
            ))),
            Ok(code) => Ok(code),
            Err(err) if err.is(crate::Kind::NotFound) => Ok(0),
            Err(err) => Err(err),
        }
    }

    /// Waits until the container's record is gone (a `--rm` container's removal).
    pub fn wait_removed(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while matches!(self.load(id), Ok(Some(_))) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(self.kept_exit(id));
        true
    }
}
