//! What /proc says about processes.

/// A process's start time (field 22 of /proc/PID/stat, in clock ticks since boot): with the
/// pid, it names one process for good (a pid alone may be reused). None if the process is
/// gone or a zombie.
pub fn process_start(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (state, start) = stat_fields(&stat)?;
    if state == "Z" || state == "X" {
        return None;
    }
    Some(start)
}

/// Whether `pid` is still the process that had `start` (alive, not a zombie).
pub fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && process_start(pid) == Some(start)
}

/// The state (field 3) and start time (field 22) of a /proc/PID/stat line. The command name
/// (field 2) is in parentheses and may itself hold spaces and parentheses: fields are counted
/// from the last ')'.
pub fn stat_fields(stat: &str) -> Option<(&str, u64)> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.first()?, fields.get(19)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        let line = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(stat_fields(line), Some(("S", 98765)));
        assert_eq!(stat_fields("garbage"), None);
        assert_eq!(stat_fields("1 (x) R 1 2"), None);
    }

    #[test]
    fn this_process() {
        let me = std::process::id() as i32;
        let start = process_start(me).expect("our own start time");
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
        assert_eq!(process_start(0), None);
    }
}
