//! The typed messages the runtime and the container's init exchange over a SEQPACKET socket
//! pair while the container is created (descriptors travel with them by SCM_RIGHTS).

use std::os::fd::{BorrowedFd, OwnedFd};

use berth_sys::{file, socket};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

#[derive(Debug, Serialize, Deserialize)]
pub enum Msg {
    /// Runtime → init: id maps written, limits set: go on. `pid` is the init's pid as the
    /// runtime sees it (for the hooks' state).
    Go { pid: i32 },
    /// Init → runtime: the container is set up and waits for `start`.
    Ready,
    /// Init → runtime: the mounts are done, pivot_root is next: run prestart and createRuntime.
    RuntimeHooks,
    /// Runtime → init: those hooks ran.
    HooksDone,
    /// Runtime → init: the state is on disk; the runtime may now exit.
    Committed,
    /// Intermediate → runtime: the new user namespace exists, write its id maps.
    MapRequest,
    /// Runtime → intermediate: the maps are written.
    MapDone,
    /// Intermediate → runtime: the init's pidfd is attached.
    InitPidfd,
    /// Container process → runtime: the seccomp notification fd is attached, for the
    /// listener.
    SeccompNotify,
    /// Either direction: what failed.
    Failed {
        #[serde(with = "kind_name")]
        kind: ErrorKind,
        message: String,
        errno: Option<i32>,
    },
}

pub struct Channel(pub OwnedFd);

impl Channel {
    /// Sends `msg` with write(2): a message without descriptors needs no sendmsg, and the
    /// container's process sends its last ones after a seccomp filter may be loaded.
    pub fn send(&self, msg: &Msg) -> Result<()> {
        let bytes = serde_json::to_vec(msg).expect("messages serialise");
        // One write: SEQPACKET keeps it one message.
        let err = match file::write(&self.0, &bytes) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        Err(self.peer_failure(err))
    }

    /// Sends `msg`. When the other side has already gone, its last word (the `Failed` it sent
    /// before exiting) is the error, not the broken pipe.
    pub fn send_with_fds(&self, msg: &Msg, fds: &[BorrowedFd<'_>]) -> Result<()> {
        if fds.is_empty() {
            return self.send(msg);
        }
        let bytes = serde_json::to_vec(msg).expect("messages serialise");
        let err = match socket::send_with_fds(&self.0, &bytes, fds) {
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
            if let Ok(Some((Msg::Failed { kind, message, errno }, _))) = self.recv() {
                return Error::from_parts(kind, message, errno);
            }
        }
        Error::from_io(err).context("sync socket")
    }

    pub fn send_error(&self, err: &Error) {
        let _ = self.send(&Msg::Failed { kind: err.kind(), message: err.message().to_string(), errno: err.errno() });
    }

    /// Receives one message; None when the other side closed without a word.
    pub fn recv(&self) -> Result<Option<(Msg, Vec<OwnedFd>)>> {
        let mut buf = vec![0u8; 64 * 1024];
        let (n, fds) =
            socket::recv_with_fds(&self.0, &mut buf).map_err(|e| Error::from_io(e).context("sync socket"))?;
        if n == 0 {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&buf[..n])
            .map_err(|e| Error::new(ErrorKind::System, format!("sync socket: bad message: {e}")))?;
        Ok(Some((msg, fds)))
    }

    /// Waits for Go; returns the pid it carries.
    pub fn expect_go(&self) -> Result<i32> {
        match self.recv()? {
            Some((Msg::Go { pid }, _)) => Ok(pid),
            Some((Msg::Failed { kind, message, errno }, _)) => Err(Error::from_parts(kind, message, errno)),
            Some((msg, _)) => Err(Error::new(ErrorKind::System, format!("sync socket: expected Go, got {msg:?}"))),
            None => Err(Error::new(ErrorKind::System, "berth-oci exited before Go")),
        }
    }

    /// [`Channel::expect`] for a message without descriptors, received with read(2) (the
    /// container's process, after a seccomp filter may be loaded).
    pub fn expect_plain(&self, want: &str, who: &str, is: impl Fn(&Msg) -> bool) -> Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = file::read(&self.0, &mut buf).map_err(|e| Error::from_io(e).context("sync socket"))?;
        let received = if n == 0 {
            None
        } else {
            let msg = serde_json::from_slice(&buf[..n])
                .map_err(|e| Error::new(ErrorKind::System, format!("sync socket: bad message: {e}")))?;
            Some((msg, Vec::new()))
        };
        Self::judge(received, want, who, is).map(drop)
    }

    /// Waits for the message `is` accepts (`want` names it); a `Failed` message becomes that
    /// error, EOF an error naming `who`.
    pub fn expect(&self, want: &str, who: &str, is: impl Fn(&Msg) -> bool) -> Result<Vec<OwnedFd>> {
        Self::judge(self.recv()?, want, who, is)
    }

    fn judge(
        received: Option<(Msg, Vec<OwnedFd>)>,
        want: &str,
        who: &str,
        is: impl Fn(&Msg) -> bool,
    ) -> Result<Vec<OwnedFd>> {
        match received {
            Some((Msg::Failed { kind, message, errno }, _)) => Err(Error::from_parts(kind, message, errno)),
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
        let (ours, theirs) = socket::socketpair_seqpacket().unwrap();
        let (ours, theirs) = (Channel(ours), Channel(theirs));
        theirs.send_error(&Error::new(ErrorKind::System, "joining cgroup /x: no space left on device"));
        drop(theirs);
        let err = ours.send(&Msg::Go { pid: 1 }).unwrap_err();
        assert_eq!(err.message(), "joining cgroup /x: no space left on device");
    }

    #[test]
    fn a_send_to_a_peer_that_left_without_a_word_is_a_broken_pipe() {
        let (ours, theirs) = socket::socketpair_seqpacket().unwrap();
        drop(theirs);
        let err = Channel(ours).send(&Msg::Go { pid: 1 }).unwrap_err();
        assert!(err.to_string().contains("sync socket"), "{err}");
        assert_eq!(err.errno(), Some(libc::EPIPE));
    }
}
