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
//! max-image-size = "64GiB"                # the most an image may take unpacked
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
    /// berthd's section (its socket, OOM score clamping), parsed and checked by berthd.
    #[serde(default)]
    pub cri: Option<toml::Table>,
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
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Storage {
    pub driver: Option<String>,
    /// The most an image may take unpacked: bytes, or a string with a unit ("64GiB", "512M";
    /// K, M, G, T are powers of 1024). Default `DEFAULT_MAX_IMAGE_SIZE`.
    pub max_image_size: Option<ByteSize>,
}

/// The default of `storage.max-image-size`: 64 GiB (the largest common images, CUDA and
/// machine-learning ones, unpack to a few tens of GB).
pub const DEFAULT_MAX_IMAGE_SIZE: u64 = 64 << 30;

/// A size in berth.toml: an integer (bytes) or a string with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    Bytes(u64),
    Text(String),
}

impl ByteSize {
    pub fn bytes(&self) -> std::result::Result<u64, String> {
        let s = match self {
            ByteSize::Bytes(n) => return Ok(*n),
            ByteSize::Text(s) => s.trim(),
        };
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = (&s[..split], s[split..].trim());
        let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (e.g. 64GiB, 512M or a number of bytes)"))?;
        let shift = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (B, K, M, G or T, powers of 1024)")),
        };
        n.checked_mul(1u64 << shift).ok_or_else(|| format!("{s:?} is too large"))
    }
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
        if let Some(m) = &c.storage.max_image_size {
            match m.bytes() {
                Ok(0) => {
                    return Err(crate::Error::msg(format!(
                        "{}: storage.max-image-size must be more than 0",
                        origin.display()
                    )))
                }
                Ok(_) => {}
                Err(e) => return Err(crate::Error::msg(format!("{}: storage.max-image-size: {e}", origin.display()))),
            }
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

    /// `storage.max-image-size` in bytes (checked by `parse`).
    pub fn max_image_size(&self) -> u64 {
        self.storage.max_image_size.as_ref().and_then(|m| m.bytes().ok()).unwrap_or(DEFAULT_MAX_IMAGE_SIZE)
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
        let size = |v: &str| Config::parse(&format!("[storage]\nmax-image-size = {v}\n"), Path::new("t.toml"));
        assert_eq!(size("\"2GiB\"").unwrap().max_image_size(), 2 << 30);
        assert_eq!(size("\"512 m\"").unwrap().max_image_size(), 512 << 20);
        assert_eq!(size("1000").unwrap().max_image_size(), 1000);
        assert_eq!(Config::default().max_image_size(), DEFAULT_MAX_IMAGE_SIZE);
        for bad in ["0", "\"12 parsecs\"", "\"lots\"", "\"99999999999T\""] {
            let e = size(bad).unwrap_err().to_string();
            assert!(e.contains("t.toml: storage.max-image-size"), "{bad}: {e}");
        }
        assert!(is_loopback("127.0.0.1:5000") && is_loopback("localhost") && is_loopback("[::1]:80"));
        assert!(!is_loopback("example.com:5000"));
    }
}
