//! Registry test harness: Debian's `docker-registry` (CNCF distribution) on 127.0.0.1 with a
//! free port and its own storage directory (plain, htpasswd basic auth, TLS, or token
//! authentication against the loopback `TokenServer` here, which signs JWTs with openssl), and a
//! loopback `Proxy` in front of it that the tests steer: it can demand Bearer tokens (issued
//! by its own token endpoint, the flow a registry with a token server uses), stall or cut a
//! blob download after a number of bytes, drip blobs or manifests one byte at a time,
//! redirect blob downloads to another host, and records every request it received.
//!
//! Processes are stopped by pid and reaped on drop; nothing is left running.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    htpasswd: Option<(String, String)>,
    /// Serve HTTPS with this certificate and key.
    tls: Option<(PathBuf, PathBuf)>,
    /// Token authentication: (realm, service, issuer, root certificate bundle).
    token: Option<(String, String, String, PathBuf)>,
}

/// A test certificate authority and a server certificate it signed for IP 127.0.0.1 (made
/// with Debian's openssl). Returns (CA certificate, server certificate, server key).
pub fn make_test_certs(dir: &Path) -> io::Result<(PathBuf, PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")?;
    let steps: Vec<Vec<String>> = vec![
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.crt"),
            "-days",
            "2",
            "-subj",
            "/CN=berth test CA",
        ],
        vec![
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
            "-subj",
            "/CN=127.0.0.1",
        ],
        vec![
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-out",
            &p("server.crt"),
            "-days",
            "2",
            "-extfile",
            &p("san.ext"),
        ],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect();
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("openssl (Debian package openssl): {e}")))?;
        if !out.status.success() {
            return Err(io::Error::other(format!("openssl {}: {}", args[0], String::from_utf8_lossy(&out.stderr))));
        }
    }
    Ok((dir.join("ca.crt"), dir.join("server.crt"), dir.join("server.key")))
}

impl Registry {
    /// Starts a registry storing into `dir/storage`; with `htpasswd`, basic auth is required.
    pub fn start(dir: &Path, htpasswd: Option<(&str, &str)>) -> io::Result<Registry> {
        let mut r = Registry {
            child: None,
            port: free_port()?,
            dir: dir.to_path_buf(),
            htpasswd: htpasswd.map(|(u, p)| (u.to_string(), p.to_string())),
            tls: None,
            token: None,
        };
        r.restart()?;
        Ok(r)
    }

    /// Starts a registry that serves HTTPS only, with `cert` and `key`.
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path) -> io::Result<Registry> {
        let mut r = Registry {
            child: None,
            port: free_port()?,
            dir: dir.to_path_buf(),
            htpasswd: None,
            tls: Some((cert.to_path_buf(), key.to_path_buf())),
            token: None,
        };
        r.restart()?;
        Ok(r)
    }

    /// Starts a registry that accepts only Bearer tokens issued by `tokens` (distribution's
    /// own token authentication: JWTs signed by a key whose certificate it trusts).
    pub fn start_token_auth(dir: &Path, tokens: &TokenServer) -> io::Result<Registry> {
        let mut r = Registry {
            child: None,
            port: free_port()?,
            dir: dir.to_path_buf(),
            htpasswd: None,
            tls: None,
            token: Some((tokens.realm(), tokens.service.clone(), tokens.issuer.clone(), tokens.cert.clone())),
        };
        r.restart()?;
        Ok(r)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.join("storage")
    }

    /// (Re)starts the registry process on the same port and storage.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        std::fs::create_dir_all(self.storage())?;
        let mut auth = String::new();
        if let Some((u, p)) = &self.htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .map_err(|e| io::Error::new(e.kind(), format!("htpasswd (Debian package apache2-utils): {e}")))?;
            if !out.status.success() {
                return Err(io::Error::other(format!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr))));
            }
            std::fs::write(self.dir.join("htpasswd"), out.stdout)?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                self.dir.join("htpasswd").display()
            );
        }
        if let Some((realm, service, issuer, bundle)) = &self.token {
            auth = format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                bundle.display()
            );
        }
        let tls = match &self.tls {
            Some((c, k)) => format!("  tls:\n    certificate: {}\n    key: {}\n", c.display(), k.display()),
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n  secret: berth-test-secret\n{tls}{auth}",
            self.storage().display(),
            self.port
        );
        let cfg = self.dir.join("config.yml");
        std::fs::write(&cfg, config)?;
        let log = std::fs::File::create(self.dir.join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("docker-registry (Debian package docker-registry): {e}")))?;
        self.child = Some(child);
        wait_listening(self.port, Duration::from_secs(30)).map_err(|e| {
            let log = std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
            io::Error::other(format!("docker-registry did not start: {e}\n{log}"))
        })
    }

    /// Stops the registry (SIGTERM, then SIGKILL) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn wait_listening(port: u16, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n");
            let mut buf = [0u8; 12];
            if s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("nothing listening on port {port}")));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// What the proxy does once its blob byte budget is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterBudget {
    /// Hold the connection open without sending anything.
    Stall,
    /// Close the connection.
    Cut,
}

