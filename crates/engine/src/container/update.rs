//! Changing a container's resource limits after it was created (CRI's
//! UpdateContainerResources, docker's `update`): the runtime's `update` applies them to the
//! container's cgroup, and the record keeps them for later inspection and restarts.

use crate::container::config::{Resources, RestartPolicy};
use crate::container::Container;
use crate::error::{bail, Context, Result};
use crate::{oci, runtime, Engine};

impl Engine {
    /// Applies `resources` to the container (created or running) and records them; an exited
    /// container only has them recorded, for its next start.
    pub fn update_resources(&self, name_or_id: &str, resources: &Resources) -> Result<Container> {
        resources.validate()?;
        let id = self.resolve_id(name_or_id)?;
        let _lock = self.lock(&id)?;
        let Some(mut c) = self.load(&id)? else { bail!(NotFound, "container {name_or_id} not found") };
        self.refresh_locked(&mut c)?;
        if matches!(c.state.status.as_str(), "running" | "created") {
            let limits = oci::limits(resources, resources.memory.is_some() && runtime::swap_accounting());
            let file = self.run_dir(&c.id).join("update-resources.json");
            std::fs::write(&file, serde_json::to_vec(&limits).ctx("serialize the resources")?).ctx(file.display())?;
            let rt = self.runtime(Some(&c.runtime))?;
            let applied = rt.run(&["update", "--resources", &file.to_string_lossy(), &c.id]);
            let _ = std::fs::remove_file(&file);
            applied.map_err(|e| e.context(format!("updating the resources of container {}", c.name)))?;
        }
        c.config.resources = resources.clone();
        self.save(&c)?;
        Ok(c)
    }

    /// A new restart policy for the container's next exits (docker's `update --restart`).
    pub fn update_restart_policy(&self, name_or_id: &str, policy: RestartPolicy) -> Result<Container> {
        let id = self.resolve_id(name_or_id)?;
        let _lock = self.lock(&id)?;
        let Some(mut c) = self.load(&id)? else { bail!(NotFound, "container {name_or_id} not found") };
        if c.config.auto_remove && policy.name != "no" && !policy.name.is_empty() {
            bail!(InvalidInput, "container {} is removed when it exits (--rm): it has no restart policy", c.name);
        }
        c.config.restart = policy;
        self.save(&c)?;
        Ok(c)
    }
}
