//! Running the OCI runtime (`create`, `start`, `delete`) and the exit command: fork and exec
//! with chosen stdio, waiting, and the runtime's own error from its JSON log.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use berth_sys::{Error, Result};

pub(crate) struct Child {
    pub(crate) pid: i32,
}

/// Forks and execs `argv` with the given stdio; `hide_cgroup2` runs it in a private mount
/// namespace without the cgroup2 mount of a hybrid host (for runtimes that refuse hybrid).
pub(crate) fn spawn(argv: &[String], stdio: [BorrowedFd<'_>; 3], hide_cgroup2: bool) -> Result<Child> {
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| Error::invalid(format!("{a:?} contains NUL"))))
        .collect::<Result<_>>()?;
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let stdio = stdio.map(|fd| fd.as_raw_fd());
    // SAFETY: the child only calls async-signal-safe functions before execvp.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::last_os("fork"));
    }
    if pid == 0 {
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            for (i, fd) in stdio.iter().enumerate() {
                if *fd == i as i32 {
                    let fl = libc::fcntl(*fd, libc::F_GETFD);
                    libc::fcntl(*fd, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
                } else {
                    libc::dup2(*fd, i as i32);
                }
            }
            if hide_cgroup2 && berth_sys::process::hide_cgroup2_unified().is_err() {
                libc::_exit(125);
            }
            libc::execvp(ptrs[0], ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    Ok(Child { pid })
}

pub(crate) fn wait_for(pid: i32) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return status;
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return -1;
        }
    }
}

pub(crate) fn status_text(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

/// The last error message in the runtime's JSON log (`{"level":"error","msg":"..."}`).
pub(crate) fn runtime_error(log: &str) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().filter(|l| l.contains("\"error\"")).find_map(|l| json_string_field(l, "msg"))
}

pub(crate) fn json_string_field(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":");
    let start = line.find(&pat)? + pat.len();
    let rest = line[start..].trim_start().strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32).unwrap_or('?'));
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}
