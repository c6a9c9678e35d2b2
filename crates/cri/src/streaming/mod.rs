//! berthd's streaming server: exec, attach and port-forward outside gRPC. The CRI's Exec,
//! Attach and PortForward calls return a URL with a single-use token; kubelet (for kubectl)
//! or crictl opens it here and upgrades the connection to SPDY/3.1 (or WebSocket), as the
//! Kubernetes clients speak them. docs/streaming-notes.md gathers the protocols.
//!
//! Plain threads, not the async runtime: each connection has a reader thread (frames in),
//! the session's output is written by the threads that read the process's pipes, and every
//! blocking call has a timeout (the client's idle time, a write that is not taken).

pub mod conn;
pub mod http;
pub mod portforward;
pub mod remotecommand;
pub mod socket;
pub mod spdy;
pub mod tls;
pub mod websocket;

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_engine::exec_stream::ExecStdio;
use berth_engine::Engine;

use conn::Writer;
use http::Refusal;
use remotecommand::{SpdyExec, Target, Version};
use socket::Socket;

/// How long a URL's token is good for.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// The most tokens given out and not yet used.
pub const MAX_TOKENS: usize = 4096;
/// The most connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// How long a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write may wait for a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Kubernetes' default for streams without traffic (clients ping every few seconds).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// What a token was given for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Exec { container: String, cmd: Vec<String>, stdio: ExecStdio },
    Attach { container: String, stdio: ExecStdio },
    PortForward { pod: portforward::PodNetwork },
}

impl Request {
    fn route(&self) -> &'static str {
        match self {
            Request::Exec { .. } => "exec",
            Request::Attach { .. } => "attach",
            Request::PortForward { .. } => "portforward",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub address: IpAddr,
    /// 0: any free port
    pub port: u16,
    pub idle_timeout: Duration,
    /// TLS with this certificate chain and key (PEM files)
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig { address: IpAddr::from([127, 0, 0, 1]), port: 0, idle_timeout: DEFAULT_IDLE_TIMEOUT, tls: None }
    }
}

/// The streaming server: its address and the tokens given out.
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<Engine>,
    tokens: Mutex<HashMap<String, (Request, Instant)>>,
    base: String,
    idle_timeout: Duration,
    connections: AtomicUsize,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Server {
    /// Binds the address and serves it on a thread of its own.
    pub fn start(engine: Arc<Engine>, config: &StreamConfig) -> std::io::Result<Server> {
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls::load(cert, key).map_err(std::io::Error::other)?),
            None => None,
        };
        let listener = TcpListener::bind(SocketAddr::new(config.address, config.port))?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let inner = Arc::new(Inner {
            engine,
            tokens: Mutex::new(HashMap::new()),
            base: format!("{scheme}://{addr}"),
            tls,
            idle_timeout: config.idle_timeout,
            connections: AtomicUsize::new(0),
        });
        let served = inner.clone();
        std::thread::Builder::new().name("berthd-streams".into()).spawn(move || accept_loop(listener, served))?;
        Ok(Server { inner })
    }

    /// `http://ADDRESS:PORT` (`https://` with TLS)
    pub fn base(&self) -> &str {
        &self.inner.base
    }

    /// A URL for `request`, good once, for `TOKEN_TTL`.
    pub fn url(&self, request: Request) -> Result<String, String> {
        let mut tokens = self.inner.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        tokens.retain(|_, (_, t)| now.duration_since(*t) < TOKEN_TTL);
        if tokens.len() >= MAX_TOKENS {
            return Err(format!("{MAX_TOKENS} streaming URLs are outstanding; try again when some are used or expire"));
        }
        let token = new_token();
        let route = request.route();
        tokens.insert(token.clone(), (request, now));
        Ok(format!("{}/{route}/{token}", self.inner.base))
    }
}

/// 32 random bytes, hex: a token cannot be guessed.
fn new_token() -> String {
    berth_engine::random_id()
}

fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        if inner.connections.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            // Answered (plain HTTP only) without holding up the accepting thread.
            if inner.tls.is_none() {
                let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = http::respond(&mut conn, 503, &[], "too many streaming connections\n");
            }
            continue;
        }
        inner.connections.fetch_add(1, Ordering::SeqCst);
        let inner2 = inner.clone();
        let spawned = std::thread::Builder::new().name("berthd-stream".into()).spawn(move || {
            let _ = conn.set_nodelay(true);
            let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
            let sock = match &inner2.tls {
                Some(config) => tls::terminate(conn, config.clone()),
                None => Ok(Socket::tcp(conn)),
            };
            if let Ok(sock) = sock {
                handle(sock, &inner2);
            }
            inner2.connections.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            inner.connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn handle(mut sock: Socket, inner: &Arc<Inner>) {
    let _ = sock.set_read_timeout(Some(HEAD_TIMEOUT));
    let _ = sock.set_write_timeout(Some(WRITE_TIMEOUT));
    let req = match http::read_request(&mut sock) {
        Ok(r) => r,
        Err(r) => return refuse(&mut sock, r, &[]),
    };
    match serve(&mut sock, req, inner) {
        Ok(()) => {}
        Err((r, headers)) => {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            refuse(&mut sock, r, &headers)
        }
    }
}

fn refuse(sock: &mut Socket, r: Refusal, headers: &[(&str, &str)]) {
    let _ = http::respond(sock, r.status, headers, &format!("{}\n", r.message));
}

type Refused = (Refusal, Vec<(&'static str, String)>);

fn refused(status: u16, message: impl Into<String>) -> Refused {
    (Refusal::new(status, message), Vec::new())
}

/// The first protocol of the client's (in its order) that the server speaks.
fn negotiate<T: Copy>(offered: &[&str], supported: &[(&'static str, T)]) -> Option<(&'static str, T)> {
    offered.iter().find_map(|o| supported.iter().find(|(name, _)| name == o).copied())
}

fn serve(sock: &mut Socket, req: http::Request, inner: &Arc<Inner>) -> Result<(), Refused> {
    if req.method != "GET" && req.method != "POST" {
        return Err(refused(405, format!("{}: only GET and POST", req.method)));
    }
    let mut parts = req.path.trim_start_matches('/').splitn(2, '/');
    let (route, token) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    // A token is taken only by a request on its own route; anything else touches nothing.
    let request = {
        let mut tokens = inner.tokens.lock().unwrap_or_else(|p| p.into_inner());
        match tokens.get(token) {
            Some((r, t)) if r.route() == route && t.elapsed() < TOKEN_TTL => tokens.remove(token).map(|(r, _)| r),
            _ => None,
        }
    };
    let Some(request) = request else {
        return Err(refused(404, format!("{}: no such stream (unknown, used or expired token)", req.path)));
    };
    if req.has_token("connection", "upgrade") {
        if req.has_token("upgrade", "spdy/3.1") {
            return serve_spdy(sock, req, request, inner);
        }
        if req.has_token("upgrade", "websocket") {
            return serve_websocket(sock, req, request, inner);
        }
    }
    Err(refused(
        400,
        "the request must upgrade the connection (Connection: Upgrade) to SPDY/3.1 or websocket (Upgrade: SPDY/3.1 or websocket)",
    ))
}

fn serve_spdy(sock: &mut Socket, req: http::Request, request: Request, inner: &Arc<Inner>) -> Result<(), Refused> {
    let offered = req.values("x-stream-protocol-version");
    if offered.is_empty() {
        return Err(refused(400, "X-Stream-Protocol-Version: missing"));
    }
    let supported: Vec<(&'static str, Option<Version>)> = match &request {
        Request::PortForward { .. } => vec![(portforward::PROTOCOL, None)],
        _ => remotecommand::SPDY_VERSIONS.iter().map(|(n, v)| (*n, Some(*v))).collect(),
    };
    let Some((chosen, version)) = negotiate(&offered, &supported) else {
        let accepted = supported.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>().join(", ");
        return Err((
            Refusal::new(403, format!("no protocol in common: offered {offered:?}, served {accepted}")),
            vec![("X-Accepted-Stream-Protocol-Versions", accepted)],
        ));
    };
    http::switching_protocols(
        sock,
        &[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", chosen)],
    )
    .map_err(|e| refused(500, e.to_string()))?;
    let _ = sock.set_read_timeout(Some(inner.idle_timeout));
    let (Ok(out), Ok(shut)) = (sock.try_clone(), sock.try_clone()) else { return Ok(()) };
    let writer = Arc::new(Writer::new(Box::new(out), shut));
    let input = sock.try_clone();
    let Ok(input) = input else { return Ok(()) };
    let (target, stdio) = match request {
        Request::Exec { container, cmd, stdio } => (Target::Exec { container, cmd }, stdio),
        Request::Attach { container, stdio } => (Target::Attach { container }, stdio),
        Request::PortForward { pod } => {
            let mut h = portforward::SpdyPortForward::new(pod, writer.clone());
            conn::serve(input, req.rest, &writer, &mut h);
            writer.close();
            return Ok(());
        }
    };
    let version = version.unwrap_or(Version::V4);
    let mut h = SpdyExec::new(inner.engine.clone(), target, stdio, version, writer.clone(), inner.idle_timeout);
    conn::serve(input, req.rest, &writer, &mut h);
    writer.close();
    let _ = sock.flush();
    Ok(())
}

fn serve_websocket(sock: &mut Socket, req: http::Request, request: Request, inner: &Arc<Inner>) -> Result<(), Refused> {
    use websocket::{WsReader, WsWriter};
    if req.method != "GET" {
        return Err(refused(400, "a WebSocket upgrade is a GET"));
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err((
            Refusal::new(400, "Sec-WebSocket-Version: 13 only"),
            vec![("Sec-WebSocket-Version", "13".into())],
        ));
    }
    let key = req.header("sec-websocket-key").unwrap_or_default();
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key);
    if decoded.map(|k| k.len()) != Ok(16) {
        return Err(refused(400, "Sec-WebSocket-Key: missing or not 16 bytes in base64"));
    }
    let offered = req.values("sec-websocket-protocol");
    let accept = websocket::accept_key(key);
    let mut headers =
        vec![("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept.as_str())];
    let channel_protocol = match &request {
        Request::PortForward { .. } => {
            if !offered.contains(&websocket::SPDY_TUNNEL) {
                return Err(refused(
                    400,
                    format!(
                        "port-forward over WebSocket is served as SPDY inside it: Sec-WebSocket-Protocol must offer {} (offered {offered:?})",
                        websocket::SPDY_TUNNEL
                    ),
                ));
            }
            headers.push(("Sec-WebSocket-Protocol", websocket::SPDY_TUNNEL));
            None
        }
        _ if offered.is_empty() => Some((Version::V1, websocket::Encoding::Binary)),
        _ => {
            let supported: Vec<(&'static str, (Version, websocket::Encoding))> =
                websocket::CHANNEL_PROTOCOLS.iter().map(|(n, v, e)| (*n, (*v, *e))).collect();
            let Some((name, chosen)) = negotiate(&offered, &supported) else {
                let served = supported.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
                return Err(refused(403, format!("no subprotocol in common: offered {offered:?}, served {served}")));
            };
            headers.push(("Sec-WebSocket-Protocol", name));
            Some(chosen)
        }
    };
    http::switching_protocols(sock, &headers).map_err(|e| refused(500, e.to_string()))?;
    let _ = sock.set_read_timeout(Some(inner.idle_timeout));
    let (Ok(out), Ok(input)) = (sock.try_clone(), sock.try_clone()) else { return Ok(()) };
    let writer = Arc::new(WsWriter::new(out));
    let reader = WsReader::new(input, req.rest, writer.clone());
    match (request, channel_protocol) {
        (Request::Exec { container, cmd, stdio }, Some(p)) => {
            websocket::serve_exec(&inner.engine, Target::Exec { container, cmd }, stdio, p, reader, writer);
        }
        (Request::Attach { container, stdio }, Some(p)) => {
            websocket::serve_exec(&inner.engine, Target::Attach { container }, stdio, p, reader, writer);
        }
        (Request::PortForward { pod }, _) => {
            let Ok(shut) = sock.try_clone() else { return Ok(()) };
            let spdy = Arc::new(Writer::new(Box::new(websocket::WsBytes(writer.clone())), shut));
            let mut h = portforward::SpdyPortForward::new(pod, spdy.clone());
            conn::serve(reader, Vec::new(), &spdy, &mut h);
            writer.abort();
        }
        _ => {}
    }
    Ok(())
}

/// A deterministic stream of pseudo-random numbers (xorshift) for the parsers' no-panic tests.
#[cfg(test)]
pub(crate) fn test_random(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
