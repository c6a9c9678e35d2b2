//! Time as the engine shows and stores it: RFC 3339 UTC with nanoseconds.

pub use berth_time::{format_rfc3339, now_nanos, now_rfc3339, now_secs, parse_rfc3339};

/// `--since`: an RFC 3339 time, a Unix timestamp (`1700000000[.5]`), or a duration before now
/// (`10m`, `1h30m`, `45s`). Returns nanoseconds since the epoch.
pub fn parse_since(s: &str) -> Option<i128> {
    if let Some(t) = parse_rfc3339(s) {
        return Some(t);
    }
    if let Ok(f) = s.parse::<f64>() {
        return Some((f * 1e9) as i128);
    }
    let mut total: i128 = 0;
    let mut num = String::new();
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i128 = num.parse().ok()?;
        num.clear();
        let unit: i128 = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            'd' => 86_400,
            _ => return None,
        };
        total += n * unit * 1_000_000_000;
        any = true;
    }
    if !num.is_empty() || !any {
        return None;
    }
    Some(now_nanos() as i128 - total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since() {
        let ten_min_ago = parse_since("10m").unwrap();
        assert!(now_nanos() as i128 - ten_min_ago >= 600 * 1_000_000_000);
        assert!(parse_since("10x").is_none());
    }
}
