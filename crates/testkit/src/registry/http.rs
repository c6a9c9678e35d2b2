//! The little HTTP/1.1 the proxy, the token server and the tests' own loopback servers speak:
//! a request or response head, a header of it, Basic credentials, a whole response.

use std::io::{self, BufRead, Write};

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

/// Reads a request's or response's head: its lines up to the empty one, without their line
/// ends (None: the peer closed before sending any).
pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Vec<String>>> {
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

/// The value of header `name` (any case) in `head`.
pub fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim().eq_ignore_ascii_case(name) {
            Some(v.trim())
        } else {
            None
        }
    })
}

/// Sends a response with `status`, the `extra` header lines and `body` (its length given, the
/// connection to be closed), and flushes it.
pub fn respond(c: &mut impl Write, status: &str, extra: &[String], body: &str) -> io::Result<()> {
    let mut s = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for e in extra {
        s.push_str(e);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.push_str(body);
    c.write_all(s.as_bytes())?;
    c.flush()
}

/// The credentials of an `Authorization: Basic` header of `head`, decoded (as leniently as a
/// server that takes what clients send: padding optional, trailing bits ignored).
pub(super) fn basic_credentials(head: &[String]) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let encoded = header(head, "Authorization")?.strip_prefix("Basic ")?;
    LENIENT.decode(encoded).ok()
}

#[cfg(test)]
mod tests {
    use super::basic_credentials;

    #[test]
    fn basic_credentials_padded_or_not() {
        let head = |auth: &str| vec!["GET /token HTTP/1.1".to_string(), format!("Authorization: {auth}")];
        assert_eq!(basic_credentials(&head("Basic dXNlcjpwYXNzd29yZA==")).as_deref(), Some(&b"user:password"[..]));
        assert_eq!(basic_credentials(&head("Basic dXNlcjpwYXNzd29yZA")).as_deref(), Some(&b"user:password"[..]));
        assert_eq!(basic_credentials(&head("Basic dXNlcjpwYXNz")).as_deref(), Some(&b"user:pass"[..]));
        assert_eq!(basic_credentials(&head("Basic not*base64")), None);
        assert_eq!(basic_credentials(&head("Bearer dXNlcjpwYXNz")), None);
        assert_eq!(basic_credentials(&["GET / HTTP/1.1".to_string()]), None);
    }
}
