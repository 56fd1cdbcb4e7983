//! blockcop's costs, measured in one run on the same workloads:
//!
//! 1. per poll: `yield_now` polls of one task, plain / `instrument` with blockcop disabled / enabled /
//!    tokio-metrics' `TaskMonitor::instrument`, on current_thread and multi_thread (1 and 2 workers) runtimes;
//! 2. per intercepted libc call outside a scope: a 1-byte `read` of /dev/zero through the hook against libc's
//!    own `read` (found with `dlsym(RTLD_NEXT)`);
//! 3. per recorded violation before symbolization: the same `read` inside a scope, called directly and from 100
//!    frames deeper (the depth of a read inside a bundled SQLite under an axum handler).
//!
//! Variants run interleaved, many short rounds; each figure is the median of the rounds, and each added cost the
//! median of the per-round differences with their quartiles (so a round disturbed by the machine moves one sample,
//! not the result).
//! Run with `cargo bench --bench overhead` or `cargo xtask bench`.

use std::ffi::{c_int, c_void};
use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant};

use blockcop::{Config, Scope};

#[path = "support/mod.rs"]
mod support;

use support::{Added, median};

const POLLS: u64 = 250_000;
const CALLS: u64 = 1_000_000;
const RECORDED_CALLS: u64 = 100_000;
const ROUNDS: usize = 31;

async fn yields(n: u64) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

#[derive(Clone, Copy, Debug)]
enum Wrap {
    Plain,
    Disabled,
    Enabled,
    TaskMonitor,
}

fn ns_per_poll(rt: &tokio::runtime::Runtime, wrap: Wrap, enabled: &Config) -> f64 {
    fn spawn_timed<F: Future + Send + 'static>(rt: &tokio::runtime::Runtime, f: F) -> Duration
    where
        F::Output: Send,
    {
        rt.block_on(async move {
            let start = Instant::now();
            tokio::spawn(f).await.expect("bench task");
            start.elapsed()
        })
    }
    let work = yields(POLLS);
    let elapsed = match wrap {
        Wrap::Plain => spawn_timed(rt, work),
        Wrap::Disabled => spawn_timed(rt, blockcop::instrument(work)),
        Wrap::Enabled => spawn_timed(rt, Scope::new(enabled).instrument(work)),
        Wrap::TaskMonitor => spawn_timed(rt, tokio_metrics::TaskMonitor::new().instrument(work)),
    };
    elapsed.as_nanos() as f64 / POLLS as f64
}

type ReadFn = unsafe extern "C" fn(c_int, *mut c_void, usize) -> isize;

fn real_read() -> ReadFn {
    // SAFETY: RTLD_NEXT from the bench binary finds libc's `read`, whose signature this is.
    unsafe {
        let p = libc::dlsym(libc::RTLD_NEXT, c"read".as_ptr());
        assert!(!p.is_null(), "dlsym(read)");
        std::mem::transmute::<*mut c_void, ReadFn>(p)
    }
}

