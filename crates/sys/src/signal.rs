//! Signals: the mask, handlers, and signalfd.

use std::io;
use std::mem::{size_of, zeroed, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::{check_long, owned, retry};

fn set_of(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset_t manipulated through libc.
    unsafe {
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the given signals and returns the previous mask (to restore in the container).
pub fn block_signals(signals: &[i32]) -> io::Result<libc::sigset_t> {
    let set = set_of(signals);
    // SAFETY: valid sigsets.
    unsafe {
        let mut old: libc::sigset_t = zeroed();
        let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(old)
    }
}

fn unblock_all() {
    let set = set_of(&[]);
    // SAFETY: a valid sigset.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
}

/// Unblocks every signal and resets every handler to its default, as a freshly exec'd process
/// expects (the runtime blocks signals it reads from a signalfd).
pub fn default_signals() {
    for sig in 1..libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: the default disposition.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    unblock_all();
}

extern "C" fn exit_on_signal(sig: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(128 + sig) }
}

/// Unblocks every signal and makes each one that would end a process by default end this one,
/// through a handler: a pid namespace's init ignores signals it has no handler for, and a
/// created container must still die of `kill`. execve resets handled signals to their
/// defaults, so the program exec'd starts with a clean slate.
pub fn exit_on_signals() {
    for sig in 1..libc::SIGRTMAX() {
        if matches!(
            sig,
            libc::SIGKILL
                | libc::SIGSTOP
                | libc::SIGCHLD
                | libc::SIGCONT
                | libc::SIGURG
                | libc::SIGWINCH
                | libc::SIGTSTP
                | libc::SIGTTIN
                | libc::SIGTTOU
        ) {
            continue;
        }
        // SAFETY: the handler only calls _exit.
        unsafe { libc::signal(sig, exit_on_signal as *const () as libc::sighandler_t) };
    }
    unblock_all();
}

/// A signalfd reading the given signals (which the caller blocks).
pub fn signalfd(signals: &[i32]) -> io::Result<OwnedFd> {
    let set = set_of(signals);
    // SAFETY: a valid sigset.
    owned(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) } as libc::c_long)
}

/// Reads one signal from a signalfd: its number and the pid of the process that sent it.
pub fn read_signal(fd: impl AsFd) -> io::Result<(i32, i32)> {
    let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
    let n = retry(|| {
        // SAFETY: a buffer of the size given.
        check_long(unsafe {
            libc::read(fd.as_fd().as_raw_fd(), info.as_mut_ptr().cast(), size_of::<libc::signalfd_siginfo>())
        } as libc::c_long)
    })?;
    if n as usize != size_of::<libc::signalfd_siginfo>() {
        return Err(io::Error::other("short read from signalfd"));
    }
    // SAFETY: fully initialised by the read above.
    let info = unsafe { info.assume_init() };
    Ok((info.ssi_signo as i32, info.ssi_pid as i32))
}
