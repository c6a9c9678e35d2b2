//! An OCI distribution client over ureq (blocking; one thread per concurrent download):
//! manifests and blobs, anonymous / Bearer-token / basic authentication, retries with
//! backoff, resumable blob streams that fail clearly when a transfer stalls, and the push
//! side (existence checks, cross-repository mounts, monolithic uploads, manifest PUT).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Mutex;
use std::time::Duration;

use berth_storage::Digest;
use serde_json::Value;

use crate::auth::{parse_challenges, Credentials};
use crate::config::Config;
use crate::error::{bail, Error, Result};
use crate::manifest::{ACCEPT, MAX_DOCUMENT};

pub struct Client {
    agent: ureq::Agent,
    /// The registry as named in references (used for credentials and errors).
    pub registry: String,
    /// scheme://host of the endpoint actually contacted (a mirror, or the registry).
    base: Mutex<String>,
    /// Plain HTTP may be tried after HTTPS failed (insecure and loopback registries); set to
    /// false once a scheme answered.
    http_fallback: Mutex<bool>,
    host: String,
    creds: Option<Credentials>,
    scopes: Vec<String>,
    auth: Mutex<Option<String>>,
    retries: u32,
    stall: Duration,
}

/// A fetched manifest or index.
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub digest: Digest,
}

fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split(['/', '?']).next().unwrap_or("")
}

/// `scheme://host[:port]` of an absolute URL.
fn origin_of(url: &str) -> &str {
    let Some(i) = url.find("://") else { return "" };
    let end = url[i + 3..].find(['/', '?']).map(|e| i + 3 + e).unwrap_or(url.len());
    &url[..end]
}

/// The absolute URL a `Location` header of a response to `current` points to.
fn resolve_location(current: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        loc.to_string()
    } else if let Some(rest) = loc.strip_prefix("//") {
        format!("{}://{rest}", current.split("://").next().unwrap_or("https"))
    } else if loc.starts_with('/') {
        format!("{}{loc}", origin_of(current))
    } else {
        let path = current.split(['?', '#']).next().unwrap_or(current);
        let dir = &path[..path.rfind('/').map(|i| i + 1).unwrap_or(path.len())];
        format!("{dir}{loc}")
    }
}

/// The message of a distribution-spec error body, if any.
fn error_body(resp: ureq::Response) -> String {
    let mut body = Vec::new();
    let _ = resp.into_reader().take(64 * 1024).read_to_end(&mut body);
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        if let Some(errs) = v.get("errors").and_then(Value::as_array) {
            let parts: Vec<String> = errs
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.get("code").and_then(Value::as_str).unwrap_or("?"),
                        e.get("message").and_then(Value::as_str).unwrap_or("")
                    )
                })
                .collect();
            return parts.join("; ");
        }
    }
    String::from_utf8_lossy(&body).trim().chars().take(200).collect()
}

fn is_stall(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
        || e.to_string().contains("timed out")
        || e.get_ref().map(|i| i.to_string().contains("timed out")).unwrap_or(false)
}

pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8], &'a str),
    /// `len` bytes from a reader opened anew for each attempt: an upload is sent again after
    /// a 401 (a token that expired during a push) with the new credentials.
    Reopen(&'a dyn Fn() -> io::Result<Box<dyn Read>>, u64),
}

