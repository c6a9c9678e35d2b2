//! Pull/push progress: bars (indicatif) on a terminal, plain lines otherwise, nothing with
//! `--quiet`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use berth_image::pull::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub enum Reporter {
    Quiet,
    Lines(Mutex<HashMap<String, u64>>),
    Bars { multi: MultiProgress, bars: Mutex<HashMap<String, ProgressBar>> },
}

impl Reporter {
    pub fn new(quiet: bool) -> Reporter {
        if quiet {
            Reporter::Quiet
        } else if std::io::stderr().is_terminal() {
            Reporter::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: Mutex::new(HashMap::new()),
            }
        } else {
            Reporter::Lines(Mutex::new(HashMap::new()))
        }
    }
}

impl Reporter {
    /// Ends the bars' block so that following output starts on its own line.
    pub fn finish(&self) {
        if let Reporter::Bars { bars, .. } = self {
            if !bars.lock().unwrap().is_empty() {
                eprintln!();
            }
        }
    }
}

pub fn human_bytes(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.2}GB", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.2}MB", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.2}kB", f / 1e3)
    } else {
        format!("{n}B")
    }
}

impl Progress for Reporter {
    fn begin(&self, id: &str, label: &str, total: u64) {
        match self {
            Reporter::Quiet => {}
            Reporter::Lines(m) => {
                m.lock().unwrap().insert(id.to_string(), total);
            }
            Reporter::Bars { multi, bars } => {
                let pb = multi.add(ProgressBar::new(total));
                pb.set_style(
                    ProgressStyle::with_template("{prefix:>18} [{bar:30}] {bytes:>10}/{total_bytes:<10} {msg}")
                        .unwrap()
                        .progress_chars("=> "),
                );
                pb.set_prefix(label.to_string());
                bars.lock().unwrap().insert(id.to_string(), pb);
            }
        }
    }
    fn advance(&self, id: &str, bytes: u64) {
        if let Reporter::Bars { bars, .. } = self {
            if let Some(pb) = bars.lock().unwrap().get(id) {
                pb.set_position(bytes);
            }
        }
    }
    fn end(&self, id: &str, status: &str) {
        match self {
            Reporter::Quiet => {}
            Reporter::Lines(m) => {
                let total = m.lock().unwrap().get(id).copied().unwrap_or(0);
                eprintln!("{id}: {status} ({})", human_bytes(total));
            }
            Reporter::Bars { bars, .. } => {
                if let Some(pb) = bars.lock().unwrap().get(id) {
                    if let Some(len) = pb.length() {
                        pb.set_position(len);
                    }
                    pb.finish_with_message(status.to_string());
                }
            }
        }
    }
    fn note(&self, msg: &str) {
        match self {
            Reporter::Quiet => {}
            Reporter::Lines(_) => eprintln!("{msg}"),
            Reporter::Bars { multi, .. } => {
                let _ = multi.println(msg);
            }
        }
    }
}
