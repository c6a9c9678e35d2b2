//! GetContainerEvents: kubelet's evented PLEG learns of container changes from this stream
//! instead of listing every second. Created, started and deleted events come from the RPCs
//! that cause them; a stopped event comes from the container's exit, seen when its monitor
//! process ends (each monitor is watched through a pidfd, all of them by one thread in one
//! poll(2), so nothing is polled on a timer).
//!
//! Each event carries the pod's status and the statuses of all the pod's containers, as
//! kubelet expects. Subscribers that fall behind lose the oldest events (kubelet then relists).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::Arc;

use berth_engine::{Container, Engine};
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tonic::Status;

use super::{containers, pods, Cri, ResponseStream};
use crate::proto as pb;

/// Events kept for subscribers that are behind.
const BACKLOG: usize = 1024;

#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<pb::ContainerEventResponse>,
    requests: mpsc::Sender<Request>,
    /// written to after each request, so the watcher's poll wakes up
    wake: Arc<UnixStream>,
}

enum Request {
    /// send an event about the container (of this pod, when its record may be gone)
    Emit(String, pb::ContainerEventType, Option<String>),
    /// the container was removed; its last status, for a stopped event not sent yet
    Deleted { id: String, pod: String, last: Box<pb::ContainerStatus> },
    /// send a stopped event when this monitor (pid, start time) ends
    Watch { id: String, monitor_pid: i32, monitor_start: u64 },
}

impl Events {
    /// Starts the watcher thread, watching every running container of a pod.
    pub fn start(engine: Arc<Engine>) -> std::io::Result<Events> {
        let (tx, _) = broadcast::channel(BACKLOG);
        let (requests, inbox) = mpsc::channel();
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let events = Events { tx: tx.clone(), requests, wake: Arc::new(wake) };
        for c in containers::pod_containers(&engine).unwrap_or_default() {
            if c.running() {
                events.watch(&c);
            }
        }
        let watcher = Watcher { engine, tx, inbox, woken, watched: HashMap::new(), exited_removed: HashSet::new() };
        std::thread::Builder::new().name("berthd-events".into()).spawn(move || watcher.run())?;
        Ok(events)
    }

    fn send(&self, r: Request) {
        if self.requests.send(r).is_ok() {
            // A full socket buffer means the watcher has wake-ups pending already.
            let _ = (&*self.wake).write(&[1]);
        }
    }

    pub fn created(&self, id: &str) {
        self.send(Request::Emit(id.to_string(), pb::ContainerEventType::ContainerCreatedEvent, None));
    }

    /// The container started: an event now, and a stopped event when it exits.
    pub fn started(&self, c: &Container) {
        self.send(Request::Emit(c.id.clone(), pb::ContainerEventType::ContainerStartedEvent, None));
        self.watch(c);
    }

    /// The container of pod `pod`, last seen as `last`, was removed.
    pub fn deleted(&self, last: pb::ContainerStatus, pod: &str) {
        self.send(Request::Deleted { id: last.id.clone(), pod: pod.to_string(), last: Box::new(last) });
    }

    fn watch(&self, c: &Container) {
        self.send(Request::Watch {
            id: c.id.clone(),
            monitor_pid: c.state.monitor_pid,
            monitor_start: c.state.monitor_start,
        });
    }

    fn subscribe(&self) -> ResponseStream<pb::ContainerEventResponse> {
        let stream = tokio_stream::wrappers::BroadcastStream::new(self.tx.subscribe());
        // A lagging subscriber skips what it missed.
        Box::pin(stream.filter_map(|e| e.ok().map(Ok)))
    }
}

pub async fn subscribe(
    cri: &Cri,
    _r: pb::GetEventsRequest,
) -> Result<ResponseStream<pb::ContainerEventResponse>, Status> {
    Ok(cri.events.subscribe())
}

struct Watcher {
    engine: Arc<Engine>,
    tx: broadcast::Sender<pb::ContainerEventResponse>,
    inbox: mpsc::Receiver<Request>,
    woken: UnixStream,
    /// container id → its monitor's pidfd
    watched: HashMap<String, OwnedFd>,
    /// containers whose monitor ended after their record went (a removal whose request is
    /// still on its way): their stopped event waits for it, which carries the last status
    exited_removed: HashSet<String>,
}