impl Client {
    /// A client for `registry` through `endpoint` (the registry itself or a mirror), asking
    /// for tokens with `scopes` (e.g. `repository:library/busybox:pull`).
    pub fn new(
        config: &Config,
        registry: &str,
        endpoint: &str,
        creds: Option<Credentials>,
        scopes: Vec<String>,
    ) -> Client {
        let stall = config.stall_timeout();
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(stall)
            .timeout_write(stall)
            .redirects(0)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build();
        let host = if endpoint == "docker.io" { "registry-1.docker.io".to_string() } else { endpoint.to_string() };
        Client {
            agent,
            registry: registry.to_string(),
            base: Mutex::new(format!("https://{host}")),
            http_fallback: Mutex::new(config.is_insecure(endpoint)),
            host,
            creds,
            scopes,
            auth: Mutex::new(None),
            retries: config.registries.retries,
            stall,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.host
    }

    fn url(&self, path: &str) -> String {
        let base = self.base.lock().unwrap().clone();
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else if path.starts_with('/') {
            format!("{base}{path}")
        } else {
            format!("{base}/{path}")
        }
    }

    /// After an HTTPS transport failure on an insecure or loopback registry: switch to plain
    /// HTTP (once). Returns the new URL for `url`, or None when there is no fallback.
    fn fall_back_to_http(&self, url: &str) -> Option<String> {
        let mut fb = self.http_fallback.lock().unwrap();
        if !*fb || !url.starts_with("https://") || host_of(url) != self.host {
            return None;
        }
        *fb = false;
        *self.base.lock().unwrap() = format!("http://{}", self.host);
        Some(format!("http://{}", &url["https://".len()..]))
    }

    fn scheme_settled(&self) {
        *self.http_fallback.lock().unwrap() = false;
    }

    /// Sends a request, authenticating on 401, following redirects and retrying transport
    /// errors and 5xx/429 with backoff when `body` can be sent again.
    ///
    /// Credentials stay with the registry: the Authorization header goes only to the
    /// registry's own origin (scheme and host, as contacted), a redirect from HTTPS to plain
    /// HTTP is refused, and a 401 from anywhere else (a host the registry redirected to) is
    /// an error, never a reason to send credentials to the token realm that host names.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> Result<ureq::Response> {
        self.send_accepting(method, path, headers, body, &[])
    }

