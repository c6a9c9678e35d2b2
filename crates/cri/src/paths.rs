//! Where berthd keeps things, found as the `berth` CLI finds them: the store root (`--root`,
//! else `$BERTH_ROOT`, else /var/lib/berth) and the configuration file (`--config`, else
//! `$BERTH_CONFIG`, else /etc/berth/berth.toml when it exists). The default socket is
//! `berthd.sock` in the engine's run root (`[engine] run-root`, else /run/berth for the
//! default store root, else `<root>/run`), or `[cri] listen`.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

pub const DEFAULT_ROOT: &str = "/var/lib/berth";
pub const DEFAULT_CONFIG: &str = "/etc/berth/berth.toml";
/// The socket's file name in the run root.
pub const SOCKET_NAME: &str = "berthd.sock";

/// `--root`, else `$BERTH_ROOT`, else /var/lib/berth.
pub fn store_root(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("BERTH_ROOT").filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

/// `--config`, else `$BERTH_CONFIG`, else /etc/berth/berth.toml if it exists, else none.
pub fn config_file(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("BERTH_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from))
        .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()))
}

/// The socket path of a `--listen` value: `unix:///absolute/path` (what crictl and kubelet
/// take as an endpoint) or the absolute path alone.
pub fn parse_listen(value: &str) -> Result<PathBuf> {
    let path = match value.split_once("://") {
        Some(("unix", rest)) => rest,
        Some((scheme, _)) => {
            return Err(Error::new(format!(
                "--listen {value:?}: berthd listens on a Unix socket only (unix:///PATH), not {scheme}"
            )))
        }
        None => value,
    };
    if !path.starts_with('/') {
        return Err(Error::new(format!("--listen {value:?}: the socket path must be absolute (unix:///PATH)")));
    }
    if path.ends_with('/') {
        return Err(Error::new(format!("--listen {value:?}: the socket path names a directory")));
    }
    // sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
    if path.len() > 107 {
        return Err(Error::new(format!(
            "--listen {value:?}: the socket path is {} bytes long, a Unix socket path holds at most 107",
            path.len()
        )));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_values() {
        assert_eq!(parse_listen("unix:///run/berth/berthd.sock").unwrap(), Path::new("/run/berth/berthd.sock"));
        assert_eq!(parse_listen("/tmp/x.sock").unwrap(), Path::new("/tmp/x.sock"));
        let e = parse_listen("tcp://127.0.0.1:1234").unwrap_err().to_string();
        assert!(e.contains("Unix socket only") && e.contains("tcp"), "{e}");
        let e = parse_listen("unix://relative.sock").unwrap_err().to_string();
        assert!(e.contains("must be absolute"), "{e}");
        let e = parse_listen("x.sock").unwrap_err().to_string();
        assert!(e.contains("must be absolute"), "{e}");
        let e = parse_listen("unix:///tmp/").unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        let long = format!("unix:///{}", "a".repeat(120));
        let e = parse_listen(&long).unwrap_err().to_string();
        assert!(e.contains("at most 107"), "{e}");
    }
}
