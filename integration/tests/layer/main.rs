//! The tower layer and the test harness, over real loopback HTTP against the notes test app: header presence or
//! absence, level, and that `first`/`worst` name the app's exact `file:line`; the fixed twins stay clean; the
//! failure report is readable. Also a plain tower service on hyper, and a tonic gRPC server.

#[path = "../support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::time::Duration;

use blockcop::testing::{TestError, TestServer};
use blockcop::{BlockCopLayer, Config, HeaderEntry, Level, ViolationsHeader, X_BLOCKING_VIOLATIONS};
use support::marked_line_in;

const HANDLERS: &str = "test-apps/notes/src/handlers.rs";
const STORE: &str = "test-apps/notes/src/store.rs";

/// The notes app (with its upstream) served with `config`; the data directory lives as long as the server.
async fn notes_server(config: Config) -> (TestServer, tempfile::TempDir) {
    let upstream = notes::upstream::spawn().await.expect("upstream");
    let data = tempfile::tempdir().expect("data dir");
    let app = notes::app(notes::AppConfig::new(data.path(), format!("localhost:{}", upstream.port()))).expect("app");
    let server = TestServer::spawn_with(app, config).await.expect("serve");
    // A note to read, created through the fixed endpoint.
    let res = server
        .client()
        .post("/v2/notes")
        .header("content-type", "application/json")
        .body(r#"{"title":"t","body":"b"}"#)
        .send()
        .await;
    assert_eq!(res.status(), 200);
    res.assert_clean();
    (server, data)
}

fn on() -> Config {
    Config::builder().enabled(true).build()
}

/// Asserts `entry` is `event` at the line of `file` marked `// blocks: <marker>` containing `needle`.
#[track_caller]
fn assert_entry(entry: &HeaderEntry, event: &str, file: &str, needle: &str, marker: &str) {
    let line = marked_line_in(file, needle, marker);
    assert_eq!(entry.event, event, "{entry:?}");
    assert_eq!(entry.file_line(), Some((file, line)), "{entry:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_under_std_mutex_is_medium_at_the_write() {
    integration::skip_unless_interposing!();
    let (server, _data) = notes_server(on()).await;
    let res = server.client().post("/v1/notes").json(&serde_json_body("groceries")).expect_blocking().send().await;
    assert_eq!(res.status(), 200);
    let h = res.expect_violation(Level::Medium);
    assert_entry(&h.first, "write", HANDLERS, "writeln!(audit", "write");
    assert_entry(&h.worst, "write", HANDLERS, "writeln!(audit", "write");
    let record = res.record().expect("in-process record");
    let sync = record.violations.iter().find(|v| v.event == "fdatasync").expect("fdatasync recorded");
    let line = marked_line_in(HANDLERS, "sync_data", "fdatasync");
    assert_eq!(sync.call_site.location().map(|l| (l.file.as_str(), l.line)), Some((HANDLERS, line)));
    assert_eq!(h.count, record.violations.weighted().map(|v| u64::from(v.count)).sum::<u64>());
}

fn serde_json_body(title: &str) -> std::collections::HashMap<&'static str, String> {
    [("title", title.to_owned()), ("body", "milk, eggs".to_owned())].into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_database_driver_is_high_and_points_into_the_apps_store() {
    integration::skip_unless_interposing!();
    let (server, _data) = notes_server(on()).await;
    // A warm database on a persistent connection: SQLite makes only cheap `stat64`/`pread64` calls, but they go
    // through rusqlite, a synchronous database client, so each weighs heavy and the default harness fails it.
    let err = server.client().get("/v1/notes/1").try_send().await.expect_err("a sync DB call fails by default");
    assert!(matches!(err, TestError::Blocking(ref f) if f.header.level == Level::High), "{err}");
    let res = server.client().get("/v1/notes/1").expect_blocking().send().await;
    assert_eq!(res.status(), 200);
    let h = res.expect_violation(Level::High);
    // SQLite (C code inside a dependency) checks for a hot journal, then reads the file header: the call site is
    // the app's own line that called into rusqlite.
    assert_entry(&h.first, "stat64", STORE, "rows.next()", "stat64");
    assert_eq!(
        res.record().and_then(|r| r.violations.first()?.blocking_api_crate.clone()).as_deref(),
        Some("rusqlite")
    );
    // Every call weighs heavy: the worst is the earliest among equals.
    assert_eq!(h.worst, h.first);
    let record = res.record().expect("record");
    assert!(record.violations.iter().all(|v| v.blocking_api.as_deref().is_some_and(|a| a.starts_with("rusqlite::"))));
    assert!(record.violations.iter().all(|v| v.weight == blockcop::Weight::Heavy), "{:?}", record.violations);
    // The header's severity is the request's score: the weights of all its calls added up.
    assert_eq!(h.severity, record.violations.severity());
}

/// A team's adoption: a baseline made from the app's run lets the known synchronous database read pass the harness
/// (the header says how many calls the baseline knows and what the rest weigh), while blocking in another handler
/// still fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_passes_known_findings_and_fails_new_ones() {
    integration::skip_unless_interposing!();
    // No slow polls: a loaded machine must not add findings the baseline cannot know.
    let config = || Config::builder().enabled(true).slow_poll_threshold(Duration::from_secs(30));
    let (server, _data) = notes_server(config().build()).await;
    let res = server.client().get("/v1/notes/1").expect_blocking().send().await;
    let record = res.record().expect("in-process record");
    let baseline = blockcop::baseline::Baseline::from_violations(&record.violations);
    let functions: Vec<&str> = baseline.entries().iter().map(|e| e.function.as_str()).collect();
    assert_eq!(functions, ["notes::store::find"], "{baseline:?}");
    drop(server);

    let (server, _data) = notes_server(config().baseline(baseline).build()).await;
    // Fails without the baseline (sync_database_driver_is_high_and_points_into_the_apps_store); passes with it.
    let res = server.client().get("/v1/notes/1").send().await;
    assert_eq!(res.status(), 200);
    let h = res.violations().expect("known findings are still reported");
    assert_eq!(h.level, Level::High);
    let known = h.known.expect("the header counts the known calls");
    assert_eq!((known.calls, known.new_severity, h.new_severity()), (h.count, 0, 0), "{h}");
    // The audit log's write in another handler is new: it fails, and the report is about it.
    let err = server
        .client()
        .post("/v1/notes")
        .json(&serde_json_body("groceries"))
        .try_send()
        .await
        .expect_err("new blocking fails");
    let TestError::Blocking(failure) = &err else { panic!("{err}") };
    assert!(failure.header.new_severity() >= 10, "{err}");
    assert!(
        err.to_string().contains(&format!("{HANDLERS}:{}", marked_line_in(HANDLERS, "writeln!(audit", "write"))),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_read_with_std_fs_is_medium() {
    integration::skip_unless_interposing!();
    let (server, _data) = notes_server(on()).await;
    let res = server.client().get("/v1/notes/1/page").expect_blocking().send().await;
    assert_eq!(res.status(), 200);
    assert!(res.text().contains("<h1>t</h1>"));
    let h = res.expect_violation(Level::Medium);
    assert_entry(&h.first, "open64", HANDLERS, "read_to_string", "open64");
    assert_entry(&h.worst, "open64", HANDLERS, "read_to_string", "open64");
    // `assert_clean` on it fails with the rendered violations, stack included.
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| res.assert_clean())).expect_err("not clean");
    let message = panic.downcast::<String>().map(|s| *s).unwrap_or_default();
    let line = marked_line_in(HANDLERS, "read_to_string", "open64");
    assert!(message.starts_with("expected no blocking violations, got x-blocking-violations: count="), "{message}");
    assert!(message.contains("warning[blocking/file]: `open64` blocked a tokio worker"), "{message}");
    assert!(message.contains(&format!("--> {HANDLERS}:{line}:")), "{message}");
    assert!(message.contains("stack:"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_and_sleep_backoff_are_high() {
    integration::skip_unless_interposing!();
    let (server, _data) = notes_server(on()).await;
    let res = server.client().post("/v1/notes/1/publish").expect_blocking().send().await;
    assert_eq!(res.status(), 202);
    let h = res.expect_violation(Level::High);
    assert_entry(&h.first, "getaddrinfo", HANDLERS, "to_socket_addrs", "getaddrinfo");
    // Both are heavy; `worst` is the earliest among equals.
    assert_entry(&h.worst, "getaddrinfo", HANDLERS, "to_socket_addrs", "getaddrinfo");
    let record = res.record().expect("record");
    let sleep = record.violations.iter().find(|v| v.event == "clock_nanosleep").expect("sleep recorded");
    let line = marked_line_in(HANDLERS, "std::thread::sleep", "clock_nanosleep");
    assert_eq!(sleep.call_site.location().map(|l| l.line), Some(line));
    assert!(sleep.duration >= Duration::from_millis(50));
    assert_eq!(sleep.level, Level::High);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_password_hashing_is_a_slow_poll() {
    let (server, _data) = notes_server(on()).await;
    let res = server
        .client()
        .post("/v1/register")
        .json(&[("user", "ada"), ("password", "pw")].into_iter().collect::<std::collections::HashMap<_, _>>())
        .expect_blocking()
        .send()
        .await;
    assert_eq!(res.status(), 201);
    let h = res.violations().expect("x-blocking-violations");
    assert!(h.level >= Level::Medium, "{h}");
    // The watchdog's stack samples put the call site on the hashing loop (without sampling: unknown).
    if blockcop::sampling_active() {
        assert_entry(&h.first, "slow_poll", HANDLERS, "Sha256::digest(digest)", "slow_poll");
    } else {
        assert_eq!(h.first, HeaderEntry::new("slow_poll", "unknown"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_twins_and_health_are_clean() {
    let (server, _data) = notes_server(on()).await;
    let client = server.client();
    for (method, path, body, fixed) in notes::ENDPOINTS.iter().filter(|e| e.3) {
        assert!(*fixed);
        let mut req = client.request(method.parse().expect("method"), path);
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(*body);
        }
        // `send` itself fails the test on a high-severity request; clean means no header at all.
        let res = req.send().await;
        assert!(res.status().is_success(), "{method} {path}: {}", res.status());
        res.assert_clean();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_severity_fails_the_request_with_a_readable_report() {
    integration::skip_unless_interposing!();
    let (server, _data) = notes_server(on()).await;
    let err = server.client().post("/v1/notes/1/publish").try_send().await.expect_err("must fail");
    let TestError::Blocking(failure) = err else { panic!("expected a blocking failure, got {err}") };
    assert_eq!(failure.header.level, Level::High);
    let report = failure.to_string();
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\x1b\[[0-9;]*m", "");
    settings.add_filter(r"\d+(\.\d+)?(µs|ms|s)\b", "[duration]");
    settings.add_filter(r"/tmp/\.tmp\w+", "[tmp]");
    settings.add_filter(r"fd \d+", "fd [n]");
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[port]");
    settings.add_filter(r"localhost:\d+", "localhost:[port]");
    settings.add_filter(r"/rustc/\w+/(\S+?):\d+:\d+", "/rustc/[hash]/$1:[line]:[col]");
    settings.add_filter(r"tests/layer/main\.rs:\d+:\d+", "tests/layer/main.rs:[line]:[col]");
    settings.bind(|| insta::assert_snapshot!("publish_failure_report", report));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_panics_with_the_report() {
    integration::skip_unless_interposing!();
    let (server, _data) = notes_server(on()).await;
    let client = server.client();
    let outcome = tokio::spawn(async move { client.post("/v1/notes/1/publish").send().await }).await;
    let panic = outcome.expect_err("send must panic").into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("POST /v1/notes/1/publish blocked a tokio worker: severity 100 (high)"), "{message}");
    assert!(message.contains("error[blocking/dns]"), "{message}");
    assert!(message.contains("= help: use `tokio::net::lookup_host(..).await`"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_severity_is_configurable() {
    integration::skip_unless_interposing!();
    // At the default (10, medium) one `std::fs::read_to_string` per request fails; at 50 (high, Galaxy's line) the
    // same request passes.
    let (server, _data) = notes_server(on()).await;
    let err = server.client().get("/v1/notes/1/page").try_send().await.expect_err("medium fails by default");
    assert!(
        matches!(err, TestError::Blocking(ref f) if f.fail_severity == 10 && f.header.level == Level::Medium),
        "{err}"
    );
    let (lenient, _data2) = notes_server(Config::builder().enabled(true).fail_severity(50).build()).await;
    let res = lenient.client().get("/v1/notes/1/page").send().await;
    res.expect_violation(Level::Medium);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_layer_adds_nothing_and_client_checks_nothing() {
    let (server, _data) = notes_server(Config::default()).await;
    let res = server.client().post("/v1/notes/1/publish").send().await;
    assert_eq!(res.status(), 202);
    assert!(res.headers().get(X_BLOCKING_VIOLATIONS).is_none());
    assert!(res.headers().get(blockcop::X_BLOCKCOP_REQUEST_ID).is_none());
    assert!(res.record().is_none());
    assert!(!BlockCopLayer::new(Config::default()).is_active());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_env_follows_rust_test_blockcop() {
    let enabled = Config::from_env().expect("valid environment").is_enabled();
    assert_eq!(BlockCopLayer::from_env().expect("valid environment").is_active(), enabled);
    let upstream = notes::upstream::spawn().await.expect("upstream");
    let data = tempfile::tempdir().expect("data dir");
    let app = notes::app(notes::AppConfig::new(data.path(), format!("localhost:{}", upstream.port()))).expect("app");
    let server = TestServer::spawn(app).await.expect("serve");
    let res = server.client().get("/v1/notes/999/page").expect_blocking().send().await;
    // The note does not exist, so only the lookup runs (in spawn_blocking): clean either way.
    assert_eq!(res.status(), 500);
    res.assert_clean();
    let res = server.client().get("/health").send().await;
    assert_eq!(res.text(), "ok");
}

#[tokio::test]
async fn current_thread_runtime_works_too() {
    integration::skip_unless_interposing!();
    let (server, _data) = notes_server(on()).await;
    let res = server.client().get("/v1/notes/1/page").expect_blocking().send().await;
    let h = res.expect_violation(Level::Medium);
    assert_entry(&h.first, "open64", HANDLERS, "read_to_string", "open64");
    // The header round-trips through the parser unchanged.
    let raw = res.headers().get(X_BLOCKING_VIOLATIONS).expect("header").to_str().expect("ascii");
    assert_eq!(ViolationsHeader::parse(raw).expect("parses").render(), raw);
}

/// An app that logs every request through `TraceLayer` and `tracing_subscriber::fmt` to stdout, as many services
/// do: the log writes (and any wait for the stdout lock) are console output, weight 0, so no request gets a header
/// and `assert_clean` passes. (current_thread: the subscriber set for this thread is the one the server runs on.)
#[tokio::test]
async fn app_that_logs_every_request_to_stdout_is_clean() {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stdout)
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let app = axum::Router::new()
        .route("/items", axum::routing::get(|| async { axum::Json(vec!["a", "b", "c"]) }))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    // The harness puts BlockCopLayer outside the app, so the TraceLayer logs inside the request's scope.
    let server = TestServer::spawn_with(app, on()).await.expect("serve");
    for _ in 0..20 {
        let res = server.client().get("/items").send().await;
        assert_eq!(res.status(), 200);
        res.assert_clean();
        assert!(res.record().is_none_or(|r| r.violations.severity() == 0));
    }
}

/// On a loaded machine (two busy loops per core beside the server) trivial requests are preempted for milliseconds
/// of wall time while using a fraction of a millisecond of CPU: with a 5 ms threshold, counting wall time flags
/// 130–150 of 2,000 (16 in flight), counting CPU time none here. Up to 5 are tolerated: a shared CI machine's
/// hypervisor can charge a thread CPU time it spent stalled (CI once saw one trivial request of 2,000 at the default
/// 10 ms), which blockcop cannot tell from computing. A handler that really computes for 30 ms of CPU is still
/// reported, at its loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_on_a_loaded_machine_is_not_a_slow_poll_and_a_cpu_loop_is() {
    const TOLERATED: usize = 5;
    let _load = support::BusyLoops::start(2);
    scenarios::rounds_for(Duration::from_millis(30)); // measured once, outside any request
    let app = axum::Router::new()
        .route("/items", axum::routing::get(|| async { axum::Json((0..19).collect::<Vec<u32>>()) }))
        .route(
            "/hash",
            axum::routing::get(|| async { scenarios::hash_inline(Duration::from_millis(30)).await.to_string() }),
        );
    let config = Config::builder().enabled(true).slow_poll_threshold(Duration::from_millis(5)).build();
    let server = TestServer::spawn_with(app, config).await.expect("serve");
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let client = server.client();
        clients.spawn(async move {
            let mut flagged = Vec::new();
            for _ in 0..125 {
                let res = client.get("/items").expect_blocking().send().await;
                assert_eq!(res.status(), 200);
                flagged.extend(res.violations().map(|h| h.to_string()));
            }
            flagged
        });
    }
    let mut flagged = Vec::new();
    while let Some(done) = clients.join_next().await {
        flagged.extend(done.expect("client task"));
    }
    assert!(flagged.len() <= TOLERATED, "{} of 2000 trivial requests flagged: {flagged:#?}", flagged.len());
    let res = server.client().get("/hash").expect_blocking().send().await;
    let h = res.violations().expect("the CPU loop is a slow poll");
    if blockcop::sampling_active() {
        let line = support::marked_line("fold", "slow_poll");
        assert_eq!(
            (h.worst.event.as_str(), h.worst.file_line()),
            ("slow_poll", Some((support::SCENARIOS, line))),
            "{h}"
        );
    } else {
        assert_eq!(h.worst.event, "slow_poll", "{h}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tower_service_on_hyper() {
    integration::skip_unless_interposing!();
    let line = line!() + 2;
    let svc = tower::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
        std::thread::sleep(Duration::from_millis(20));
        Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"hi"))))
    });
    let server = TestServer::spawn_with(svc, on()).await.expect("serve");
    let res = server.client().get("/").expect_blocking().send().await;
    assert_eq!(res.text(), "hi");
    let h = res.expect_violation(Level::High);
    assert_eq!(h.first.event, "clock_nanosleep");
    assert_eq!(h.first.file_line(), Some(("integration/tests/layer/main.rs", line)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_request_is_named_by_its_authority() {
    integration::skip_unless_interposing!();
    use tower::{Layer, ServiceExt};
    let svc = BlockCopLayer::new(on()).layer(tower::service_fn(|_req: http::Request<()>| async {
        std::thread::sleep(Duration::from_millis(1));
        Ok::<_, Infallible>(http::Response::new(()))
    }));
    let req = http::Request::builder().method(http::Method::CONNECT).uri("gateway.test:443").body(()).expect("request");
    let res = svc.oneshot(req).await.expect("response");
    assert!(res.headers().contains_key(X_BLOCKING_VIOLATIONS));
    let id = res.headers()[blockcop::X_BLOCKCOP_REQUEST_ID].to_str().expect("ascii").parse().expect("an id");
    let record = blockcop::layer::request_violations(id).expect("the request's record");
    assert_eq!((record.method.as_str(), record.path.as_str()), ("CONNECT", "gateway.test:443"));
}

/// Serves tonic-health's service (status: serving) behind the gRPC interceptor `auth`, with the layer in front.
async fn grpc_health_server<F>(auth: F) -> std::net::SocketAddr
where
    F: tonic::service::Interceptor + Clone + Send + Sync + 'static,
{
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = tonic::service::interceptor::InterceptedService::new(health, auth);
    let server = tonic::transport::Server::builder()
        .layer(BlockCopLayer::new(on()))
        .add_service(service)
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(async move {
        let _reporter = reporter;
        server.await
    });
    addr
}

/// A health check against `addr`; the response with its metadata.
async fn grpc_health_check(addr: std::net::SocketAddr) -> tonic::Response<tonic_health::pb::HealthCheckResponse> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel.expect("connect"));
    let res = client.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("check");
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving;
    assert_eq!(res.get_ref().status, serving as i32);
    res
}

/// A tonic gRPC server whose auth interceptor reads its token file with `std::fs` on every call: the violation
/// reaches the gRPC response's metadata with the interceptor's exact line; a clean interceptor leaves no header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_grpc_service_gets_the_header_in_its_response_metadata() {
    integration::skip_unless_interposing!();
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "secret").expect("write token");
    let blocking = grpc_health_server(move |req: tonic::Request<()>| {
        let token = std::fs::read_to_string(&token_file); // blocks: open64
        token.map(|_| req).map_err(|e| tonic::Status::internal(e.to_string()))
    })
    .await;
    let clean = grpc_health_server(Ok::<_, tonic::Status>).await;

    let res = grpc_health_check(blocking).await;
    let value = res.metadata().get(X_BLOCKING_VIOLATIONS.as_str()).expect("header on the blocking server's response");
    let h = ViolationsHeader::parse(value.to_str().expect("ascii")).expect("well-formed");
    assert_eq!(h.level, Level::Medium);
    assert_entry(
        &h.first,
        "open64",
        "integration/tests/layer/main.rs",
        "std::fs::read_to_string(&token_file)",
        "open64",
    );

    let res = grpc_health_check(clean).await;
    assert!(res.metadata().get(X_BLOCKING_VIOLATIONS.as_str()).is_none(), "the clean server adds no header");
}

/// A download streamed with `Body::from_stream` whose stream reads each chunk with `std::fs`: the head is sent
/// clean, the body blocks. The request fails with the report, at the stream's line, and the in-process record
/// behind `x-blockcop-request-id` has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_that_blocks_fails_the_request_at_its_line() {
    integration::skip_unless_interposing!();
    let dir = tempfile::tempdir().expect("dir");
    let (server, line) = download_server(on(), dir.path()).await;
    let err = server.client().get("/download").try_send().await.expect_err("the body's std::fs::read fails it");
    let TestError::Blocking(failure) = &err else { panic!("{err}") };
    assert_eq!(failure.header.first.event, "open64", "{err}");
    assert_eq!(failure.header.first.file_line(), Some(("integration/tests/layer/main.rs", line)), "{err}");
    assert!(err.to_string().contains("GET /download blocked a tokio worker"), "{err}");

    let res = server.client().get("/download").expect_blocking().send().await;
    assert_eq!(res.text(), "012345678901234567890123456789");
    assert!(res.headers().get(X_BLOCKING_VIOLATIONS).is_none(), "the head was clean when it was sent");
    let record = res.record().expect("the body's record under x-blockcop-request-id");
    assert_eq!((record.method.as_str(), record.path.as_str()), ("GET", "/download"));
    assert!(record.violations.iter().any(|v| v.event == "open64"), "{:?}", record.violations);
}

/// An SSE handler whose stream sleeps between events: each sleep is a blocking call of the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_stream_that_sleeps_between_events_is_high() {
    integration::skip_unless_interposing!();
    use axum::response::sse::{Event, Sse};
    use futures_util::StreamExt;
    let line = line!() + 5;
    let app = axum::Router::new().route(
        "/events",
        axum::routing::get(|| async {
            let events = futures_util::stream::iter(0..3).map(|i| {
                std::thread::sleep(Duration::from_millis(5)); // blocks: clock_nanosleep
                Ok::<_, Infallible>(Event::default().data(i.to_string()))
            });
            Sse::new(events)
        }),
    );
    let server = TestServer::spawn_with(app, on()).await.expect("serve");
    let res = server.client().get("/events").expect_blocking().send().await;
    assert_eq!(res.text().matches("data: ").count(), 3, "{}", res.text());
    let h = res.expect_violation(Level::High);
    assert_eq!(
        (h.worst.event.as_str(), h.worst.file_line()),
        ("clock_nanosleep", Some(("integration/tests/layer/main.rs", line))),
        "{h}"
    );
    assert_eq!(h.count, 3, "{h}");
}

/// A clean streamed body stays clean, and its response still names its request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_streamed_body_is_clean() {
    let app = axum::Router::new().route(
        "/stream",
        axum::routing::get(|| async {
            let chunks = futures_util::stream::iter(["a", "b", "c"].map(Ok::<_, Infallible>));
            axum::body::Body::from_stream(chunks)
        }),
    );
    let server = TestServer::spawn_with(app, on()).await.expect("serve");
    let res = server.client().get("/stream").send().await;
    assert_eq!(res.text(), "abc");
    res.assert_clean();
    assert!(res.headers().contains_key(blockcop::X_BLOCKCOP_REQUEST_ID));
    assert!(res.record().is_none());
}

/// An app in axum's testing style: routes that sleep in the handler, sleep in the body's stream, or do neither,
/// behind `layer`.
fn oneshot_app(layer: BlockCopLayer) -> (axum::Router, u32, u32) {
    use futures_util::StreamExt;
    let handler_line = line!() + 7;
    let body_line = line!() + 14;
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "Hello, World!" }))
        .route(
            "/sleep",
            axum::routing::get(|| async {
                std::thread::sleep(Duration::from_millis(5)); // blocks: clock_nanosleep
                "slept"
            }),
        )
        .route(
            "/stream",
            axum::routing::get(|| async {
                let chunks = futures_util::stream::iter(["a", "b"]).map(|c| {
                    std::thread::sleep(Duration::from_millis(5)); // blocks: clock_nanosleep
                    Ok::<_, Infallible>(c)
                });
                axum::body::Body::from_stream(chunks)
            }),
        );
    (app.layer(layer), handler_line, body_line)
}

async fn oneshot(app: &axum::Router, path: &str) -> http::Response<axum::body::Body> {
    use tower::ServiceExt as _;
    let request = http::Request::get(path).body(axum::body::Body::empty()).expect("request");
    app.clone().oneshot(request).await.expect("infallible")
}

/// `read_response` fails a request driven through `oneshot` that blocks, in its handler or in its body, with the
/// same report as `TestClient`, and passes a clean one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneshot_responses_are_checked_like_test_client_requests() {
    integration::skip_unless_interposing!();
    let (app, handler_line, body_line) = oneshot_app(BlockCopLayer::new(on()));

    let res = blockcop::testing::read_response(oneshot(&app, "/").await).await;
    assert_eq!((res.status(), res.text().as_str()), (http::StatusCode::OK, "Hello, World!"));
    res.assert_clean();

    let err = blockcop::testing::try_read_response(oneshot(&app, "/sleep").await).await.expect_err("it slept");
    let TestError::Blocking(failure) = &err else { panic!("{err}") };
    assert_eq!(failure.header.first.event, "clock_nanosleep", "{err}");
    assert_eq!(failure.header.first.file_line(), Some(("integration/tests/layer/main.rs", handler_line)), "{err}");
    assert!(err.to_string().contains("GET /sleep blocked a tokio worker: severity 50 (high)"), "{err}");
    assert!(err.to_string().contains("error[blocking/sleep]"), "{err}");

    // The head of a streamed body is clean when it is returned: only reading the body finds the sleeps.
    let res = oneshot(&app, "/stream").await;
    blockcop::testing::check_response(&res);
    let err = blockcop::testing::try_read_response(res).await.expect_err("the body slept");
    let TestError::Blocking(failure) = &err else { panic!("{err}") };
    assert_eq!(failure.header.first.file_line(), Some(("integration/tests/layer/main.rs", body_line)), "{err}");
    assert_eq!(failure.header.count, 2, "{err}");

    // The panicking forms carry the report too.
    let res = oneshot(&app, "/sleep").await;
    let panic = tokio::spawn(blockcop::testing::read_response(res)).await.expect_err("must panic").into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("GET /sleep blocked a tokio worker"), "{message}");
    assert!(message.contains("(response read at integration/tests/layer/main.rs:"), "{message}");
}

