//! Violations, their severity and level, and how a call site is chosen from a stack.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize, Serializer};

use crate::catalogue::Category;

/// The weight of one violation, on aiocop's scale (heavy 50, moderate 10, light 1, trivial 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Weight {
    /// 0: harmless on its own, e.g. a write to stdout.
    Trivial,
    /// 1: cheap, e.g. a `stat`.
    Light,
    /// 10: worth fixing, e.g. opening a file.
    Moderate,
    /// 50: stalls the worker thread, e.g. a sleep or a DNS lookup.
    Heavy,
}

impl Weight {
    /// The numeric weight: 0, 1, 10 or 50.
    pub const fn value(self) -> u32 {
        match self {
            Weight::Trivial => 0,
            Weight::Light => 1,
            Weight::Moderate => 10,
            Weight::Heavy => 50,
        }
    }

    /// The weight whose value is the largest not above `value`: 50 and up heavy, 10 moderate, 1 light, 0 trivial.
    pub const fn from_value(value: u32) -> Weight {
        if value >= 50 {
            Weight::Heavy
        } else if value >= 10 {
            Weight::Moderate
        } else if value >= 1 {
            Weight::Light
        } else {
            Weight::Trivial
        }
    }

    /// The weight of a call of `category` that blocked for `duration`, given the slow-poll `threshold`.
    ///
    /// Measured cost can raise the static weight, never lower it: `>= 10 × threshold` is heavy, `>= threshold`
    /// at least moderate. A lock wait has no static weight: under 1 ms it is light, from 1 ms moderate. A trivial
    /// call (console output) stays trivial: on a loaded machine a write to stdout can take milliseconds of wall
    /// time while the thread is preempted, and logging is not the blocking a developer is after.
    pub fn for_call(base: Weight, category: Category, duration: Duration, threshold: Duration) -> Weight {
        if base == Weight::Trivial {
            return Weight::Trivial;
        }
        let base = if category == Category::LockWait {
            if duration < LOCK_WAIT_LIGHT_BELOW { Weight::Light } else { Weight::Moderate }
        } else {
            base
        };
        base.max(Self::for_duration(duration, threshold))
    }

    /// The weight measured time alone earns: heavy at `>= 10 × threshold`, moderate at `>= threshold`, otherwise
    /// trivial. This is also the weight of a slow poll.
    pub fn for_duration(duration: Duration, threshold: Duration) -> Weight {
        if duration >= threshold.saturating_mul(10) {
            Weight::Heavy
        } else if duration >= threshold {
            Weight::Moderate
        } else {
            Weight::Trivial
        }
    }
}

/// A lock wait shorter than this is light; from this on it is moderate. 1 ms.
pub const LOCK_WAIT_LIGHT_BELOW: Duration = Duration::from_millis(1);

impl Serialize for Weight {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.value())
    }
}

/// The level of a severity: high from 50, medium from 10, low below (aiocop's thresholds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Severity below 10.
    Low,
    /// Severity 10 to 49.
    Medium,
    /// Severity 50 and above.
    High,
}

impl Level {
    /// The level of a severity (the max weight of a set of violations).
    pub const fn of(severity: u32) -> Level {
        if severity >= Weight::Heavy.value() {
            Level::High
        } else if severity >= Weight::Moderate.value() {
            Level::Medium
        } else {
            Level::Low
        }
    }

    /// The lowest severity that has this level: 0, 10 or 50.
    pub const fn min_severity(self) -> u32 {
        match self {
            Level::Low => 0,
            Level::Medium => Weight::Moderate.value(),
            Level::High => Weight::Heavy.value(),
        }
    }

    /// `"low"`, `"medium"` or `"high"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    pub task: Option<crate::report::run::TaskContext>,
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

/// Where a frame's code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// std, core, alloc (from the toolchain's sources).
    Std,
    /// blockcop's interposer (the hook and the stack capture above it).
    Hook,
    /// blockcop itself, outside the interposer (the poll of a scope).
    Blockcop,
    /// A crate from a registry or git dependency (under the cargo home).
    Dependency,
    /// The user's own code.
    User,
    /// No file information: libc and other code without debug info.
    Unknown,
}

/// What the classifier needs to know about this machine.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    /// `$CARGO_HOME`, usually `~/.cargo`.
    pub(crate) cargo_home: Option<String>,
    /// blockcop's own `src/` directory.
    pub(crate) blockcop_src: String,
    /// The workspace root: non-Rust code under it (built with `cc`) is the user's own.
    pub(crate) workspace_root: Option<String>,
}

