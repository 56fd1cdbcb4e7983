//! [`Instrumented`]: a future whose every poll runs inside a scope and is timed.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::capture::scope::Scope;
use crate::config::Config;

pin_project! {
    /// A future whose polls run inside a [`Scope`]: blocking calls made while it is polled are recorded, and each
    /// poll is timed against the slow-poll threshold. Nested instrumented futures attribute blocking calls to the
    /// innermost scope; the outer one still times its poll, leaving out what the inner one reported.
    ///
    /// Created by [`instrument`], [`Scope::instrument`] or [`InstrumentExt`]. When blockcop is disabled it holds no
    /// scope and polls the inner future directly.
    #[must_use = "futures do nothing unless polled"]
    pub struct Instrumented<F> {
        #[pin]
        inner: F,
        scope: Option<Scope>,
        site: Option<&'static Location<'static>>,
    }
}

impl<F> std::fmt::Debug for Instrumented<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumented").field("scope", &self.scope).finish_non_exhaustive()
    }
}

impl<F> Instrumented<F> {
    pub(crate) fn new(inner: F, scope: Option<Scope>, site: Option<&'static Location<'static>>) -> Self {
        Instrumented { inner, scope, site }
    }

    /// The scope the polls run in; `None` when blockcop was disabled at creation.
    pub fn scope(&self) -> Option<&Scope> {
        self.scope.as_ref()
    }

    /// The inner future.
    pub fn into_inner(self) -> F {
        self.inner
    }
}

/// Instrumenting with a given scope: the scope's side of [`Instrumented`].
impl Scope {
    /// Wraps `future` so that each of its polls runs inside this scope and is timed. A slow poll's call site is
    /// the caller of this method.
    #[track_caller]
    pub fn instrument<F: Future>(&self, future: F) -> Instrumented<F> {
        Instrumented::new(future, Some(self.clone()), Some(Location::caller()))
    }

    /// Like [`instrument`](Self::instrument), with `site` as a slow poll's fallback call site.
    pub(crate) fn instrument_at<F: Future>(&self, future: F, site: &'static Location<'static>) -> Instrumented<F> {
        Instrumented::new(future, Some(self.clone()), Some(site))
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        match this.scope {
            None => this.inner.poll(cx),
            Some(scope) => scope.shared.poll(*this.site, || this.inner.poll(cx)),
        }
    }
}

/// Wraps `future` in a new scope when the process-wide configuration ([`Config::global`]) is enabled; otherwise
/// the wrapper is a pass-through. A slow poll's call site is the caller of this function.
///
/// # Panics
///
/// When no configuration was set and the environment holds a malformed `BLOCKCOP_*` value (see
/// [`Config::global`]); call [`init`](crate::init) at start-up to get that as an error instead.
#[track_caller]
pub fn instrument<F: Future>(future: F) -> Instrumented<F> {
    let config = Config::global();
    let site = Location::caller();
    if config.is_enabled() {
        Instrumented::new(future, Some(Scope::new(config)), Some(site))
    } else {
        Instrumented::new(future, None, Some(site))
    }
}

/// Instruments any future: `fut.blockcop()`, `fut.blockcop_in(&scope)`.
pub trait InstrumentExt: Future + Sized {
    /// Same as [`instrument(self)`](instrument).
    ///
    /// # Panics
    ///
    /// As [`instrument`].
    #[track_caller]
    fn blockcop(self) -> Instrumented<Self> {
        instrument(self)
    }

    /// Same as [`scope.instrument(self)`](Scope::instrument): polls run in `scope` whatever the global setting.
    #[track_caller]
    fn blockcop_in(self, scope: &Scope) -> Instrumented<Self> {
        scope.instrument(self)
    }

    /// Carries the scope the caller is polling in (a request's, a test body's) into `self`, typically a task about
    /// to be spawned, as tracing's `in_current_span` carries a span: what
    /// `tokio::spawn(work.blockcop_current())` blocks on is the request's, in its header while the request is
    /// served and in the run file under it afterwards. A slow poll of `self` points at this call.
    ///
    /// Needs no `tokio_unstable` (with it and [`crate::runtime::install`], tasks spawned inside a request inherit
    /// its scope on their own). Outside any scope, or inside a runtime's per-thread scope, `self` is returned as
    /// it is (a pass-through).
    #[track_caller]
    fn blockcop_current(self) -> Instrumented<Self> {
        let scope = crate::capture::intercept::thread::current_scope()
            .filter(|s| s.inheritable())
            .map(|shared| Scope { shared });
        Instrumented::new(self, scope, Some(Location::caller()))
    }
}

impl<F: Future> InstrumentExt for F {}
