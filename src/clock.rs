//! The poll clock: raw TSC reads through `quanta` (about 10 ns here, against about 24 ns for `Instant::now`).
//! The hot path compares raw tick differences against thresholds converted to ticks once; ticks become
//! nanoseconds only when a duration is recorded.
//!
//! A poll reads the TSC once, when it begins. When it ends, the kernel's coarse clock (about 2.5 ns) tells whether
//! it can have run for the slow-poll threshold; only then is the TSC read again for the exact duration. A poll
//! the coarse clock shows shorter than the threshold less two of its ticks cannot be slow: the coarse clock lags
//! real time by less than one tick when the kernel's ticks are on time, so a difference of two readings is within
//! one tick of the real one, and the second tick covers a tick handled up to one period late. The coarse reading
//! a poll starts from is not read at its beginning: it is the thread's latest, taken when its previous poll
//! ended. An earlier reading only makes the difference larger (a poll after a long wait reads the TSC twice),
//! never hides a slow poll.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

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
                let b = crate::sys::clock::rdtsc().unwrap_or(0);
                let c = clock.raw();
                a <= b && b <= c && c - a < 100_000
            })
        });
        Ticks { tsc, clock }
    }

    #[inline(always)]
    pub(crate) fn now(self) -> u64 {
        if self.tsc
            && let Some(t) = crate::sys::clock::rdtsc()
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

/// When a poll began: the raw tick, and a coarse-clock reading at or before it (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    pub(crate) ticks: u64,
    pub(crate) coarse: u64,
}

/// The coarse clock in nanoseconds; 0 where there is none (then every poll's end reads the TSC).
#[inline(always)]
pub(crate) fn coarse() -> u64 {
    crate::sys::clock::coarse_ns().unwrap_or(0)
}

/// For a slow-poll threshold of `threshold_ns`: the least coarse-clock difference between a poll's beginning and
/// end at which the poll can have run that long, its threshold less two coarse ticks. 0 (always read the TSC) when
/// there is no coarse clock or its ticks are too long for the threshold.
pub(crate) fn coarse_slack_ns(threshold_ns: u64) -> u64 {
    static RESOLUTION: OnceLock<Option<u64>> = OnceLock::new();
    match *RESOLUTION.get_or_init(crate::sys::clock::init_coarse_clock) {
        // A tick longer than 50 ms is not a kernel timer tick; do not trust it.
        Some(res) if res <= 50_000_000 => threshold_ns.saturating_sub(res.saturating_mul(2)),
        _ => 0,
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

/// A recorded duration in whole microseconds, as run files, headers and reports write it (saturating at
/// `u64::MAX`).
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds since the Unix epoch (0 for a time before it), as run files write timestamps.
pub(crate) fn micros_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, micros)
}

/// `52.1ms`, `830µs`, `1.20s`.
pub(crate) fn format_duration(d: std::time::Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1e6 {
        format!("{:.1}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1e6)
    }
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

    #[test]
    fn coarse_slack_leaves_two_ticks_of_margin() {
        match crate::sys::clock::init_coarse_clock() {
            Some(res) if res <= 50_000_000 => {
                assert_eq!(coarse_slack_ns(10_000_000 + 2 * res), 10_000_000);
                // A threshold within two ticks: every poll's end reads the TSC.
                assert_eq!(coarse_slack_ns(2 * res), 0);
                assert_eq!(coarse_slack_ns(res), 0);
            }
            _ => assert_eq!(coarse_slack_ns(10_000_000), 0),
        }
    }

    #[test]
    fn coarse_clock_keeps_up_with_the_precise_one() {
        let Some(res) = crate::sys::clock::init_coarse_clock() else { return };
        let (c0, t0) = (coarse(), now());
        std::thread::sleep(std::time::Duration::from_millis(30));
        let (c1, t1) = (coarse(), now());
        let (coarse_ns, precise_ns) = (c1 - c0, delta_ns(t0, t1));
        // Within the margin the slow-poll check relies on: two coarse ticks.
        assert!(coarse_ns + 2 * res >= precise_ns, "coarse {coarse_ns} ns, precise {precise_ns} ns, tick {res} ns");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(std::time::Duration::from_micros(830)), "830µs");
        assert_eq!(format_duration(std::time::Duration::from_micros(52_140)), "52.1ms");
        assert_eq!(format_duration(std::time::Duration::from_millis(1_200)), "1.20s");
    }
}
