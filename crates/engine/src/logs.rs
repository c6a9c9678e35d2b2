//! `logs`: reads the container's CRI log (`ctr.log.1` then `ctr.log`), joins partial (`P`)
//! records into lines, and with `follow` keeps reading (across rotations) until the container
//! stops.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Result;
use crate::time::parse_rfc3339;
use crate::Engine;

#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub tail: Option<usize>,
    /// nanoseconds since the epoch
    pub since: Option<i128>,
    pub until: Option<i128>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: String,
    /// "stdout" or "stderr"
    pub stream: String,
    /// the line, with its newline unless the log ended in the middle of it
    pub text: Vec<u8>,
}

/// Parses records, joining partial ones; `pending` holds partial lines per stream.
struct Parser {
    pending: [Option<LogLine>; 2],
}

impl Parser {
    fn feed(&mut self, record: &[u8], out: &mut Vec<LogLine>) {
        let mut parts = record.splitn(4, |b| *b == b' ');
        let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else { return };
        let content = parts.next().unwrap_or(b"");
        let idx = match stream {
            b"stdout" => 0,
            b"stderr" => 1,
            _ => return,
        };
        let entry = self.pending[idx].get_or_insert_with(|| LogLine {
            time: String::from_utf8_lossy(ts).into_owned(),
            stream: String::from_utf8_lossy(stream).into_owned(),
            text: Vec::new(),
        });
        entry.text.extend_from_slice(content);
        if tag == b"F" {
            let mut l = self.pending[idx].take().unwrap();
            l.text.push(b'\n');
            out.push(l);
        }
    }

    fn flush(&mut self, out: &mut Vec<LogLine>) {
        for p in self.pending.iter_mut() {
            if let Some(l) = p.take() {
                out.push(l);
            }
        }
    }
}

fn split_records(buf: &mut Vec<u8>, parser: &mut Parser, out: &mut Vec<LogLine>) {
    let mut start = 0;
    while let Some(i) = buf[start..].iter().position(|b| *b == b'\n') {
        parser.feed(&buf[start..start + i], out);
        start += i + 1;
    }
    buf.drain(..start);
}

/// The two files of a container's log (`ctr.log.1`, `ctr.log`) read as one stream, across the
/// monitor's rotations.
struct LogFiles {
    path: PathBuf,
    rotated: PathBuf,
    /// the current file as last opened, and its inode
    file: Option<File>,
    inode: u64,
}

fn inode(f: &File) -> u64 {
    f.metadata().map(|m| m.ino()).unwrap_or(0)
}

impl LogFiles {
    /// Opens the log and appends everything it holds so far to `buf`: the rotated file, then
    /// the current one. They are a pair from one moment (the current file is still the current
    /// one once both are open), else the monitor rotated in between and they are opened again.
    fn open(dir: &Path, buf: &mut Vec<u8>) -> std::io::Result<LogFiles> {
        let path = dir.join("ctr.log");
        let rotated = dir.join("ctr.log.1");
        let (file, older) = loop {
            let cur = File::open(&path).ok();
            let old = File::open(&rotated).ok();
            let now = std::fs::metadata(&path).map(|m| m.ino()).ok();
            if now == cur.as_ref().map(inode) {
                break (cur, old);
            }
        };
        if let Some(mut f) = older {
            f.read_to_end(buf)?;
        }
        let mut files = LogFiles { path, rotated, inode: file.as_ref().map(inode).unwrap_or(0), file };
        if let Some(f) = files.file.as_mut() {
            f.read_to_end(buf)?;
        }
        Ok(files)
    }

    /// Appends what was written since the last call. On a rotation: the rest of the old file
    /// (the monitor may have written to it after the last read, before renaming it; it writes
    /// no more to it now), a file rotated in between (two rotations within one poll), then the
    /// new file from its start.
    fn poll(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        if let Some(f) = self.file.as_mut() {
            f.read_to_end(buf)?;
        }
        let cur = std::fs::metadata(&self.path).map(|m| m.ino()).unwrap_or(0);
        if cur == 0 || cur == self.inode {
            return Ok(());
        }
        if let Some(f) = self.file.as_mut() {
            f.read_to_end(buf)?;
        }
        let Ok(mut f) = File::open(&self.path) else { return Ok(()) };
        let new_inode = inode(&f);
        if let Ok(mut mid) = File::open(&self.rotated) {
            let mid_inode = inode(&mid);
            if mid_inode != self.inode && mid_inode != new_inode {
                mid.read_to_end(buf)?;
            }
        }
        f.seek(SeekFrom::Start(0))?;
        f.read_to_end(buf)?;
        self.file = Some(f);
        self.inode = new_inode;
        Ok(())
    }
}

