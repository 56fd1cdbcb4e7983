//! The watchdog and the stack sampler: a stuck poll is reported while it is still stuck, with its stack; sampling
//! signals do not disturb busy, sleeping, allocating or unwinding threads.

#[path = "../support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blockcop::{Config, Scope};

const STUCK: Duration = Duration::from_millis(300);

/// The two tests sample the same process-wide slots: they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn config() -> Config {
    Config::builder().enabled(true).stuck_poll_threshold(STUCK).build()
}

/// The stuck-poll report of the poll on thread `name`, waiting for it up to `limit`: the report with its call site
/// where stacks are sampled (one published before its stack was symbolized is replaced by it).
fn stuck_report_of(name: &str, limit: Duration) -> blockcop::Violation {
    let started = Instant::now();
    loop {
        let found = blockcop::stuck_polls()
            .into_iter()
            .find(|v| v.thread_name.as_deref() == Some(name) && (!v.stack.is_empty() || !blockcop::sampling_active()));
        if let Some(v) = found {
            return v;
        }
        assert!(started.elapsed() < limit, "no stuck_poll report for thread {name}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn deadlocked_poll_is_reported_while_stuck() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !blockcop::sampling_active() && !cfg!(target_os = "linux") {
        return;
    }
    let lock = Arc::new(Mutex::new(0u32));
    let guard_holder = lock.clone();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _g = guard_holder.lock().expect("lock");
        held_tx.send(()).expect("held");
        let _ = release_rx.recv();
    });
    held_rx.recv().expect("held");
    let scope = Scope::new(&config());
    let stuck_scope = scope.clone();
    let line = line!() + 4;
    let stuck = std::thread::Builder::new()
        .name("deadlocked-poll".into())
        .spawn(move || {
            stuck_scope.in_scope(|| *lock.lock().expect("lock"));
        })
        .expect("spawn");
    // Wait (generously) for the report; the poll is still stuck while we look.
    let report = stuck_report_of("deadlocked-poll", STUCK + Duration::from_secs(5));
    assert!(!stuck.is_finished(), "reported while still stuck");
    assert_eq!((report.event, report.level), ("stuck_poll", blockcop::Level::High));
    // The watchdog looks every 5 ms: the report comes within the threshold plus 100 ms.
    assert!(report.duration >= STUCK && report.duration < STUCK + Duration::from_millis(100), "{report}");
    assert!(report.detail.contains("blocked in syscall 202 (futex)"), "{report}");
    if blockcop::sampling_active() {
        let site = report.call_site.location().unwrap_or_else(|| panic!("no call site: {report}"));
        assert_eq!((site.file.as_str(), site.line), ("integration/tests/watchdog/main.rs", line), "{report}");
        // The report names the scope the poll is stuck in, and its run-file record carries the scope's test.
        assert_eq!(report.scope_id, scope.id(), "{report}");
        assert!(blockcop::report::run::flush(Duration::from_secs(5)));
        let file = blockcop::report::run::current_run_file().expect("a run file").to_path_buf();
        let run = blockcop::report::run::read_run_files(&[file]).expect("read");
        let record = run
            .records
            .iter()
            .find(|r| {
                r.scope_id == scope.id()
                    && matches!(&r.body, blockcop::report::run::RecordBody::Violation(v) if v.event == "stuck_poll")
            })
            .expect("the stuck poll's run-file record");
        assert_eq!(record.test.as_deref(), Some("deadlocked_poll_is_reported_while_stuck"));
    }
    release_tx.send(()).expect("release");
    holder.join().expect("holder");
    stuck.join().expect("stuck thread");
    // Once it returns, the wait is recorded like any lock wait.
    let v = scope.take_violations();
    assert!(v.iter().any(|x| x.event == "futex" && x.level == blockcop::Level::High), "{v:?}");
}

