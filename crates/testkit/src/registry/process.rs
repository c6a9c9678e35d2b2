//! The registry process: Debian's `docker-registry` on a free loopback port with its own
//! storage and configuration (plain, htpasswd, TLS or token authentication), stopped by pid.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;
use super::token::TokenServer;
use crate::check::poll_until;

pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    htpasswd: Option<(String, String)>,
    /// Serve HTTPS with this certificate and key.
    tls: Option<(PathBuf, PathBuf)>,
    /// Token authentication: (realm, service, issuer, root certificate bundle).
    token: Option<(String, String, String, PathBuf)>,
}

impl Registry {
    /// Starts a registry storing into `dir/storage`; with `htpasswd`, basic auth is required.
    pub fn start(dir: &Path, htpasswd: Option<(&str, &str)>) -> io::Result<Registry> {
        Registry::launch(dir, htpasswd.map(|(u, p)| (u.to_string(), p.to_string())), None, None)
    }

    /// Starts a registry that serves HTTPS only, with `cert` and `key`.
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path) -> io::Result<Registry> {
        Registry::launch(dir, None, Some((cert.to_path_buf(), key.to_path_buf())), None)
    }

    /// Starts a registry that accepts only Bearer tokens issued by `tokens` (distribution's
    /// own token authentication: JWTs signed by a key whose certificate it trusts).
    pub fn start_token_auth(dir: &Path, tokens: &TokenServer) -> io::Result<Registry> {
        let token = (tokens.realm(), tokens.service.clone(), tokens.issuer.clone(), tokens.cert.clone());
        Registry::launch(dir, None, None, Some(token))
    }

    fn launch(
        dir: &Path,
        htpasswd: Option<(String, String)>,
        tls: Option<(PathBuf, PathBuf)>,
        token: Option<(String, String, String, PathBuf)>,
    ) -> io::Result<Registry> {
        let mut r = Registry { child: None, port: free_port()?, dir: dir.to_path_buf(), htpasswd, tls, token };
        r.restart()?;
        Ok(r)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.join("storage")
    }

    /// (Re)starts the registry process on the same port and storage.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        std::fs::create_dir_all(self.storage())?;
        let mut auth = String::new();
        if let Some((u, p)) = &self.htpasswd {
            let out = crate::children::output(Command::new("htpasswd").args(["-Bbn", u, p]))
                .map_err(|e| io::Error::new(e.kind(), format!("htpasswd (Debian package apache2-utils): {e}")))?;
            if !out.status.success() {
                return Err(io::Error::other(format!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr))));
            }
            std::fs::write(self.dir.join("htpasswd"), out.stdout)?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                self.dir.join("htpasswd").display()
            );
        }
        if let Some((realm, service, issuer, bundle)) = &self.token {
            auth = format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                bundle.display()
            );
        }
        let tls = match &self.tls {
            Some((c, k)) => format!("  tls:\n    certificate: {}\n    key: {}\n", c.display(), k.display()),
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n  secret: berth-test-secret\n{tls}{auth}",
            self.storage().display(),
            self.port
        );
        let cfg = self.dir.join("config.yml");
        std::fs::write(&cfg, config)?;
        let log = std::fs::File::create(self.dir.join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("docker-registry (Debian package docker-registry): {e}")))?;
        self.child = Some(child);
        wait_listening(self.port, Duration::from_secs(30)).map_err(|e| {
            let log = std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
            io::Error::other(format!("docker-registry did not start: {e}\n{log}"))
        })
    }

    /// Stops the registry (SIGTERM, then SIGKILL) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill by pid of our own unreaped child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            // Err: a suite's reaper (a subreaper's thread) already collected it.
            if !poll_until(Duration::from_secs(5), || !matches!(c.try_wait(), Ok(None))) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until something on 127.0.0.1:`port` answers an HTTP request.
pub fn wait_listening(port: u16, timeout: Duration) -> io::Result<()> {
    let answers = || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
        let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n");
        let mut buf = [0u8; 12];
        s.read(&mut buf).map(|n| n > 0).unwrap_or(false)
    };
    if poll_until(timeout, answers) {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::TimedOut, format!("nothing listening on port {port}")))
    }
}
