//! Exec and attach sessions (Kubernetes' "remotecommand" protocols), independent of the
//! transport: the process's (or container's) output goes to an `Output`, the client's input
//! comes through `Session`, and the outcome is written as the protocol version wants it.
//! `SpdyExec` is the SPDY transport's side; the WebSocket one is in websocket.rs.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_engine::attach::{AttachConn, STDERR, STDOUT};
use berth_engine::exec_stream::{ExecInput, ExecKiller, ExecStdio, Terminal};
use berth_engine::Engine;

use super::conn::{self, header, Writer};
use super::spdy::{goaway, rst, Headers};

/// The remotecommand protocol versions, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `channel.k8s.io`: errors as text
    V1,
    /// `v2.channel.k8s.io`
    V2,
    /// `v3.channel.k8s.io`: a resize stream with a terminal
    V3,
    /// `v4.channel.k8s.io`: the outcome as a Status object
    V4,
    /// `v5.channel.k8s.io`: v4 plus the close signal (WebSocket); over SPDY exactly v4
    V5,
}

/// The versions served over SPDY, as named in `X-Stream-Protocol-Version`.
pub const SPDY_VERSIONS: [(&str, Version); 5] = [
    ("v5.channel.k8s.io", Version::V5),
    ("v4.channel.k8s.io", Version::V4),
    ("v3.channel.k8s.io", Version::V3),
    ("v2.channel.k8s.io", Version::V2),
    ("channel.k8s.io", Version::V1),
];

/// What a session runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Exec { container: String, cmd: Vec<String> },
    Attach { container: String },
}

/// An output stream of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Stdout,
    Stderr,
}

/// Where a session's output goes (a transport's streams or channels).
pub trait Output: Send + Sync + 'static {
    fn write(&self, ch: Channel, data: &[u8]) -> io::Result<()>;
    /// The end of one output stream.
    fn close(&self, ch: Channel);
    /// The session is over: `status` on the error stream (may be empty), then the end of
    /// the connection.
    fn finish(&self, status: &[u8]);
}

/// The outcome as the version writes it on the error stream.
pub fn status_bytes(version: Version, outcome: &Result<i32, String>) -> Vec<u8> {
    let json = version >= Version::V4;
    match outcome {
        Ok(0) if json => br#"{"metadata":{},"status":"Success"}"#.to_vec(),
        Ok(0) => Vec::new(),
        Ok(code) if json => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
        .to_string()
        .into_bytes(),
        Ok(code) => format!("command terminated with non-zero exit code: exit status {code}").into_bytes(),
        Err(e) if json => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {e}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": e}]},
            "code": 500,
        })
        .to_string()
        .into_bytes(),
        Err(e) => format!("Internal error occurred: {e}").into_bytes(),
    }
}

enum Input {
    Exec(ExecInput),
    Attach { conn: Arc<AttachConn>, stdin_once: bool },
}

enum Resizer {
    Exec(Terminal),
    Attach(Arc<AttachConn>),
}

/// A running session: the client's input goes in here.
pub struct Session {
    input: Mutex<Option<Input>>,
    resizer: Option<Resizer>,
    finished: Arc<AtomicBool>,
    abort: Abort,
}

enum Abort {
    Exec(ExecKiller),
    Attach(Arc<AttachConn>),
}

impl Session {
    pub fn stdin(&self, data: &[u8]) {
        let mut input = self.input.lock().unwrap_or_else(|p| p.into_inner());
        let failed = match input.as_mut() {
            Some(Input::Exec(i)) => i.write_all(data).is_err(),
            Some(Input::Attach { conn, .. }) => conn.send_stdin(data).is_err(),
            None => false,
        };
        if failed {
            // The process closed its input: what else the client sends is dropped.
            *input = None;
        }
    }

    /// The client's input ended: the process's ends (for attach, only when the container
    /// closes its stdin after the first attach, StdinOnce).
    pub fn stdin_end(&self) {
        match self.input.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(Input::Exec(i)) => i.close(),
            Some(Input::Attach { conn, stdin_once: true }) => {
                let _ = conn.close_stdin();
            }
            _ => {}
        }
    }

    pub fn resize(&self, width: u16, height: u16) {
        if width == 0 || height == 0 {
            return;
        }
        match &self.resizer {
            Some(Resizer::Exec(t)) => {
                let _ = t.resize(width, height);
            }
            Some(Resizer::Attach(c)) => {
                let _ = c.resize(height, width);
            }
            None => {}
        }
    }

    /// The client went away before the end: an exec's process is killed, an attach leaves.
    pub fn abort(&self) {
        if self.finished.load(Ordering::SeqCst) {
            return;
        }
        match &self.abort {
            Abort::Exec(k) => k.kill(),
            Abort::Attach(c) => c.shutdown(),
        }
    }
}

