//! Shared helpers for the integration suites: run a scenario in a scope on either runtime flavor, find a
//! scenario's marked line, and assert on violations.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;

use blockcop::{Config, Level, Scope, Violation, Violations};

/// The scenarios' source file, relative to the workspace root (as call sites are shown).
pub const SCENARIOS: &str = "test-apps/scenarios/src/lib.rs";

/// The two tokio runtime flavors every scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    CurrentThread,
    MultiThread,
}

pub fn runtime(flavor: Flavor) -> tokio::runtime::Runtime {
    match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build(),
    }
    .expect("build runtime")
}

/// An enabled configuration with the defaults (10 ms slow-poll threshold).
pub fn enabled() -> Config {
    Config::builder().enabled(true).build()
}

/// Runs the future `make` builds as a spawned task, instrumented in a fresh scope, and returns the scope's
/// violations.
#[track_caller]
pub fn run_in_scope<Fut>(flavor: Flavor, make: impl FnOnce() -> Fut) -> Violations
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let scope = Scope::new(&enabled());
    let task = scope.instrument(make());
    runtime(flavor).block_on(async move { tokio::spawn(task).await.expect("scenario task panicked") });
    scope.take_violations()
}

/// The 1-based line of `file` (relative to the workspace root) that contains `needle`, which must be on one line only.
#[allow(dead_code)]
pub fn line_containing(file: &str, needle: &str) -> u32 {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
    let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let hits: Vec<u32> = source.lines().zip(1..).filter(|(l, _)| l.contains(needle)).map(|(_, n)| n).collect();
    assert_eq!(hits.len(), 1, "expected one line of {file} with {needle:?}, found {hits:?}");
    hits[0]
}

/// The 1-based line of the scenarios file whose trailing comment is `// blocks: <marker>` and which contains
/// `needle` (to tell apart several lines with the same marker).
#[track_caller]
pub fn marked_line(needle: &str, marker: &str) -> u32 {
    marked_line_in(SCENARIOS, needle, marker)
}

/// Like [`marked_line`], in `file` (relative to the workspace root).
#[track_caller]
pub fn marked_line_in(file: &str, needle: &str, marker: &str) -> u32 {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
    let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let suffix = format!("// blocks: {marker}");
    let hits: Vec<u32> = source
        .lines()
        .zip(1..)
        .filter(|(l, _)| l.trim_end().ends_with(&suffix) && l.contains(needle))
        .map(|(_, n)| n)
        .collect();
    assert_eq!(hits.len(), 1, "expected one line with {needle:?} marked {suffix:?}, found {hits:?}");
    hits[0]
}

/// Asserts that `violations` has an `event` violation at `level` whose call site is the scenario line containing
/// `needle` and marked `// blocks: <event>`; returns it.
#[track_caller]
pub fn assert_blocked<'a>(violations: &'a Violations, event: &str, level: Level, needle: &str) -> &'a Violation {
    let line = marked_line(needle, event);
    let Some(v) = violations.iter().find(|v| v.event == event) else {
        panic!("no {event} violation; got:\n{}", describe(violations));
    };
    assert_eq!(v.level, level, "level of {v}");
    let site = v.call_site.location().unwrap_or_else(|| panic!("no call site: {v}"));
    assert_eq!((site.file.as_str(), site.line), (SCENARIOS, line), "call site of {v}");
    v
}

/// Asserts that nothing was recorded.
#[track_caller]
pub fn assert_clean(violations: &Violations) {
    assert!(violations.is_empty(), "expected no violations, got:\n{}", describe(violations));
}

pub fn describe(violations: &Violations) -> String {
    let mut s = String::new();
    for v in violations {
        s.push_str(&format!("  {v}\n"));
        for f in &v.stack {
            s.push_str(&format!("      {f}\n"));
        }
    }
    s.push_str(&format!("  dropped: {}\n", violations.dropped));
    s
}

#[allow(unused_imports)] // not every suite loads the machine
pub use integration::BusyLoops;
