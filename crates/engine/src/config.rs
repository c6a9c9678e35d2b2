//! The `[engine]` section of `/etc/berth/berth.toml`. Unknown keys are errors.
//!
//! ```toml
//! [engine]
//! default-runtime = "berth-oci"          # a name from [engine.runtimes] or a built-in one
//! run-root = "/run/berth"                # default: /run/berth for the default store root,
//!                                        # else <root>/run
//! cgroup-parent = "/berth"               # containers' cgroups: <cgroup-parent>/<id>
//! log-max-size = 10485760                # bytes of container log before rotation (0: never)
//! monitor = "/usr/libexec/berth/berth-monitor"   # default: beside the berth binary, else PATH
//! init = "/usr/libexec/berth/berth-init"         # for --init; default: beside berth, else PATH
//! cni-plugin-dirs = ["/usr/lib/cni", "/opt/cni/bin"]
//! [engine.network]
//! default-name = "berth"                 # `--network bridge` (the default) means this one
//! default-bridge = "berth0"
//! default-subnet = "10.89.0.0/16"
//! [engine.runtimes.runc]
//! path = "/usr/sbin/runc"
//! hide-cgroup2 = false                   # run it without the host's cgroup2 mount (hybrid hosts)
//! ```
//!
//! Built-in handlers: `berth-oci` (beside the berth binary, else PATH), `runc` and `crun` (from
//! PATH). crun 1.8 (Debian 12) refuses hybrid cgroup hosts, so on a hybrid host the built-in
//! crun handler runs crun in a private mount namespace without the cgroup2 mount
//! (`hide-cgroup2`), where it sees and uses the v1 hierarchies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EngineConfig {
    pub default_runtime: Option<String>,
    pub run_root: Option<PathBuf>,
    pub cgroup_parent: Option<String>,
    pub log_max_size: Option<u64>,
    pub monitor: Option<PathBuf>,
    pub init: Option<PathBuf>,
    pub cni_plugin_dirs: Option<Vec<PathBuf>>,
    #[serde(default)]
    pub network: NetworkDefaults,
    #[serde(default)]
    pub runtimes: BTreeMap<String, RuntimeConfig>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkDefaults {
    pub default_name: Option<String>,
    pub default_bridge: Option<String>,
    pub default_subnet: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuntimeConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub hide_cgroup2: Option<bool>,
}

pub const DEFAULT_NETWORK: &str = "berth";
pub const DEFAULT_BRIDGE: &str = "berth0";
/// Beside podman's 10.88.0.0/16, so both can run on one host (the benchmark does).
pub const DEFAULT_SUBNET: &str = "10.89.0.0/16";
pub const DEFAULT_LOG_MAX: u64 = 10 << 20;

impl EngineConfig {
    pub fn from_table(t: Option<&toml::Table>, origin: &str) -> Result<EngineConfig> {
        let Some(t) = t else { return Ok(EngineConfig::default()) };
        let c: EngineConfig =
            toml::Value::Table(t.clone()).try_into().map_err(|e| Error::invalid(format!("{origin}: [engine]: {e}")))?;
        if let Some(s) = &c.network.default_subnet {
            berth_network::Subnet::parse(s)
                .map_err(|e| Error::invalid(format!("{origin}: engine.network.default-subnet: {e}")))?;
        }
        if let Some(b) = &c.network.default_bridge {
            if !berth_network::valid_ifname(b) {
                return Err(Error::invalid(format!(
                    "{origin}: engine.network.default-bridge: {b:?} is not an interface name"
                )));
            }
        }
        if let Some(p) = &c.cgroup_parent {
            if !p.starts_with('/') || p.contains("..") {
                return Err(Error::invalid(format!(
                    "{origin}: engine.cgroup-parent: {p:?} must be an absolute cgroup path"
                )));
            }
        }
        Ok(c)
    }

    pub fn default_network(&self) -> &str {
        self.network.default_name.as_deref().unwrap_or(DEFAULT_NETWORK)
    }

    pub fn cgroup_parent(&self) -> &str {
        self.cgroup_parent.as_deref().unwrap_or("/berth")
    }

    pub fn cni_dirs(&self) -> Vec<PathBuf> {
        self.cni_plugin_dirs
            .clone()
            .unwrap_or_else(|| vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")])
    }
}

/// A program beside the running executable (`target/release/berth` → `target/release/NAME`),
/// else on PATH.
pub fn find_program(name: &str, explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            for d in [Some(dir), dir.parent()].into_iter().flatten() {
                let p = d.join(name);
                if p.is_file() {
                    return Some(p);
                }
            }
        }
    }
    search_path(name)
}

pub fn search_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_unknown_keys() {
        let t: toml::Table = toml::from_str(
            "default-runtime = \"runc\"\n[network]\ndefault-subnet = \"10.7.0.0/16\"\n[runtimes.x]\npath = \"/bin/x\"\n",
        )
        .unwrap();
        let c = EngineConfig::from_table(Some(&t), "t").unwrap();
        assert_eq!(c.default_runtime.as_deref(), Some("runc"));
        assert_eq!(c.runtimes["x"].path, PathBuf::from("/bin/x"));
        let t: toml::Table = toml::from_str("defualt-runtime = \"runc\"\n").unwrap();
        assert!(EngineConfig::from_table(Some(&t), "t").unwrap_err().to_string().contains("defualt-runtime"));
        let t: toml::Table = toml::from_str("[network]\ndefault-subnet = \"10.7.0.1/16\"\n").unwrap();
        assert!(EngineConfig::from_table(Some(&t), "t").is_err());
    }
}
