//! [`TestClient`]: a `reqwest` client that fails a request whose `x-blocking-violations` reaches the fail severity,
//! with the report.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use crate::catalogue::Level;
use crate::config::baseline::Baseline;
use crate::config::{Config, ConfigError};
use crate::header::{HeaderParseError, ViolationsHeader, X_BLOCKCOP_REQUEST_ID, X_BLOCKING_VIOLATIONS};
use crate::layer::{RequestRecord, request_violations};

/// A `reqwest` client for one server that checks every response's `x-blocking-violations`.
#[derive(Debug, Clone)]
pub struct TestClient {
    http: reqwest::Client,
    base: String,
    config: Config,
}

impl TestClient {
    /// A client for `base_url` (e.g. `http://127.0.0.1:3000`) that checks responses when `config` is enabled,
    /// failing at its [`fail_severity`](Config::fail_severity).
    pub fn new(base_url: impl Into<String>, config: Config) -> TestClient {
        TestClient { http: reqwest::Client::new(), base: base_url.into(), config }
    }

    /// A client configured from the environment (`RUST_TEST_BLOCKCOP`, `BLOCKCOP_FAIL_SEVERITY`).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when a `BLOCKCOP_*` value is malformed.
    pub fn from_env(base_url: impl Into<String>) -> Result<TestClient, ConfigError> {
        Ok(TestClient::new(base_url, Config::from_env()?))
    }

    /// The underlying `reqwest` client.
    pub fn inner(&self) -> &reqwest::Client {
        &self.http
    }

    /// A request with any method to `path` (appended to the base URL).
    pub fn request(&self, method: Method, path: &str) -> TestRequest {
        TestRequest {
            builder: self.http.request(method.clone(), format!("{}{}", self.base, path)),
            method,
            path: path.to_owned(),
            config: self.config.clone(),
            expect_blocking: false,
        }
    }

    /// A GET request.
    pub fn get(&self, path: &str) -> TestRequest {
        self.request(Method::GET, path)
    }

    /// A POST request.
    pub fn post(&self, path: &str) -> TestRequest {
        self.request(Method::POST, path)
    }

    /// A PUT request.
    pub fn put(&self, path: &str) -> TestRequest {
        self.request(Method::PUT, path)
    }

    /// A DELETE request.
    pub fn delete(&self, path: &str) -> TestRequest {
        self.request(Method::DELETE, path)
    }
}

/// A request being built; [`send`](Self::send) checks its response.
#[derive(Debug)]
#[must_use = "a request does nothing until sent"]
pub struct TestRequest {
    builder: reqwest::RequestBuilder,
    method: Method,
    path: String,
    config: Config,
    expect_blocking: bool,
}

impl TestRequest {
    /// Sends `body` as JSON.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, body: &T) -> Self {
        self.builder = self.builder.json(body);
        self
    }

    /// Sends `body` as the request body.
    pub fn body(mut self, body: impl Into<reqwest::Body>) -> Self {
        self.builder = self.builder.body(body);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    /// Does not fail on violations: for tests that expect blocking and assert on it with
    /// [`TestResponse::expect_violation`].
    pub fn expect_blocking(mut self) -> Self {
        self.expect_blocking = true;
        self
    }

    /// Sends the request and reads the whole response.
    ///
    /// # Panics
    ///
    /// When the request fails, the header does not parse, or (blockcop enabled, blocking not expected) the
    /// request's severity reaches the fail severity: the panic message is the [`BlockingFailure`] report.
    #[track_caller]
    pub fn send(self) -> impl Future<Output = TestResponse> {
        let caller = std::panic::Location::caller();
        async move {
            match self.try_send().await {
                Ok(r) => r,
                Err(e) => panic!("{e}\n(request sent at {caller})"),
            }
        }
    }

    /// Sends the request and reads the whole response.
    ///
    /// # Errors
    ///
    /// [`TestError::Http`] when the request fails, [`TestError::Header`] when the header does not parse, and
    /// [`TestError::Blocking`] when the request's severity reaches the fail severity (unless blocking is expected
    /// or blockcop is disabled).
    pub async fn try_send(self) -> Result<TestResponse, TestError> {
        let response = self.builder.send().await.map_err(TestError::Http)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(TestError::Http)?;
        let (violations, record) = read_violations(&headers, self.config.baseline()).map_err(TestError::Header)?;
        let res = TestResponse { status, headers, body, violations, record };
        if self.config.is_enabled() && !self.expect_blocking {
            check(res.violations.as_ref(), res.record.as_ref(), &self.config, || (self.method, self.path))?;
        }
        Ok(res)
    }
}

/// A response's violations in the header's shape, and the request's in-process record if there is one. What the
/// body did after the head was sent is only in the record: the summary of the record when it has more than the
/// header (with the calls `baseline` knows).
pub(super) fn read_violations(
    headers: &HeaderMap,
    baseline: &Baseline,
) -> Result<(Option<ViolationsHeader>, Option<Arc<RequestRecord>>), HeaderParseError> {
    let violations = headers
        .get(X_BLOCKING_VIOLATIONS)
        .map(|v| ViolationsHeader::parse(v.to_str().unwrap_or("\u{0}")))
        .transpose()?;
    let record = headers
        .get(X_BLOCKCOP_REQUEST_ID)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .and_then(request_violations);
    let whole = record.as_ref().and_then(|r| ViolationsHeader::from_violations_with(&r.violations, baseline));
    let violations = match whole {
        Some(whole) if violations.as_ref().is_none_or(|h| h.count < whole.count) => Some(whole),
        _ => violations,
    };
    Ok((violations, record))
}

