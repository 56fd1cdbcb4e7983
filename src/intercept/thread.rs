//! The thread-local scope state: which scope (if any) the thread is polling task code for, and how much of the
//! current poll was spent in blocking calls already recorded or allowed.
//!
//! The fast path of every hook is one read of [`active`]: a `const`-initialised thread local without a destructor,
//! so the read is a plain load relative to the thread pointer, with no lazy initialisation.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr;

use crate::scope::ScopeShared;

struct State {
    /// The scope being polled on this thread, or null (also while detection is suspended).
    current: Cell<*const ScopeShared>,
    /// Nanoseconds this thread has spent in recorded or allowed blocking calls and in reported slow polls, ever
    /// (it only grows). A poll's share is the growth between its entry and exit; the slow-poll timer leaves it out,
    /// so that one blocking call is reported once, also by enclosing polls.
    excluded_ns: Cell<u64>,
}

thread_local! {
    static STATE: State = const {
        State { current: Cell::new(ptr::null()), excluded_ns: Cell::new(0) }
    };
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
    _scope: PhantomData<&'a ScopeShared>,
}

/// Makes `scope` the thread's current scope until the returned guard drops.
#[inline(always)]
pub(crate) fn enter(scope: &ScopeShared) -> Entered<'_> {
    STATE.with(|s| Entered {
        prev: s.current.replace(scope),
        excluded_at_entry: s.excluded_ns.get(),
        _scope: PhantomData,
    })
}

impl Entered<'_> {
    /// Nanoseconds of this poll so far spent in recorded or allowed blocking calls.
    #[inline(always)]
    pub(crate) fn excluded_ns(&self) -> u64 {
        STATE.with(|s| s.excluded_ns.get().wrapping_sub(self.excluded_at_entry))
    }
}

impl Drop for Entered<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        STATE.with(|s| s.current.set(self.prev));
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
    // SAFETY: a non-null pointer in `current` was stored by `enter` from a `&'a ScopeShared`, and the `Entered<'a>`
    // guard that put it there is still alive further up this thread's stack: guards are only created and dropped
    // in strictly nested order inside blockcop (never leaked), and each restores the previous pointer on drop. So
    // the scope outlives this call, and the reference handed to `f` cannot escape it.
    let scope = unsafe { restore.0.as_ref() };
    f(scope)
}
