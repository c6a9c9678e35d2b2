//! Values on the command line: signals, sizes with units, durations.

use std::time::Duration;

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// "KILL", "SIGKILL", "sigkill", "9", "RTMIN+3".
pub fn signal(s: &str) -> Result<i32, String> {
    let bad = || format!("invalid signal '{s}'");
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=libc::SIGRTMAX()).contains(&n) { Ok(n) } else { Err(bad()) };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((_, n)) = SIGNALS.iter().find(|(n, _)| *n == name) {
        return Ok(*n);
    }
    let rt = |base: i32, off: &str| -> Result<i32, String> {
        let off: i32 = if off.is_empty() { 0 } else { off.parse().map_err(|_| bad())? };
        let n = base + off;
        if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        }
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return rt(libc::SIGRTMIN(), rest.trim_start_matches('+'));
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return rt(libc::SIGRTMAX(), rest);
    }
    Err(bad())
}

/// Bytes with an optional binary unit, as docker's RAMInBytes: "512", "100k", "64m", "1g", "1GiB"; "-1".
pub fn size(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid size '{s}' (use bytes or a number with k, m, g, t)");
    let t = s.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let lower = t.to_ascii_lowercase();
    let digits_end = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (num, unit) = lower.split_at(digits_end);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0f64.powi(4),
        _ => return Err(bad()),
    };
    Ok((value * mult) as i64)
}

/// Go-style durations: "5s", "250ms", "1m30s", "2h".
pub fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration '{s}' (e.g. 5s, 500ms, 1m)");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let value: f64 = rest[..end].parse().map_err(|_| bad())?;
        rest = &rest[end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let secs = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(value * secs);
        rest = &rest[unit_end..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(signal("KILL"), Ok(9));
        assert_eq!(signal("SIGTERM"), Ok(15));
        assert_eq!(signal("sigusr1"), Ok(libc::SIGUSR1));
        assert_eq!(signal("9"), Ok(9));
        assert_eq!(signal("RTMIN+2"), Ok(libc::SIGRTMIN() + 2));
        assert!(signal("NOPE").is_err());
        assert!(signal("0").is_err());
        assert!(signal("99").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size("1024"), Ok(1024));
        assert_eq!(size("100m"), Ok(100 << 20));
        assert_eq!(size("1G"), Ok(1 << 30));
        assert_eq!(size("512KiB"), Ok(512 << 10));
        assert_eq!(size("-1"), Ok(-1));
        assert!(size("ten").is_err());
        assert!(size("1x").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(duration("5").is_err());
        assert!(duration("").is_err());
    }
}
