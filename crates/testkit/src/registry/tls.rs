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
    let steps: Vec<Vec<String>> = vec![
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.crt"),
            "-days",
            "2",
            "-subj",
            "/CN=berth test CA",
        ],
        vec![
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
            "-subj",
            "/CN=127.0.0.1",
        ],
        vec![
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-out",
            &p("server.crt"),
            "-days",
            "2",
            "-extfile",
            &p("san.ext"),
        ],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect();
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("openssl (Debian package openssl): {e}")))?;
        if !out.status.success() {
            return Err(io::Error::other(format!("openssl {}: {}", args[0], String::from_utf8_lossy(&out.stderr))));
        }
    }
    Ok((dir.join("ca.crt"), dir.join("server.crt"), dir.join("server.key")))
}

pub(super) fn openssl(args: &[&str], input: Option<&[u8]>) -> io::Result<Vec<u8>> {
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
