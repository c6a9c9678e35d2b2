//! `run`: create + start, and in the foreground wait for the container's exit, forwarding
//! signals and, with a terminal, relaying it to our own stdio.
//!
//! Every signal `run` cares about (SIGCHLD included) is blocked before the init is cloned and
//! read from a signalfd, so an exit that happens before the wait begins is still seen: no lost
//! wake-up, however short-lived the container.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use berth_sys::process::{self, WaitStatus};
use berth_sys::{file, signal, socket};

use crate::create::{self, ConsoleTarget, CreateOptions};
use crate::error::{Context, Result};
use crate::lifecycle;
use crate::terminal;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub create: CreateOptions,
    pub detach: bool,
    pub keep: bool,
    pub no_subreaper: bool,
}

/// Signals forwarded to the container (all catchable ones but those the terminal relay and the
/// child reaper consume).
const FORWARDED: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGPIPE,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGURG,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGIO,
    libc::SIGPWR,
];

/// Runs the container; returns its exit code (128+n when killed by signal n), or 0 detached.
pub fn run(root: &Path, id: &str, opts: &RunOptions, terminal_wanted: bool, warn: &mut dyn FnMut(&str)) -> Result<i32> {
    if opts.detach {
        let console = match &opts.create.console_socket {
            Some(p) => ConsoleTarget::Path(p.clone()),
            None => ConsoleTarget::None,
        };
        let created = create::create(root, id, &opts.create, console)?;
        created.warnings.iter().for_each(|w| warn(w));
        start_or_delete(root, id, warn)?;
        return Ok(0);
    }
    if !opts.no_subreaper {
        // Orphans of the container (when it shares our pid namespace) come to us to be reaped.
        process::prctl(libc::PR_SET_CHILD_SUBREAPER, 1).ctx("PR_SET_CHILD_SUBREAPER")?;
    }
    let sigfd = foreground_signals()?;

    let (console, our_end) = match (&opts.create.console_socket, terminal_wanted) {
        (Some(p), _) => (ConsoleTarget::Path(p.clone()), None),
        (None, true) => {
            let (ours, theirs) = socket::socketpair_seqpacket().ctx("console socket pair")?;
            (ConsoleTarget::Fd(theirs), Some(ours))
        }
        (None, false) => (ConsoleTarget::None, None),
    };
    let created = create::create(root, id, &opts.create, console)?;
    created.warnings.iter().for_each(|w| warn(w));
    let master = match our_end {
        Some(sock) => Some(terminal::recv_master(sock.as_fd())?),
        None => None,
    };
    start_or_delete(root, id, warn)?;

    let status = wait_loop(created.pid, created.pidfd.as_fd(), sigfd.as_fd(), master.as_ref())?;
    if !opts.keep {
        lifecycle::delete(root, id, true)?.iter().for_each(|w| warn(w));
    }
    Ok(status.code())
}

/// Blocks the signals a foreground runtime forwards or handles, before any child exists (so no
/// child's exit can be missed), and returns the signalfd that reads them.
pub(crate) fn foreground_signals() -> Result<OwnedFd> {
    let mut signals: Vec<i32> = FORWARDED.to_vec();
    signals.push(libc::SIGCHLD);
    signals.push(libc::SIGWINCH);
    signal::block_signals(&signals).ctx("blocking signals")?;
    signal::signalfd(&signals).ctx("signalfd")
}

fn start_or_delete(root: &Path, id: &str, warn: &mut dyn FnMut(&str)) -> Result<()> {
    match lifecycle::start(root, id) {
        Ok(warnings) => {
            warnings.iter().for_each(|w| warn(w));
            Ok(())
        }
        Err(e) => {
            let _ = lifecycle::delete(root, id, true);
            Err(e)
        }
    }
}

/// Restores the terminal's settings however the relay ends.
struct RawTerminal(Option<libc::termios>);

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            terminal::restore(std::io::stdin().as_fd(), t);
        }
    }
}

/// Waits for `init` (our child) to exit: forwards signals to it, relays its terminal if we hold
/// the master, reaps orphans. Returns its exit status.
pub(crate) fn wait_loop(
    init: i32,
    init_pidfd: BorrowedFd<'_>,
    sigfd: BorrowedFd<'_>,
    master: Option<&OwnedFd>,
) -> Result<WaitStatus> {
    let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
    let (stdin, stdout) = (stdin.as_fd(), stdout.as_fd());
    let stdin_is_tty = unsafe { libc::isatty(0) } == 1;
    let _raw = RawTerminal(if master.is_some() && stdin_is_tty { terminal::make_raw(stdin) } else { None });
    if let (Some(m), true) = (master, stdin_is_tty) {
        if let Some((rows, cols)) = terminal::get_size(stdin) {
            let _ = terminal::set_size(m.as_fd(), rows, cols);
        }
    }
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut exit: Option<WaitStatus> = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // Reap first: an exit that happened before we got here is found right away.
        while let Ok(Some((pid, status))) = process::waitpid(-1, true) {
            if pid == init {
                exit = Some(status);
            }
        }
        if let Some(status) = exit {
            if let Some(m) = master {
                drain(m.as_fd(), stdout, &mut buf);
            }
            return Ok(status);
        }
        let mut fds = vec![sigfd];
        let master_at = master.filter(|_| master_open).map(|m| {
            fds.push(m.as_fd());
            fds.len() - 1
        });
        let stdin_at = (stdin_open && master_open).then(|| {
            fds.push(stdin);
            fds.len() - 1
        });
        let ready = process::poll_readable(&fds, -1)?;
        if ready[0] {
            let (sig, sender) = signal::read_signal(sigfd)?;
            match sig {
                libc::SIGCHLD => {}
                // Our own write to a closed pipe (the caller's stdout): not the container's
                // business, and the write itself reports it.
                libc::SIGPIPE if sender == process::getpid() => {}
                libc::SIGWINCH => {
                    if let (Some(m), Some((rows, cols))) = (master, terminal::get_size(stdin)) {
                        let _ = terminal::set_size(m.as_fd(), rows, cols);
                    }
                }
                other => {
                    let _ = process::pidfd_send_signal(init_pidfd, other);
                }
            }
        }
        if let (Some(m), Some(i)) = (master, master_at) {
            // EIO: every slave descriptor is closed; the exit follows via SIGCHLD.
            if ready[i] && !pass(m.as_fd(), stdout, &mut buf) {
                master_open = false;
            }
        }
        if let (Some(m), Some(i)) = (master, stdin_at) {
            if ready[i] && !pass(stdin, m.as_fd(), &mut buf) {
                stdin_open = false;
            }
        }
    }
}

/// Copies what one read of `from` gives to `to`; false at its end (or error).
fn pass(from: BorrowedFd<'_>, to: BorrowedFd<'_>, buf: &mut [u8]) -> bool {
    match file::read(from, buf) {
        Ok(n) if n > 0 => {
            let _ = file::write_all(to, &buf[..n]);
            true
        }
        _ => false,
    }
}

/// Copies what the container wrote to its terminal before exiting.
fn drain(master: BorrowedFd<'_>, stdout: BorrowedFd<'_>, buf: &mut [u8]) {
    let _ = file::set_nonblocking(master, true);
    while pass(master, stdout, buf) {}
}