/// Responses the proxy sends one byte at a time (see `Proxy::drip`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drip {
    /// Blob bodies, after their first `after` bytes (the headers come at once).
    Blobs { after: u64 },
    /// Manifest responses, from the first byte of the status line.
    Manifests,
}

#[derive(Default)]
struct ProxyState {
    drip: Mutex<Option<(Drip, Duration)>>,
    requests: Mutex<Vec<String>>,
    /// Blob body bytes still allowed through (u64::MAX: unlimited).
    budget: AtomicU64,
    cut: AtomicBool,
    stop: AtomicBool,
    /// Bearer tokens issued (valid ones).
    tokens: Mutex<Vec<String>>,
    token_requests: Mutex<Vec<String>>,
    bearer: Mutex<Option<BearerPolicy>>,
    stalled: AtomicBool,
    /// Requests each token is good for (0: unlimited), and the requests made with each.
    token_uses: AtomicU64,
    token_used: Mutex<std::collections::HashMap<String, u64>>,
    /// Blob GETs are answered with a redirect to this host:port (as registries send clients
    /// to a CDN or object storage).
    redirect_blobs: Mutex<Option<String>>,
}

#[derive(Clone)]
struct BearerPolicy {
    service: String,
    /// Credentials the token endpoint requires for push scopes (pull is anonymous).
    user: String,
    password: String,
}

