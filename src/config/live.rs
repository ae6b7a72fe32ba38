//! The live configuration: the one [`Config`] every part of the daemon
//! reads, swapped whole on reload.

use std::sync::{Arc, RwLock};

use serde_json::json;

use super::{load, Config, Problems};

/// The current configuration; swapped whole on reload. Sessions take a
/// snapshot when they start.
pub struct ConfigCell {
    current: RwLock<Arc<Config>>,
}

impl ConfigCell {
    pub fn new(config: Config) -> Self {
        ConfigCell {
            current: RwLock::new(Arc::new(config)),
        }
    }

    pub fn get(&self) -> Arc<Config> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Loads the config file again; on success swaps it in and returns a
    /// summary, on failure keeps the old one and returns every problem.
    pub fn reload(&self) -> Result<serde_json::Value, Problems> {
        let path = self.get().path.clone();
        let new = load(&path)?;
        let summary = summary(&new);
        let old = self.get();
        if new.server.listen != old.server.listen
            || new.server.data_dir != old.server.data_dir
            || new.server.admin_socket != old.server.admin_socket
            || new.server.max_sessions != old.server.max_sessions
            || new.server.store_cache != old.server.store_cache
        {
            tracing::warn!(
                "listen, data_dir, admin_socket, max_sessions and store_cache changes take effect at restart"
            );
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        tracing::info!(config = %path.display(), "config reloaded");
        Ok(summary)
    }
}

pub fn summary(c: &Config) -> serde_json::Value {
    json!({
        "config": c.path.display().to_string(),
        "channels": c.channels.len(),
        "pipelines": c.pipelines.len(),
        "workflows": c.workflows.len(),
        "users": c.users.len(),
        "teams": c.teams.len(),
    })
}
