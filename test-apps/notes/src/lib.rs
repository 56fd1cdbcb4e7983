//! notes: a small JSON API for notes, backed by SQLite, with an audit log file, a page template, outbound
//! publishing to an upstream webhook, and user registration with password hashing.
//!
//! Routes under `/v1` make the blocking mistakes people really make in async handlers; each has a fixed twin
//! under `/v2`. Every blocking line in `handlers.rs` ends with a `// blocks: <event>` marker, which the
//! integration tests use to check blockcop's call sites.

pub mod handlers;
pub mod store;
pub mod upstream;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

/// What the app needs to run.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Where the database, audit log and template live.
    pub data_dir: PathBuf,
    /// `host:port` of the upstream webhook notes are published to.
    pub upstream: String,
    /// SHA-256 rounds per password hash. By default, 100,000.
    pub hash_rounds: u32,
    /// Wait before retrying a failed publish. By default, 50 ms.
    pub retry_backoff: Duration,
}

impl AppConfig {
    /// Defaults for `data_dir` and `upstream`.
    pub fn new(data_dir: impl Into<PathBuf>, upstream: impl Into<String>) -> AppConfig {
        AppConfig {
            data_dir: data_dir.into(),
            upstream: upstream.into(),
            hash_rounds: 100_000,
            retry_backoff: Duration::from_millis(50),
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub(crate) config: Arc<AppConfig>,
    /// The database connection behind a std mutex (v1) — the same connection v2 uses from `spawn_blocking`.
    pub(crate) db: Arc<Mutex<rusqlite::Connection>>,
    /// The audit log behind a std mutex, written while the lock is held (v1).
    pub(crate) audit: Arc<Mutex<std::fs::File>>,
    /// The audit log behind a tokio mutex (v2).
    pub(crate) audit_async: Arc<tokio::sync::Mutex<tokio::fs::File>>,
    pub(crate) http: reqwest::Client,
}

/// Opens the store under `config.data_dir` (creating the database, audit log and page template) and builds the
/// router.
///
/// # Errors
///
/// When the data directory cannot be prepared.
pub fn app(config: AppConfig) -> Result<Router, Box<dyn std::error::Error + Send + Sync>> {
    std::fs::create_dir_all(&config.data_dir)?;
    let template = config.data_dir.join("page.html");
    if !template.exists() {
        std::fs::write(&template, "<article><h1>{title}</h1><p>{body}</p></article>\n")?;
    }
    let db = store::open(&config.data_dir.join("notes.db"))?;
    let audit_path = config.data_dir.join("audit.log");
    let audit = std::fs::OpenOptions::new().create(true).append(true).open(&audit_path)?;
    let audit_async = tokio::fs::File::from_std(audit.try_clone()?);
    let state = AppState {
        config: Arc::new(config),
        db: Arc::new(Mutex::new(db)),
        audit: Arc::new(Mutex::new(audit)),
        audit_async: Arc::new(tokio::sync::Mutex::new(audit_async)),
        http: reqwest::Client::new(),
    };
    Ok(Router::new()
        .route("/health", get(handlers::health))
        .route("/v1/notes", post(handlers::v1::create_note))
        .route("/v1/notes/{id}", get(handlers::v1::get_note))
        .route("/v1/notes/{id}/page", get(handlers::v1::note_page))
        .route("/v1/notes/{id}/publish", post(handlers::v1::publish_note))
        .route("/v1/register", post(handlers::v1::register))
        .route("/v2/notes", post(handlers::v2::create_note))
        .route("/v2/notes/{id}", get(handlers::v2::get_note))
        .route("/v2/notes/{id}/page", get(handlers::v2::note_page))
        .route("/v2/notes/{id}/publish", post(handlers::v2::publish_note))
        .route("/v2/register", post(handlers::v2::register))
        .with_state(state))
}

/// Every endpoint of the app, with the request body it takes: `(method, path, json body, fixed twin?)`.
pub const ENDPOINTS: &[(&str, &str, Option<&str>, bool)] = &[
    ("GET", "/health", None, true),
    ("POST", "/v1/notes", Some(r#"{"title":"groceries","body":"milk, eggs"}"#), false),
    ("POST", "/v2/notes", Some(r#"{"title":"chores","body":"laundry"}"#), true),
    ("GET", "/v1/notes/1", None, false),
    ("GET", "/v2/notes/1", None, true),
    ("GET", "/v1/notes/1/page", None, false),
    ("GET", "/v2/notes/1/page", None, true),
    ("POST", "/v1/notes/1/publish", None, false),
    ("POST", "/v2/notes/1/publish", None, true),
    ("POST", "/v1/register", Some(r#"{"user":"ada","password":"correct horse"}"#), false),
    ("POST", "/v2/register", Some(r#"{"user":"grace","password":"battery staple"}"#), true),
];
