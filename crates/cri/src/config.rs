//! berthd's `[cri]` section of berth.toml:
//!
//! ```toml
//! [cri]
//! listen = "unix:///run/berth/berthd.sock"   # default: berthd.sock in the engine's run root
//! restrict-oom-score-adj = true               # raise OOM score adjustments below berthd's own
//! default-runtime-handler = "runc"            # pods that name none (default: [engine]'s)
//! pod-cgroup-parent = "/kubepods"             # pods that send none (default: [engine]'s)
//! cni-conf-dir = "/etc/cni/net.d"             # pods join the first network found there
//!                                             # (default: berth's own bridge network)
//! cni-plugin-dirs = ["/opt/cni/bin"]          # default: [engine]'s
//! max-container-log-line-size = 16384         # bytes of a line per log record (0: any)
//! stream-address = "127.0.0.1"                # exec/attach/port-forward server (default)
//! stream-port = 0                             # 0: any free port (default)
//! stream-idle-timeout = 14400                 # seconds a stream may pass without traffic
//! stream-tls-cert = "/etc/berth/stream.crt"   # TLS on it with this certificate (PEM) and
//! stream-tls-key = "/etc/berth/stream.key"    # key (both or neither; default: plain HTTP)
//! ```
//!
//! Unknown keys are refused, naming them, as the rest of the file's sections do.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// containerd's default: longer lines become several partial records, which kubelet joins.
pub const DEFAULT_MAX_LOG_LINE: u64 = 16 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct CriConfig {
    /// the socket, as `--listen` takes it
    pub listen: Option<String>,
    /// containerd's restrict_oom_score_adj: a container's OOM score adjustment below berthd's
    /// own is raised to it instead of failing (root cannot lower it without CAP_SYS_RESOURCE,
    /// and kubelet asks for low values for guaranteed pods)
    pub restrict_oom_score_adj: bool,
    /// the runtime handler of pods whose RunPodSandbox names none
    pub default_runtime_handler: Option<String>,
    /// the cgroup parent of pods whose configuration has none
    pub pod_cgroup_parent: Option<String>,
    /// a CNI configuration directory: pods attach to the first network configuration in it
    pub cni_conf_dir: Option<PathBuf>,
    pub cni_plugin_dirs: Option<Vec<PathBuf>>,
    /// bytes of a line per log record; 0: no limit
    pub max_container_log_line_size: u64,
    /// the streaming server's address and port (0: any free one)
    pub stream_address: std::net::IpAddr,
    pub stream_port: u16,
    /// how long a streaming connection may pass without traffic
    pub stream_idle_timeout: std::time::Duration,
    /// TLS on the streaming server: certificate chain and key (PEM)
    pub stream_tls: Option<(PathBuf, PathBuf)>,
}

impl Default for CriConfig {
    fn default() -> Self {
        CriConfig {
            listen: None,
            restrict_oom_score_adj: false,
            default_runtime_handler: None,
            pod_cgroup_parent: None,
            cni_conf_dir: None,
            cni_plugin_dirs: None,
            max_container_log_line_size: DEFAULT_MAX_LOG_LINE,
            stream_address: std::net::IpAddr::from([127, 0, 0, 1]),
            stream_port: 0,
            stream_idle_timeout: crate::streaming::DEFAULT_IDLE_TIMEOUT,
            stream_tls: None,
        }
    }
}

const KEYS: &str = "listen, restrict-oom-score-adj, default-runtime-handler, pod-cgroup-parent, cni-conf-dir, \
                    cni-plugin-dirs, max-container-log-line-size, stream-address, stream-port, stream-idle-timeout, \
                    stream-tls-cert, stream-tls-key";

