//! The typed messages between the runtime and the processes it starts (the container's init,
//! the intermediate of a two-stage create, an exec'd process) over a SEQPACKET socket pair,
//! while the container or the process is set up (descriptors travel with them by SCM_RIGHTS).
//!
//! Each direction has a message type of its own, and each end of the pair a type of its own:
//! the runtime's [`RuntimeEnd`] sends only [`ToChild`] and receives [`ToRuntime`]; the
//! child's [`ChildEnd`] the reverse. So the runtime cannot send Ready, and the init cannot send
//! Go:
//!
//! ```compile_fail
//! let (runtime, _child) = oci_runtime::sync::pair().unwrap();
//! runtime.send(&oci_runtime::sync::ToRuntime::Ready).unwrap();
//! ```

use std::fmt::Debug;
use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd};

use berth_sys::{file, socket};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, ErrorKind, Result};

/// The runtime → the process it started.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToChild {
    /// To the init or an exec'd process: id maps written, limits set: go on. `pid` is its pid
    /// as the runtime sees it (for the hooks' state).
    Go { pid: i32 },
    /// To the init: the prestart and createRuntime hooks ran.
    HooksDone,
    /// To the init: the state is on disk; the runtime may now exit.
    Committed,
    /// To the intermediate: the maps of its new user namespace are written.
    MapDone,
}

/// The process the runtime started → the runtime.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToRuntime {
    /// The container (or the exec'd process) is set up; the init waits for `start`.
    Ready,
    /// From the init: the mounts are done, pivot_root is next: run prestart and createRuntime.
    RuntimeHooks,
    /// From the intermediate: the new user namespace exists, write its id maps.
    MapRequest,
    /// From the intermediate: the init's pidfd is attached.
    InitPidfd,
    /// The seccomp notification fd is attached, for the listener.
    SeccompNotify,
    /// What failed.
    Failed {
        #[serde(with = "kind_name")]
        kind: ErrorKind,
        message: String,
        errno: Option<i32>,
    },
}

/// A message type of the sync socket.
pub trait Message: Serialize + DeserializeOwned + Debug {
    /// The error the message reports, if it is a failure; the message otherwise.
    fn failure(self) -> std::result::Result<Self, Error>;
}

impl Message for ToChild {
    fn failure(self) -> std::result::Result<Self, Error> {
        Ok(self)
    }
}

impl Message for ToRuntime {
    fn failure(self) -> std::result::Result<Self, Error> {
        match self {
            ToRuntime::Failed { kind, message, errno } => Err(Error::from_parts(kind, message, errno)),
            other => Ok(other),
        }
    }
}

/// One end of the sync socket: sends `Out`, receives `In`.
pub struct End<Out, In> {
    fd: OwnedFd,
    direction: PhantomData<fn(Out) -> In>,
}

/// The runtime's end.
pub type RuntimeEnd = End<ToChild, ToRuntime>;
/// The end of the process the runtime starts.
pub type ChildEnd = End<ToRuntime, ToChild>;

/// A new sync socket.
pub fn pair() -> Result<(RuntimeEnd, ChildEnd)> {
    let (runtime, child) = socket::socketpair_seqpacket().ctx("creating the sync socket")?;
    Ok((End { fd: runtime, direction: PhantomData }, End { fd: child, direction: PhantomData }))
}

fn decode<M: Message>(bytes: &[u8]) -> Result<M> {
    serde_json::from_slice(bytes).map_err(|e| Error::new(ErrorKind::System, format!("sync socket: bad message: {e}")))
}

impl<Out: Message, In: Message> End<Out, In> {
    /// Sends `msg` with write(2): a message without descriptors needs no sendmsg, and the
    /// container's process sends its last ones after a seccomp filter may be loaded.
    pub fn send(&self, msg: &Out) -> Result<()> {
        let bytes = serde_json::to_vec(msg).expect("messages serialise");
        // One write: SEQPACKET keeps it one message.
        let err = match file::write(&self.fd, &bytes) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        Err(self.peer_failure(err))
    }

