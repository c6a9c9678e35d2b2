//! process.terminal: a pty allocated in the container's own devpts, its master handed to the
//! caller over --console-socket (SCM_RIGHTS, as runc does), its slave the container's stdio,
//! controlling terminal and /dev/console.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use berth_sys::{file, socket};

use crate::error::{Context, Error, Result};
use crate::fs::{self, Resolve};

const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a new pty from the devpts mounted at /dev/pts inside `root`, verifying that the ptmx
/// found there really is a devpts ptmx (not something the image planted).
pub fn open_in_root(root: BorrowedFd<'_>) -> Result<Pty> {
    let opts = Resolve { no_symlinks: true, ..Resolve::EXISTING };
    let ptmx_path = fs::resolve(root, Path::new("/dev/pts/ptmx"), opts)
        .map_err(|e| e.context("process.terminal needs devpts mounted at /dev/pts"))?;
    let st = file::fstat(&ptmx_path)?;
    let fsst = file::fstatfs(&ptmx_path)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR
        || libc::major(st.st_rdev) != 5
        || libc::minor(st.st_rdev) != 2
        || fsst.f_type != DEVPTS_SUPER_MAGIC
    {
        return Err(Error::invalid("/dev/pts/ptmx is not a devpts ptmx device"));
    }
    let master = fs::reopen(ptmx_path.as_fd(), libc::O_RDWR | libc::O_NOCTTY)?;
    let unlock: libc::c_int = 0;
    // SAFETY: ioctls on a pty master with valid arguments.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(Error::last_os("unlocking the pty"));
    }
    // TIOCGPTPEER opens the slave from the master itself: no path lookup to be fooled.
    let slave =
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if slave < 0 {
        return Err(Error::last_os("opening the pty slave"));
    }
    // SAFETY: a fresh descriptor from the ioctl.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok(Pty { master, slave })
}

pub fn set_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: valid winsize.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(Error::last_os("setting the terminal size"));
    }
    Ok(())
}

pub fn get_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: valid winsize out-pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } < 0 {
        return None;
    }
    Some((ws.ws_row, ws.ws_col))
}

/// Sends the master over the console socket. The message carries the pty's name, as runc's does.
pub fn send_master(console_socket: BorrowedFd<'_>, master: &OwnedFd) -> Result<()> {
    socket::send_with_fds(console_socket, b"/dev/ptmx", &[master.as_fd()])
        .ctx("sending the pty master to --console-socket")
}

/// Receives a pty master sent by [`send_master`].
pub fn recv_master(console_socket: BorrowedFd<'_>) -> Result<OwnedFd> {
    socket::recv_fd(console_socket)
        .ctx("receiving the pty master")?
        .ok_or_else(|| Error::new(crate::error::ErrorKind::System, "no pty master received on the console socket"))
}

/// Makes the slave this process's controlling terminal and stdio (the caller leads a session
/// of its own already: the init and exec'd processes each start one).
pub fn become_controlling(slave: &OwnedFd) -> Result<()> {
    // SAFETY: plain syscalls on a descriptor we own.
    unsafe {
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) < 0 {
            return Err(Error::last_os("making the pty the controlling terminal"));
        }
        for target in 0..3 {
            if libc::dup2(slave.as_raw_fd(), target) < 0 {
                return Err(Error::last_os("connecting stdio to the pty"));
            }
        }
    }
    Ok(())
}

/// Puts a terminal in raw mode and returns the previous settings.
pub fn make_raw(fd: BorrowedFd<'_>) -> Option<libc::termios> {
    let fd = fd.as_raw_fd();
    // SAFETY: termios calls on a valid descriptor with owned structs.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return None;
        }
        let saved = t;
        libc::cfmakeraw(&mut t);
        t.c_oflag = saved.c_oflag; // keep output processing as the user sees it
        libc::tcsetattr(fd, libc::TCSANOW, &t);
        Some(saved)
    }
}

pub fn restore(fd: BorrowedFd<'_>, saved: &libc::termios) {
    // SAFETY: as above.
    unsafe {
        libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, saved);
    }
}
