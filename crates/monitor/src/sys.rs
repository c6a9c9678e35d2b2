//! The file-descriptor and socket system calls the monitor makes, over libc alone (its size is
//! measured against conmon's): pipes, non-blocking reads, unix sockets bound through
//! /proc/self/fd, SCM_RIGHTS, and lines on the sync socket.

use std::ffi::CString;
use std::io;

use berth_monitor::protocol::ToEngine;
use berth_sys::{Error, Result};

use crate::log::write_all;

/// Sends one line to the engine on the sync socket (nothing once it is closed).
pub(crate) fn send(fd: i32, msg: &ToEngine) {
    if fd >= 0 {
        let _ = write_all(fd, msg.encode().as_bytes());
    }
}

pub(crate) fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(format!("{s:?} contains NUL")))
}

pub(crate) fn pipe() -> Result<(i32, i32)> {
    let mut fds = [0; 2];
    // SAFETY: valid array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::last_os("pipe"));
    }
    Ok((fds[0], fds[1]))
}

pub(crate) fn set_nonblock(fd: i32) {
    // SAFETY: fcntl on our descriptor.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

pub(crate) fn close(fd: i32) {
    if fd >= 0 {
        unsafe { libc::close(fd) };
    }
}

/// A unix socket bound at `dir/name` (through /proc/self/fd, so the directory's length does
/// not count against the 108 bytes of a socket address).
pub(crate) fn listen_unix(dirfd: i32, name: &str, kind: i32) -> Result<i32> {
    // SAFETY: socket setup with valid arguments.
    let fd = unsafe { libc::socket(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(Error::last_os("socket"));
    }
    let path = format!("/proc/self/fd/{dirfd}/{name}");
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as u16;
    for (i, b) in path.bytes().enumerate() {
        addr.sun_path[i] = b as libc::c_char;
    }
    let c = cstring(&path)?;
    unsafe { libc::unlink(c.as_ptr()) };
    let len = (std::mem::size_of::<libc::sa_family_t>() + path.len() + 1) as u32;
    if unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_un).cast(), len) } != 0 {
        return Err(Error::last_os(format!("bind {name}")));
    }
    if unsafe { libc::listen(fd, 16) } != 0 {
        return Err(Error::last_os(format!("listen {name}")));
    }
    Ok(fd)
}

/// Receives one file descriptor (the pty master) sent with SCM_RIGHTS.
pub(crate) fn recv_fd(sock: i32) -> Result<i32> {
    let mut buf = [0u8; 4096];
    let mut cmsg = [0u64; 8];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg);
    // SAFETY: msghdr points at live buffers.
    if unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) } < 0 {
        return Err(Error::last_os("receiving the pty master"));
    }
    let c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if c.is_null() || unsafe { (*c).cmsg_type } != libc::SCM_RIGHTS {
        return Err(Error::msg("the runtime sent no pty master on the console socket"));
    }
    Ok(unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32) })
}

pub(crate) fn read_nonblock(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reading into a valid buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

pub(crate) fn read_would_block(fd: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    unsafe { libc::poll(&mut p, 1, 0) == 0 }
}

pub(crate) fn drain_text(fd: i32) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    set_nonblock(fd);
    while let Ok(n) = read_nonblock(fd, &mut buf) {
        if n == 0 || out.len() > 64 * 1024 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn read_line(fd: i32) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return None;
        }
        if b[0] == b'\n' {
            return Some(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(b[0]);
    }
}
