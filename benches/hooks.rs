//! The runtime hooks' cost per poll and the watchdog's idle CPU, in one run:
//!
//! 1. per poll (needs `--cfg tokio_unstable`; `cargo xtask bench` sets it): `yield_now` polls on runtimes without
//!    hooks, with four empty hooks (tokio's own cost of calling them), with blockcop's hooks (enabled), and with a
//!    reference pair of hooks that only reads the TSC when a poll begins and keeps it in a thread local (the floor
//!    of any precise poll timing). Four workloads:
//!    - multi_thread, 1 worker, 1 task: wall time per poll, the multi_thread scheduler without a second worker to
//!      steal the task;
//!    - multi_thread, 2 workers, 64 tasks: process CPU time per poll, both workers busy (on a 2-core VM every
//!      instruction then costs more: the one-TSC reference doubles);
//!    - multi_thread, 2 workers, 1 task: wall time per poll while the idle worker wakes to steal the task; on a
//!      2-core VM its rounds spread wider than the budget, so it is shown, not judged;
//!    - current_thread, 64 tasks: wall time per poll, the hooks' direct cost.
//! 2. the watchdog thread's CPU time over 5 s with nothing to watch, as a share of one core.
//!
//! Rounds are short and interleaved, each on freshly built runtimes; figures are medians, added costs medians of
//! per-round differences with their quartiles (on a 2-core VM a multi_thread round moves by tens of ns).

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use blockcop::{Config, Scope};

#[cfg(tokio_unstable)]
const POLLS: u64 = 250_000;
#[cfg(tokio_unstable)]
const ROUNDS: usize = 41;

#[cfg(tokio_unstable)]
mod per_poll {
    use std::cell::Cell;

    use super::support::{self, Added, PerPoll};
    use super::{Config, POLLS, ROUNDS};

    const VARIANTS: [&str; 4] =
        ["no hooks", "four empty hooks", "blockcop's hooks, enabled", "reference: one TSC read per poll"];

    thread_local! {
        static START: Cell<u64> = const { Cell::new(0) };
    }

    fn tsc() -> u64 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `rdtsc` has no preconditions on x86_64.
        return unsafe { core::arch::x86_64::_rdtsc() };
        #[cfg(not(target_arch = "x86_64"))]
        return std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos() as u64);
    }

    /// A runtime for `variant`: multi_thread with `workers` worker threads, or current_thread when `workers` is 0.
    fn runtime(workers: usize, variant: usize, enabled: &Config) -> tokio::runtime::Runtime {
        let mut b = if workers > 0 {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(workers);
            b
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        b.enable_all();
        match variant {
            1 => {
                b.on_task_spawn(|_| {})
                    .on_before_task_poll(|_| {})
                    .on_after_task_poll(|_| {})
                    .on_task_terminate(|_| {});
            }
            2 => blockcop::runtime::Hooks::new(enabled).install(&mut b).expect("hooks"),
            3 => {
                b.on_task_spawn(|_| {})
                    .on_before_task_poll(|_| START.with(|s| s.set(tsc())))
                    .on_after_task_poll(|_| {
                        START.with(|s| std::hint::black_box(s.get()));
                    })
                    .on_task_terminate(|_| {});
            }
            _ => {}
        }
        b.build().expect("runtime")
    }

    fn workload(title: &str, workers: usize, tasks: u64, cpu: bool, enabled: &Config) -> Added {
        // A fresh runtime for each variant in each round (built outside the measured part): a runtime whose
        // allocations happen to land badly (seen here: every poll 100-190 ns slower, for any variant, hooks or not)
        // then spoils one round, not a whole variant.
        let measure = |variant: usize| {
            let rt = runtime(workers, variant, enabled);
            // Its workers started and warm before the timed run.
            support::yield_polls(&rt, tasks, POLLS / 10);
            let PerPoll { wall, cpu: c } = support::yield_polls(&rt, tasks, POLLS);
            if cpu { c } else { wall }
        };
        let mut samples = vec![Vec::new(); VARIANTS.len()];
        for variant in 0..VARIANTS.len() {
            measure(variant);
        }
        for _ in 0..ROUNDS {
            for (variant, samples) in samples.iter_mut().enumerate() {
                samples.push(measure(variant));
            }
        }
        println!("{title} ({} ns/poll)", if cpu { "CPU" } else { "wall" });
        println!("  {:<36} {:>8.1}", VARIANTS[0], support::median(samples[0].clone()));
        for (i, name) in VARIANTS.iter().enumerate().skip(1) {
            println!(
                "  {name:<36} {:>8.1}   {} over no hooks",
                support::median(samples[i].clone()),
                Added::of(&samples[i], &samples[0])
            );
        }
        let over_empty = Added::of(&samples[2], &samples[1]);
        println!("  blockcop's hooks over empty hooks    {over_empty}");
        println!();
        over_empty
    }

    pub fn run(enabled: &Config) -> Vec<(String, Added)> {
        [
            ("multi_thread, 1 worker, 1 task", 1, 1, false),
            ("multi_thread, 2 workers, 64 tasks", 2, 64, true),
            ("multi_thread, 2 workers, 1 task", 2, 1, false),
            ("current_thread, 64 tasks", 0, 64, false),
        ]
        .into_iter()
        .map(|(name, workers, tasks, cpu)| {
            let added = workload(&format!("per poll, {name}"), workers, tasks, cpu, enabled);
            (format!("{name} ({})", if cpu { "CPU" } else { "wall" }), added)
        })
        .collect()
    }
}

fn main() {
    let enabled = Config::builder().enabled(true).build();
    #[cfg(tokio_unstable)]
    let summary = {
        println!("runtime hooks benchmark: {POLLS} polls per run, {ROUNDS} interleaved rounds");
        println!();
        per_poll::run(&enabled)
    };
    #[cfg(not(tokio_unstable))]
    println!("per poll: skipped, this build has no tokio task hooks (RUSTFLAGS=\"--cfg tokio_unstable\")");
    // Starts the watchdog; then nothing polls.
    drop(Scope::new(&enabled));
    std::thread::sleep(Duration::from_millis(200));
    let window = Duration::from_secs(5);
    let before = support::thread_cpu_ns("blockcop-watch");
    std::thread::sleep(window);
    let after = support::thread_cpu_ns("blockcop-watch");
    let idle = match (before, after) {
        (Some(b), Some(a)) => {
            let share = (a - b) as f64 / window.as_nanos() as f64 * 100.0;
            format!("{:.3} ms of CPU in {window:?} = {share:.4} % of one core   budget < 0.1 %", (a - b) as f64 / 1e6)
        }
        _ => "no watchdog thread found".to_owned(),
    };
    println!("watchdog, idle: {idle}");
    #[cfg(tokio_unstable)]
    {
        println!();
        println!(
            "summary: blockcop's runtime hooks, added per poll over four empty hooks (budget <= 25 ns on multi_thread)"
        );
        for (name, added) in summary {
            println!("  {name:<40} {added}");
        }
    }
}
