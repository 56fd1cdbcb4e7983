//! What the benchmarks share: per-poll workloads, CPU clocks and the statistics of interleaved rounds.

#![allow(dead_code)] // each benchmark uses part of it

use std::time::Instant;

/// The median of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// An added cost: the median of per-round differences, with their first and third quartiles.
#[derive(Debug, Clone, Copy)]
pub struct Added {
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
}

impl Added {
    /// Per-round differences `x - base`.
    pub fn of(x: &[f64], base: &[f64]) -> Added {
        let mut d: Vec<f64> = x.iter().zip(base).map(|(x, b)| x - b).collect();
        d.sort_by(f64::total_cmp);
        Added { median: d[d.len() / 2], q1: d[d.len() / 4], q3: d[d.len() * 3 / 4] }
    }
}

impl std::fmt::Display for Added {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:+6.1}  (quartiles {:+.1} .. {:+.1})", self.median, self.q1, self.q3)
    }
}

/// CPU time of the whole process, in ns.
pub fn process_cpu_ns() -> u64 {
    cpu_clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID).expect("process CPU clock")
}

/// CPU time of the thread whose name starts with `prefix` (Linux), in ns.
pub fn thread_cpu_ns(prefix: &str) -> Option<u64> {
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = entry.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let tid: i32 = dir.file_name()?.to_str()?.parse().ok()?;
        // The kernel's per-thread CPU clock id for a tid (what glibc's pthread_getcpuclockid computes).
        return cpu_clock_ns((!tid << 3) | 6);
    }
    None
}

fn cpu_clock_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Wall and CPU nanoseconds per poll.
#[derive(Debug, Clone, Copy)]
pub struct PerPoll {
    pub wall: f64,
    pub cpu: f64,
}

/// `polls` polls in all of `tasks` spawned tasks that each `yield_now` in a loop, on `rt`.
pub fn yield_polls(rt: &tokio::runtime::Runtime, tasks: u64, polls: u64) -> PerPoll {
    let cpu = process_cpu_ns();
    let wall = rt.block_on(async {
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..polls / tasks {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("bench task");
        }
        start.elapsed()
    });
    let n = (polls / tasks * tasks) as f64;
    PerPoll { wall: wall.as_nanos() as f64 / n, cpu: (process_cpu_ns() - cpu) as f64 / n }
}
