//! Violations, and how a call site is chosen from a stack.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize, Serializer};

use crate::catalogue::{Category, Level, Weight};

/// A source location: a file (relative to the workspace root when it lies inside it), a line and a column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceLocation {
    /// The file, e.g. `test-apps/notes/src/handlers.rs`.
    pub file: String,
    /// The 1-based line.
    pub line: u32,
    /// The 1-based column, when the debug info has one.
    pub column: Option<u32>,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(c) => write!(f, "{}:{}:{}", self.file, self.line, c),
            None => write!(f, "{}:{}", self.file, self.line),
        }
    }
}

/// Where in the user's code a violation happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallSite {
    /// The first frame in the user's own code.
    Source(SourceLocation),
    /// The stack had no file and line information: the binary was built without debug info (or stripped).
    /// Build tests with `debug = "line-tables-only"` or more.
    NoDebugInfo,
    /// No frame of the stack belongs to the user's code (for example, all of it is in the runtime).
    Unknown,
}

impl CallSite {
    /// The source location, if known.
    pub fn location(&self) -> Option<&SourceLocation> {
        match self {
            CallSite::Source(l) => Some(l),
            _ => None,
        }
    }
}

impl fmt::Display for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallSite::Source(l) => l.fmt(f),
            CallSite::NoDebugInfo => f.write_str("no debug info"),
            CallSite::Unknown => f.write_str("unknown"),
        }
    }
}

/// One symbolized stack frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    /// The demangled function name without its hash, e.g. `std::fs::read_to_string`.
    pub function: Option<String>,
    /// The source file as the debug info names it (absolute, or relative to the workspace root).
    pub file: Option<String>,
    /// The 1-based line.
    pub line: Option<u32>,
    /// The 1-based column.
    pub column: Option<u32>,
}

impl Frame {
    /// The frame's file, line and column, when its file and line are known.
    pub fn location(&self) -> Option<SourceLocation> {
        Some(SourceLocation { file: self.file.clone()?, line: self.line?, column: self.column.filter(|c| *c > 0) })
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.function.as_deref().unwrap_or("<unknown>"))?;
        if let Some(loc) = self.location() {
            write!(f, " at {loc}")?;
        }
        Ok(())
    }
}

/// One blocking call or slow poll seen while a thread was polling task code inside a scope.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Violation {
    /// The libc function that blocked (e.g. `clock_nanosleep`), or `slow_poll`.
    pub event: &'static str,
    /// The event's category.
    pub category: Category,
    /// The weight: the category's static weight, raised by the measured duration.
    pub weight: Weight,
    /// The level of this violation's weight.
    pub level: Level,
    /// How long the call blocked (summed over `count` calls), or how long the poll ran.
    #[serde(serialize_with = "serialize_duration_us", rename = "duration_us")]
    pub duration: Duration,
    /// How many consecutive identical calls (same event, same stack) this record stands for; usually 1.
    pub count: u32,
    /// A short detail: the path, `host:port`, program, fd or requested sleep. At most 128 bytes; never data.
    pub detail: String,
    /// The first frame in the user's own code.
    pub call_site: CallSite,
    /// The outermost std or dependency function just below the call site, e.g. `std::fs::read_to_string`.
    pub blocking_api: Option<String>,
    /// Where [`blocking_api`](Self::blocking_api) comes from: `std`, or the dependency's crate name (e.g.
    /// `rusqlite`).
    pub blocking_api_crate: Option<String>,
    /// The stack from the blocking API down to the poll of the scope, trimmed of blockcop's and libc's frames.
    pub stack: Vec<Frame>,
    /// The user's own frames of [`stack`](Self::stack), outermost first: from the handler (or task, or test) down
    /// to the call site, which is the last one. Consecutive frames at the same line (an async fn's poll and its
    /// body) appear once. Empty when no user frame is known.
    pub call_chain: Vec<Frame>,
    /// The tokio task that was being polled, when a runtime hook began the poll (see [`crate::runtime`]).
    pub task: Option<TaskContext>,
    /// The id of the scope the violation was recorded in.
    pub scope_id: u64,
    /// The OS thread id (`gettid`) of the thread that blocked.
    pub thread_id: u64,
    /// The name of the thread that blocked, when it has one.
    pub thread_name: Option<String>,
    /// When the call returned (or the poll ended).
    #[serde(serialize_with = "serialize_system_time")]
    pub timestamp: SystemTime,
    /// Set when the watchdog reported this poll as stuck while it ran: on the `stuck_poll` report made then, and on
    /// the record that completes it when the poll returns (the blocking call it was stuck in, its slow poll, or a
    /// `stuck_poll` with the poll's final duration). The two share [`Stuck::id`]; reports show the completed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stuck: Option<Stuck>,
}