impl Watcher {
    fn run(mut self) {
        loop {
            let ids: Vec<String> = self.watched.keys().cloned().collect();
            let ready = {
                let mut fds = vec![self.woken.as_fd()];
                fds.extend(ids.iter().map(|id| self.watched[id].as_fd()));
                match berth_sys::process::poll_readable(&fds, -1) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("berthd: container events: poll: {e}");
                        return;
                    }
                }
            };
            for (i, id) in ids.iter().enumerate() {
                if ready[i + 1] {
                    self.watched.remove(id);
                    // Read once: a removal may take the record between two reads.
                    match self.engine.get(id) {
                        Ok(c) => {
                            let status = containers::container_status(&self.engine, &c);
                            let kind = pb::ContainerEventType::ContainerStoppedEvent;
                            self.emit(id, kind, c.config.sandbox.clone(), Some(status));
                        }
                        Err(_) => {
                            self.exited_removed.insert(id.clone());
                        }
                    }
                }
            }
            if ready[0] {
                let mut drain = [0u8; 256];
                while matches!((&self.woken).read(&mut drain), Ok(n) if n > 0) {}
                loop {
                    match self.inbox.try_recv() {
                        Ok(Request::Emit(id, kind, pod)) => self.emit(&id, kind, pod, None),
                        Ok(Request::Deleted { id, pod, last }) => {
                            // Its monitor may outlive the removal (it runs the exit cleanup):
                            // the stopped event goes first, with the status it ended with.
                            if self.watched.remove(&id).is_some() || self.exited_removed.remove(&id) {
                                self.emit(
                                    &id,
                                    pb::ContainerEventType::ContainerStoppedEvent,
                                    Some(pod.clone()),
                                    Some(*last),
                                );
                            }
                            self.emit(&id, pb::ContainerEventType::ContainerDeletedEvent, Some(pod), None);
                        }
                        Ok(Request::Watch { id, monitor_pid, monitor_start }) => {
                            self.watch(id, monitor_pid, monitor_start)
                        }
                        Err(mpsc::TryRecvError::Empty) => break,
                        // berthd is shutting down.
                        Err(mpsc::TryRecvError::Disconnected) => return,
                    }
                }
            }
        }
    }

    fn watch(&mut self, id: String, pid: i32, start: u64) {
        let Ok(fd) = berth_sys::process::pidfd_open(pid) else {
            // Gone already.
            self.emit(&id, pb::ContainerEventType::ContainerStoppedEvent, None, None);
            return;
        };
        // The pid may have been reused between the record and the pidfd: the start time
        // tells.
        if !berth_sys::proc::alive(pid, start) {
            self.emit(&id, pb::ContainerEventType::ContainerStoppedEvent, None, None);
            return;
        }
        self.watched.insert(id, fd);
    }

    /// Sends an event; `last` is the container's status when its record is gone.
    fn emit(&self, id: &str, kind: pb::ContainerEventType, pod: Option<String>, last: Option<pb::ContainerStatus>) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let e = &self.engine;
        // A deleted container's pod comes with the request (its record is gone); a pod
        // removed meanwhile is left out.
        let pod = pod.or_else(|| e.get(id).ok().and_then(|c| c.config.sandbox)).and_then(|p| e.sandbox_get(&p).ok());
        let mut containers_statuses: Vec<pb::ContainerStatus> = match &pod {
            Some(p) => e
                .sandbox_containers(&p.id)
                .unwrap_or_default()
                .iter()
                .map(|c| containers::container_status(e, c))
                .collect(),
            None => Vec::new(),
        };
        // The container itself, whatever the pod's list shows of it at this moment (its record
        // may be going).
        let own = last.or_else(|| e.get(id).ok().map(|c| containers::container_status(e, &c)));
        if let Some(own) = own {
            if !containers_statuses.iter().any(|s| s.id == own.id) {
                containers_statuses.push(own);
            }
        }
        let _ = self.tx.send(pb::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: berth_time::now_nanos() as i64,
            pod_sandbox_status: pod.as_ref().map(pods::pod_status),
            containers_statuses,
        });
    }
}
