//! berthd's `[cri]` section of berth.toml:
//!
//! ```toml
//! [cri]
//! listen = "unix:///run/berth/berthd.sock"   # default: berthd.sock in the engine's run root
//! restrict-oom-score-adj = true               # raise OOM score adjustments below berthd's own
//! ```
//!
//! Unknown keys are refused, naming them, as the rest of the file's sections do.

use std::path::Path;

use crate::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CriConfig {
    /// the socket, as `--listen` takes it
    pub listen: Option<String>,
    /// containerd's restrict_oom_score_adj: a container's OOM score adjustment below berthd's
    /// own is raised to it instead of failing (root cannot lower it without CAP_SYS_RESOURCE,
    /// and kubelet asks for low values for guaranteed pods)
    pub restrict_oom_score_adj: bool,
}

impl CriConfig {
    pub fn from_table(t: Option<&toml::Table>, origin: &Path) -> Result<CriConfig> {
        let mut c = CriConfig::default();
        let Some(t) = t else { return Ok(c) };
        let err = |key: &str, what: &str| Error::new(format!("configuration {}: cri.{key}: {what}", origin.display()));
        for (key, value) in t {
            match key.as_str() {
                "listen" => {
                    c.listen =
                        Some(value.as_str().ok_or_else(|| err(key, "must be a string (unix:///PATH)"))?.to_string())
                }
                "restrict-oom-score-adj" => {
                    c.restrict_oom_score_adj = value.as_bool().ok_or_else(|| err(key, "must be true or false"))?
                }
                _ => return Err(err(key, "unknown key (listen, restrict-oom-score-adj)")),
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_errors() {
        let origin = Path::new("/etc/berth/berth.toml");
        let parse = |s: &str| CriConfig::from_table(Some(&s.parse::<toml::Table>().unwrap()), origin);
        assert_eq!(CriConfig::from_table(None, origin).unwrap(), CriConfig::default());
        let c = parse("listen = \"unix:///tmp/x.sock\"\nrestrict-oom-score-adj = true").unwrap();
        assert_eq!(c.listen.as_deref(), Some("unix:///tmp/x.sock"));
        assert!(c.restrict_oom_score_adj);
        let e = parse("restrict-oom-score-adj = \"yes\"").unwrap_err().to_string();
        assert!(e.contains("/etc/berth/berth.toml") && e.contains("cri.restrict-oom-score-adj"), "{e}");
        let e = parse("stream-port = 1").unwrap_err().to_string();
        assert!(e.contains("cri.stream-port: unknown key"), "{e}");
    }
}
