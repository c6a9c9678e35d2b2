//! What every suite asserts with: waiting for what happens on its own (a container's exit, a
//! monitor's cleanup, a lock another thread takes), and text that must appear.

use std::time::{Duration, Instant};

/// The pause between two asks of `poll_until` and `wait_until`: what the suites' own loops
/// waited (a shorter one makes a test act sooner after its condition first holds, which a
/// test written against this one may not be ready for).
pub const PAUSE: Duration = Duration::from_millis(20);

/// Asks `cond` every `PAUSE` until it holds; false if `timeout` passed first.
///
/// A caller that wants to say what it saw last keeps it in a variable the closure sets:
/// `assert!(poll_until(t, || { seen = read(); seen.contains(x) }), "{seen}")`.
pub fn poll_until(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    poll_every(PAUSE, timeout, cond)
}

/// Asks `cond` every `pause` until it holds; false if `timeout` passed first.
pub fn poll_every(pause: Duration, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
    }
}

/// Waits until `cond` holds, failing the test with `what` once `timeout` has passed.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(poll_until(timeout, cond), "timed out after {timeout:?} waiting for {what}");
}

/// Fails the test unless `haystack` contains `needle`, showing both.
#[track_caller]
pub fn assert_contains(haystack: &str, needle: &str) {
    assert!(haystack.contains(needle), "expected {needle:?} in:\n{haystack}");
}

/// Ends the process (exit status 101) if the suite is still running after `limit`, printing
/// which of its threads wait where: a hung suite then fails CI with a pointer instead of
/// holding it until its deadline. What the suite made is left for its leak check's next run
/// and for the one reading the message.
pub fn watchdog(suite: &str, limit: Duration) {
    let suite = suite.to_string();
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("\nthe {suite} suite is still running after {limit:?}: a hang; stopping it. Its threads:");
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for t in tasks.flatten() {
                let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
                eprintln!("  {} {} waiting in {}", t.file_name().to_string_lossy(), read("comm").trim(), read("wchan"));
            }
        }
        std::process::exit(101);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_until_true_or_the_deadline() {
        let mut n = 0;
        assert!(poll_until(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
        assert_eq!(n, 3);
        let start = Instant::now();
        assert!(!poll_until(Duration::from_millis(50), || false));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible")]
    fn wait_until_names_what_never_came() {
        wait_until("the impossible", Duration::from_millis(10), || false);
    }

    #[test]
    #[should_panic(expected = "expected \"b\" in:\na")]
    fn assert_contains_shows_both() {
        assert_contains("a", "b");
    }
}