    /// Sends `msg` with the descriptors `fds` attached.
    pub fn send_with_fds(&self, msg: &Out, fds: &[BorrowedFd<'_>]) -> Result<()> {
        if fds.is_empty() {
            return self.send(msg);
        }
        let bytes = serde_json::to_vec(msg).expect("messages serialise");
        let err = match socket::send_with_fds(&self.fd, &bytes, fds) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        Err(self.peer_failure(err))
    }

    /// A failed send's error: when the peer has gone, its last word (the `Failed` it sent
    /// before exiting), not the broken pipe.
    fn peer_failure(&self, err: std::io::Error) -> Error {
        if matches!(err.raw_os_error(), Some(libc::EPIPE) | Some(libc::ECONNRESET)) {
            // The peer is closed, so this read returns at once: a message it left, or EOF.
            if let Ok(Some((msg, _))) = self.recv() {
                if let Err(failure) = msg.failure() {
                    return failure;
                }
            }
        }
        Error::from_io(err).context("sync socket")
    }

    /// [`End::recv`], with a message that reports a failure (`Failed`) as that error.
    pub fn next(&self) -> Result<Option<(In, Vec<OwnedFd>)>> {
        match self.recv()? {
            Some((msg, fds)) => Ok(Some((msg.failure()?, fds))),
            None => Ok(None),
        }
    }

    /// Receives one message and the descriptors attached to it; None when the other side
    /// closed without a word.
    pub fn recv(&self) -> Result<Option<(In, Vec<OwnedFd>)>> {
        let mut buf = vec![0u8; 64 * 1024];
        let (n, fds) = socket::recv_with_fds(&self.fd, &mut buf).ctx("sync socket")?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some((decode(&buf[..n])?, fds)))
    }
}

impl RuntimeEnd {
    /// Waits for the started process's Ready (`who` names it); on the way, runs the runtime's
    /// hooks when the init asks (`runtime_hooks`), and hands a seccomp notification fd to the
    /// listener with the container's state.
    pub(crate) fn wait_ready(
        &self,
        who: &str,
        pid: i32,
        seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
        state: impl Fn() -> serde_json::Value,
        runtime_hooks: impl Fn() -> Result<()>,
    ) -> Result<()> {
        loop {
            match self.next()? {
                Some((ToRuntime::Ready, _)) => return Ok(()),
                Some((ToRuntime::RuntimeHooks, _)) => {
                    runtime_hooks()?;
                    self.send(&ToChild::HooksDone)?;
                }
                Some((ToRuntime::SeccompNotify, mut fds)) => {
                    let fd = fds.pop().ok_or_else(|| Error::new(ErrorKind::System, "no seccomp fd attached"))?;
                    let s = seccomp
                        .ok_or_else(|| Error::new(ErrorKind::System, "a seccomp fd without a seccomp config"))?;
                    let listener = s.listener_path().as_ref().ok_or_else(|| {
                        Error::invalid("linux.seccomp: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath")
                    })?;
                    crate::seccomp::send_to_listener(listener, s.listener_metadata().as_deref(), pid, state(), &fd)?;
                }
                Some((other, _)) => {
                    return Err(Error::new(
                        ErrorKind::System,
                        format!("sync socket: expected Ready from {who}, got {other:?}"),
                    ))
                }
                None => return Err(Error::new(ErrorKind::System, format!("{who} exited before it was ready"))),
            }
        }
    }
}

impl ChildEnd {
    /// Reports a failure to the runtime (nothing if it is gone).
    pub fn send_error(&self, err: &Error) {
        let _ =
            self.send(&ToRuntime::Failed { kind: err.kind(), message: err.message().to_string(), errno: err.errno() });
    }

