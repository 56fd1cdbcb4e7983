//! The thread-local scope state: which scope (if any) the thread is polling task code for, and how much of the
//! current poll was spent in blocking calls already recorded or allowed.
//!
//! The fast path of every hook is one read of [`active`]: a `const`-initialised thread local without a destructor,
//! so the read is a plain load relative to the thread pointer, with no lazy initialisation.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::panic::Location;
use std::ptr;
use std::sync::Arc;

use crate::capture::sampler::{self, Slot};
use crate::capture::scope::{Scope, ScopeShared};
use crate::clock::Stamp;

/// The tokio task a runtime hook is polling on this thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskTag {
    pub(crate) id: tokio::task::Id,
    /// Where the task was spawned, when the hook that began the poll knows it.
    pub(crate) spawned_at: Option<&'static Location<'static>>,
}

struct State {
    /// The scope being polled on this thread, or null (also while detection is suspended).
    current: Cell<*const ScopeShared>,
    /// Nanoseconds this thread has spent in recorded or allowed blocking calls and in reported slow polls, ever
    /// (it only grows). A poll's share is the growth between its entry and exit; the slow-poll timer leaves it out,
    /// so that one blocking call is reported once, also by enclosing polls.
    excluded_ns: Cell<u64>,
    /// The task being polled, when a runtime hook began the poll.
    task: Cell<Option<TaskTag>>,
    /// This thread's watchdog slot, once registered.
    slot: Cell<Option<&'static Slot>>,
    /// The coarse clock's latest reading on this thread (at the end of its latest poll; 0 before any).
    last_coarse: Cell<u64>,
    /// The raw tick and the thread's CPU time (ns) then: read when a poll begins more than
    /// [`CPU_REFERENCE_EVERY`] after the previous reading (so at most about once per ms per thread: a fraction of a
    /// per mille of its time), so that a slow poll's CPU time is known within that much without reading the CPU
    /// clock at the beginning of every poll. Tick 0: none yet.
    cpu_reference: Cell<(u64, u64)>,
    /// While detection is suspended inside a scope (a blocking call being recorded, blockcop's own work): that
    /// scope, for the sampling signal handler; null otherwise.
    suspended: Cell<*const ScopeShared>,
    /// The task poll in progress that a runtime hook began, if any.
    detached: DetachedPoll,
    /// This thread's own scope for the runtime hooks: the installation's key and the scope, which [`HELD`] holds.
    own: Cell<(usize, *const ScopeShared)>,
}

thread_local! {
    static STATE: State = const {
        State {
            current: Cell::new(ptr::null()),
            excluded_ns: Cell::new(0),
            task: Cell::new(None),
            slot: Cell::new(None),
            last_coarse: Cell::new(0),
            cpu_reference: Cell::new((0, 0)),
            suspended: Cell::new(ptr::null()),
            detached: DetachedPoll::new(),
            own: Cell::new((0, ptr::null())),
        }
    };
}

/// This thread's state, without a closure around the code using it (so that the runtime hooks' code inlines into
/// one function).
#[inline(always)]
fn state() -> &'static State {
    // SAFETY: `STATE` is a `const`-initialised thread local without a destructor: its storage exists, initialised,
    // for as long as the thread runs and is never dropped, so the reference is valid wherever the thread can use
    // it. `State` is not `Sync` (it is made of `Cell`s), so the reference cannot reach another thread.
    STATE.with(|s| unsafe { &*ptr::from_ref(s) })
}

/// This thread's watchdog slot, if registered. Async-signal-safe: one read of a `const` thread local.
#[inline(always)]
pub(crate) fn current_slot() -> Option<&'static Slot> {
    STATE.try_with(|s| s.slot.get()).ok().flatten()
}

