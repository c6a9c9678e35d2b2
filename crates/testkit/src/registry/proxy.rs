//! A loopback HTTP proxy in front of a registry that the tests steer: Bearer challenges from
//! its own token endpoint, tokens good for a number of requests, blob downloads stalled or cut
//! after a byte budget, blobs or manifests dripped one byte at a time, blob redirects to
//! another host, and a record of every request.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::http::{basic_credentials, header, read_head, respond};

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
            let basic_ok = basic_credentials(&head)
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
