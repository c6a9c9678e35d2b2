//! WebSocket (RFC 6455), server side, as Kubernetes' clients use it: exec and attach with the
//! channel protocols (every message starts with its channel: 0 stdin, 1 stdout, 2 stderr,
//! 3 the outcome, 4 terminal sizes; v5 adds 255, the end of a channel), and port-forward as
//! SPDY carried inside binary messages (`SPDY/3.1+portforward.k8s.io`, crictl's way).
//!
//! Client frames must be masked and are checked before use: lengths are capped, control
//! frames are short and whole, a fragmented message is bounded.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::conn::{self, DATA_CHUNK};
use super::remotecommand::{self, Channel, Output, ResizeDecoder, Session, Target, Version};
use super::socket::Socket;

/// RFC 6455's key suffix for `Sec-WebSocket-Accept`.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The largest message (all its fragments) accepted.
pub const MAX_MESSAGE: usize = 1 << 20;

/// `Sec-WebSocket-Accept` for a client's key.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// How the channel bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Binary,
    /// text messages: the channel as an ASCII digit, then the data in base64
    Base64,
}

/// The exec/attach subprotocols served: name, version, encoding.
pub const CHANNEL_PROTOCOLS: [(&str, Version, Encoding); 5] = [
    ("v5.channel.k8s.io", Version::V5, Encoding::Binary),
    ("v4.channel.k8s.io", Version::V4, Encoding::Binary),
    ("v4.base64.channel.k8s.io", Version::V4, Encoding::Base64),
    ("channel.k8s.io", Version::V1, Encoding::Binary),
    ("base64.channel.k8s.io", Version::V1, Encoding::Base64),
];

/// The port-forward subprotocol: SPDY inside WebSocket.
pub const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xa;
}

/// Close codes.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_TOO_BIG: u16 = 1009;

/// The sending half: whole frames under a lock (the reader answers pings through it too).
pub struct WsWriter {
    sock: Mutex<Socket>,
    closed: Mutex<bool>,
}

impl WsWriter {
    pub fn new(sock: Socket) -> WsWriter {
        WsWriter { sock: Mutex::new(sock), closed: Mutex::new(false) }
    }

    fn frame(&self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 10);
        out.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xffff => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        let mut s = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        let r = s.write_all(&out);
        if r.is_err() {
            let _ = s.shutdown(Shutdown::Both);
        }
        r
    }

    pub fn binary(&self, payload: &[u8]) -> io::Result<()> {
        self.frame(op::BINARY, payload)
    }

    pub fn text(&self, payload: &[u8]) -> io::Result<()> {
        self.frame(op::TEXT, payload)
    }

    /// A close frame (once), then the end of what this side sends.
    pub fn close(&self, code: u16, reason: &str) {
        let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        if !*closed {
            *closed = true;
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice(&reason.as_bytes()[..reason.len().min(120)]);
            let _ = self.frame(op::CLOSE, &p);
        }
        let s = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        let _ = s.shutdown(Shutdown::Write);
        // The client answers with its close and goes; one that does not is not waited for long.
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    }

    /// Ends the connection both ways.
    pub fn abort(&self) {
        let s = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        let _ = s.shutdown(Shutdown::Both);
    }
}

/// A whole message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(Vec<u8>),
    Binary(Vec<u8>),
}

/// Reads the client's messages, answering pings and closes on the way.
pub struct WsReader<R> {
    input: R,
    buf: Vec<u8>,
    writer: Arc<WsWriter>,
    /// what a byte-stream reader has not taken yet of the last message
    pending: Vec<u8>,
}

/// Why reading stopped: the client closed (normally or not), or broke the protocol.
#[derive(Debug)]
pub enum End {
    Closed,
    Broken(String),
}

impl<R: Read> WsReader<R> {
    pub fn new(input: R, rest: Vec<u8>, writer: Arc<WsWriter>) -> WsReader<R> {
        WsReader { input, buf: rest, writer, pending: Vec::new() }
    }

