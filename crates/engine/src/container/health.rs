//! docker's health checks, daemonless: a container with a `healthcheck` gets a checker
//! process from the front end that started it (`berth container healthcheck-loop ID`), which
//! runs the check in the container every interval until the container stops; each result is
//! kept in the container's run directory (`health.json`), where `ps` and `inspect` read it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::container::Container;
use crate::error::{bail, Context, Result};
use crate::{time, Engine};

/// The health of a container, as docker's inspect shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// starting, healthy or unhealthy
    pub status: String,
    pub failing_streak: u32,
    /// the last results, oldest first
    pub log: Vec<HealthResult>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    pub start: String,
    pub end: String,
    pub exit_code: i32,
    pub output: String,
}

/// Results kept, and output kept of each (as docker).
const KEPT_RESULTS: usize = 5;
const KEPT_OUTPUT: usize = 4096;

impl Engine {
    fn health_file(&self, id: &str) -> std::path::PathBuf {
        self.run_dir(id).join("health.json")
    }

    /// The container's health: None without a health check or when it is not running.
    pub fn health(&self, c: &Container) -> Option<Health> {
        c.config.healthcheck.as_ref()?;
        if !c.running() {
            return None;
        }
        let stored =
            std::fs::read(self.health_file(&c.id)).ok().and_then(|b| serde_json::from_slice::<Health>(&b).ok());
        // Results of an earlier run do not count.
        Some(
            stored
                .filter(|h| h.log.last().is_some_and(|r| r.start >= c.state.started_at))
                .unwrap_or_else(|| Health { status: "starting".into(), ..Default::default() }),
        )
    }

    /// Runs the container's health check once and records the result.
    pub fn health_check(&self, name_or_id: &str) -> Result<Health> {
        let c = self.get(name_or_id)?;
        let Some(hc) = c.config.healthcheck.clone() else {
            bail!(InvalidState, "container {} has no health check", c.name)
        };
        if !c.running() {
            bail!(InvalidState, "container {} is not running", c.name);
        }
        let start = time::now_rfc3339();
        let started = std::time::Instant::now();
        let (exit_code, output) = match self.exec_sync(&c.id, &hc.command, Some(Duration::from_nanos(hc.timeout_ns))) {
            Ok(o) => {
                let mut out = o.stdout;
                out.extend_from_slice(&o.stderr);
                (o.exit_code, String::from_utf8_lossy(&out).into_owned())
            }
            Err(e) if e.is(crate::Kind::DeadlineExceeded) => (-1, format!("timed out after {:?}", started.elapsed())),
            Err(e) => (-1, e.to_string()),
        };
        let end = time::now_rfc3339();
        let mut h = self.health(&c).unwrap_or_default();
        let in_start_period = time::parse_rfc3339(&c.state.started_at)
            .is_some_and(|t| (time::now_nanos() as i128) - t < hc.start_period_ns as i128);
        if exit_code == 0 {
            h.status = "healthy".into();
            h.failing_streak = 0;
        } else if !(in_start_period && h.status == "starting") {
            h.failing_streak += 1;
            if h.failing_streak >= hc.retries {
                h.status = "unhealthy".into();
            }
        }
        let mut output = output;
        if output.len() > KEPT_OUTPUT {
            let mut cut = KEPT_OUTPUT;
            while !output.is_char_boundary(cut) {
                cut -= 1;
            }
            output.truncate(cut);
        }
        h.log.push(HealthResult { start, end, exit_code, output });
        if h.log.len() > KEPT_RESULTS {
            h.log.remove(0);
        }
        let file = self.health_file(&c.id);
        let tmp = file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&h).ctx("serialize the health")?).ctx(tmp.display())?;
        std::fs::rename(&tmp, &file).ctx(file.display())?;
        Ok(h)
    }

    /// Checks the container every interval while this run of it lasts (the checker process's
    /// life).
    pub fn health_loop(&self, name_or_id: &str) -> Result<()> {
        let c = self.get(name_or_id)?;
        let Some(hc) = c.config.healthcheck.clone() else { return Ok(()) };
        let this_run = c.state.started_at.clone();
        let same_run = || self.get(&c.id).is_ok_and(|now| now.running() && now.state.started_at == this_run);
        loop {
            // Asleep in short steps: a container that stops ends the checker soon.
            let wake = std::time::Instant::now() + Duration::from_nanos(hc.interval_ns);
            while std::time::Instant::now() < wake {
                if !same_run() {
                    return Ok(());
                }
                std::thread::sleep(
                    wake.saturating_duration_since(std::time::Instant::now()).min(Duration::from_millis(500)),
                );
            }
            if !same_run() {
                return Ok(());
            }
            let before = self.get(&c.id)?;
            let was = self.health(&before).map(|h| h.status).unwrap_or_default();
            let h = self.health_check(&c.id)?;
            if h.status != was {
                let status = format!("health_status: {}", h.status);
                self.event(&before, &status, &[]);
            }
        }
    }
}