/// Publishes the start of a poll in this thread's watchdog slot (registering it on first use); true when this is
/// the thread's outermost poll.
#[inline(always)]
fn publish_begin(s: &State, start: u64) -> bool {
    let slot = match s.slot.get() {
        Some(slot) => slot,
        // Registering locks and allocates: blockcop's own work, never recorded.
        None => match suspended(|_| sampler::register_thread()) {
            Some(slot) => {
                s.slot.set(Some(slot));
                slot
            }
            None => return false,
        },
    };
    slot.begin(start)
}

#[inline(always)]
fn publish_end(s: &State, outermost: bool) {
    if outermost && let Some(slot) = s.slot.get() {
        slot.end();
    }
}

/// How stale the thread's CPU-time reference may be when a poll begins before it is read again: 1 ms.
pub(crate) const CPU_REFERENCE_EVERY: std::time::Duration = std::time::Duration::from_millis(1);

/// For a poll beginning at raw tick `start`: the coarse clock's latest reading on this thread (at or before now, and
/// 0 before this thread's first poll ends), after making sure the thread's CPU-time reference is at most
/// `reference_every_ticks` old (see [`cpu_reference`]).
#[inline(always)]
pub(crate) fn poll_begins(start: u64, reference_every_ticks: u64) -> u64 {
    STATE
        .try_with(|s| {
            if start.wrapping_sub(s.cpu_reference.get().0) >= reference_every_ticks {
                refresh_cpu_reference(s, start);
            }
            s.last_coarse.get()
        })
        .unwrap_or(0)
}

/// Keeps `coarse`, read now, as this thread's latest coarse-clock reading.
#[inline(always)]
pub(crate) fn set_last_coarse(coarse: u64) {
    let _ = STATE.try_with(|s| s.last_coarse.set(coarse));
}

#[cold]
#[inline(never)]
fn refresh_cpu_reference(s: &State, now: u64) {
    if let Some(cpu) = crate::sys::clock::own_cpu_ns() {
        s.cpu_reference.set((now.max(1), cpu));
    }
}

/// This thread's latest CPU-time reference: the raw tick it was taken at and the thread's CPU time then (ns). Taken
/// when a poll began (a poll beginning within [`CPU_REFERENCE_EVERY`] of an earlier one keeps that one's), so at or
/// before the beginning of the current poll; `None` before the first.
pub(crate) fn cpu_reference() -> Option<(u64, u64)> {
    STATE.try_with(|s| s.cpu_reference.get()).ok().filter(|(tick, _)| *tick != 0)
}

/// What this thread is polling, for the sampling signal handler: the scope (with one more strong count taken for
/// the caller, who owns it) and the task. Async-signal-safe: reads of a `const` thread local and one atomic
/// increment, nothing allocated or freed.
pub(crate) fn poll_context_for_signal() -> (*const ScopeShared, Option<TaskTag>) {
    let (scope, task) = STATE
        .try_with(|s| {
            let current = s.current.get();
            (if current.is_null() { s.suspended.get() } else { current }, s.task.get())
        })
        .unwrap_or((ptr::null(), None));
    if !scope.is_null() {
        // SAFETY: a non-null `current` (or `suspended`, the `current` that `suspended()` set aside until it
        // restores it) points into a live `Arc<ScopeShared>` that the interrupted poll keeps alive (see
        // `suspended`), so one more strong count can be taken; the caller releases it with `Arc::from_raw`.
        unsafe { Arc::increment_strong_count(scope) };
    }
    (scope, task)
}

/// What this thread is polling: a new handle to the scope (the current one, or the one `suspended()` set aside)
/// and the task. For a stuck poll's report made while the thread is inside a blocking call.
pub(crate) fn poll_context() -> (Option<Scope>, Option<TaskTag>) {
    let (scope, task) = poll_context_for_signal();
    // SAFETY: a non-null pointer comes with the strong count `poll_context_for_signal` took for its caller, which
    // the new `Arc` takes over.
    let scope = (!scope.is_null()).then(|| Scope { shared: unsafe { Arc::from_raw(scope) } });
    (scope, task)
}

