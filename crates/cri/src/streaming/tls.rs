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
    Ok(Socket::Unix(session_end))
}

fn pump(mut tcp: TcpStream, mut plain: UnixStream, mut conn: ServerConnection) {
    let mut buf = vec![0u8; 16 << 10];
    let (mut tcp_open, mut plain_open) = (true, true);
    loop {
        while conn.wants_write() {
            if conn.write_tls(&mut tcp).is_err() {
                return;
            }
        }
        if !plain_open {
            break;
        }
        let fds: Vec<_> = [tcp_open.then(|| tcp.as_fd()), Some(plain.as_fd())].into_iter().flatten().collect();
        let Ok(ready) = berth_sys::process::poll_readable(&fds, -1) else { break };
        let (tcp_ready, plain_ready) = if tcp_open { (ready[0], ready[1]) } else { (false, ready[0]) };
        if tcp_ready {
            match conn.read_tls(&mut tcp) {
                Ok(0) => {
                    tcp_open = false;
                    let _ = plain.shutdown(Shutdown::Write);
                }
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
                                if plain.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(_) => return,
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if plain_ready {
            match plain.read(&mut buf) {
                Ok(0) | Err(_) => {
                    // The session ended: close_notify, then the connection.
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
