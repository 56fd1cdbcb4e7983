//! Scopes: "this thread is now polling async task code, and violations go to scope S".
//!
//! A [`Scope`] collects the violations recorded while any thread polls code inside it: the interposer's blocking
//! calls and the poll timer's slow polls. Its owner takes them with [`Scope::take_violations`], which symbolizes
//! the raw stacks (off the hot path) and chooses each call site.

use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::capture::intercept::{Detail, RawStack, thread};
use crate::capture::run_file;
use crate::capture::symbolize;
use crate::catalogue::Weight;
use crate::catalogue::{self, Event};
use crate::clock;
use crate::config::Config;
use crate::record::{self, Attribution};
use crate::violation::RequestContext;
use crate::violation::{Stuck, Violations};

static NEXT_SCOPE_ID: AtomicU64 = AtomicU64::new(1);

/// A place violations go: one request, one task, one test body.
///
/// Cloning gives another handle to the same scope. Scope ids are unique within the process.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let config = blockcop::Config::builder().enabled(true).build();
/// let scope = blockcop::Scope::new(&config);
/// scope.instrument(async { std::thread::sleep(std::time::Duration::from_millis(20)) }).await;
/// let violations = scope.take_violations();
/// # if blockcop::is_interposing() {
/// assert_eq!(violations.first().unwrap().event, "clock_nanosleep");
/// assert_eq!(violations.level(), blockcop::Level::High);
/// # }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Scope {
    pub(crate) shared: Arc<ScopeShared>,
}

impl Scope {
    /// A new, empty scope judged by `config` (its slow-poll threshold, cap and allowlist). The scope records
    /// whether or not `config` is enabled: enabling decides whether [`instrument`](crate::instrument) makes one.
    pub fn new(config: &Config) -> Scope {
        Scope::with_attribution(config, Attribution { test: test_name(), ..Attribution::default() })
    }

    /// A scope for one request (the layer's).
    pub(crate) fn for_request(config: &Config, method: &str, path: &str) -> Scope {
        let request = Some(RequestContext { method: method.to_owned(), path: path.to_owned() });
        Scope::with_attribution(config, Attribution { request, test: test_name(), ..Attribution::default() })
    }

    /// A worker thread's scope for the runtime hooks: never inherited by spawned tasks, with room for the
    /// violations of many polls between drains.
    #[cfg_attr(not(tokio_unstable), allow(dead_code))]
    pub(crate) fn for_runtime(config: &Config) -> Scope {
        let scope = Scope::with_attribution(config, Attribution::default());
        let mut shared = Arc::into_inner(scope.shared).expect("a new scope has one handle");
        shared.inheritable = false;
        shared.cap = shared.cap.max(RUNTIME_SCOPE_CAP);
        Scope { shared: Arc::new(shared) }
    }

    /// A worker thread's scope for stable tokio's thread hooks ([`crate::runtime`] without `tokio_unstable`): as
    /// [`for_runtime`](Self::for_runtime), and it records only blocking calls made inside a tokio task (the
    /// thread is current in it from unpark to park, also while the scheduler runs between tasks).
    #[cfg_attr(tokio_unstable, allow(dead_code))]
    pub(crate) fn for_worker_threads(config: &Config) -> Scope {
        let scope = Scope::for_runtime(config);
        let mut shared = Arc::into_inner(scope.shared).expect("a new scope has one handle");
        shared.tasks_only = true;
        Scope { shared: Arc::new(shared) }
    }

    fn with_attribution(config: &Config, attribution: Attribution) -> Scope {
        crate::capture::sampler::ensure_watchdog(config);
        let threshold_ns = u64::try_from(config.slow_poll_threshold().as_nanos()).unwrap_or(u64::MAX);
        Scope {
            shared: Arc::new(ScopeShared {
                id: NEXT_SCOPE_ID.fetch_add(1, Ordering::Relaxed),
                threshold: config.slow_poll_threshold(),
                threshold_ns,
                threshold_ticks: clock::ns_to_ticks(threshold_ns),
                coarse_slack_ns: clock::coarse_slack_ns(threshold_ns),
                cpu_reference_ticks: clock::ns_to_ticks(
                    u64::try_from(thread::CPU_REFERENCE_EVERY.as_nanos()).unwrap_or(u64::MAX),
                ),
                ticks: clock::Ticks::get(),
                cap: config.max_violations_per_scope(),
                config: config.clone(),
                records: Mutex::new(Records::default()),
                attribution,
                inheritable: true,
                tasks_only: false,
            }),
        }
    }

