//! Checking a response of an app called in the test's own process, without HTTP: through
//! `tower::ServiceExt::oneshot`, as axum's testing guide does.

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt as _;

use super::client::{TestError, TestResponse, check, read_violations};
use crate::config::Config;
use crate::header::X_BLOCKCOP_REQUEST_ID;

/// Checks what a response produced through [`BlockCopLayer`](crate::BlockCopLayer) says so far: its
/// `x-blocking-violations` header and the request's record (the handler, and the body frames polled until now).
/// To include what the body does while it is read, use [`read_response`] instead.
///
/// A response without `x-blockcop-request-id` (the layer is disabled) passes. The fail severity is the process-wide
/// configuration's ([`Config::global`]: `BLOCKCOP_FAIL_SEVERITY`, by default 50).
///
/// # Panics
///
/// When the request's severity reaches the fail severity: the message is the same report as
/// [`TestRequest::send`](super::TestRequest::send)'s. Also when the header does not parse, or when nothing set the
/// process-wide configuration and a `BLOCKCOP_*` variable is malformed.
#[track_caller]
pub fn check_response<B>(res: &http::Response<B>) {
    if let Err(e) = try_check_response(res) {
        panic!("{e}\n(response checked at {})", std::panic::Location::caller());
    }
}

/// Like [`check_response`], returning the failure instead of panicking.
///
/// # Errors
///
/// [`TestError::Blocking`] when the request's severity reaches the fail severity, [`TestError::Header`] when the
/// header does not parse.
///
/// # Panics
///
/// When nothing set the process-wide configuration and a `BLOCKCOP_*` variable is malformed ([`Config::global`]).
pub fn try_check_response<B>(res: &http::Response<B>) -> Result<(), TestError> {
    judge(res.headers()).map(|_| ())
}

/// Reads the body of a response produced through [`BlockCopLayer`](crate::BlockCopLayer) to its end, then checks
/// the request as [`TestRequest::send`](super::TestRequest::send) does: the handler and every body frame.
///
/// ```no_run
/// use axum::{Router, body::Body, http::Request, routing::get};
/// use blockcop::BlockCopLayer;
/// use tower::ServiceExt as _;
///
/// # async fn t() {
/// let app = Router::new().route("/", get(|| async { "Hello, World!" }));
/// let app = app.layer(BlockCopLayer::from_env().expect("BLOCKCOP_* settings"));
/// let res = app.oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
/// // With RUST_TEST_BLOCKCOP=1, panics with a report if the handler or the body blocked at severity >= 50.
/// let res = blockcop::testing::read_response(res).await;
/// assert_eq!(res.status(), 200);
/// assert_eq!(res.text(), "Hello, World!");
/// # }
/// ```
///
/// # Panics
///
/// As [`check_response`], and when reading the body fails.
#[track_caller]
pub fn read_response<B>(res: http::Response<B>) -> impl Future<Output = TestResponse>
where
    B: http_body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let caller = std::panic::Location::caller();
    async move {
        match try_read_response(res).await {
            Ok(r) => r,
            Err(e) => panic!("{e}\n(response read at {caller})"),
        }
    }
}

/// Like [`read_response`], returning the failure instead of panicking.
///
/// # Errors
///
/// [`TestError::Body`] when reading the body fails, then as [`try_check_response`].
///
/// # Panics
///
/// When nothing set the process-wide configuration and a `BLOCKCOP_*` variable is malformed ([`Config::global`]).
pub async fn try_read_response<B>(res: http::Response<B>) -> Result<TestResponse, TestError>
where
    B: http_body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = res.into_parts();
    let body: Bytes = body.collect().await.map_err(|e| TestError::Body(Box::new(e)))?.to_bytes();
    let (violations, record) = judge(&parts.headers)?;
    Ok(TestResponse { status: parts.status, headers: parts.headers, body, violations, record })
}

/// Reads the violations a response's headers point to and fails the request when they reach the fail severity.
fn judge(
    headers: &http::HeaderMap,
) -> Result<(Option<crate::ViolationsHeader>, Option<std::sync::Arc<crate::layer::RequestRecord>>), TestError> {
    let config = Config::global();
    let (violations, record) = read_violations(headers, config.baseline()).map_err(TestError::Header)?;
    if headers.contains_key(X_BLOCKCOP_REQUEST_ID) {
        check(violations.as_ref(), record.as_ref(), config, || match &record {
            Some(r) => (r.method.clone(), r.path.clone()),
            None => (Method::GET, "(a request whose record is no longer kept)".to_owned()),
        })?;
    }
    Ok((violations, record))
}
