//! The poll loop while the container runs: its stdout and stderr (or the pty master) to the CRI
//! log and the attach clients, the clients' input and terminal sizes to the container, the
//! signals the monitor receives forwarded to it, and its exit reaped.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use berth_monitor::protocol::attach;
use berth_sys::{file, process, signal, socket};

use crate::monitor::{Client, Input, Monitor};
use crate::sys::{not_now, read_would_block};

/// The descriptor number to poll (-1: none, which poll skips).
fn pollable(fd: &Option<OwnedFd>) -> i32 {
    fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
}

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

    /// New clients waiting on the attach socket.
    fn accept_clients(&mut self) {
        let Some(listener) = &self.listener else { return };
        while let Ok(fd) = socket::accept(listener) {
            self.clients.push(Client { fd });
        }
    }

    /// Clients that connected before `start` (the engine's, for `run -it`): what they sent
    /// so far (the terminal's size, first input) is taken now, so the container starts with it.
    pub(crate) fn early_clients(&mut self) {
        let mut buf = vec![0u8; 32 * 1024 + 1];
        self.accept_clients();
        let mut i = 0;
        while i < self.clients.len() {
            let mut open = true;
            while open && !read_would_block(self.clients[i].fd.as_fd()) {
                open = self.client_message(i, &mut buf);
            }
            if open {
                i += 1;
            } else {
                self.clients.remove(i);
            }
        }
    }

    pub(crate) fn broadcast(&mut self, stream: u8, data: &[u8]) {
        let mut msg = Vec::with_capacity(data.len() + 1);
        msg.push(stream);
        msg.extend_from_slice(data);
        // A client that cannot keep up is dropped (and its socket closed).
        self.clients.retain(|c| {
            // SAFETY: sending a valid buffer.
            let n = unsafe {
                libc::send(c.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
            };
            n >= 0
        });
    }

    /// Reads what stdout or stderr has; false at EOF or error (the stream is closed).
    pub(crate) fn pump(&mut self, which: u8, buf: &mut [u8]) -> bool {
        let fd = if which == attach::STDOUT { &self.out } else { &self.err };
        let Some(fd) = fd else { return false };
        match file::read(fd, buf) {
            Ok(0) => false,
            Ok(n) => {
                self.log.write(if which == attach::STDOUT { "stdout" } else { "stderr" }, &buf[..n]);
                let data = buf[..n].to_vec();
                self.broadcast(which, &data);
                true
            }
            Err(e) => not_now(&e),
        }
    }

    pub(crate) fn flush_input(&mut self) {
        while !self.pending_input.is_empty() {
            let Some(input) = self.input_fd() else { break };
            match file::write(input, &self.pending_input) {
                Ok(n) => {
                    self.pending_input.drain(..n);
                }
                Err(e) if not_now(&e) => return,
                Err(_) => {
                    self.pending_input.clear();
                    break;
                }
            }
        }
        if self.pending_input.is_empty() && self.close_input_after && !self.a.terminal {
            if let Input::Pipe(_) = self.input {
                self.input = Input::None;
            }
        }
    }

    pub(crate) fn client_message(&mut self, idx: usize, buf: &mut [u8]) -> bool {
        let fd = self.clients[idx].fd.as_raw_fd();
        // SAFETY: receiving into a valid buffer.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            return not_now(&io::Error::last_os_error());
        }
        if n == 0 {
            return false;
        }
        let msg = &buf[..n as usize];
        match msg[0] {
            attach::STDIN if self.input_fd().is_some() => {
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
                // SAFETY: TIOCSWINSZ on the pty master with a valid winsize.
                unsafe { libc::ioctl(pollable(&self.out), libc::TIOCSWINSZ, &ws) };
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
                while self.out.is_some() && self.pump(attach::STDOUT, &mut buf[..32 * 1024]) {
                    if self.out.as_ref().is_some_and(|fd| read_would_block(fd.as_fd())) {
                        break;
                    }
                }
                while self.err.is_some() && self.pump(attach::STDERR, &mut buf[..32 * 1024]) {
                    if self.err.as_ref().is_some_and(|fd| read_would_block(fd.as_fd())) {
                        break;
                    }
                }
                return;
            }
            let mut fds = vec![
                libc::pollfd { fd: self.sfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: pollable(&self.listener), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: pollable(&self.out), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: pollable(&self.err), events: libc::POLLIN, revents: 0 },
                libc::pollfd {
                    fd: if self.pending_input.is_empty() {
                        -1
                    } else {
                        self.input_fd().map_or(-1, |fd| fd.as_raw_fd())
                    },
                    events: libc::POLLOUT,
                    revents: 0,
                },
            ];
            let throttle = self.pending_input.len() > 256 * 1024;
            for c in &self.clients {
                fds.push(libc::pollfd {
                    fd: if throttle { -1 } else { c.fd.as_raw_fd() },
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            // SAFETY: an array of pollfds of the length given.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as u64, -1) };
            if r < 0 {
                continue;
            }
            if fds[0].revents != 0 {
                self.signals();
            }
            if fds[1].revents != 0 {
                self.accept_clients();
            }
            if fds[2].revents != 0 && !self.pump(attach::STDOUT, &mut buf[..32 * 1024]) {
                // With a terminal the input went to this pty master too: it goes with it.
                self.out = None;
            }
            if fds[3].revents != 0 && !self.pump(attach::STDERR, &mut buf[..32 * 1024]) {
                self.err = None;
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
                self.clients.remove(i);
            }
        }
    }

    pub(crate) fn signals(&mut self) {
        // The signalfd is non-blocking: EAGAIN once every pending signal is read.
        while let Ok((sig, _)) = signal::read_signal(&self.sfd) {
            if sig == libc::SIGCHLD {
                self.reap();
            } else if self.exit_status.is_none() {
                let _ = process::kill(self.ctr_pid, sig);
            }
        }
    }
}