    /// The scope's id, unique within the process.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The configuration the scope judges by.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Runs `f` inside this scope as if it were one poll: blocking calls are recorded and its duration is checked
    /// against the slow-poll threshold (a slow one is a `slow_poll` with the caller as its call site).
    #[track_caller]
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        self.shared.poll(Some(Location::caller()), f)
    }

    /// Takes the violations recorded so far (and the count of those the cap dropped), leaving the scope empty.
    ///
    /// Symbolizes the raw stacks: the first time in a process this loads debug info (tens of ms); later, about
    /// 15 µs per new stack. Detection is suspended meanwhile, and the time is left out of any slow-poll check.
    /// Violations whose stack passes through an allowlisted function are left out here.
    ///
    /// With [`Config::run_files`] on, the violations are also appended to this process's run file.
    pub fn take_violations(&self) -> Violations {
        self.shared.take()
    }

    /// How many violations are waiting to be taken, before the allowlist is applied.
    pub fn pending(&self) -> usize {
        self.shared.lock().list.len()
    }
}

#[derive(Default)]
struct Records {
    list: Vec<RawViolation>,
    dropped: u64,
    /// The latest call was dropped, so the last record is no longer the previous call.
    last_dropped: bool,
}

/// A violation as recorded on the hot path: raw stack, not yet symbolized.
#[derive(Debug)]
pub(crate) struct RawViolation {
    pub(crate) event: Event,
    pub(crate) weight: Weight,
    pub(crate) duration: Duration,
    pub(crate) count: u32,
    pub(crate) detail: Detail,
    pub(crate) stack: RawStack,
    /// For slow polls: where the future was instrumented (or the task spawned).
    pub(crate) site: Option<&'static Location<'static>>,
    /// For slow polls: the watchdog's stack samples of the poll.
    pub(crate) samples: Vec<RawStack>,
    pub(crate) thread_id: u64,
    pub(crate) thread_name: Option<String>,
    pub(crate) timestamp: SystemTime,
    /// The task being polled, when a runtime hook began the poll.
    pub(crate) task: Option<thread::TaskTag>,
    /// The stuck report this record completes.
    pub(crate) stuck: Option<Stuck>,
}

/// The name of the calling thread when it is a test's (see [`is_test_thread_name`]).
fn test_name() -> Option<String> {
    std::thread::current().name().filter(|n| is_test_thread_name(n)).map(str::to_owned)
}

/// Whether a thread's name is a test's. libtest names each test's thread after the test's path
/// (`module::test_name`); a runtime's threads are not tests: `main`, tokio's workers and blocking threads
/// (`tokio-runtime-worker`, `tokio-rt-worker` from tokio 1.50) and blockcop's own, nor is any name that is not a
/// Rust path (`api-worker`).
pub(crate) fn is_test_thread_name(name: &str) -> bool {
    let runtime_thread = name == "main" || name.starts_with("tokio-") || name.starts_with("blockcop-");
    let identifier = |segment: &str| {
        segment.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && segment.chars().all(|c| c.is_alphanumeric() || c == '_')
    };
    !runtime_thread && name.split("::").all(identifier)
}

impl RawViolation {
    /// One call (or poll) seen now on the calling thread, in the task it is polling if any; no stack yet.
    fn on_this_thread(event: Event, weight: Weight, duration: Duration, detail: Detail) -> RawViolation {
        RawViolation {
            event,
            weight,
            duration,
            count: 1,
            detail,
            stack: RawStack::EMPTY,
            site: None,
            samples: Vec::new(),
            thread_id: crate::sys::thread::thread_id(),
            thread_name: std::thread::current().name().map(str::to_owned),
            timestamp: SystemTime::now(),
            task: thread::current_task(),
            stuck: None,
        }
    }
}