fn ns_per_read(read: ReadFn, fd: c_int, calls: u64) -> f64 {
    let mut byte = 0u8;
    let start = Instant::now();
    for _ in 0..calls {
        // SAFETY: a 1-byte read into a live byte.
        let n = unsafe { read(black_box(fd), (&raw mut byte).cast(), 1) };
        black_box(n);
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn hooked_read(fd: c_int, buf: *mut c_void, n: usize) -> isize {
    // SAFETY: forwarded as given; this call goes through blockcop's `read` hook.
    unsafe { libc::read(fd, buf, n) }
}

/// Runs `f` `depth` frames below the caller.
#[inline(never)]
fn at_depth<T>(depth: usize, f: &mut dyn FnMut() -> T) -> T {
    if depth == 0 { f() } else { black_box(at_depth(black_box(depth - 1), f)) }
}

unsafe extern "C" fn hooked_read_c(fd: c_int, buf: *mut c_void, n: usize) -> isize {
    hooked_read(fd, buf, n)
}

fn main() {
    let enabled = Config::builder().enabled(true).max_violations_per_scope(1_000_000).build();
    Config::builder().enabled(false).build().set_global().expect("first global config");
    println!("blockcop overhead benchmark: {POLLS} polls per run, {ROUNDS} interleaved rounds, medians");
    println!("interposing libc: {}", blockcop::is_interposing());
    println!();

    let mut summary = Vec::new();
    let build = |workers: usize| {
        if workers == 0 {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
        } else {
            tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().expect("runtime")
        }
    };
    for (flavor, workers) in [("current_thread", 0), ("multi_thread, 1 worker", 1), ("multi_thread, 2 workers", 2)] {
        let wraps = [Wrap::Plain, Wrap::Disabled, Wrap::Enabled, Wrap::TaskMonitor];
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); wraps.len()];
        // One warm-up round, not counted.
        let rt = build(workers);
        for w in wraps {
            ns_per_poll(&rt, w, &enabled);
        }
        // A fresh runtime each round, shared by the round's variants: a runtime instance whose allocations land
        // badly slows every variant of its round alike, and the per-round differences cancel it.
        for _ in 0..ROUNDS {
            let rt = build(workers);
            // Its workers started and warm before the first variant is timed.
            ns_per_poll(&rt, Wrap::Plain, &enabled);
            for (i, w) in wraps.iter().enumerate() {
                samples[i].push(ns_per_poll(&rt, *w, &enabled));
            }
        }
        let d: Vec<Added> = samples.iter().map(|s| Added::of(s, &samples[0])).collect();
        let m: Vec<f64> = samples.into_iter().map(median).collect();
        println!("per poll, {flavor} (ns/poll)");
        println!("  plain future                       {:>8.1}", m[0]);
        println!("  blockcop::instrument, disabled     {:>8.1}   {}", m[1], d[1]);
        println!("  blockcop::instrument, enabled      {:>8.1}   {}", m[2], d[2]);
        println!("  tokio-metrics TaskMonitor          {:>8.1}   {}", m[3], d[3]);
        println!();
        summary.push(format!(
            "{flavor:<24} enabled {}, disabled {:+.1}, TaskMonitor {:+.1} ns/poll",
            d[2], d[1].median, d[3].median
        ));
    }

    let zero = std::fs::File::open("/dev/zero").expect("open /dev/zero");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&zero);
    let real = real_read();
    let hooked: ReadFn = hooked_read_c;
    ns_per_read(real, fd, CALLS / 10);
    ns_per_read(hooked, fd, CALLS / 10);
    let (mut direct, mut through_hook) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        direct.push(ns_per_read(real, fd, CALLS));
        through_hook.push(ns_per_read(hooked, fd, CALLS));
    }
    let deltas: Vec<f64> = through_hook.iter().zip(&direct).map(|(h, d)| h - d).collect();
    let (d, h, added) = (median(direct), median(through_hook), median(deltas));
    println!("per libc call outside a scope: 1-byte read of /dev/zero (ns/call)");
    println!("  libc read (dlsym RTLD_NEXT)        {d:>8.1}");
    println!("  read through blockcop's hook       {h:>8.1}   (+{added:.1})");
    // Stable tokio's runtime hooks keep a worker thread in its scope from unpark to park, also between tasks: a
    // call there takes the recording path as far as `tokio::task::try_id`. Measured in a `block_on` body (not a
    // task) on a current_thread runtime with the hooks, after it parked once.
    #[cfg(not(tokio_unstable))]
    {
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.enable_all();
        blockcop::runtime::Hooks::new(&enabled).install(&mut b).expect("stable hooks");
        let rt = b.build().expect("runtime");
        let (mut direct, mut worker) = (Vec::new(), Vec::new());
        rt.block_on(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            for _ in 0..ROUNDS {
                direct.push(ns_per_read(real, fd, CALLS));
                worker.push(ns_per_read(hooked, fd, CALLS));
            }
        });
        let deltas: Vec<f64> = worker.iter().zip(&direct).map(|(w, d)| w - d).collect();
        let (w, added) = (median(worker), median(deltas));
        println!("  the same on a worker thread of runtime::install (stable tokio), outside any task");
        println!("                                     {w:>8.1}   (+{added:.1})");
        summary.push(format!("worker thread, stable runtime::install, outside a task +{added:.1} ns/call"));
    }
    println!();

    let scope = Scope::new(&enabled);
    let mut recorded = Vec::new();
    for _ in 0..ROUNDS {
        recorded.push(scope.in_scope(|| ns_per_read(hooked, fd, RECORDED_CALLS)));
    }
    let r = median(recorded);
    let taken = scope.take_violations();
    let deep_scope = Scope::new(&enabled);
    let mut deep = Vec::new();
    for _ in 0..ROUNDS {
        deep.push(deep_scope.in_scope(|| at_depth(100, &mut || ns_per_read(hooked, fd, RECORDED_CALLS / 10))));
    }
    let deep = median(deep);
    let deep_taken = deep_scope.take_violations();
    println!("per recorded violation, before symbolization (ns/call)");
    println!("  read inside a scope                {r:>8.1}   (+{:.1} over libc)", r - d);
    println!("  the same, 100 frames deeper        {deep:>8.1}   (+{:.1} over libc)", deep - d);
    for taken in [&taken, &deep_taken] {
        println!(
            "  ({} records, {} calls merged into them, {} dropped)",
            taken.list.len(),
            taken.iter().map(|v| u64::from(v.count)).sum::<u64>(),
            taken.dropped
        );
    }
    println!();
    println!("summary");
    for s in summary {
        println!("  {s}");
    }
    println!(
        "  hook outside a scope +{added:.1} ns/call; recorded violation +{:.2} µs, 100 frames deeper +{:.2} µs",
        (r - d) / 1000.0,
        (deep - d) / 1000.0
    );
}