#[test]
fn a_sleep_stuck_for_seconds_is_one_record_completed_with_its_final_duration() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    integration::skip_unless_interposing!();
    let scope = Scope::new(&config());
    let sleeping = scope.clone();
    let line = line!() + 4;
    let thread = std::thread::Builder::new()
        .name("sleeping-poll".into())
        .spawn(move || {
            sleeping.in_scope(|| std::thread::sleep(Duration::from_secs(3)));
        })
        .expect("spawn");
    let report = stuck_report_of("sleeping-poll", Duration::from_secs(20));
    // Reported while stuck, at the sleep's line, from the stack the call published (no signal interrupted it).
    let mark = report.stuck.clone().expect("a stuck mark");
    assert!(!mark.returned, "{report}");
    assert_eq!(mark.syscall(), Some("clock_nanosleep"), "{report}");
    let site = report.call_site.location().unwrap_or_else(|| panic!("no call site: {report}"));
    assert_eq!((site.file.as_str(), site.line), ("integration/tests/watchdog/main.rs", line), "{report}");
    assert_eq!(report.scope_id, scope.id(), "{report}");
    let text = blockcop::report::TextRenderer::new(blockcop::report::Style::Plain).render(&report, None);
    assert!(text.starts_with("error[blocking/stuck_poll]: a poll has not returned for "), "{text}");
    assert!(text.contains("the thread is blocked in syscall 230 (clock_nanosleep)"), "{text}");
    assert!(text.contains("help: use `tokio::time::sleep(..).await`"), "{text}");
    thread.join().expect("sleeping thread");
    // One poll, one record: the sleep, whole, completing the report.
    let v = scope.take_violations();
    assert_eq!(v.list.len(), 1, "{v:#?}");
    let done = &v.list[0];
    assert_eq!((done.event, done.level, done.count), ("clock_nanosleep", blockcop::Level::High, 1), "{done}");
    assert!(done.duration >= Duration::from_millis(2900), "{done}");
    assert_eq!(done.call_site, report.call_site);
    let completed = done.stuck.clone().expect("the completion carries the mark");
    assert_eq!((completed.id, completed.returned), (mark.id, true));
    let text = blockcop::report::TextRenderer::new(blockcop::report::Style::Plain).render(done, None);
    assert!(text.starts_with("error[blocking/stuck_poll]: a poll did not return for 3"), "{text}");
    // In the run file there are the report (first without its call site when symbolizing took long, then with it)
    // and its completion; the report shows one finding.
    assert!(blockcop::report::run::flush(Duration::from_secs(5)));
    let file = blockcop::report::run::current_run_file().expect("a run file").to_path_buf();
    let run = blockcop::report::run::read_run_files(&[file]).expect("read");
    let mine: Vec<_> = run.records.iter().filter(|r| r.scope_id == scope.id()).cloned().collect();
    let stuck_ids: Vec<(u64, bool)> = mine
        .iter()
        .filter_map(|r| match &r.body {
            blockcop::report::run::RecordBody::Violation(v) => v.stuck.as_ref().map(|s| (s.id, s.returned)),
            _ => None,
        })
        .collect();
    assert!(mine.len() == 2 || mine.len() == 3, "{mine:#?}");
    assert_eq!(stuck_ids.len(), mine.len(), "{mine:#?}");
    assert!(stuck_ids.iter().all(|(id, _)| *id == mark.id), "{stuck_ids:?}");
    assert_eq!(stuck_ids.iter().filter(|(_, returned)| *returned).count(), 1, "{stuck_ids:?}");
    let summary = blockcop::report::Summary::from_records(&mine);
    assert_eq!(summary.groups.len(), 1, "{summary:#?}");
    let group = &summary.groups[0];
    assert_eq!((group.occurrences, group.example.event.as_str()), (1, "clock_nanosleep"), "{group:#?}");
    assert!(group.worst_duration >= Duration::from_millis(2900), "{group:#?}");
}

