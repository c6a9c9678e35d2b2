//! Credentials never travel in cleartext: a registry served over HTTPS (a loopback server
//! written here with rustls) that redirects to plain HTTP on its own host and port is refused,
//! so the Authorization header is never sent there. The same port also answers plain HTTP
//! (the first byte tells a TLS handshake from a request) and records what arrives that way.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use berth_image::auth::Credentials;
use berth_image::registry::Client;
use berth_image::Config;
use berth_testkit::registry::http::{header, read_head, respond};

/// Over TLS: 401 (basic) without credentials, then a redirect to plain HTTP on the same port.
fn serve_tls(s: impl Read + Write, port: u16) -> io::Result<()> {
    let mut s = BufReader::new(s);
    let head = read_head(&mut s)?.unwrap_or_default();
    let path = head.first().and_then(|l| l.split(' ').nth(1)).unwrap_or("/").to_string();
    if header(&head, "Authorization").is_none() {
        return respond(s.get_mut(), "401 Unauthorized", &["WWW-Authenticate: Basic realm=\"tls-test\"".into()], "");
    }
    respond(s.get_mut(), "302 Found", &[format!("Location: http://127.0.0.1:{port}{path}")], "")
}

fn handle(mut c: TcpStream, tls: Arc<rustls::ServerConfig>, port: u16, plain: &Mutex<Vec<String>>) -> io::Result<()> {
    c.set_nonblocking(false)?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut first = [0u8; 1];
    c.peek(&mut first)?;
    if first[0] == 0x16 {
        let conn = rustls::ServerConnection::new(tls).map_err(io::Error::other)?;
        serve_tls(rustls::StreamOwned::new(conn, c), port)
    } else {
        plain.lock().unwrap().push(read_head(&mut BufReader::new(&c))?.unwrap_or_default().join("\n"));
        respond(&mut c, "404 Not Found", &[], "")
    }
}

#[test]
fn https_registry_redirecting_to_plain_http_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = berth_testkit::registry::make_test_certs(&tmp.path().join("certs")).unwrap();
    let certs =
        rustls_pemfile::certs(&mut BufReader::new(File::open(&cert).unwrap())).collect::<Result<Vec<_>, _>>().unwrap();
    let key = rustls_pemfile::private_key(&mut BufReader::new(File::open(&key).unwrap())).unwrap().unwrap();
    let tls = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    // This test binary's only test: the test CA as the system roots.
    std::env::set_var("SSL_CERT_FILE", &ca);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let plain = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (plain, stop) = (plain.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let _ = handle(c, tls.clone(), port, &plain);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };

    let registry = format!("127.0.0.1:{port}");
    let creds = Credentials { username: "berth".into(), password: "s3cret".into() };
    let config = Config::parse("[registries]\nretries = 0\n", std::path::Path::new("test")).unwrap();
    let client = Client::new(&config, &registry, &registry, Some(creds), Vec::new());
    let err = client.get_manifest("test/x", "v1").err().map(|e| e.to_string());
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();

    let plain = plain.lock().unwrap();
    assert!(plain.iter().all(|h| !h.to_ascii_lowercase().contains("authorization")), "sent in cleartext: {plain:#?}");
    let err = err.expect("the redirect to plain HTTP was followed");
    assert!(err.contains("refusing") && err.contains("plain HTTP"), "{err}");
}