/// The state a scope shares between its handles and the threads polling inside it. Each poll reads it; it is
/// aligned to (so fills whole) 128-byte line pairs, so that no heap neighbour another thread writes shares them.
#[repr(align(128))]
pub(crate) struct ScopeShared {
    id: u64,
    attribution: Attribution,
    /// Whether tasks spawned inside it inherit it (not the runtime hooks' per-thread scopes).
    inheritable: bool,
    /// Records only blocking calls made inside a tokio task (stable tokio's worker-thread scopes).
    tasks_only: bool,
    config: Config,
    threshold: Duration,
    threshold_ns: u64,
    /// The threshold in raw clock ticks, so the hot path never converts.
    threshold_ticks: u64,
    /// A poll whose coarse-clock difference is below this cannot be slow (see [`clock`]'s docs).
    coarse_slack_ns: u64,
    /// [`thread::CPU_REFERENCE_EVERY`] in raw ticks.
    cpu_reference_ticks: u64,
    ticks: clock::Ticks,
    cap: usize,
    records: Mutex<Records>,
}

impl std::fmt::Debug for ScopeShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Drop for ScopeShared {
    /// Violations nobody took still reach the run file: nothing recorded is lost.
    fn drop(&mut self) {
        let pending = self.lock();
        let left = !pending.list.is_empty() || pending.dropped > 0;
        drop(pending);
        if left && self.config.run_files() {
            let _ = self.take();
        }
    }
}

/// The cap of a runtime hooks' per-thread scope, drained every 100 ms. 4096.
#[cfg_attr(not(tokio_unstable), allow(dead_code))]
const RUNTIME_SCOPE_CAP: usize = 4096;

impl ScopeShared {
    /// The request, task and test the scope's records belong to.
    pub(crate) fn attribution(&self) -> &Attribution {
        &self.attribution
    }

    /// Whether tasks spawned inside this scope inherit it.
    pub(crate) fn inheritable(&self) -> bool {
        self.inheritable
    }

    /// Whether this scope records only blocking calls made inside a tokio task.
    #[inline]
    pub(crate) fn tasks_only(&self) -> bool {
        self.tasks_only
    }

