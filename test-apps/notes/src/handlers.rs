//! The handlers. `v1` makes the mistakes; `v2` is the same behaviour done right.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::store::{self, Note};

/// A handler error: logged, answered with 500.
#[derive(Debug)]
pub struct AppError(Box<dyn std::error::Error + Send + Sync>);

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for AppError {
    fn from(e: E) -> Self {
        AppError(e.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self.0, "request failed");
        (StatusCode::INTERNAL_SERVER_ERROR, self.0.to_string()).into_response()
    }
}

type Result<T> = std::result::Result<T, AppError>;

/// A new note.
#[derive(Debug, Deserialize)]
pub struct NewNote {
    pub title: String,
    pub body: String,
}

/// A registration.
#[derive(Debug, Deserialize)]
pub struct Registration {
    pub user: String,
    pub password: String,
}

/// `GET /health`.
pub async fn health() -> &'static str {
    "ok"
}

fn render(template: &str, note: &Note) -> String {
    template.replace("{title}", &note.title).replace("{body}", &note.body)
}

/// Iterated SHA-256 over a salted password: deliberately expensive, like real password hashing.
pub fn hash_password(user: &str, password: &str, rounds: u32) -> String {
    let mut digest = Sha256::digest(format!("{user}:{password}").as_bytes());
    for _ in 0..rounds {
        digest = Sha256::digest(digest); // blocks: slow_poll
    }
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

async fn find_note(state: &AppState, id: i64) -> Result<Note> {
    let db = state.db.clone();
    let found = tokio::task::spawn_blocking(move || {
        let conn = db.lock().map_err(|_| "database lock poisoned")?;
        store::find(&conn, id).map_err(|e| e.to_string())
    })
    .await??;
    found.ok_or_else(|| AppError::from(format!("note {id} not found")))
}

async fn insert_note(state: &AppState, new: NewNote) -> Result<Note> {
    let db = state.db.clone();
    let note = tokio::task::spawn_blocking(move || {
        let conn = db.lock().map_err(|_| "database lock poisoned")?;
        store::insert(&conn, &new.title, &new.body).map_err(|e| e.to_string())
    })
    .await??;
    Ok(note)
}

/// The mistakes.
pub mod v1 {
    use std::io::Write;
    use std::net::{SocketAddr, ToSocketAddrs};

    use axum::extract::{Path, State};

    use super::*;

    /// `POST /v1/notes`: appends to the audit log while holding a std mutex, with std I/O.
    pub async fn create_note(State(state): State<AppState>, Json(new): Json<NewNote>) -> Result<Json<Note>> {
        let note = insert_note(&state, new).await?;
        let line = serde_json::to_string(&note)?;
        let mut audit = state.audit.lock().map_err(|_| "audit lock poisoned")?;
        writeln!(audit, "created {line}")?; // blocks: write
        audit.sync_data()?; // blocks: fdatasync
        Ok(Json(note))
    }

    /// `GET /v1/notes/{id}`: queries SQLite's synchronous driver on the worker thread.
    pub async fn get_note(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Json<Note>> {
        let conn = state.db.lock().map_err(|_| "database lock poisoned")?;
        let note = store::find(&conn, id)?;
        note.map(Json).ok_or_else(|| AppError::from(format!("note {id} not found")))
    }

    /// `GET /v1/notes/{id}/page`: reads the page template with `std::fs`.
    pub async fn note_page(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Html<String>> {
        let note = find_note(&state, id).await?;
        let template = std::fs::read_to_string(state.config.data_dir.join("page.html"))?; // blocks: open64
        Ok(Html(render(&template, &note)))
    }

    /// `POST /v1/notes/{id}/publish`: resolves the upstream with `ToSocketAddrs` and backs off with the std sleep.
    pub async fn publish_note(State(state): State<AppState>, Path(id): Path<i64>) -> Result<StatusCode> {
        let note = find_note(&state, id).await?;
        let mut addrs = state.config.upstream.to_socket_addrs()?; // blocks: getaddrinfo
        let addr = addrs.find(SocketAddr::is_ipv4).ok_or("upstream has no IPv4 address")?;
        let url = format!("http://{addr}/hooks/notes/{}", note.id);
        for _attempt in 0..3 {
            if state.http.post(&url).json(&note).send().await?.status().is_success() {
                return Ok(StatusCode::ACCEPTED);
            }
            std::thread::sleep(state.config.retry_backoff); // blocks: clock_nanosleep
        }
        Ok(StatusCode::BAD_GATEWAY)
    }

    /// `POST /v1/register`: hashes the password inline, on the worker thread.
    pub async fn register(State(state): State<AppState>, Json(reg): Json<Registration>) -> Result<StatusCode> {
        let hash = hash_password(&reg.user, &reg.password, state.config.hash_rounds);
        let db = state.db.clone();
        tokio::task::spawn_blocking(move || {
            let conn = db.lock().map_err(|_| "database lock poisoned")?;
            store::save_user(&conn, &reg.user, &hash).map_err(|e| e.to_string())
        })
        .await??;
        Ok(StatusCode::CREATED)
    }
}

/// The fixed twins.
pub mod v2 {
    use std::net::SocketAddr;

    use axum::extract::{Path, State};
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// `POST /v2/notes`: the audit log behind a tokio mutex, written with `tokio::fs`.
    pub async fn create_note(State(state): State<AppState>, Json(new): Json<NewNote>) -> Result<Json<Note>> {
        let note = insert_note(&state, new).await?;
        let line = format!("created {}\n", serde_json::to_string(&note)?);
        let mut audit = state.audit_async.lock().await;
        audit.write_all(line.as_bytes()).await?;
        audit.sync_data().await?;
        Ok(Json(note))
    }

    /// `GET /v2/notes/{id}`: the synchronous driver runs in `spawn_blocking`.
    pub async fn get_note(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Json<Note>> {
        Ok(Json(find_note(&state, id).await?))
    }

    /// `GET /v2/notes/{id}/page`: reads the template with `tokio::fs`.
    pub async fn note_page(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Html<String>> {
        let note = find_note(&state, id).await?;
        let template = tokio::fs::read_to_string(state.config.data_dir.join("page.html")).await?;
        Ok(Html(render(&template, &note)))
    }

    /// `POST /v2/notes/{id}/publish`: `tokio::net::lookup_host` and `tokio::time::sleep`.
    pub async fn publish_note(State(state): State<AppState>, Path(id): Path<i64>) -> Result<StatusCode> {
        let note = find_note(&state, id).await?;
        let mut addrs = tokio::net::lookup_host(state.config.upstream.as_str()).await?;
        let addr = addrs.find(SocketAddr::is_ipv4).ok_or("upstream has no IPv4 address")?;
        let url = format!("http://{addr}/hooks/notes/{}", note.id);
        for _attempt in 0..3 {
            if state.http.post(&url).json(&note).send().await?.status().is_success() {
                return Ok(StatusCode::ACCEPTED);
            }
            tokio::time::sleep(state.config.retry_backoff).await;
        }
        Ok(StatusCode::BAD_GATEWAY)
    }

    /// `POST /v2/register`: hashes the password on the blocking pool.
    pub async fn register(State(state): State<AppState>, Json(reg): Json<Registration>) -> Result<StatusCode> {
        let rounds = state.config.hash_rounds;
        let db = state.db.clone();
        tokio::task::spawn_blocking(move || {
            let hash = hash_password(&reg.user, &reg.password, rounds);
            let conn = db.lock().map_err(|_| "database lock poisoned")?;
            store::save_user(&conn, &reg.user, &hash).map_err(|e| e.to_string())
        })
        .await??;
        Ok(StatusCode::CREATED)
    }
}
