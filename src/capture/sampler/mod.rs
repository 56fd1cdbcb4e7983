//! The watchdog and the stack sampler.
//!
//! Every thread that polls inside a scope publishes its outermost poll in a [`Slot`]: the start tick and a
//! generation number (two relaxed stores per poll). A watchdog thread, started on first use when blockcop is
//! enabled, looks at the slots every 10 ms:
//!
//! - a poll running past the slow-poll threshold has its stack sampled: the watchdog sends the thread `SIGURG`, and
//!   the handler copies the instruction pointers into the slot's buffer, allocated up front (no allocation, no
//!   lock, `errno` preserved). The samples go to the `slow_poll` violation recorded when the poll ends, whose call
//!   site becomes the hottest user frame;
//! - a poll still running after the stuck threshold (`BLOCKCOP_STUCK_MS`, by default 1000 ms) is reported at once
//!   as a `stuck_poll` (a `tracing` error and a run-file record) with its stack and what the thread is doing
//!   (`running`, or blocked in a syscall, read from `/proc/self/task/<tid>/syscall`), while it is still stuck.
//!   When the poll returns, one record completes the report (same [`Stuck::id`], the final duration): the
//!   blocking call it was stuck in, else its slow poll, else a `stuck_poll` with the poll's wall time;
//! - a thread inside a blocking call the interposer records is never signalled: the hook published the call's
//!   stack and context before making it, and a stuck report takes them from there, so no signal splits the call;
//! - every 100 ms it runs the registered drains (the runtime hooks' per-thread scopes, [`crate::runtime::drain`]);
//! - it ticks every 10 ms while a poll is in progress, and looks again sooner when a poll in progress will reach the
//!   slow-poll threshold before the next tick, so that a slow poll is sampled from its threshold on. While polls
//!   happen but none was in progress at its last look, it ticks every 25 ms or every slow-poll threshold, whichever
//!   is shorter (but not under 10 ms); after 500 ms without any poll it sleeps until the next poll wakes it (or 1 s
//!   passes);
//! - a sample the handler took is moved to the poll's list at the watchdog's next look, or by the polling thread
//!   itself when the poll ends first.
//!
//! Signals must not disturb the program: the handler is installed with `SA_RESTART`, so most interrupted calls
//! restart (std's `sleep`, `read`, futex waits carry on). Calls that never restart on Linux may return `EINTR` to
//! code that checks for it: `poll`, `select`, `epoll_wait`, `nanosleep`/`usleep` called directly through libc, and
//! calls with timeouts on sockets. If the program already has a `SIGURG` handler, blockcop leaves it alone and does
//! not sample. On platforms other than Linux the watchdog still drains and reports stuck polls, without stacks.
//!
//! Together with the interposer and the platform primitives ([`crate::sys`]), this is where blockcop's `unsafe` code
//! is.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crate::capture::intercept::thread::TaskTag;
use crate::capture::intercept::{MAX_FRAMES, RawStack};
use crate::capture::run_file;
use crate::capture::scope::{Scope, ScopeShared};
use crate::catalogue;
use crate::clock;
use crate::config::Config;
use crate::record::{self, Attribution};
use crate::sys;
use crate::violation::Stuck;

mod signal;
mod slot;
mod stuck;
mod watchdog;

// The parts share one protocol; each sees the others' items through `super::*`.
use signal::*;
use slot::*;
use stuck::*;
use watchdog::*;

pub use signal::stress_sample;
pub(crate) use slot::{Slot, register_thread};
pub use stuck::stuck_polls;

/// How often the watchdog looks at the slots (and resamples a slow poll) while polls are in progress. 10 ms.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// How often the watchdog looks while polls happen but none was in progress at its last look: 25 ms, or the
/// slow-poll threshold when that is shorter (not under [`TICK`]).
const CALM_TICK: Duration = Duration::from_millis(25);

/// How long without any poll before the watchdog stops ticking and waits to be woken by the next one. 500 ms.
const QUIET_BEFORE_IDLE: Duration = Duration::from_millis(500);

/// How long the idle watchdog sleeps when no poll wakes it (to drain what the last polls left). 1 s.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// How often the runtime hooks' per-thread scopes are drained. 100 ms.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// What the watchdog judges by: the smallest thresholds of the enabled configurations seen.
struct Settings {
    slow_ns: AtomicU64,
    stuck_ns: AtomicU64,
}

/// A value alone in its 128-byte line pair (the pair an x86_64 CPU's adjacent-line prefetcher fetches together), as
/// [`Slot`]'s own fields are: for what every poll reads while other threads write nearby.
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

static SETTINGS: Settings = Settings { slow_ns: AtomicU64::new(u64::MAX), stuck_ns: AtomicU64::new(u64::MAX) };

static WATCHDOG: OnceLock<()> = OnceLock::new();

/// Starts the watchdog (once per process) and lowers its thresholds to `config`'s. Does nothing when `config` is
/// disabled.
pub(crate) fn ensure_watchdog(config: &Config) {
    if !config.is_enabled() {
        return;
    }
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    SETTINGS.slow_ns.fetch_min(ns(config.slow_poll_threshold()), Ordering::Relaxed);
    SETTINGS.stuck_ns.fetch_min(ns(config.stuck_poll_threshold()), Ordering::Relaxed);
    if config.run_files() {
        // The run file exists from start-up: a clean run leaves one too, and an unusable directory is said now.
        crate::capture::run_file::start();
    }
    WATCHDOG.get_or_init(|| {
        crate::capture::symbolize::warm_up();
        crate::capture::scope::allow_blocking(|| {
            let sampling = install_handler();
            let spawned = std::thread::Builder::new()
                .name("blockcop-watchdog".into())
                .spawn(move || crate::capture::scope::allow_blocking(|| watchdog(sampling)));
            if let Ok(handle) = &spawned {
                let _ = WATCHDOG_THREAD.set(handle.thread().clone());
            }
            if let Err(e) = spawned {
                eprintln!("blockcop: cannot start the watchdog thread: {e}; no stuck-poll reports or stack samples");
            }
        });
    });
}

/// Whether the sampling signal handler is installed (the watchdog samples stacks).
pub fn sampling_active() -> bool {
    HANDLER_INSTALLED.load(Ordering::Relaxed)
}
