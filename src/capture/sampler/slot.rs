//! The slots: each polling thread publishes its outermost poll in a [`Slot`] (start tick, generation), which the
//! watchdog reads and the signal handler writes samples into.

use super::*;

/// One thread's published poll and its sampling handshake.
///
/// The fields the owning thread writes on every poll sit alone in the first cache lines, so that nothing the
/// watchdog or other threads write shares their line.
#[repr(C, align(128))]
pub(crate) struct Slot {
    /// Raw tick at which the outermost poll in progress began; 0 when the thread is not polling.
    pub(super) poll_start: AtomicU64,
    pub(super) generation: AtomicU64,
    pub(super) _own_line: [u64; 14],
    pub(super) tid: AtomicI32,
    pub(super) name: Mutex<Option<String>>,
    /// The generation the watchdog asked a sample of (0: none asked).
    pub(super) requested: AtomicU64,
    /// Where the sample buffer is in its handshake: [`EMPTY`], [`READY`] or [`TAKING`].
    pub(super) sample_state: AtomicU8,
    pub(super) sample_len: AtomicUsize,
    pub(super) sample: UnsafeCell<[usize; MAX_FRAMES]>,
    /// What the sampled poll was polling, noted only for a stuck poll's report (`context_wanted`): its scope (one
    /// strong count, which `collect` hands to its caller) and task. Written and read under the same handshake as
    /// `sample`.
    pub(super) sample_context: UnsafeCell<(*const ScopeShared, Option<TaskTag>)>,
    /// The generation whose stuck report wants the poll's context with its next sample (0: none).
    pub(super) context_wanted: AtomicU64,
    /// Samples of the current generation, taken by the slow poll at its end.
    pub(super) samples: Mutex<Samples>,
    pub(super) stuck_reported: AtomicU64,
    pub(super) free: AtomicBool,
    /// The thread is inside a blocking call the interposer is recording: it is never signalled (the record will
    /// have the call site, and a signal could interrupt the call and split it in two records).
    pub(super) in_call: AtomicBool,
    /// The stack and context of the latest recorded blocking call, published before the call is made: a stuck
    /// poll's report inside a call takes them from here instead of from a signal.
    pub(super) call: Mutex<InCall>,
    /// The stuck report of the current poll, until the poll's end (or the call it was stuck in) completes it.
    pub(super) stuck: Mutex<Option<PendingStuck>>,
    /// When the watchdog first saw the current poll: its generation, the tick and the thread's CPU time then.
    pub(super) seen_generation: AtomicU64,
    pub(super) seen_tick: AtomicU64,
    pub(super) seen_cpu_ns: AtomicU64,
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
pub(super) const EMPTY: u8 = 0;

/// [`Slot::sample_state`]: the handler wrote a sample; nobody is reading it yet.
pub(super) const READY: u8 = 1;

/// [`Slot::sample_state`]: one thread is reading the sample out of the buffer.
pub(super) const TAKING: u8 = 2;

/// The samples of one poll (one generation).
#[derive(Default)]
pub(super) struct Samples {
    pub(super) generation: u64,
    pub(super) stacks: Vec<RawStack>,
}

/// What a stuck poll was polling: the scope (a handle, which keeps it alive: never kept past the report) and task.
pub(super) type PollContext = (Option<Scope>, Option<TaskTag>);

/// A recorded blocking call in progress, as its thread published it.
pub(super) struct InCall {
    pub(super) stack: RawStack,
    pub(super) context: PollContext,
}

/// A stuck poll's report, waiting for the poll to return.
pub(super) struct PendingStuck {
    pub(super) generation: u64,
    pub(super) mark: Stuck,
    /// The thread was inside a recorded blocking call when reported: that call's record completes the report.
    pub(super) in_call: bool,
    /// A call's record has completed it already.
    pub(super) completed: bool,
}

/// Stuck reports made in this process: [`Stuck::id`]s count from 1.
pub(super) static NEXT_STUCK_ID: AtomicU64 = AtomicU64::new(1);

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

pub(super) static SLOTS: Mutex<Vec<&'static Slot>> = Mutex::new(Vec::new());

/// Frees this thread's slot for reuse when the thread exits.
pub(super) struct SlotOwner(&'static Slot);

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
