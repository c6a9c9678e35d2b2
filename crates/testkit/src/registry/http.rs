//! The little HTTP/1.1 the proxy and the token server speak: a request or response head, a
//! header of it, Basic credentials, a whole response.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

pub(super) fn read_head(r: &mut BufReader<TcpStream>) -> io::Result<Option<Vec<String>>> {
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

pub(super) fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim().eq_ignore_ascii_case(name) {
            Some(v.trim())
        } else {
            None
        }
    })
}

pub(super) fn respond(c: &mut TcpStream, status: &str, extra: &[String], body: &str) -> io::Result<()> {
    let mut s = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for e in extra {
        s.push_str(e);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.push_str(body);
    c.write_all(s.as_bytes())
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
