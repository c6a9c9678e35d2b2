//! Putting images into a registry: skopeo (Debian's), and a manifest PUT for what skopeo
//! cannot push.

use std::io::{self, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};

use super::http::read_head;

/// PUTs a manifest or index document to the plain-HTTP registry at `addr` (`host:port`) as
/// `repo:reference` (a tag or its digest), as a push tool does; skopeo cannot push an index
/// that lists another index. Returns the status line on anything but 201.
pub fn put_manifest(addr: &str, repo: &str, reference: &str, bytes: &[u8], media_type: &str) -> io::Result<()> {
    let mut c = TcpStream::connect(addr)?;
    let head = format!(
        "PUT /v2/{repo}/manifests/{reference} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {media_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        bytes.len()
    );
    c.write_all(head.as_bytes())?;
    c.write_all(bytes)?;
    let mut r = BufReader::new(c);
    let Some(resp) = read_head(&mut r)? else { return Err(io::Error::other("no response to the manifest PUT")) };
    if resp[0].split(' ').nth(1) != Some("201") {
        let mut body = String::new();
        let _ = r.take(4096).read_to_string(&mut body);
        return Err(io::Error::other(format!("PUT {repo}:{reference}: {} {body}", resp[0])));
    }
    Ok(())
}

/// Runs skopeo (Debian's) with the given arguments; errors carry its stderr.
pub fn skopeo(args: &[&str]) -> io::Result<String> {
    let out = crate::children::output(Command::new("skopeo").args(args).stdin(Stdio::null()))
        .map_err(|e| io::Error::new(e.kind(), format!("skopeo (Debian package skopeo): {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!("skopeo {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Pushes the image `tag` of the OCI layout `layout` to `dest` (`host:port/repo:tag`) over
/// plain HTTP; `all` copies every image of an index; `format` "v2s2" converts to Docker
/// schema2.
pub fn skopeo_push(
    layout: &Path,
    tag: &str,
    dest: &str,
    all: bool,
    format: Option<&str>,
    creds: Option<&str>,
) -> io::Result<()> {
    let src = format!("oci:{}:{tag}", layout.display());
    let dst = format!("docker://{dest}");
    let mut args = vec!["copy", "--quiet", "--dest-tls-verify=false"];
    if all {
        args.push("--all");
    }
    if let Some(f) = format {
        args.push("--format");
        args.push(f);
    }
    if let Some(c) = creds {
        args.push("--dest-creds");
        args.push(c);
    }
    args.push(&src);
    args.push(&dst);
    skopeo(&args).map(drop)
}
