//! Every violation is a `tracing` event with target `blockcop`, recorded inside the current span: with the layer
//! inside `TraceLayer`, that is the request span. Its own test binary, because it installs a global subscriber.

#[path = "../support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};

use blockcop::testing::TestServer;
use blockcop::{BlockCopLayer, Config};
use support::marked_line_in;

const HANDLERS: &str = "test-apps/notes/src/handlers.rs";

fn on() -> Config {
    Config::builder().enabled(true).build()
}

/// Records `blockcop` tracing events with their fields and the name of the span they happened in.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<CapturedEvent>>>);

/// An event's level, the name of its span and its fields.
type CapturedEvent = (tracing::Level, Option<String>, Vec<(String, String)>);

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "blockcop" {
            return;
        }
        struct Fields(Vec<(String, String)>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push((field.name().to_owned(), format!("{value:?}").trim_matches('"').to_owned()));
            }
        }
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        let span = ctx.event_span(event).map(|s| s.name().to_owned());
        self.0.lock().expect("capture").push((*event.metadata().level(), span, fields.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn violations_are_tracing_events_inside_the_request_span() {
    integration::skip_unless_interposing!();
    use tracing_subscriber::layer::SubscriberExt;
    // A global subscriber: a thread-local default races with tracing's per-callsite interest cache.
    let capture = Capture::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(capture.clone()))
        .expect("the only subscriber of this test binary");
    let upstream = notes::upstream::spawn().await.expect("upstream");
    let data = tempfile::tempdir().expect("data dir");
    let app = notes::app(notes::AppConfig::new(data.path(), format!("localhost:{}", upstream.port())))
        .expect("app")
        .layer(BlockCopLayer::new(on()))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let server = TestServer::spawn_with(app, Config::default()).await.expect("serve");
    let client = server.client();
    client
        .post("/v2/notes")
        .header("content-type", "application/json")
        .body(r#"{"title":"t","body":"b"}"#)
        .send()
        .await;
    let res = client.get("/v1/notes/1/page").send().await;
    assert_eq!(res.status(), 200);
    assert!(res.violations().is_some(), "the inner layer adds the header");
    let events = capture.0.lock().expect("capture").clone();
    let (level, span, fields) = events
        .iter()
        .find(|(_, _, f)| f.iter().any(|(k, v)| k == "event" && v == "open64"))
        .unwrap_or_else(|| panic!("no open64 event in {events:?}"));
    assert_eq!(*level, tracing::Level::WARN);
    assert_eq!(span.as_deref(), Some("request"));
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let line = marked_line_in(HANDLERS, "read_to_string", "open64");
    assert!(get("call_site").is_some_and(|s| s.starts_with(&format!("{HANDLERS}:{line}:"))), "{fields:?}");
    assert_eq!(get("method"), Some("GET"));
    assert_eq!(get("path"), Some("/v1/notes/1/page"));
    assert_eq!(get("weight"), Some("10"));
    assert_eq!(get("level"), Some("medium"));
    assert_eq!(get("blocking_api"), Some("std::fs::read_to_string"));
    assert!(get("duration_us").is_some() && get("detail").is_some_and(|d| d.ends_with("page.html")));
    // The low-weight statx of the same call is a DEBUG event.
    assert!(
        events
            .iter()
            .any(|(l, _, f)| *l == tracing::Level::DEBUG && f.iter().any(|(k, v)| k == "event" && v == "statx"))
    );
}
