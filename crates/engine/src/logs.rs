//! `logs`: reads the container's CRI log (`ctr.log.1` then `ctr.log`), joins partial (`P`)
//! records into lines, and with `follow` keeps reading (across rotations) until the container
//! stops.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
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
        let path = dir.join("ctr.log");
        let mut parser = Parser { pending: [None, None] };
        let mut lines = Vec::new();
        let mut rest = Vec::new();
        if let Ok(mut f) = File::open(dir.join("ctr.log.1")) {
            f.read_to_end(&mut rest)?;
            split_records(&mut rest, &mut parser, &mut lines);
            rest.clear();
        }
        let mut file = File::open(&path).ok();
        if let Some(f) = file.as_mut() {
            f.read_to_end(&mut rest)?;
            split_records(&mut rest, &mut parser, &mut lines);
        }
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
        let mut inode = file.as_ref().and_then(|f| f.metadata().ok()).map(|m| m.ino()).unwrap_or(0);
        let mut idle_after_exit = 0;
        loop {
            let mut new = Vec::new();
            if let Some(f) = file.as_mut() {
                f.read_to_end(&mut rest)?;
            }
            // Rotated: finish the old file (read above), continue with the new one.
            let cur = std::fs::metadata(&path).map(|m| m.ino()).unwrap_or(0);
            if cur != 0 && cur != inode {
                if let Ok(mut f) = File::open(&path) {
                    f.seek(SeekFrom::Start(0))?;
                    f.read_to_end(&mut rest)?;
                    file = Some(f);
                    inode = cur;
                }
            }
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
}