/// With the layer disabled, the response names no request and the checks pass whatever the app does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneshot_checks_pass_behind_a_disabled_layer() {
    let (app, _, _) = oneshot_app(BlockCopLayer::disabled());
    let res = oneshot(&app, "/sleep").await;
    assert!(!res.headers().contains_key(blockcop::X_BLOCKCOP_REQUEST_ID));
    blockcop::testing::check_response(&res);
    let res = blockcop::testing::read_response(res).await;
    assert_eq!(res.text(), "slept");
    assert!(res.violations().is_none());
}

/// README's hyper 1.x snippet, verbatim (between the markers; `the_readme_shows_the_tested_hyper_snippet` keeps
/// the two the same).
mod hyper_snippet {
    // README: hyper snippet begins
    use std::convert::Infallible;

    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    use tokio::net::TcpListener;
    use tower::Layer as _; // tower 0.5 with the `util` feature, for `service_fn`

    async fn handle(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let text = std::fs::read_to_string("Cargo.toml").unwrap_or_default(); // blocks: open64
        Ok(Response::new(Full::new(Bytes::from(text))))
    }

    /// Serves `handle` behind the layer (`BlockCopLayer::from_env()?` in `main`), one task per connection.
    pub async fn serve(listener: TcpListener, layer: blockcop::BlockCopLayer) -> std::io::Result<()> {
        let service = layer.layer(tower::service_fn(handle));
        loop {
            let (stream, _) = listener.accept().await?;
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    eprintln!("connection error: {e}");
                }
            });
        }
    }
    // README: hyper snippet ends
}

