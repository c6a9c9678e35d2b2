//! docker's `pause`, `unpause` and `rename`: a running container's processes frozen and
//! thawed by its runtime (the freezer cgroup), and a new name in the record.

use crate::error::{bail, Result};
use crate::Engine;

impl Engine {
    /// Freezes every process of a running container.
    pub fn pause(&self, name_or_id: &str) -> Result<()> {
        self.set_paused(name_or_id, true)
    }

    /// Thaws a paused container.
    pub fn unpause(&self, name_or_id: &str) -> Result<()> {
        self.set_paused(name_or_id, false)
    }

    fn set_paused(&self, name_or_id: &str, paused: bool) -> Result<()> {
        let id = self.resolve_id(name_or_id)?;
        let _lock = self.lock(&id)?;
        let Some(mut c) = self.load(&id)? else { bail!(NotFound, "no such container: {name_or_id}") };
        self.refresh_locked(&mut c)?;
        if !c.running() {
            bail!(InvalidState, "container {} is not running", c.name);
        }
        match (c.state.paused, paused) {
            (true, true) => bail!(InvalidState, "container {} is already paused", c.name),
            (false, false) => bail!(InvalidState, "container {} is not paused", c.name),
            _ => {}
        }
        let rt = self.runtime(Some(&c.runtime))?;
        rt.run(&[if paused { "pause" } else { "resume" }, &c.id])
            .map_err(|e| e.context(format!("{} container {}", if paused { "pausing" } else { "unpausing" }, c.name)))?;
        c.state.paused = paused;
        self.save(&c)?;
        self.event(&c, if paused { "pause" } else { "unpause" }, &[]);
        Ok(())
    }

    /// Gives a container a new name (its ID stays).
    pub fn rename(&self, name_or_id: &str, new_name: &str) -> Result<()> {
        if !super::valid_name(new_name) {
            bail!(
                InvalidInput,
                "name {new_name:?}: letters, digits, '_', '.' and '-', starting with a letter or digit (at most 128)"
            );
        }
        let id = self.resolve_id(name_or_id)?;
        let _lock = self.lock(&id)?;
        let Some(mut c) = self.load(&id)? else { bail!(NotFound, "no such container: {name_or_id}") };
        if c.config.sandbox.is_some() {
            bail!(InvalidState, "container {} belongs to a Kubernetes pod: its name is kubelet's", c.name);
        }
        if c.name == new_name {
            bail!(InvalidInput, "container {} already has that name", c.name);
        }
        c.name = new_name.to_string();
        c.config.name = Some(new_name.to_string());
        let rec = serde_json::to_string(&c).map_err(|e| crate::Error::msg(format!("serialize container: {e}")))?;
        let taken = self.store.db().write(|tx| {
            let other: Option<String> = rusqlite::OptionalExtension::optional(tx.query_row(
                "SELECT id FROM containers WHERE name = ?1",
                [new_name],
                |r| r.get(0),
            ))?;
            if other.is_none() {
                tx.execute(
                    "UPDATE containers SET name = ?2, record = ?3 WHERE id = ?1",
                    rusqlite::params![c.id, new_name, rec],
                )?;
            }
            Ok(other)
        })?;
        if let Some(other) = taken {
            bail!(AlreadyExists, "the container name {new_name:?} is already in use by container {}", &other[..12]);
        }
        self.event(&c, "rename", &[]);
        Ok(())
    }
}