impl CriConfig {
    pub fn from_table(t: Option<&toml::Table>, origin: &Path) -> Result<CriConfig> {
        let mut c = CriConfig::default();
        let Some(t) = t else { return Ok(c) };
        let err = |key: &str, what: &str| Error::new(format!("configuration {}: cri.{key}: {what}", origin.display()));
        let string = |key: &str, value: &toml::Value| -> Result<String> {
            match value.as_str() {
                Some(s) if !s.is_empty() => Ok(s.to_string()),
                _ => Err(err(key, "must be a non-empty string")),
            }
        };
        let absolute = |key: &str, value: &toml::Value| -> Result<PathBuf> {
            let p = PathBuf::from(string(key, value)?);
            if !p.is_absolute() {
                return Err(err(key, &format!("{} is not an absolute path", p.display())));
            }
            Ok(p)
        };
        let (mut tls_cert, mut tls_key) = (None, None);
        for (key, value) in t {
            match key.as_str() {
                "listen" => {
                    c.listen = Some(string(key, value).map_err(|_| err(key, "must be a string (unix:///PATH)"))?)
                }
                "restrict-oom-score-adj" => {
                    c.restrict_oom_score_adj = value.as_bool().ok_or_else(|| err(key, "must be true or false"))?
                }
                "default-runtime-handler" => c.default_runtime_handler = Some(string(key, value)?),
                "pod-cgroup-parent" => {
                    let p = string(key, value)?;
                    if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
                        return Err(err(key, &format!("{p:?}: an absolute cgroup path without '..'")));
                    }
                    c.pod_cgroup_parent = Some(p);
                }
                "cni-conf-dir" => c.cni_conf_dir = Some(absolute(key, value)?),
                "cni-plugin-dirs" => {
                    let list = value.as_array().ok_or_else(|| err(key, "must be a list of directories"))?;
                    c.cni_plugin_dirs = Some(list.iter().map(|v| absolute(key, v)).collect::<Result<_>>()?);
                }
                "max-container-log-line-size" => {
                    c.max_container_log_line_size = value
                        .as_integer()
                        .and_then(|n| u64::try_from(n).ok())
                        .ok_or_else(|| err(key, "must be a number of bytes (0: no limit)"))?
                }
                "stream-address" => {
                    c.stream_address = string(key, value)?
                        .parse()
                        .map_err(|_| err(key, "must be an IP address (127.0.0.1, ::1, 0.0.0.0)"))?
                }
                "stream-port" => {
                    c.stream_port = value
                        .as_integer()
                        .and_then(|n| u16::try_from(n).ok())
                        .ok_or_else(|| err(key, "must be a TCP port (0: any free port)"))?
                }
                "stream-idle-timeout" => {
                    let secs = value
                        .as_integer()
                        .and_then(|n| u64::try_from(n).ok())
                        .filter(|n| *n > 0)
                        .ok_or_else(|| err(key, "must be a positive number of seconds"))?;
                    c.stream_idle_timeout = std::time::Duration::from_secs(secs)
                }
                "stream-tls-cert" => tls_cert = Some(absolute(key, value)?),
                "stream-tls-key" => tls_key = Some(absolute(key, value)?),
                _ => return Err(err(key, &format!("unknown key ({KEYS})"))),
            }
        }
        c.stream_tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => return Err(err("stream-tls-key", "missing (stream-tls-cert is set)")),
            (None, Some(_)) => return Err(err("stream-tls-cert", "missing (stream-tls-key is set)")),
        };
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
        let e = parse("stream-tls = \"/x\"").unwrap_err().to_string();
        assert!(e.contains("cri.stream-tls: unknown key"), "{e}");
        let e = parse("stream-tls-cert = \"/x.crt\"").unwrap_err().to_string();
        assert!(e.contains("cri.stream-tls-key: missing"), "{e}");
        let c = parse("stream-tls-cert = \"/x.crt\"\nstream-tls-key = \"/x.key\"").unwrap();
        assert_eq!(c.stream_tls, Some((PathBuf::from("/x.crt"), PathBuf::from("/x.key"))));
        let c = parse("stream-address = \"::1\"\nstream-port = 10010\nstream-idle-timeout = 60").unwrap();
        assert_eq!(c.stream_address, std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
        assert_eq!((c.stream_port, c.stream_idle_timeout.as_secs()), (10010, 60));
        assert_eq!(c.max_container_log_line_size, DEFAULT_MAX_LOG_LINE);
        let c = parse(
            "default-runtime-handler = \"runc\"\npod-cgroup-parent = \"/kubepods\"\ncni-conf-dir = \"/etc/cni/net.d\"\n\
             cni-plugin-dirs = [\"/opt/cni/bin\"]\nmax-container-log-line-size = 0",
        )
        .unwrap();
        assert_eq!(c.default_runtime_handler.as_deref(), Some("runc"));
        assert_eq!(c.pod_cgroup_parent.as_deref(), Some("/kubepods"));
        assert_eq!(c.cni_conf_dir.as_deref(), Some(Path::new("/etc/cni/net.d")));
        assert_eq!(c.cni_plugin_dirs, Some(vec![PathBuf::from("/opt/cni/bin")]));
        assert_eq!(c.max_container_log_line_size, 0);
        for (text, what) in [
            ("pod-cgroup-parent = \"kubepods\"", "cri.pod-cgroup-parent"),
            ("pod-cgroup-parent = \"/a/../b\"", "cri.pod-cgroup-parent"),
            ("cni-conf-dir = \"net.d\"", "not an absolute path"),
            ("cni-plugin-dirs = \"/opt/cni/bin\"", "must be a list"),
            ("max-container-log-line-size = -1", "number of bytes"),
            ("default-runtime-handler = \"\"", "non-empty"),
            ("stream-address = \"localhost\"", "cri.stream-address: must be an IP address"),
            ("stream-port = 70000", "cri.stream-port: must be a TCP port"),
            ("stream-idle-timeout = 0", "positive number of seconds"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(what), "{text}: {e}");
        }
    }
}