/// Fails a request whose severity, without the calls the baseline knows, reaches `config`'s fail severity, with
/// the report; `request` gives its method and path.
pub(super) fn check(
    violations: Option<&ViolationsHeader>,
    record: Option<&Arc<RequestRecord>>,
    config: &Config,
    request: impl FnOnce() -> (Method, String),
) -> Result<(), TestError> {
    let fail_severity = config.fail_severity();
    match violations {
        Some(h) if h.new_severity() >= fail_severity => {
            let (method, path) = request();
            Err(TestError::Blocking(Box::new(BlockingFailure {
                method,
                path,
                fail_severity,
                header: h.clone(),
                record: record.cloned(),
                baseline: Arc::new(config.baseline().clone()),
            })))
        }
        _ => Ok(()),
    }
}

/// Why [`TestRequest::try_send`] or a check of a response made in process failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestError {
    /// The request itself failed.
    #[error("request failed: {0}")]
    Http(#[source] reqwest::Error),
    /// Reading the body of a response checked in process ([`read_response`](super::read_response)) failed.
    #[error("reading the response body failed: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The server's `x-blocking-violations` did not parse.
    #[error("{0}")]
    Header(#[source] HeaderParseError),
    /// The request blocked at or above the fail severity.
    #[error("{0}")]
    Blocking(Box<BlockingFailure>),
}

/// A request that blocked at or above the fail severity; its `Display` is the report.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BlockingFailure {
    /// The request method.
    pub method: Method,
    /// The request path.
    pub path: String,
    /// The severity the request reached or passed.
    pub fail_severity: u32,
    /// The request's violations in the header's shape (see [`TestResponse::violations`]).
    pub header: ViolationsHeader,
    /// The full records, when the server runs in this process.
    pub record: Option<Arc<RequestRecord>>,
    /// The known findings, left out of the report.
    baseline: Arc<Baseline>,
}

impl fmt::Display for BlockingFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        match h.known {
            None => writeln!(
                f,
                "blockcop: {} {} blocked a tokio worker: severity {} ({}) reaches the fail severity {} \
                 (BLOCKCOP_FAIL_SEVERITY)",
                self.method, self.path, h.severity, h.level, self.fail_severity
            )?,
            Some(known) => writeln!(
                f,
                "blockcop: {} {} blocked a tokio worker: severity {} of the calls not in the baseline reaches the \
                 fail severity {} (BLOCKCOP_FAIL_SEVERITY); {} known call{} left out",
                self.method,
                self.path,
                known.new_severity,
                self.fail_severity,
                known.calls,
                if known.calls == 1 { "" } else { "s" }
            )?,
        }
        writeln!(f, "x-blocking-violations: {h}")?;
        let Some(record) = &self.record else {
            return writeln!(f, "(the server runs in another process: only the header is available)");
        };
        writeln!(f)?;
        let context = format!("request {} {}", record.method, record.path);
        crate::report::write_failing_calls(f, &record.violations, &self.baseline, &context)
    }
}

/// A response, read whole, with its parsed violations.
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    pub(super) violations: Option<ViolationsHeader>,
    pub(super) record: Option<Arc<RequestRecord>>,
}

impl TestResponse {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    pub fn bytes(&self) -> &Bytes {
        &self.body
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    ///
    /// When the body is not JSON of that shape.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The request's violations in the shape of `x-blocking-violations`: the parsed header, or, when the server runs
    /// in this process and the response body blocked after the head was sent, the same summary of the whole
    /// record (head and body). `None` for a clean request.
    pub fn violations(&self) -> Option<&ViolationsHeader> {
        self.violations.as_ref()
    }

    /// The request's full records, when the server runs in this process.
    pub fn record(&self) -> Option<&RequestRecord> {
        self.record.as_deref()
    }

    /// Asserts that the request had violations at exactly `level`; returns the header.
    ///
    /// # Panics
    ///
    /// When the header is absent or its level differs.
    #[track_caller]
    pub fn expect_violation(&self, level: Level) -> &ViolationsHeader {
        let Some(h) = &self.violations else {
            panic!("expected {level} blocking violations, but the response has no x-blocking-violations header");
        };
        assert_eq!(h.level, level, "level of x-blocking-violations: {h}");
        h
    }

    /// Asserts that the request had no violation.
    ///
    /// # Panics
    ///
    /// When the response has an `x-blocking-violations` header; the message renders the violations with their
    /// stacks when the server runs in this process.
    #[track_caller]
    pub fn assert_clean(&self) {
        if let Some(h) = &self.violations {
            let mut message = format!("expected no blocking violations, got x-blocking-violations: {h}\n");
            if let Some(record) = self.record() {
                let context = format!("request {} {}", record.method, record.path);
                let _ = crate::report::write_failing_calls(
                    &mut message,
                    &record.violations,
                    &Baseline::default(),
                    &context,
                );
            }
            panic!("{message}");
        }
    }
}