/// The README's hyper 1.x snippet serves with the layer: the handler's `std::fs` read is in the response's header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_hyper_snippet_serves_with_the_header() {
    integration::skip_unless_interposing!();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(hyper_snippet::serve(listener, BlockCopLayer::new(on())));
    let client = blockcop::testing::TestClient::new(format!("http://{addr}"), on());
    let res = client.get("/").expect_blocking().send().await;
    assert!(res.text().contains("[package]"), "{}", res.text());
    let h = res.expect_violation(Level::Medium);
    assert_entry(&h.first, "open64", "integration/tests/layer/main.rs", "read_to_string(\"Cargo.toml\")", "open64");
}

/// README's hyper snippet is the one the test above runs.
#[test]
fn the_readme_shows_the_tested_hyper_snippet() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let test = std::fs::read_to_string(root.join("integration/tests/layer/main.rs")).expect("read this file");
    let begin = test.find("// README: hyper snippet begins\n").expect("begin marker") + 32;
    let end = test.find("    // README: hyper snippet ends").expect("end marker");
    let snippet: String =
        test[begin..end].lines().map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l))).collect();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("read README.md");
    assert!(readme.contains(&format!("```rust\n{snippet}```\n")), "README.md must show, verbatim:\n{snippet}");
}

/// Serves `/download`, a body whose stream reads a file with `std::fs::read`, with `config`; returns the server and
/// the line of the read.
async fn download_server(config: Config, dir: &std::path::Path) -> (TestServer, u32) {
    use futures_util::StreamExt;
    let chunk = dir.join("chunk");
    std::fs::write(&chunk, "0123456789").expect("write chunk");
    let line = line!() + 6;
    let app = axum::Router::new().route(
        "/download",
        axum::routing::get(move || {
            let chunk = chunk.clone();
            let chunks = futures_util::stream::iter(0..3).map(move |_| {
                std::fs::read(&chunk) // blocks: open64
            });
            async move { axum::body::Body::from_stream(chunks) }
        }),
    );
    (TestServer::spawn_with(app, config).await.expect("serve"), line)
}

