//! Running commands and their peak RSS (from wait4's rusage); summaries of timings.

use std::ffi::CString;
use std::time::Duration;

pub struct Sample {
    /// Peak resident set of the process (and of the children it waited for), KiB.
    pub max_rss_kib: u64,
}

/// Runs argv (stdin, stdout from /dev/null; stderr passed through) and waits for it with wait4.
pub fn run(argv: &[String]) -> Result<Sample, String> {
    let c_args: Vec<CString> = argv.iter().map(|a| CString::new(a.as_bytes()).unwrap()).collect();
    let mut ptrs: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let devnull = c"/dev/null";
    // SAFETY: fork then only async-signal-safe calls in the child before exec.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        unsafe {
            let fd = libc::open(devnull.as_ptr(), libc::O_RDWR);
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::execv(ptrs[0], ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    let mut status = 0;
    // SAFETY: rusage is plain data filled by the kernel.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if r != pid {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("{} failed (status {status:#x})", argv.join(" ")));
    }
    Ok(Sample { max_rss_kib: ru.ru_maxrss as u64 })
}

pub struct Summary {
    pub median: Duration,
    pub min: Duration,
    pub max: Duration,
}

pub fn summarize(samples: &[Duration]) -> Summary {
    let mut s = samples.to_vec();
    s.sort();
    let median = if s.is_empty() { Duration::ZERO } else { s[s.len() / 2] };
    Summary { median, min: *s.first().unwrap_or(&Duration::ZERO), max: *s.last().unwrap_or(&Duration::ZERO) }
}

pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// A side-by-side table's header: the label column, a column per endpoint, then a ratio
/// column per endpoint after the first (the first's figure over that one's).
pub fn print_header(label_width: usize, names: &[&str]) {
    print!("{:<label_width$}", "step");
    for n in names {
        print!(" {n:>24}");
    }
    for n in &names[1..] {
        print!(" {:>18}", format!("{}/{n}", names[0]));
    }
    println!();
}

/// A row of timings: each endpoint's median (min-max) in ms, then the first's median over
/// each other's.
pub fn print_durations(label: &str, label_width: usize, samples: &[&[Duration]]) {
    print!("{label:<label_width$}");
    for s in samples {
        let s = summarize(s);
        print!(" {:>24}", format!("{} ({}-{})", ms(s.median), ms(s.min), ms(s.max)));
    }
    let base = summarize(samples[0]).median.as_secs_f64();
    for s in &samples[1..] {
        print!(" {:>18.2}", base / summarize(s).median.as_secs_f64());
    }
    println!();
}
