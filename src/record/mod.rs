//! The run-file records: what one line of a run file says ([`Record`]), and the records of a scope's violations.
//!
//! Every process with blockcop enabled writes them to its run file ([`run_file`](crate::capture::run_file)), and emits each violation as a
//! `tracing` event ([`events`]); `blockcop report` reads them back ([`crate::report::run`]). Each line is one
//! [`Record`]; see the README for the schema (version [`SCHEMA_VERSION`]: each distinct stack is written once per
//! file, as a `stack` line that later records refer to).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::catalogue::{Category, Level};
use crate::clock::micros_since_epoch;
use crate::config::file::AllowEntry;
use crate::violation::{CallSite, Frame, RequestContext, Stuck, TaskContext, Violation, Violations};

pub(crate) mod events;

/// A `stack` line's frames and call chain.
pub(crate) type InternedStack = (Arc<[Frame]>, Arc<[Frame]>);

/// Calls an entry of the allowlist file left out: the entry (its index in [`Config::allow_entries`](crate::Config::allow_entries)),
/// the event and how many calls.
pub(crate) type EntryAllowed = (usize, &'static str, u32);

/// The schema version written in every record's `version` field. Version 2 writes each distinct stack once per file
/// (a `stack` line) and lets violation records refer to it by `stack_id`; readers read versions 1 and 2.
pub const SCHEMA_VERSION: u32 = 2;

/// The oldest schema version [`read_run_files`](crate::report::run::read_run_files) reads.
pub const OLDEST_SCHEMA_VERSION: u32 = 1;

/// One line of a run file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Record {
    /// [`SCHEMA_VERSION`].
    pub version: u32,
    /// A violation, or a count of dropped ones.
    #[serde(flatten)]
    pub body: RecordBody,
    /// The request, when the violation happened while serving one.
    pub request: Option<RequestContext>,
    /// The task, when known.
    pub task: Option<TaskContext>,
    /// The test, when known: the name of the thread that created the scope, as libtest names its threads (a
    /// runtime's worker threads, `main`, and names that are not a Rust path never count as tests).
    pub test: Option<String>,
    /// The id of the scope.
    pub scope_id: u64,
    /// The process id.
    pub pid: u32,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: u64,
}

/// What a record says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
// Nearly every record is a violation: boxing it would add an allocation per record for the rare `dropped` one.
#[allow(clippy::large_enum_variant)]
pub enum RecordBody {
    /// One violation.
    Violation(ViolationRecord),
    /// Violations a scope's cap dropped.
    Dropped {
        /// How many.
        count: u64,
    },
    /// A stack, written once per file before the first violation record that refers to it by `stack_id`.
    /// [`read_run_files`](crate::report::run::read_run_files) puts it back into those records and does not hand the line on.
    Stack {
        /// The id records refer to, unique within the file.
        id: u64,
        /// The trimmed stack (see [`ViolationRecord::stack`]).
        frames: Arc<[Frame]>,
        /// The call chain that goes with it (see [`ViolationRecord::call_chain`]).
        #[serde(default)]
        call_chain: Arc<[Frame]>,
    },
    /// The first line of every run file: what the process that wrote it knew about its sources.
    Run {
        /// The workspace root of the crate that was built ([`crate::workspace_root`]); call sites inside it are
        /// relative to it, and `blockcop report` reads their source lines from it.
        workspace_root: Option<String>,
        /// The entries of the allowlist file in force (see [`crate::config::file`]); absent when there were none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        allowlist: Vec<AllowlistEntryRecord>,
    },
    /// Calls an entry of the allowlist file left out (one line per scope, entry and event).
    Allowed {
        /// The entry, as `path:line` ([`AllowlistEntryRecord::source`]).
        entry: String,
        /// The event it allowed, e.g. `open64`.
        event: String,
        /// How many calls.
        count: u64,
    },
}

/// An entry of the allowlist file, as a run file's first line lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AllowlistEntryRecord {
    /// Where the entry is written: `path:line`.
    pub source: String,
    /// The function-path prefix.
    pub function: String,
    /// Only this event, when given.
    pub event: Option<String>,
    /// Only this category, when given.
    pub category: Option<crate::Category>,
    /// Why blocking is allowed there.
    pub reason: String,
}

impl From<&AllowEntry> for AllowlistEntryRecord {
    fn from(e: &AllowEntry) -> AllowlistEntryRecord {
        AllowlistEntryRecord {
            source: e.source.clone(),
            function: e.function.clone(),
            event: e.event.clone(),
            category: e.category,
            reason: e.reason.clone(),
        }
    }
}