/// A loopback HTTP proxy in front of a registry (see the module documentation).
pub struct Proxy {
    pub port: u16,
    state: Arc<ProxyState>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let state = Arc::new(ProxyState { budget: AtomicU64::new(u64::MAX), ..Default::default() });
        let st = state.clone();
        let accept = thread::spawn(move || loop {
            if st.stop.load(Ordering::SeqCst) {
                return;
            }
            match listener.accept() {
                Ok((client, _)) => {
                    let st = st.clone();
                    thread::spawn(move || {
                        let _ = client.set_nonblocking(false);
                        let _ = serve(client, upstream_port, port, &st);
                    });
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        });
        Ok(Proxy { port, state, accept: Some(accept) })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Lets only `bytes` more bytes of blob bodies through, then stalls or cuts.
    pub fn limit_blob_bytes(&self, bytes: u64, after: AfterBudget) {
        self.state.cut.store(after == AfterBudget::Cut, Ordering::SeqCst);
        self.state.stalled.store(false, Ordering::SeqCst);
        self.state.budget.store(bytes, Ordering::SeqCst);
    }

    /// Sends the responses `what` selects one byte every `interval` (None: at full speed
    /// again), as a registry that keeps a connection alive without ever finishing.
    pub fn drip(&self, what: Option<Drip>, interval: Duration) {
        *self.state.drip.lock().unwrap() = what.map(|w| (w, interval));
    }

    /// Removes the limit: stalled transfers continue.
    pub fn unlimited(&self) {
        self.state.budget.store(u64::MAX, Ordering::SeqCst);
    }

    /// Closes the connections that are stalled.
    pub fn cut_stalled(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
    }

    /// Whether a transfer has used up the budget and is being held or was cut.
    pub fn has_stalled(&self) -> bool {
        self.state.stalled.load(Ordering::SeqCst)
    }

    /// Requires `Authorization: Bearer` tokens from the proxy's own token endpoint
    /// (`/token`); push scopes need basic credentials `user`/`password` there.
    pub fn require_bearer(&self, service: &str, user: &str, password: &str) {
        *self.state.bearer.lock().unwrap() =
            Some(BearerPolicy { service: service.into(), user: user.into(), password: password.into() });
    }

    /// Makes every token good for `n` requests only (0: unlimited), as tokens that expire
    /// in the middle of a push.
    pub fn token_uses(&self, n: u64) {
        self.state.token_uses.store(n, Ordering::SeqCst);
    }

    /// Answers blob GETs with `307 Temporary Redirect` to the same path on `addr`
    /// (`host:port`, plain HTTP), or forwards them again with None.
    pub fn redirect_blobs_to(&self, addr: Option<&str>) {
        *self.state.redirect_blobs.lock().unwrap() = addr.map(str::to_string);
    }

    /// Request lines and headers forwarded so far, one string per request.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Query strings the token endpoint received (with whether basic auth was valid).
    pub fn token_requests(&self) -> Vec<String> {
        self.state.token_requests.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.state.cut.store(true, Ordering::SeqCst);
        self.state.budget.store(u64::MAX, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn read_head(r: &mut BufReader<TcpStream>) -> io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Ok(if lines.is_empty() { None } else { Some(lines) });
        }
        let l = l.trim_end_matches(['\r', '\n']).to_string();
        if l.is_empty() {
            return Ok(Some(lines));
        }
        lines.push(l);
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim().eq_ignore_ascii_case(name) {
            Some(v.trim())
        } else {
            None
        }
    })
}

fn respond(c: &mut TcpStream, status: &str, extra: &[String], body: &str) -> io::Result<()> {
    let mut s = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for e in extra {
        s.push_str(e);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.push_str(body);
    c.write_all(s.as_bytes())
}

fn b64decode(s: &str) -> Option<Vec<u8>> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for ch in s.bytes() {
        if ch == b'=' {
            break;
        }
        let v = A.iter().position(|x| *x == ch)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn serve(client: TcpStream, upstream_port: u16, own_port: u16, st: &ProxyState) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let Some(head) = read_head(&mut reader)? else { return Ok(()) };
    let request_line = head[0].clone();
    let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
    let len: usize = header(&head, "Content-Length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    st.requests.lock().unwrap().push(head.join("\n"));

    let policy = st.bearer.lock().unwrap().clone();
    if let Some(p) = &policy {
        if path.starts_with("/token") {
            let basic_ok = header(&head, "Authorization")
                .and_then(|a| a.strip_prefix("Basic "))
                .and_then(b64decode)
                .map(|raw| raw == format!("{}:{}", p.user, p.password).into_bytes())
                .unwrap_or(false);
            let query = path.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default();
            st.token_requests.lock().unwrap().push(format!("{query} basic={basic_ok}"));
            let wants_push = query.contains("push");
            let sent_basic = header(&head, "Authorization").map(|a| a.starts_with("Basic ")).unwrap_or(false);
            if sent_basic && !basic_ok {
                return respond(&mut client, "401 Unauthorized", &[], r#"{"details":"invalid credentials"}"#);
            }
            let service_ok = query.contains(&format!("service={}", p.service));
            if !service_ok || (wants_push && !basic_ok) {
                return respond(&mut client, "401 Unauthorized", &[], r#"{"details":"denied"}"#);
            }
            let token = format!("berth-test-token-{}", st.tokens.lock().unwrap().len() + 1);
            st.tokens.lock().unwrap().push(token.clone());
            return respond(
                &mut client,
                "200 OK",
                &["Content-Type: application/json".into()],
                &format!(r#"{{"token":"{token}","expires_in":300}}"#),
            );
        }
        let token = header(&head, "Authorization").and_then(|a| a.strip_prefix("Bearer "));
        let mut ok = token.map(|t| st.tokens.lock().unwrap().iter().any(|x| x == t)).unwrap_or(false);
        let limit = st.token_uses.load(Ordering::SeqCst);
        if let (true, Some(t), true) = (ok, token, limit > 0) {
            let mut used = st.token_used.lock().unwrap();
            let n = used.entry(t.to_string()).or_insert(0);
            *n += 1;
            ok = *n <= limit;
        }
        if !ok {
            let repo = path.strip_prefix("/v2/").and_then(|p| {
                ["/manifests/", "/blobs/", "/tags/"].iter().find_map(|m| p.find(m).map(|i| p[..i].to_string()))
            });
            let method = request_line.split(' ').next().unwrap_or("GET");
            let action = if method == "GET" || method == "HEAD" { "pull" } else { "pull,push" };
            let scope = repo.map(|r| format!(",scope=\"repository:{r}:{action}\"")).unwrap_or_default();
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{own_port}/token\",service=\"{}\"{scope}",
                p.service
            );
            return respond(
                &mut client,
                "401 Unauthorized",
                &[challenge, "Content-Type: application/json".into()],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
        }
    }

    let is_blob = path.contains("/blobs/sha256:") && request_line.starts_with("GET");
    if let Some(to) = st.redirect_blobs.lock().unwrap().clone().filter(|_| is_blob) {
        return respond(&mut client, "307 Temporary Redirect", &[format!("Location: http://{to}{path}")], "");
    }

    // Forward on a fresh upstream connection, one request per connection.
    let mut up = TcpStream::connect(("127.0.0.1", upstream_port))?;
    let mut out = String::new();
    out.push_str(&request_line);
    out.push_str("\r\n");
    for l in &head[1..] {
        let k = l.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if k == "connection" || (policy.is_some() && k == "authorization") {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    up.write_all(&body)?;
    let mut ur = BufReader::new(up);
    let Some(rhead) = read_head(&mut ur)? else { return Ok(()) };
    let mut rh = String::new();
    for (i, l) in rhead.iter().enumerate() {
        if i > 0 && l.split(':').next().unwrap_or("").trim().eq_ignore_ascii_case("connection") {
            continue;
        }
        rh.push_str(l);
        rh.push_str("\r\n");
    }
    rh.push_str("Connection: close\r\n\r\n");
    let is_manifest = path.contains("/manifests/") && request_line.starts_with("GET");
    let drip = *st.drip.lock().unwrap();
    match drip {
        Some((Drip::Blobs { after }, interval)) if is_blob => {
            client.write_all(rh.as_bytes())?;
            let mut body = Vec::new();
            ur.read_to_end(&mut body)?;
            let at_once = (after as usize).min(body.len());
            client.write_all(&body[..at_once])?;
            return drip_bytes(&mut client, &body[at_once..], interval, st);
        }
        Some((Drip::Manifests, interval)) if is_manifest => {
            let mut all = rh.into_bytes();
            ur.read_to_end(&mut all)?;
            return drip_bytes(&mut client, &all, interval, st);
        }
        _ => {}
    }
    client.write_all(rh.as_bytes())?;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = ur.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        if is_blob {
            loop {
                let budget = st.budget.load(Ordering::SeqCst);
                if budget == u64::MAX {
                    break;
                }
                if budget >= chunk.len() as u64 {
                    st.budget.fetch_sub(chunk.len() as u64, Ordering::SeqCst);
                    break;
                }
                if budget > 0 {
                    st.budget.store(0, Ordering::SeqCst);
                    client.write_all(&chunk[..budget as usize])?;
                    chunk = &chunk[budget as usize..];
                }
                st.stalled.store(true, Ordering::SeqCst);
                if st.cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    return Ok(());
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        client.write_all(chunk)?;
    }
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}

/// Writes `data` one byte every `interval`, until done, the client gone or the proxy stopped.
fn drip_bytes(client: &mut TcpStream, data: &[u8], interval: Duration, st: &ProxyState) -> io::Result<()> {
    for b in data {
        if st.stop.load(Ordering::SeqCst) {
            break;
        }
        client.write_all(std::slice::from_ref(b))?;
        thread::sleep(interval);
    }
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}

/// PUTs a manifest or index document to the plain-HTTP registry at `addr` (`host:port`) as
/// `repo:reference` (a tag or its digest), as a push tool does; skopeo cannot push an index
/// that lists another index. Returns the status line on anything but 201.
pub fn put_manifest(addr: &str, repo: &str, reference: &str, bytes: &[u8], media_type: &str) -> io::Result<()> {
    let mut c = TcpStream::connect(addr)?;
    let head = format!(
        "PUT /v2/{repo}/manifests/{reference} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {media_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        bytes.len()
    );
    c.write_all(head.as_bytes())?;
    c.write_all(bytes)?;
    let mut r = BufReader::new(c);
    let Some(resp) = read_head(&mut r)? else { return Err(io::Error::other("no response to the manifest PUT")) };
    if resp[0].split(' ').nth(1) != Some("201") {
        let mut body = String::new();
        let _ = r.take(4096).read_to_string(&mut body);
        return Err(io::Error::other(format!("PUT {repo}:{reference}: {} {body}", resp[0])));
    }
    Ok(())
}

/// Runs skopeo (Debian's) with the given arguments; errors carry its stderr.
pub fn skopeo(args: &[&str]) -> io::Result<String> {
    let out = Command::new("skopeo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("skopeo (Debian package skopeo): {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!("skopeo {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Pushes the image `tag` of the OCI layout `layout` to `dest` (`host:port/repo:tag`) over
/// plain HTTP; `all` copies every image of an index; `format` "v2s2" converts to Docker
/// schema2.
pub fn skopeo_push(
    layout: &Path,
    tag: &str,
    dest: &str,
    all: bool,
    format: Option<&str>,
    creds: Option<&str>,
) -> io::Result<()> {
    let src = format!("oci:{}:{tag}", layout.display());
    let dst = format!("docker://{dest}");
    let mut args = vec!["copy", "--quiet", "--dest-tls-verify=false"];
    if all {
        args.push("--all");
    }
    if let Some(f) = format {
        args.push("--format");
        args.push(f);
    }
    if let Some(c) = creds {
        args.push("--dest-creds");
        args.push(c);
    }
    args.push(&src);
    args.push(&dst);
    skopeo(&args).map(drop)
}

fn b64(data: &[u8], url: bool) -> String {
    let a: &[u8] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n =
            (chunk[0] as u32) << 16 | (*chunk.get(1).unwrap_or(&0) as u32) << 8 | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(a[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if !url {
                out.push('=');
            }
        }
    }
    out
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> io::Result<Vec<u8>> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("openssl (Debian package openssl): {e}")))?;
    if let Some(data) = input {
        child.stdin.take().unwrap().write_all(data)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr))));
    }
    Ok(out.stdout)
}

#[derive(Default)]
struct TokenLog {
    requests: Vec<String>,
}

/// A token server on loopback, as a registry's authorization service: it issues JWTs (RS256,
/// with the signing certificate in `x5c`) granting the requested scopes — pull to anyone,
/// push only with its basic credentials. Wrong credentials are refused.
pub struct TokenServer {
    pub port: u16,
    pub service: String,
    pub issuer: String,
    /// The signing certificate (the registry's `rootcertbundle`).
    pub cert: PathBuf,
    log: Arc<Mutex<TokenLog>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl TokenServer {
    pub fn start(dir: &Path, user: &str, password: &str) -> io::Result<TokenServer> {
        std::fs::create_dir_all(dir)?;
        let (key, cert) = (dir.join("signing.key"), dir.join("signing.crt"));
        let (k, c) = (key.to_string_lossy().into_owned(), cert.to_string_lossy().into_owned());
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &k,
                "-out",
                &c,
                "-days",
                "2",
                "-subj",
                "/CN=berth test token signer",
            ],
            None,
        )?;
        let der = openssl(&["x509", "-in", &c, "-outform", "DER"], None)?;
        let x5c = b64(&der, false);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let log = Arc::new(Mutex::new(TokenLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (service, issuer) = ("berth-test-registry".to_string(), "berth-test-issuer".to_string());
        let ctx = (log.clone(), stop.clone(), service.clone(), issuer.clone(), user.to_string(), password.to_string());
        let accept = thread::spawn(move || {
            let (log, stop, service, issuer, user, password) = ctx;
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = serve_token(c, &log, &service, &issuer, &user, &password, &k, &x5c);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(TokenServer { port, service, issuer, cert, log, stop, accept: Some(accept) })
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The query strings received, each followed by ` basic=<whether valid credentials came>`.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().requests.clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[allow(clippy::too_many_arguments)]
fn serve_token(
    client: TcpStream,
    log: &Mutex<TokenLog>,
    service: &str,
    issuer: &str,
    user: &str,
    password: &str,
    key: &str,
    x5c: &str,
) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let Some(head) = read_head(&mut reader)? else { return Ok(()) };
    let path = head[0].split(' ').nth(1).unwrap_or("").to_string();
    let query = path.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default();
    let basic = header(&head, "Authorization").and_then(|a| a.strip_prefix("Basic ")).and_then(b64decode);
    let valid = basic.as_deref() == Some(format!("{user}:{password}").as_bytes());
    log.lock().unwrap().requests.push(format!("{query} basic={valid}"));
    if basic.is_some() && !valid {
        return respond(&mut client, "401 Unauthorized", &[], r#"{"details":"invalid credentials"}"#);
    }
    let mut svc = String::new();
    let mut access = Vec::new();
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = url_decode(v);
        match k {
            "service" => svc = v,
            "scope" => {
                // repository:NAME:ACTIONS (NAME may hold no colon in our tests)
                let parts: Vec<&str> = v.splitn(3, ':').collect();
                if parts.len() == 3 {
                    let mut actions: Vec<&str> = parts[2].split(',').filter(|a| *a == "pull" || *a == "push").collect();
                    if !valid {
                        actions.retain(|a| *a == "pull");
                    }
                    access.push(format!(
                        r#"{{"type":"{}","name":"{}","actions":[{}]}}"#,
                        parts[0],
                        parts[1],
                        actions.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(",")
                    ));
                }
            }
            _ => {}
        }
    }
    if svc != service {
        return respond(&mut client, "400 Bad Request", &[], r#"{"details":"unknown service"}"#);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header_json = format!(r#"{{"typ":"JWT","alg":"RS256","x5c":["{x5c}"]}}"#);
    let claims = format!(
        r#"{{"iss":"{issuer}","sub":"{}","aud":"{service}","exp":{},"nbf":{},"iat":{},"jti":"berth-{}","access":[{}]}}"#,
        if valid { user } else { "" },
        now + 300,
        now - 10,
        now,
        now,
        access.join(",")
    );
    let signing_input = format!("{}.{}", b64(header_json.as_bytes(), true), b64(claims.as_bytes(), true));
    let sig = openssl(&["dgst", "-sha256", "-sign", key], Some(signing_input.as_bytes()))?;
    let token = format!("{signing_input}.{}", b64(&sig, true));
    respond(
        &mut client,
        "200 OK",
        &["Content-Type: application/json".into()],
        &format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#),
    )
}
