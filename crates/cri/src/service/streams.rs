//! Exec, Attach and PortForward: each checks its request and answers with a URL on berthd's
//! streaming server (crate::streaming), good once, where the client then speaks SPDY or
//! WebSocket.

use berth_engine::exec_stream::ExecStdio;
use berth_engine::sandbox::PodNamespace;
use tonic::Status;

use super::containers::ours;
use super::Cri;
use crate::proto as pb;
use crate::streaming::portforward::PodNetwork;
use crate::streaming::{Request, Server};

fn server(cri: &Cri) -> Result<&Server, Status> {
    cri.streams.as_deref().ok_or_else(|| Status::unavailable("berthd's streaming server is not running"))
}

fn url(cri: &Cri, request: Request) -> Result<String, Status> {
    server(cri)?.url(request).map_err(Status::resource_exhausted)
}

/// The streams asked for, checked as kubelet's streaming server checks them.
fn stdio(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<ExecStdio, Status> {
    if tty && stderr {
        return Err(Status::invalid_argument("tty and stderr: cannot both be true (a terminal has one output)"));
    }
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument("stdin, stdout, stderr: at least one must be true"));
    }
    Ok(ExecStdio { stdin, stdout, stderr, tty })
}

/// The container, which must be running.
async fn running(cri: &Cri, id: String) -> Result<String, Status> {
    cri.blocking(move |e| {
        let c = ours(e, &id)?;
        if !c.running() {
            berth_sys::bail!(InvalidState, "container {id} is not running");
        }
        Ok(c.id)
    })
    .await
}

pub async fn exec(cri: &Cri, r: pb::ExecRequest) -> Result<pb::ExecResponse, Status> {
    if r.cmd.is_empty() {
        return Err(Status::invalid_argument("cmd: empty"));
    }
    let stdio = stdio(r.stdin, r.stdout, r.stderr, r.tty)?;
    let container = running(cri, r.container_id).await?;
    Ok(pb::ExecResponse { url: url(cri, Request::Exec { container, cmd: r.cmd, stdio })? })
}

pub async fn attach(cri: &Cri, r: pb::AttachRequest) -> Result<pb::AttachResponse, Status> {
    let stdio = stdio(r.stdin, r.stdout, r.stderr, r.tty)?;
    let container = running(cri, r.container_id).await?;
    Ok(pb::AttachResponse { url: url(cri, Request::Attach { container, stdio })? })
}

pub async fn port_forward(cri: &Cri, r: pb::PortForwardRequest) -> Result<pb::PortForwardResponse, Status> {
    if r.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id: empty"));
    }
    if let Some(p) = r.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(Status::invalid_argument(format!("port: {p} is not a TCP port")));
    }
    let id = r.pod_sandbox_id;
    let pod = cri
        .blocking(move |e| {
            let s = e.sandbox_get(&id)?;
            if !s.ready() {
                berth_sys::bail!(InvalidState, "pod {} is not ready", s.id);
            }
            let netns = match s.config.network {
                PodNamespace::Node => None,
                _ => Some(s.state.netns.clone().ok_or_else(|| {
                    berth_engine::Error::new(
                        berth_engine::Kind::InvalidState,
                        format!("pod {} has no network namespace", s.id),
                    )
                })?),
            };
            Ok(PodNetwork { pod_id: s.id, netns })
        })
        .await?;
    Ok(pb::PortForwardResponse { url: url(cri, Request::PortForward { pod })? })
}