    fn fill(&mut self, n: usize) -> Result<(), End> {
        let mut chunk = [0u8; 16 << 10];
        while self.buf.len() < n {
            match self.input.read(&mut chunk) {
                Ok(0) => return Err(End::Closed),
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(End::Closed),
            }
        }
        Ok(())
    }

    /// One frame: (fin, opcode, unmasked payload).
    fn frame(&mut self) -> Result<(bool, u8, Vec<u8>), End> {
        self.fill(2)?;
        let (b0, b1) = (self.buf[0], self.buf[1]);
        if b0 & 0x70 != 0 {
            return Err(End::Broken("reserved bits set (no extension was agreed)".into()));
        }
        if b1 & 0x80 == 0 {
            return Err(End::Broken("an unmasked frame from the client".into()));
        }
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        let (len, header) = match b1 & 0x7f {
            126 => {
                self.fill(4)?;
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as u64, 4)
            }
            127 => {
                self.fill(10)?;
                (u64::from_be_bytes(self.buf[2..10].try_into().unwrap_or_default()), 10)
            }
            n => (n as u64, 2),
        };
        if len > MAX_MESSAGE as u64 {
            self.writer.close(CLOSE_TOO_BIG, "frame too large");
            return Err(End::Broken(format!("a frame of {len} bytes (at most {MAX_MESSAGE})")));
        }
        if opcode >= 0x8 && (len > 125 || !fin) {
            return Err(End::Broken("a control frame that is long or fragmented".into()));
        }
        let len = len as usize;
        self.fill(header + 4 + len)?;
        let mask: [u8; 4] = self.buf[header..header + 4].try_into().unwrap_or_default();
        let mut payload: Vec<u8> = self.buf[header + 4..header + 4 + len].to_vec();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        self.buf.drain(..header + 4 + len);
        Ok((fin, opcode, payload))
    }

    /// The next whole message; pings are answered, a close is echoed and ends the reading.
    pub fn message(&mut self) -> Result<Message, End> {
        let mut partial: Option<(u8, Vec<u8>)> = None;
        loop {
            let (fin, opcode, payload) = match self.frame() {
                Ok(f) => f,
                Err(End::Broken(e)) => {
                    self.writer.close(CLOSE_PROTOCOL_ERROR, "protocol error");
                    return Err(End::Broken(e));
                }
                Err(e) => return Err(e),
            };
            match opcode {
                op::PING => {
                    let _ = self.writer.frame(op::PONG, &payload);
                }
                op::PONG => {}
                op::CLOSE => {
                    self.writer.close(CLOSE_NORMAL, "");
                    return Err(End::Closed);
                }
                op::TEXT | op::BINARY => {
                    if partial.is_some() {
                        return Err(self.broken("a new message inside a fragmented one"));
                    }
                    if fin {
                        return Ok(if opcode == op::TEXT { Message::Text(payload) } else { Message::Binary(payload) });
                    }
                    partial = Some((opcode, payload));
                }
                op::CONTINUATION => {
                    let Some((kind, mut data)) = partial.take() else {
                        return Err(self.broken("a continuation with no message to continue"));
                    };
                    if data.len() + payload.len() > MAX_MESSAGE {
                        self.writer.close(CLOSE_TOO_BIG, "message too large");
                        return Err(End::Broken(format!("a message over {MAX_MESSAGE} bytes")));
                    }
                    data.extend_from_slice(&payload);
                    if fin {
                        return Ok(if kind == op::TEXT { Message::Text(data) } else { Message::Binary(data) });
                    }
                    partial = Some((kind, data));
                }
                other => return Err(self.broken(&format!("opcode {other:#x}"))),
            }
        }
    }

    fn broken(&self, what: &str) -> End {
        self.writer.close(CLOSE_PROTOCOL_ERROR, "protocol error");
        End::Broken(what.to_string())
    }
}

