//! The poll loop while the container runs: its stdout and stderr (or the pty master) to the CRI
//! log and the attach clients, the clients' input and terminal sizes to the container, the
//! signals the monitor receives forwarded to it, and its exit reaped.

use std::io;

use berth_monitor::protocol::attach;

use crate::monitor::{Client, Monitor};
use crate::sys::{close, read_nonblock, read_would_block};

impl Monitor {
    pub(crate) fn reap(&mut self) {
        loop {
            let mut status = 0;
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if pid == self.ctr_pid {
                self.exit_status = Some(status);
            }
        }
    }

    /// Clients that connected before `start` (the engine's, for `run -it`): what they sent
    /// so far (the terminal's size, first input) is taken now, so the container starts with it.
    pub(crate) fn early_clients(&mut self) {
        let mut buf = vec![0u8; 32 * 1024 + 1];
        loop {
            // SAFETY: accept on our non-blocking listener.
            let c =
                unsafe { libc::accept4(self.listener, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
            if c < 0 {
                break;
            }
            self.clients.push(Client { fd: c });
        }
        let mut i = 0;
        while i < self.clients.len() {
            let mut open = true;
            while open && !read_would_block(self.clients[i].fd) {
                open = self.client_message(i, &mut buf);
            }
            if open {
                i += 1;
            } else {
                close(self.clients[i].fd);
                self.clients.remove(i);
            }
        }
    }

    pub(crate) fn broadcast(&mut self, stream: u8, data: &[u8]) {
        let mut msg = Vec::with_capacity(data.len() + 1);
        msg.push(stream);
        msg.extend_from_slice(data);
        self.clients.retain(|c| {
            // SAFETY: sending a valid buffer; a client that cannot keep up is dropped.
            let n =
                unsafe { libc::send(c.fd, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
            if n < 0 {
                close(c.fd);
                return false;
            }
            true
        });
    }

    /// Reads what `fd` has; false at EOF or error (the stream is closed).
    pub(crate) fn pump(&mut self, which: u8, buf: &mut [u8]) -> bool {
        let fd = if which == attach::STDOUT { self.out } else { self.err };
        match read_nonblock(fd, buf) {
            Ok(0) => false,
            Ok(n) => {
                self.log.write(if which == attach::STDOUT { "stdout" } else { "stderr" }, &buf[..n]);
                let data = buf[..n].to_vec();
                self.broadcast(which, &data);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => true,
            Err(_) => false,
        }
    }

    pub(crate) fn flush_input(&mut self) {
        while !self.pending_input.is_empty() && self.input >= 0 {
            let n = unsafe { libc::write(self.input, self.pending_input.as_ptr().cast(), self.pending_input.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                    return;
                }
                self.pending_input.clear();
                break;
            }
            self.pending_input.drain(..n as usize);
        }
        if self.pending_input.is_empty() && self.close_input_after && !self.a.terminal && self.input >= 0 {
            close(self.input);
            self.input = -1;
        }
    }

    pub(crate) fn client_message(&mut self, idx: usize, buf: &mut [u8]) -> bool {
        let fd = self.clients[idx].fd;
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted;
        }
        if n == 0 {
            return false;
        }
        let msg = &buf[..n as usize];
        match msg[0] {
            attach::STDIN if self.input >= 0 => {
                self.pending_input.extend_from_slice(&msg[1..]);
                self.flush_input();
            }
            attach::RESIZE if msg.len() >= 5 && self.a.terminal => {
                let ws = libc::winsize {
                    ws_row: u16::from_le_bytes([msg[1], msg[2]]),
                    ws_col: u16::from_le_bytes([msg[3], msg[4]]),
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                unsafe { libc::ioctl(self.out, libc::TIOCSWINSZ, &ws) };
            }
            attach::REOPEN_LOG => {
                let mut answer = vec![attach::LOG_REOPENED];
                if let Err(e) = self.log.reopen() {
                    answer.extend_from_slice(format!("reopening the log: {e}").as_bytes());
                }
                // SAFETY: sending a valid buffer to this client.
                unsafe {
                    libc::send(fd, answer.as_ptr().cast(), answer.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
                };
            }
            attach::CLOSE_STDIN => {
                self.close_input_after = true;
                self.flush_input();
            }
            _ => {}
        }
        true
    }

    pub(crate) fn relay(&mut self) {
        let mut buf = vec![0u8; 32 * 1024 + 1];
        loop {
            if let Some(_status) = self.exit_status {
                // The container is gone: take what is left in the pipes, then stop.
                while self.out >= 0 && self.pump(attach::STDOUT, &mut buf[..32 * 1024]) {
                    if read_would_block(self.out) {
                        break;
                    }
                }
                while self.err >= 0 && self.pump(attach::STDERR, &mut buf[..32 * 1024]) {
                    if read_would_block(self.err) {
                        break;
                    }
                }
                return;
            }
            let mut fds = vec![
                libc::pollfd { fd: self.sfd, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.listener, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.out, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.err, events: libc::POLLIN, revents: 0 },
                libc::pollfd {
                    fd: if self.pending_input.is_empty() { -1 } else { self.input },
                    events: libc::POLLOUT,
                    revents: 0,
                },
            ];
            let throttle = self.pending_input.len() > 256 * 1024;
            for c in &self.clients {
                fds.push(libc::pollfd { fd: if throttle { -1 } else { c.fd }, events: libc::POLLIN, revents: 0 });
            }
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as u64, -1) };
            if r < 0 {
                continue;
            }
            if fds[0].revents != 0 {
                self.signals();
            }
            if fds[1].revents != 0 {
                loop {
                    let c = unsafe {
                        libc::accept4(self.listener, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC)
                    };
                    if c < 0 {
                        break;
                    }
                    self.clients.push(Client { fd: c });
                }
            }
            if fds[2].revents != 0 && !self.pump(attach::STDOUT, &mut buf[..32 * 1024]) {
                if self.input == self.out {
                    self.input = -1;
                }
                close(self.out);
                self.out = -1;
            }
            if fds[3].revents != 0 && !self.pump(attach::STDERR, &mut buf[..32 * 1024]) {
                close(self.err);
                self.err = -1;
            }
            if fds[4].revents != 0 {
                self.flush_input();
            }
            let mut gone = Vec::new();
            for (i, p) in fds[5..].iter().enumerate() {
                if p.revents != 0 && i < self.clients.len() && !self.client_message(i, &mut buf) {
                    gone.push(i);
                }
            }
            for i in gone.into_iter().rev() {
                close(self.clients[i].fd);
                self.clients.remove(i);
            }
        }
    }

    pub(crate) fn signals(&mut self) {
        loop {
            let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let n = unsafe {
                libc::read(self.sfd, (&mut si as *mut libc::signalfd_siginfo).cast(), std::mem::size_of_val(&si))
            };
            if n <= 0 {
                return;
            }
            let sig = si.ssi_signo as i32;
            if sig == libc::SIGCHLD {
                self.reap();
            } else if self.exit_status.is_none() {
                unsafe { libc::kill(self.ctr_pid, sig) };
            }
        }
    }
}
