//! A command on a terminal the test holds: its stdin, stdout and stderr are the slave of a pty
//! whose master the test reads and writes, in a session of its own with the pty as its
//! controlling terminal (a resize signals it, as a terminal emulator's would): what a person
//! at a terminal gives `berth run -it`, `podman run -it` or `ctr run -t`.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::check::poll_until;
use crate::children::{spawn_on_pty, Spawned, RUN_TIMEOUT};

/// How long `wait_for` waits for text to appear.
pub const APPEAR_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Terminal {
    master: OwnedFd,
    /// Everything the terminal showed so far (a reader thread appends to it).
    output: Arc<Mutex<Vec<u8>>>,
    /// Set by the reader when no process holds the slave any more.
    closed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    child: Option<Spawned>,
}

impl Terminal {
    /// Spawns `cmd` (a child of the suite's reaper) on a new pty of `rows` x `cols`.
    pub fn spawn(cmd: Command, rows: u16, cols: u16) -> Terminal {
        let (child, master) = spawn_on_pty(cmd, rows, cols);
        let master = OwnedFd::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let fd = master.try_clone().unwrap();
            let (output, closed, stop) = (output.clone(), closed.clone(), stop.clone());
            std::thread::spawn(move || read_master(fd, &output, &closed, &stop))
        };
        Terminal { master, output, closed, stop, reader: Some(reader), child: Some(child) }
    }

    /// Types `text` (a terminal in raw mode wants `\r` for Enter).
    pub fn write(&self, text: &str) {
        let mut f = std::fs::File::from(self.master.try_clone().unwrap());
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Changes the window size (the kernel sends SIGWINCH to the terminal's foreground group).
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ with a valid winsize.
        assert_eq!(unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) }, 0);
    }

    /// Everything the terminal showed so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output contains `text`; fails if it does not within `APPEAR_TIMEOUT`,
    /// or the terminal closes without it.
    #[track_caller]
    pub fn wait_for(&self, text: &str) {
        let mut closed = false;
        let appeared = poll_until(APPEAR_TIMEOUT, || {
            // (read before the output: what came before the close is in by then)
            closed = self.closed.load(Ordering::SeqCst);
            self.output().contains(text) || closed
        });
        let output = self.output();
        assert!(!closed || output.contains(text), "the terminal closed before {text:?} appeared on it: {output:?}");
        assert!(appeared, "{text:?} never appeared on the terminal: {output:?}");
    }

    /// Waits for the command to exit (at most `RUN_TIMEOUT`); its exit code and everything the
    /// terminal showed.
    pub fn wait(mut self) -> (i32, String) {
        let out = self.child.take().unwrap().wait(RUN_TIMEOUT);
        // Output written just before the exit is still in the pty: read until the slave's last
        // holder is gone (EIO) or nothing came for a while.
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (out.code, self.output())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(child) = self.child.take() {
            // A failed test: the command must not outlive it.
            // SAFETY: our own child, by pid.
            unsafe { libc::kill(child.pid as i32, libc::SIGKILL) };
            let _ = child.wait(Duration::from_secs(30));
        }
    }
}

fn read_master(fd: OwnedFd, output: &Mutex<Vec<u8>>, closed: &AtomicBool, stop: &AtomicBool) {
    let mut idle_after_stop = 0;
    loop {
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on our descriptor.
        let r = unsafe { libc::poll(&mut p, 1, 50) };
        if r == 0 {
            if stop.load(Ordering::SeqCst) {
                idle_after_stop += 1;
                if idle_after_stop > 20 {
                    return;
                }
            }
            continue;
        }
        let mut buf = [0u8; 4096];
        // SAFETY: reading into our buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            // EIO: no process holds the slave any more
            closed.store(true, Ordering::SeqCst);
            return;
        }
        output.lock().unwrap().extend_from_slice(&buf[..n as usize]);
    }
}

/// Everything a pty master gives until no process holds its slave any more (EIO): what a
/// container that got the slave as its terminal (over a console socket) wrote on it.
pub fn read_until_closed(master: OwnedFd) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    // It ends in EIO; what came before it is in `out`.
    let _ = std::fs::File::from(master).read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
