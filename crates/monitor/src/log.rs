//! The container's log in the CRI format: one record per line,
//! `<RFC 3339 time with nanoseconds> <stdout|stderr> <F|P> <text>`, where `P` marks a partial
//! line (the rest follows in the next record) and `F` a full one. The file is rotated by size:
//! when a write would take it past the limit it becomes `<log>.1` and a new file starts.

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;

use berth_sys::file;

pub struct LogWriter {
    path: CString,
    rotated: CString,
    fd: OwnedFd,
    size: u64,
    max: u64,
    /// bytes of a line per record (0: any)
    line_max: usize,
}

impl LogWriter {
    pub fn open(path: &str, max: u64, line_max: u64) -> io::Result<LogWriter> {
        let cpath = CString::new(path).map_err(|_| io::Error::other("log path contains NUL"))?;
        let rotated = CString::new(format!("{path}.1")).map_err(|_| io::Error::other("log path contains NUL"))?;
        let fd = open_append(&cpath)?;
        let size = file::fstat(&fd).map_or(0, |st| st.st_size as u64);
        let line_max = usize::try_from(line_max).unwrap_or(usize::MAX);
        Ok(LogWriter { path: cpath, rotated, fd, size, max, line_max })
    }

    /// Writes one chunk read from `stream`: its complete lines as `F` records, a trailing
    /// incomplete line as a `P` record; a line longer than the record limit as `P` records
    /// of that size first.
    pub fn write(&mut self, stream: &str, data: &[u8]) {
        let ts = berth_time::now_rfc3339();
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut rest = data;
        while !rest.is_empty() {
            let newline = rest.iter().position(|b| *b == b'\n');
            let (line, tag, next) = match newline {
                _ if self.line_max > 0 && newline.unwrap_or(rest.len()) > self.line_max => {
                    (&rest[..self.line_max], b'P', &rest[self.line_max..])
                }
                Some(i) => (&rest[..i], b'F', &rest[i + 1..]),
                None => (rest, b'P', &rest[rest.len()..]),
            };
            out.extend_from_slice(ts.as_bytes());
            out.push(b' ');
            out.extend_from_slice(stream.as_bytes());
            out.push(b' ');
            out.push(tag);
            out.push(b' ');
            out.extend_from_slice(line);
            out.push(b'\n');
            rest = next;
        }
        if self.max > 0 && self.size > 0 && self.size + out.len() as u64 > self.max {
            self.rotate();
        }
        if file::write_all(&self.fd, &out).is_ok() {
            self.size += out.len() as u64;
        }
    }

    /// Opens the log file again at its path: the caller moved the old one away (kubelet
    /// rotates CRI logs itself). Writing goes on to the old file if the new cannot be opened.
    pub fn reopen(&mut self) -> io::Result<()> {
        let fd = open_append(&self.path)?;
        self.size = file::fstat(&fd).map_or(0, |st| st.st_size as u64);
        // The old descriptor closes as it is replaced.
        self.fd = fd;
        Ok(())
    }

    fn rotate(&mut self) {
        // SAFETY: renaming our own log file; a failure keeps writing to the old one.
        if unsafe { libc::rename(self.path.as_ptr(), self.rotated.as_ptr()) } != 0 {
            return;
        }
        if let Ok(fd) = open_append(&self.path) {
            self.fd = fd;
            self.size = 0;
        }
    }
}

fn open_append(path: &CString) -> io::Result<OwnedFd> {
    file::openat(file::CWD, path, libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_rotation() {
        let dir = std::env::temp_dir().join(format!("berth-monitor-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctr.log");
        let mut w = LogWriter::open(path.to_str().unwrap(), 200, 0).unwrap();
        w.write("stdout", b"one\ntwo\npart");
        w.write("stderr", b"ial\n");
        let text = std::fs::read_to_string(&path).unwrap();
        let tags: Vec<(&str, &str, &str)> = text
            .lines()
            .map(|l| {
                let mut f = l.splitn(4, ' ');
                f.next();
                (f.next().unwrap(), f.next().unwrap(), f.next().unwrap())
            })
            .collect();
        assert_eq!(
            tags,
            [("stdout", "F", "one"), ("stdout", "F", "two"), ("stdout", "P", "part"), ("stderr", "F", "ial")]
        );
        for _ in 0..10 {
            w.write("stdout", b"0123456789012345678901234567890123456789\n");
        }
        assert!(dir.join("ctr.log.1").exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 200);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_lines_are_split() {
        let dir = std::env::temp_dir().join(format!("berth-monitor-lines-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctr.log");
        let mut w = LogWriter::open(path.to_str().unwrap(), 0, 4).unwrap();
        w.write(
            "stdout",
            b"abcdefghij
abcd
xy",
        );
        let records: Vec<(String, String)> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(4, ' ').collect();
                (f[2].to_string(), f[3].to_string())
            })
            .collect();
        let want = [("P", "abcd"), ("P", "efgh"), ("F", "ij"), ("F", "abcd"), ("P", "xy")];
        assert_eq!(records, want.map(|(t, x)| (t.to_string(), x.to_string())));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