    /// Waits for Go; returns the pid it carries.
    pub fn expect_go(&self) -> Result<i32> {
        match self.recv()? {
            Some((ToChild::Go { pid }, _)) => Ok(pid),
            Some((msg, _)) => Err(Error::new(ErrorKind::System, format!("sync socket: expected Go, got {msg:?}"))),
            None => Err(Error::new(ErrorKind::System, "berth-oci exited before Go")),
        }
    }

    /// Waits for the message `is` accepts (`want` names it); EOF is an error naming `who`.
    pub fn expect(&self, want: &str, who: &str, is: impl Fn(&ToChild) -> bool) -> Result<Vec<OwnedFd>> {
        Self::judge(self.recv()?, want, who, is)
    }

    /// [`ChildEnd::expect`] for a message without descriptors, received with read(2) (the
    /// container's process, after a seccomp filter may be loaded).
    pub fn expect_plain(&self, want: &str, who: &str, is: impl Fn(&ToChild) -> bool) -> Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = file::read(&self.fd, &mut buf).ctx("sync socket")?;
        let received = if n == 0 { None } else { Some((decode(&buf[..n])?, Vec::new())) };
        Self::judge(received, want, who, is).map(drop)
    }

    fn judge(
        received: Option<(ToChild, Vec<OwnedFd>)>,
        want: &str,
        who: &str,
        is: impl Fn(&ToChild) -> bool,
    ) -> Result<Vec<OwnedFd>> {
        match received {
            Some((msg, fds)) if is(&msg) => Ok(fds),
            Some((msg, _)) => {
                Err(Error::new(ErrorKind::System, format!("sync socket: expected {want} from {who}, got {msg:?}")))
            }
            None => Err(Error::new(ErrorKind::System, format!("{who} exited before {want}"))),
        }
    }
}

/// An error's kind on the wire: its stable name.
mod kind_name {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    use crate::error::ErrorKind;

    pub fn serialize<S: Serializer>(kind: &ErrorKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ErrorKind, D::Error> {
        let name = String::deserialize(d)?;
        ErrorKind::from_name(&name).ok_or_else(|| D::Error::custom(format!("unknown error kind {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_to_a_peer_that_failed_and_left_reports_its_failure() {
        let (runtime, child) = pair().unwrap();
        child.send_error(&Error::new(ErrorKind::System, "joining cgroup /x: no space left on device"));
        drop(child);
        let err = runtime.send(&ToChild::Go { pid: 1 }).unwrap_err();
        assert_eq!(err.message(), "joining cgroup /x: no space left on device");
    }

    #[test]
    fn a_send_to_a_peer_that_left_without_a_word_is_a_broken_pipe() {
        let (runtime, child) = pair().unwrap();
        drop(child);
        let err = runtime.send(&ToChild::Go { pid: 1 }).unwrap_err();
        assert!(err.to_string().contains("sync socket"), "{err}");
        assert_eq!(err.errno(), Some(libc::EPIPE));
    }

    #[test]
    fn each_end_receives_the_other_directions_messages() {
        let (runtime, child) = pair().unwrap();
        runtime.send(&ToChild::Go { pid: 7 }).unwrap();
        assert_eq!(child.expect_go().unwrap(), 7);
        child.send(&ToRuntime::Ready).unwrap();
        runtime.wait_ready("the init", 7, None, || serde_json::Value::Null, || Ok(())).unwrap();
        child.send_error(&Error::from_errno(libc::ENOSPC, "joining cgroup /x"));
        let err = runtime.wait_ready("the init", 7, None, || serde_json::Value::Null, || Ok(())).unwrap_err();
        assert_eq!((err.kind(), err.errno()), (ErrorKind::ResourceExhausted, Some(libc::ENOSPC)));
        runtime.send(&ToChild::Committed).unwrap();
        child.expect_plain("Committed", "berth-oci", |m| matches!(m, ToChild::Committed)).unwrap();
        drop(runtime);
        let err = child.expect("HooksDone", "berth-oci", |m| matches!(m, ToChild::HooksDone)).unwrap_err();
        assert_eq!(err.message(), "berth-oci exited before HooksDone");
    }
}
