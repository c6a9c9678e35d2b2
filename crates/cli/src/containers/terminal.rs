//! A container's stdio on this process's: attach, the raw terminal and its size, signals passed
//! on to the monitor, and the exit code of a foreground container.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use berth_engine::attach::AttachConn;
use berth_engine::{Container, Engine, Result};

use super::*;
use crate::Cli;

/// Attaches before the container starts; with a terminal, its size goes first, so the
/// container starts with the size of ours.
pub(crate) fn connect_sized(dir: &Path, tty: bool) -> Result<AttachConn> {
    let conn = AttachConn::connect(dir)?;
    if let Some((rows, cols)) = term_size().filter(|_| tty) {
        let _ = conn.resize(rows, cols);
    }
    Ok(conn)
}

pub(crate) fn attach_cmd(cli: &Cli, a: &AttachArgs) -> Result<i32> {
    let e = open(cli)?;
    let c = e.get(&a.name)?;
    let conn = e.attach(&c.id)?;
    relay(&e, &c, conn, c.config.stdin && !a.no_stdin, c.config.tty)
}

pub(crate) struct RawMode {
    saved: Option<libc::termios>,
}

impl RawMode {
    pub(crate) fn enter(tty: bool) -> RawMode {
        if !tty || !std::io::stdin().is_terminal() {
            return RawMode { saved: None };
        }
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: termios calls on stdin.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return RawMode { saved: None };
        }
        let saved = t;
        unsafe {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = self.saved {
            // SAFETY: restoring stdin's saved attributes.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

pub(crate) fn term_size() -> Option<(u16, u16)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } != 0 || ws.ws_row == 0 {
        return None;
    }
    Some((ws.ws_row, ws.ws_col))
}

/// Relays stdin to the container (with `stdin`), its output to ours, the terminal size (with
/// `tty`), and SIGINT/SIGTERM/SIGHUP to it (through its monitor); returns its exit code.
pub(crate) fn relay(e: &Engine, c: &Container, conn: AttachConn, stdin: bool, tty: bool) -> Result<i32> {
    // Signals to the container, through its monitor (which forwards them). Blocked before any
    // other thread starts: a thread with them unblocked would take them and end this process.
    if !tty {
        forward_signals(e.get(&c.id).map(|c| c.state.monitor_pid).unwrap_or(0));
    }
    let _raw = RawMode::enter(tty && stdin);
    if tty {
        // The size sent is the one the watcher compares with: a resize between two reads
        // would otherwise never be sent.
        let mut last = term_size();
        if let Some((r, cols)) = last {
            let _ = conn.resize(r, cols);
        }
        let resizer = conn.try_clone()?;
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = term_size();
            if now != last {
                if let Some((r, cols)) = now {
                    if resizer.resize(r, cols).is_err() {
                        return;
                    }
                }
                last = now;
            }
        });
    }
    if stdin {
        let input = conn.try_clone()?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            let mut inp = std::io::stdin().lock();
            loop {
                match inp.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = input.close_stdin();
                        return;
                    }
                    Ok(n) => {
                        if input.send_stdin(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let mut buf = vec![0u8; 64 * 1024];
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some((stream, n)) = conn.recv(&mut buf)? {
        if stream == berth_engine::attach::STDERR {
            let _ = err.write_all(&buf[..n]);
        } else {
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
        }
    }
    drop(_raw);
    e.exit_code(c)
}

pub(crate) fn forward_signals(monitor: i32) {
    if monitor <= 0 {
        return;
    }
    // SAFETY: blocking the signals in this (still single-purpose) thread set and waiting for
    // them in a dedicated thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::spawn(move || loop {
            let mut sig = 0;
            if libc::sigwait(&set, &mut sig) == 0 {
                libc::kill(monitor, sig);
            }
        });
    }
}
