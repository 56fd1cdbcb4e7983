//! The poll clock: raw TSC reads through `quanta` (about 10 ns here, against about 24 ns for `Instant::now`),
//! converted to nanoseconds only when a duration is needed.

use std::sync::OnceLock;

static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

#[inline(always)]
fn clock() -> &'static quanta::Clock {
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Calibrates the clock now, so that the first poll or hook does not pay for it.
pub(crate) fn init() {
    let _ = clock();
}

/// A raw timestamp; only differences of two are meaningful.
#[inline(always)]
pub(crate) fn now() -> u64 {
    clock().raw()
}

/// Nanoseconds between two raw timestamps.
#[inline(always)]
pub(crate) fn delta_ns(start: u64, end: u64) -> u64 {
    clock().delta_as_nanos(start, end)
}
