//! Registry credentials in a Docker-compatible `auth.json` / `config.json`
//! (`{"auths": {"registry": {"auth": base64("user:password")}}}`), and the parsing of
//! `WWW-Authenticate` challenges.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{json, Value};

use crate::error::{bail, Context, Result};

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// Where credentials are: `path`, which `berth login` writes and `berth logout` edits, then
/// `fallbacks`, files of other tools read (in order) for registries `path` has nothing for.
pub struct AuthFile {
    pub path: PathBuf,
    pub fallbacks: Vec<PathBuf>,
}

/// Docker Hub's credentials are stored under its legacy index URL.
fn keys_for(registry: &str) -> Vec<String> {
    let mut k = vec![registry.to_string(), format!("https://{registry}"), format!("http://{registry}")];
    if registry == "docker.io" {
        k.insert(0, "https://index.docker.io/v1/".into());
        k.push("index.docker.io".into());
        k.push("registry-1.docker.io".into());
    }
    k
}

fn load(path: &Path) -> Result<Value> {
    match fs::read(path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(json!({})),
        Ok(b) => {
            let v: Value = serde_json::from_slice(&b).ctx(format!("{}: invalid JSON", path.display()))?;
            if !v.is_object() {
                bail!("{}: expected a JSON object", path.display());
            }
            Ok(v)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(e).ctx(path.display()),
    }
}

/// The credentials for `registry` in one auth file, if it has them.
fn lookup(path: &Path, v: &Value, registry: &str) -> Result<Option<Credentials>> {
    let keys = keys_for(registry);
    for key in &keys {
        if let Some(helper) = v.get("credHelpers").and_then(|h| h.get(key)).and_then(Value::as_str) {
            bail!(
                "{}: credential helper {helper:?} for {registry} is not supported by berth (use berth login)",
                path.display()
            );
        }
        let Some(entry) = v.get("auths").and_then(|a| a.get(key)) else { continue };
        if let Some(auth) = entry.get("auth").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ctx(format!("{}: auths.{key}.auth: invalid base64", path.display()))?;
            let raw = String::from_utf8(raw).ctx(format!("{}: auths.{key}.auth", path.display()))?;
            let Some((u, p)) = raw.split_once(':') else {
                bail!("{}: auths.{key}.auth: expected base64 of user:password", path.display());
            };
            return Ok(Some(Credentials { username: u.into(), password: p.into() }));
        }
        if let (Some(u), Some(p)) =
            (entry.get("username").and_then(Value::as_str), entry.get("password").and_then(Value::as_str))
        {
            return Ok(Some(Credentials { username: u.into(), password: p.into() }));
        }
        if entry.get("identitytoken").and_then(Value::as_str).is_some_and(|t| !t.is_empty()) {
            bail!(
                "{}: auths.{key}: identity tokens (OAuth2 refresh tokens) are not supported by berth (use berth login)",
                path.display()
            );
        }
    }
    // Docker keeps an empty entry in auths for a registry whose secret is in the store.
    let listed = keys.iter().any(|k| v.get("auths").and_then(|a| a.get(k)).is_some());
    if v.get("credsStore").is_some() && listed {
        bail!("{}: credsStore is not supported by berth (use berth login)", path.display());
    }
    Ok(None)
}

impl AuthFile {
    /// Just `path` (`--authfile`, and tests).
    pub fn at(path: &Path) -> AuthFile {
        AuthFile { path: path.to_path_buf(), fallbacks: Vec::new() }
    }

    /// `explicit` alone, else `$REGISTRY_AUTH_FILE` alone, else
    /// `$XDG_RUNTIME_DIR/containers/auth.json` (written) with `~/.docker/config.json` read
    /// after it, as podman and skopeo do; `~/.docker/config.json` alone without
    /// XDG_RUNTIME_DIR.
    pub fn locate(explicit: Option<&Path>) -> AuthFile {
        AuthFile::locate_with(explicit, |k| std::env::var_os(k))
    }

