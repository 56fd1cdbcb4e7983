//! Stuck polls: reporting a poll that is still running after the stuck threshold, symbolizing it off the
//! watchdog, and the process's list of them.

use super::*;
use crate::recent::Recent;

/// Reports a poll that is still running after the stuck threshold: a `tracing` error and a run-file record. Its
/// stack is the one the blocking call it is in published (`in_call`), else a sample the signal handler took.
pub(super) fn report_stuck(slot: &Slot, generation: u64, elapsed: Duration, mark: Stuck, in_call: bool) {
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
pub(super) const RAW_REPORT_AFTER: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JobState {
    /// The symbolizer is working on it.
    Symbolizing,
    /// The symbolizer published the whole report.
    Done,
    /// The watchdog published it without its call site; the symbolizer completes it.
    RawPublished,
}

pub(super) struct StuckJob {
    pub(super) state: Mutex<JobState>,
    pub(super) done: std::sync::Condvar,
}

pub(super) type SymbolizerJob = Box<dyn FnOnce() + Send>;

/// The thread that symbolizes stuck polls' stacks (`blockcop-symbolizer`), started on first use.
pub(super) fn symbolizer() -> Option<&'static Mutex<std::sync::mpsc::Sender<SymbolizerJob>>> {
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
pub(super) fn locate(job: &StuckJob, raw: crate::Violation, attribution: &Attribution, samples: &[RawStack]) {
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
pub(super) enum Published {
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
pub(super) fn publish(violation: crate::Violation, attribution: &Attribution, how: Published) {
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
    let id = list.list[0].stuck.as_ref().map(|s| s.id);
    if how == Published::Located {
        // The located report replaces the raw one published before it.
        STUCK.with(|reported| {
            if let Some(i) = reported.iter().position(|v| v.stuck.as_ref().map(|s| s.id) == id) {
                reported.remove(i);
            }
        });
    }
    STUCK.extend(list.list.into_iter());
}

pub(super) static STUCK: Recent<crate::Violation> = Recent::new(256);

/// The stuck polls reported so far in this process (the latest 256), with their stacks.
pub fn stuck_polls() -> Vec<crate::Violation> {
    STUCK.to_vec()
}
