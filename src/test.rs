//! Async test bodies as instrumented tasks: plain `async` unit tests are covered too.
//!
//! tokio's task hooks never fire for `block_on` bodies, so a `#[tokio::test]` body is not a task blockcop sees.
//! Run the body through [`run`] instead (or wrap it in [`check`] inside an existing runtime): its polls run in a
//! scope, and with `RUST_TEST_BLOCKCOP=1` the test fails when the severity reaches `BLOCKCOP_FAIL_SEVERITY`, with
//! the rendered report.
//!
//! ```
//! // The body of a `#[test] fn`:
//! blockcop::test::run(async {
//!     let text = tokio::fs::read_to_string("Cargo.toml").await.unwrap();
//!     assert!(text.contains("[package]"));
//! });
//! ```

use std::future::Future;
use std::panic::Location;

use crate::capture::scope::Scope;
use crate::config::Config;
use crate::violation::Violations;

/// Runs `body` to completion on a new current-thread runtime (with blockcop's task hooks when the build has
/// them), as an instrumented task.
///
/// # Panics
///
/// When blockcop is enabled and the body's severity reaches the fail severity (with the report as the message);
/// when `body` panics; when the runtime cannot be built; and as [`Config::global`] on a malformed variable.
#[track_caller]
pub fn run<F: Future>(body: F) -> F::Output {
    let caller = Location::caller();
    let config = Config::global();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    // Tasks the body spawns inherit its scope when the hooks exist; without them, only the body is watched.
    let _ = crate::runtime::Hooks::new(config).install(&mut builder);
    let rt = builder.build().unwrap_or_else(|e| panic!("blockcop::test::run: cannot build a runtime: {e}"));
    if !config.is_enabled() {
        return rt.block_on(body);
    }
    let scope = Scope::new(config);
    let out = rt.block_on(Scope::instrument_at(&scope, body, caller));
    drop(rt);
    fail_if_blocking(&scope.take_violations(), config, caller);
    out
}

/// Runs `body` as an instrumented future inside the current runtime (e.g. in a `#[tokio::test]`), then fails like
/// [`run`].
///
/// # Panics
///
/// When blockcop is enabled and the body's severity reaches the fail severity, with the report as the message.
#[track_caller]
pub fn check<F: Future>(body: F) -> impl Future<Output = F::Output> {
    let caller = Location::caller();
    let config = Config::global();
    let scope = config.is_enabled().then(|| Scope::new(config));
    async move {
        let Some(scope) = scope else { return body.await };
        let out = Scope::instrument_at(&scope, body, caller).await;
        fail_if_blocking(&scope.take_violations(), config, caller);
        out
    }
}

fn fail_if_blocking(violations: &Violations, config: &Config, caller: &'static Location<'static>) {
    let baseline = config.baseline();
    let severity = baseline.new_severity(violations);
    if violations.is_empty() || severity < config.fail_severity() {
        return;
    }
    let known = violations.iter().filter(|v| baseline.knows(v)).count();
    let of = if known == 0 { "" } else { " of the calls not in the baseline" };
    let mut report = format!(
        "blockcop: the test body at {caller} blocked a tokio worker: severity {severity} ({}){of} reaches the fail \
         severity {} (BLOCKCOP_FAIL_SEVERITY)\n\n",
        crate::catalogue::Level::of(severity),
        config.fail_severity()
    );
    let _ = crate::report::write_failing_calls(&mut report, violations, baseline, "test body");
    panic!("{report}");
}