    /// `send`, with the error statuses in `accept` returned as responses (a 404 that answers
    /// a question).
    pub fn send_accepting(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
        accept: &[u16],
    ) -> Result<ureq::Response> {
        let mut url = self.url(path);
        let mut authed_retry = false;
        let mut attempt = 0u32;
        let mut redirects = 0;
        let mut https_error: Option<String> = None;
        // Transport errors and 5xx are retried for small requests; an upload is sent again
        // only after a 401 (the registry may have kept part of it).
        let replayable = !matches!(body, Body::Reopen(..));
        loop {
            let what = format!("registry {}: {method} {}", self.registry, url.split('?').next().unwrap_or(&url));
            let mut req = self.agent.request(method, &url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            let own = origin_of(&url) == self.base.lock().unwrap().as_str();
            if own {
                if let Some(a) = self.auth.lock().unwrap().clone() {
                    req = req.set("Authorization", &a);
                }
            }
            let res = match &body {
                Body::Empty => req.call(),
                Body::Bytes(b, ct) => req.set("Content-Type", ct).send_bytes(b),
                Body::Reopen(open, len) => {
                    let r = open().map_err(|e| Error::msg(format!("{what}: {e}")))?;
                    req.set("Content-Type", "application/octet-stream").set("Content-Length", &len.to_string()).send(r)
                }
            };
            if let Err(ureq::Error::Transport(t)) = &res {
                if let Some(u) = self.fall_back_to_http(&url) {
                    https_error = Some(t.to_string());
                    url = u;
                    continue;
                }
            } else {
                self.scheme_settled();
            }
            match res {
                Ok(resp) if (300..400).contains(&resp.status()) && resp.status() != 304 => {
                    let Some(loc) = resp.header("Location").map(str::to_string) else {
                        bail!("{what}: redirect {} without a Location", resp.status());
                    };
                    redirects += 1;
                    if redirects > 5 {
                        bail!("{what}: too many redirects");
                    }
                    let next = resolve_location(&url, &loc);
                    if url.starts_with("https://") && !next.starts_with("https://") {
                        bail!("{what}: refusing to follow a redirect from HTTPS to plain HTTP ({next})");
                    }
                    url = next;
                }
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if !own => {
                    let _ = error_body(resp);
                    bail!(
                        "{what}: 401 from {}, where the registry redirected the request: berth answers only the registry's own authentication challenges",
                        origin_of(&url)
                    );
                }
                Err(ureq::Error::Status(401, resp)) if !authed_retry => {
                    authed_retry = true;
                    let challenge = resp.header("WWW-Authenticate").unwrap_or("").to_string();
                    let _ = error_body(resp);
                    self.authenticate(&challenge)?;
                }
                Err(ureq::Error::Status(code, resp)) if accept.contains(&code) => return Ok(resp),
                Err(ureq::Error::Status(code, resp))
                    if (code == 429 || code >= 500) && replayable && attempt < self.retries =>
                {
                    let _ = error_body(resp);
                    attempt += 1;
                    backoff(attempt);
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let msg = error_body(resp);
                    let hint = if code == 401 || code == 403 {
                        if self.creds.is_some() {
                            " (credentials rejected)"
                        } else {
                            " (authentication required: berth login)"
                        }
                    } else {
                        ""
                    };
                    match &https_error {
                        Some(h) => bail!("{what}: {code} {msg}{hint} (after HTTPS failed: {h})"),
                        None => bail!("{what}: {code} {msg}{hint}"),
                    }
                }
                Err(ureq::Error::Transport(t)) if replayable && attempt < self.retries => {
                    let _ = t;
                    attempt += 1;
                    backoff(attempt);
                }
                Err(ureq::Error::Transport(t)) => match &https_error {
                    Some(h) => bail!("{what}: {t} (after HTTPS failed: {h})"),
                    None => bail!("{what}: {t}"),
                },
            }
        }
    }

    /// Handles a 401 challenge: a Bearer token from the realm (with our credentials, if any),
    /// or basic authentication.
    fn authenticate(&self, challenge: &str) -> Result<()> {
        let challenges = parse_challenges(challenge);
        if let Some(b) = challenges.iter().find(|c| c.scheme == "bearer") {
            let token = self.fetch_token(&b.params)?;
            *self.auth.lock().unwrap() = Some(format!("Bearer {token}"));
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let Some(c) = &self.creds else {
                bail!(
                    "registry {}: 401 authentication required (basic): run berth login {}",
                    self.registry,
                    self.registry
                );
            };
            *self.auth.lock().unwrap() = Some(c.basic_header());
            return Ok(());
        }
        bail!("registry {}: unsupported authentication challenge {challenge:?}", self.registry)
    }

    fn fetch_token(&self, params: &BTreeMap<String, String>) -> Result<String> {
        let Some(realm) = params.get("realm") else {
            bail!("registry {}: Bearer challenge without a realm", self.registry);
        };
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            bail!("registry {}: token realm {realm:?} is not an http(s) URL", self.registry);
        }
        if realm.starts_with("http://")
            && !crate::config::is_loopback(host_of(realm))
            && self.base.lock().unwrap().starts_with("https")
        {
            bail!("registry {}: refusing plain-HTTP token realm {realm:?} for a TLS registry", self.registry);
        }
        let mut q = Vec::new();
        if let Some(s) = params.get("service") {
            q.push(format!("service={}", enc(s)));
        }
        let mut scopes: Vec<String> = self.scopes.clone();
        if let Some(s) = params.get("scope") {
            for part in s.split(' ') {
                if !scopes.iter().any(|x| x == part) {
                    scopes.push(part.to_string());
                }
            }
        }
        for s in &scopes {
            q.push(format!("scope={}", enc(s)));
        }
        let url = if q.is_empty() {
            realm.clone()
        } else {
            format!("{realm}{}{}", if realm.contains('?') { "&" } else { "?" }, q.join("&"))
        };
        let mut last = String::new();
        for attempt in 0..=self.retries {
            let mut req = self.agent.get(&url);
            if let Some(c) = &self.creds {
                req = req.set("Authorization", &c.basic_header());
            }
            match req.call() {
                Ok(resp) => {
                    let mut body = Vec::new();
                    resp.into_reader()
                        .take(1 << 20)
                        .read_to_end(&mut body)
                        .map_err(|e| Error::msg(format!("registry {}: token from {realm}: {e}", self.registry)))?;
                    let v: Value = serde_json::from_slice(&body).map_err(|e| {
                        Error::msg(format!("registry {}: token from {realm}: invalid JSON: {e}", self.registry))
                    })?;
                    let token = v.get("token").or_else(|| v.get("access_token")).and_then(Value::as_str);
                    return match token {
                        Some(t) if !t.is_empty() => Ok(t.to_string()),
                        _ => bail!("registry {}: token response from {realm} has no token", self.registry),
                    };
                }
                Err(ureq::Error::Status(code, resp)) if code < 500 => {
                    bail!("registry {}: token request to {realm} failed: {code} {}", self.registry, error_body(resp));
                }
                Err(e) => {
                    last = e.to_string();
                    if attempt < self.retries {
                        backoff(attempt + 1);
                    }
                }
            }
        }
        bail!("registry {}: token request to {realm} failed: {last}", self.registry)
    }

