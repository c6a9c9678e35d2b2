//! A SPDY/3.1 connection, server side: a reader loop that answers the session's own frames
//! (PING, GOAWAY, stream ids out of order) and hands streams and their data to a handler,
//! and a writer shared by the threads that send (one frame at a time, whole).
//!
//! Only the client opens streams. Send windows are not enforced: the Go clients never grant
//! more window (docs/streaming-notes.md, trap 1).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Mutex;

use super::socket::Socket;
use super::spdy::{goaway, rst, Codec, Frame, Headers, FLAG_FIN};

/// The most bytes one DATA frame carries (what the Go clients copy at a time).
pub const DATA_CHUNK: usize = 32 << 10;

/// The sending half: frames are encoded (headers on this end's one zlib stream) and written
/// whole under a lock.
pub struct Writer {
    inner: Mutex<WriterInner>,
    /// the connection, to end it from any thread
    socket: Socket,
}

struct WriterInner {
    out: Box<dyn Write + Send>,
    codec: Codec,
    failed: bool,
    buf: Vec<u8>,
}

impl Writer {
    pub fn new(out: Box<dyn Write + Send>, socket: Socket) -> Writer {
        Writer { inner: Mutex::new(WriterInner { out, codec: Codec::new(), failed: false, buf: Vec::new() }), socket }
    }

    pub fn send(&self, f: &Frame) -> io::Result<()> {
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if w.failed {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the connection has failed"));
        }
        let WriterInner { out, codec, buf, .. } = &mut *w;
        buf.clear();
        let r = codec.encode(f, buf).map_err(io::Error::other).and_then(|()| {
            out.write_all(buf)?;
            out.flush()
        });
        if r.is_err() {
            // A client that stopped reading (the socket's send timeout) or went away: the
            // whole connection ends, not one stream.
            w.failed = true;
            drop(w);
            self.close();
        }
        r
    }

    /// `data` on a stream, in frames of at most `DATA_CHUNK` bytes; `fin` ends this side.
    pub fn data(&self, stream_id: u32, data: &[u8], fin: bool) -> io::Result<()> {
        let mut chunks = data.chunks(DATA_CHUNK).peekable();
        if chunks.peek().is_none() {
            return self.send(&Frame::Data { stream_id, flags: if fin { FLAG_FIN } else { 0 }, data: Vec::new() });
        }
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            let flags = if fin && last { FLAG_FIN } else { 0 };
            self.send(&Frame::Data { stream_id, flags, data: c.to_vec() })?;
        }
        Ok(())
    }

    /// Ends this side of a stream.
    pub fn fin(&self, stream_id: u32) -> io::Result<()> {
        self.data(stream_id, &[], true)
    }

    pub fn reply(&self, stream_id: u32) -> io::Result<()> {
        self.send(&Frame::SynReply { stream_id, flags: 0, headers: Vec::new() })
    }

    pub fn reset(&self, stream_id: u32, status: u32) -> io::Result<()> {
        self.send(&Frame::RstStream { stream_id, status })
    }

    /// GOAWAY (last stream accepted: `last`), then the end of what this side sends; the
    /// client reads to the end and closes.
    pub fn go_away(&self, last: u32, status: u32) {
        let _ = self.send(&Frame::GoAway { last_good_stream_id: last, status });
        let _ = self.socket.shutdown(Shutdown::Write);
    }

    /// Ends the connection both ways (the reader loop sees its end).
    pub fn close(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }

    pub fn socket(&self) -> &Socket {
        &self.socket
    }
}

/// What a connection's streams are for (exec/attach or port-forward).
pub trait Handler {
    /// A new stream from the client; the handler replies (`Writer::reply`) or refuses it
    /// (`Writer::reset`).
    fn stream(&mut self, stream_id: u32, headers: &Headers, fin: bool);
    /// Data on an accepted stream; `fin`: the client's side of it ended.
    fn data(&mut self, stream_id: u32, data: &[u8], fin: bool);
    /// The client reset a stream.
    fn reset(&mut self, stream_id: u32);
    /// The connection ended (the client closed it, went away, broke the protocol, or idled
    /// past the read timeout).
    fn closed(&mut self);
}

/// The most streams one connection may open (a flood is a protocol error).
pub const MAX_STREAMS: u32 = 4096;

/// Reads frames until the connection ends, answering the session's frames and giving the
/// handler the rest. `rest`: bytes already read past the HTTP head.
pub fn serve(mut input: impl Read, rest: Vec<u8>, writer: &Writer, handler: &mut dyn Handler) {
    let mut codec = Codec::new();
    let mut buf = rest;
    let mut chunk = vec![0u8; 64 << 10];
    let mut last_id = 0u32;
    let mut opened = 0u32;
    // Streams the client opened and has not reset (ids), to tell data on unknown ones.
    let mut open: std::collections::HashSet<u32> = Default::default();
    'conn: loop {
        // Every whole frame in the buffer.
        let mut used = 0;
        loop {
            let frame = match codec.decode(&buf[used..]) {
                Ok(Some((f, n))) => {
                    used += n;
                    f
                }
                Ok(None) => break,
                Err(e) => {
                    tracing_note(&format!("closing a streaming connection: {e}"));
                    writer.go_away(last_id, goaway::PROTOCOL_ERROR);
                    break 'conn;
                }
            };
            match frame {
                Frame::SynStream { stream_id, flags, headers, .. } => {
                    if stream_id % 2 == 0 || stream_id <= last_id {
                        tracing_note(&format!("closing a streaming connection: stream id {stream_id} out of order"));
                        writer.go_away(last_id, goaway::PROTOCOL_ERROR);
                        break 'conn;
                    }
                    last_id = stream_id;
                    opened += 1;
                    if opened > MAX_STREAMS {
                        tracing_note("closing a streaming connection: too many streams");
                        writer.go_away(last_id, goaway::PROTOCOL_ERROR);
                        break 'conn;
                    }
                    open.insert(stream_id);
                    handler.stream(stream_id, &headers, flags & FLAG_FIN != 0);
                }
                Frame::Data { stream_id, flags, data } => {
                    if open.contains(&stream_id) {
                        handler.data(stream_id, &data, flags & FLAG_FIN != 0);
                    } else {
                        let _ = writer.reset(stream_id, rst::INVALID_STREAM);
                    }
                }
                Frame::Headers { stream_id, flags, .. } => {
                    if flags & FLAG_FIN != 0 && open.contains(&stream_id) {
                        handler.data(stream_id, &[], true);
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    if open.remove(&stream_id) {
                        handler.reset(stream_id);
                    }
                }
                Frame::Ping { id } => {
                    // The client's pings (odd) are echoed; an even one would be an answer to
                    // a ping this server never sends.
                    if id % 2 == 1 && writer.send(&Frame::Ping { id }).is_err() {
                        break 'conn;
                    }
                }
                Frame::GoAway { .. } => break 'conn,
                // Windows are not enforced (the clients grant none); settings change nothing
                // this server does.
                Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::SynReply { .. } => {}
            }
        }
        buf.drain(..used);
        match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    handler.closed();
}

/// A note on berthd's stderr about one connection (the server has no log of its own).
pub fn tracing_note(what: &str) {
    eprintln!("berthd: streaming: {what}");
}

/// The value of a header by name, case-insensitively (the Go clients send lowercase names).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}
