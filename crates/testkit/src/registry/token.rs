//! A token server on loopback, as a registry's authorization service, issuing RS256 JWTs
//! that `docker-registry` verifies.

use std::io::{self, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use super::http::{basic_credentials, read_head, respond};
use super::tls::{openssl, self_signed};

#[derive(Default)]
struct TokenLog {
    requests: Vec<String>,
}

/// A token server on loopback, as a registry's authorization service: it issues JWTs (RS256,
/// with the signing certificate in `x5c`) granting the requested scopes — pull to anyone,
/// push only with its basic credentials. Wrong credentials are refused.
pub struct TokenServer {
    pub port: u16,
    pub service: String,
    pub issuer: String,
    /// The signing certificate (the registry's `rootcertbundle`).
    pub cert: PathBuf,
    log: Arc<Mutex<TokenLog>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl TokenServer {
    pub fn start(dir: &Path, user: &str, password: &str) -> io::Result<TokenServer> {
        std::fs::create_dir_all(dir)?;
        let (key, cert) = (dir.join("signing.key"), dir.join("signing.crt"));
        let (k, c) = (key.to_string_lossy().into_owned(), cert.to_string_lossy().into_owned());
        self_signed(&key, &cert, "/CN=berth test token signer")?;
        let der = openssl(&["x509", "-in", &c, "-outform", "DER"], None)?;
        let x5c = STANDARD.encode(&der);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let log = Arc::new(Mutex::new(TokenLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (service, issuer) = ("berth-test-registry".to_string(), "berth-test-issuer".to_string());
        let ctx = (log.clone(), stop.clone(), service.clone(), issuer.clone(), user.to_string(), password.to_string());
        let accept = thread::spawn(move || {
            let (log, stop, service, issuer, user, password) = ctx;
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = serve_token(c, &log, &service, &issuer, &user, &password, &k, &x5c);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(TokenServer { port, service, issuer, cert, log, stop, accept: Some(accept) })
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The query strings received, each followed by ` basic=<whether valid credentials came>`.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().requests.clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[allow(clippy::too_many_arguments)]
fn serve_token(
    client: TcpStream,
    log: &Mutex<TokenLog>,
    service: &str,
    issuer: &str,
    user: &str,
    password: &str,
    key: &str,
    x5c: &str,
) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let Some(head) = read_head(&mut reader)? else { return Ok(()) };
    let path = head[0].split(' ').nth(1).unwrap_or("").to_string();
    let query = path.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default();
    let basic = basic_credentials(&head);
    let valid = basic.as_deref() == Some(format!("{user}:{password}").as_bytes());
    log.lock().unwrap().requests.push(format!("{query} basic={valid}"));
    if basic.is_some() && !valid {
        return respond(&mut client, "401 Unauthorized", &[], r#"{"details":"invalid credentials"}"#);
    }
    let mut svc = String::new();
    let mut access = Vec::new();
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = url_decode(v);
        match k {
            "service" => svc = v,
            "scope" => {
                // repository:NAME:ACTIONS (NAME may hold no colon in our tests)
                let parts: Vec<&str> = v.splitn(3, ':').collect();
                if parts.len() == 3 {
                    let mut actions: Vec<&str> = parts[2].split(',').filter(|a| *a == "pull" || *a == "push").collect();
                    if !valid {
                        actions.retain(|a| *a == "pull");
                    }
                    access.push(format!(
                        r#"{{"type":"{}","name":"{}","actions":[{}]}}"#,
                        parts[0],
                        parts[1],
                        actions.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(",")
                    ));
                }
            }
            _ => {}
        }
    }
    if svc != service {
        return respond(&mut client, "400 Bad Request", &[], r#"{"details":"unknown service"}"#);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header_json = format!(r#"{{"typ":"JWT","alg":"RS256","x5c":["{x5c}"]}}"#);
    let claims = format!(
        r#"{{"iss":"{issuer}","sub":"{}","aud":"{service}","exp":{},"nbf":{},"iat":{},"jti":"berth-{}","access":[{}]}}"#,
        if valid { user } else { "" },
        now + 300,
        now - 10,
        now,
        now,
        access.join(",")
    );
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header_json), URL_SAFE_NO_PAD.encode(claims));
    let sig = openssl(&["dgst", "-sha256", "-sign", key], Some(signing_input.as_bytes()))?;
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&sig));
    respond(
        &mut client,
        "200 OK",
        &["Content-Type: application/json".into()],
        &format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#),
    )
}
