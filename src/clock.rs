//! The poll clock: raw TSC reads through `quanta` (about 10 ns here, against about 24 ns for `Instant::now`).
//! The hot path compares raw tick differences against thresholds converted to ticks once; ticks become
//! nanoseconds only when a duration is recorded.

use std::sync::OnceLock;

static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

/// The process's clock, calibrated on first use (keep it out of hooks: [`Scope::new`](crate::Scope::new) calls
/// this first).
#[inline]
pub(crate) fn clock() -> &'static quanta::Clock {
    CLOCK.get_or_init(quanta::Clock::new)
}

/// A raw timestamp; only differences of two are meaningful.
#[inline(always)]
pub(crate) fn now() -> u64 {
    clock().raw()
}

/// The fastest way to read the same raw ticks as [`now`]: an inlined `rdtsc` when quanta counts TSC ticks,
/// otherwise quanta's own read. Saves a call and a match per read on the poll path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticks {
    tsc: bool,
    clock: &'static quanta::Clock,
}

impl Ticks {
    pub(crate) fn get() -> Ticks {
        static TSC: OnceLock<bool> = OnceLock::new();
        let clock = clock();
        let tsc = *TSC.get_or_init(|| {
            // quanta counts TSC ticks when its raw reading and the TSC's agree; in its fallback mode (a monotonic
            // clock in nanoseconds) they differ by the TSC's frequency ratio, billions of ticks after boot.
            (0..3).all(|_| {
                let a = clock.raw();
                let b = crate::intercept::rdtsc().unwrap_or(0);
                let c = clock.raw();
                a <= b && b <= c && c - a < 100_000
            })
        });
        Ticks { tsc, clock }
    }

    #[inline(always)]
    pub(crate) fn now(self) -> u64 {
        if self.tsc
            && let Some(t) = crate::intercept::rdtsc()
        {
            return t;
        }
        self.clock.raw()
    }

    /// Nanoseconds between two readings.
    pub(crate) fn delta_ns(self, start: u64, end: u64) -> u64 {
        self.clock.delta_as_nanos(start, end)
    }
}

/// Nanoseconds between two raw timestamps.
#[inline]
pub(crate) fn delta_ns(start: u64, end: u64) -> u64 {
    clock().delta_as_nanos(start, end)
}

/// The number of raw ticks in `ns` nanoseconds (rounded down, at least 1).
pub(crate) fn ns_to_ticks(ns: u64) -> u64 {
    const PROBE: u64 = 1 << 40;
    let probe_ns = u128::from(clock().delta_as_nanos(0, PROBE).max(1));
    u64::try_from(u128::from(ns) * u128::from(PROBE) / probe_ns).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_trip_to_nanoseconds() {
        let ticks = ns_to_ticks(10_000_000);
        let ns = delta_ns(1_000, 1_000 + ticks);
        assert!((9_990_000..=10_010_000).contains(&ns), "{ns}");
    }
}
