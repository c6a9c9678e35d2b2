//! Image references: `[registry/]repository[:tag][@digest]`, normalized the way Docker does
//! (`busybox` → `docker.io/library/busybox:latest`), with short names resolved through the
//! configuration.

use std::fmt;

use berth_storage::Digest;

use crate::error::{bail, Result};

pub const DOCKER_HUB: &str = "docker.io";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit() {
        return false;
    }
    if !b[b.len() - 1].is_ascii_lowercase() && !b[b.len() - 1].is_ascii_digit() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_registry(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 255
        && r.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'[' | b']'))
}

/// Whether the first path component of a name is a registry host (Docker's rule).
pub fn looks_like_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

impl Reference {
    /// Parses a reference; a name without a registry goes to `default_registry` (and, on
    /// Docker Hub, a one-component name to `library/`). No tag and no digest means `latest`.
    pub fn parse_with(s: &str, default_registry: &str) -> Result<Reference> {
        if s.is_empty() {
            bail!("empty image reference");
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => {
                (n, Some(Digest::parse(d).map_err(|e| crate::Error::msg(format!("reference {s:?}: {e}")))?))
            }
            None => (s, None),
        };
        let (name, tag) = match name.rfind(':') {
            Some(i) if !name[i + 1..].contains('/') => (&name[..i], Some(name[i + 1..].to_string())),
            _ => (name, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                bail!("reference {s:?}: invalid tag {t:?}");
            }
        }
        let (registry, repo) = match name.split_once('/') {
            Some((first, rest)) if looks_like_registry(first) => (first.to_string(), rest.to_string()),
            _ => (default_registry.to_string(), name.to_string()),
        };
        if !valid_registry(&registry) {
            bail!("reference {s:?}: invalid registry {registry:?}");
        }
        let repo = if registry == DOCKER_HUB && !repo.contains('/') { format!("library/{repo}") } else { repo };
        if repo.split('/').any(|c| !valid_component(c)) || repo.len() > 255 {
            bail!("reference {s:?}: invalid repository name {repo:?} (lowercase letters, digits, separators)");
        }
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_string()) } else { tag };
        Ok(Reference { registry, repository: repo, tag, digest })
    }

    pub fn parse(s: &str) -> Result<Reference> {
        Reference::parse_with(s, DOCKER_HUB)
    }

    /// Whether `s` names its registry explicitly.
    pub fn is_qualified(s: &str) -> bool {
        matches!(s.split_once('/'), Some((first, _)) if looks_like_registry(first))
    }

    /// `registry/repository`
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag or digest to ask the registry for.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// `registry/repository:tag` (the name images are stored under), if tagged.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let r = Reference::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "a/b", Some("v1"))
        );
        let r = Reference::parse("localhost/x@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            .unwrap();
        assert_eq!(r.tag, None);
        assert!(r.digest.is_some());
        assert!(Reference::parse("UPPER").is_err());
        assert!(Reference::parse("a/../b").is_err());
        assert!(Reference::parse("x:bad tag").is_err());
        assert_eq!(Reference::parse("user/app:1.0").unwrap().name(), "docker.io/user/app");
    }
}
