//! `/etc/berth/berth.toml` (or `--config` / `$BERTH_CONFIG`): the registries and storage
//! sections. Unknown keys are errors, so a misspelt option is never silently ignored.
//!
//! ```toml
//! [registries]
//! short-name-registries = ["docker.io"]  # where `busybox` resolves (exactly one registry)
//! insecure = ["registry.lan:5000"]        # plain HTTP allowed (loopback always is)
//! max-concurrent-downloads = 3
//! stall-timeout = 30                      # seconds without data before a download fails
//! retries = 3
//! manifest-timeout = 60                   # seconds for a manifest, index, config or token
//! blob-timeout = 120                      # a blob gets these seconds, plus one second
//! min-download-rate = 65536               # per this many bytes received
//! [registries.aliases]
//! busybox = "registry.lan:5000/tools/busybox"
//! [[registries.mirrors]]
//! registry = "docker.io"
//! locations = ["mirror.lan:5000"]
//! [storage]
//! driver = "overlay"                      # or "copy"
//! [engine]                                # containers: see berth-engine's config.rs
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Context, Result};
use crate::reference::Reference;

pub const DEFAULT_CONFIG: &str = "/etc/berth/berth.toml";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub registries: Registries,
    #[serde(default)]
    pub storage: Storage,
    /// The container engine's section (runtimes, networks, logs), parsed and checked by
    /// berth-engine; kept here as a table so one file configures both.
    #[serde(default)]
    pub engine: Option<toml::Table>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Registries {
    #[serde(default = "default_short")]
    pub short_name_registries: Vec<String>,
    #[serde(default)]
    pub insecure: Vec<String>,
    #[serde(default = "default_concurrency")]
    pub max_concurrent_downloads: usize,
    #[serde(default = "default_stall")]
    pub stall_timeout: u64,
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Seconds a manifest, index, config or token request may take in all.
    #[serde(default = "default_manifest_timeout")]
    pub manifest_timeout: u64,
    /// Seconds every blob download gets, on top of one second per `min_download_rate` bytes.
    #[serde(default = "default_blob_timeout")]
    pub blob_timeout: u64,
    /// Bytes per second a blob download must average beyond `blob_timeout`.
    #[serde(default = "default_min_rate")]
    pub min_download_rate: u64,
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    #[serde(default)]
    pub mirrors: Vec<Mirror>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub registry: String,
    pub locations: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    pub driver: Option<String>,
}

fn default_short() -> Vec<String> {
    vec!["docker.io".into()]
}
fn default_concurrency() -> usize {
    3
}
fn default_stall() -> u64 {
    30
}
fn default_retries() -> u32 {
    3
}
fn default_manifest_timeout() -> u64 {
    60
}
fn default_blob_timeout() -> u64 {
    120
}
fn default_min_rate() -> u64 {
    64 << 10
}

impl Default for Registries {
    fn default() -> Self {
        Registries {
            short_name_registries: default_short(),
            insecure: Vec::new(),
            max_concurrent_downloads: default_concurrency(),
            stall_timeout: default_stall(),
            retries: default_retries(),
            manifest_timeout: default_manifest_timeout(),
            blob_timeout: default_blob_timeout(),
            min_download_rate: default_min_rate(),
            aliases: BTreeMap::new(),
            mirrors: Vec::new(),
        }
    }
}

