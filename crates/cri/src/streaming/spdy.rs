//! SPDY/3.1 framing and header compression, the server side's codec of the transport kubelet
//! and crictl reach a runtime's streaming server with (exec, attach, port-forward). The frame
//! layouts and the compression dictionary are the SPDY/3.1 draft's; where the Go clients those
//! tools use are stricter than the draft, the encoder follows them (see
//! docs/streaming-notes.md): header names are sent in lowercase and never repeated, every
//! header block ends with a sync flush, and only the frame types they know are sent.
//!
//! Input is the peer's and may be hostile: lengths are checked before use, a frame's length is
//! capped, a header block inflates to at most `MAX_HEADER_BLOCK` bytes, and every malformed
//! input is an error (the connection is then dropped), never a panic.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// The largest frame accepted (its payload): the 24-bit length field allows 16 MiB, which no
/// client of a streaming server needs.
pub const MAX_FRAME: usize = 1 << 20;
/// The most bytes a header block may inflate to (a compressed block can claim far more).
pub const MAX_HEADER_BLOCK: usize = 64 << 10;

/// Flags: the last frame the sender sends on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM's flag: the receiver sends nothing on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// Control frame types the Go clients know (they drop a connection on any other).
mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

/// A header block: names as received (the client sends them in lowercase), values as they
/// are (several values of one name are joined by NUL bytes on the wire).
pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// (flags, id, value) per setting
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
}

/// What makes a connection unusable: the peer broke the protocol (or compression failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SPDY: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn err<T>(what: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(what.into()))
}

/// One end of a connection: a header decompressor for what the peer sends and a compressor
/// for what this end sends, each one zlib stream for the connection's whole life (the peer's
/// blocks only decode in order).
pub struct Codec {
    inflate: Decompress,
    deflate: Compress,
    deflate_primed: bool,
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new()
    }
}

impl Codec {
    pub fn new() -> Codec {
        Codec {
            inflate: Decompress::new(true),
            deflate: Compress::new(Compression::default(), true),
            deflate_primed: false,
        }
    }

