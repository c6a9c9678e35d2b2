//! --log and --log-format: where errors go. Callers read the log (containerd takes the last
//! JSON line's "msg"); people read stderr, which always gets the error text too.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

pub struct Logger {
    file: Option<File>,
    json: bool,
    debug: bool,
}

impl Logger {
    pub fn new(path: Option<&Path>, format: &str, debug: bool) -> Result<Logger, String> {
        let json = match format {
            "text" => false,
            "json" => true,
            other => return Err(format!("--log-format: '{other}' is not text or json")),
        };
        let file = match path {
            Some(p) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("--log {}: {e}", p.display()))?,
            ),
            None => None,
        };
        Ok(Logger { file, json, debug })
    }

    fn record(&self, level: &str, msg: &str) -> String {
        let time = oci_runtime::state::rfc3339_now();
        if self.json {
            let v = serde_json::json!({ "level": level, "msg": msg, "time": time });
            format!("{v}\n")
        } else {
            format!("time=\"{time}\" level={level} msg={}\n", serde_json::Value::String(msg.to_string()))
        }
    }

    /// With --debug: what the runtime did, to the log file or stderr.
    pub fn debug(&self, msg: impl FnOnce() -> String) {
        if !self.debug {
            return;
        }
        match self.file.as_ref() {
            Some(mut f) => {
                let _ = f.write_all(self.record("debug", &msg()).as_bytes());
            }
            None => eprintln!("berth-oci: debug: {}", msg()),
        }
    }

    /// Warnings go to the log file; without one, to stderr only with --debug (a container's
    /// caller reads stderr as the container's).
    pub fn warn(&self, msg: &str) {
        match self.file.as_ref() {
            Some(mut f) => {
                let _ = f.write_all(self.record("warning", msg).as_bytes());
            }
            None if self.debug => eprintln!("berth-oci: warning: {msg}"),
            None => {}
        }
    }

    pub fn error(&self, msg: &str) {
        if let Some(mut f) = self.file.as_ref() {
            let _ = f.write_all(self.record("error", msg).as_bytes());
        }
        eprintln!("berth-oci: {msg}");
    }
}