impl Engine {
    /// Calls `sink` with every log line of the container that passes the options.
    pub fn logs(
        &self,
        name_or_id: &str,
        o: &LogOptions,
        mut sink: impl FnMut(&LogLine) -> std::io::Result<()>,
    ) -> Result<()> {
        let c = self.get(name_or_id)?;
        let dir = self.container_dir(&c.id);
        let mut parser = Parser { pending: [None, None] };
        let mut lines = Vec::new();
        let mut rest = Vec::new();
        let mut files = LogFiles::open(&dir, &mut rest)?;
        split_records(&mut rest, &mut parser, &mut lines);
        if !o.follow {
            parser.flush(&mut lines);
        }
        let keep = |l: &LogLine| {
            let t = parse_rfc3339(&l.time).unwrap_or(0);
            o.since.map(|s| t >= s).unwrap_or(true) && o.until.map(|u| t <= u).unwrap_or(true)
        };
        let mut selected: Vec<&LogLine> = lines.iter().filter(|l| keep(l)).collect();
        if let Some(n) = o.tail {
            let skip = selected.len().saturating_sub(n);
            selected.drain(..skip);
        }
        for l in selected {
            if sink(l).is_err() {
                return Ok(());
            }
        }
        if !o.follow {
            return Ok(());
        }
        let mut idle_after_exit = 0;
        loop {
            let mut new = Vec::new();
            files.poll(&mut rest)?;
            split_records(&mut rest, &mut parser, &mut new);
            for l in new.iter().filter(|l| keep(l)) {
                if sink(l).is_err() {
                    return Ok(());
                }
            }
            let running = self.get(&c.id).map(|c| c.running() || c.state.status == "creating").unwrap_or(false);
            if !running {
                idle_after_exit += 1;
                if idle_after_exit > 2 {
                    let mut tail = Vec::new();
                    parser.flush(&mut tail);
                    for l in tail.iter().filter(|l| keep(l)) {
                        let _ = sink(l);
                    }
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partials_join() {
        let mut p = Parser { pending: [None, None] };
        let mut out = Vec::new();
        let mut buf = b"2024-01-01T00:00:00.000000000Z stdout P hel\n2024-01-01T00:00:00.100000000Z stderr F err\n2024-01-01T00:00:01.000000000Z stdout F lo\n2024-01-01T00:00:02Z stdout F incomplete".to_vec();
        split_records(&mut buf, &mut p, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].text, b"err\n");
        assert_eq!(out[1].text, b"hello\n");
        assert_eq!(out[1].time, "2024-01-01T00:00:00.000000000Z");
        assert!(buf.starts_with(b"2024-01-01T00:00:02Z"));
    }

    fn rec(i: usize) -> String {
        format!("2024-01-01T00:00:00.{i:09}Z stdout F r{i}\n")
    }

    fn texts(buf: &mut Vec<u8>) -> Vec<String> {
        let mut p = Parser { pending: [None, None] };
        let mut out = Vec::new();
        split_records(buf, &mut p, &mut out);
        out.iter().map(|l| String::from_utf8_lossy(&l.text).trim_end().to_string()).collect()
    }

    fn append(path: &Path, s: &str) {
        use std::io::Write;
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(s.as_bytes()).unwrap();
    }

    /// The monitor's rotation: ctr.log becomes ctr.log.1, a new ctr.log starts.
    fn rotate(dir: &Path) {
        std::fs::rename(dir.join("ctr.log"), dir.join("ctr.log.1")).unwrap();
        append(&dir.join("ctr.log"), "");
    }

    #[test]
    fn follow_across_rotations() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let log = dir.join("ctr.log");
        append(&log, &rec(0));
        rotate(dir);
        append(&log, &rec(1));
        let mut buf = Vec::new();
        let mut f = LogFiles::open(dir, &mut buf).unwrap();
        assert_eq!(texts(&mut buf), ["r0", "r1"]);
        // Written to the old file after the last read, then rotated: still read.
        append(&log, &rec(2));
        rotate(dir);
        append(&log, &rec(3));
        f.poll(&mut buf).unwrap();
        assert_eq!(texts(&mut buf), ["r2", "r3"]);
        // Two rotations between polls: the file in between is read too.
        append(&log, &rec(4));
        rotate(dir);
        append(&log, &rec(5));
        rotate(dir);
        append(&log, &rec(6));
        f.poll(&mut buf).unwrap();
        assert_eq!(texts(&mut buf), ["r4", "r5", "r6"]);
        f.poll(&mut buf).unwrap();
        assert!(buf.is_empty());
        append(&log, &rec(7));
        f.poll(&mut buf).unwrap();
        assert_eq!(texts(&mut buf), ["r7"]);
    }

    #[test]
    fn follow_before_the_first_record() {
        let d = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        let mut f = LogFiles::open(d.path(), &mut buf).unwrap();
        f.poll(&mut buf).unwrap();
        assert!(buf.is_empty());
        append(&d.path().join("ctr.log"), &rec(1));
        f.poll(&mut buf).unwrap();
        assert_eq!(texts(&mut buf), ["r1"]);
    }
}