/// The task being polled on this thread: the one a runtime hook began the poll of (with its spawn location), else
/// the tokio task this code runs in, known by its id only.
pub(crate) fn current_task() -> Option<TaskTag> {
    STATE.with(|s| s.task.get()).or_else(|| tokio::task::try_id().map(|id| TaskTag { id, spawned_at: None }))
}

/// A new handle to the scope this thread is polling in, if any (for tasks spawned from it to inherit).
pub(crate) fn current_scope() -> Option<Arc<ScopeShared>> {
    let ptr = STATE.with(|s| s.current.get());
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a non-null `current` points into a live `Arc<ScopeShared>` (see `suspended` for why it is alive);
    // `&*arc` and `Arc::as_ptr` are the same address, so taking one more strong count and rebuilding an `Arc`
    // from it is sound and leaves the original owner's count untouched.
    unsafe {
        Arc::increment_strong_count(ptr);
        Some(Arc::from_raw(ptr))
    }
}

/// A task poll begun by tokio's before-poll hook and ended by its after-poll hook, so it cannot hold an
/// [`Entered`] guard: what the end needs, kept in [`State`] (one `Cell` per field: no copies of the whole).
struct DetachedPoll {
    /// How many task polls are in progress on this thread (a runtime's task polled inside another's): only the
    /// outermost is timed.
    depth: Cell<u32>,
    outermost: Cell<bool>,
    /// The scope polled in: this thread's own for the installation, or an inherited one, both held by [`HELD`].
    scope: Cell<*const ScopeShared>,
    prev: Cell<*const ScopeShared>,
    excluded_at_entry: Cell<u64>,
    start_ticks: Cell<u64>,
    start_coarse: Cell<u64>,
}

impl DetachedPoll {
    const fn new() -> DetachedPoll {
        DetachedPoll {
            depth: Cell::new(0),
            outermost: Cell::new(false),
            scope: Cell::new(ptr::null()),
            prev: Cell::new(ptr::null()),
            excluded_at_entry: Cell::new(0),
            start_ticks: Cell::new(0),
            start_coarse: Cell::new(0),
        }
    }
}

/// The scopes the runtime hooks poll in on this thread, kept alive here so that [`State`] can point at them: the
/// thread's own scope for an installation, and the latest inherited scope polled (kept until another replaces it).
struct Held {
    own: Option<Scope>,
    inherited: Option<Scope>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // The thread is exiting: nothing may point at the scopes any more (a worker thread can exit between
        // `enter_worker` and `leave_worker`).
        let _ = STATE.try_with(|s| {
            let (_, own) = s.own.get();
            if !own.is_null() && s.current.get() == own {
                s.current.set(ptr::null());
            }
            s.own.set((0, ptr::null()));
        });
    }
}

thread_local! {
    static HELD: RefCell<Held> = const { RefCell::new(Held { own: None, inherited: None }) };
}

/// Holds `scope` as the inherited scope being polled; returns it, or null if it cannot be held (thread exiting).
#[cold]
fn hold_inherited(scope: &Scope) -> *const ScopeShared {
    HELD.try_with(|h| {
        let mut h = h.try_borrow_mut().ok()?;
        if !h.inherited.as_ref().is_some_and(|held| Arc::ptr_eq(&held.shared, &scope.shared)) {
            h.inherited = Some(scope.clone());
        }
        Some(Arc::as_ptr(&scope.shared))
    })
    .ok()
    .flatten()
    .unwrap_or(ptr::null())
}

/// Makes (with `make_own`) and holds this thread's own scope for installation `key`; returns it, or null.
#[cold]
fn hold_own(s: &State, key: usize, make_own: impl FnOnce() -> Scope) -> *const ScopeShared {
    // Making a scope locks and allocates: blockcop's own work, never recorded.
    let scope = suspended(|_| make_own());
    let ptr = Arc::as_ptr(&scope.shared);
    let held = HELD.try_with(|h| match h.try_borrow_mut() {
        Ok(mut h) => {
            h.own = Some(scope);
            true
        }
        Err(_) => false,
    });
    if held != Ok(true) {
        return ptr::null();
    }
    s.own.set((key, ptr));
    ptr
}

