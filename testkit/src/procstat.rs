//! A process's own figures from /proc, for tests, benches and examples that
//! measure kubedf (or themselves): a number of `/proc/PID/status`, and the
//! CPU time of `/proc/PID/stat`.

/// The first number of `key` in `/proc/PID/status` (`VmRSS` and `VmHWM` in
/// KiB, `Threads`).
pub fn status_number(pid: u32, key: &str) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("{path}: no {key}"))
}

/// The process's CPU time so far (user and system, every thread), in ms.
/// /proc reports it in USER_HZ ticks, which Linux fixes at 100 a second.
pub fn cpu_ms(pid: u32) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    // The fields after the command's closing parenthesis (which may itself
    // hold spaces and parentheses); utime and stime are the line's 14th and
    // 15th, the rest's 12th and 13th.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("{path}: no command"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, String> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("{path}: field {} unreadable", i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) * 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_rss_and_cpu_time() {
        let pid = std::process::id();
        assert!(status_number(pid, "VmRSS").expect("VmRSS") > 0);
        assert!(status_number(pid, "Threads").expect("Threads") >= 1);
        let mut burn = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(50) {
            burn = burn.wrapping_add(std::hint::black_box(1));
        }
        assert!(burn > 0);
        assert!(cpu_ms(pid).expect("cpu") >= 10.0);
        assert!(status_number(pid, "NoSuchKey").is_err());
    }
}