    /// The first complete frame in `buf` and how many bytes it took; None until a whole frame
    /// has arrived.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if length > MAX_FRAME {
            return err(format!("a frame of {length} bytes (at most {MAX_FRAME})"));
        }
        if buf.len() < 8 + length {
            return Ok(None);
        }
        let flags = buf[4];
        let payload = &buf[8..8 + length];
        let frame = if buf[0] & 0x80 == 0 {
            let stream_id = u32_at(buf, 0) & 0x7fff_ffff;
            if stream_id == 0 {
                return err("DATA on stream 0");
            }
            Frame::Data { stream_id, flags, data: payload.to_vec() }
        } else {
            let version = u16::from_be_bytes([buf[0], buf[1]]) & 0x7fff;
            if version != VERSION {
                return err(format!("version {version} (SPDY/3 only)"));
            }
            self.control(u16::from_be_bytes([buf[2], buf[3]]), flags, payload)?
        };
        Ok(Some((frame, 8 + length)))
    }

    fn control(&mut self, kind: u16, flags: u8, p: &[u8]) -> Result<Frame, ProtocolError> {
        let exactly = |n: usize, what: &str| -> Result<(), ProtocolError> {
            if p.len() != n {
                return err(format!("{what} of {} bytes (it has {n})", p.len()));
            }
            Ok(())
        };
        let stream = |at: usize| u32_at(p, at) & 0x7fff_ffff;
        Ok(match kind {
            kind::SYN_STREAM => {
                if p.len() < 10 {
                    return err("a SYN_STREAM shorter than its fixed fields");
                }
                Frame::SynStream {
                    stream_id: nonzero(stream(0), "SYN_STREAM")?,
                    associated_to: stream(4),
                    priority: p[8] >> 5,
                    flags,
                    headers: self.inflate_headers(&p[10..])?,
                }
            }
            kind::SYN_REPLY | kind::HEADERS => {
                if p.len() < 4 {
                    return err("a SYN_REPLY or HEADERS without its stream");
                }
                let (stream_id, headers) = (nonzero(stream(0), "SYN_REPLY/HEADERS")?, self.inflate_headers(&p[4..])?);
                if kind == kind::SYN_REPLY {
                    Frame::SynReply { stream_id, flags, headers }
                } else {
                    Frame::Headers { stream_id, flags, headers }
                }
            }
            kind::RST_STREAM => {
                exactly(8, "RST_STREAM")?;
                Frame::RstStream { stream_id: stream(0), status: u32_at(p, 4) }
            }
            kind::SETTINGS => {
                if p.len() < 4 {
                    return err("a SETTINGS frame without its count");
                }
                let count = u32_at(p, 0) as usize;
                if p.len() != 4 + count.saturating_mul(8) {
                    return err(format!("SETTINGS of {} bytes for {count} entries", p.len()));
                }
                let entries = (0..count)
                    .map(|i| {
                        let at = 4 + i * 8;
                        (p[at], u32::from_be_bytes([0, p[at + 1], p[at + 2], p[at + 3]]), u32_at(p, at + 4))
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            kind::PING => {
                exactly(4, "PING")?;
                Frame::Ping { id: u32_at(p, 0) }
            }
            kind::GOAWAY => {
                exactly(8, "GOAWAY")?;
                Frame::GoAway { last_good_stream_id: stream(0), status: u32_at(p, 4) }
            }
            kind::WINDOW_UPDATE => {
                exactly(8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate { stream_id: stream(0), delta: u32_at(p, 4) & 0x7fff_ffff }
            }
            other => return err(format!("control frame type {other}")),
        })
    }

    /// Inflates one header block (a continuation of the peer's zlib stream) and parses it.
    fn inflate_headers(&mut self, block: &[u8]) -> Result<Headers, ProtocolError> {
        let mut out: Vec<u8> = Vec::with_capacity(256);
        let mut input = block;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return err(format!("a header block inflating past {MAX_HEADER_BLOCK} bytes"));
                }
                out.reserve((out.len()).clamp(256, MAX_HEADER_BLOCK - out.len()));
            }
            let (before, produced_before) = (self.inflate.total_in(), out.len());
            let status = match self.inflate.decompress_vec(input, &mut out, FlushDecompress::Sync) {
                Ok(s) => s,
                Err(e) if e.needs_dictionary().is_some() => {
                    // The zlib header, read up to its dictionary id, is consumed.
                    input = &input[(self.inflate.total_in() - before) as usize..];
                    if e.needs_dictionary() != Some(DICTIONARY_ID) {
                        return err("a header block compressed with another dictionary");
                    }
                    self.inflate
                        .set_dictionary(&DICTIONARY)
                        .map_err(|e| ProtocolError(format!("header dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return err(format!("header block: {e}")),
            };
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            match status {
                Status::StreamEnd => return err("a header block ending the compression stream"),
                // All of it read, and room left: the block's sync flush has been passed.
                _ if input.is_empty() && out.len() < out.capacity() => break,
                // Neither input read nor output made, with room for it: it cannot decode.
                _ if used == 0 && out.len() == produced_before && out.len() < out.capacity() => {
                    return err("a header block that does not decode")
                }
                _ => {}
            }
        }
        parse_header_block(&out)
    }

    /// Appends `f`'s bytes to `out`, compressing its headers on this end's stream.
    pub fn encode(&mut self, f: &Frame, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let control = |out: &mut Vec<u8>, kind: u16, flags: u8, payload: &[u8]| -> Result<(), ProtocolError> {
            if payload.len() > 0x00ff_ffff {
                return err("a frame too long for its length field");
            }
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(payload);
            Ok(())
        };
        let words = |w: &[u32]| -> Vec<u8> { w.iter().flat_map(|v| v.to_be_bytes()).collect() };
        match f {
            Frame::SynStream { stream_id, associated_to, priority, flags, headers } => {
                let mut p = words(&[*stream_id & 0x7fff_ffff, *associated_to & 0x7fff_ffff]);
                p.extend_from_slice(&[(priority & 0x7) << 5, 0]);
                p.extend(self.deflate_headers(headers)?);
                control(out, kind::SYN_STREAM, *flags, &p)
            }
            Frame::SynReply { stream_id, flags, headers } | Frame::Headers { stream_id, flags, headers } => {
                let mut p = words(&[*stream_id & 0x7fff_ffff]);
                p.extend(self.deflate_headers(headers)?);
                let kind = if matches!(f, Frame::SynReply { .. }) { kind::SYN_REPLY } else { kind::HEADERS };
                control(out, kind, *flags, &p)
            }
            Frame::RstStream { stream_id, status } => {
                control(out, kind::RST_STREAM, 0, &words(&[*stream_id & 0x7fff_ffff, *status]))
            }
            Frame::Settings { flags, entries } => {
                let mut p = words(&[entries.len() as u32]);
                for (f, id, value) in entries {
                    p.push(*f);
                    p.extend_from_slice(&id.to_be_bytes()[1..]);
                    p.extend_from_slice(&value.to_be_bytes());
                }
                control(out, kind::SETTINGS, *flags, &p)
            }
            Frame::Ping { id } => control(out, kind::PING, 0, &words(&[*id])),
            Frame::GoAway { last_good_stream_id, status } => {
                control(out, kind::GOAWAY, 0, &words(&[*last_good_stream_id & 0x7fff_ffff, *status]))
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control(out, kind::WINDOW_UPDATE, 0, &words(&[*stream_id & 0x7fff_ffff, *delta & 0x7fff_ffff]))
            }
            Frame::Data { stream_id, flags, data } => {
                if data.len() > 0x00ff_ffff {
                    return err("a DATA frame too long for its length field");
                }
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.push(*flags);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                Ok(())
            }
        }
    }

    /// A header block compressed on this end's stream, ending with a sync flush (the Go
    /// reader decodes each block from exactly its frame's bytes).
    fn deflate_headers(&mut self, headers: &Headers) -> Result<Vec<u8>, ProtocolError> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (i, (name, value)) in headers.iter().enumerate() {
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase() || b == 0) {
                return err(format!("header name {name:?}: lowercase and not empty"));
            }
            if headers[..i].iter().any(|(n, _)| n == name) {
                return err(format!("header {name:?} twice (join its values with NUL)"));
            }
            for s in [name, value] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        if !self.deflate_primed {
            self.deflate.set_dictionary(&DICTIONARY).map_err(|e| ProtocolError(format!("header dictionary: {e}")))?;
            self.deflate_primed = true;
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input: &[u8] = &raw;
        loop {
            out.reserve(64 + input.len());
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| ProtocolError(format!("compressing headers: {e}")))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            // Done when all went in and the flush fitted (room left in the output).
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn nonzero(id: u32, what: &str) -> Result<u32, ProtocolError> {
    if id == 0 {
        return err(format!("{what} on stream 0"));
    }
    Ok(id)
}

/// A header block's pairs: a count, then each name and value with its 32-bit length.
fn parse_header_block(b: &[u8]) -> Result<Headers, ProtocolError> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], ProtocolError> {
        let end = at
            .checked_add(n)
            .filter(|e| *e <= b.len())
            .ok_or_else(|| ProtocolError("a truncated header block".into()))?;
        let s = &b[at..end];
        at = end;
        Ok(s)
    };
    let word = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
    let count = word(take(4)?);
    // Each pair takes at least 8 bytes: a count the block cannot hold is refused up front.
    if count > b.len() / 8 {
        return err(format!("{count} headers in a block of {} bytes", b.len()));
    }
    let mut headers = Headers::with_capacity(count);
    for _ in 0..count {
        let len = word(take(4)?);
        let name = take(len)?;
        if name.is_empty() {
            return err("an empty header name");
        }
        let name = std::str::from_utf8(name).map_err(|_| ProtocolError("a header name that is not UTF-8".into()))?;
        let len = word(take(4)?);
        let value = std::str::from_utf8(take(len)?).map_err(|_| ProtocolError(format!("header {name}: not UTF-8")))?;
        let name = name.to_ascii_lowercase();
        if headers.iter().any(|(n, _)| *n == name) {
            return err(format!("header {name} twice"));
        }
        headers.push((name, value.to_string()));
    }
    if at != b.len() {
        return err("bytes after a header block's last pair");
    }
    Ok(headers)
}

/// The Adler-32 of `DICTIONARY`, the id zlib asks for it by.
pub const DICTIONARY_ID: u32 = 0xe3c6_a7c2;

/// SPDY/3's header compression dictionary (1423 bytes: length-prefixed header names and
/// values common in HTTP, then a run of status texts, dates and content types), which both
/// ends preset on their zlib streams.
pub const DICTIONARY: [u8; 1423] = [
    0x00, 0x00, 0x00, 0x07, 0x6f, 0x70, 0x74, 0x69, 0x6f, 0x6e, 0x73, 0x00, 0x00, 0x00, 0x04, 0x68, 0x65, 0x61, 0x64,
    0x00, 0x00, 0x00, 0x04, 0x70, 0x6f, 0x73, 0x74, 0x00, 0x00, 0x00, 0x03, 0x70, 0x75, 0x74, 0x00, 0x00, 0x00, 0x06,
    0x64, 0x65, 0x6c, 0x65, 0x74, 0x65, 0x00, 0x00, 0x00, 0x05, 0x74, 0x72, 0x61, 0x63, 0x65, 0x00, 0x00, 0x00, 0x06,
    0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x00, 0x00, 0x00, 0x0e, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x63, 0x68,
    0x61, 0x72, 0x73, 0x65, 0x74, 0x00, 0x00, 0x00, 0x0f, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x65, 0x6e, 0x63,
    0x6f, 0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x0f, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x6c, 0x61, 0x6e,
    0x67, 0x75, 0x61, 0x67, 0x65, 0x00, 0x00, 0x00, 0x0d, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x72, 0x61, 0x6e,
    0x67, 0x65, 0x73, 0x00, 0x00, 0x00, 0x03, 0x61, 0x67, 0x65, 0x00, 0x00, 0x00, 0x05, 0x61, 0x6c, 0x6c, 0x6f, 0x77,
    0x00, 0x00, 0x00, 0x0d, 0x61, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x7a, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00,
    0x00, 0x0d, 0x63, 0x61, 0x63, 0x68, 0x65, 0x2d, 0x63, 0x6f, 0x6e, 0x74, 0x72, 0x6f, 0x6c, 0x00, 0x00, 0x00, 0x0a,
    0x63, 0x6f, 0x6e, 0x6e, 0x65, 0x63, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0c, 0x63, 0x6f, 0x6e, 0x74, 0x65,
    0x6e, 0x74, 0x2d, 0x62, 0x61, 0x73, 0x65, 0x00, 0x00, 0x00, 0x10, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d,
    0x65, 0x6e, 0x63, 0x6f, 0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x10, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74,
    0x2d, 0x6c, 0x61, 0x6e, 0x67, 0x75, 0x61, 0x67, 0x65, 0x00, 0x00, 0x00, 0x0e, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e,
    0x74, 0x2d, 0x6c, 0x65, 0x6e, 0x67, 0x74, 0x68, 0x00, 0x00, 0x00, 0x10, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74,
    0x2d, 0x6c, 0x6f, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0b, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e,
    0x74, 0x2d, 0x6d, 0x64, 0x35, 0x00, 0x00, 0x00, 0x0d, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x72, 0x61,
    0x6e, 0x67, 0x65, 0x00, 0x00, 0x00, 0x0c, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x74, 0x79, 0x70, 0x65,
    0x00, 0x00, 0x00, 0x04, 0x64, 0x61, 0x74, 0x65, 0x00, 0x00, 0x00, 0x04, 0x65, 0x74, 0x61, 0x67, 0x00, 0x00, 0x00,
    0x06, 0x65, 0x78, 0x70, 0x65, 0x63, 0x74, 0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x70, 0x69, 0x72, 0x65, 0x73, 0x00,
    0x00, 0x00, 0x04, 0x66, 0x72, 0x6f, 0x6d, 0x00, 0x00, 0x00, 0x04, 0x68, 0x6f, 0x73, 0x74, 0x00, 0x00, 0x00, 0x08,
    0x69, 0x66, 0x2d, 0x6d, 0x61, 0x74, 0x63, 0x68, 0x00, 0x00, 0x00, 0x11, 0x69, 0x66, 0x2d, 0x6d, 0x6f, 0x64, 0x69,
    0x66, 0x69, 0x65, 0x64, 0x2d, 0x73, 0x69, 0x6e, 0x63, 0x65, 0x00, 0x00, 0x00, 0x0d, 0x69, 0x66, 0x2d, 0x6e, 0x6f,
    0x6e, 0x65, 0x2d, 0x6d, 0x61, 0x74, 0x63, 0x68, 0x00, 0x00, 0x00, 0x08, 0x69, 0x66, 0x2d, 0x72, 0x61, 0x6e, 0x67,
    0x65, 0x00, 0x00, 0x00, 0x13, 0x69, 0x66, 0x2d, 0x75, 0x6e, 0x6d, 0x6f, 0x64, 0x69, 0x66, 0x69, 0x65, 0x64, 0x2d,
    0x73, 0x69, 0x6e, 0x63, 0x65, 0x00, 0x00, 0x00, 0x0d, 0x6c, 0x61, 0x73, 0x74, 0x2d, 0x6d, 0x6f, 0x64, 0x69, 0x66,
    0x69, 0x65, 0x64, 0x00, 0x00, 0x00, 0x08, 0x6c, 0x6f, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0c,
    0x6d, 0x61, 0x78, 0x2d, 0x66, 0x6f, 0x72, 0x77, 0x61, 0x72, 0x64, 0x73, 0x00, 0x00, 0x00, 0x06, 0x70, 0x72, 0x61,
    0x67, 0x6d, 0x61, 0x00, 0x00, 0x00, 0x12, 0x70, 0x72, 0x6f, 0x78, 0x79, 0x2d, 0x61, 0x75, 0x74, 0x68, 0x65, 0x6e,
    0x74, 0x69, 0x63, 0x61, 0x74, 0x65, 0x00, 0x00, 0x00, 0x13, 0x70, 0x72, 0x6f, 0x78, 0x79, 0x2d, 0x61, 0x75, 0x74,
    0x68, 0x6f, 0x72, 0x69, 0x7a, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x05, 0x72, 0x61, 0x6e, 0x67, 0x65,
    0x00, 0x00, 0x00, 0x07, 0x72, 0x65, 0x66, 0x65, 0x72, 0x65, 0x72, 0x00, 0x00, 0x00, 0x0b, 0x72, 0x65, 0x74, 0x72,
    0x79, 0x2d, 0x61, 0x66, 0x74, 0x65, 0x72, 0x00, 0x00, 0x00, 0x06, 0x73, 0x65, 0x72, 0x76, 0x65, 0x72, 0x00, 0x00,
    0x00, 0x02, 0x74, 0x65, 0x00, 0x00, 0x00, 0x07, 0x74, 0x72, 0x61, 0x69, 0x6c, 0x65, 0x72, 0x00, 0x00, 0x00, 0x11,
    0x74, 0x72, 0x61, 0x6e, 0x73, 0x66, 0x65, 0x72, 0x2d, 0x65, 0x6e, 0x63, 0x6f, 0x64, 0x69, 0x6e, 0x67, 0x00, 0x00,
    0x00, 0x07, 0x75, 0x70, 0x67, 0x72, 0x61, 0x64, 0x65, 0x00, 0x00, 0x00, 0x0a, 0x75, 0x73, 0x65, 0x72, 0x2d, 0x61,
    0x67, 0x65, 0x6e, 0x74, 0x00, 0x00, 0x00, 0x04, 0x76, 0x61, 0x72, 0x79, 0x00, 0x00, 0x00, 0x03, 0x76, 0x69, 0x61,
    0x00, 0x00, 0x00, 0x07, 0x77, 0x61, 0x72, 0x6e, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x10, 0x77, 0x77, 0x77, 0x2d,
    0x61, 0x75, 0x74, 0x68, 0x65, 0x6e, 0x74, 0x69, 0x63, 0x61, 0x74, 0x65, 0x00, 0x00, 0x00, 0x06, 0x6d, 0x65, 0x74,
    0x68, 0x6f, 0x64, 0x00, 0x00, 0x00, 0x03, 0x67, 0x65, 0x74, 0x00, 0x00, 0x00, 0x06, 0x73, 0x74, 0x61, 0x74, 0x75,
    0x73, 0x00, 0x00, 0x00, 0x06, 0x32, 0x30, 0x30, 0x20, 0x4f, 0x4b, 0x00, 0x00, 0x00, 0x07, 0x76, 0x65, 0x72, 0x73,
    0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x08, 0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e, 0x31, 0x00, 0x00, 0x00, 0x03,
    0x75, 0x72, 0x6c, 0x00, 0x00, 0x00, 0x06, 0x70, 0x75, 0x62, 0x6c, 0x69, 0x63, 0x00, 0x00, 0x00, 0x0a, 0x73, 0x65,
    0x74, 0x2d, 0x63, 0x6f, 0x6f, 0x6b, 0x69, 0x65, 0x00, 0x00, 0x00, 0x0a, 0x6b, 0x65, 0x65, 0x70, 0x2d, 0x61, 0x6c,
    0x69, 0x76, 0x65, 0x00, 0x00, 0x00, 0x06, 0x6f, 0x72, 0x69, 0x67, 0x69, 0x6e, 0x31, 0x30, 0x30, 0x31, 0x30, 0x31,
    0x32, 0x30, 0x31, 0x32, 0x30, 0x32, 0x32, 0x30, 0x35, 0x32, 0x30, 0x36, 0x33, 0x30, 0x30, 0x33, 0x30, 0x32, 0x33,
    0x30, 0x33, 0x33, 0x30, 0x34, 0x33, 0x30, 0x35, 0x33, 0x30, 0x36, 0x33, 0x30, 0x37, 0x34, 0x30, 0x32, 0x34, 0x30,
    0x35, 0x34, 0x30, 0x36, 0x34, 0x30, 0x37, 0x34, 0x30, 0x38, 0x34, 0x30, 0x39, 0x34, 0x31, 0x30, 0x34, 0x31, 0x31,
    0x34, 0x31, 0x32, 0x34, 0x31, 0x33, 0x34, 0x31, 0x34, 0x34, 0x31, 0x35, 0x34, 0x31, 0x36, 0x34, 0x31, 0x37, 0x35,
    0x30, 0x32, 0x35, 0x30, 0x34, 0x35, 0x30, 0x35, 0x32, 0x30, 0x33, 0x20, 0x4e, 0x6f, 0x6e, 0x2d, 0x41, 0x75, 0x74,
    0x68, 0x6f, 0x72, 0x69, 0x74, 0x61, 0x74, 0x69, 0x76, 0x65, 0x20, 0x49, 0x6e, 0x66, 0x6f, 0x72, 0x6d, 0x61, 0x74,
    0x69, 0x6f, 0x6e, 0x32, 0x30, 0x34, 0x20, 0x4e, 0x6f, 0x20, 0x43, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x33, 0x30,
    0x31, 0x20, 0x4d, 0x6f, 0x76, 0x65, 0x64, 0x20, 0x50, 0x65, 0x72, 0x6d, 0x61, 0x6e, 0x65, 0x6e, 0x74, 0x6c, 0x79,
    0x34, 0x30, 0x30, 0x20, 0x42, 0x61, 0x64, 0x20, 0x52, 0x65, 0x71, 0x75, 0x65, 0x73, 0x74, 0x34, 0x30, 0x31, 0x20,
    0x55, 0x6e, 0x61, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x7a, 0x65, 0x64, 0x34, 0x30, 0x33, 0x20, 0x46, 0x6f, 0x72,
    0x62, 0x69, 0x64, 0x64, 0x65, 0x6e, 0x34, 0x30, 0x34, 0x20, 0x4e, 0x6f, 0x74, 0x20, 0x46, 0x6f, 0x75, 0x6e, 0x64,
    0x35, 0x30, 0x30, 0x20, 0x49, 0x6e, 0x74, 0x65, 0x72, 0x6e, 0x61, 0x6c, 0x20, 0x53, 0x65, 0x72, 0x76, 0x65, 0x72,
    0x20, 0x45, 0x72, 0x72, 0x6f, 0x72, 0x35, 0x30, 0x31, 0x20, 0x4e, 0x6f, 0x74, 0x20, 0x49, 0x6d, 0x70, 0x6c, 0x65,
    0x6d, 0x65, 0x6e, 0x74, 0x65, 0x64, 0x35, 0x30, 0x33, 0x20, 0x53, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65, 0x20, 0x55,
    0x6e, 0x61, 0x76, 0x61, 0x69, 0x6c, 0x61, 0x62, 0x6c, 0x65, 0x4a, 0x61, 0x6e, 0x20, 0x46, 0x65, 0x62, 0x20, 0x4d,
    0x61, 0x72, 0x20, 0x41, 0x70, 0x72, 0x20, 0x4d, 0x61, 0x79, 0x20, 0x4a, 0x75, 0x6e, 0x20, 0x4a, 0x75, 0x6c, 0x20,
    0x41, 0x75, 0x67, 0x20, 0x53, 0x65, 0x70, 0x74, 0x20, 0x4f, 0x63, 0x74, 0x20, 0x4e, 0x6f, 0x76, 0x20, 0x44, 0x65,
    0x63, 0x20, 0x30, 0x30, 0x3a, 0x30, 0x30, 0x3a, 0x30, 0x30, 0x20, 0x4d, 0x6f, 0x6e, 0x2c, 0x20, 0x54, 0x75, 0x65,
    0x2c, 0x20, 0x57, 0x65, 0x64, 0x2c, 0x20, 0x54, 0x68, 0x75, 0x2c, 0x20, 0x46, 0x72, 0x69, 0x2c, 0x20, 0x53, 0x61,
    0x74, 0x2c, 0x20, 0x53, 0x75, 0x6e, 0x2c, 0x20, 0x47, 0x4d, 0x54, 0x63, 0x68, 0x75, 0x6e, 0x6b, 0x65, 0x64, 0x2c,
    0x74, 0x65, 0x78, 0x74, 0x2f, 0x68, 0x74, 0x6d, 0x6c, 0x2c, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x2f, 0x70, 0x6e, 0x67,
    0x2c, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x2f, 0x6a, 0x70, 0x67, 0x2c, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x2f, 0x67, 0x69,
    0x66, 0x2c, 0x61, 0x70, 0x70, 0x6c, 0x69, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x2f, 0x78, 0x6d, 0x6c, 0x2c, 0x61,
    0x70, 0x70, 0x6c, 0x69, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x2f, 0x78, 0x68, 0x74, 0x6d, 0x6c, 0x2b, 0x78, 0x6d,
    0x6c, 0x2c, 0x74, 0x65, 0x78, 0x74, 0x2f, 0x70, 0x6c, 0x61, 0x69, 0x6e, 0x2c, 0x74, 0x65, 0x78, 0x74, 0x2f, 0x6a,
    0x61, 0x76, 0x61, 0x73, 0x63, 0x72, 0x69, 0x70, 0x74, 0x2c, 0x70, 0x75, 0x62, 0x6c, 0x69, 0x63, 0x70, 0x72, 0x69,
    0x76, 0x61, 0x74, 0x65, 0x6d, 0x61, 0x78, 0x2d, 0x61, 0x67, 0x65, 0x3d, 0x67, 0x7a, 0x69, 0x70, 0x2c, 0x64, 0x65,
    0x66, 0x6c, 0x61, 0x74, 0x65, 0x2c, 0x73, 0x64, 0x63, 0x68, 0x63, 0x68, 0x61, 0x72, 0x73, 0x65, 0x74, 0x3d, 0x75,
    0x74, 0x66, 0x2d, 0x38, 0x63, 0x68, 0x61, 0x72, 0x73, 0x65, 0x74, 0x3d, 0x69, 0x73, 0x6f, 0x2d, 0x38, 0x38, 0x35,
    0x39, 0x2d, 0x31, 0x2c, 0x75, 0x74, 0x66, 0x2d, 0x2c, 0x2a, 0x2c, 0x65, 0x6e, 0x71, 0x3d, 0x30, 0x2e,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn adler32(b: &[u8]) -> u32 {
        let (mut a, mut s) = (1u32, 0u32);
        for x in b {
            a = (a + *x as u32) % 65521;
            s = (s + a) % 65521;
        }
        (s << 16) | a
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        assert_eq!(adler32(&DICTIONARY), DICTIONARY_ID);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
    }

    fn round_trip(frames: &[Frame]) {
        let (mut client, mut server) = (Codec::new(), Codec::new());
        let mut wire = Vec::new();
        for f in frames {
            client.encode(f, &mut wire).unwrap();
        }
        let mut at = 0;
        for f in frames {
            // A frame not yet whole is not decoded.
            let (got, used) = server.decode(&wire[at..]).unwrap().expect("a whole frame");
            assert_eq!(&got, f);
            assert!(server.decode(&wire[at..at + used - 1]).unwrap().is_none());
            at += used;
        }
        assert_eq!(at, wire.len());
    }

    #[test]
    fn frames_round_trip() {
        let headers = |pairs: &[(&str, &str)]| pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        round_trip(&[
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: headers(&[("streamtype", "error")]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 7,
                flags: FLAG_FIN,
                headers: headers(&[("streamtype", "stdin"), ("port", "8080\080")]),
            },
            Frame::SynReply { stream_id: 3, flags: 0, headers: Headers::new() },
            Frame::Headers { stream_id: 3, flags: FLAG_FIN, headers: headers(&[("a", "")]) },
            Frame::Data { stream_id: 5, flags: 0, data: b"hello".to_vec() },
            Frame::Data { stream_id: 5, flags: FLAG_FIN, data: Vec::new() },
            Frame::RstStream { stream_id: 3, status: rst::CANCEL },
            Frame::Settings { flags: 0, entries: vec![(0, 7, 65536), (1, 4, 100)] },
            Frame::Ping { id: 2 },
            Frame::WindowUpdate { stream_id: 1, delta: 1 << 20 },
            Frame::GoAway { last_good_stream_id: 5, status: goaway::OK },
        ]);
    }

    #[test]
    fn known_bytes() {
        let mut c = Codec::new();
        let mut out = Vec::new();
        c.encode(&Frame::Ping { id: 1 }, &mut out).unwrap();
        assert_eq!(out, [0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1]);
        out.clear();
        c.encode(&Frame::RstStream { stream_id: 3, status: rst::CANCEL }, &mut out).unwrap();
        assert_eq!(out, [0x80, 0x03, 0x00, 0x03, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5]);
        out.clear();
        c.encode(&Frame::Data { stream_id: 5, flags: 0, data: b"hello".to_vec() }, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 5, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        // A SYN_REPLY with an empty block compressed by another zlib (python's, level 9): the
        // dictionary id in its zlib header, then one sync-flushed block.
        let reply = [
            0x80, 0x03, 0x00, 0x02, 0, 0, 0, 0x14, 0, 0, 0, 1, 0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xa6, 0x23,
            0x06, 0, 0, 0, 0, 0xff, 0xff,
        ];
        let (f, used) = Codec::new().decode(&reply).unwrap().unwrap();
        assert_eq!((f, used), (Frame::SynReply { stream_id: 1, flags: 0, headers: Headers::new() }, reply.len()));
    }

    #[test]
    fn header_blocks_share_one_stream() {
        // The second block only decodes after the first: one zlib stream per direction.
        let (mut a, mut b) = (Codec::new(), Codec::new());
        let (mut first, mut second) = (Vec::new(), Vec::new());
        let h: Headers = vec![("streamtype".into(), "stdout".into())];
        a.encode(&Frame::SynReply { stream_id: 1, flags: 0, headers: h.clone() }, &mut first).unwrap();
        a.encode(&Frame::SynReply { stream_id: 3, flags: 0, headers: h.clone() }, &mut second).unwrap();
        assert!(Codec::new().decode(&second).is_err(), "a later block alone does not decode");
        assert_eq!(
            b.decode(&first).unwrap().unwrap().0,
            Frame::SynReply { stream_id: 1, flags: 0, headers: h.clone() }
        );
        assert_eq!(b.decode(&second).unwrap().unwrap().0, Frame::SynReply { stream_id: 3, flags: 0, headers: h });
    }

    #[test]
    fn bad_input_is_refused() {
        let mut out = Vec::new();
        let mut c = Codec::new();
        assert!(c
            .encode(&Frame::SynReply { stream_id: 1, flags: 0, headers: vec![("Upper".into(), "x".into())] }, &mut out)
            .is_err());
        let twice = vec![("a".into(), "1".into()), ("a".into(), "2".into())];
        assert!(c.encode(&Frame::SynReply { stream_id: 1, flags: 0, headers: twice }, &mut out).is_err());
        let refused = |bytes: &[u8], what: &str| {
            let e = Codec::new().decode(bytes).expect_err(what);
            assert!(e.0.contains(what), "{what}: {e}");
        };
        refused(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1], "version 2");
        refused(&[0x80, 0x03, 0x00, 0x05, 0, 0, 0, 0], "control frame type 5");
        refused(&[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 5, 0, 0, 0, 1, 9], "PING of 5 bytes");
        refused(&[0x80, 0x03, 0x00, 0x06, 0x00, 0x10, 0, 1], "a frame of 1048577 bytes");
        refused(&[0, 0, 0, 0, 0, 0, 0, 0], "DATA on stream 0");
        refused(&[0x80, 0x03, 0x00, 0x04, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff], "SETTINGS of 4 bytes");
        // A header block that is not zlib, and one compressed without the dictionary.
        refused(&[0x80, 0x03, 0x00, 0x02, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4], "header block");
        let mut plain = flate2::Compress::new(Compression::default(), true);
        let mut block = Vec::with_capacity(64);
        plain.compress_vec(&[0, 0, 0, 0], &mut block, FlushCompress::Sync).unwrap();
        let mut frame = vec![0x80, 0x03, 0x00, 0x02, 0, 0, 0, (4 + block.len()) as u8, 0, 0, 0, 1];
        frame.extend_from_slice(&block);
        assert!(Codec::new().decode(&frame).is_ok(), "no dictionary needed for a block that uses none");
    }

    #[test]
    fn a_header_bomb_is_refused() {
        // A small block that inflates past the limit (a value of 1 MiB of one byte).
        let mut raw = vec![0, 0, 0, 1, 0, 0, 0, 1, b'a'];
        raw.extend_from_slice(&(1u32 << 20).to_be_bytes());
        raw.extend(std::iter::repeat_n(b'x', 1 << 20));
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(&DICTIONARY).unwrap();
        let mut block = Vec::with_capacity(1 << 21);
        z.compress_vec(&raw, &mut block, FlushCompress::Sync).unwrap();
        assert!(block.len() < 8192, "{}", block.len());
        let mut frame = vec![0x80, 0x03, 0x00, 0x02, 0];
        frame.extend_from_slice(&((4 + block.len()) as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(&[0, 0, 0, 1]);
        frame.extend_from_slice(&block);
        let e = Codec::new().decode(&frame).unwrap_err();
        assert!(e.0.contains("inflating past"), "{e}");
    }

    #[test]
    fn no_input_panics() {
        // Random frames (a deterministic generator), some with valid headers in front.
        let mut next = super::super::test_random(0x2545_f491_4f6c_dd1d);
        for round in 0..5_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && bytes.len() >= 8 {
                bytes[0] = 0x80;
                bytes[1] = 3;
                bytes[2] = 0;
                bytes[3] = (next() % 10) as u8;
                let body = (bytes.len() - 8) as u32;
                bytes[5..8].copy_from_slice(&body.to_be_bytes()[1..]);
            }
            let mut c = Codec::new();
            let mut rest: &[u8] = &bytes;
            while let Ok(Some((_, used))) = c.decode(rest) {
                rest = &rest[used..];
            }
        }
    }
}
