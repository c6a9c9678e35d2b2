//! A connection as the streaming server's sessions use it: the client's TCP connection, or
//! (with TLS) the plain end of a socket pair whose other end the TLS layer pumps.
//!
//! Its read timeout is an idle timeout, as Kubernetes' own streaming server counts it: the
//! time since bytes last moved either way. A session whose process writes output is not idle
//! while its client stays silent; one whose client and process both stay silent is.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Socket {
    stream: Stream,
    /// Shared by the clones of one connection (its reader and writers).
    activity: Arc<Activity>,
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// When bytes last moved either way, and how long the connection may stay still.
struct Activity {
    born: Instant,
    last_ms: AtomicU64,
    /// u64::MAX: no limit.
    limit_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity { born: Instant::now(), last_ms: AtomicU64::new(0), limit_ms: AtomicU64::new(u64::MAX) })
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    /// The time left before the connection counts as idle (None: no limit); an error when
    /// it is idle now.
    fn left(&self) -> io::Result<Option<Duration>> {
        let limit = self.limit_ms.load(Ordering::Relaxed);
        if limit == u64::MAX {
            return Ok(None);
        }
        let still = self.now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed));
        match limit.checked_sub(still) {
            Some(left) if left > 0 => Ok(Some(Duration::from_millis(left))),
            _ => Err(io::Error::new(io::ErrorKind::TimedOut, "the connection was idle past its timeout")),
        }
    }
}

impl Socket {
    pub fn tcp(s: TcpStream) -> Socket {
        Socket { stream: Stream::Tcp(s), activity: Activity::new() }
    }

    pub fn unix(s: UnixStream) -> Socket {
        Socket { stream: Stream::Unix(s), activity: Activity::new() }
    }

    pub fn try_clone(&self) -> io::Result<Socket> {
        let stream = match &self.stream {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        };
        Ok(Socket { stream, activity: self.activity.clone() })
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match &self.stream {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    /// How long reads wait with no bytes moving either way (None: for ever), counted from
    /// when bytes last moved.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        let ms = t.map_or(u64::MAX, |t| (t.as_millis() as u64).clamp(1, u64::MAX - 1));
        self.activity.limit_ms.store(ms, Ordering::Relaxed);
        Ok(())
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match &self.stream {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }

    fn set_os_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match &self.stream {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.set_os_read_timeout(self.activity.left()?)?;
            let r = match &mut self.stream {
                Stream::Tcp(s) => s.read(buf),
                Stream::Unix(s) => s.read(buf),
            };
            match r {
                Ok(n) => {
                    self.activity.touch();
                    return Ok(n);
                }
                // Bytes written meanwhile may have kept the connection alive: look again.
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.stream {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }?;
        self.activity.touch();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.stream {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keeps_a_silent_client_alive_and_stillness_times_out() {
        let (a, mut peer) = UnixStream::pair().unwrap();
        let mut reader = Socket::unix(a);
        let mut writer = reader.try_clone().unwrap();
        reader.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let written = Arc::new(AtomicU64::new(0));
        let count = written.clone();
        let t = std::thread::spawn(move || {
            // Output every 100 ms for 3 s: three times the timeout, never still for long.
            for _ in 0..30 {
                std::thread::sleep(Duration::from_millis(100));
                writer.write_all(b"x").unwrap();
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        let mut buf = [0u8; 8];
        let e = reader.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(written.load(Ordering::SeqCst), 30, "timed out while output was flowing");
        t.join().unwrap();
        let mut got = [0u8; 30];
        peer.read_exact(&mut got).unwrap();
        // Input resets it too.
        reader.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        peer.write_all(b"in").unwrap();
        assert_eq!(reader.read(&mut buf).unwrap(), 2);
    }
}
