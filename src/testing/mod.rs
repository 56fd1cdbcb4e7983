//! The test harness (feature `testing`): serve an app over real loopback HTTP with [`BlockCopLayer`] applied, and
//! call it with a `reqwest`-based client that fails any request whose severity reaches `BLOCKCOP_FAIL_SEVERITY`,
//! with a report a developer can act on.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use blockcop::testing::TestServer;
//!
//! # async fn t() {
//! let app = Router::new().route("/notes", get(|| async { "[]" }));
//! let server = TestServer::spawn(app).await.expect("bind loopback");
//! let client = server.client();
//! // With RUST_TEST_BLOCKCOP=1, panics with a report if the handler blocked at severity >= 50.
//! let res = client.get("/notes").send().await;
//! assert_eq!(res.status(), 200);
//! # }
//! ```
//!
//! With `RUST_TEST_BLOCKCOP` unset the server adds nothing and the client checks nothing, unless a test passes an
//! enabled [`Config`](crate::Config) to [`TestServer::spawn_with`].
//!
//! [`BlockCopLayer`]: crate::BlockCopLayer

mod client;
mod oneshot;
mod server;

pub use client::{BlockingFailure, TestClient, TestError, TestRequest, TestResponse};
pub use oneshot::{check_response, read_response, try_check_response, try_read_response};
pub use server::TestServer;
