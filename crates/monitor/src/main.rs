//! berth-monitor: one small process per container, the role conmon and containerd-shim play.
//!
//! The engine starts it with a socket (`--sync-fd`) and waits for the first process to exit:
//! the monitor forks, and the child, in a session of its own, does the work, so it outlives
//! the engine. It is a child subreaper: the OCI runtime it runs (`create`, then `start`) exits,
//! and the container's init becomes its child. It holds the container's stdio (pipes, or the
//! pty master received on the console socket), writes everything to the CRI log, relays it to
//! the clients of its attach socket and their input back, forwards the signals it receives to
//! the container, reaps it, writes the exit file, deletes the runtime's state and runs the exit
//! command (the engine's cleanup).
//!
//! The sync socket carries lines, monitor → engine: `monitor <pid>`, `created <pid>`,
//! `started`, or `error <message>`; engine → monitor: `start` (anything else, or EOF, and the
//! created container is deleted again).
//!
//! Attach protocol (SOCK_SEQPACKET, one message per packet): from a client `0` + bytes (stdin),
//! `1` + rows (u16 LE) + cols (u16 LE) (terminal size), `2` (close stdin); to a client
//! `1` + bytes (stdout) or `2` + bytes (stderr). The socket is closed when the container exits.
//!
//! `berth-monitor exec-tty` is a second, short-lived role: the subreaper of one `exec --tty`
//! whose terminal the caller relays itself (see `ExecTtyArgs`).
//!
//! Synchronous (one poll loop), no allocation on the relay path beyond the read buffer, and
//! only libc: its resident size is measured against conmon's in `make bench`.

mod exec_tty;
mod log;
mod monitor;
mod oom;
mod relay;
mod runtime;
mod sys;

use berth_monitor::protocol::{ExecTtyArgs, MonitorArgs, ToEngine};

use monitor::Monitor;
use sys::send;

fn main() {
    if std::env::args().nth(1).as_deref() == Some(ExecTtyArgs::COMMAND) {
        match ExecTtyArgs::parse(std::env::args().skip(2)) {
            Ok(a) => std::process::exit(exec_tty::run(a)),
            Err(e) => {
                eprintln!("berth-monitor exec-tty: {e}");
                std::process::exit(2);
            }
        }
    }
    let args = match MonitorArgs::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-monitor: {e}");
            std::process::exit(2);
        }
    };
    // Detach: the engine reaps this first process at once; the child is the monitor.
    // SAFETY: single-threaded here; the parent only exits.
    match unsafe { libc::fork() } {
        -1 => {
            let e = std::io::Error::last_os_error();
            send(args.sync_fd, &ToEngine::Error(format!("forking the monitor: {e}")));
            std::process::exit(1);
        }
        0 => {}
        _ => unsafe { libc::_exit(0) },
    }
    unsafe { libc::setsid() };
    let sync = args.sync_fd;
    if let Err(e) = Monitor::run(args) {
        send(sync, &ToEngine::Error(e.to_string()));
        std::process::exit(1);
    }
}

/// Crash-recovery tests stop the monitor dead at a named point (`BERTH_TEST_CRASH_AT`, as
/// for the engine): `monitor-created` (the container created, not started), `monitor-exit`
/// (the container gone, its exit not written).
fn crash_point(name: &str) {
    if std::env::var_os("BERTH_TEST_CRASH_AT").is_some_and(|v| v == name) {
        // SAFETY: killing ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

pub(crate) const FORWARDED: [i32; 7] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH];
