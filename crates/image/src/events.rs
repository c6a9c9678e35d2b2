//! The store's event log (docker's `events`): one JSON object a line in `<root>/events.log`,
//! appended by every berth process that changes a container or an image (each line in one
//! O_APPEND write, so lines from several processes never interleave), read back and followed
//! by `berth events`. At `MAX_LOG` bytes the log moves to `events.log.1` (the one before is
//! dropped), so it takes at most twice that.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How large the log grows before it is rotated.
pub const MAX_LOG: u64 = 4 << 20;

/// One event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// nanoseconds since the epoch
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
    /// container or image
    #[serde(rename = "Type")]
    pub kind: String,
    /// create, start, die, oom, destroy, pause, unpause, rename, kill, stop (containers);
    /// pull, push, tag, untag, delete, build, commit, import, load (images)
    #[serde(rename = "Action")]
    pub action: String,
    /// the container's ID, or the image's
    #[serde(rename = "ID")]
    pub id: String,
    /// name, image, exitCode, signal, ...
    #[serde(rename = "Attributes", default)]
    pub attributes: std::collections::BTreeMap<String, String>,
}

pub fn log_path(root: &Path) -> PathBuf {
    root.join("events.log")
}

fn now_nanos() -> i64 {
    berth_time::now_nanos() as i64
}

/// Appends an event to the store at `root`; failures are not the caller's (an event that
/// cannot be written does not undo what happened).
pub fn emit(root: &Path, kind: &str, action: &str, id: &str, attributes: &[(&str, &str)]) {
    let e = Event {
        time_nano: now_nanos(),
        kind: kind.into(),
        action: action.into(),
        id: id.into(),
        attributes: attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    let Ok(mut line) = serde_json::to_vec(&e) else { return };
    line.push(b'\n');
    let path = log_path(root);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > MAX_LOG) {
        // Whoever sees it first moves it; the others append to the new one.
        let _ = std::fs::rename(&path, root.join("events.log.1"));
    }
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).mode(0o600).open(&path) {
        let _ = f.write_all(&line);
    }
}

/// What `events` shows.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// nanoseconds; events before are not shown
    pub since: Option<i64>,
    /// nanoseconds; events after are not shown, and the reading stops there
    pub until: Option<i64>,
    /// `key=value`: type, event (action), container, image, label..., all ANDed, several
    /// values of one key ORed
    pub filters: Vec<(String, String)>,
}

impl Query {
    pub fn matches(&self, e: &Event) -> bool {
        if self.since.is_some_and(|s| e.time_nano < s) || self.until.is_some_and(|u| e.time_nano > u) {
            return false;
        }
        let mut keys: Vec<&str> = self.filters.iter().map(|(k, _)| k.as_str()).collect();
        keys.dedup();
        keys.iter().all(|key| {
            self.filters.iter().filter(|(k, _)| k == key).any(|(_, v)| match *key {
                "type" => &e.kind == v,
                "event" | "action" => &e.action == v,
                "container" => {
                    e.kind == "container" && (e.id.starts_with(v.as_str()) || e.attributes.get("name") == Some(v))
                }
                "image" => {
                    e.attributes.get("image") == Some(v)
                        || (e.kind == "image" && (e.id.starts_with(v.as_str()) || e.attributes.get("name") == Some(v)))
                }
                _ => false,
            })
        })
    }
}

/// Checks a filter key, for an error that names it.
pub fn known_filter(key: &str) -> bool {
    matches!(key, "type" | "event" | "action" | "container" | "image")
}

/// Calls `out` with every logged event `q` matches, then (with `follow`) with new ones as they
/// are appended, until `until` passes or `out` returns false.
pub fn read(root: &Path, q: &Query, follow: bool, out: &mut dyn FnMut(&Event) -> bool) -> std::io::Result<()> {
    let path = log_path(root);
    for old in [root.join("events.log.1"), path.clone()] {
        let Ok(f) = std::fs::File::open(&old) else { continue };
        for line in BufReader::new(f).lines() {
            let Ok(line) = line else { break };
            if let Ok(e) = serde_json::from_str::<Event>(&line) {
                if q.matches(&e) && !out(&e) {
                    return Ok(());
                }
            }
        }
    }
    if !follow {
        return Ok(());
    }
    // From the end as it is now: the file may be rotated (then read from its start).
    let mut offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut pending = Vec::new();
    loop {
        if q.until.is_some_and(|u| now_nanos() > u) {
            return Ok(());
        }
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0;
        }
        if len > offset {
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut buf)?;
            offset += buf.len() as u64;
            pending.extend_from_slice(&buf);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                if let Ok(e) = serde_json::from_slice::<Event>(&line) {
                    if q.matches(&e) && !out(&e) {
                        return Ok(());
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emitted_events_are_read_back_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        emit(dir.path(), "container", "create", "abc123", &[("name", "web"), ("image", "busybox")]);
        emit(dir.path(), "container", "start", "abc123", &[("name", "web"), ("image", "busybox")]);
        emit(dir.path(), "image", "pull", "sha256:ff", &[("name", "busybox")]);
        let all = |q: &Query| {
            let mut v = Vec::new();
            read(dir.path(), q, false, &mut |e| {
                v.push(e.action.clone());
                true
            })
            .unwrap();
            v
        };
        assert_eq!(all(&Query::default()), ["create", "start", "pull"]);
        let f = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(all(&Query { filters: vec![f("type", "container")], ..Default::default() }), ["create", "start"]);
        assert_eq!(
            all(&Query { filters: vec![f("event", "start"), f("event", "pull")], ..Default::default() }),
            ["start", "pull"]
        );
        assert_eq!(
            all(&Query { filters: vec![f("container", "web"), f("event", "start")], ..Default::default() }),
            ["start"]
        );
        assert_eq!(
            all(&Query { filters: vec![f("image", "busybox")], ..Default::default() }),
            ["create", "start", "pull"]
        );
        assert!(all(&Query { since: Some(now_nanos() + 1_000_000_000), ..Default::default() }).is_empty());
    }
}