#[test]
fn twenty_thousand_samples_across_busy_sleeping_allocating_and_unwinding_threads() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !blockcop::sampling_active() && !cfg!(target_os = "linux") {
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let progress: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let config = Config::builder().enabled(true).max_violations_per_scope(16).build();
    let workers: Vec<_> = (0..4)
        .map(|kind| {
            let (stop, progress, config) = (stop.clone(), progress.clone(), config.clone());
            std::thread::spawn(move || {
                let scope = Scope::new(&config);
                scope.in_scope(|| {
                    while !stop.load(Ordering::Relaxed) {
                        match kind {
                            0 => {
                                let x = (0..1000u64).fold(0u64, |a, i| a.wrapping_mul(31).wrapping_add(i));
                                std::hint::black_box(x);
                            }
                            1 => std::thread::sleep(Duration::from_micros(200)),
                            2 => {
                                let v: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 1024]).collect();
                                std::hint::black_box(v);
                            }
                            _ => {
                                let r = std::panic::catch_unwind(|| panic!("unwinding on purpose"));
                                assert!(r.is_err());
                            }
                        }
                        progress[kind].fetch_add(1, Ordering::Relaxed);
                    }
                });
                scope.take_violations()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let taken = blockcop::test_hooks::stress_sample(20_000, Duration::from_secs(120));
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = workers.into_iter().map(|w| w.join().expect("no worker crashed")).collect();
    std::panic::set_hook(default_hook);
    if blockcop::sampling_active() {
        assert!(taken >= 20_000, "only {taken} samples");
    }
    for (kind, p) in progress.iter().enumerate() {
        assert!(p.load(Ordering::Relaxed) > 0, "worker {kind} made no progress");
    }
    // The sleeping thread's sleeps completed (interrupted sleeps restart), and were recorded as sleeps.
    assert!(results[1].iter().any(|v| v.event == "clock_nanosleep"));
}

/// A stuck poll's record is in the run file soon after the watchdog detects it, even in a process that has just
/// started, whose debug info is still being loaded (symbolizing the stack can take a second or more then): the
/// report goes out without its call site and is completed when the site is known.
#[test]
fn a_stuck_poll_is_in_the_run_file_soon_after_it_is_detected() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("dir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stuck-poll"))
        .arg("30")
        .env("RUST_TEST_BLOCKCOP", "1")
        .env("BLOCKCOP_STUCK_MS", STUCK.as_millis().to_string())
        .env("BLOCKCOP_REPORT_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    assert_eq!(line, "polling\n");
    let polling = Instant::now();
    let found = loop {
        let run = blockcop::report::run::read_run_files(&[dir.path().to_path_buf()]).expect("read");
        let stuck = run.records.into_iter().find_map(|r| match r.body {
            blockcop::report::run::RecordBody::Violation(v) if v.stuck.is_some() => Some(v),
            _ => None,
        });
        if let Some(v) = stuck {
            break (polling.elapsed(), v);
        }
        assert!(polling.elapsed() < Duration::from_secs(25), "no stuck_poll record after 25 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    let (after, record) = found;
    let id = record.stuck.as_ref().map(|s| s.id);
    // Detection is due at the threshold; the record follows within 50 ms of it. A loaded machine adds its delays,
    // but not the second or more that loading debug info takes.
    assert!(after < STUCK + Duration::from_millis(600), "the record took {after:?} (threshold {STUCK:?})");
    // Then the record with the call site follows, with the same id; the report counts one stuck poll, at the line.
    let line = support::line_containing("integration/src/bin/stuck-poll.rs", "std::thread::sleep");
    let located = |v: &blockcop::report::run::ViolationRecord| {
        v.stuck.as_ref().map(|s| s.id) == id
            && v.call_site.location().is_some_and(|l| l.file == "integration/src/bin/stuck-poll.rs" && l.line == line)
    };
    loop {
        let run = blockcop::report::run::read_run_files(&[dir.path().to_path_buf()]).expect("read");
        if run.records.iter().any(|r| matches!(&r.body, blockcop::report::run::RecordBody::Violation(v) if located(v)))
        {
            break;
        }
        assert!(polling.elapsed() < Duration::from_secs(25), "no located stuck_poll record after 25 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let summary =
        blockcop::report::Summary::read(&[dir.path().to_path_buf()], blockcop::report::GroupBy::Api).expect("read");
    let groups: Vec<String> = summary.groups.iter().map(|g| format!("{} {}", g.call_site, g.event)).collect();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert!(groups[0].starts_with(&format!("integration/src/bin/stuck-poll.rs:{line}:")), "{groups:?}");
    assert!(groups[0].ends_with(" stuck_poll"), "{groups:?}");
}
