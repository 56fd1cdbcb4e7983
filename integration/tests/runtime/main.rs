//! Whole-runtime coverage: tokio's task hooks (with `--cfg tokio_unstable`) make every task poll a scope; tasks
//! spawned inside a request inherit it; test bodies run as instrumented tasks. CI runs this suite with and without
//! `--cfg tokio_unstable`.

#[path = "../support/mod.rs"]
mod support;

use std::sync::OnceLock;
use std::time::Duration;

use blockcop::Config;

/// This binary's process-wide configuration: enabled, whatever the environment says.
fn enable_globally() -> &'static Config {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = Config::builder().enabled(true).build().set_global();
    });
    Config::global()
}

#[test]
fn test_body_that_blocks_fails_with_the_report() {
    integration::skip_unless_interposing!();
    assert!(enable_globally().is_enabled());
    let line = line!() + 2;
    let outcome = std::panic::catch_unwind(|| {
        blockcop::test::run(async { std::thread::sleep(Duration::from_millis(30)) });
    });
    let message = outcome.expect_err("must fail").downcast::<String>().map(|s| *s).unwrap_or_default();
    assert!(message.contains("blocked a tokio worker: severity 50 (high) reaches the fail severity 10"), "{message}");
    assert!(message.contains("error[blocking/sleep]"), "{message}");
    assert!(message.contains(&format!("--> integration/tests/runtime/main.rs:{line}:")), "{message}");
}

#[test]
fn clean_test_body_passes_and_returns_its_value() {
    enable_globally();
    let n = blockcop::test::run(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        tokio::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).await.map(|t| t.len())
    });
    assert!(n.expect("read") > 0);
}

#[tokio::test]
async fn check_wraps_a_tokio_test_body() {
    integration::skip_unless_interposing!();
    enable_globally();
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let len = blockcop::test::check(async move { tokio::fs::read(manifest).await }).await.expect("read");
    assert!(!len.is_empty());
    // One `std::fs::read` (medium) reaches the default fail severity (medium).
    let outcome = tokio::spawn(blockcop::test::check(async move { std::fs::read(manifest) })).await;
    let message = outcome.expect_err("a medium body fails").into_panic();
    let message = message.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("(medium) reaches the fail severity 10"), "{message}");
    assert!(message.contains("warning[blocking/file]: `open64`"), "{message}");
}

/// Stable tokio (no `tokio_unstable`): `install` records the blocking calls made inside tasks polled on worker
/// threads, with the task id and the call site, on both runtime flavors; not those of `spawn_blocking` closures,
/// `block_in_place` closures, nor of `spawn_blocking` closures run later by a thread that gave its worker core away
/// in `block_in_place`; not the runtime's own code between tasks, nor a `block_on` body.
#[cfg(not(tokio_unstable))]
#[test]
fn without_tokio_unstable_install_records_blocking_calls_inside_tasks() {
    integration::skip_unless_interposing!();
    assert!(!blockcop::runtime::hooks_available());
    let tiny = Duration::from_micros(1);
    for flavor in [support::Flavor::CurrentThread, support::Flavor::MultiThread] {
        let mut b = match flavor {
            support::Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            support::Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        };
        b.worker_threads(2).enable_all();
        let config = Config::builder().enabled(true).build();
        blockcop::runtime::Hooks::new(&config).install(&mut b).expect("stable tokio's thread hooks");
        let rt = b.build().expect("runtime");
        blockcop::runtime::drain();
        let seen = blockcop::runtime::recent().len();
        // Worker threads are covered from their first park on: at start-up, once they find nothing to do.
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        // Five tasks, one after the other, so that a worker a loaded machine started late (it has not parked yet)
        // cannot leave the check with nothing to look at.
        let line = line!() + 4;
        let (sleepers, ids) = rt.block_on(async move {
            let mut sleepers = vec![];
            for _ in 0..5 {
                let task = tokio::spawn(async move { std::thread::sleep(tiny) }); // blocks: clock_nanosleep
                sleepers.push(task.id());
                task.await.expect("task");
            }
            std::thread::sleep(tiny); // the block_on body is not a task
            let mut ids = vec![];
            for _ in 0..20 {
                tokio::task::spawn_blocking(move || std::thread::sleep(tiny)).await.expect("spawn_blocking");
                if flavor == support::Flavor::MultiThread {
                    let t = tokio::spawn(async move { tokio::task::block_in_place(|| std::thread::sleep(tiny)) });
                    ids.push(t.id());
                    t.await.expect("block_in_place");
                }
            }
            (sleepers, ids)
        });
        drop(rt);
        blockcop::runtime::drain();
        let sleeps: Vec<_> = blockcop::runtime::recent()
            .into_iter()
            .skip(seen)
            .filter(|v| v.call_site.location().is_some_and(|l| l.file == "integration/tests/runtime/main.rs"))
            .collect();
        let numeric = |id: &tokio::task::Id| Some(id.to_string().parse::<u64>().expect("numeric id"));
        let calls: u32 = sleeps.iter().map(|v| v.count).sum();
        assert!((1..=5).contains(&calls), "{flavor:?}: {sleeps:#?}");
        for v in &sleeps {
            assert_eq!((v.event, v.level), ("clock_nanosleep", blockcop::Level::High), "{v}");
            assert_eq!(v.call_site.location().map(|l| l.line), Some(line), "{v}");
            let task = v.task.as_ref().and_then(|t| t.id);
            assert!(sleepers.iter().any(|id| numeric(id) == task), "{v}");
            assert!(!ids.iter().any(|id| numeric(id) == task), "{v}");
        }
    }
}

