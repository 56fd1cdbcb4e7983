//! The watchdog thread: looks at the slots, samples slow polls, reports stuck ones and runs the drains.

use super::*;

/// The watchdog found nothing to watch and sleeps until a poll begins (or 100 ms pass, to drain). Every poll reads
/// it: it has its 128-byte line pair to itself, so that no neighbouring static written elsewhere shares it.
pub(super) static WATCHDOG_IDLE: Padded<AtomicBool> = Padded(AtomicBool::new(false));

pub(super) static WATCHDOG_THREAD: OnceLock<std::thread::Thread> = OnceLock::new();

#[cold]
#[inline(never)]
pub(super) fn wake_watchdog() {
    if WATCHDOG_IDLE.swap(false, Ordering::AcqRel)
        && let Some(t) = WATCHDOG_THREAD.get()
    {
        t.unpark();
    }
}

pub(super) fn watchdog(sampling: bool) {
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
pub(super) fn collect(slot: &Slot, generation: u64) -> PollContext {
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