#[cfg_attr(not(tokio_unstable), allow(dead_code))]
/// Begins a task poll (tokio's before-poll hook): in `inherited` when the task inherited a scope, otherwise in this
/// thread's own scope for installation `own_key` (made by `make_own` the first time). A task poll inside another
/// one on the same thread keeps the outer one.
#[inline]
pub(crate) fn begin_detached(
    inherited: Option<&Scope>,
    own_key: usize,
    make_own: impl FnOnce() -> Scope,
    task: Option<TaskTag>,
) {
    let s = state();
    let d = &s.detached;
    let depth = d.depth.get();
    if depth > 0 {
        d.depth.set(depth + 1);
        return;
    }
    let scope = match inherited {
        Some(scope) => hold_inherited(scope),
        None => match s.own.get() {
            (key, own) if key == own_key && !own.is_null() => own,
            _ => hold_own(s, own_key, make_own),
        },
    };
    // SAFETY: a non-null `scope` points into a scope `HELD` holds: it is replaced only by a later call of this
    // function (never while a poll is in progress, see `depth`), and `s.own` is cleared when `HELD` is dropped.
    let Some(shared) = (unsafe { scope.as_ref() }) else { return };
    let start = shared.stamp();
    s.task.set(task);
    d.depth.set(1);
    d.outermost.set(publish_begin(s, start.ticks));
    d.scope.set(scope);
    d.prev.set(s.current.replace(scope));
    d.excluded_at_entry.set(s.excluded_ns.get());
    d.start_ticks.set(start.ticks);
    d.start_coarse.set(start.coarse);
}

/// Makes this thread's own scope for installation `own_key` (made by `make_own` the first time) current, as the
/// thread starts running tasks (stable tokio's `on_thread_unpark`, which fires on worker threads only): blocking
/// calls the thread makes inside a task until [`leave_worker`] are recorded in it (the scope records only calls
/// made inside a task, see [`Scope::for_worker_threads`]). It is not a poll: nothing is timed. Does nothing while
/// another scope is current (a runtime driven from inside a poll).
#[cfg_attr(tokio_unstable, allow(dead_code))]
pub(crate) fn enter_worker(own_key: usize, make_own: impl FnOnce() -> Scope) {
    let s = state();
    if !s.current.get().is_null() {
        return;
    }
    let scope = match s.own.get() {
        (key, own) if key == own_key && !own.is_null() => own,
        _ => hold_own(s, own_key, make_own),
    };
    s.current.set(scope);
}

/// True when the current scope records only a task's calls (a worker thread's, [`enter_worker`]) and the thread is
/// not running a task: the scheduler's own code between tasks.
#[inline]
pub(crate) fn between_tasks() -> bool {
    let current = state().current.get();
    // SAFETY: a non-null `current` points into a live scope (see `suspended` for why it is alive while current).
    let tasks_only = unsafe { current.as_ref() }.is_some_and(ScopeShared::tasks_only);
    tasks_only && tokio::task::try_id().is_none()
}

/// Leaves the scope [`enter_worker`] made current, as the thread parks (stable tokio's `on_thread_park`).
#[cfg_attr(tokio_unstable, allow(dead_code))]
pub(crate) fn leave_worker(own_key: usize) {
    let s = state();
    let (key, own) = s.own.get();
    if key == own_key && !own.is_null() && s.current.get() == own {
        s.current.set(ptr::null());
    }
}

