//! An OCI distribution client over ureq (blocking; one thread per concurrent download):
//! manifests and blobs, anonymous / Bearer-token / basic authentication, retries with
//! backoff, resumable blob streams that fail clearly when a transfer stalls, and the push
//! side (existence checks, cross-repository mounts, monolithic uploads, manifest PUT).
//!
//! Every request but an upload has a deadline, so a registry that answers one byte at a
//! time is cut off: manifests, indexes, configs, tokens and the push side's small requests
//! get `manifest-timeout` seconds in all (ureq's own request timeout, which also bounds the
//! response's headers and body); a blob gets `blob-timeout` seconds plus one second per
//! `min-download-rate` bytes received (see `BlobStream`).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_storage::Digest;
use serde_json::Value;

use crate::auth::{parse_challenges, Credentials};
use crate::config::Config;
use crate::error::{bail, Error, Kind, Result};
use crate::manifest::{ACCEPT, MAX_DOCUMENT};

/// A client of one endpoint. Clones share their state (the scheme settled on, the token).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    /// The registry as named in references (used for credentials and errors).
    pub registry: String,
    /// scheme://host of the endpoint actually contacted (a mirror, or the registry).
    base: Arc<Mutex<String>>,
    /// Plain HTTP may be tried after HTTPS failed (insecure and loopback registries); set to
    /// false once a scheme answered.
    http_fallback: Arc<Mutex<bool>>,
    host: String,
    creds: Option<Credentials>,
    scopes: Vec<String>,
    auth: Arc<Mutex<Option<String>>>,
    retries: u32,
    stall: Duration,
    /// Seconds of `manifest-timeout`, `blob-timeout`, and `min-download-rate` (bytes/s).
    manifest_timeout: Duration,
    blob_timeout: Duration,
    min_rate: u64,
}

/// When a request must be complete, and the setting that says so (for errors).
#[derive(Clone, Debug)]
pub struct Deadline {
    pub at: Instant,
    pub why: String,
}

