//! Percentiles of measured durations, and the machine a run was on.

use std::time::{Duration, Instant};

/// Sorted samples.
#[derive(Clone)]
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn new(mut v: Vec<Duration>) -> Self {
        v.sort_unstable();
        Self(v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p`-th percentile (0..=100), nearest rank.
    pub fn pct(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    pub fn median(&self) -> Duration {
        self.pct(50.0)
    }
}

/// Runs `f` `runs` times, or until `bound` has passed (once at least).
pub async fn repeat<F, Fut, T>(
    runs: usize,
    bound: Duration,
    mut f: F,
) -> anyhow::Result<(Samples, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let start = Instant::now();
    let mut lat = Vec::new();
    let mut last = None;
    while last.is_none() || (lat.len() < runs && start.elapsed() < bound) {
        let t = Instant::now();
        last = Some(f().await?);
        lat.push(t.elapsed());
    }
    Ok((Samples::new(lat), last.expect("one run at least")))
}

/// `12.3 µs`, `4.56 ms`, `1.23 s`.
pub fn fmt(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else {
        format!("{:.2} s", ns / 1_000_000_000.0)
    }
}

/// `nproc` and the CPU model, for the report's header.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    format!("{cpus} CPUs, {model}")
}

/// Bytes of the files under `dir`: apparent (their lengths) and
/// allocated (the blocks they take on disk).
pub fn disk_usage(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    let mut apparent = 0;
    let mut allocated = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                apparent += m.len();
                allocated += m.blocks() * 512;
            }
        }
    }
    (apparent, allocated)
}

/// Bytes this process has caused to be written to storage so far
/// (`write_bytes` of `/proc/self/io`: page-cache writes count when they
/// are dirtied, so a flush that follows adds nothing twice); zero where
/// the kernel does not say.
pub fn io_write_bytes() -> u64 {
    proc_write_bytes("self")
}

/// `write_bytes` of `/proc/{process}/io` (`self`, or a process id); zero
/// where the kernel does not say.
pub fn proc_write_bytes(process: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Resident set size of process `pid`, in bytes (`VmRSS`; zero where the
/// kernel does not say).
pub fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `12.3 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Resident set size of this process, in bytes (Linux).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// CPU time this process has used so far, user and system, all threads
/// (including finished ones), from `/proc/self/stat` (Linux; zero elsewhere).
pub fn cpu_times() -> (Duration, Duration) {
    // utime and stime are fields 14 and 15, in clock ticks (USER_HZ, 100 on
    // Linux). The command name (field 2) may hold spaces: split after it.
    let ticks = |s: &str| {
        s.parse::<u64>()
            .map_or(Duration::ZERO, |t| Duration::from_millis(t * 10))
    };
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some((ticks(fields.get(11)?), ticks(fields.get(12)?)))
        })
        .unwrap_or_default()
}