/// How long output may keep coming once the process has exited (from its background
/// children holding the pipe) before its streams are ended anyway.
const DRAIN_QUIET: Duration = Duration::from_millis(200);

/// Copies `from` to `out` until its end, or until it has been quiet for `DRAIN_QUIET` after
/// `exited` was set.
fn pump(mut from: std::fs::File, ch: Channel, out: Arc<dyn Output>, exited: Arc<AtomicBool>) {
    let mut buf = vec![0u8; conn::DATA_CHUNK];
    loop {
        let ready = berth_sys::process::poll_readable(&[from.as_fd()], DRAIN_QUIET.as_millis() as i32);
        match ready {
            Ok(r) if !r[0] => {
                if exited.load(Ordering::SeqCst) {
                    break;
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
            Ok(_) => {}
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if out.write(ch, &buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EIO: a terminal whose other side is closed.
            Err(_) => break,
        }
    }
    out.close(ch);
}

/// Starts the session's process (or joins the container's stdio) with `stdio`; the output,
/// the end and the outcome go to `out`.
pub fn start(
    engine: &Arc<Engine>,
    target: &Target,
    stdio: ExecStdio,
    version: Version,
    out: Arc<dyn Output>,
) -> Result<Arc<Session>, String> {
    let finished = Arc::new(AtomicBool::new(false));
    match target {
        Target::Exec { container, cmd } => {
            let p = engine.exec_streams(container, cmd, stdio, None).map_err(|e| e.to_string())?;
            let exited = Arc::new(AtomicBool::new(false));
            let mut pumps = Vec::new();
            for (file, ch) in [(p.stdout, Channel::Stdout), (p.stderr, Channel::Stderr)] {
                if let Some(f) = file {
                    let (out, exited) = (out.clone(), exited.clone());
                    pumps.push(std::thread::spawn(move || pump(f, ch, out, exited)));
                }
            }
            let session = Arc::new(Session {
                input: Mutex::new(p.stdin.map(Input::Exec)),
                resizer: p.terminal.map(Resizer::Exec),
                finished: finished.clone(),
                abort: Abort::Exec(p.exit.killer()),
            });
            let exit = p.exit;
            std::thread::spawn(move || {
                let outcome = exit.wait().map_err(|e| e.to_string());
                finished.store(true, Ordering::SeqCst);
                exited.store(true, Ordering::SeqCst);
                for p in pumps {
                    let _ = p.join();
                }
                out.finish(&status_bytes(version, &outcome));
            });
            Ok(session)
        }
        Target::Attach { container } => {
            let c = engine.get(container).map_err(|e| e.to_string())?;
            let conn = Arc::new(engine.attach(&c.id).map_err(|e| e.to_string())?);
            let session = Arc::new(Session {
                input: Mutex::new(
                    stdio.stdin.then(|| Input::Attach { conn: conn.clone(), stdin_once: c.config.stdin_once }),
                ),
                resizer: stdio.tty.then(|| Resizer::Attach(conn.clone())),
                finished: finished.clone(),
                abort: Abort::Attach(conn.clone()),
            });
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match conn.recv(&mut buf) {
                        Ok(Some((STDOUT, n))) if stdio.stdout => {
                            if out.write(Channel::Stdout, &buf[..n]).is_err() {
                                break;
                            }
                        }
                        Ok(Some((STDERR, n))) if stdio.stderr => {
                            if out.write(Channel::Stderr, &buf[..n]).is_err() {
                                break;
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
                finished.store(true, Ordering::SeqCst);
                if stdio.stdout {
                    out.close(Channel::Stdout);
                }
                if stdio.stderr {
                    out.close(Channel::Stderr);
                }
                out.finish(&status_bytes(version, &Ok(0)));
            });
            Ok(session)
        }
    }
}

/// Terminal sizes from a resize stream: JSON objects `{"Width":…,"Height":…}`, one after
/// another (each followed by a newline), split anywhere across frames.
#[derive(Default)]
pub struct ResizeDecoder {
    buf: Vec<u8>,
}

/// More than this in one undecoded size is no size.
const MAX_RESIZE_MESSAGE: usize = 4096;

impl ResizeDecoder {
    /// The sizes completed by `data`; Err when the stream holds something else.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<(u16, u16)>, String> {
        self.buf.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut used = 0;
        {
            let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<serde_json::Value>();
            loop {
                match it.next() {
                    Some(Ok(v)) => {
                        used = it.byte_offset();
                        let dim = |k: &str| v.get(k).and_then(|n| n.as_u64()).and_then(|n| u16::try_from(n).ok());
                        match (dim("Width"), dim("Height")) {
                            (Some(w), Some(h)) => sizes.push((w, h)),
                            _ => return Err(format!("resize: {v} is not a terminal size")),
                        }
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => return Err(format!("resize: {e}")),
                    None => break,
                }
            }
        }
        self.buf.drain(..used);
        if self.buf.len() > MAX_RESIZE_MESSAGE {
            return Err("resize: a message too long".into());
        }
        Ok(sizes)
    }
}

/// The stream types of exec/attach over SPDY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamType {
    Error,
    Stdin,
    Stdout,
    Stderr,
    Resize,
}

/// An exec or attach over a SPDY connection: waits for the client's streams, starts the
/// session when all are there, and relays.
pub struct SpdyExec {
    engine: Arc<Engine>,
    target: Target,
    stdio: ExecStdio,
    version: Version,
    writer: Arc<Writer>,
    streams: Vec<(u32, StreamType)>,
    session: Option<Arc<Session>>,
    resize: ResizeDecoder,
    idle_timeout: Duration,
}

/// How long a finished session waits for its client to close the connection.
const LINGER: Duration = Duration::from_secs(60);

/// How long the client has to open all its streams.
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

impl SpdyExec {
    /// The client must open its streams within `STREAM_CREATION_TIMEOUT` (the socket's read
    /// timeout until then); after that the connection may idle for `idle_timeout`.
    pub fn new(
        engine: Arc<Engine>,
        target: Target,
        stdio: ExecStdio,
        version: Version,
        writer: Arc<Writer>,
        idle_timeout: Duration,
    ) -> SpdyExec {
        let _ = writer.socket().set_read_timeout(Some(STREAM_CREATION_TIMEOUT));
        SpdyExec {
            engine,
            target,
            stdio,
            version,
            writer,
            streams: Vec::new(),
            session: None,
            resize: Default::default(),
            idle_timeout,
        }
    }

    fn expected(&self) -> Vec<StreamType> {
        let mut v = vec![StreamType::Error];
        if self.stdio.stdin {
            v.push(StreamType::Stdin);
        }
        if self.stdio.stdout {
            v.push(StreamType::Stdout);
        }
        if self.stdio.stderr && !self.stdio.tty {
            v.push(StreamType::Stderr);
        }
        if self.stdio.tty && self.version >= Version::V3 {
            v.push(StreamType::Resize);
        }
        v
    }

    fn id_of(&self, t: StreamType) -> Option<u32> {
        self.streams.iter().find(|(_, s)| *s == t).map(|(id, _)| *id)
    }

    fn type_of(&self, id: u32) -> Option<StreamType> {
        self.streams.iter().find(|(i, _)| *i == id).map(|(_, t)| *t)
    }

    fn begin(&mut self) {
        let _ = self.writer.socket().set_read_timeout(Some(self.idle_timeout));
        let out = Arc::new(SpdyOutput {
            writer: self.writer.clone(),
            stdout: self.id_of(StreamType::Stdout),
            stderr: self.id_of(StreamType::Stderr),
            error: self.id_of(StreamType::Error).unwrap_or(0),
            last: self.streams.iter().map(|(id, _)| *id).max().unwrap_or(0),
        });
        if self.version == Version::V1 {
            // v1 clients expect the server to end its side of stdin at once.
            if let Some(id) = self.id_of(StreamType::Stdin) {
                let _ = self.writer.fin(id);
            }
        }
        match start(&self.engine, &self.target, self.stdio, self.version, out.clone()) {
            Ok(s) => self.session = Some(s),
            Err(e) => {
                for ch in [Channel::Stdout, Channel::Stderr] {
                    out.close(ch);
                }
                out.finish(&status_bytes(self.version, &Err(e)));
            }
        }
    }
}

impl conn::Handler for SpdyExec {
    fn stream(&mut self, stream_id: u32, headers: &Headers, _fin: bool) {
        let t = match header(headers, "streamtype") {
            Some("error") => Some(StreamType::Error),
            Some("stdin") => Some(StreamType::Stdin),
            Some("stdout") => Some(StreamType::Stdout),
            Some("stderr") => Some(StreamType::Stderr),
            Some("resize") => Some(StreamType::Resize),
            _ => None,
        };
        let wanted = t.filter(|t| self.session.is_none() && self.expected().contains(t) && self.id_of(*t).is_none());
        let Some(t) = wanted else {
            let _ = self.writer.reset(stream_id, rst::REFUSED_STREAM);
            return;
        };
        self.streams.push((stream_id, t));
        if self.writer.reply(stream_id).is_err() {
            return;
        }
        if self.streams.len() == self.expected().len() {
            self.begin();
        }
    }

    fn data(&mut self, stream_id: u32, data: &[u8], fin: bool) {
        let Some(session) = &self.session else { return };
        match self.type_of(stream_id) {
            Some(StreamType::Stdin) => {
                if !data.is_empty() {
                    session.stdin(data);
                }
                if fin {
                    session.stdin_end();
                }
            }
            Some(StreamType::Resize) => match self.resize.feed(data) {
                Ok(sizes) => {
                    for (w, h) in sizes {
                        session.resize(w, h);
                    }
                }
                Err(e) => {
                    conn::tracing_note(&e);
                    let _ = self.writer.reset(stream_id, rst::PROTOCOL_ERROR);
                }
            },
            _ => {}
        }
    }

    fn reset(&mut self, stream_id: u32) {
        if self.type_of(stream_id) == Some(StreamType::Stdin) {
            if let Some(s) = &self.session {
                s.stdin_end();
            }
        }
    }

    fn closed(&mut self) {
        if let Some(s) = &self.session {
            s.abort();
        }
    }
}

struct SpdyOutput {
    writer: Arc<Writer>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    error: u32,
    last: u32,
}

impl SpdyOutput {
    fn id(&self, ch: Channel) -> Option<u32> {
        match ch {
            Channel::Stdout => self.stdout,
            Channel::Stderr => self.stderr,
        }
    }
}

impl Output for SpdyOutput {
    fn write(&self, ch: Channel, data: &[u8]) -> io::Result<()> {
        match self.id(ch) {
            Some(id) => self.writer.data(id, data, false),
            None => Ok(()),
        }
    }

    fn close(&self, ch: Channel) {
        if let Some(id) = self.id(ch) {
            let _ = self.writer.fin(id);
        }
    }

    fn finish(&self, status: &[u8]) {
        let _ = self.writer.data(self.error, status, true);
        // The client closes the connection once it has read everything: closing it first
        // races the Go client, which drops frames still queued when its connection ends
        // (seen under emulation). One that keeps it open is not waited for long.
        let _ = self.writer.send(&super::spdy::Frame::GoAway { last_good_stream_id: self.last, status: goaway::OK });
        let _ = self.writer.socket().set_read_timeout(Some(LINGER));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_objects_as_kubernetes_clients_decode_them() {
        assert_eq!(status_bytes(Version::V4, &Ok(0)), br#"{"metadata":{},"status":"Success"}"#);
        let v: serde_json::Value = serde_json::from_slice(&status_bytes(Version::V5, &Ok(3))).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let v: serde_json::Value = serde_json::from_slice(&status_bytes(Version::V4, &Err("boom".into()))).unwrap();
        assert_eq!((v["reason"].as_str(), v["code"].as_i64()), (Some("InternalError"), Some(500)));
        assert!(status_bytes(Version::V2, &Ok(0)).is_empty());
        assert_eq!(status_bytes(Version::V3, &Ok(2)), b"command terminated with non-zero exit code: exit status 2");
    }

    #[test]
    fn resize_messages_split_anywhere() {
        let mut d = ResizeDecoder::default();
        assert_eq!(d.feed(b"{\"Width\":80,").unwrap(), []);
        assert_eq!(d.feed(b"\"Height\":24}\n{\"Width\":100,\"Height\":50}\n{").unwrap(), [(80, 24), (100, 50)]);
        assert_eq!(d.feed(b"\"Width\":1,\"Height\":2}").unwrap(), [(1, 2)]);
        assert!(d.feed(b"{\"Width\":70000,\"Height\":1}").is_err());
        assert!(ResizeDecoder::default().feed(b"[1,2]").is_err());
        assert!(ResizeDecoder::default().feed(b"not json").is_err());
        let mut d = ResizeDecoder::default();
        assert!(d.feed(&[b'"'; MAX_RESIZE_MESSAGE + 1]).is_err());
    }
}
