//! Registry test harness: Debian's `docker-registry` (CNCF distribution) on 127.0.0.1 with a
//! free port and its own storage directory (plain, htpasswd basic auth, TLS, or token
//! authentication against the loopback `TokenServer` here, which signs JWTs with openssl), and a
//! loopback `Proxy` in front of it that the tests steer: it can demand Bearer tokens (issued
//! by its own token endpoint, the flow a registry with a token server uses), stall or cut a
//! blob download after a number of bytes, drip blobs or manifests one byte at a time,
//! redirect blob downloads to another host, and records every request it received.
//!
//! Processes are stopped by pid and reaped on drop; nothing is left running.

mod client;
pub mod http;
mod process;
mod proxy;
mod tls;
mod token;

use std::io;
use std::net::TcpListener;

pub use client::{put_manifest, skopeo, skopeo_push};
pub use process::{wait_listening, Registry};
pub use proxy::{AfterBudget, Drip, Proxy};
pub use tls::make_test_certs;
pub use token::TokenServer;

pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
