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

/// One thread's published poll and its sampling handshake.
///
/// The fields the owning thread writes on every poll sit alone in the first cache lines, so that nothing the
/// watchdog or other threads write shares their line.
#[repr(C, align(128))]
pub(crate) struct Slot {
    /// Raw tick at which the outermost poll in progress began; 0 when the thread is not polling.
    poll_start: AtomicU64,
    generation: AtomicU64,
    _own_line: [u64; 14],
    tid: AtomicI32,
    name: Mutex<Option<String>>,
    /// The generation the watchdog asked a sample of (0: none asked).
    requested: AtomicU64,
    /// Where the sample buffer is in its handshake: [`EMPTY`], [`READY`] or [`TAKING`].
    sample_state: AtomicU8,
    sample_len: AtomicUsize,
    sample: UnsafeCell<[usize; MAX_FRAMES]>,
    /// What the sampled poll was polling, noted only for a stuck poll's report (`context_wanted`): its scope (one
    /// strong count, which `collect` hands to its caller) and task. Written and read under the same handshake as
    /// `sample`.
    sample_context: UnsafeCell<(*const ScopeShared, Option<TaskTag>)>,
    /// The generation whose stuck report wants the poll's context with its next sample (0: none).
    context_wanted: AtomicU64,
    /// Samples of the current generation, taken by the slow poll at its end.
    samples: Mutex<Samples>,
    stuck_reported: AtomicU64,
    free: AtomicBool,
    /// The thread is inside a blocking call the interposer is recording: it is never signalled (the record will
    /// have the call site, and a signal could interrupt the call and split it in two records).
    in_call: AtomicBool,
    /// The stack and context of the latest recorded blocking call, published before the call is made: a stuck
    /// poll's report inside a call takes them from here instead of from a signal.
    call: Mutex<InCall>,
    /// The stuck report of the current poll, until the poll's end (or the call it was stuck in) completes it.
    stuck: Mutex<Option<PendingStuck>>,
    /// When the watchdog first saw the current poll: its generation, the tick and the thread's CPU time then.
    seen_generation: AtomicU64,
    seen_tick: AtomicU64,
    seen_cpu_ns: AtomicU64,
}

// SAFETY: every field but `sample` and `sample_context` is a thread-safe type. Those two are written only by the
// signal handler running on the slot's own thread, and only while `requested` names the current generation and
// `sample_state` is `EMPTY`. They are read only by `collect`, by whichever thread (the watchdog, or the slot's own
// thread as its poll ends) moves `sample_state` from `READY` to `TAKING` (one compare-exchange, so one reader; its
// Acquire pairs with the handler's Release store of `READY`); the handler does not write while the state is not
// `EMPTY`, and the reader sets `EMPTY` only after it has read them. So writes and reads never overlap. The scope
// pointer in `sample_context` carries a strong count, which `collect` takes over.
unsafe impl Sync for Slot {}

/// [`Slot::sample_state`]: no sample in the buffer; the handler may write one.
const EMPTY: u8 = 0;
/// [`Slot::sample_state`]: the handler wrote a sample; nobody is reading it yet.
const READY: u8 = 1;
/// [`Slot::sample_state`]: one thread is reading the sample out of the buffer.
const TAKING: u8 = 2;

/// The samples of one poll (one generation).
#[derive(Default)]
struct Samples {
    generation: u64,
    stacks: Vec<RawStack>,
}

/// What a stuck poll was polling: the scope (a handle, which keeps it alive: never kept past the report) and task.
type PollContext = (Option<Scope>, Option<TaskTag>);

/// A recorded blocking call in progress, as its thread published it.
struct InCall {
    stack: RawStack,
    context: PollContext,
}

/// A stuck poll's report, waiting for the poll to return.
struct PendingStuck {
    generation: u64,
    mark: Stuck,
    /// The thread was inside a recorded blocking call when reported: that call's record completes the report.
    in_call: bool,
    /// A call's record has completed it already.
    completed: bool,
}

/// Stuck reports made in this process: [`Stuck::id`]s count from 1.
static NEXT_STUCK_ID: AtomicU64 = AtomicU64::new(1);