const STD_PREFIXES: [&str; 6] = ["std::", "core::", "alloc::", "<std::", "<core::", "<alloc::"];

pub(crate) fn classify(frame: &Frame, paths: &Paths) -> Origin {
    let func = frame.function.as_deref().unwrap_or("");
    let Some(file) = frame.file.as_deref() else {
        return if STD_PREFIXES.iter().any(|p| func.starts_with(p)) { Origin::Std } else { Origin::Unknown };
    };
    if file.starts_with("/rustc/") || file.contains("/rustlib/src/rust/library/") {
        Origin::Std
    } else if let Some(rest) = file.strip_prefix(&paths.blockcop_src) {
        if rest.starts_with("intercept/") || rest.starts_with("sampler/") { Origin::Hook } else { Origin::Blockcop }
    } else if file.contains("/.cargo/registry/")
        || file.contains("/.cargo/git/")
        || paths.cargo_home.as_deref().is_some_and(|home| {
            Path::new(file).starts_with(Path::new(home).join("registry"))
                || Path::new(file).starts_with(Path::new(home).join("git"))
        })
    {
        Origin::Dependency
    } else if !file.ends_with(".rs") && !paths.workspace_root.as_deref().is_some_and(|r| file.starts_with(r)) {
        // C, assembly or other code from outside the workspace: libc with debug info, a system library.
        Origin::Unknown
    } else {
        Origin::User
    }
}

/// The call site, blocking API and trimmed stack chosen from a stack (innermost frame first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selection {
    pub(crate) call_site: CallSite,
    pub(crate) blocking_api: Option<String>,
    pub(crate) blocking_api_crate: Option<String>,
    pub(crate) stack: Vec<Frame>,
    pub(crate) call_chain: Vec<Frame>,
}

/// Chooses the call site: the first frame in the user's own code, skipping std/core/alloc, libc, blockcop and
/// dependencies; the blocking API is the frame just below it when that frame is std or a dependency. The trimmed
/// stack runs from the first frame past blockcop's hook to the outermost user frame (or, without one, to the frame
/// before blockcop's poll of the scope).
pub(crate) fn select(frames: &[Frame], paths: &Paths, root: Option<&Path>) -> Selection {
    let origins: Vec<Origin> = frames.iter().map(|f| classify(f, paths)).collect();
    // Skip everything up to the hook (the stack capture's own frames, std's catch_unwind) and libc's frames,
    // which have no file, just below it.
    let after_hook = origins.iter().rposition(|o| *o == Origin::Hook).map_or(0, |i| i + 1);
    let start = origins[after_hook..]
        .iter()
        .position(|o| !matches!(o, Origin::Blockcop | Origin::Unknown))
        .map_or(origins.len(), |i| after_hook + i);
    let scope_poll = origins[start..].iter().position(|o| *o == Origin::Blockcop).map_or(origins.len(), |i| start + i);
    // Past the outermost user frame there is only the runtime and the framework: leave them out.
    let end = origins[start..scope_poll].iter().rposition(|o| *o == Origin::User).map_or(scope_poll, |i| start + i + 1);
    let stack: Vec<Frame> = frames[start..end]
        .iter()
        .map(|f| Frame { file: f.file.as_deref().map(|p| relative(p, root)), ..f.clone() })
        .collect();
    let user = origins[start..end].iter().position(|o| *o == Origin::User);
    let call_site = match user {
        Some(i) => stack[i].location().map_or(CallSite::Unknown, CallSite::Source),
        None if frames.iter().all(|f| f.file.is_none()) && !frames.is_empty() => CallSite::NoDebugInfo,
        None => CallSite::Unknown,
    };
    let (blocking_api, blocking_api_crate) = match user {
        Some(0) | None => (None, None),
        Some(i) => {
            let frame = &frames[start + i - 1];
            match origins[start + i - 1] {
                Origin::Std => (frame.function.clone(), Some("std".to_owned())),
                Origin::Dependency => (frame.function.clone(), dependency_crate(frame)),
                _ => (None, None),
            }
        }
    };
    let mut call_chain: Vec<Frame> = Vec::new();
    for (frame, origin) in stack.iter().zip(&origins[start..end]).rev() {
        if *origin != Origin::User || frame.location().is_none() {
            continue;
        }
        // Of consecutive frames at one line, the innermost names the function: an async fn's body, not its poll.
        match call_chain.last_mut() {
            Some(last) if last.file == frame.file && last.line == frame.line => *last = frame.clone(),
            _ => call_chain.push(frame.clone()),
        }
    }
    Selection { call_site, blocking_api, blocking_api_crate, stack, call_chain }
}

