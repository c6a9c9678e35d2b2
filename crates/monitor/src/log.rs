//! The container's log in the CRI format: one record per line,
//! `<RFC 3339 time with nanoseconds> <stdout|stderr> <F|P> <text>`, where `P` marks a partial
//! line (the rest follows in the next record) and `F` a full one. The file is rotated by size:
//! when a write would take it past the limit it becomes `<log>.1` and a new file starts.

use std::ffi::CString;
use std::io;

pub struct LogWriter {
    path: CString,
    rotated: CString,
    fd: i32,
    size: u64,
    max: u64,
}

impl LogWriter {
    pub fn open(path: &str, max: u64) -> io::Result<LogWriter> {
        let cpath = CString::new(path).map_err(|_| io::Error::other("log path contains NUL"))?;
        let rotated = CString::new(format!("{path}.1")).map_err(|_| io::Error::other("log path contains NUL"))?;
        let fd = open_append(&cpath)?;
        // SAFETY: fstat on our descriptor.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        unsafe { libc::fstat(fd, &mut st) };
        Ok(LogWriter { path: cpath, rotated, fd, size: st.st_size as u64, max })
    }

    /// Writes one chunk read from `stream`: its complete lines as `F` records, a trailing
    /// incomplete line as a `P` record.
    pub fn write(&mut self, stream: &str, data: &[u8]) {
        let ts = timestamp_now();
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut rest = data;
        while !rest.is_empty() {
            let (line, tag, next) = match rest.iter().position(|b| *b == b'\n') {
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
        if write_all(self.fd, &out).is_ok() {
            self.size += out.len() as u64;
        }
    }

    fn rotate(&mut self) {
        // SAFETY: renaming our own log file; a failure keeps writing to the old one.
        if unsafe { libc::rename(self.path.as_ptr(), self.rotated.as_ptr()) } != 0 {
            return;
        }
        if let Ok(fd) = open_append(&self.path) {
            unsafe { libc::close(self.fd) };
            self.fd = fd;
            self.size = 0;
        }
    }
}

fn open_append(path: &CString) -> io::Result<i32> {
    // SAFETY: plain open.
    let fd =
        unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC, 0o640) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

pub fn write_all(fd: i32, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writing from a valid buffer.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Now, as RFC 3339 UTC with nanoseconds: `2024-05-01T12:00:00.123456789Z`.
pub fn timestamp_now() -> String {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    format_rfc3339(ts.tv_sec, ts.tv_nsec as u32)
}

pub fn format_rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", rem / 3600, (rem / 60) % 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(format_rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(format_rfc3339(1_700_000_000, 123), "2023-11-14T22:13:20.000000123Z");
    }

    #[test]
    fn records_and_rotation() {
        let dir = std::env::temp_dir().join(format!("berth-monitor-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctr.log");
        let mut w = LogWriter::open(path.to_str().unwrap(), 200).unwrap();
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
}