impl Slot {
    fn new() -> Slot {
        Slot {
            poll_start: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            _own_line: [0; 14],
            tid: AtomicI32::new(0),
            name: Mutex::new(None),
            requested: AtomicU64::new(0),
            sample_state: AtomicU8::new(EMPTY),
            sample_len: AtomicUsize::new(0),
            sample: UnsafeCell::new([0; MAX_FRAMES]),
            sample_context: UnsafeCell::new((std::ptr::null(), None)),
            context_wanted: AtomicU64::new(0),
            samples: Mutex::new(Samples::default()),
            stuck_reported: AtomicU64::new(0),
            free: AtomicBool::new(false),
            in_call: AtomicBool::new(false),
            call: Mutex::new(InCall { stack: RawStack::EMPTY, context: (None, None) }),
            stuck: Mutex::new(None),
            seen_generation: AtomicU64::new(0),
            seen_tick: AtomicU64::new(0),
            seen_cpu_ns: AtomicU64::new(0),
        }
    }

    /// Publishes the start of a poll; returns true when it is the thread's outermost poll (the one published).
    #[inline(always)]
    pub(crate) fn begin(&self, start: u64) -> bool {
        if self.poll_start.load(Ordering::Relaxed) != 0 {
            return false;
        }
        self.generation.store(self.generation.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        self.poll_start.store(start.max(1), Ordering::Release);
        if WATCHDOG_IDLE.load(Ordering::Relaxed) {
            wake_watchdog();
        }
        true
    }

    /// Marks the thread as inside a recorded blocking call made from `stack` while polling in `context`.
    pub(crate) fn enter_call(&self, stack: &RawStack, context: PollContext) {
        let previous = {
            let mut call = self.call.lock().unwrap_or_else(PoisonError::into_inner);
            call.stack = *stack;
            std::mem::replace(&mut call.context, context)
        };
        self.in_call.store(true, Ordering::Release);
        // Released outside the lock: the poll in progress holds its scope, so this is never the last handle.
        drop(previous);
    }

    /// Marks the thread as out of the recorded blocking call [`enter_call`](Self::enter_call) began. When the
    /// watchdog reported the poll stuck during that call, returns the mark that makes the call's record the
    /// report's completion.
    pub(crate) fn leave_call(&self) -> Option<Stuck> {
        self.in_call.store(false, Ordering::Release);
        let context = std::mem::take(&mut self.call.lock().unwrap_or_else(PoisonError::into_inner).context);
        drop(context);
        let generation = self.generation.load(Ordering::Relaxed);
        if self.stuck_reported.load(Ordering::Acquire) != generation {
            return None;
        }
        let mut pending = self.stuck.lock().unwrap_or_else(PoisonError::into_inner);
        match pending.as_mut() {
            Some(p) if p.generation == generation && p.in_call && !p.completed => {
                p.completed = true;
                Some(Stuck { returned: true, ..p.mark.clone() })
            }
            _ => None,
        }
    }

    /// For a poll that is ending: when the watchdog reported it stuck and no call's record completed the report,
    /// the mark that makes the poll's own record the completion.
    pub(crate) fn stuck_poll_returned(&self) -> Option<Stuck> {
        let generation = self.generation.load(Ordering::Relaxed);
        if self.stuck_reported.load(Ordering::Acquire) != generation {
            return None;
        }
        let pending = self.stuck.lock().unwrap_or_else(PoisonError::into_inner).take()?;
        (pending.generation == generation && !pending.completed).then_some(Stuck { returned: true, ..pending.mark })
    }

    /// Publishes the end of the outermost poll.
    #[inline(always)]
    pub(crate) fn end(&self) {
        self.poll_start.store(0, Ordering::Release);
    }

    /// The thread's CPU time (ns) when the watchdog first saw the current poll, if it has seen it, with the raw
    /// tick it read it at.
    pub(crate) fn seen(&self) -> Option<(u64, u64)> {
        if self.seen_generation.load(Ordering::Acquire) != self.generation.load(Ordering::Relaxed) {
            return None;
        }
        Some((self.seen_tick.load(Ordering::Relaxed), self.seen_cpu_ns.load(Ordering::Relaxed)))
    }

    /// The samples the watchdog took of the current poll, leaving none behind: with the one still in the buffer
    /// when the poll ended before the watchdog's next look collected it.
    pub(crate) fn take_samples(&self) -> Vec<RawStack> {
        let generation = self.generation.load(Ordering::Relaxed);
        // A stuck report's context, if the sample carries one, is released here: the poll still holds its scope.
        drop(collect(self, generation));
        let mut s = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if s.generation == generation { std::mem::take(&mut s.stacks) } else { Vec::new() }
    }
}

static SLOTS: Mutex<Vec<&'static Slot>> = Mutex::new(Vec::new());

/// Frees this thread's slot for reuse when the thread exits.
struct SlotOwner(&'static Slot);

impl Drop for SlotOwner {
    fn drop(&mut self) {
        self.0.poll_start.store(0, Ordering::Release);
        self.0.free.store(true, Ordering::Release);
    }
}

thread_local! {
    static OWNER: std::cell::RefCell<Option<SlotOwner>> = const { std::cell::RefCell::new(None) };
}

/// This thread's slot, registering one (or reusing a freed one) on first use.
#[cold]
pub(crate) fn register_thread() -> Option<&'static Slot> {
    OWNER
        .try_with(|owner| {
            let mut owner = owner.try_borrow_mut().ok()?;
            if let Some(o) = owner.as_ref() {
                return Some(o.0);
            }
            let slot = {
                let mut slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
                match slots.iter().find(|s| s.free.swap(false, Ordering::AcqRel)) {
                    Some(reused) => *reused,
                    None => {
                        let fresh: &'static Slot = Box::leak(Box::new(Slot::new()));
                        slots.push(fresh);
                        fresh
                    }
                }
            };
            slot.tid.store(i32::try_from(crate::sys::thread::thread_id()).unwrap_or(0), Ordering::Relaxed);
            *slot.name.lock().unwrap_or_else(PoisonError::into_inner) =
                std::thread::current().name().map(str::to_owned);
            *owner = Some(SlotOwner(slot));
            Some(slot)
        })
        .ok()
        .flatten()
}

/// What the watchdog judges by: the smallest thresholds of the enabled configurations seen.
struct Settings {
    slow_ns: AtomicU64,
    stuck_ns: AtomicU64,
}

/// The watchdog found nothing to watch and sleeps until a poll begins (or 100 ms pass, to drain). Every poll reads
/// it: it has its 128-byte line pair to itself, so that no neighbouring static written elsewhere shares it.
static WATCHDOG_IDLE: Padded<AtomicBool> = Padded(AtomicBool::new(false));

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
static WATCHDOG_THREAD: OnceLock<std::thread::Thread> = OnceLock::new();

#[cold]
#[inline(never)]
fn wake_watchdog() {
    if WATCHDOG_IDLE.swap(false, Ordering::AcqRel)
        && let Some(t) = WATCHDOG_THREAD.get()
    {
        t.unpark();
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

static HANDLER_INSTALLED: AtomicBool = AtomicBool::new(false);

#[cfg(target_os = "linux")]
const SAMPLE_SIGNAL: libc::c_int = libc::SIGURG;

/// Installs the `SIGURG` handler unless the program has one; returns whether sampling is on.
fn install_handler() -> bool {
    #[cfg(target_os = "linux")]
    {
        // The unwinder sets itself up on first use (it reads the program headers and caches them); do that here,
        // never inside a handler.
        let _ = RawStack::capture();
        find_unwinder();
        // SAFETY: `sigaction` with a null new action only reads the current one into `old`, which is zeroed memory
        // of the right type.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above: a null new action, and `old` is a valid `sigaction` to write.
        if unsafe { libc::sigaction(SAMPLE_SIGNAL, std::ptr::null(), &mut old) } != 0 {
            return false;
        }
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            eprintln!("blockcop: SIGURG already has a handler; stack sampling of slow polls is off");
            return false;
        }
        // SAFETY: a zeroed sigaction is valid; we fill in the handler, flags and an empty mask, then install it.
        // The handler is async-signal-safe (see `on_signal`).
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            if libc::sigaction(SAMPLE_SIGNAL, &act, std::ptr::null_mut()) != 0 {
                return false;
            }
        }
        HANDLER_INSTALLED.store(true, Ordering::Relaxed);
        true
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Where the unwinder's own code (libgcc_s) is mapped. A thread interrupted inside it, while it unwinds a panic
/// and switches stacks, has no unwind information valid at that instruction: such a sample is skipped, never taken.
static UNWINDER: (AtomicUsize, AtomicUsize) = (AtomicUsize::new(0), AtomicUsize::new(0));

#[cfg(target_os = "linux")]
fn find_unwinder() {
    // SAFETY: dlsym with a NUL-terminated name; dladdr fills a zeroed Dl_info we own.
    let (fname, base) = unsafe {
        let sym = libc::dlsym(libc::RTLD_DEFAULT, c"_Unwind_RaiseException".as_ptr());
        if sym.is_null() {
            return;
        }
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(sym, &mut info) == 0 || info.dli_fname.is_null() {
            return;
        }
        (std::ffi::CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned(), info.dli_fbase as usize)
    };
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let target = std::fs::canonicalize(&fname).ok();
    let (mut lo, mut hi) = (usize::MAX, 0);
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(path)) = (parts.next(), parts.nth(4)) else { continue };
        let same = std::fs::canonicalize(path).ok() == target && target.is_some();
        let Some((a, b)) = range.split_once('-') else { continue };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else { continue };
        if same || (a <= base && base < b) {
            lo = lo.min(a);
            hi = hi.max(b);
        }
    }
    if lo < hi {
        UNWINDER.0.store(lo, Ordering::Relaxed);
        UNWINDER.1.store(hi, Ordering::Relaxed);
    }
}

/// The sampling signal handler: copies the interrupted thread's return addresses into its slot. It allocates
/// nothing, takes no lock, never unwinds, and restores `errno`.
#[cfg(target_os = "linux")]
extern "C" fn on_signal(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno slot.
    let saved = unsafe { *libc::__errno_location() };
    if let Some(slot) = crate::capture::intercept::thread::current_slot() {
        let generation = slot.generation.load(Ordering::Relaxed);
        if slot.requested.load(Ordering::Acquire) == generation
            && slot.poll_start.load(Ordering::Relaxed) != 0
            && slot.sample_state.load(Ordering::Relaxed) == EMPTY
        {
            if interrupted_in_unwinder(ctx) {
                // Answer with an empty sample, so the watchdog does not wait for one.
                slot.sample_len.store(0, Ordering::Relaxed);
                slot.sample_state.store(READY, Ordering::Release);
                // SAFETY: as above.
                unsafe { *libc::__errno_location() = saved };
                return;
            }
            let mut n = 0;
            // SAFETY: see `unsafe impl Sync for Slot`: only this handler writes the buffer, and only now. The
            // unsynchronized trace avoids backtrace's lock, which the interrupted thread could be holding; the
            // unwinder was set up at install time.
            unsafe {
                let buf = &mut *slot.sample.get();
                backtrace::trace_unsynchronized(|frame| {
                    buf[n] = frame.ip() as usize;
                    n += 1;
                    n < MAX_FRAMES
                });
            }
            if slot.context_wanted.load(Ordering::Relaxed) == generation {
                // SAFETY: as for the buffer above. The previous context was taken by `collect` before it set
                // `EMPTY`, so nothing is overwritten. Only a stuck poll's report asks for it (it holds the scope).
                unsafe { *slot.sample_context.get() = crate::capture::intercept::thread::poll_context_for_signal() };
            }
            slot.sample_len.store(n, Ordering::Relaxed);
            slot.sample_state.store(READY, Ordering::Release);
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// Whether the interrupted instruction lies in the unwinder's code (see [`UNWINDER`]).
#[cfg(target_os = "linux")]
fn interrupted_in_unwinder(ctx: *mut libc::c_void) -> bool {
    let (lo, hi) = (UNWINDER.0.load(Ordering::Relaxed), UNWINDER.1.load(Ordering::Relaxed));
    if ctx.is_null() || lo >= hi {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: with SA_SIGINFO the kernel passes a valid ucontext_t as the third argument.
    let pc = unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RIP as usize] as usize };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above.
    let pc = unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.pc as usize };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let pc = 0usize;
    (lo..hi).contains(&pc)
}

fn watchdog(sampling: bool) {
    let mut last_drain = std::time::Instant::now();
    // Polls seen: the sum of the slots' generations. The watchdog idles only after a quiet spell, so that a busy
    // program (many short polls) never makes it bounce between sleeping and being woken.
    let mut polls_seen = 0u64;
    let mut last_activity = std::time::Instant::now();
    let mut busy = true;
    // How soon a poll in progress at the last look reaches the slow-poll threshold, when that is before the next
    // tick: the watchdog looks again then, so that every slow poll is sampled from its threshold on.
    let mut first_due: Option<u64> = None;
    loop {
        if busy {
            // (100 µs past it, so that the look finds it crossed whatever the clocks' rounding.)
            std::thread::sleep(first_due.map_or(TICK, |ns| TICK.min(Duration::from_nanos(ns + 100_000))));
        } else if last_activity.elapsed() < QUIET_BEFORE_IDLE {
            // Polls happen, but none was in progress at the last look: look less often, though at least once per
            // slow-poll threshold, so that a poll which began just after the last look is seen before its end.
            let slow = Duration::from_nanos(SETTINGS.slow_ns.load(Ordering::Relaxed));
            std::thread::sleep(CALM_TICK.min(slow).max(TICK));
        } else {
            // Idle: sleep until a poll begins (it wakes us) or it is time to drain. Announce first, then look
            // again, so that a poll beginning in between is not missed.
            WATCHDOG_IDLE.store(true, Ordering::SeqCst);
            let any = SLOTS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|s| s.poll_start.load(Ordering::SeqCst) != 0);
            if !any {
                std::thread::park_timeout(IDLE_WAKE);
            }
            WATCHDOG_IDLE.store(false, Ordering::SeqCst);
        }
        if last_drain.elapsed() >= DRAIN_EVERY {
            last_drain = std::time::Instant::now();
            run_file::drain();
        }
        busy = false;
        first_due = None;
        let mut polls_now = 0u64;
        let slow_ns = SETTINGS.slow_ns.load(Ordering::Relaxed);
        let stuck_ns = SETTINGS.stuck_ns.load(Ordering::Relaxed);
        // Reports are made after the slot list is released (they take time); nothing is allocated when idle.
        let mut stuck_now: Vec<(&'static Slot, u64, u64, Stuck, bool)> = Vec::new();
        let mut released: Vec<PollContext> = Vec::new();
        {
            let slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
            let now = clock::now();
            for slot in slots.iter().copied() {
                polls_now = polls_now.wrapping_add(slot.generation.load(Ordering::Relaxed));
                let start = slot.poll_start.load(Ordering::Acquire);
                if start == 0 {
                    continue;
                }
                busy = true;
                let generation = slot.generation.load(Ordering::Relaxed);
                let tid = slot.tid.load(Ordering::Relaxed);
                if slot.seen_generation.load(Ordering::Relaxed) != generation
                    && let Some(cpu) = sys::clock::thread_cpu_ns(tid)
                {
                    slot.seen_tick.store(clock::now(), Ordering::Relaxed);
                    slot.seen_cpu_ns.store(cpu, Ordering::Relaxed);
                    slot.seen_generation.store(generation, Ordering::Release);
                }
                let elapsed = clock::delta_ns(start, now);
                if elapsed < slow_ns {
                    let due = slow_ns - elapsed;
                    first_due = Some(first_due.map_or(due, |d| d.min(due)));
                    continue;
                }
                // A context noted for an earlier stuck report that came too late for it: released after the lock.
                released.push(collect(slot, generation));
                let stuck = elapsed >= stuck_ns && slot.stuck_reported.load(Ordering::Acquire) != generation;
                // A thread inside a recorded blocking call is never signalled: its record will have the call site,
                // a stuck report takes the stack the call published, and a signal could interrupt the call.
                let in_call = slot.in_call.load(Ordering::Acquire);
                if stuck && !in_call {
                    slot.context_wanted.store(generation, Ordering::Relaxed);
                }
                #[cfg(target_os = "linux")]
                if sampling && !in_call && slot.sample_state.load(Ordering::Acquire) == EMPTY {
                    slot.requested.store(generation, Ordering::Release);
                    sys::thread::signal_thread(tid, SAMPLE_SIGNAL);
                }
                #[cfg(not(target_os = "linux"))]
                let _ = sampling;
                if stuck {
                    // Pending before it is marked reported, so the thread finds it as soon as it sees the mark.
                    let mark = Stuck {
                        id: NEXT_STUCK_ID.fetch_add(1, Ordering::Relaxed),
                        reported_after_us: elapsed / 1000,
                        thread_state: sys::thread::thread_state(tid),
                        returned: false,
                    };
                    *slot.stuck.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(PendingStuck { generation, mark: mark.clone(), in_call, completed: false });
                    slot.stuck_reported.store(generation, Ordering::Release);
                    stuck_now.push((slot, generation, elapsed, mark, in_call));
                }
            }
        }
        drop(released);
        if polls_now != polls_seen || busy {
            polls_seen = polls_now;
            last_activity = std::time::Instant::now();
        }
        for (slot, generation, elapsed, mark, in_call) in stuck_now {
            report_stuck(slot, generation, Duration::from_nanos(elapsed), mark, in_call);
        }
    }
}

/// Moves a ready sample from the slot's buffer into its sample list; returns the poll's context if the sample
/// noted it (for a stuck poll's report; dropping it releases the scope). Called by the watchdog, and by the slot's
/// own thread as its poll ends; whichever claims the sample first takes it, the other finds none.
fn collect(slot: &Slot, generation: u64) -> PollContext {
    if slot.sample_state.compare_exchange(READY, TAKING, Ordering::Acquire, Ordering::Relaxed).is_err() {
        return (None, None);
    }
    let mut stack = RawStack::EMPTY;
    let n = slot.sample_len.load(Ordering::Relaxed).min(MAX_FRAMES);
    // SAFETY: this thread moved the state from `READY` to `TAKING`: the handler has finished writing and will not
    // write again until the state is `EMPTY`, and no other reader claimed it.
    let sample: &[usize; MAX_FRAMES] = unsafe { &*slot.sample.get() };
    stack.ips[..n].copy_from_slice(&sample[..n]);
    stack.len = n;
    // SAFETY: as above; the context is taken (left empty), and with it the strong count the handler took.
    let (scope_ptr, task) = unsafe { std::mem::replace(&mut *slot.sample_context.get(), (std::ptr::null(), None)) };
    // SAFETY: a non-null pointer came from `poll_context_for_signal`, which took one strong count for us.
    let scope = (!scope_ptr.is_null()).then(|| Scope { shared: unsafe { Arc::from_raw(scope_ptr) } });
    let requested = slot.requested.load(Ordering::Relaxed);
    slot.sample_state.store(EMPTY, Ordering::Release);
    if requested != generation || n == 0 {
        return (scope, task);
    }
    let mut samples = slot.samples.lock().unwrap_or_else(PoisonError::into_inner);
    if samples.generation != generation {
        *samples = Samples { generation, stacks: Vec::new() };
    }
    // Enough to find the hottest frame; a poll stuck for minutes must not grow without bound.
    if samples.stacks.len() < 512 {
        samples.stacks.push(stack);
    }
    (scope, task)
}

/// Reports a poll that is still running after the stuck threshold: a `tracing` error and a run-file record. Its
/// stack is the one the blocking call it is in published (`in_call`), else a sample the signal handler took.
fn report_stuck(slot: &Slot, generation: u64, elapsed: Duration, mark: Stuck, in_call: bool) {
    let ((scope, task), samples) = if in_call {
        let call = slot.call.lock().unwrap_or_else(PoisonError::into_inner);
        ((call.context.0.clone(), call.context.1), vec![call.stack])
    } else {
        // Give the handler a moment (up to 50 ms on a busy machine) to answer the request just sent, so the report
        // has a stack.
        for _ in 0..50 {
            if slot.sample_state.load(Ordering::Acquire) != EMPTY {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let context = collect(slot, generation);
        let s = slot.samples.lock().unwrap_or_else(PoisonError::into_inner);
        (context, if s.generation == generation { s.stacks.clone() } else { Vec::new() })
    };
    let tid = slot.tid.load(Ordering::Relaxed);
    let name = slot.name.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut detail = String::new();
    let _ = write!(
        detail,
        "poll still running after {}; thread {} is {}",
        crate::clock::format_duration(elapsed),
        name.as_deref().map_or_else(|| tid.to_string(), |n| format!("'{n}'")),
        mark.thread_state
    );
    // The request, test and task the stuck poll belongs to, from the scope it polls in (if it was sampled in one).
    let mut attribution = scope.as_ref().map(|s| s.shared.attribution().clone()).unwrap_or_default();
    if attribution.test.is_none() && scope.is_none() {
        attribution.test = name.clone().filter(|n| crate::capture::scope::is_test_thread_name(n));
    }
    let raw = crate::violation::Violation {
        task: task.map(|t| crate::violation::TaskContext {
            id: t.id.to_string().parse().ok(),
            spawned_at: t.spawned_at.map(ToString::to_string),
        }),
        scope_id: scope.as_ref().map_or(0, Scope::id),
        thread_id: u64::try_from(tid).unwrap_or(0),
        thread_name: name,
        stuck: Some(mark),
        // A stuck poll weighs heavy, whatever its duration so far (the catalogue's slow_poll row).
        ..crate::violation::Violation::new(catalogue::STUCK_POLL, crate::Weight::Heavy, elapsed, detail)
    };
    drop(scope);
    // Symbolizing can take a second on a large debug binary whose debug info is not loaded yet: it happens on a
    // thread of its own, and if it takes longer than RAW_REPORT_AFTER the report goes out without its call site,
    // to be completed when it is known. Either way the run file has it within the threshold plus about 50 ms, and
    // the watchdog goes on watching the other threads meanwhile.
    let job = Arc::new(StuckJob { state: Mutex::new(JobState::Symbolizing), done: std::sync::Condvar::new() });
    let sent = symbolizer().and_then(|tx| {
        let (job, raw, attribution) = (job.clone(), raw.clone(), attribution.clone());
        tx.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(Box::new(move || locate(&job, raw, &attribution, &samples)))
            .ok()
    });
    if sent.is_none() {
        publish(raw, &attribution, Published::Raw);
        return;
    }
    let state = job.state.lock().unwrap_or_else(PoisonError::into_inner);
    let (mut state, _) = job
        .done
        .wait_timeout_while(state, RAW_REPORT_AFTER, |s| *s == JobState::Symbolizing)
        .unwrap_or_else(PoisonError::into_inner);
    if *state == JobState::Symbolizing {
        *state = JobState::RawPublished;
        drop(state);
        publish(raw, &attribution, Published::Raw);
    }
}

/// How long the watchdog waits for a stuck poll's stack to be symbolized before it reports the poll without it.
const RAW_REPORT_AFTER: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    /// The symbolizer is working on it.
    Symbolizing,
    /// The symbolizer published the whole report.
    Done,
    /// The watchdog published it without its call site; the symbolizer completes it.
    RawPublished,
}

struct StuckJob {
    state: Mutex<JobState>,
    done: std::sync::Condvar,
}

type SymbolizerJob = Box<dyn FnOnce() + Send>;

/// The thread that symbolizes stuck polls' stacks (`blockcop-symbolizer`), started on first use.
fn symbolizer() -> Option<&'static Mutex<std::sync::mpsc::Sender<SymbolizerJob>>> {
    static TX: OnceLock<Option<Mutex<std::sync::mpsc::Sender<SymbolizerJob>>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SymbolizerJob>();
        let spawned = std::thread::Builder::new().name("blockcop-symbolizer".into()).spawn(move || {
            crate::capture::scope::allow_blocking(|| {
                while let Ok(job) = rx.recv() {
                    job();
                }
            });
        });
        spawned.ok().map(|_| Mutex::new(tx))
    })
    .as_ref()
}

