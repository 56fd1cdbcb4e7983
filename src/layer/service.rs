//! [`BlockCop`]: the middleware service, which opens a scope per request.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;

use super::future::RequestInfo;
use super::{ResponseBody, ResponseFuture};
use crate::capture::scope::Scope;
use crate::config::Config;

/// The middleware service made by [`BlockCopLayer`](super::BlockCopLayer).
#[derive(Debug, Clone)]
pub struct BlockCop<S> {
    inner: S,
    config: Option<Config>,
}

impl<S> BlockCop<S> {
    pub(crate) fn new(inner: S, config: Option<Config>) -> BlockCop<S> {
        BlockCop { inner, config }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BlockCop<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(config) = &self.config else {
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        // A CONNECT request names its target by authority (`host:port`); it has no path.
        let path = match req.uri().authority() {
            Some(authority) if req.method() == http::Method::CONNECT => authority.to_string(),
            _ => req.uri().path().to_owned(),
        };
        let info = RequestInfo { method: req.method().clone(), path };
        let scope = Scope::for_request(config, info.method.as_str(), &info.path);
        let inner = &mut self.inner;
        let future = scope.shared.poll(None, || inner.call(req));
        ResponseFuture::watched(future, scope, info)
    }
}
