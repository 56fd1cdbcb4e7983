use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Method, Response};
use pin_project_lite::pin_project;

use super::registry;
use crate::header::{ViolationsHeader, X_BLOCKCOP_REQUEST_ID, X_BLOCKING_VIOLATIONS};
use crate::scope::Scope;
use crate::violation::{Level, Violations};

#[derive(Debug)]
pub(crate) struct RequestInfo {
    pub(crate) method: Method,
    pub(crate) path: String,
}

pin_project! {
    /// The response future of [`BlockCop`](super::BlockCop): polls the inner future inside the request's scope and,
    /// when it completes, reports the request's violations.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        watch: Option<(Scope, RequestInfo)>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").field("watch", &self.watch).finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn passthrough(inner: F) -> Self {
        ResponseFuture { inner, watch: None }
    }

    pub(crate) fn watched(inner: F, scope: Scope, info: RequestInfo) -> Self {
        ResponseFuture { inner, watch: Some((scope, info)) }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some((scope, _)) = this.watch.as_ref() else {
            return this.inner.poll(cx);
        };
        let inner = this.inner;
        let result = match scope.shared.poll(None, || inner.poll(cx)) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        let Some((scope, info)) = this.watch.take() else {
            return Poll::Ready(result);
        };
        let violations = scope.take_violations();
        if violations.is_empty() {
            return Poll::Ready(result);
        }
        emit_events(&violations, &info);
        let header = ViolationsHeader::from_violations(&violations);
        registry::store(scope.id(), info.method, info.path, violations);
        Poll::Ready(result.map(|mut response| {
            if let Some(header) = header {
                let headers = response.headers_mut();
                headers.insert(X_BLOCKING_VIOLATIONS, header.to_header_value());
                headers.insert(X_BLOCKCOP_REQUEST_ID, HeaderValue::from(scope.id()));
            }
            response
        }))
    }
}

fn emit_events(violations: &Violations, info: &RequestInfo) {
    for v in violations {
        let duration_us = u64::try_from(v.duration.as_micros()).unwrap_or(u64::MAX);
        let call_site = tracing::field::display(&v.call_site);
        let blocking_api = v.blocking_api.as_deref().unwrap_or("");
        macro_rules! event {
            ($lvl:expr) => {
                tracing::event!(
                    target: "blockcop",
                    $lvl,
                    event = v.event,
                    weight = v.weight.value(),
                    level = v.level.as_str(),
                    duration_us,
                    call_site,
                    blocking_api,
                    detail = v.detail.as_str(),
                    method = info.method.as_str(),
                    path = info.path.as_str(),
                    "blocking call in async task: {} at {}",
                    v.event,
                    v.call_site,
                )
            };
        }
        if v.level >= Level::Medium {
            event!(tracing::Level::WARN);
        } else {
            event!(tracing::Level::DEBUG);
        }
    }
    if violations.dropped > 0 {
        tracing::warn!(
            target: "blockcop",
            dropped = violations.dropped,
            method = info.method.as_str(),
            path = info.path.as_str(),
            "the per-scope cap dropped {} violations of this request",
            violations.dropped,
        );
    }
}