/// The crate a dependency frame belongs to: from its path under the cargo home (`registry/src/<index>/<crate>-<ver>/`
/// or `git/checkouts/<crate>-<hash>/`), else the first segment of its function path.
fn dependency_crate(frame: &Frame) -> Option<String> {
    let file = frame.file.as_deref().unwrap_or("");
    let from_dir = |dir: &str| {
        // `tokio-1.54.1` -> `tokio`, `sqlite-3f2a9c` -> `sqlite`: cut at the last `-` that precedes a digit or hash.
        dir.rsplit_once('-').map_or(dir, |(name, _)| name).to_owned()
    };
    if let Some((_, rest)) = file.split_once("/registry/src/") {
        return rest.split('/').nth(1).map(from_dir);
    }
    if let Some((_, rest)) = file.split_once("/git/checkouts/") {
        return rest.split('/').next().map(from_dir);
    }
    let name = frame.function.as_deref()?.trim_start_matches('<');
    name.split("::").next().map(str::to_owned)
}

/// Crates that implement locks rather than hold them: a wait inside them belongs to whoever called them.
const LOCK_IMPLEMENTATIONS: &[&str] = &["parking_lot::", "parking_lot_core::", "lock_api::"];

/// Whether a lock wait (or a slow poll's stack sample) is tokio's own: the first frame past the
/// hook that is not std, libc, blockcop or a lock implementation (parking_lot, which tokio's `parking_lot` feature
/// uses) belongs to tokio. tokio's runtime, blocking pool and sync primitives hold their internal locks (and spin
/// on them) for a few instructions; that is not the user's blocking.
pub(crate) fn lock_owned_by_tokio(frames: &[Frame], paths: &Paths) -> bool {
    let origins: Vec<Origin> = frames.iter().map(|f| classify(f, paths)).collect();
    let after_hook = origins.iter().rposition(|o| *o == Origin::Hook).map_or(0, |i| i + 1);
    let lock_implementation = |f: &Frame| {
        let name = f.function.as_deref().unwrap_or("");
        let name = name.strip_prefix('<').unwrap_or(name);
        LOCK_IMPLEMENTATIONS.iter().any(|p| name.starts_with(p))
    };
    let owner = (after_hook..frames.len()).find(|&i| {
        !matches!(origins[i], Origin::Std | Origin::Unknown | Origin::Blockcop) && !lock_implementation(&frames[i])
    });
    owner.is_some_and(|i| {
        let name = frames[i].function.as_deref().unwrap_or("");
        origins[i] == Origin::Dependency && (name.starts_with("tokio::") || name.starts_with("<tokio::"))
    })
}

/// Whether a lock wait is for std's stdout or stderr lock: a std `stdio` frame lies between the hook and the first
/// frame outside std and libc. Console output is trivial, and so is waiting for its lock.
pub(crate) fn waits_for_stdio(frames: &[Frame], paths: &Paths) -> bool {
    let origins: Vec<Origin> = frames.iter().map(|f| classify(f, paths)).collect();
    let after_hook = origins.iter().rposition(|o| *o == Origin::Hook).map_or(0, |i| i + 1);
    frames[after_hook..]
        .iter()
        .zip(&origins[after_hook..])
        .take_while(|(_, o)| matches!(o, Origin::Std | Origin::Unknown))
        .any(|(f, _)| f.function.as_deref().is_some_and(|n| n.contains("std::io::stdio::")))
}