/// Ends the task poll [`begin_detached`] began (tokio's after-poll hook).
#[cfg_attr(not(tokio_unstable), allow(dead_code))]
#[inline]
pub(crate) fn end_detached() {
    let s = state();
    let d = &s.detached;
    match d.depth.get() {
        0 => return,
        1 => d.depth.set(0),
        depth => {
            d.depth.set(depth - 1);
            return;
        }
    }
    // SAFETY: as in `begin_detached`; `depth` was 1, so this is the poll that function began.
    if let Some(shared) = unsafe { d.scope.get().as_ref() } {
        let start = Stamp { ticks: d.start_ticks.get(), coarse: d.start_coarse.get() };
        shared.end_poll(start, d.excluded_at_entry.get(), s.task.get().and_then(|t| t.spawned_at));
    }
    s.current.set(d.prev.get());
    s.task.set(None);
    publish_end(s, d.outermost.get());
}

/// True when this thread is polling task code inside a scope and detection is not suspended.
#[inline(always)]
pub(crate) fn active() -> bool {
    STATE.with(|s| !s.current.get().is_null())
}

/// Proof that this thread has entered a scope; leaving it (on drop, also while unwinding) restores the previous
/// scope.
pub(crate) struct Entered<'a> {
    prev: *const ScopeShared,
    excluded_at_entry: u64,
    outermost: bool,
    _scope: PhantomData<&'a ScopeShared>,
}

/// Makes `scope` the thread's current scope until the returned guard drops, for a poll that began at `start`.
#[inline(always)]
pub(crate) fn enter(scope: &ScopeShared, start: u64) -> Entered<'_> {
    STATE.with(|s| {
        let outermost = publish_begin(s, start);
        Entered {
            prev: s.current.replace(scope),
            excluded_at_entry: s.excluded_ns.get(),
            outermost,
            _scope: PhantomData,
        }
    })
}

impl Entered<'_> {
    /// The thread's excluded-time counter when this poll began; see [`excluded_since`].
    #[inline(always)]
    pub(crate) fn excluded_at_entry(&self) -> u64 {
        self.excluded_at_entry
    }
}

/// Nanoseconds spent in recorded or allowed blocking calls since the counter read `at_entry`.
#[inline(always)]
pub(crate) fn excluded_since(at_entry: u64) -> u64 {
    STATE.with(|s| s.excluded_ns.get().wrapping_sub(at_entry))
}

impl Drop for Entered<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        STATE.with(|s| {
            s.current.set(self.prev);
            publish_end(s, self.outermost);
        });
    }
}

/// Adds `ns` to the time the current poll leaves out of its slow-poll check.
#[inline]
pub(crate) fn exclude(ns: u64) {
    STATE.with(|s| s.excluded_ns.set(s.excluded_ns.get().wrapping_add(ns)));
}

/// Runs `f` with detection suspended on this thread, giving it the scope that was current (if any).
///
/// This is the re-entrancy guard: blockcop's own work inside a hook (capturing a stack, allocating, symbolizing,
/// logging) calls hooked functions, which then see no scope and pass straight through.
pub(crate) fn suspended<R>(f: impl FnOnce(Option<&ScopeShared>) -> R) -> R {
    struct Restore {
        current: *const ScopeShared,
        suspended: *const ScopeShared,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            STATE.with(|s| {
                s.current.set(self.current);
                s.suspended.set(self.suspended);
            });
        }
    }
    let restore = STATE.with(|s| {
        let current = s.current.replace(ptr::null());
        let suspended = s.suspended.get();
        if !current.is_null() {
            s.suspended.set(current);
        }
        Restore { current, suspended }
    });
    // SAFETY: a non-null pointer in `current` was stored either by `enter` from a `&'a ScopeShared` whose
    // `Entered<'a>` guard is still alive further up this thread's stack (guards are only created and dropped in
    // strictly nested order inside blockcop, never leaked, and each restores the previous pointer on drop), or by
    // `begin_detached` from a scope that `HELD` holds until `end_detached` has restored the previous pointer, or by
    // `enter_worker` from the thread's own scope, which `HELD` holds until it is replaced (only while `current` is
    // null) or dropped as the thread exits (whose `Drop` clears `current` first). Either way the scope outlives this
    // call, and the reference handed to `f` cannot escape it.
    let scope = unsafe { restore.current.as_ref() };
    f(scope)
}
