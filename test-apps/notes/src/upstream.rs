//! The upstream webhook notes are published to: a flaky local service that answers 503 to the first attempt for
//! each note and 200 to the next, so that publishing exercises the retry path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;

/// Serves the upstream on `127.0.0.1:<ephemeral>`; returns its address.
///
/// # Errors
///
/// When binding fails.
pub async fn spawn() -> std::io::Result<SocketAddr> {
    let attempts: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let app = Router::new().route("/hooks/notes/{id}", post(hook)).with_state(attempts);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

async fn hook(State(attempts): State<Arc<Mutex<HashMap<u64, u32>>>>, Path(id): Path<u64>) -> StatusCode {
    let n = {
        let mut map = attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(id).or_insert(0);
        *n += 1;
        *n
    };
    if n % 2 == 1 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }
}
