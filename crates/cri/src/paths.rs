//! Where berthd keeps things, found as the `berth` CLI and the engine find them: the store root
//! (`--root`, else `$BERTH_ROOT`, else /var/lib/berth), the configuration file (`--config`,
//! else `$BERTH_CONFIG`, else /etc/berth/berth.toml when it exists) and the run root
//! (`[engine] run-root` from that file, else /run/berth for the default store root, else
//! `<root>/run`). The default socket is `<run root>/berthd.sock`.
//!
//! The run-root rule is the engine's (`Engine::open`); berthd will take it from the engine
//! once it sits on it, and until then reads only that one key of the configuration.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

pub const DEFAULT_ROOT: &str = "/var/lib/berth";
pub const DEFAULT_CONFIG: &str = "/etc/berth/berth.toml";
pub const DEFAULT_RUN_ROOT: &str = "/run/berth";
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

/// The run root for the store at `root` with the configuration file `config` (read here for
/// `[engine] run-root` only; a file that cannot be read or parsed is an error naming it).
pub fn run_root(root: &Path, config: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = config {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io(format!("configuration {}", path.display()), e))?;
        if let Some(p) = configured_run_root(&text, path)? {
            return Ok(p);
        }
    }
    let absolute = absolute(root)?;
    // The engine compares the canonical store root with the default: a root given through a
    // symbolic link to /var/lib/berth is the default store.
    let canonical = absolute.canonicalize().unwrap_or(absolute);
    if canonical == Path::new(DEFAULT_ROOT) {
        Ok(PathBuf::from(DEFAULT_RUN_ROOT))
    } else {
        Ok(canonical.join("run"))
    }
}

/// `[engine] run-root` of a berth.toml, when set.
fn configured_run_root(text: &str, origin: &Path) -> Result<Option<PathBuf>> {
    let table: toml::Table =
        text.parse().map_err(|e| Error::new(format!("configuration {}: {e}", origin.display())))?;
    let Some(engine) = table.get("engine") else { return Ok(None) };
    let Some(engine) = engine.as_table() else {
        return Err(Error::new(format!("configuration {}: [engine] must be a table", origin.display())));
    };
    match engine.get("run-root") {
        None => Ok(None),
        Some(toml::Value::String(s)) if Path::new(s).is_absolute() => Ok(Some(PathBuf::from(s))),
        Some(toml::Value::String(s)) => Err(Error::new(format!(
            "configuration {}: engine.run-root must be an absolute path, not {s:?}",
            origin.display()
        ))),
        Some(v) => Err(Error::new(format!(
            "configuration {}: engine.run-root must be an absolute path (a string), not {}",
            origin.display(),
            v.type_str()
        ))),
    }
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

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| Error::io("current directory", e))?;
    Ok(cwd.join(p))
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

    #[test]
    fn run_root_rules() {
        let _serial = crate::FS_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let canonical_tmp = dir.path().canonicalize().unwrap();
        // Not the default store, no configuration: <root>/run.
        assert_eq!(run_root(&root, None).unwrap(), canonical_tmp.join("store/run"));
        // The default store: /run/berth.
        assert_eq!(run_root(Path::new(DEFAULT_ROOT), None).unwrap(), Path::new(DEFAULT_RUN_ROOT));
        // [engine] run-root wins.
        let cfg = dir.path().join("berth.toml");
        std::fs::write(&cfg, "[registries]\nretries = 1\n[engine]\nrun-root = \"/run/elsewhere\"\n").unwrap();
        assert_eq!(run_root(&root, Some(&cfg)).unwrap(), Path::new("/run/elsewhere"));
        // A configuration without it: the rule above.
        std::fs::write(&cfg, "[engine]\ncgroup-parent = \"/x\"\n").unwrap();
        assert_eq!(run_root(&root, Some(&cfg)).unwrap(), canonical_tmp.join("store/run"));
        // Errors name the file and the key.
        std::fs::write(&cfg, "[engine]\nrun-root = \"run\"\n").unwrap();
        let e = run_root(&root, Some(&cfg)).unwrap_err().to_string();
        assert!(e.contains(&cfg.display().to_string()) && e.contains("engine.run-root"), "{e}");
        std::fs::write(&cfg, "[engine\n").unwrap();
        let e = run_root(&root, Some(&cfg)).unwrap_err().to_string();
        assert!(e.contains(&cfg.display().to_string()), "{e}");
        let missing = dir.path().join("missing.toml");
        let e = run_root(&root, Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("missing.toml") && e.contains("No such file"), "{e}");
    }
}
