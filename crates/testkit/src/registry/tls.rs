//! Certificates for TLS tests: a test CA and a server certificate it signed, made with
//! Debian's openssl (which the token server also signs with).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A test certificate authority and a server certificate it signed for IP 127.0.0.1 (made
/// with Debian's openssl). Returns (CA certificate, server certificate, server key).
pub fn make_test_certs(dir: &Path) -> io::Result<(PathBuf, PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")?;
    self_signed(&dir.join("ca.key"), &dir.join("ca.crt"), "/CN=berth test CA")?;
    let (key, csr) = (p("server.key"), p("server.csr"));
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"], None)?;
    let (ca, ca_key, cert, ext) = (p("ca.crt"), p("ca.key"), p("server.crt"), p("san.ext"));
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
        None,
    )?;
    Ok((dir.join("ca.crt"), dir.join("server.crt"), dir.join("server.key")))
}

/// A new RSA key at `key` and a certificate for it at `cert`, signed by itself, for
/// `subject`, valid for two days.
pub(super) fn self_signed(key: &Path, cert: &Path, subject: &str) -> io::Result<()> {
    let (k, c) = (key.to_string_lossy(), cert.to_string_lossy());
    let args =
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &k, "-out", &c, "-days", "2", "-subj", subject];
    openssl(&args, None).map(drop)
}

/// Runs openssl with `args` (and `input` on its stdin); its stdout, or an error with its stderr.
pub(super) fn openssl(args: &[&str], input: Option<&[u8]>) -> io::Result<Vec<u8>> {
    // std collects this child's exit: a suite's reaper must not take it first.
    let _g = crate::children::SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_certificate_verifies_against_the_ca() {
        let dir = std::env::temp_dir().join(format!("berth-testkit-certs-{}", std::process::id()));
        let (ca, cert, key) = make_test_certs(&dir).unwrap();
        assert!(key.is_file());
        let (ca, cert) = (ca.to_string_lossy().into_owned(), cert.to_string_lossy().into_owned());
        let out = openssl(&["verify", "-CAfile", &ca, &cert], None).unwrap();
        assert!(String::from_utf8_lossy(&out).contains(": OK"), "{}", String::from_utf8_lossy(&out));
        let text = openssl(&["x509", "-in", &cert, "-noout", "-text"], None).unwrap();
        assert!(String::from_utf8_lossy(&text).contains("IP Address:127.0.0.1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