#[cfg(tokio_unstable)]
mod hooks {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::routing::get;
    use blockcop::testing::TestServer;

    use blockcop::Level;

    use super::*;

    const FILE: &str = "integration/tests/runtime/main.rs";

    fn runtime_with_hooks(flavor: support::Flavor) -> tokio::runtime::Runtime {
        let mut b = match flavor {
            support::Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            support::Flavor::MultiThread => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(2);
                b
            }
        };
        b.enable_all();
        blockcop::runtime::Hooks::new(&Config::builder().enabled(true).build()).install(&mut b).expect("hooks");
        b.build().expect("runtime")
    }

    /// This process's run file, read once everything handed to its writer is written.
    fn this_process_run_file() -> blockcop::report::run::RunFiles {
        assert!(blockcop::report::run::flush(Duration::from_secs(5)));
        let file = blockcop::report::run::current_run_file().expect("a run file").to_path_buf();
        blockcop::report::run::read_run_files(&[file]).expect("read")
    }

    /// The drained task violations spawned at `file:line`.
    fn task_violations_spawned_at(line: u32) -> Vec<blockcop::Violation> {
        blockcop::runtime::drain();
        let at = format!("integration/tests/runtime/main.rs:{line}:");
        blockcop::runtime::recent()
            .into_iter()
            .filter(|v| v.task.as_ref().and_then(|t| t.spawned_at.as_deref()).is_some_and(|s| s.contains(&at)))
            .collect()
    }

    #[test]
    fn every_task_poll_is_a_scope_with_task_id_and_spawn_location() {
        integration::skip_unless_interposing!();
        for flavor in [support::Flavor::CurrentThread, support::Flavor::MultiThread] {
            let rt = runtime_with_hooks(flavor);
            let dir = tempfile::tempdir().expect("dir");
            let path = dir.path().join("f");
            std::fs::write(&path, "x").expect("write");
            let spawned = line!() + 2;
            let id = rt.block_on(async move {
                let task = tokio::spawn(async move { std::fs::metadata(&path).map(|m| m.len()) });
                let id = task.id();
                task.await.expect("task").expect("stat");
                id
            });
            drop(rt);
            let found = task_violations_spawned_at(spawned);
            let id: Option<u64> = id.to_string().parse().ok();
            let v = found
                .iter()
                .find(|v| v.event == "statx" && v.task.as_ref().and_then(|t| t.id) == id)
                .unwrap_or_else(|| panic!("{flavor:?}: no statx of task {id:?} in {found:?}"));
            assert_eq!(v.level, Level::Low);
            assert_eq!(v.call_site.location().map(|l| l.line), Some(spawned));
        }
    }

    #[test]
    fn cpu_bound_task_gets_the_loops_line_from_samples() {
        let rt = runtime_with_hooks(support::Flavor::MultiThread);
        let spawned = line!() + 1;
        rt.block_on(async { tokio::spawn(scenarios::hash_inline(Duration::from_millis(300))).await.expect("task") });
        drop(rt);
        let found = task_violations_spawned_at(spawned);
        let v = found.iter().find(|v| v.event == "slow_poll").unwrap_or_else(|| panic!("{found:?}"));
        assert_eq!(v.level, Level::High);
        let site = v.call_site.location().expect("site");
        if blockcop::sampling_active() {
            assert_eq!(
                (site.file.as_str(), site.line),
                (support::SCENARIOS, support::marked_line("fold", "slow_poll"))
            );
        } else {
            assert_eq!(site.line, spawned);
        }
    }

    #[test]
    fn spawned_task_reaches_the_parent_requests_header() {
        integration::skip_unless_interposing!();
        let rt = runtime_with_hooks(support::Flavor::MultiThread);
        let line = support::marked_line_in(FILE, "tokio::spawn(async { std::thread::sleep", "clock_nanosleep");
        rt.block_on(async {
            let app = Router::new().route(
                "/report",
                get(|| async {
                    tokio::spawn(async { std::thread::sleep(Duration::from_millis(30)) }).await.expect("task"); // blocks: clock_nanosleep
                    "done"
                }),
            );
            let server = TestServer::spawn_with(app, Config::builder().enabled(true).build()).await.expect("serve");
            let res = server.client().get("/report").expect_blocking().send().await;
            assert_eq!(res.text(), "done");
            let h = res.expect_violation(Level::High);
            assert_eq!(h.first.event, "clock_nanosleep");
            assert_eq!(h.first.file_line(), Some((FILE, line)));
            // The record carries the task it happened in.
            let record = res.record().expect("record");
            assert!(record.violations.first().and_then(|v| v.task.as_ref()).is_some_and(|t| t.id.is_some()));
        });
    }

    #[test]
    fn work_finishing_after_the_response_lands_in_the_run_file_under_the_request() {
        integration::skip_unless_interposing!();
        let rt = runtime_with_hooks(support::Flavor::MultiThread);
        let dir = tempfile::tempdir().expect("dir");
        let probe = dir.path().join("late.txt");
        std::fs::write(&probe, "x").expect("write");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        rt.block_on(async move {
            let app = Router::new().route(
                "/late",
                get(move || {
                    let (probe, tx) = (probe.clone(), tx.clone());
                    async move {
                        // Not awaited: runs on after the response went out.
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            let _ = std::fs::metadata(&probe);
                            let _ = tx.send(());
                        });
                        "sent"
                    }
                }),
            );
            let server = TestServer::spawn_with(app, Config::builder().enabled(true).build()).await.expect("serve");
            let res = server.client().get("/late").send().await;
            assert_eq!(res.text(), "sent");
            res.assert_clean();
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(5)))
                .await
                .expect("join")
                .expect("late work ran");
            // The task ends, its inherited scope is released, and what it recorded is written.
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        drop(rt);
        let run = this_process_run_file();
        let late = run.records.iter().find(|r| {
            r.request.as_ref().is_some_and(|q| q.path == "/late")
                && matches!(&r.body, blockcop::report::run::RecordBody::Violation(v) if v.event == "statx")
        });
        assert!(late.is_some(), "the late stat is in the run file under GET /late");
    }

    /// A WebSocket session: axum runs it in a task it spawns while the upgrade request is handled, so the session
    /// inherits the request's scope, and what it blocks on reaches the run file under `GET /ws`, long after the
    /// `101 Switching Protocols` response went out.
    #[test]
    fn a_websocket_session_stays_attributed_to_its_upgrade_request() {
        use axum::extract::ws::{Message, WebSocketUpgrade};
        use futures_util::{SinkExt as _, StreamExt as _};
        integration::skip_unless_interposing!();
        let rt = runtime_with_hooks(support::Flavor::MultiThread);
        let dir = tempfile::tempdir().expect("dir");
        let probe = dir.path().join("session.txt");
        std::fs::write(&probe, "x").expect("write");
        let line = line!() + 9;
        rt.block_on(async move {
            let app = Router::new().route(
                "/ws",
                get(move |ws: WebSocketUpgrade| {
                    let probe = probe.clone();
                    async move {
                        ws.on_upgrade(move |mut socket| async move {
                            while let Some(Ok(Message::Text(text))) = socket.recv().await {
                                let len = std::fs::metadata(&probe).map(|m| m.len()).unwrap_or(0); // blocks: statx
                                let _ = socket.send(Message::Text(format!("{text} {len}").into())).await;
                            }
                        })
                    }
                }),
            );
            let server = TestServer::spawn_with(app, Config::builder().enabled(true).build()).await.expect("serve");
            let url = format!("ws://{}/ws", server.addr());
            let (mut ws, response) = tokio_tungstenite::connect_async(url).await.expect("upgrade");
            assert_eq!(response.status(), 101);
            for i in 0..3 {
                ws.send(tokio_tungstenite::tungstenite::Message::text(i.to_string())).await.expect("send");
                let echo = ws.next().await.expect("an echo").expect("a message");
                assert_eq!(echo.into_text().expect("text").as_str(), format!("{i} 1"));
            }
            ws.close(None).await.expect("close");
            // The session task ends, its inherited scope is released, and what it recorded is written.
            while ws.next().await.is_some() {}
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        drop(rt);
        let run = this_process_run_file();
        let stats: Vec<_> = run
            .records
            .iter()
            .filter_map(|r| match &r.body {
                blockcop::report::run::RecordBody::Violation(v)
                    if v.event == "statx" && v.call_site.location().is_some_and(|l| l.line == line) =>
                {
                    Some((r, v))
                }
                _ => None,
            })
            .collect();
        assert_eq!(stats.iter().map(|(_, v)| v.count).sum::<u32>(), 3, "{stats:#?}");
        for (r, _) in stats {
            let request = r.request.as_ref().expect("under the upgrade request");
            assert_eq!((request.method.as_str(), request.path.as_str()), ("GET", "/ws"));
        }
    }

    #[test]
    fn a_task_polled_inside_another_runtimes_task_leaves_the_outer_poll_in_its_scope() {
        integration::skip_unless_interposing!();
        let outer = runtime_with_hooks(support::Flavor::MultiThread);
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        std::fs::write(&path, "x").expect("write");
        let spawned = line!() + 2;
        outer.block_on(async move {
            tokio::spawn(async move {
                // A second runtime with blockcop's hooks polls its own task on this thread, inside this poll.
                let n = tokio::task::block_in_place(|| {
                    let inner = runtime_with_hooks(support::Flavor::CurrentThread);
                    inner.block_on(async { tokio::spawn(async { 7 }).await })
                });
                assert_eq!(n.expect("inner task"), 7);
                // The outer poll goes on in its scope after the inner one ended.
                std::fs::metadata(&path).map(|m| m.len()) // blocks: statx
            })
            .await
            .expect("task")
            .expect("stat");
        });
        drop(outer);
        let found = task_violations_spawned_at(spawned);
        let v = found.iter().find(|v| v.event == "statx").unwrap_or_else(|| panic!("no statx in {found:?}"));
        assert_eq!(
            v.call_site.location().map(|l| l.line),
            Some(support::marked_line_in(FILE, "std::fs::metadata(&path).map(|m| m.len()) //", "statx"))
        );
    }

    #[test]
    fn a_stuck_task_poll_is_reported_with_its_task() {
        let config = Config::builder().enabled(true).stuck_poll_threshold(Duration::from_millis(300)).build();
        // Starts the watchdog, which installs the sampling handler where it can.
        drop(blockcop::Scope::new(&config));
        if !blockcop::sampling_active() {
            return;
        }
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2).enable_all();
        blockcop::runtime::Hooks::new(&config).install(&mut b).expect("hooks");
        let rt = b.build().expect("runtime");
        let lock = Arc::new(std::sync::Mutex::new(()));
        let held = lock.lock().expect("lock");
        let spawned = line!() + 1;
        let task = rt.spawn({
            let lock = lock.clone();
            async move {
                drop(lock.lock().expect("lock"));
            }
        });
        let at = format!("{FILE}:{spawned}:");
        let started = std::time::Instant::now();
        let report = loop {
            let found = blockcop::stuck_polls()
                .into_iter()
                .find(|v| v.task.as_ref().and_then(|t| t.spawned_at.as_deref()).is_some_and(|s| s.contains(&at)));
            if let Some(v) = found {
                break v;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no stuck_poll report for the task");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(!task.is_finished(), "reported while still stuck");
        assert_eq!((report.event, report.level), ("stuck_poll", Level::High));
        assert!(report.task.as_ref().and_then(|t| t.id).is_some(), "{report}");
        drop(held);
        rt.block_on(task).expect("task");
    }

    #[test]
    fn user_hooks_are_chained() {
        let polls = Arc::new(AtomicUsize::new(0));
        let spawns = Arc::new(AtomicUsize::new(0));
        let (p, s) = (polls.clone(), spawns.clone());
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.enable_all();
        blockcop::runtime::Hooks::new(&Config::builder().enabled(true).build())
            .on_before_task_poll(move |_| {
                p.fetch_add(1, Ordering::Relaxed);
            })
            .on_task_spawn(move |_| {
                s.fetch_add(1, Ordering::Relaxed);
            })
            .install(&mut b)
            .expect("hooks");
        let rt = b.build().expect("runtime");
        rt.block_on(async {
            tokio::spawn(async { tokio::task::yield_now().await }).await.expect("task");
        });
        assert_eq!(spawns.load(Ordering::Relaxed), 1);
        assert!(polls.load(Ordering::Relaxed) >= 2, "yield_now polls the task twice");
    }

    #[test]
    fn a_runtime_without_blockcops_hooks_behaves_as_before() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        std::fs::write(&path, "abc").expect("write");
        let spawned = line!() + 1;
        let len = rt.block_on(async move { tokio::spawn(async move { std::fs::read(&path).map(|b| b.len()) }).await });
        assert_eq!(len.expect("task").expect("read"), 3);
        drop(rt);
        assert!(task_violations_spawned_at(spawned).is_empty());
    }
}