/// Symbolizes a stuck poll's samples and publishes its report: the whole report, or, when the watchdog already
/// published it without a call site, the record that completes it.
fn locate(job: &StuckJob, raw: crate::Violation, attribution: &Attribution, samples: &[RawStack]) {
    let hot = crate::capture::symbolize::hottest(samples, Config::global_or_default());
    let violation = crate::Violation {
        call_site: hot.call_site,
        blocking_api: hot.blocking_api,
        blocking_api_crate: hot.blocking_api_crate,
        stack: hot.stack,
        call_chain: hot.call_chain,
        ..raw
    };
    let mut state = job.state.lock().unwrap_or_else(PoisonError::into_inner);
    if *state == JobState::Symbolizing {
        *state = JobState::Done;
        job.done.notify_all();
        drop(state);
        publish(violation, attribution, Published::Whole);
    } else {
        drop(state);
        publish(violation, attribution, Published::Located);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Published {
    /// The whole report.
    Whole,
    /// The report without its call site (symbolizing was taking long).
    Raw,
    /// The call site of a report published raw.
    Located,
}

/// Publishes a stuck poll's report: a `tracing` event, a run-file record, and [`stuck_polls`]. A located report
/// replaces the raw one in [`stuck_polls`] and is a WARN event (the ERROR went out with the raw one); in the run file
/// it is a second record with the same stuck id, which `blockcop report` takes instead of the first.
fn publish(violation: crate::Violation, attribution: &Attribution, how: Published) {
    let request = attribution.request.as_ref().map(|r| format!("{} {}", r.method, r.path));
    macro_rules! event {
        ($lvl:expr, $what:literal) => {
            tracing::event!(
                target: "blockcop",
                $lvl,
                event = violation.event,
                weight = violation.weight.value(),
                level = violation.level.as_str(),
                duration_us = crate::clock::micros(violation.duration),
                call_site = %violation.call_site,
                thread = violation.thread_name.as_deref().unwrap_or(""),
                request = request.as_deref().unwrap_or(""),
                detail = violation.detail.as_str(),
                "{}: {} at {}",
                $what,
                violation.detail,
                violation.call_site,
            )
        };
    }
    match how {
        Published::Located => event!(tracing::Level::WARN, "stuck poll located"),
        Published::Whole | Published::Raw => event!(tracing::Level::ERROR, "stuck poll"),
    }
    let scope_id = violation.scope_id;
    let list = crate::Violations { list: vec![violation], dropped: 0 };
    run_file::append(record::records(&list, attribution, scope_id));
    if let Ok(mut reported) = STUCK.lock() {
        let id = list.list[0].stuck.as_ref().map(|s| s.id);
        if let Some(i) = reported.iter().position(|v| how == Published::Located && v.stuck.as_ref().map(|s| s.id) == id)
        {
            reported.remove(i);
        }
        if reported.len() >= 256 {
            reported.remove(0);
        }
        reported.extend(list.list);
    }
}

static STUCK: Mutex<Vec<crate::Violation>> = Mutex::new(Vec::new());

/// Samples every thread that is polling inside a scope, as fast as the signal round trip allows, until `target`
/// samples were taken or `timeout` passed; returns how many were taken. For the signal-safety stress test.
#[doc(hidden)]
pub fn stress_sample(target: usize, timeout: Duration) -> usize {
    if !HANDLER_INSTALLED.load(Ordering::Relaxed) {
        return 0;
    }
    let deadline = std::time::Instant::now() + timeout;
    let mut taken = 0;
    // Pipelined: a thread is asked again as soon as its last answer was collected (or after 20 ms unanswered).
    let mut asked_at: HashMap<usize, std::time::Instant> = HashMap::new();
    while taken < target && std::time::Instant::now() < deadline {
        let slots: Vec<&'static Slot> = SLOTS.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for slot in slots {
            if slot.poll_start.load(Ordering::Acquire) == 0 || slot.free.load(Ordering::Acquire) {
                continue;
            }
            let key = std::ptr::from_ref(slot) as usize;
            let generation = slot.generation.load(Ordering::Relaxed);
            if slot.sample_state.load(Ordering::Acquire) == READY {
                if slot.sample_len.load(Ordering::Relaxed) > 0 {
                    taken += 1;
                }
                collect(slot, generation);
                slot.samples.lock().unwrap_or_else(PoisonError::into_inner).stacks.clear();
                asked_at.remove(&key);
            }
            let stale = asked_at.get(&key).is_none_or(|t| t.elapsed() > Duration::from_millis(20));
            if stale {
                slot.requested.store(generation, Ordering::Release);
                #[cfg(target_os = "linux")]
                sys::thread::signal_thread(slot.tid.load(Ordering::Relaxed), SAMPLE_SIGNAL);
                asked_at.insert(key, std::time::Instant::now());
            }
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    taken
}

/// The stuck polls reported so far in this process (the latest 256), with their stacks.
pub fn stuck_polls() -> Vec<crate::Violation> {
    STUCK.lock().unwrap_or_else(PoisonError::into_inner).clone()
}
