//! blockcop catches code that blocks tokio's worker threads.
//!
//! An `async fn` that calls `std::fs::read`, `std::thread::sleep`, a DNS lookup through `ToSocketAddrs`, a sync
//! database driver or a long CPU loop stalls every other task on its worker thread. While a thread polls task
//! code inside a [`Scope`], blockcop intercepts the blocking libc calls of its [catalogue](CATALOGUE) and times
//! every poll. Each [`Violation`] says what blocked, for how long, and the line of your code that did it.
//!
//! ```
//! use std::time::Duration;
//! use blockcop::{Config, Level, Scope};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let scope = Scope::new(&Config::builder().enabled(true).build());
//! scope.instrument(async {
//!     std::thread::sleep(Duration::from_millis(20)); // blocks the worker thread
//! }).await;
//! let violations = scope.take_violations();
//! # if blockcop::is_interposing() {
//! let v = violations.first().unwrap();
//! assert_eq!(v.event, "clock_nanosleep");
//! assert_eq!(v.level, Level::High);
//! println!("{v}"); // clock_nanosleep (sleep, weight 50, high) blocked for 20.1ms at src/main.rs:9:5 via std::thread::functions::sleep [sleep 20ms]
//! # }
//! # }
//! ```
//!
//! ## Severity
//!
//! Weights follow aiocop's scale: heavy 50, moderate 10, light 1, trivial 0. Measured time can raise a weight,
//! never lower it: a call lasting at least the slow-poll threshold is at least moderate, ten times it heavy. A call
//! through a synchronous database or network client ([`BLOCKING_CLIENTS`]) is heavy; console output is trivial. The
//! severity of a set of violations is aiocop's score, the sum of the weights of its calls; its [`Level`] is high
//! from 50, medium from 10, low below. The harness fails at [`Config::DEFAULT_FAIL_SEVERITY`] (10, medium) unless
//! `BLOCKCOP_FAIL_SEVERITY` says otherwise.
//!
//! ## Turning it on
//!
//! Everything is off unless `RUST_TEST_BLOCKCOP` is `1`, `true`, `yes` or `on` (see [`Config::from_env`]). Off,
//! [`instrument`] returns a pass-through wrapper and the libc hooks cost one thread-local read per call.
//!
//! ## Adopting it on a service that already blocks
//!
//! A checked-in [`baseline`] (`blockcop-baseline.toml`, written by `blockcop baseline write`) lists the findings a
//! service has today: they are still reported, but only new ones fail the harness and `blockcop report`.
//!
//! ## Platforms
//!
//! Interposing libc needs Linux with glibc (x86_64 or aarch64); elsewhere, or without the `intercept` feature, only
//! slow polls are detected. [`is_interposing`] tells which.
//!
//! ## Feature flags
//!
//! - `intercept` (default): define the libc hooks. Without it no libc symbol is replaced.
//! - `cli`: the `blockcop` command (`blockcop report`, `blockcop baseline`) and SARIF output (`report::cli`,
//!   `report::sarif`).
//! - `testing`: the test harness, [`testing::TestServer`] and [`testing::TestClient`] (hyper and reqwest).
#![warn(missing_docs, missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
#![deny(unsafe_code)]
// On docs.rs, items behind a feature or `tokio_unstable` say so.
#![cfg_attr(docsrs, feature(doc_cfg))]
// Without the interposer, the recording half of the crate has no caller; it stays compiled so both builds share it.
#![cfg_attr(not(all(feature = "intercept", target_os = "linux", target_env = "gnu")), allow(dead_code))]

mod call_site;
mod capture;
mod catalogue;
mod clock;
mod config;
mod header;
mod instrument;
pub mod layer;
mod recent;
mod record;
pub mod report;
pub mod runtime;
mod start;
mod sys;
pub mod test;
#[cfg(feature = "testing")]
pub mod testing;
mod violation;
mod workspace;

pub use capture::sampler::{sampling_active, stuck_polls};
pub use capture::scope::Scope;
pub use catalogue::{
    BLOCKING_CLIENTS, CATALOGUE, CatalogueRow, Category, LOCK_WAIT_LIGHT_BELOW, Level, ParseLevelError, Weight,
};
pub use config::{
    Config, ConfigBuilder, ConfigError, ENV_ENABLE, ENV_FAIL_SEVERITY, ENV_MAX_VIOLATIONS, ENV_SLOW_POLL_MS,
    ENV_STUCK_MS, parse_severity,
};
// The defaults and limits are associated constants of `Config` now; the old root names stay one release.
#[allow(deprecated)]
pub use config::{
    DEFAULT_ALLOWLIST, DEFAULT_FAIL_SEVERITY, DEFAULT_MAX_VIOLATIONS_PER_SCOPE, DEFAULT_SLOW_POLL_THRESHOLD,
    DEFAULT_STUCK_POLL_THRESHOLD, MAX_THRESHOLD_MS, MAX_VIOLATIONS_LIMIT,
};
pub use config::{baseline, file as config_file};
pub use header::{
    HeaderEntry, HeaderParseError, KnownCalls, MAX_HEADER_LEN, ViolationsHeader, X_BLOCKCOP_REQUEST_ID,
    X_BLOCKING_VIOLATIONS,
};
pub use instrument::{InstrumentExt, Instrumented, instrument};
pub use layer::BlockCopLayer;
pub use start::init;
pub use violation::{CallSite, Frame, SourceLocation, Stuck, Violation, Violations};

/// Hooks for blockcop's own tests (the signal-safety stress test); not part of the API, may change at any time.
#[doc(hidden)]
pub mod test_hooks {
    pub use crate::capture::sampler::stress_sample;
}

/// The same as `test_hooks::stress_sample`, which replaces it.
#[doc(hidden)]
#[deprecated(since = "0.2.0", note = "a test hook: use blockcop::test_hooks::stress_sample")]
pub fn stress_sample(target: usize, timeout: std::time::Duration) -> usize {
    test_hooks::stress_sample(target, timeout)
}

/// Runs `f` with detection suspended on this thread: its blocking calls are not recorded and its time is left
/// out of the enclosing poll's slow-poll check. For blocking that is deliberate and known to be short.
///
/// ```
/// let text = blockcop::allow_blocking(|| std::fs::read_to_string("Cargo.toml"));
/// ```
pub fn allow_blocking<R>(f: impl FnOnce() -> R) -> R {
    capture::scope::allow_blocking(f)
}

/// True when this build intercepts libc calls (Linux/glibc with the `intercept` feature); otherwise only slow
/// polls are detected.
pub const fn is_interposing() -> bool {
    capture::intercept::INTERPOSING
}

/// Whether blockcop's warm-up has finished: loading the program's debug info for symbolizing stacks, started in the
/// background (thread `blockcop-warm-up`) when an enabled layer, scope or runtime installation is first made. Until
/// it has, the first violation to be symbolized waits for the rest of it (about a second on a 150 MB debug binary;
/// see the README's performance section).
pub fn warmed_up() -> bool {
    capture::symbolize::warmed_up()
}

/// The workspace root that call sites are shown relative to, when one was found: the directory the executable's own
/// code was compiled in (`DW_AT_comp_dir` in its debug info; cargo compiles local packages in the workspace root),
/// whatever the working directory; without debug info, the nearest ancestor of `CARGO_MANIFEST_DIR`, or of the
/// current directory, whose `Cargo.toml` has a `[workspace]` table.
pub fn workspace_root() -> Option<&'static std::path::Path> {
    workspace::root()
}
