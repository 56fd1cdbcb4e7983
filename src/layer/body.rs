//! [`ResponseBody`]: the response body of a watched request, whose polls run in the request's scope until its end.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::future::RequestInfo;
use super::registry;
use crate::capture::scope::Scope;

pin_project! {
    /// The response body of [`BlockCop`](super::BlockCop): polls the inner body's frames inside the request's scope,
    /// so what a streamed body does after the response head was sent (a `Body::from_stream` whose stream reads a file
    /// with `std::fs`, an SSE stream that sleeps) is attributed to the request.
    ///
    /// Its violations are reported when the body ends (its last frame, an error, or the body dropped unfinished):
    /// `tracing` events, the run file, and [`request_violations`](super::request_violations) under the id the
    /// response's [`X_BLOCKCOP_REQUEST_ID`](crate::X_BLOCKCOP_REQUEST_ID) carries, added to what the response head
    /// reported. A body ending cleanly is reported before its last frame is returned, so a client that has read
    /// the whole body finds the record complete.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        watch: Option<(Scope, RequestInfo)>,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            finish(this.project().watch);
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").field("watch", &self.watch).finish_non_exhaustive()
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn passthrough(inner: B) -> Self {
        ResponseBody { inner, watch: None }
    }

    pub(crate) fn watched(inner: B, scope: Scope, info: RequestInfo) -> Self {
        ResponseBody { inner, watch: Some((scope, info)) }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let Some((scope, _)) = this.watch.as_ref() else {
            return this.inner.poll_frame(cx);
        };
        let mut inner = this.inner;
        let polled = scope.shared.poll(None, || inner.as_mut().poll_frame(cx));
        let ended = match &polled {
            Poll::Pending => false,
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => inner.is_end_stream(),
        };
        if ended {
            finish(this.watch);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reports what the body's polls recorded, once.
fn finish(watch: &mut Option<(Scope, RequestInfo)>) {
    if let Some((scope, info)) = watch.take() {
        info.report(&scope, registry::append);
    }
}
