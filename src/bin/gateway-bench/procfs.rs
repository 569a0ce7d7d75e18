//! Samples of a process's resident memory and CPU time from /proc (Linux only).

use serde::Serialize;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    pub threads: u64,
}

/// CPU use between two samples.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    /// CPU seconds per wall second (1.0 is one core fully busy).
    pub cores: f64,
    pub rss_bytes: u64,
}

// === Sample ===

impl Sample {
    /// Reads `/proc/<pid>` (`None`: this process). Zeros when the process is gone.
    pub fn of(pid: Option<u32>) -> Sample {
        let dir = match pid {
            Some(p) => format!("/proc/{p}"),
            None => "/proc/self".to_owned(),
        };
        let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
        Sample {
            rss_bytes: field("VmRSS:") * 1024,
            cpu_seconds: cpu_seconds(&stat),
            threads: field("Threads:"),
        }
    }

    pub fn usage_since(&self, earlier: &Sample, wall_seconds: f64) -> Usage {
        let cpu = (self.cpu_seconds - earlier.cpu_seconds).max(0.0);
        Usage {
            cpu_seconds: cpu,
            cores: if wall_seconds > 0.0 {
                cpu / wall_seconds
            } else {
                0.0
            },
            rss_bytes: self.rss_bytes,
        }
    }
}

/// utime + stime from a `/proc/<pid>/stat` line, in seconds (USER_HZ is 100 on Linux).
fn cpu_seconds(stat: &str) -> f64 {
    // The command name (field 2) may contain spaces; fields are counted after its ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// The 1-, 5- and 15-minute load averages, to note how busy the shared machine was.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// CPUs of the machine (not of this pinned process): the `processor` lines of /proc/cpuinfo.
pub fn cpus_online() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_parses_names_with_spaces() {
        let s = Sample::of(None);
        assert!(s.rss_bytes > 0 && s.threads >= 1);
        let stat = "42 (a b) S 1 1 1 0 -1 0 0 0 0 0 250 50 0 0 20 0 1 0";
        assert!((cpu_seconds(stat) - 3.0).abs() < 1e-9);
        assert_eq!(cpu_seconds("garbage"), 0.0);
        assert_eq!(Sample::of(Some(u32::MAX)).rss_bytes, 0);
    }
}