    fn locate_with(explicit: Option<&Path>, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> AuthFile {
        if let Some(p) = explicit {
            return AuthFile::at(p);
        }
        if let Some(p) = env("REGISTRY_AUTH_FILE") {
            return AuthFile::at(Path::new(&p));
        }
        let docker = PathBuf::from(env("HOME").unwrap_or_else(|| "/root".into())).join(".docker/config.json");
        match env("XDG_RUNTIME_DIR") {
            Some(d) => AuthFile { path: PathBuf::from(d).join("containers/auth.json"), fallbacks: vec![docker] },
            None => AuthFile::at(&docker),
        }
    }

    /// The credentials for `registry`: from the first file of the chain that has some.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>> {
        for path in std::iter::once(&self.path).chain(&self.fallbacks) {
            if let Some(c) = lookup(path, &load(path)?, registry)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    fn save(&self, v: &Value) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).ctx(format!("create {}", dir.display()))?;
        }
        let tmp = self.path.with_extension(format!("tmp-{}", berth_storage::unique_suffix()));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .ctx(format!("create {}", tmp.display()))?;
            f.write_all(&serde_json::to_vec_pretty(v).unwrap())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path).ctx(format!("write {}", self.path.display()))
    }

    pub fn set(&self, registry: &str, c: &Credentials) -> Result<()> {
        let mut v = load(&self.path)?;
        if !v.get("auths").map(Value::is_object).unwrap_or(false) {
            v["auths"] = json!({});
        }
        let raw = format!("{}:{}", c.username, c.password);
        v["auths"][registry] = json!({"auth": base64::engine::general_purpose::STANDARD.encode(raw)});
        self.save(&v)
    }

    /// Removes the credentials of `registry` from `path`; false if there were none. An error
    /// when another tool's file of the chain has some (they are left to that tool).
    pub fn remove(&self, registry: &str) -> Result<bool> {
        let mut v = load(&self.path)?;
        let mut removed = false;
        if let Some(auths) = v.get_mut("auths").and_then(Value::as_object_mut) {
            for key in keys_for(registry) {
                removed |= auths.remove(&key).is_some();
            }
        }
        if removed {
            self.save(&v)?;
        } else {
            for f in &self.fallbacks {
                let other = load(f)?;
                if keys_for(registry).iter().any(|k| other.get("auths").and_then(|a| a.get(k)).is_some()) {
                    bail!("credentials for {registry} are in {}, another tool's file: not removed", f.display());
                }
            }
        }
        Ok(removed)
    }
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="...",service="...",scope="a,b"` (quoted values may hold commas).
pub fn parse_challenges(h: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let b = h.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b' ' && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let token = &h[start..i];
        if i < b.len() && b[i] == b'=' && !out.is_empty() {
            // key=value of the current challenge
            i += 1;
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    v.push(b[i] as char);
                    i += 1;
                }
                i += 1;
                v
            } else {
                let s = i;
                while i < b.len() && b[i] != b',' {
                    i += 1;
                }
                h[s..i].trim().to_string()
            };
            out.last_mut().unwrap().params.insert(token.to_ascii_lowercase(), value);
        } else {
            out.push(Challenge { scheme: token.to_ascii_lowercase(), params: BTreeMap::new() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.example/token");
        assert_eq!(c[0].params["scope"], "repository:a/b:pull,push");
        let c = parse_challenges(r#"Basic realm="Registry Realm""#);
        assert_eq!(c[0].scheme, "basic");
    }

    #[test]
    fn auth_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = AuthFile::at(&dir.path().join("auth.json"));
        assert!(f.get("r:1").unwrap().is_none());
        let c = Credentials { username: "u".into(), password: "p:w".into() };
        f.set("r:1", &c).unwrap();
        assert_eq!(f.get("r:1").unwrap(), Some(c));
        assert!(f.remove("r:1").unwrap());
        assert!(!f.remove("r:1").unwrap());
    }

    #[test]
    fn auth_files_are_read_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (run, home) = (dir.path().join("run"), dir.path().join("home"));
        let env = |k: &str| match k {
            "XDG_RUNTIME_DIR" => Some(run.clone().into_os_string()),
            "HOME" => Some(home.clone().into_os_string()),
            _ => None,
        };
        let f = AuthFile::locate_with(None, env);
        assert_eq!(f.path, run.join("containers/auth.json"));
        assert_eq!(f.fallbacks, vec![home.join(".docker/config.json")]);
        let c = Credentials { username: "u".into(), password: "p".into() };
        AuthFile::at(&home.join(".docker/config.json")).set("r:1", &c).unwrap();
        assert_eq!(f.get("r:1").unwrap(), Some(c.clone()), "the missing XDG file hides docker's");
        let mine = Credentials { username: "mine".into(), password: "x".into() };
        f.set("r:1", &mine).unwrap();
        assert_eq!(f.get("r:1").unwrap(), Some(mine), "the first file wins");
        assert!(AuthFile::locate_with(Some(Path::new("/x")), env).fallbacks.is_empty());
    }

    #[test]
    fn creds_store_is_recognised_under_docker_hubs_legacy_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, r#"{"credsStore":"desktop","auths":{"https://index.docker.io/v1/":{}}}"#).unwrap();
        let e = AuthFile::at(&path).get("docker.io").unwrap_err().to_string();
        assert!(e.contains("credsStore"), "{e}");
        assert_eq!(AuthFile::at(&path).get("quay.io").unwrap(), None);
    }
}
