//! The runtime hooks' cost and the watchdog's idle CPU, in one run:
//!
//! 1. per poll: 1M `yield_now` polls of one task on a multi_thread runtime without hooks, and with blockcop's
//!    hooks installed (enabled): needs `--cfg tokio_unstable` (`cargo xtask bench` sets it);
//! 2. the watchdog thread's CPU time over 5 s with nothing to watch, as a share of one core.
//!
//! Rounds are interleaved; figures are medians, added costs medians of per-round differences.

use std::time::Duration;

use blockcop::{Config, Scope};

const POLLS: u64 = 1_000_000;
const ROUNDS: usize = 11;

#[cfg(tokio_unstable)]
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(tokio_unstable)]
fn ns_per_poll(rt: &tokio::runtime::Runtime) -> f64 {
    rt.block_on(async {
        let start = std::time::Instant::now();
        tokio::spawn(async {
            for _ in 0..POLLS {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("bench task");
        start.elapsed().as_nanos() as f64 / POLLS as f64
    })
}

/// CPU time of the thread whose name starts with `prefix` (Linux), in ns.
fn thread_cpu_ns(prefix: &str) -> Option<u64> {
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = entry.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let tid: i32 = dir.file_name()?.to_str()?.parse().ok()?;
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // The kernel's per-thread CPU clock id for a tid (what glibc's pthread_getcpuclockid computes).
        let clock = (!tid << 3) | 6;
        // SAFETY: clock_gettime writes one timespec we own.
        if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
            return None;
        }
        return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
    }
    None
}

#[cfg(tokio_unstable)]
fn per_poll(enabled: &Config) {
    let plain = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    blockcop::runtime::Hooks::new(enabled).install(&mut b).expect("hooks");
    let hooked = b.build().expect("rt");
    // tokio's own cost of calling four hooks that do nothing, for reference.
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    b.on_task_spawn(|_| {}).on_before_task_poll(|_| {}).on_after_task_poll(|_| {}).on_task_terminate(|_| {});
    let empty = b.build().expect("rt");
    let runtimes = [&plain, &empty, &hooked];
    let mut samples: [Vec<f64>; 3] = Default::default();
    for rt in runtimes {
        ns_per_poll(rt);
    }
    for _ in 0..ROUNDS {
        for (i, rt) in runtimes.iter().enumerate() {
            samples[i].push(ns_per_poll(rt));
        }
    }
    let added = |i: usize| median(samples[i].iter().zip(&samples[0]).map(|(x, y)| x - y).collect());
    let (e, h) = (added(1), added(2));
    let m: Vec<f64> = samples.iter().cloned().map(median).collect();
    println!("per poll, multi_thread (ns/poll)");
    println!("  no hooks                           {:>8.1}", m[0]);
    println!("  four empty hooks (tokio's cost)    {:>8.1}   (+{e:.1})", m[1]);
    println!(
        "  blockcop's runtime hooks, enabled  {:>8.1}   (+{h:.1}; +{:.1} over empty hooks)   budget <= 25",
        m[2],
        h - e
    );
}

#[cfg(not(tokio_unstable))]
fn per_poll(_: &Config) {
    println!("per poll: skipped, this build has no tokio task hooks (RUSTFLAGS=\"--cfg tokio_unstable\")");
}

fn main() {
    let enabled = Config::builder().enabled(true).build();
    println!("runtime hooks and watchdog benchmark ({POLLS} polls per run, {ROUNDS} interleaved rounds)");
    per_poll(&enabled);
    // Starts the watchdog; then nothing polls.
    drop(Scope::new(&enabled));
    std::thread::sleep(Duration::from_millis(200));
    let window = Duration::from_secs(5);
    let before = thread_cpu_ns("blockcop-watch");
    std::thread::sleep(window);
    let after = thread_cpu_ns("blockcop-watch");
    match (before, after) {
        (Some(b), Some(a)) => {
            let share = (a - b) as f64 / window.as_nanos() as f64 * 100.0;
            println!(
                "watchdog, idle: {:.3} ms of CPU in {window:?} = {share:.4} % of one core   budget < 0.1 %",
                (a - b) as f64 / 1e6
            );
        }
        _ => println!("watchdog, idle: no watchdog thread found"),
    }
}
