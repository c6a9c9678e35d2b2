//! Port-forward over SPDY (`portforward.k8s.io`): the client opens an error stream and a data
//! stream per forwarded TCP connection (headers `port` and `requestid`); once both are there
//! the server connects to the port on the pod's loopback, in its network namespace, and
//! copies bytes both ways on the data stream. Each connection is independent; the SPDY
//! connection lives until the client leaves.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::conn::{self, header, Writer};
use super::spdy::{rst, Headers};

/// The protocol's name in `X-Stream-Protocol-Version`.
pub const PROTOCOL: &str = "portforward.k8s.io";

/// The most forwarded connections one SPDY connection may have open at once.
pub const MAX_PAIRS: usize = 256;

/// How long a connection to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the pod's ports are: its network namespace, or the node's (host network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    pub pod_id: String,
    pub netns: Option<PathBuf>,
}

impl PodNetwork {
    fn connect(&self, port: u16) -> std::io::Result<TcpStream> {
        match &self.netns {
            Some(ns) => berth_network::netns::connect_loopback(ns, port, CONNECT_TIMEOUT),
            None => berth_network::netns::connect_loopback_here(port, CONNECT_TIMEOUT),
        }
    }
}

#[derive(Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<u32>,
    target: Option<Arc<TcpStream>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Error,
    Data,
}

pub struct SpdyPortForward {
    pod: PodNetwork,
    writer: Arc<Writer>,
    /// by request id
    pairs: Arc<Mutex<HashMap<String, Pair>>>,
    /// stream id → (request id, kind)
    streams: HashMap<u32, (String, Kind)>,
}

impl SpdyPortForward {
    pub fn new(pod: PodNetwork, writer: Arc<Writer>) -> SpdyPortForward {
        SpdyPortForward { pod, writer, pairs: Default::default(), streams: HashMap::new() }
    }

    fn refuse(&self, stream_id: u32, why: &str) {
        conn::tracing_note(&format!("port-forward to pod {}: stream {stream_id} refused: {why}", self.pod.pod_id));
        let _ = self.writer.reset(stream_id, rst::REFUSED_STREAM);
    }

    /// Both streams of `request` are there: connect and relay.
    fn connect(&mut self, request: &str) {
        let (port, error_id, data_id) = {
            let pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
            let p = &pairs[request];
            (p.port, p.error.unwrap_or(0), p.data.unwrap_or(0))
        };
        let target = match self.pod.connect(port) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                let msg = format!("error forwarding port {port} to pod {}: {e}", self.pod.pod_id);
                let _ = self.writer.data(error_id, msg.as_bytes(), true);
                let _ = self.writer.fin(data_id);
                self.forget(request);
                return;
            }
        };
        if let Some(p) = self.pairs.lock().unwrap_or_else(|p| p.into_inner()).get_mut(request) {
            p.target = Some(target.clone());
        }
        let (writer, pairs, request) = (self.writer.clone(), self.pairs.clone(), request.to_string());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; conn::DATA_CHUNK];
            let mut from = &*target;
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if writer.data(data_id, &buf[..n], false).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = writer.fin(data_id);
            let _ = writer.fin(error_id);
            let _ = target.shutdown(Shutdown::Both);
            pairs.lock().unwrap_or_else(|p| p.into_inner()).remove(&request);
        });
    }

    fn forget(&mut self, request: &str) {
        if let Some(p) = self.pairs.lock().unwrap_or_else(|p| p.into_inner()).remove(request) {
            if let Some(t) = p.target {
                let _ = t.shutdown(Shutdown::Both);
            }
        }
    }

    fn target(&self, request: &str) -> Option<Arc<TcpStream>> {
        self.pairs.lock().unwrap_or_else(|p| p.into_inner()).get(request).and_then(|p| p.target.clone())
    }
}

impl conn::Handler for SpdyPortForward {
    fn stream(&mut self, stream_id: u32, headers: &Headers, _fin: bool) {
        let Some(port) = header(headers, "port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0) else {
            return self.refuse(stream_id, "no valid port header");
        };
        let kind = match header(headers, "streamtype") {
            Some("error") => Kind::Error,
            Some("data") => Kind::Data,
            other => return self.refuse(stream_id, &format!("stream type {other:?}")),
        };
        // Clients before request ids paired streams by their ids.
        let request = match header(headers, "requestid") {
            Some(r) if !r.is_empty() && r.len() <= 20 => r.to_string(),
            Some(_) => return self.refuse(stream_id, "malformed requestid"),
            None if kind == Kind::Error => stream_id.to_string(),
            None => stream_id.saturating_sub(2).to_string(),
        };
        let complete = {
            let mut pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
            if !pairs.contains_key(&request) && pairs.len() >= MAX_PAIRS {
                drop(pairs);
                return self.refuse(stream_id, "too many forwarded connections at once");
            }
            let p = pairs.entry(request.clone()).or_insert_with(|| Pair { port, ..Default::default() });
            let slot = match kind {
                Kind::Error => &mut p.error,
                Kind::Data => &mut p.data,
            };
            if slot.is_some() || p.port != port {
                drop(pairs);
                return self.refuse(stream_id, &format!("a second {kind:?} stream for request {request}"));
            }
            *slot = Some(stream_id);
            p.error.is_some() && p.data.is_some()
        };
        self.streams.insert(stream_id, (request.clone(), kind));
        if self.writer.reply(stream_id).is_err() {
            return;
        }
        if complete {
            self.connect(&request);
        }
    }

    fn data(&mut self, stream_id: u32, data: &[u8], fin: bool) {
        let Some((request, Kind::Data)) = self.streams.get(&stream_id).cloned() else { return };
        let Some(target) = self.target(&request) else { return };
        if !data.is_empty() && (&*target).write_all(data).is_err() {
            let _ = target.shutdown(Shutdown::Both);
            return;
        }
        if fin {
            let _ = target.shutdown(Shutdown::Write);
        }
    }

    fn reset(&mut self, stream_id: u32) {
        if let Some((request, Kind::Data)) = self.streams.remove(&stream_id) {
            self.forget(&request);
        }
    }

    fn closed(&mut self) {
        let pairs: Vec<String> = self.pairs.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        for r in pairs {
            self.forget(&r);
        }
    }
}
