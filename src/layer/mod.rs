//! Tower middleware: [`BlockCopLayer`] attributes violations to the request being served and adds
//! `x-blocking-violations` to its response.
//!
//! The layer enters a fresh [`Scope`](crate::Scope) during the inner service's `call`, during every poll of the
//! response future and during every poll of the response body ([`ResponseBody`]: a streamed body, SSE, a file
//! download), so everything the handler and its body do on the worker thread is attributed to that request. It
//! needs no `tokio_unstable` and works with a plain `#[tokio::main]` runtime, with axum, tonic and hyper (through
//! tower).
//!
//! When the request had violations by the time its response head is ready, the response gets
//! [`X_BLOCKING_VIOLATIONS`](crate::X_BLOCKING_VIOLATIONS) (see [`ViolationsHeader`](crate::ViolationsHeader)).
//! Every response of an enabled layer gets [`X_BLOCKCOP_REQUEST_ID`](crate::X_BLOCKCOP_REQUEST_ID), under which
//! [`request_violations`] returns the full records in the same process, including what the body did after the head
//! was sent (which no header can carry). Every violation is also a
//! `tracing` event with target `blockcop` (WARN for medium and high, DEBUG for low), recorded inside the current
//! span: add the layer *inside* `TraceLayer` (before it, in axum's `.layer` order) so the request span shows up.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use blockcop::BlockCopLayer;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(BlockCopLayer::from_env()?); // a pass-through unless RUST_TEST_BLOCKCOP=1
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

mod body;
mod future;
#[allow(clippy::module_inception)]
mod layer;
mod registry;
mod service;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::BlockCopLayer;
pub use registry::{
    CAPACITY as REGISTRY_CAPACITY, RequestRecord, RequestRegistryStats, registry_stats, request_violations,
};
pub use service::BlockCop;
