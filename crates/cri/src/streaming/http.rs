//! The HTTP/1.1 that comes before a streaming connection's upgrade: one request head (no
//! body), read with bounds, and the responses the server gives (101, or an error and close).

use std::io::{self, Read, Write};

/// The most bytes a request head may take (request line and headers).
pub const MAX_HEAD: usize = 16 << 10;
/// The most header lines a request may have.
pub const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// the path without its query
    pub path: String,
    pub query: String,
    /// names in lowercase, in the order received
    pub headers: Vec<(String, String)>,
    /// bytes the client sent after the head (the upgraded protocol's first)
    pub rest: Vec<u8>,
}

/// Why a request head was refused: the status to answer with and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    pub fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal { status, message: message.into() }
    }
}

impl Request {
    /// Every value of a header, comma-separated lists split, each trimmed.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// Whether a header's value (as a comma-separated list) holds `token`, case-insensitively.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name).iter().any(|v| v.eq_ignore_ascii_case(token))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one request head from `r` (its read timeout bounds the wait).
pub fn read_request(r: &mut impl Read) -> Result<Request, Refusal> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(Refusal::new(431, "request head too large"));
        }
        let n = match r.read(&mut chunk) {
            Ok(0) => return Err(Refusal::new(400, "connection closed before the request head ended")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Refusal::new(408, format!("reading the request: {e}"))),
        };
        buf.extend_from_slice(&chunk[..n]);
    };
    if end > MAX_HEAD {
        return Err(Refusal::new(431, "request head too large"));
    }
    parse_head(&buf[..end], buf[end + 4..].to_vec())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8], rest: Vec<u8>) -> Result<Request, Refusal> {
    let text = std::str::from_utf8(head).map_err(|_| Refusal::new(400, "request head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::new(400, format!("malformed request line {line:?}")));
    };
    if version != "HTTP/1.1" {
        return Err(Refusal::new(505, format!("{version}: only HTTP/1.1 is served")));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Refusal::new(400, format!("malformed method {method:?}")));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return Err(Refusal::new(400, format!("malformed request target {target:?}")));
    }
    let mut headers = Vec::new();
    for l in lines {
        if headers.len() >= MAX_HEADERS {
            return Err(Refusal::new(431, "too many header lines"));
        }
        let Some((name, value)) = l.split_once(':') else {
            return Err(Refusal::new(400, format!("malformed header line {l:?}")));
        };
        if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(Refusal::new(400, format!("malformed header name {name:?}")));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Request { method: method.into(), path: path.into(), query: query.into(), headers, rest })
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// A complete response with a text body; the connection closes after it.
pub fn respond(w: &mut impl Write, status: u16, headers: &[(&str, &str)], body: &str) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    w.write_all(out.as_bytes())?;
    w.flush()
}

/// `101 Switching Protocols` with the headers given.
pub fn switching_protocols(w: &mut impl Write, headers: &[(&str, &str)]) -> io::Result<()> {
    let mut out = String::from("HTTP/1.1 101 Switching Protocols\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    w.write_all(out.as_bytes())?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_head_and_keeps_what_follows() {
        let raw = b"POST /exec/abc?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
                    X-Stream-Protocol-Version: v3.channel.k8s.io, channel.k8s.io\r\nUpgrade: SPDY/3.1\r\n\
                    Connection: Upgrade\r\n\r\n\x80\x03";
        let r = read_request(&mut &raw[..]).unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str(), r.query.as_str()), ("POST", "/exec/abc", "x=1"));
        assert_eq!(r.values("x-stream-protocol-version"), ["v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"]);
        assert!(r.has_token("upgrade", "spdy/3.1") && r.has_token("connection", "upgrade"));
        assert_eq!(r.rest, b"\x80\x03");
    }

    #[test]
    fn refuses_malformed_and_oversized_heads() {
        for (raw, status) in [
            (&b"GET /x HTTP/1.0\r\n\r\n"[..], 505),
            (b"GET  /x HTTP/1.1\r\n\r\n", 400),
            (b"get /x HTTP/1.1\r\n\r\n", 400),
            (b"GET x HTTP/1.1\r\n\r\n", 400),
            (b"GET /x HTTP/1.1\r\nno colon\r\n\r\n", 400),
            (b"GET /x HTTP/1.1\r\nbad name: v\r\n\r\n", 400),
            (b"GET /x HTTP/1.1\r\nHost: a\r\n", 400),
            (b"\xff\xfe /x HTTP/1.1\r\n\r\n", 400),
        ] {
            assert_eq!(read_request(&mut &raw[..]).unwrap_err().status, status, "{raw:?}");
        }
        let mut big = b"GET /x HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert_eq!(read_request(&mut &big[..]).unwrap_err().status, 431);
        let mut many = b"GET /x HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend(format!("h{i}: v\r\n").bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(read_request(&mut &many[..]).unwrap_err().status, 431);
    }
}