/// The message stream as a byte stream (messages' bytes in order), for SPDY inside
/// WebSocket.
impl<R: Read> Read for WsReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            match self.message() {
                Ok(Message::Binary(data)) | Ok(Message::Text(data)) => self.pending = data,
                Err(End::Closed) => return Ok(0),
                Err(End::Broken(e)) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        let n = out.len().min(self.pending.len());
        out[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

/// SPDY's writes, each one binary message.
pub struct WsBytes(pub Arc<WsWriter>);

impl Write for WsBytes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.binary(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An exec or attach session's output as channel messages.
struct ChannelOutput {
    writer: Arc<WsWriter>,
    encoding: Encoding,
}

impl ChannelOutput {
    fn send(&self, channel: u8, data: &[u8]) -> io::Result<()> {
        match self.encoding {
            Encoding::Binary => {
                let mut m = Vec::with_capacity(data.len() + 1);
                m.push(channel);
                m.extend_from_slice(data);
                self.writer.binary(&m)
            }
            Encoding::Base64 => {
                let mut m = vec![b'0' + channel];
                m.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(data).as_bytes());
                self.writer.text(&m)
            }
        }
    }
}

impl Output for ChannelOutput {
    fn write(&self, ch: Channel, data: &[u8]) -> io::Result<()> {
        let channel = match ch {
            Channel::Stdout => 1,
            Channel::Stderr => 2,
        };
        for c in data.chunks(DATA_CHUNK) {
            self.send(channel, c)?;
        }
        Ok(())
    }

    fn close(&self, _ch: Channel) {
        // The streams end with the connection's close (a v5 client reads a normal close as
        // the end of each).
    }

    fn finish(&self, status: &[u8]) {
        if !status.is_empty() {
            let _ = self.send(3, status);
        }
        self.writer.close(CLOSE_NORMAL, "");
    }
}

/// Serves an exec or attach on an upgraded connection until it ends.
pub fn serve_exec<R: Read>(
    engine: &Arc<berth_engine::Engine>,
    target: Target,
    stdio: berth_engine::exec_stream::ExecStdio,
    (version, encoding): (Version, Encoding),
    mut reader: WsReader<R>,
    writer: Arc<WsWriter>,
) {
    let out = Arc::new(ChannelOutput { writer: writer.clone(), encoding });
    // The first message tells the client the streams are up: empty, on the lowest channel
    // it reads.
    let first = if stdio.stdout {
        1
    } else if stdio.stderr {
        2
    } else {
        3
    };
    let _ = out.send(first, &[]);
    let session: Arc<Session> = match remotecommand::start(engine, &target, stdio, version, out.clone()) {
        Ok(s) => s,
        Err(e) => {
            out.finish(&remotecommand::status_bytes(version, &Err(e)));
            return;
        }
    };
    let mut resize = ResizeDecoder::default();
    loop {
        let (channel, data) = match reader.message() {
            Ok(Message::Binary(m)) if encoding == Encoding::Binary && !m.is_empty() => (m[0], m[1..].to_vec()),
            Ok(Message::Text(m)) if encoding == Encoding::Base64 && !m.is_empty() && m[0].is_ascii_digit() => {
                match base64::engine::general_purpose::STANDARD.decode(&m[1..]) {
                    Ok(d) => (m[0] - b'0', d),
                    Err(_) => {
                        conn::tracing_note("websocket: a message that is not base64");
                        break;
                    }
                }
            }
            Ok(_) => continue,
            Err(End::Broken(e)) => {
                conn::tracing_note(&format!("websocket: {e}"));
                break;
            }
            Err(End::Closed) => break,
        };
        match channel {
            0 if stdio.stdin => session.stdin(&data),
            4 => match resize.feed(&data) {
                Ok(sizes) => {
                    for (w, h) in sizes {
                        session.resize(w, h);
                    }
                }
                Err(e) => conn::tracing_note(&format!("websocket: {e}")),
            },
            // v5: the client ends a channel (stdin: the process's input ends).
            255 if version == Version::V5 => {
                if data.len() != 1 {
                    conn::tracing_note("websocket: a close signal that is not one channel");
                    break;
                }
                if data[0] == 0 {
                    session.stdin_end();
                }
            }
            _ => {}
        }
    }
    session.abort();
    writer.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_example_key() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    /// A client's frame: masked with `mask`, length encoded as RFC 6455 says.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// A writer on one end of a loopback connection, and the other end (what the server sent).
    fn writer() -> (Arc<WsWriter>, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        (Arc::new(WsWriter::new(Socket::tcp(server))), client)
    }

    fn read_all(mut s: std::net::TcpStream) -> Vec<u8> {
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    }

    #[test]
    fn messages_pings_fragments_and_close() {
        let (w, peer) = writer();
        let mut input = client_frame(true, op::BINARY, b"\x00hello", [1, 2, 3, 4]);
        input.extend(client_frame(true, op::PING, b"p", [9, 9, 9, 9]));
        input.extend(client_frame(false, op::TEXT, b"0aGk", [0, 0, 0, 0]));
        input.extend(client_frame(true, op::CONTINUATION, b"=", [7, 7, 7, 7]));
        let big = vec![0xabu8; 70_000];
        input.extend(client_frame(true, op::BINARY, &big, [5, 6, 7, 8]));
        input.extend(client_frame(true, op::CLOSE, &1000u16.to_be_bytes(), [1, 1, 1, 1]));
        let mut r = WsReader::new(&input[3..], input[..3].to_vec(), w.clone());
        assert_eq!(r.message().unwrap(), Message::Binary(b"\x00hello".to_vec()));
        assert_eq!(r.message().unwrap(), Message::Text(b"0aGk=".to_vec()));
        assert_eq!(r.message().unwrap(), Message::Binary(big));
        assert!(matches!(r.message(), Err(End::Closed)));
        drop(r);
        drop(w);
        // The pong (same payload), then the echoed close.
        assert_eq!(read_all(peer), [&[0x8a, 1, b'p'][..], &[0x88, 2, 0x03, 0xe8]].concat());
    }

    #[test]
    fn malformed_frames_end_the_connection() {
        for (what, input) in [
            ("unmasked", vec![0x82, 0x01, b'x']),
            ("reserved bits", vec![0xc2, 0x81, 0, 0, 0, 0, b'x']),
            ("long control frame", client_frame(true, op::PING, &[0; 126], [0; 4])),
            ("fragmented control frame", client_frame(false, op::PING, b"x", [0; 4])),
            ("lone continuation", client_frame(true, op::CONTINUATION, b"x", [0; 4])),
            ("unknown opcode", client_frame(true, 0x3, b"x", [0; 4])),
            ("too large", [vec![0x82, 0xff], (MAX_MESSAGE as u64 + 1).to_be_bytes().to_vec()].concat()),
            (
                "new message inside a fragmented one",
                [client_frame(false, op::BINARY, b"a", [0; 4]), client_frame(true, op::BINARY, b"b", [0; 4])].concat(),
            ),
        ] {
            let (w, _peer) = writer();
            let mut r = WsReader::new(&input[..], Vec::new(), w);
            assert!(matches!(r.message(), Err(End::Broken(_))), "{what}");
        }
        let (w, _peer) = writer();
        let mut r = WsReader::new(&b"\x82"[..], Vec::new(), w);
        assert!(matches!(r.message(), Err(End::Closed)), "a truncated frame is the end of the input");
    }

    #[test]
    fn no_input_panics_the_reader() {
        // A deterministic stream of arbitrary inputs, some built from valid frames cut or
        // corrupted anywhere.
        let mut next = super::super::test_random(0x2545_f491_4f6c_dd1d);
        let (w, _peer) = writer();
        for _ in 0..3000 {
            let mut input = client_frame(next().is_multiple_of(2), (next() % 16) as u8, &[1, 2, 3], [4, 3, 2, 1]);
            let len = (next() % 40) as usize;
            input.extend((0..len).map(|_| next() as u8));
            let at = (next() as usize) % input.len();
            input[at] ^= next() as u8;
            let mut r = WsReader::new(&input[..], Vec::new(), w.clone());
            for _ in 0..8 {
                if r.message().is_err() {
                    break;
                }
            }
        }
    }
}