    fn take(&self) -> Violations {
        let records = std::mem::take(&mut *self.lock());
        if records.list.is_empty() && records.dropped == 0 {
            return Violations::default();
        }
        allow_blocking(|| {
            let mut by_entries = Vec::new();
            let list = symbolize::resolve(records.list, &self.config, self.id, &mut by_entries);
            let violations = Violations { list, dropped: records.dropped };
            if self.config.run_files() {
                let mut out = record::records(&violations, &self.attribution, self.id);
                out.extend(record::allowed_records(
                    &by_entries,
                    self.config.allow_entries(),
                    &self.attribution,
                    self.id,
                ));
                run_file::append(out);
            }
            violations
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        // A panic while holding the lock leaves the list consistent (pushes are the only writes).
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` as one poll inside this scope, timing it.
    #[inline(always)]
    pub(crate) fn poll<R>(&self, site: Option<&'static Location<'static>>, f: impl FnOnce() -> R) -> R {
        let start = self.stamp();
        let _timer = PollTimer { entered: thread::enter(self, start.ticks), start, scope: self, site };
        f()
    }

    /// The start of a poll.
    #[inline(always)]
    pub(crate) fn stamp(&self) -> clock::Stamp {
        let ticks = self.ticks.now();
        clock::Stamp { ticks, coarse: thread::poll_begins(ticks, self.cpu_reference_ticks) }
    }

    /// Ends a poll that started at `start`: a slow one (not counting time already reported or allowed since
    /// `excluded_at_entry`) is recorded as a `slow_poll` with `site` as its call site. Reads the coarse clock, and
    /// the TSC only when the poll can have been slow.
    #[inline(always)]
    pub(crate) fn end_poll(
        &self,
        start: clock::Stamp,
        excluded_at_entry: u64,
        site: Option<&'static Location<'static>>,
    ) {
        let coarse = clock::coarse();
        thread::set_last_coarse(coarse);
        if coarse.wrapping_sub(start.coarse) < self.coarse_slack_ns {
            return;
        }
        let end = self.ticks.now();
        if end.wrapping_sub(start.ticks) >= self.threshold_ticks {
            self.slow_poll(start.ticks, end, excluded_at_entry, site);
        }
    }

    #[cold]
    #[inline(never)]
    fn slow_poll(&self, start: u64, end: u64, excluded_at_entry: u64, site: Option<&'static Location<'static>>) {
        let ns = self.ticks.delta_ns(start, end);
        // Time already reported as blocking calls (or allowed) is not reported again as a slow poll.
        let mut busy = ns.saturating_sub(thread::excluded_since(excluded_at_entry));
        // Time the OS kept the thread off the CPU (preempted on a loaded machine) is not the poll's doing.
        if busy >= self.threshold_ns
            && let Some(on_cpu) = thread::suspended(|_| on_cpu_at_least(start))
        {
            busy = busy.min(on_cpu);
        }
        // A poll the watchdog reported stuck is completed here unless the call it was stuck in completed it.
        let stuck =
            thread::suspended(|_| thread::current_slot().and_then(crate::capture::sampler::Slot::stuck_poll_returned));
        let slow = busy >= self.threshold_ns;
        if !slow && stuck.is_none() {
            return;
        }
        thread::suspended(|_| {
            let samples = thread::current_slot().map(crate::capture::sampler::Slot::take_samples).unwrap_or_default();
            if slow {
                self.record_slow_poll(Duration::from_nanos(busy), site, samples, stuck);
            } else if let Some(stuck) = stuck {
                self.record_stuck_poll(Duration::from_nanos(ns), site, samples, stuck);
            }
        });
        if slow {
            // The outer poll, if any, leaves out what this one reported.
            thread::exclude(busy);
        }
    }

    /// Records a blocking call; called by the interposer with detection suspended.
    ///
    /// `stuck` is set when the watchdog reported the poll stuck during this call: the record completes that report.
    pub(crate) fn record_call(
        &self,
        event: Event,
        detail: Detail,
        duration: Duration,
        stack: &RawStack,
        stuck: Option<Stuck>,
    ) {
        let base = detail.weight.unwrap_or_else(|| event.category.weight());
        let weight = Weight::for_call(base, event.category, duration, self.threshold);
        let mut records = self.lock();
        // A loop of identical calls (same event, same stack) is one record with a count.
        let last_dropped = records.last_dropped;
        if let Some(last) = records.list.last_mut()
            && !last_dropped
            && stuck.is_none()
            && last.stuck.is_none()
            && last.event == event
            && last.stack == *stack
        {
            last.count = last.count.saturating_add(1);
            last.duration += duration;
            last.weight = last.weight.max(weight);
            return;
        }
        self.push(
            &mut records,
            RawViolation { stack: *stack, stuck, ..RawViolation::on_this_thread(event, weight, duration, detail) },
        );
    }

    fn record_slow_poll(
        &self,
        busy: Duration,
        site: Option<&'static Location<'static>>,
        samples: Vec<RawStack>,
        stuck: Option<Stuck>,
    ) {
        let mut detail = Detail::new();
        let _ = std::fmt::Write::write_fmt(
            &mut detail,
            format_args!("poll ran {busy:.1?} without yielding (threshold {:?})", self.threshold),
        );
        let weight = Weight::for_duration(busy, self.threshold);
        let raw = RawViolation {
            site,
            samples,
            stuck,
            ..RawViolation::on_this_thread(catalogue::SLOW_POLL, weight, busy, detail)
        };
        let mut records = self.lock();
        self.push(&mut records, raw);
    }

    /// Completes the stuck report of a poll that returned after `duration` (wall time), when neither a blocking call
    /// nor its own CPU time (a slow poll) accounts for it: it waited in something blockcop does not record.
    fn record_stuck_poll(
        &self,
        duration: Duration,
        site: Option<&'static Location<'static>>,
        samples: Vec<RawStack>,
        stuck: Stuck,
    ) {
        let mut detail = Detail::new();
        let _ = std::fmt::Write::write_fmt(
            &mut detail,
            format_args!("poll returned after {duration:.1?}; when reported, the thread was {}", stuck.thread_state),
        );
        let raw = RawViolation {
            site,
            samples,
            stuck: Some(stuck),
            ..RawViolation::on_this_thread(catalogue::STUCK_POLL, Weight::Heavy, duration, detail)
        };
        let mut records = self.lock();
        self.push(&mut records, raw);
    }

    fn push(&self, records: &mut Records, raw: RawViolation) {
        records.last_dropped = records.list.len() >= self.cap;
        if records.last_dropped {
            records.dropped += 1;
        } else {
            records.list.push(raw);
        }
    }
}

/// At least how long the poll that began at raw tick `start` and is ending now kept its thread on a CPU, in ns;
/// `None` where there is no thread CPU clock.
///
/// The thread's CPU time now, less the most its CPU time can have been when the poll began: the thread's CPU-time
/// reference (read when this poll began, or when another began less than [`thread::CPU_REFERENCE_EVERY`] before)
/// plus the wall time from it to `start`, and at most what the watchdog read when it first saw the poll in
/// progress. So a poll preempted for 30 ms that ran for 20 µs counts about 20 µs, whether or not the watchdog saw
/// it, and a poll that computed for 30 ms counts at least 29 ms.
fn on_cpu_at_least(start: u64) -> Option<u64> {
    let now = crate::sys::clock::own_cpu_ns()?;
    let from_reference = thread::cpu_reference()
        .map(|(tick, cpu)| if tick <= start { cpu.saturating_add(clock::delta_ns(tick, start)) } else { cpu });
    let from_watchdog = thread::current_slot().and_then(|slot| slot.seen()).filter(|(tick, _)| *tick >= start);
    let cpu_at_start = match (from_reference, from_watchdog.map(|(_, cpu)| cpu)) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some(now.saturating_sub(cpu_at_start))
}

/// Times one poll; on drop (also while unwinding) checks it against the slow-poll threshold, then leaves the scope.
struct PollTimer<'a> {
    start: clock::Stamp,
    scope: &'a ScopeShared,
    site: Option<&'static Location<'static>>,
    entered: thread::Entered<'a>,
}

impl Drop for PollTimer<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.scope.end_poll(self.start, self.entered.excluded_at_entry(), self.site);
    }
}

/// Runs `f` with detection suspended on this thread, its time left out of the enclosing poll's slow-poll check
/// ([`crate::allow_blocking`]).
pub(crate) fn allow_blocking<R>(f: impl FnOnce() -> R) -> R {
    thread::suspended(|scope| {
        if scope.is_none() {
            return f();
        }
        struct Exclude(u64);
        impl Drop for Exclude {
            fn drop(&mut self) {
                thread::exclude(crate::clock::delta_ns(self.0, crate::clock::now()));
            }
        }
        let _exclude = Exclude(crate::clock::now());
        f()
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::Level;

    fn spin(d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn a_slow_poll_right_after_a_short_one_is_reported_and_short_ones_are_not() {
        let config = Config::builder().enabled(true).slow_poll_threshold(Duration::from_millis(20)).build();
        let scope = Scope::new(&config);
        // The short poll leaves this thread a fresh coarse-clock reading, which the next poll starts from.
        scope.in_scope(|| ());
        scope.in_scope(|| spin(Duration::from_millis(80)));
        scope.in_scope(|| ());
        let v = scope.take_violations();
        assert_eq!(v.list.len(), 1, "{v:?}");
        let slow = &v.list[0];
        assert_eq!(slow.event, "slow_poll");
        assert!(slow.duration >= Duration::from_millis(20), "{slow:?}");
        assert!(v.level() >= Level::Medium);
    }
}