/// `file` relative to the workspace `root` when it lies inside it, otherwise unchanged.
pub(crate) fn relative(file: &str, root: Option<&Path>) -> String {
    root.and_then(|r| Path::new(file).strip_prefix(r).ok())
        .map_or_else(|| file.to_owned(), |p| p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: Option<&str>, line: u32) -> Frame {
        Frame {
            function: Some(function.to_owned()),
            file: file.map(str::to_owned),
            line: file.map(|_| line),
            column: file.map(|_| 5),
        }
    }

    fn paths() -> Paths {
        Paths {
            cargo_home: Some("/home/dev/.cargo".into()),
            blockcop_src: "/work/blockcop/src/".into(),
            workspace_root: Some("/work/app".into()),
        }
    }

    const ROOT: &str = "/work/app";

    fn hook() -> Vec<Frame> {
        vec![
            frame(
                "backtrace::backtrace::trace_unsynchronized",
                Some("/home/dev/.cargo/registry/src/index.crates.io-1/backtrace-0.3.77/src/backtrace/mod.rs"),
                66,
            ),
            frame("std::panicking::try", Some("/rustc/abc/library/std/src/panicking.rs"), 500),
            frame("blockcop::intercept::hooks::record", Some("/work/blockcop/src/intercept/hooks.rs"), 200),
            frame("clock_nanosleep", Some("/work/blockcop/src/intercept/hooks.rs"), 90),
        ]
    }

    fn poll_tail() -> Vec<Frame> {
        vec![
            frame(
                "<blockcop::Instrumented<F> as core::future::Future>::poll",
                Some("/work/blockcop/src/instrument.rs"),
                70,
            ),
            frame(
                "tokio::runtime::task::core::Core::poll",
                Some("/home/dev/.cargo/registry/src/index.crates.io-1/tokio-1.54.1/src/runtime/task/core.rs"),
                300,
            ),
        ]
    }

    #[test]
    fn call_site_skips_std_and_names_the_std_api() {
        let mut frames = hook();
        frames.extend([
            frame(
                "std::sys::pal::unix::thread::Thread::sleep",
                Some("/rustc/abc/library/std/src/sys/pal/unix/thread.rs"),
                10,
            ),
            frame("std::thread::sleep", Some("/rustc/abc/library/std/src/thread/mod.rs"), 20),
            frame("app::handlers::retry::{{closure}}", Some("/work/app/src/handlers.rs"), 88),
            frame("app::main::{{closure}}", Some("/work/app/src/main.rs"), 12),
        ]);
        frames.extend(poll_tail());
        let s = select(&frames, &paths(), Some(Path::new(ROOT)));
        assert_eq!(s.call_site.to_string(), "src/handlers.rs:88:5");
        assert_eq!(s.blocking_api.as_deref(), Some("std::thread::sleep"));
        assert_eq!(s.blocking_api_crate.as_deref(), Some("std"));
        // Trimmed: no blockcop frames, nothing past the scope's poll.
        assert_eq!(s.stack.len(), 4);
        assert_eq!(s.stack[0].function.as_deref(), Some("std::sys::pal::unix::thread::Thread::sleep"));
    }

    #[test]
    fn call_chain_runs_from_the_outermost_user_frame_to_the_call_site() {
        let mut frames = hook();
        frames.extend([
            frame("std::fs::read_to_string", Some("/rustc/abc/library/std/src/fs.rs"), 10),
            frame("app::util::read_config", Some("/work/app/src/util.rs"), 7),
            frame("app::util::load", Some("/work/app/src/util.rs"), 15),
            frame("tower::util::map::Map::call", Some("/home/dev/.cargo/registry/src/i/tower-0.5.2/src/map.rs"), 3),
            frame("app::handlers::index::{{closure}}", Some("/work/app/src/handlers.rs"), 40),
            frame("<app::handlers::index::{{closure}} as Future>::poll", Some("/work/app/src/handlers.rs"), 40),
        ]);
        frames.extend(poll_tail());
        let s = select(&frames, &paths(), Some(Path::new(ROOT)));
        let chain: Vec<String> = s.call_chain.iter().map(|f| f.location().expect("a location").to_string()).collect();
        // Outermost first, the call site last; the dependency between is not the user's; the handler once.
        assert_eq!(chain, ["src/handlers.rs:40:5", "src/util.rs:15:5", "src/util.rs:7:5"]);
        assert_eq!(chain.last().map(String::as_str), Some(s.call_site.to_string().as_str()));
        assert_eq!(s.call_chain[0].function.as_deref(), Some("app::handlers::index::{{closure}}"));
    }

    #[test]
    fn blocking_call_inside_a_dependency_points_at_the_users_call() {
        let mut frames = hook();
        frames.extend([
            frame("std::fs::File::open", Some("/rustc/abc/library/std/src/fs.rs"), 10),
            frame(
                "sqlite::conn::open",
                Some("/home/dev/.cargo/registry/src/index.crates.io-1/sqlite-0.3.0/src/conn.rs"),
                44,
            ),
            frame("sqlite::Db::query", Some("/home/dev/.cargo/git/checkouts/sqlite-1/src/lib.rs"), 9),
            frame("app::store::load", Some("/work/app/src/store.rs"), 31),
        ]);
        frames.extend(poll_tail());
        let s = select(&frames, &paths(), Some(Path::new(ROOT)));
        assert_eq!(s.call_site.to_string(), "src/store.rs:31:5");
        assert_eq!(s.blocking_api.as_deref(), Some("sqlite::Db::query"));
        assert_eq!(s.blocking_api_crate.as_deref(), Some("sqlite"));
    }

    #[test]
    fn user_helper_two_calls_deep_is_the_call_site() {
        let mut frames = hook();
        frames.extend([
            frame("std::fs::read_to_string", Some("/rustc/abc/library/std/src/fs.rs"), 10),
            frame("app::util::read_config", Some("/work/app/src/util.rs"), 7),
            frame("app::util::load", Some("/work/app/src/util.rs"), 15),
            frame("app::handlers::index::{{closure}}", Some("/work/app/src/handlers.rs"), 40),
        ]);
        frames.extend(poll_tail());
        let s = select(&frames, &paths(), Some(Path::new(ROOT)));
        assert_eq!(s.call_site.to_string(), "src/util.rs:7:5");
        assert_eq!(s.blocking_api.as_deref(), Some("std::fs::read_to_string"));
    }

    #[test]
    fn std_frames_without_files_are_still_std_and_libc_is_skipped() {
        let mut frames = vec![frame("__GI___clock_nanosleep", None, 0)];
        frames.extend(hook());
        frames.extend([frame("std::thread::sleep", None, 0), frame("app::run", Some("/elsewhere/app/src/lib.rs"), 3)]);
        let s = select(&frames, &paths(), Some(Path::new(ROOT)));
        assert_eq!(s.call_site.to_string(), "/elsewhere/app/src/lib.rs:3:5");
        assert_eq!(s.blocking_api.as_deref(), Some("std::thread::sleep"));
    }

    #[test]
    fn c_code_outside_the_workspace_is_not_the_users() {
        let mut frames = hook();
        frames.extend([
            frame("__GI___clock_gettime", Some("./time/../sysdeps/unix/sysv/linux/clock_gettime.c"), 42),
            frame("cpu_time::ThreadTime::now", Some("/home/dev/.cargo/registry/src/i/cpu-time-1.0.0/src/lib.rs"), 9),
            frame("app::hash", Some("/work/app/src/hash.rs"), 12),
        ]);
        let s = select(&frames, &paths(), Some(Path::new(ROOT)));
        assert_eq!(s.call_site.to_string(), "src/hash.rs:12:5");
        assert_eq!(s.blocking_api_crate.as_deref(), Some("cpu-time"));
        // The user's own C code (built with `cc`, inside the workspace) is the user's.
        let frames = vec![frame("native_sum", Some("/work/app/native/sum.c"), 3)];
        assert_eq!(select(&frames, &paths(), Some(Path::new(ROOT))).call_site.to_string(), "native/sum.c:3:5");
    }

    #[test]
    fn tokio_internal_lock_waits_are_tokios_not_the_users() {
        let tokio_file = Some("/home/dev/.cargo/registry/src/x/tokio-1.54.1/src/runtime/blocking/pool.rs");
        let mut frames = hook();
        frames.extend([
            frame(
                "std::sys::sync::mutex::futex::Mutex::lock_contended",
                Some("/rustc/abc/library/std/src/sys/sync/mutex/futex.rs"),
                9,
            ),
            frame("tokio::runtime::blocking::pool::Spawner::spawn_task", tokio_file, 40),
            frame("app::handlers::create::{{closure}}", Some("/work/app/src/handlers.rs"), 159),
        ]);
        frames.extend(poll_tail());
        assert!(lock_owned_by_tokio(&frames, &paths()));
        // The user's own std Mutex is the user's, even with tokio further down the stack.
        let mut frames = hook();
        frames.extend([
            frame(
                "std::sys::sync::mutex::futex::Mutex::lock_contended",
                Some("/rustc/abc/library/std/src/sys/sync/mutex/futex.rs"),
                9,
            ),
            frame("app::store::save", Some("/work/app/src/store.rs"), 12),
        ]);
        frames.extend(poll_tail());
        assert!(!lock_owned_by_tokio(&frames, &paths()));
        // tokio built with its `parking_lot` feature: the wait is inside parking_lot, the lock is tokio's.
        let pl = |krate: &str| format!("/home/dev/.cargo/registry/src/x/{krate}-0.9.12/src/lib.rs");
        let mut frames = hook();
        frames.extend([
            frame("parking_lot_core::thread_parker::imp::ThreadParker::futex_wait", Some(&pl("parking_lot_core")), 1),
            frame("parking_lot_core::word_lock::WordLock::lock_slow", Some(&pl("parking_lot_core")), 2),
            frame("<lock_api::mutex::Mutex<R, T>>::lock", Some(&pl("lock_api")), 3),
            frame("tokio::loom::std::parking_lot::Mutex<T>::lock", tokio_file, 4),
            frame("app::handlers::create::{{closure}}", Some("/work/app/src/handlers.rs"), 159),
        ]);
        frames.extend(poll_tail());
        assert!(lock_owned_by_tokio(&frames, &paths()));
        // The user's own parking_lot Mutex stays the user's.
        let mut frames = hook();
        frames.extend([
            frame("parking_lot_core::word_lock::WordLock::lock_slow", Some(&pl("parking_lot_core")), 2),
            frame("parking_lot::raw_mutex::RawMutex::lock_slow", Some(&pl("parking_lot")), 3),
            frame("app::store::save", Some("/work/app/src/store.rs"), 12),
        ]);
        frames.extend(poll_tail());
        assert!(!lock_owned_by_tokio(&frames, &paths()));
    }

    #[test]
    fn no_debug_info_is_said_not_invented() {
        let frames = vec![frame("read", None, 0), frame("app::run", None, 0), frame("main", None, 0)];
        let s = select(&frames, &paths(), None);
        assert_eq!(s.call_site, CallSite::NoDebugInfo);
        assert_eq!(s.call_site.to_string(), "no debug info");
        assert_eq!(s.blocking_api, None);
    }

    #[test]
    fn runtime_only_stack_has_unknown_site() {
        let mut frames = hook();
        frames.extend(poll_tail());
        frames.insert(
            2,
            frame(
                "tokio::sync::notify::Notify::notify_one",
                Some("/home/dev/.cargo/registry/src/x/tokio-1/src/sync/notify.rs"),
                5,
            ),
        );
        let s = select(&frames, &paths(), None);
        assert_eq!(s.call_site, CallSite::Unknown);
    }

    #[test]
    fn level_thresholds_follow_aiocop() {
        assert_eq!(Level::of(0), Level::Low);
        assert_eq!(Level::of(9), Level::Low);
        assert_eq!(Level::of(10), Level::Medium);
        assert_eq!(Level::of(49), Level::Medium);
        assert_eq!(Level::of(50), Level::High);
        assert_eq!(Level::of(500), Level::High);
    }

    #[test]
    fn duration_raises_weight_never_lowers_it() {
        let t = Duration::from_millis(10);
        let w = |base, cat, ms| Weight::for_call(base, cat, Duration::from_millis(ms), t);
        assert_eq!(w(Weight::Light, Category::Metadata, 0), Weight::Light);
        assert_eq!(w(Weight::Light, Category::Metadata, 10), Weight::Moderate);
        assert_eq!(w(Weight::Light, Category::Metadata, 100), Weight::Heavy);
        // Console output stays trivial, however long the write (or the wait for its lock) took.
        assert_eq!(w(Weight::Trivial, Category::BlockingIo, 99), Weight::Trivial);
        assert_eq!(w(Weight::Heavy, Category::Sleep, 0), Weight::Heavy);
        // Lock waits are weighted by the wait itself.
        let lock = |us| Weight::for_call(Weight::Light, Category::LockWait, Duration::from_micros(us), t);
        assert_eq!(lock(999), Weight::Light);
        assert_eq!(lock(1_000), Weight::Moderate);
        assert_eq!(lock(10_000), Weight::Moderate);
        assert_eq!(lock(100_000), Weight::Heavy);
        // Slow polls: moderate at the threshold, heavy at ten times.
        assert_eq!(Weight::for_duration(Duration::from_millis(9), t), Weight::Trivial);
        assert_eq!(Weight::for_duration(Duration::from_millis(10), t), Weight::Moderate);
        assert_eq!(Weight::for_duration(Duration::from_millis(100), t), Weight::Heavy);
    }

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
