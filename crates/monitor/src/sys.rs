//! What the monitor does with descriptors beyond berth-sys's system calls: lines on the sync
//! socket (a descriptor number the engine passed), whether a read would block, and what a
//! failed runtime wrote.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use berth_monitor::protocol::ToEngine;
use berth_sys::file;

/// The sync socket, a descriptor the engine passed by number (-1 once closed).
fn sync_socket(fd: i32) -> Option<BorrowedFd<'static>> {
    // SAFETY: the engine passed this descriptor for the monitor's lifetime; the monitor closes
    // it only as it stops using it (and marks it -1).
    (fd >= 0).then(|| unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Sends one line to the engine on the sync socket (nothing once it is closed).
pub(crate) fn send(fd: i32, msg: &ToEngine) {
    if let Some(sync) = sync_socket(fd) {
        let _ = file::write_all(sync, msg.encode().as_bytes());
    }
}

/// Reads one line from the engine on the sync socket; None at EOF or on an error.
pub(crate) fn read_line(fd: i32) -> Option<String> {
    let sync = sync_socket(fd)?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match file::read(sync, &mut b) {
            Ok(1) if b[0] == b'\n' => return Some(String::from_utf8_lossy(&line).into_owned()),
            Ok(1) => line.push(b[0]),
            _ => return None,
        }
    }
}

/// Whether reading `fd` now would block (nothing to read, no EOF).
pub(crate) fn read_would_block(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd.
    unsafe { libc::poll(&mut p, 1, 0) == 0 }
}

/// What is in a pipe (up to 64 KiB and change), as text: a failed runtime's stderr.
pub(crate) fn drain_text(fd: BorrowedFd<'_>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = file::set_nonblocking(fd, true);
    while let Ok(n) = file::read(fd, &mut buf) {
        if n == 0 || out.len() > 64 * 1024 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error of a read or write on a non-blocking descriptor that only means "not now".
pub(crate) fn not_now(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted
}
