//! OCI image-spec and Docker schema2 documents: manifests, indexes / manifest lists, image
//! configs, and platform selection. The raw bytes are what is stored and hashed; these types
//! are only read from them, and every descriptor is validated with its field named in errors.

use std::collections::BTreeMap;

use berth_storage::Digest;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{bail, Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// What we accept from a registry, best first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest, index or config accepted (bytes).
pub const MAX_DOCUMENT: u64 = 8 << 20;

/// Most layers an image may have (overlayfs stacks at most 500 lower directories).
pub const MAX_LAYERS: usize = 500;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// The parts of an image config berth reads. The blob itself is kept verbatim.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
    #[serde(default)]
    pub history: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// A parsed manifest document.
#[allow(clippy::large_enum_variant)]
pub enum Document {
    Manifest(Manifest),
    Index(Index),
}

impl Descriptor {
    pub fn digest(&self, what: &str) -> Result<Digest> {
        Digest::parse(&self.digest).map_err(|e| Error::msg(format!("{what}.digest: {e}")))
    }
    pub fn size(&self, what: &str) -> Result<u64> {
        u64::try_from(self.size).map_err(|_| Error::msg(format!("{what}.size: negative size {}", self.size)))
    }
}

fn is_index_type(t: &str) -> bool {
    t == OCI_INDEX || t == DOCKER_LIST
}

/// Parses a manifest or index. `content_type` is the registry's Content-Type (if any); the
/// document's own mediaType wins when present. `what` names the document in errors.
pub fn parse_document(bytes: &[u8], content_type: Option<&str>, what: &str) -> Result<(Document, String)> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::msg(format!("{what}: invalid JSON: {e}")))?;
    let field = v.get("mediaType").and_then(Value::as_str).map(str::to_string);
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
        .filter(|c| !c.is_empty() && c != "application/json" && c != "text/plain" && c != "application/octet-stream");
    let media_type = field
        .or(ct)
        .or_else(|| if v.get("manifests").is_some() { Some(OCI_INDEX.into()) } else { None })
        .unwrap_or_else(|| OCI_MANIFEST.to_string());
    if media_type == DOCKER_SCHEMA1 || media_type == DOCKER_SCHEMA1_SIGNED || v.get("schemaVersion") == Some(&1.into())
    {
        bail!(
            "{what}: Docker schema1 manifests are not supported (deprecated); push the image again with a current tool"
        );
    }
    if v.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        bail!("{what}: schemaVersion must be 2");
    }
    if is_index_type(&media_type) {
        let idx: Index = serde_json::from_value(v).map_err(|e| Error::msg(format!("{what}: invalid index: {e}")))?;
        for (i, d) in idx.manifests.iter().enumerate() {
            d.digest(&format!("{what}: manifests[{i}]"))?;
            d.size(&format!("{what}: manifests[{i}]"))?;
        }
        Ok((Document::Index(idx), media_type))
    } else if media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST {
        let m: Manifest =
            serde_json::from_value(v).map_err(|e| Error::msg(format!("{what}: invalid manifest: {e}")))?;
        m.config.digest(&format!("{what}: config"))?;
        m.config.size(&format!("{what}: config"))?;
        let ct = m.config.media_type.as_str();
        if !ct.is_empty() && ct != OCI_CONFIG && ct != DOCKER_CONFIG {
            bail!("{what}: not a container image (config media type {ct:?})");
        }
        if m.layers.len() > MAX_LAYERS {
            bail!("{what}: layers: {} layers, more than the {MAX_LAYERS} berth supports", m.layers.len());
        }
        for (i, l) in m.layers.iter().enumerate() {
            let f = format!("{what}: layers[{i}]");
            l.digest(&f)?;
            l.size(&f)?;
            berth_storage::Compression::from_media_type(&l.media_type)
                .map_err(|e| Error::msg(format!("{f}.mediaType: {e}")))?;
            if l.urls.is_some() {
                bail!("{f}.urls: foreign layers with external URLs are not supported");
            }
        }
        Ok((Document::Manifest(m), media_type))
    } else {
        bail!("{what}: unsupported manifest media type {media_type:?}")
    }
}