/// The request a violation belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestContext {
    /// The method.
    pub method: String,
    /// The path; for a CONNECT request, its authority (`host:port`).
    pub path: String,
}

/// The task a violation belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskContext {
    /// tokio's task id, when known.
    pub id: Option<u64>,
    /// Where the task was spawned (or instrumented), `file:line:col`.
    pub spawned_at: Option<String>,
}

/// A poll the watchdog reported as stuck (still running after the stuck-poll threshold, `BLOCKCOP_STUCK_MS`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stuck {
    /// Unique within the process: the report made while the poll was stuck and the record that completes it share
    /// it.
    pub id: u64,
    /// How long the poll had run when the watchdog reported it, in microseconds.
    pub reported_after_us: u64,
    /// What the thread was doing then: `running`, `blocked in syscall 230 (clock_nanosleep)`, or
    /// `in an unknown state`.
    pub thread_state: String,
    /// False in the report made while the poll was stuck; true in the record that completes it once the poll
    /// returned.
    pub returned: bool,
}

impl Stuck {
    /// How long the poll had run when the watchdog reported it.
    pub fn reported_after(&self) -> Duration {
        Duration::from_micros(self.reported_after_us)
    }

    /// The syscall the thread was blocked in when reported (`clock_nanosleep` from
    /// `blocked in syscall 230 (clock_nanosleep)`), when its name is known.
    pub fn syscall(&self) -> Option<&str> {
        let rest = self.thread_state.strip_prefix("blocked in syscall ")?;
        rest.split_once(" (")?.1.strip_suffix(')')
    }
}

impl Violation {
    /// A violation of `event` weighing `weight` (its level derived from it), lasting `duration`, with `detail`, made
    /// now on no known thread, call site or task: the one place a violation's fields get their defaults.
    pub(crate) fn new(event: crate::catalogue::Event, weight: Weight, duration: Duration, detail: String) -> Violation {
        Violation {
            event: event.name,
            category: event.category,
            weight,
            level: Level::of(weight.value()),
            duration,
            count: 1,
            detail,
            call_site: CallSite::Unknown,
            blocking_api: None,
            blocking_api_crate: None,
            stack: Vec::new(),
            call_chain: Vec::new(),
            task: None,
            scope_id: 0,
            thread_id: 0,
            thread_name: None,
            timestamp: SystemTime::now(),
            stuck: None,
        }
    }

    /// The weight as a number: 0, 1, 10 or 50.
    pub fn severity(&self) -> u32 {
        self.weight.value()
    }

    /// What the record adds to a severity score: its weight times the calls it stands for.
    pub fn score(&self) -> u32 {
        self.weight.value().saturating_mul(self.count.max(1))
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, weight {}, {}) blocked for {:.1?} at {}",
            self.event,
            self.category,
            self.weight.value(),
            self.level,
            self.duration,
            self.call_site
        )?;
        if let Some(api) = &self.blocking_api {
            write!(f, " via {api}")?;
        }
        if !self.detail.is_empty() {
            write!(f, " [{}]", self.detail)?;
        }
        if self.count > 1 {
            write!(f, " ×{}", self.count)?;
        }
        Ok(())
    }
}

fn serialize_duration_us<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(crate::clock::micros(*d))
}

fn serialize_system_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(crate::clock::micros_since_epoch(*t))
}

