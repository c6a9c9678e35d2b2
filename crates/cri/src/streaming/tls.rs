//! TLS for the streaming server (a configured certificate and key): each connection's TLS is
//! terminated by a pump thread that moves bytes between the client's TCP connection (TLS
//! records) and one end of a socket pair (plain bytes); the session runs on the other end,
//! as on a plain connection. The pump ends when either side does.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use super::socket::Socket;

/// The server's TLS configuration from PEM files: the certificate chain and its key.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &read(cert)?[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", cert.display()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &read(key)?[..])
        .map_err(|e| format!("{}: {e}", key.display()))?
        .ok_or_else(|| format!("{}: no PEM private key in it", key.display()))?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key: {e}"))?;
    Ok(Arc::new(config))
}

/// Terminates TLS on `tcp`: the plain side of the connection, for the session.
pub fn terminate(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<Socket> {
    let (session_end, pump_end) = UnixStream::pair()?;
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    std::thread::Builder::new().name("berthd-stream-tls".into()).spawn(move || pump(tcp, pump_end, conn))?;
    Ok(Socket::unix(session_end))
}

/// How long the pump lingers for the client's last bytes once the session has ended (so a
/// client still writing is not answered with a reset, which could discard what it has not
/// read yet).
const LINGER_MS: i32 = 5000;

fn pump(mut tcp: TcpStream, mut plain: UnixStream, mut conn: ServerConnection) {
    let mut buf = vec![0u8; 16 << 10];
    let (mut plain_open, mut tcp_write_open) = (true, true);
    loop {
        while conn.wants_write() {
            if conn.write_tls(&mut tcp).is_err() {
                let _ = tcp.shutdown(Shutdown::Both);
                return;
            }
        }
        if !plain_open && tcp_write_open {
            // The session ended and its close_notify is out: the end of what the server sends.
            let _ = tcp.shutdown(Shutdown::Write);
            tcp_write_open = false;
        }
        let fds: Vec<_> = [Some(tcp.as_fd()), plain_open.then(|| plain.as_fd())].into_iter().flatten().collect();
        let timeout = if plain_open { -1 } else { LINGER_MS };
        let Ok(ready) = berth_sys::process::poll_readable(&fds, timeout) else { break };
        if !ready.iter().any(|r| *r) {
            break;
        }
        if ready[0] {
            match conn.read_tls(&mut tcp) {
                // The client is gone.
                Ok(0) => break,
                Ok(_) => {
                    if conn.process_new_packets().is_err() {
                        // The alert goes out; the connection ends.
                        let _ = conn.write_tls(&mut tcp);
                        break;
                    }
                    loop {
                        match conn.reader().read(&mut buf) {
                            Ok(0) => {
                                // close_notify: the client sends no more.
                                let _ = plain.shutdown(Shutdown::Write);
                                break;
                            }
                            Ok(n) => {
                                // (A session that ended reads no more: its bytes are dropped.)
                                let _ = plain.write_all(&buf[..n]);
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                let _ = tcp.shutdown(Shutdown::Both);
                                return;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if plain_open && ready.get(1).copied().unwrap_or(false) {
            match plain.read(&mut buf) {
                Ok(0) | Err(_) => {
                    // The session ended: close_notify, then (above) the end of the stream.
                    plain_open = false;
                    conn.send_close_notify();
                }
                Ok(n) => {
                    if conn.writer().write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    }
    while conn.wants_write() {
        if conn.write_tls(&mut tcp).is_err() {
            break;
        }
    }
    let _ = tcp.shutdown(Shutdown::Both);
}