    /// Checks that the registry accepts our credentials (berth login): `GET /v2/` with them,
    /// through whatever authentication the registry asks for. A registry that asks for none
    /// accepts any.
    pub fn check_login(&self) -> Result<()> {
        let resp = self.send("GET", "/v2/", &[], Body::Empty)?;
        let _ = resp.into_string();
        Ok(())
    }

    /// GETs a manifest or index by tag or digest; when `reference` is a digest the content
    /// must match it.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<Fetched> {
        let what = format!("{}/{repo}:{reference}", self.registry);
        let resp =
            self.send("GET", &format!("/v2/{repo}/manifests/{reference}"), &[("Accept", ACCEPT)], Body::Empty)?;
        let content_type = resp.header("Content-Type").map(str::to_string);
        let bytes =
            crate::content::read_all_limited(&mut resp.into_reader(), MAX_DOCUMENT, &format!("manifest {what}"))?;
        let digest = Digest::of(&bytes);
        if reference.starts_with("sha256:") && digest.as_str() != reference {
            bail!("manifest {what}: digest mismatch: the registry sent content hashing to {digest}");
        }
        Ok(Fetched { bytes, content_type, digest })
    }

    /// GETs a small blob (a config) and verifies it.
    pub fn get_small_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<Vec<u8>> {
        if size > MAX_DOCUMENT {
            bail!("blob {digest}: {size} bytes is too large for an image config");
        }
        let mut s = self.blob_stream(repo, digest, 0, size);
        let mut out = Vec::new();
        (&mut s).take(size + 1).read_to_end(&mut out).map_err(|e| Error::msg(e.to_string()))?;
        if out.len() as u64 != size {
            bail!("blob {digest}: size mismatch: expected {size} bytes, got {}", out.len());
        }
        if Digest::of(&out) != *digest {
            bail!("blob {digest}: digest mismatch: the registry sent content hashing to {}", Digest::of(&out));
        }
        Ok(out)
    }

    /// A reader of blob `digest` from byte `offset` that reconnects (with a Range request) on
    /// errors and stalls, up to the configured retries.
    pub fn blob_stream<'a>(&'a self, repo: &str, digest: &Digest, offset: u64, size: u64) -> BlobStream<'a> {
        BlobStream {
            client: self,
            path: format!("/v2/{repo}/blobs/{digest}"),
            digest: digest.clone(),
            offset,
            size,
            inner: None,
            failures: 0,
            dead: None,
        }
    }

    pub fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let resp = self.send_accepting("HEAD", &format!("/v2/{repo}/blobs/{digest}"), &[], Body::Empty, &[404])?;
        Ok(resp.status() != 404)
    }

    /// Tries a cross-repository mount of `digest` from `from`; returns None when mounted,
    /// or the upload session location the registry opened instead.
    pub fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<Option<String>> {
        let path = format!("/v2/{repo}/blobs/uploads/?mount={}&from={}", enc(digest.as_str()), enc(from));
        let resp = self.send("POST", &path, &[], Body::Bytes(&[], "application/octet-stream"))?;
        let status = resp.status();
        let loc = resp.header("Location").map(str::to_string);
        let _ = resp.into_string();
        match status {
            201 => Ok(None),
            202 => loc
                .map(Some)
                .ok_or_else(|| Error::msg(format!("registry {}: upload without a Location", self.registry))),
            s => bail!("registry {}: unexpected status {s} for a blob mount", self.registry),
        }
    }

    pub fn start_upload(&self, repo: &str) -> Result<String> {
        let resp = self.send(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            Body::Bytes(&[], "application/octet-stream"),
        )?;
        let loc = resp.header("Location").map(str::to_string);
        let _ = resp.into_string();
        loc.ok_or_else(|| Error::msg(format!("registry {}: upload without a Location", self.registry)))
    }

    /// Uploads a blob monolithically to an upload session; `open` gives its content (again,
    /// if the registry asks for authentication once it has been sent).
    pub fn finish_upload(
        &self,
        location: &str,
        digest: &Digest,
        open: &dyn Fn() -> io::Result<Box<dyn Read>>,
        size: u64,
    ) -> Result<()> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={}", enc(digest.as_str()));
        let resp = self.send("PUT", &url, &[], Body::Reopen(open, size))?;
        if resp.status() != 201 && resp.status() != 204 {
            bail!("registry {}: upload of {digest}: unexpected status {}", self.registry, resp.status());
        }
        Ok(())
    }

    pub fn put_manifest(&self, repo: &str, reference: &str, bytes: &[u8], media_type: &str) -> Result<()> {
        let resp =
            self.send("PUT", &format!("/v2/{repo}/manifests/{reference}"), &[], Body::Bytes(bytes, media_type))?;
        if let Some(d) = resp.header("Docker-Content-Digest") {
            let ours = Digest::of(bytes);
            if d != ours.as_str() {
                bail!("registry {}: stored the manifest as {d}, expected {ours}", self.registry);
            }
        }
        Ok(())
    }
}