pub fn parse_config(bytes: &[u8], what: &str) -> Result<ImageConfig> {
    let c: ImageConfig =
        serde_json::from_slice(bytes).map_err(|e| Error::msg(format!("{what}: invalid image config: {e}")))?;
    if c.rootfs.kind != "layers" {
        bail!("{what}: rootfs.type must be \"layers\", not {:?}", c.rootfs.kind);
    }
    for (i, d) in c.rootfs.diff_ids.iter().enumerate() {
        Digest::parse(d).map_err(|e| Error::msg(format!("{what}: rootfs.diff_ids[{i}]: {e}")))?;
    }
    Ok(c)
}

impl Platform {
    /// The platform of this machine (linux and the Go name of the architecture).
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform { architecture: arch.into(), os: "linux".into(), variant: variant.map(Into::into), os_version: None }
    }

    /// `os/arch[/variant]`
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
                os_version: None,
            }),
            _ => bail!("invalid platform {s:?} (expected os/arch[/variant], e.g. linux/arm64)"),
        }
    }

    /// How well an image for `other` suits this platform: None when it does not run here;
    /// else 0 for the variant wanted, more for a less exact one. A missing variant means v7
    /// for arm and v8 for arm64 (containerd's normalisation); an arm machine runs the older
    /// variants too, the closest first; with no variant wanted (nor implied), any goes, one
    /// without a variant first.
    fn rank(&self, other: &Platform) -> Option<u32> {
        if self.os != other.os || self.architecture != other.architecture {
            return None;
        }
        let normalized = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", None) => Some("v8".to_string()),
            ("arm", None) => Some("v7".to_string()),
            (_, v) => v.map(str::to_string),
        };
        let (want, have) = (normalized(self), normalized(other));
        let number = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
        match (&want, &have) {
            (w, h) if w == h => Some(0),
            (None, Some(_)) => Some(1),
            (Some(w), Some(h)) if self.architecture == "arm" => {
                let (w, h) = (number(w)?, number(h)?);
                (h < w).then(|| w - h)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// How deep indexes may nest below the one selected from (the image-spec says nested
/// indexes SHOULD be supported; a chain longer than this is refused).
pub const MAX_INDEX_DEPTH: usize = 8;

/// How many nested indexes one selection may read (each is a request to the registry).
pub const MAX_NESTED_INDEXES: usize = 64;

/// Reads a nested index listed by `descriptor`, whose digest is `digest`: its bytes, checked
/// against the digest by the reader (a registry fetch by digest, the content store).
pub type FetchIndex<'a> = dyn FnMut(&Descriptor, &Digest) -> Result<Vec<u8>> + 'a;

/// Picks the manifest for `want` from the index `top` (whose digest is `top_digest`) and
/// the indexes it lists, followed depth-first in document order: the best variant (see
/// `Platform::rank`), the first met among equals. A nested index whose descriptor names
/// another platform is not read. An index that lists one of the indexes it is listed by (a
/// loop), a chain deeper than `MAX_INDEX_DEPTH` or more than `MAX_NESTED_INDEXES` nested
/// indexes are refused, saying which.
pub fn select_manifest(
    top: &Index,
    top_digest: &Digest,
    want: &Platform,
    what: &str,
    fetch: &mut FetchIndex,
) -> Result<Descriptor> {
    let mut s = Selection {
        want,
        what,
        fetch,
        path: vec![top_digest.clone()],
        searched: std::collections::HashSet::new(),
        read: 0,
        available: Vec::new(),
    };
    if let Some((_, d)) = s.search(top)? {
        return Ok(d);
    }
    let mut available: Vec<String> = Vec::new();
    for p in s.available {
        if !available.contains(&p) {
            available.push(p);
        }
    }
    bail!(
        NotFound,
        "{what}: no image for platform {want} (available: {})",
        if available.is_empty() { "none".into() } else { available.join(", ") }
    )
}

/// Picks the manifest for `want` from an index without reading nested ones (an index listed
/// is an error): see `select_manifest`.
pub fn select_platform(idx: &Index, want: &Platform, what: &str) -> Result<Descriptor> {
    let top = Digest::of(b"");
    select_manifest(idx, &top, want, what, &mut |_, d| bail!("{what}: nested index {d} is not read here"))
}

struct Selection<'a, 'f> {
    want: &'a Platform,
    what: &'a str,
    fetch: &'a mut FetchIndex<'f>,
    /// The indexes from the top one to the one being searched.
    path: Vec<Digest>,
    /// Nested indexes already searched (listed twice, or by two indexes).
    searched: std::collections::HashSet<Digest>,
    read: usize,
    available: Vec<String>,
}

impl Selection<'_, '_> {
    fn chain(&self, last: &Digest) -> String {
        self.path.iter().chain(std::iter::once(last)).map(|d| d.to_string()).collect::<Vec<_>>().join(" → ")
    }

    fn search(&mut self, idx: &Index) -> Result<Option<(u32, Descriptor)>> {
        let mut best: Option<(u32, Descriptor)> = None;
        let consider = |rank: u32, d: &Descriptor, best: &mut Option<(u32, Descriptor)>| {
            if best.as_ref().map(|(b, _)| rank < *b).unwrap_or(true) {
                *best = Some((rank, d.clone()));
            }
        };
        for (i, d) in idx.manifests.iter().enumerate() {
            if is_index_type(&d.media_type) {
                if let Some(p) = &d.platform {
                    self.available.push(p.to_string());
                    if self.want.rank(p).is_none() {
                        continue;
                    }
                }
                let here = self.path.last().cloned().expect("the path starts with the top index");
                let digest = d.digest(&format!("{}: index {here}: manifests[{i}]", self.what))?;
                if let Some(at) = self.path.iter().position(|x| *x == digest) {
                    let cycle = self.path[at..].iter().chain(std::iter::once(&digest));
                    bail!(
                        "{}: index loop: {}",
                        self.what,
                        cycle.map(|d| d.to_string()).collect::<Vec<_>>().join(" → ")
                    );
                }
                if self.path.len() > MAX_INDEX_DEPTH {
                    bail!("{}: indexes nested more than {MAX_INDEX_DEPTH} deep: {}", self.what, self.chain(&digest));
                }
                if !self.searched.insert(digest.clone()) {
                    continue;
                }
                self.read += 1;
                if self.read > MAX_NESTED_INDEXES {
                    bail!("{}: more than {MAX_NESTED_INDEXES} nested indexes to read", self.what);
                }
                let w = format!("{}: nested index {digest}", self.what);
                let bytes = (self.fetch)(d, &digest)?;
                if bytes.len() as u64 != d.size(&w)? {
                    bail!(
                        DataLoss,
                        "{w}: size mismatch with index {here} ({} bytes, listed as {})",
                        bytes.len(),
                        d.size
                    );
                }
                let Document::Index(inner) = parse_document(&bytes, Some(&d.media_type), &w)?.0 else {
                    bail!("{w}: listed as an index by {here}, but it is an image manifest");
                };
                self.path.push(digest);
                let found = self.search(&inner)?;
                self.path.pop();
                if let Some((rank, d)) = found {
                    if rank == 0 {
                        return Ok(Some((0, d)));
                    }
                    consider(rank, &d, &mut best);
                }
            } else if d.media_type == OCI_MANIFEST || d.media_type == DOCKER_MANIFEST || d.media_type.is_empty() {
                let Some(p) = &d.platform else { continue };
                self.available.push(p.to_string());
                if let Some(rank) = self.want.rank(p) {
                    if rank == 0 {
                        return Ok(Some((0, d.clone())));
                    }
                    consider(rank, d, &mut best);
                }
            }
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_documents_naming_the_field() {
        let bad = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:1","size":1},"layers":[]}"#;
        let e = parse_document(bad, None, "manifest m").err().unwrap().to_string();
        assert!(e.contains("config.digest"), "{e}");
        let s1 = br#"{"schemaVersion":1,"name":"x"}"#;
        assert!(parse_document(s1, None, "m").err().unwrap().to_string().contains("schema1"));
    }

    #[test]
    fn platform_selection() {
        let d = |arch: &str, variant: Option<&str>| Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
                os_version: None,
            }),
            annotations: None,
            urls: None,
        };
        let idx = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![d("arm", Some("v6")), d("arm", Some("v7")), d("amd64", None)],
        };
        assert_eq!(
            select_platform(&idx, &Platform::parse("linux/arm/v7").unwrap(), "i")
                .unwrap()
                .platform
                .as_ref()
                .unwrap()
                .variant
                .as_deref(),
            Some("v7")
        );
        assert_eq!(
            select_platform(&idx, &Platform::parse("linux/amd64").unwrap(), "i")
                .unwrap()
                .platform
                .as_ref()
                .unwrap()
                .architecture,
            "amd64"
        );
        assert!(select_platform(&idx, &Platform::parse("linux/s390x").unwrap(), "i")
            .unwrap_err()
            .to_string()
            .contains("available"));
        // No variant asked: arm means v7 (as containerd normalises it), whatever the order.
        let variant = |idx: &Index, want: &str| {
            select_platform(idx, &Platform::parse(want).unwrap(), "i").ok().and_then(|d| d.platform.clone()?.variant)
        };
        let arm = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![d("arm", Some("v5")), d("arm", Some("v6")), d("arm", Some("v7"))],
        };
        assert_eq!(variant(&arm, "linux/arm").as_deref(), Some("v7"));
        // A v7 machine runs v6 and v5 images, the newest first; a v6 one not v7.
        let older = Index { manifests: vec![d("arm", Some("v5")), d("arm", Some("v6"))], ..arm.clone() };
        assert_eq!(variant(&older, "linux/arm/v7").as_deref(), Some("v6"));
        let newer = Index { manifests: vec![d("arm", Some("v7"))], ..arm.clone() };
        assert!(variant(&newer, "linux/arm/v6").is_none());
        // arm64's variant is v8 whether written or not.
        let a64 = Index { manifests: vec![d("arm64", None)], ..arm.clone() };
        assert!(select_platform(&a64, &Platform::parse("linux/arm64/v8").unwrap(), "i").is_ok());
    }

    #[test]
    fn artifacts_are_not_container_images() {
        let helm = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0}]}"#;
        let e = parse_document(helm, None, "manifest m").err().unwrap().to_string();
        assert!(
            e.contains(
                "manifest m: not a container image (config media type \"application/vnd.cncf.helm.config.v1+json\")"
            ),
            "{e}"
        );
    }

    fn manifest_desc(arch: &str, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32)),
            size: 1,
            platform: Some(Platform::parse(&format!("linux/{arch}")).unwrap()),
            annotations: None,
            urls: None,
        }
    }

    /// An index document listing `entries`, and a descriptor of it (with `platform`).
    fn index_of(entries: &[Descriptor], platform: Option<&str>) -> (Vec<u8>, Descriptor) {
        let bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
        }))
        .unwrap();
        let d = Descriptor {
            media_type: OCI_INDEX.into(),
            digest: Digest::of(&bytes).to_string(),
            size: bytes.len() as i64,
            platform: platform.map(|p| Platform::parse(p).unwrap()),
            annotations: None,
            urls: None,
        };
        (bytes, d)
    }

    fn parse_index(bytes: &[u8]) -> Index {
        match parse_document(bytes, None, "t").unwrap().0 {
            Document::Index(i) => i,
            Document::Manifest(_) => panic!("not an index"),
        }
    }

    /// Selects from `top` with the documents of `blobs` (looked up by digest, unverified).
    fn select_from(top: &[u8], blobs: &[Vec<u8>], want: &str) -> (Result<Descriptor>, Vec<Digest>) {
        let mut read = Vec::new();
        let mut fetch = |_: &Descriptor, d: &Digest| -> Result<Vec<u8>> {
            read.push(d.clone());
            blobs.iter().find(|b| Digest::of(b) == *d).cloned().ok_or_else(|| Error::msg(format!("no blob {d}")))
        };
        let r = select_manifest(
            &parse_index(top),
            &Digest::of(top),
            &Platform::parse(want).unwrap(),
            "index t",
            &mut fetch,
        );
        (r, read)
    }

    #[test]
    fn nested_indexes_are_followed() {
        let (amd, arm) = (manifest_desc("amd64", 1), manifest_desc("arm64", 2));
        let (inner, inner_d) = index_of(&[arm.clone(), amd.clone()], Some("linux/amd64"));
        let (arm_only, arm_only_d) = index_of(std::slice::from_ref(&arm), Some("linux/arm64"));
        // The arm64 index is not read for amd64; an index listed twice is read once.
        let (top, _) = index_of(&[arm_only_d, inner_d.clone(), inner_d.clone()], None);
        let (got, read) = select_from(&top, &[inner.clone(), arm_only.clone()], "linux/amd64");
        assert_eq!(got.unwrap(), amd);
        assert_eq!(read, vec![Digest::of(&inner)]);
        // Two levels, with no platform on the descriptors of the indexes.
        let (inner2, inner2_d) = index_of(&[arm.clone(), amd.clone()], None);
        let (mid, mid_d) = index_of(&[inner2_d], None);
        let (top, _) = index_of(&[mid_d], None);
        assert_eq!(select_from(&top, &[mid.clone(), inner2.clone()], "linux/arm64").0.unwrap(), arm);
        let err = select_from(&top, &[mid, inner2], "linux/s390x").0.unwrap_err().to_string();
        assert!(err.contains("no image for platform linux/s390x (available: linux/arm64, linux/amd64)"), "{err}");
    }

    #[test]
    fn nested_indexes_deeper_than_the_limit_are_refused() {
        let mut blobs = Vec::new();
        let (mut bytes, mut d) = index_of(&[manifest_desc("amd64", 1)], Some("linux/amd64"));
        for _ in 0..MAX_INDEX_DEPTH {
            blobs.push(bytes);
            (bytes, d) = index_of(&[d], Some("linux/amd64"));
        }
        // MAX_INDEX_DEPTH levels below the top one: followed.
        assert_eq!(select_from(&bytes, &blobs, "linux/amd64").0.unwrap(), manifest_desc("amd64", 1));
        blobs.push(bytes);
        let (top, _) = index_of(&[d], None);
        let err = select_from(&top, &blobs, "linux/amd64").0.unwrap_err().to_string();
        assert!(err.contains(&format!("index t: indexes nested more than {MAX_INDEX_DEPTH} deep: sha256:")), "{err}");
    }

    #[test]
    fn index_loops_are_refused() {
        // Content addressing makes a loop impossible to build honestly; a reader that does
        // not verify digests (as this test's) must still not recurse forever.
        let top_digest = Digest::of(b"the top index");
        let back = Descriptor {
            media_type: OCI_INDEX.into(),
            digest: top_digest.to_string(),
            size: 1,
            platform: None,
            annotations: None,
            urls: None,
        };
        let (inner, inner_d) = index_of(&[back], None);
        let (top, _) = index_of(&[inner_d], None);
        let mut fetch = |_: &Descriptor, _: &Digest| -> Result<Vec<u8>> { Ok(inner.clone()) };
        let err = select_manifest(&parse_index(&top), &top_digest, &Platform::host(), "index t", &mut fetch)
            .unwrap_err()
            .to_string();
        let want = format!("index t: index loop: {top_digest} → {} → {top_digest}", Digest::of(&inner));
        assert!(err.contains(&want), "{err}");
    }
}