/// The frames of `call_chain` (outermost first) that led to `call_site`, nearest caller first, each with its
/// location: the chain without the call site itself (its innermost entry, when that is the call site).
pub(crate) fn callers<'a>(call_chain: &'a [Frame], call_site: &CallSite) -> Vec<(SourceLocation, &'a Frame)> {
    let mut chain: Vec<_> = call_chain.iter().rev().filter_map(|f| Some((f.location()?, f))).collect();
    if chain.first().is_some_and(|(loc, _)| call_site.location() == Some(loc)) {
        chain.remove(0);
    }
    chain
}

/// The violations of a scope, a request or a task, with the count of those the per-scope cap dropped.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct Violations {
    /// The recorded violations, in the order they happened.
    pub list: Vec<Violation>,
    /// How many violations were dropped because the scope reached its cap
    /// ([`Config::max_violations_per_scope`](crate::Config::max_violations_per_scope)).
    pub dropped: u64,
}

impl Violations {
    /// The severity: the sum of the weights of every call (aiocop's `calculate_io_severity_score`), 0 when there
    /// is none. One `open64` is 10, 29 `pread64` calls through rusqlite (heavy) are 1450, three `stat`s are 3.
    pub fn severity(&self) -> u32 {
        self.list.iter().fold(0u32, |sum, v| sum.saturating_add(v.score()))
    }

    /// The violations that weigh something (weight above trivial): the ones a header names.
    pub fn weighted(&self) -> impl DoubleEndedIterator<Item = &Violation> {
        self.list.iter().filter(|v| v.weight > Weight::Trivial)
    }

    /// The level of [`severity`](Self::severity).
    pub fn level(&self) -> Level {
        Level::of(self.severity())
    }

    /// True when nothing was recorded and nothing dropped.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty() && self.dropped == 0
    }

    /// The earliest violation.
    pub fn first(&self) -> Option<&Violation> {
        self.list.first()
    }

    /// The violation with the highest weight, the earliest among equals.
    pub fn worst(&self) -> Option<&Violation> {
        self.list.iter().rev().max_by_key(|v| v.weight)
    }

    /// Iterates over the violations.
    pub fn iter(&self) -> std::slice::Iter<'_, Violation> {
        self.list.iter()
    }
}

impl<'a> IntoIterator for &'a Violations {
    type Item = &'a Violation;
    type IntoIter = std::slice::Iter<'a, Violation>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(event: &'static str, weight: Weight) -> Violation {
        Violation {
            event,
            category: Category::Sleep,
            weight,
            level: Level::of(weight.value()),
            duration: Duration::ZERO,
            count: 1,
            detail: String::new(),
            call_site: CallSite::Unknown,
            blocking_api: None,
            blocking_api_crate: None,
            stack: vec![],
            call_chain: vec![],
            task: None,
            scope_id: 1,
            thread_id: 1,
            thread_name: None,
            timestamp: SystemTime::UNIX_EPOCH,
            stuck: None,
        }
    }

    #[test]
    fn severity_sums_weights_and_worst_is_earliest_among_equals() {
        let set = Violations {
            list: vec![
                violation("statx", Weight::Light),
                violation("open64", Weight::Heavy),
                violation("clock_nanosleep", Weight::Heavy),
                violation("read", Weight::Moderate),
            ],
            dropped: 0,
        };
        assert_eq!(set.severity(), 1 + 50 + 50 + 10);
        assert_eq!(set.level(), Level::High);
        assert_eq!(set.first().unwrap().event, "statx");
        assert_eq!(set.worst().unwrap().event, "open64");
        // Merged identical calls count once each; light calls add up to a level.
        let reads = Violation { count: 10, ..violation("pread64", Weight::Light) };
        let set = Violations { list: vec![reads], dropped: 0 };
        assert_eq!((set.severity(), set.level()), (10, Level::Medium));
        // Trivial calls weigh nothing and are not among the weighted.
        let set = Violations { list: vec![violation("write", Weight::Trivial)], dropped: 0 };
        assert_eq!((set.severity(), set.weighted().count()), (0, 0));
        assert_eq!(Violations::default().severity(), 0);
        assert_eq!(Violations::default().level(), Level::Low);
    }
}