fn backoff(attempt: u32) {
    let ms = (250u64 << attempt.min(5)).min(5000);
    std::thread::sleep(Duration::from_millis(ms));
}

pub struct BlobStream<'a> {
    client: &'a Client,
    path: String,
    digest: Digest,
    pub offset: u64,
    size: u64,
    inner: Option<Box<dyn Read + Send + Sync>>,
    failures: u32,
    /// Set once the retries are used up: later reads fail at once with the same error.
    dead: Option<String>,
}

impl BlobStream<'_> {
    fn open(&mut self) -> Result<()> {
        let range = format!("bytes={}-", self.offset);
        let headers: Vec<(&str, &str)> = if self.offset > 0 { vec![("Range", range.as_str())] } else { Vec::new() };
        let resp = self.client.send("GET", &self.path, &headers, Body::Empty)?;
        let status = resp.status();
        let mut r = resp.into_reader();
        if self.offset > 0 && status == 200 {
            // No range support: skip what we already have.
            let skipped = io::copy(&mut (&mut r).take(self.offset), &mut io::sink())?;
            if skipped != self.offset {
                bail!("blob {}: the registry sent fewer bytes than before", self.digest);
            }
        }
        self.inner = Some(r);
        Ok(())
    }

    fn fail(&mut self, e: impl std::fmt::Display, stalled: bool) -> io::Error {
        let why =
            if stalled { format!("stalled: no data for {}s", self.client.stall.as_secs()) } else { e.to_string() };
        io::Error::other(format!(
            "download of blob {} from {} failed at byte {} of {} after {} attempts: {why}",
            self.digest, self.client.registry, self.offset, self.size, self.failures
        ))
    }
}

impl Read for BlobStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(d) = &self.dead {
            return Err(io::Error::other(d.clone()));
        }
        loop {
            if self.offset >= self.size {
                return Ok(0);
            }
            if self.inner.is_none() {
                if let Err(e) = self.open() {
                    self.failures += 1;
                    if self.failures > self.client.retries {
                        return Err(self.fail(e, false));
                    }
                    backoff(self.failures);
                    continue;
                }
            }
            let want = buf.len().min((self.size - self.offset).min(usize::MAX as u64) as usize);
            match self.inner.as_mut().unwrap().read(&mut buf[..want]) {
                Ok(0) => {
                    // Closed before the declared size: reconnect from here.
                    self.inner = None;
                    self.failures += 1;
                    if self.failures > self.client.retries {
                        return Err(self.fail("connection closed early", false));
                    }
                    backoff(self.failures);
                }
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let stalled = is_stall(&e);
                    self.inner = None;
                    self.failures += 1;
                    if self.failures > self.client.retries {
                        return Err(self.fail(e, stalled));
                    }
                    backoff(self.failures);
                }
            }
        }
    }
}