/// What a streamed body does after the head was sent reaches the run file of the server's process, under the
/// request (method, path and the id of `x-blockcop-request-id`), at the stream's line. The server runs in a child
/// process (this test, run again) with a report directory of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_that_blocks_is_in_the_run_file_under_its_request() {
    integration::skip_unless_interposing!();
    let dir = tempfile::tempdir().expect("dir");
    if std::env::var_os("BLOCKCOP_LAYER_TEST_CHILD").is_some() {
        let (server, line) = download_server(on(), dir.path()).await;
        println!("line={line}");
        let res = server.client().get("/download").expect_blocking().send().await;
        assert_eq!(res.text().len(), 30);
        let id = res.headers().get(blockcop::X_BLOCKCOP_REQUEST_ID).expect("request id").to_str().expect("ascii");
        println!("request-id={id}");
        return;
    }
    let runs = dir.path().join("runs");
    let mut child = std::process::Command::new(std::env::current_exe().expect("this test"));
    child
        .args(["--exact", "a_streamed_body_that_blocks_is_in_the_run_file_under_its_request", "--nocapture"])
        .env("BLOCKCOP_LAYER_TEST_CHILD", "1")
        .env("BLOCKCOP_REPORT_DIR", &runs);
    let out = tokio::task::spawn_blocking(move || child.output()).await.expect("join").expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let id: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("request-id="))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("the child prints the request id: {stdout}"));
    let line: u32 = stdout.lines().find_map(|l| l.strip_prefix("line=")?.parse().ok()).expect("the child's line");
    let run = blockcop::report::run::read_run_files(&[runs]).expect("read run files");
    let reads: Vec<_> = run
        .records
        .iter()
        .filter_map(|r| match &r.body {
            blockcop::report::run::RecordBody::Violation(v) if v.event == "open64" => Some((r, v)),
            _ => None,
        })
        .collect();
    assert!(!reads.is_empty(), "{:?}", run.records);
    for (record, v) in reads {
        let request = record.request.as_ref().expect("under a request");
        assert_eq!((request.method.as_str(), request.path.as_str(), record.scope_id), ("GET", "/download", id));
        let site = v.call_site.location().expect("a call site");
        assert_eq!((site.file.as_str(), site.line), ("integration/tests/layer/main.rs", line), "{v:?}");
    }
}

/// A task the handler spawns with `.blockcop_current()` blocks on the request's account, with or without
/// `tokio_unstable`: the sleep is in the header at its line, and the task's slow poll would point at the spawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_spawned_with_blockcop_current_blocks_on_the_requests_account() {
    integration::skip_unless_interposing!();
    use blockcop::InstrumentExt as _;
    let line = line!() + 5;
    let app = axum::Router::new().route(
        "/spawn",
        axum::routing::get(|| async {
            let task = async {
                std::thread::sleep(Duration::from_millis(2)); // blocks: clock_nanosleep
                "done"
            };
            tokio::spawn(task.blockcop_current()).await.expect("task")
        }),
    );
    let server = TestServer::spawn_with(app, on()).await.expect("serve");
    let res = server.client().get("/spawn").expect_blocking().send().await;
    assert_eq!(res.text(), "done");
    let h = res.expect_violation(Level::High);
    assert_eq!(
        (h.first.event.as_str(), h.first.file_line()),
        ("clock_nanosleep", Some(("integration/tests/layer/main.rs", line))),
        "{h}"
    );
    assert_eq!(h.count, 1, "{h}");
}
