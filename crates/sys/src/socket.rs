//! Sockets: SEQPACKET pairs, descriptors passed with SCM_RIGHTS, unix sockets by path, and an
//! interface's flags.

use std::io;
use std::mem::{size_of, size_of_val, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::{check, check_long, owned, raw, retry};

/// A connected pair of SOCK_SEQPACKET unix sockets (message boundaries kept).
pub fn socketpair_seqpacket() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: valid array.
    check(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
    // SAFETY: fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A unix stream socket connected to `path`.
pub fn connect_unix(path: &Path) -> io::Result<OwnedFd> {
    let stream = std::os::unix::net::UnixStream::connect(path)?;
    Ok(OwnedFd::from(stream))
}

/// The address of `name` in the directory `dir`, through /proc/self/fd (so the directory's
/// path does not count against the 108 bytes of a socket address), and its length.
fn address_at(dir: &impl AsFd, name: &str) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    let path = format!("/proc/self/fd/{}/{name}", raw(dir));
    // SAFETY: sockaddr_un is plain data.
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    if path.len() >= addr.sun_path.len() || path.contains('\0') {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (i, b) in path.bytes().enumerate() {
        addr.sun_path[i] = b as libc::c_char;
    }
    Ok((addr, (size_of::<libc::sa_family_t>() + path.len() + 1) as libc::socklen_t))
}

/// A unix socket of `kind` (SOCK_STREAM, SOCK_SEQPACKET) connected to `name` in the directory
/// `dir` (through /proc/self/fd: any directory's path fits).
pub fn connect_unix_at(dir: impl AsFd, name: &str, kind: i32) -> io::Result<OwnedFd> {
    let (addr, len) = address_at(&dir, name)?;
    // SAFETY: plain syscall.
    let fd = owned(unsafe { libc::socket(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC, 0) } as libc::c_long)?;
    // SAFETY: an address of the length given.
    check(unsafe { libc::connect(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) })?;
    Ok(fd)
}

/// A non-blocking unix socket of `kind` (SOCK_STREAM, SOCK_SEQPACKET) listening at `name` in
/// the directory `dir`, bound through /proc/self/fd so the directory's path does not count
/// against the 108 bytes of a socket address. Whatever was at `name` is replaced.
pub fn listen_unix_at(dir: impl AsFd, name: &str, kind: i32) -> io::Result<OwnedFd> {
    let (addr, len) = address_at(&dir, name)?;
    // SAFETY: plain syscall.
    let fd = owned(
        unsafe { libc::socket(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) } as libc::c_long
    )?;
    let _ = crate::file::unlinkat(&dir, name, 0);
    // SAFETY: an address of the length given.
    check(unsafe { libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) })?;
    // SAFETY: plain syscall.
    check(unsafe { libc::listen(fd.as_raw_fd(), 16) })?;
    Ok(fd)
}

/// Accepts a connection on a listening socket (close-on-exec); EAGAIN when a non-blocking one
/// has none waiting.
pub fn accept(listener: impl AsFd) -> io::Result<OwnedFd> {
    // SAFETY: no peer address asked for.
    owned(unsafe { libc::accept4(raw(&listener), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) }
        as libc::c_long)
}

/// Sends `data` with the descriptors `fds` attached (SCM_RIGHTS).
pub fn send_with_fds(sock: impl AsFd, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let fd_bytes = size_of_val(fds);
    // SAFETY: a size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut cmsg_buf = vec![0u8; space.max(1)];
    // SAFETY: msghdr/cmsghdr built in buffers we own, sized with CMSG_SPACE.
    unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = cmsg_buf.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            let data = libc::CMSG_DATA(cmsg) as *mut RawFd;
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
        retry(|| check_long(libc::sendmsg(raw(&sock), &msg, libc::MSG_NOSIGNAL) as libc::c_long)).map(drop)
    }
}

/// Descriptors one message may carry (more are dropped by the kernel).
const MAX_FDS_PER_MESSAGE: u32 = 8;

/// Receives one message and any descriptors attached to it (close-on-exec). Returns 0 bytes
/// at EOF.
pub fn recv_with_fds(sock: impl AsFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: a size computation.
    let space = unsafe { libc::CMSG_SPACE(MAX_FDS_PER_MESSAGE * size_of::<RawFd>() as u32) } as usize;
    let mut cmsg_buf = vec![0u8; space];
    // SAFETY: as in send_with_fds; descriptors received are taken into OwnedFd once.
    unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg_buf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let n = retry(|| check_long(libc::recvmsg(raw(&sock), &mut msg, libc::MSG_CMSG_CLOEXEC) as libc::c_long))?;
        let mut fds = Vec::new();
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok((n as usize, fds))
    }
}

/// Receives one message (its bytes dropped) and the descriptor sent with it (the last, if
/// several); None when it carried none. A pty master from a `--console-socket`, for one.
pub fn recv_fd(sock: impl AsFd) -> io::Result<Option<OwnedFd>> {
    let mut buf = [0u8; 4096];
    let (_, mut fds) = recv_with_fds(sock, &mut buf)?;
    Ok(fds.pop())
}

/// struct ifreq with the flags member of its union (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfreqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _rest: [u8; 22],
}

/// Brings a network interface of this process's network namespace up (SIOCSIFFLAGS IFF_UP).
pub fn link_up(name: &str) -> io::Result<()> {
    // SAFETY: plain syscall.
    let sock = owned(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) } as libc::c_long)?;
    let mut req = IfreqFlags { name: [0; 16], flags: 0, _rest: [0; 22] };
    req.name[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    // SAFETY: ioctls on a socket we own with a buffer laid out as the kernel's struct ifreq.
    unsafe {
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req))?;
        req.flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file;

    #[test]
    fn descriptors_travel_with_a_message() {
        let (a, b) = socketpair_seqpacket().unwrap();
        let (r, w) = file::pipe().unwrap();
        send_with_fds(&a, b"hello", &[r.as_fd(), w.as_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"hello"[..], 2));
        // The received write end writes into the pipe we kept.
        file::write_all(&fds[1], b"x").unwrap();
        assert_eq!(file::read(&r, &mut buf).unwrap(), 1);
        send_with_fds(&a, b"none", &[]).unwrap();
        assert!(recv_fd(&b).unwrap().is_none());
        drop(a);
        assert_eq!(recv_with_fds(&b, &mut buf).unwrap().0, 0, "EOF");
    }

    #[test]
    fn unix_sockets_in_a_directory_of_any_length() {
        let deep = std::env::temp_dir().join(format!("berth-sys-{}/{}", std::process::id(), "d".repeat(120)));
        std::fs::create_dir_all(&deep).unwrap();
        let dir = file::open_dir(&deep).unwrap();
        let listener = listen_unix_at(&dir, "sock", libc::SOCK_SEQPACKET).unwrap();
        let client = connect_unix_at(&dir, "sock", libc::SOCK_SEQPACKET).unwrap();
        let server = accept(&listener).unwrap();
        file::write_all(&client, b"hi").unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(file::read(&server, &mut buf).unwrap(), 2);
        assert_eq!(accept(&listener).unwrap_err().raw_os_error(), Some(libc::EAGAIN));
        std::fs::remove_dir_all(deep.parent().unwrap()).unwrap();
    }
}
