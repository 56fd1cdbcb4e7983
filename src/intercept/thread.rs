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

use crate::sampler::{self, Slot};
use crate::scope::{Scope, ScopeShared};

/// The tokio task a runtime hook is polling on this thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskTag {
    pub(crate) id: tokio::task::Id,
    pub(crate) spawned_at: &'static Location<'static>,
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
}

thread_local! {
    static STATE: State = const {
        State { current: Cell::new(ptr::null()), excluded_ns: Cell::new(0), task: Cell::new(None), slot: Cell::new(None) }
    };
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

/// The task being polled on this thread, when a runtime hook began the poll.
pub(crate) fn current_task() -> Option<TaskTag> {
    STATE.with(|s| s.task.get())
}

/// A new handle to the scope this thread is polling in, if any (for tasks spawned from it to inherit).
#[cfg_attr(not(tokio_unstable), allow(dead_code))]
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

/// A poll begun by one runtime hook and ended by another, so it cannot hold an [`Entered`] guard. The scope is
/// kept here from the beginning of the poll until a later poll replaces it, so the pointer in `current` stays valid.
#[cfg_attr(not(tokio_unstable), allow(dead_code))]
struct Detached {
    /// This thread's own scope for the runtime hooks, with the key of the installation it belongs to.
    own: Option<(usize, Scope)>,
    /// An inherited scope being polled (a request's, for a task spawned inside it).
    scope: Option<Scope>,
    /// Whether the poll in progress is in `scope` (else in `own`).
    inherited: bool,
    prev: *const ScopeShared,
    excluded_at_entry: u64,
    start: u64,
    site: Option<&'static Location<'static>>,
    active: bool,
    outermost: bool,
}

thread_local! {
    static DETACHED: RefCell<Detached> = const {
        RefCell::new(Detached {
            own: None,
            scope: None,
            inherited: false,
            prev: ptr::null(),
            excluded_at_entry: 0,
            start: 0,
            site: None,
            active: false,
            outermost: false,
        })
    };
}

#[cfg_attr(not(tokio_unstable), allow(dead_code))]
/// Begins a task poll (tokio's before-poll hook): in `inherited` when the task inherited a scope, otherwise in this
/// thread's own scope for installation `own_key` (made by `make_own` the first time). A task poll inside another
/// one on the same thread keeps the outer one.
pub(crate) fn begin_detached(
    inherited: Option<&Scope>,
    own_key: usize,
    make_own: impl FnOnce() -> Scope,
    task: Option<TaskTag>,
) {
    DETACHED.with(|d| {
        let Ok(mut d) = d.try_borrow_mut() else { return };
        if d.active {
            return;
        }
        let d = &mut *d;
        let held: &ScopeShared = match inherited {
            Some(scope) => {
                if !d.scope.as_ref().is_some_and(|h| Arc::ptr_eq(&h.shared, &scope.shared)) {
                    d.scope = Some(scope.clone());
                }
                d.inherited = true;
                match d.scope.as_ref() {
                    Some(h) => &h.shared,
                    None => return,
                }
            }
            None => {
                if d.own.as_ref().is_none_or(|(k, _)| *k != own_key) {
                    d.own = Some((own_key, make_own()));
                }
                d.inherited = false;
                match d.own.as_ref() {
                    Some((_, h)) => &h.shared,
                    None => return,
                }
            }
        };
        let start = held.now();
        STATE.with(|s| {
            d.outermost = publish_begin(s, start);
            s.task.set(task);
            d.prev = s.current.replace(held);
            d.excluded_at_entry = s.excluded_ns.get();
        });
        d.site = task.map(|t| t.spawned_at);
        d.active = true;
        d.start = start;
    });
}

/// Ends the task poll [`begin_detached`] began (tokio's after-poll hook).
#[cfg_attr(not(tokio_unstable), allow(dead_code))]
pub(crate) fn end_detached() {
    DETACHED.with(|d| {
        let Ok(mut d) = d.try_borrow_mut() else { return };
        if !d.active {
            return;
        }
        d.active = false;
        let held = if d.inherited { d.scope.as_ref() } else { d.own.as_ref().map(|(_, s)| s) };
        if let Some(scope) = held {
            scope.shared.end_poll(d.start, d.excluded_at_entry, d.site);
        }
        STATE.with(|s| {
            s.current.set(d.prev);
            s.task.set(None);
            publish_end(s, d.outermost);
        });
    });
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
    struct Restore(*const ScopeShared);
    impl Drop for Restore {
        fn drop(&mut self) {
            STATE.with(|s| s.current.set(self.0));
        }
    }
    let restore = Restore(STATE.with(|s| s.current.replace(ptr::null())));
    // SAFETY: a non-null pointer in `current` was stored either by `enter` from a `&'a ScopeShared` whose
    // `Entered<'a>` guard is still alive further up this thread's stack (guards are only created and dropped in
    // strictly nested order inside blockcop, never leaked, and each restores the previous pointer on drop), or by
    // `begin_detached` from the `Arc` that `DETACHED` holds until `end_detached` has restored the previous
    // pointer. Either way the scope outlives this call, and the reference handed to `f` cannot escape it.
    let scope = unsafe { restore.0.as_ref() };
    f(scope)
}