impl Deadline {
    fn remaining(&self) -> Option<Duration> {
        self.at.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }
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
            base: Arc::new(Mutex::new(format!("https://{host}"))),
            http_fallback: Arc::new(Mutex::new(config.is_insecure(endpoint))),
            host,
            creds,
            scopes,
            auth: Arc::new(Mutex::new(None)),
            retries: config.registries.retries,
            stall,
            manifest_timeout: Duration::from_secs(config.registries.manifest_timeout),
            blob_timeout: Duration::from_secs(config.registries.blob_timeout),
            min_rate: config.registries.min_download_rate,
        }
    }

    /// The deadline of a small request (a manifest, an index, a config, a token, the push
    /// side's checks) starting now.
    pub fn small_deadline(&self) -> Deadline {
        Deadline {
            at: later(Instant::now(), self.manifest_timeout),
            why: format!("registries.manifest-timeout is {}s (berth.toml)", self.manifest_timeout.as_secs()),
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
    /// a question). Uploads have no deadline; any other request the small one.
    pub fn send_accepting(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
        accept: &[u16],
    ) -> Result<ureq::Response> {
        let deadline = (!matches!(body, Body::Reopen(..))).then(|| self.small_deadline());
        self.send_until(method, path, headers, body, accept, deadline.as_ref())
    }

    /// `send_accepting` within `deadline`: every attempt (authentication, redirects and
    /// retries included) and the response's body must be done by then.
    pub fn send_until(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
        accept: &[u16],
        deadline: Option<&Deadline>,
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
            if let Some(d) = deadline {
                let Some(left) = d.remaining() else { bail!("{what}: no complete answer in time: {}", d.why) };
                req = req.timeout(left);
            }
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
                    self.authenticate(&challenge, deadline)?;
                }
                Err(ureq::Error::Status(code, resp)) if accept.contains(&code) => return Ok(resp),
                Err(ureq::Error::Status(code, resp))
                    if (code == 429 || code >= 500) && replayable && attempt < self.retries =>
                {
                    let _ = error_body(resp);
                    attempt += 1;
                    backoff_until(attempt, deadline);
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
                    let text = match &https_error {
                        Some(h) => format!("{what}: {code} {msg}{hint} (after HTTPS failed: {h})"),
                        None => format!("{what}: {code} {msg}{hint}"),
                    };
                    return Err(Error::new(status_kind(code), text));
                }
                Err(ureq::Error::Transport(t)) if deadline.is_some_and(|d| d.remaining().is_none()) => {
                    bail!(
                        DeadlineExceeded,
                        "{what}: no complete answer in time: {} ({t})",
                        deadline.map(|d| d.why.as_str()).unwrap_or("")
                    )
                }
                Err(ureq::Error::Transport(t)) if replayable && attempt < self.retries => {
                    let _ = t;
                    attempt += 1;
                    backoff_until(attempt, deadline);
                }
                Err(ureq::Error::Transport(t)) => match &https_error {
                    Some(h) => bail!(Unavailable, "{what}: {t} (after HTTPS failed: {h})"),
                    None => bail!(Unavailable, "{what}: {t}"),
                },
            }
        }
    }

    /// Handles a 401 challenge: a Bearer token from the realm (with our credentials, if any),
    /// or basic authentication.
    fn authenticate(&self, challenge: &str, deadline: Option<&Deadline>) -> Result<()> {
        let challenges = parse_challenges(challenge);
        if let Some(b) = challenges.iter().find(|c| c.scheme == "bearer") {
            let token = self.fetch_token(&b.params, deadline)?;
            *self.auth.lock().unwrap() = Some(format!("Bearer {token}"));
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let Some(c) = &self.creds else {
                bail!(
                    PermissionDenied,
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

    /// A token from the realm, within `deadline` (or the small one when there is none: an
    /// upload's).
    fn fetch_token(&self, params: &BTreeMap<String, String>, deadline: Option<&Deadline>) -> Result<String> {
        let small = self.small_deadline();
        let deadline = match deadline {
            Some(d) if d.at < small.at => d,
            _ => &small,
        };
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
            let Some(left) = deadline.remaining() else {
                bail!("registry {}: token from {realm}: no complete answer in time: {}", self.registry, deadline.why)
            };
            let mut req = self.agent.get(&url).timeout(left);
            if let Some(c) = &self.creds {
                req = req.set("Authorization", &c.basic_header());
            }
            match req.call() {
                Ok(resp) => {
                    let mut body = Vec::new();
                    resp.into_reader().take(1 << 20).read_to_end(&mut body).map_err(|e| {
                        let late = deadline.remaining().is_none();
                        let e =
                            if late { format!("no complete answer in time: {}", deadline.why) } else { e.to_string() };
                        Error::msg(format!("registry {}: token from {realm}: {e}", self.registry))
                    })?;
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
                    if deadline.remaining().is_none() {
                        bail!(
                            "registry {}: token from {realm}: no complete answer in time: {}",
                            self.registry,
                            deadline.why
                        );
                    }
                    if attempt < self.retries {
                        backoff_until(attempt + 1, Some(deadline));
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
        let deadline = self.small_deadline();
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self.send_until("GET", &path, &[("Accept", ACCEPT)], Body::Empty, &[], Some(&deadline))?;
        let content_type = resp.header("Content-Type").map(str::to_string);
        let bytes =
            crate::content::read_all_limited(&mut resp.into_reader(), MAX_DOCUMENT, &format!("manifest {what}"))
                .map_err(|e| match deadline.remaining() {
                    None => Error::msg(format!("manifest {what}: no complete answer in time: {}", deadline.why)),
                    Some(_) => e,
                })?;
        let digest = Digest::of(&bytes);
        if reference.starts_with("sha256:") && digest.as_str() != reference {
            bail!(DataLoss, "manifest {what}: digest mismatch: the registry sent content hashing to {digest}");
        }
        Ok(Fetched { bytes, content_type, digest })
    }

    /// GETs a small blob (a config) and verifies it.
    pub fn get_small_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<Vec<u8>> {
        if size > MAX_DOCUMENT {
            bail!("blob {digest}: {size} bytes is too large for an image config");
        }
        let mut s = self.blob_stream_until(repo, digest, 0, size, Limit::Fixed(self.small_deadline()));
        let mut out = Vec::new();
        (&mut s).take(size + 1).read_to_end(&mut out).map_err(|e| Error::msg(e.to_string()))?;
        if out.len() as u64 != size {
            bail!(DataLoss, "blob {digest}: size mismatch: expected {size} bytes, got {}", out.len());
        }
        if Digest::of(&out) != *digest {
            bail!(
                DataLoss,
                "blob {digest}: digest mismatch: the registry sent content hashing to {}",
                Digest::of(&out)
            );
        }
        Ok(out)
    }

    /// A reader of blob `digest` from byte `offset` that reconnects (with a Range request) on
    /// errors and stalls, up to the configured retries, and fails once it is too slow: it
    /// gets `blob-timeout` seconds plus one second per `min-download-rate` bytes received.
    pub fn blob_stream(&self, repo: &str, digest: &Digest, offset: u64, size: u64) -> BlobStream {
        let limit = Limit::Rate { base: self.blob_timeout, rate: self.min_rate.max(1) };
        self.blob_stream_until(repo, digest, offset, size, limit)
    }

    fn blob_stream_until(&self, repo: &str, digest: &Digest, offset: u64, size: u64, limit: Limit) -> BlobStream {
        BlobStream {
            client: self.clone(),
            path: format!("/v2/{repo}/blobs/{digest}"),
            digest: digest.clone(),
            offset,
            size,
            started: Instant::now(),
            first: offset,
            limit,
            conn: None,
            pending: Vec::new(),
            used: 0,
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

/// `t + d`, or ten years after `t` when that is further than a clock can count (deadlines
/// from absurd settings).
fn later(t: Instant, d: Duration) -> Instant {
    let cap = Duration::from_secs(10 * 365 * 86400);
    t.checked_add(d.min(cap)).unwrap_or(t)
}

/// Waits before attempt `attempt` (longer each time), never past `deadline`.
fn backoff_until(attempt: u32, deadline: Option<&Deadline>) {
    let mut wait = Duration::from_millis((250u64 << attempt.min(5)).min(5000));
    if let Some(d) = deadline {
        wait = wait.min(d.remaining().unwrap_or_default());
    }
    std::thread::sleep(wait);
}

/// How long a blob transfer may take.
#[derive(Clone, Debug)]
pub enum Limit {
    /// All of it by then (a config: a small document).
    Fixed(Deadline),
    /// `base`, plus one second per `rate` bytes received: a blob of size S is done within
    /// base + S / rate, and a size that the manifest overstates buys no time, since the
    /// deadline moves only with what actually arrives.
    Rate { base: Duration, rate: u64 },
}

/// What a connection's reader thread sends.
enum Msg {
    Data(Vec<u8>),
    /// Bytes read and dropped (a registry without range requests resending the start).
    Skipped,
    End,
    Failed(String),
}

/// A connection being read by its own thread (so a registry that sends nothing, or one
/// byte at a time, is noticed whatever ureq is blocked in). Dropping it tells the thread
/// to stop: it does at its next read, or at the latest deadline the stream could have.
struct Conn {
    rx: Receiver<Msg>,
    cancel: Arc<AtomicBool>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// A blob download (see `Client::blob_stream`). Stalls (no data for `stall-timeout`) and
/// errors reconnect from the current offset up to the configured retries; the deadline
/// ends it at once.
pub struct BlobStream {
    client: Client,
    path: String,
    digest: Digest,
    pub offset: u64,
    size: u64,
    started: Instant,
    /// The offset the stream started at (what was received counts from there).
    first: u64,
    limit: Limit,
    conn: Option<Conn>,
    /// Received and not read yet: `pending[used..]`.
    pending: Vec<u8>,
    used: usize,
    failures: u32,
    /// Set once the retries are used up: later reads fail at once with the same error.
    dead: Option<String>,
}

impl BlobStream {
    /// When the stream must be done, given what it received so far.
    fn deadline(&self) -> Instant {
        match &self.limit {
            Limit::Fixed(d) => d.at,
            Limit::Rate { base, rate } => {
                let got = self.offset.saturating_sub(self.first) as u128;
                let earned = (got * 1_000_000_000 / *rate as u128).min(u64::MAX as u128) as u64;
                later(self.started, *base + Duration::from_nanos(earned))
            }
        }
    }

    /// The latest the deadline can be (the whole blob received): the connection's own.
    fn latest(&self) -> Instant {
        match &self.limit {
            Limit::Fixed(d) => d.at,
            Limit::Rate { base, rate } => {
                later(self.started, *base + Duration::from_secs(self.size.saturating_sub(self.first) / rate + 1))
            }
        }
    }

    fn connect(&mut self) -> io::Result<Conn> {
        let (tx, rx) = mpsc::sync_channel(4);
        let cancel = Arc::new(AtomicBool::new(false));
        let deadline = Deadline {
            at: self.latest(),
            why: format!(
                "the deadline of blob {} (berth.toml: registries.blob-timeout, min-download-rate)",
                self.digest
            ),
        };
        let (client, path, offset, stop) = (self.client.clone(), self.path.clone(), self.offset, cancel.clone());
        let digest = self.digest.clone();
        std::thread::Builder::new()
            .name("berth-blob".into())
            .spawn(move || read_connection(&client, &path, &digest, offset, &deadline, &tx, &stop))
            .map_err(|e| io::Error::other(format!("blob {}: start a download thread: {e}", self.digest)))?;
        Ok(Conn { rx, cancel })
    }

    fn source(&self) -> String {
        if self.client.host == self.client.registry {
            self.client.registry.clone()
        } else {
            format!("{} (through {})", self.client.registry, self.client.host)
        }
    }

    fn fail(&mut self, why: String) -> io::Error {
        let msg = format!(
            "download of blob {} from {} failed at byte {} of {} after {} attempts: {why}",
            self.digest,
            self.source(),
            self.offset,
            self.size,
            self.failures
        );
        self.dead = Some(msg.clone());
        io::Error::other(msg)
    }

    fn too_slow(&mut self) -> io::Error {
        let got = self.offset - self.first;
        let took = self.started.elapsed().as_secs();
        let rule = match &self.limit {
            Limit::Fixed(d) => d.why.clone(),
            Limit::Rate { base, rate } => format!(
                "a blob gets registries.blob-timeout ({}s) plus one second per registries.min-download-rate ({rate}) bytes received (berth.toml)",
                base.as_secs()
            ),
        };
        let msg = format!(
            "download of blob {} from {} exceeded its deadline at byte {} of {}: {got} bytes in {took}s; {rule}",
            self.digest,
            self.source(),
            self.offset,
            self.size
        );
        self.conn = None;
        self.dead = Some(msg.clone());
        io::Error::new(io::ErrorKind::TimedOut, msg)
    }

    /// After a failed connection: another, unless the retries are used up.
    fn retry(&mut self, why: String) -> io::Result<()> {
        self.conn = None;
        self.failures += 1;
        if Instant::now() >= self.deadline() {
            return Err(self.too_slow());
        }
        if self.failures > self.client.retries {
            return Err(self.fail(why));
        }
        let left = self.deadline().saturating_duration_since(Instant::now());
        backoff_until(self.failures, Some(&Deadline { at: Instant::now() + left, why: String::new() }));
        Ok(())
    }
}

/// A connection's thread: GETs the blob from `offset` and sends what comes.
fn read_connection(
    client: &Client,
    path: &str,
    digest: &Digest,
    offset: u64,
    deadline: &Deadline,
    tx: &SyncSender<Msg>,
    cancel: &AtomicBool,
) {
    let range = format!("bytes={offset}-");
    let headers: Vec<(&str, &str)> = if offset > 0 { vec![("Range", range.as_str())] } else { Vec::new() };
    let resp = match client.send_until("GET", path, &headers, Body::Empty, &[], Some(deadline)) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Msg::Failed(e.to_string()));
            return;
        }
    };
    let status = resp.status();
    let mut r = resp.into_reader();
    let mut buf = vec![0u8; 64 << 10];
    // No range support: skip what we already have.
    let mut skip = if offset > 0 && status == 200 { offset } else { 0 };
    loop {
        if cancel.load(Ordering::SeqCst) {
            return;
        }
        let want = if skip > 0 { buf.len().min(skip.min(usize::MAX as u64) as usize) } else { buf.len() };
        let msg = match r.read(&mut buf[..want]) {
            Ok(0) if skip > 0 => Msg::Failed(format!("blob {digest}: the registry sent fewer bytes than before")),
            Ok(0) => Msg::End,
            Ok(n) if skip > 0 => {
                skip -= n as u64;
                Msg::Skipped
            }
            Ok(n) => Msg::Data(buf[..n].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Msg::Failed(e.to_string()),
        };
        let last = matches!(msg, Msg::End | Msg::Failed(_));
        if tx.send(msg).is_err() || last {
            return;
        }
    }
}

impl Read for BlobStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(d) = &self.dead {
            return Err(io::Error::other(d.clone()));
        }
        loop {
            if self.used < self.pending.len() {
                let n = buf.len().min(self.pending.len() - self.used);
                buf[..n].copy_from_slice(&self.pending[self.used..self.used + n]);
                self.used += n;
                self.offset += n as u64;
                return Ok(n);
            }
            if self.offset >= self.size {
                return Ok(0);
            }
            let now = Instant::now();
            let deadline = self.deadline();
            if now >= deadline {
                return Err(self.too_slow());
            }
            if self.conn.is_none() {
                self.conn = Some(self.connect()?);
            }
            let wait = self.client.stall.min(deadline - now);
            let got = self.conn.as_ref().expect("connected").rx.recv_timeout(wait);
            match got {
                Ok(Msg::Data(mut v)) => {
                    // Never past the declared size (the ingest refuses more anyway).
                    v.truncate((self.size - self.offset).min(usize::MAX as u64) as usize);
                    (self.pending, self.used) = (v, 0);
                }
                Ok(Msg::Skipped) => {}
                Ok(Msg::End) => self.retry("connection closed early".into())?,
                Ok(Msg::Failed(e)) => self.retry(e)?,
                Err(RecvTimeoutError::Timeout) if Instant::now() >= self.deadline() => return Err(self.too_slow()),
                Err(RecvTimeoutError::Timeout) => {
                    self.retry(format!("stalled: no data for {}s", self.client.stall.as_secs()))?
                }
                Err(RecvTimeoutError::Disconnected) => self.retry("the download thread ended".into())?,
            }
        }
    }
}
/// The kind of a registry's HTTP error status.
fn status_kind(code: u16) -> Kind {
    match code {
        401 | 403 => Kind::PermissionDenied,
        404 => Kind::NotFound,
        408 | 504 => Kind::DeadlineExceeded,
        429 => Kind::ResourceExhausted,
        400..=499 => Kind::InvalidInput,
        _ => Kind::Unavailable,
    }
}