impl Config {
    pub fn parse(text: &str, origin: &Path) -> Result<Config> {
        let c: Config = toml::from_str(text).ctx(origin.display())?;
        let r = &c.registries;
        for (key, value) in [
            ("max-concurrent-downloads", r.max_concurrent_downloads as u64),
            ("manifest-timeout", r.manifest_timeout),
            ("blob-timeout", r.blob_timeout),
            ("min-download-rate", r.min_download_rate),
        ] {
            if value == 0 {
                return Err(crate::Error::msg(format!("{}: registries.{key} must be at least 1", origin.display())));
            }
        }
        // One registry only: trying several in turn (podman's unqualified-search-registries)
        // lets whichever registry answers first decide what `busybox` is.
        match c.registries.short_name_registries.len() {
            1 => {}
            0 => {
                return Err(crate::Error::msg(format!(
                    "{}: registries.short-name-registries is empty: name the one registry short names resolve to",
                    origin.display()
                )))
            }
            n => {
                return Err(crate::Error::msg(format!(
                    "{}: registries.short-name-registries lists {n} registries; berth resolves short names to one registry only (use fully qualified names, or aliases, for the others)",
                    origin.display()
                )))
            }
        }
        if let Some(d) = &c.storage.driver {
            berth_storage::Driver::parse(d).ctx(format!("{}: storage.driver", origin.display()))?;
        }
        Ok(c)
    }

    /// Loads `path`, or `$BERTH_CONFIG`, or /etc/berth/berth.toml when it exists, or defaults.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let path: Option<PathBuf> = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("BERTH_CONFIG").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()));
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(&p).ctx(format!("configuration {}", p.display()))?;
                Config::parse(&text, &p)
            }
            None => Ok(Config::default()),
        }
    }

    /// Resolves a user-given image name: aliases first, then short names to the short-name
    /// registry.
    pub fn resolve(&self, name: &str) -> Result<Reference> {
        if !Reference::is_qualified(name) {
            let (base, rest) = split_name(name);
            if let Some(target) = self.registries.aliases.get(base) {
                return Reference::parse(&format!("{target}{rest}"));
            }
            let default = self.registries.short_name_registries.first().map(String::as_str).unwrap_or("docker.io");
            return Reference::parse_with(name, default);
        }
        Reference::parse(name)
    }

    pub fn is_insecure(&self, registry: &str) -> bool {
        self.registries.insecure.iter().any(|r| r == registry) || is_loopback(registry)
    }

    /// Where to try `registry`: its mirrors in order, then itself.
    pub fn endpoints(&self, registry: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .registries
            .mirrors
            .iter()
            .filter(|m| m.registry == registry)
            .flat_map(|m| m.locations.iter().cloned())
            .collect();
        out.push(registry.to_string());
        out
    }

    pub fn stall_timeout(&self) -> Duration {
        Duration::from_secs(self.registries.stall_timeout.max(1))
    }

    pub fn driver(&self) -> berth_storage::Driver {
        match &self.storage.driver {
            Some(d) => berth_storage::Driver::parse(d).unwrap_or(berth_storage::Driver::Overlay),
            None => berth_storage::Driver::detect(),
        }
    }
}

/// `name[:tag][@digest]` → (`name`, `[:tag][@digest]`)
fn split_name(s: &str) -> (&str, &str) {
    let end = s.find(['@', ':']).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// Hosts on the loopback interface: `localhost`, `127.x.y.z`, `[::1]` (with any port).
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map(|(h, _)| h).unwrap_or(registry)
    };
    host == "localhost" || host == "::1" || host.parse::<std::net::Ipv4Addr>().map(|a| a.is_loopback()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_resolves() {
        let c = Config::parse(
            "[registries]\nshort-name-registries=[\"127.0.0.1:5000\"]\n[registries.aliases]\nbb=\"reg.example:1/x/bb\"\n",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(c.resolve("busybox:1").unwrap().to_string(), "127.0.0.1:5000/busybox:1");
        assert_eq!(c.resolve("bb:2").unwrap().to_string(), "reg.example:1/x/bb:2");
        assert!(Config::parse("[registries]\nbogus=1\n", Path::new("t")).unwrap_err().to_string().contains("bogus"));
        for list in ["[]", "[\"a.example\", \"b.example\"]"] {
            let e = Config::parse(&format!("[registries]\nshort-name-registries={list}\n"), Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("t.toml") && e.contains("registries.short-name-registries"), "{e}");
        }
        assert!(is_loopback("127.0.0.1:5000") && is_loopback("localhost") && is_loopback("[::1]:80"));
        assert!(!is_loopback("example.com:5000"));
    }
}
