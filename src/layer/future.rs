//! [`ResponseFuture`]: polls the inner service's future in the request's scope and adds the header to the response.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Method, Response};
use pin_project_lite::pin_project;

use super::ResponseBody;
use super::registry::{self, RequestRecord};
use crate::capture::scope::Scope;
use crate::header::{ViolationsHeader, X_BLOCKCOP_REQUEST_ID, X_BLOCKING_VIOLATIONS};
use crate::violation::Violations;

#[derive(Debug)]
pub(crate) struct RequestInfo {
    pub(crate) method: Method,
    pub(crate) path: String,
}

/// Where a request's violations are kept: [`registry::store`] for the response head, [`registry::append`] for the
/// body.
type Keep = fn(u64, Method, String, Violations) -> Arc<RequestRecord>;

impl RequestInfo {
    /// Takes what `scope` recorded since it was last taken and reports it under this request: `tracing` events and
    /// the request's record, kept by `keep`. The record, or `None` when nothing was recorded.
    pub(crate) fn report(&self, scope: &Scope, keep: Keep) -> Option<Arc<RequestRecord>> {
        let violations = scope.take_violations();
        if violations.is_empty() {
            return None;
        }
        crate::record::events::emit(&violations, Some((self.method.as_str(), self.path.as_str())));
        Some(keep(scope.id(), self.method.clone(), self.path.clone(), violations))
    }
}

pin_project! {
    /// The response future of [`BlockCop`](super::BlockCop): polls the inner future inside the request's scope and,
    /// when it completes, reports the request's violations so far and hands the scope to the response's
    /// [`ResponseBody`].
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
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some((scope, _)) = this.watch.as_ref() else {
            return this.inner.poll(cx).map(|result| result.map(|response| response.map(ResponseBody::passthrough)));
        };
        let inner = this.inner;
        let result = match scope.shared.poll(None, || inner.poll(cx)) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        let Some((scope, info)) = this.watch.take() else {
            return Poll::Ready(result.map(|response| response.map(ResponseBody::passthrough)));
        };
        let header = info
            .report(&scope, registry::store)
            .and_then(|record| ViolationsHeader::from_violations_with(&record.violations, scope.config().baseline()));
        Poll::Ready(result.map(|mut response| {
            let headers = response.headers_mut();
            if let Some(header) = header {
                headers.insert(X_BLOCKING_VIOLATIONS, header.to_header_value());
            }
            // Always: the body may still block after the head is sent, and its record is found under this id.
            headers.insert(X_BLOCKCOP_REQUEST_ID, HeaderValue::from(scope.id()));
            response.map(|body| ResponseBody::watched(body, scope, info))
        }))
    }
}