/// The records of the calls entries of the allowlist file left out in one scope.
pub(crate) fn allowed_records(
    by_entries: &[EntryAllowed],
    entries: &[AllowEntry],
    attribution: &Attribution,
    scope_id: u64,
) -> Vec<Record> {
    let mut counts: Vec<(usize, &str, u64)> = Vec::new();
    for &(i, event, n) in by_entries {
        match counts.iter_mut().find(|(j, e, _)| *j == i && *e == event) {
            Some((_, _, total)) => *total += u64::from(n),
            None => counts.push((i, event, u64::from(n))),
        }
    }
    let now = micros_since_epoch(SystemTime::now());
    counts
        .into_iter()
        .filter_map(|(i, event, count)| {
            Some(Record {
                version: SCHEMA_VERSION,
                body: RecordBody::Allowed { entry: entries.get(i)?.source.clone(), event: event.to_owned(), count },
                request: attribution.request.clone(),
                task: attribution.task.clone(),
                test: attribution.test.clone(),
                scope_id,
                pid: std::process::id(),
                timestamp_us: now,
            })
        })
        .collect()
}

/// A violation as written to a run file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ViolationRecord {
    /// The event, e.g. `open64` or `slow_poll`.
    pub event: String,
    /// Its category.
    pub category: Category,
    /// The weight: 0, 1, 10 or 50.
    pub weight: u32,
    /// The weight's level.
    pub level: Level,
    /// How long it blocked, in microseconds.
    pub duration_us: u64,
    /// Consecutive identical calls this record stands for.
    pub count: u32,
    /// The short detail.
    pub detail: String,
    /// The call site.
    pub call_site: CallSite,
    /// The std or dependency API below the call site.
    pub blocking_api: Option<String>,
    /// The crate of `blocking_api` (`std` or a dependency).
    pub blocking_api_crate: Option<String>,
    /// The trimmed stack. Written inline (version 1), or left out in favour of `stack_id` (version 2, which
    /// [`read_run_files`](crate::report::run::read_run_files) resolves).
    #[serde(default, skip_serializing_if = "is_empty")]
    pub stack: Arc<[Frame]>,
    /// The user's frames, outermost first, the call site last (see [`Violation::call_chain`]).
    #[serde(default, skip_serializing_if = "is_empty")]
    pub call_chain: Arc<[Frame]>,
    /// The file's `stack` line holding this record's `stack` and `call_chain`; `None` once they are in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_id: Option<u64>,
    /// The name of the thread that blocked.
    pub thread: Option<String>,
    /// Set on a stuck poll's report and on the record that completes it (see [`Violation::stuck`]); absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck: Option<Stuck>,
}

/// What a scope's records are attributed to: the request, task and test they belong to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Attribution {
    pub(crate) request: Option<RequestContext>,
    pub(crate) task: Option<TaskContext>,
    pub(crate) test: Option<String>,
}

impl ViolationRecord {
    /// The record of a violation.
    pub fn from_violation(v: &Violation) -> ViolationRecord {
        ViolationRecord {
            event: v.event.to_owned(),
            category: v.category,
            weight: v.weight.value(),
            level: v.level,
            duration_us: crate::clock::micros(v.duration),
            count: v.count,
            detail: v.detail.clone(),
            call_site: v.call_site.clone(),
            blocking_api: v.blocking_api.clone(),
            blocking_api_crate: v.blocking_api_crate.clone(),
            stack: v.stack.as_slice().into(),
            call_chain: v.call_chain.as_slice().into(),
            stack_id: None,
            thread: v.thread_name.clone(),
            stuck: v.stuck.clone(),
        }
    }

    /// The violation this record describes (for rendering); ids and the thread id are not kept in run files.
    pub fn to_violation(&self) -> Violation {
        Violation {
            event: crate::catalogue::intern(&self.event),
            category: self.category,
            weight: crate::catalogue::Weight::from_value(self.weight),
            level: self.level,
            duration: Duration::from_micros(self.duration_us),
            count: self.count,
            detail: self.detail.clone(),
            call_site: self.call_site.clone(),
            blocking_api: self.blocking_api.clone(),
            blocking_api_crate: self.blocking_api_crate.clone(),
            stack: self.stack.to_vec(),
            call_chain: self.call_chain.to_vec(),
            task: None,
            scope_id: 0,
            thread_id: 0,
            thread_name: self.thread.clone(),
            timestamp: SystemTime::UNIX_EPOCH,
            stuck: self.stuck.clone(),
        }
    }
}

fn is_empty(frames: &Arc<[Frame]>) -> bool {
    frames.is_empty()
}

/// The records of a scope's violations, in order, then a `dropped` record when the cap dropped any.
pub(crate) fn records(violations: &Violations, attribution: &Attribution, scope_id: u64) -> Vec<Record> {
    let pid = std::process::id();
    let mut out: Vec<Record> = violations
        .iter()
        .map(|v| Record {
            version: SCHEMA_VERSION,
            body: RecordBody::Violation(ViolationRecord::from_violation(v)),
            request: attribution.request.clone(),
            task: v.task.clone().or_else(|| attribution.task.clone()),
            test: attribution.test.clone(),
            scope_id,
            pid,
            timestamp_us: micros_since_epoch(v.timestamp),
        })
        .collect();
    if violations.dropped > 0 {
        out.push(Record {
            version: SCHEMA_VERSION,
            body: RecordBody::Dropped { count: violations.dropped },
            request: attribution.request.clone(),
            task: attribution.task.clone(),
            test: attribution.test.clone(),
            scope_id,
            pid,
            timestamp_us: micros_since_epoch(SystemTime::now()),
        });
    }
    out
}
