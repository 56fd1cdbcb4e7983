//! Run files: every process with blockcop enabled appends its violations as JSON Lines to
//! `target/blockcop/<unix-ms>-<pid>.jsonl` (`BLOCKCOP_REPORT_DIR` overrides the directory; one file per process,
//! so parallel test binaries never interleave).
//!
//! The file is created at start-up ([`open`]). Records are handed to a writer thread, which serializes them, writes
//! and flushes each batch as it arrives, so a crash loses at most the records of the last few milliseconds; at
//! process exit the writer is drained and flushed. Violations dropped by a scope's cap are written as a `dropped`
//! record with their count.
//!
//! Each line is one [`Record`]; see the README for the schema (version [`SCHEMA_VERSION`]: each distinct stack is
//! written once per file, as a `stack` line that later records refer to). [`read_run_files_with`] reads them back
//! one at a time, skipping a corrupt line with its file and line number and carrying on.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::catalogue::Category;
use crate::catalogue::Level;
use crate::clock::micros_since_epoch;
use crate::violation::{CallSite, Frame, Stuck, Violation, Violations};
pub use crate::violation::{RequestContext, TaskContext};

/// The schema version written in every record's `version` field. Version 2 writes each distinct stack once per file
/// (a `stack` line) and lets violation records refer to it by `stack_id`; readers read versions 1 and 2.
pub const SCHEMA_VERSION: u32 = 2;

/// The oldest schema version [`read_run_files`] reads.
pub const OLDEST_SCHEMA_VERSION: u32 = 1;

/// The variable naming the run-file directory. By default, `<target dir>/blockcop`.
pub const ENV_REPORT_DIR: &str = "BLOCKCOP_REPORT_DIR";

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
    /// [`read_run_files`] puts it back into those records and does not hand the line on.
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

/// The allowlist file's entries, for the first line of this process's run file: set when the file is read.
static ALLOWLIST: OnceLock<Vec<AllowlistEntryRecord>> = OnceLock::new();

/// Notes the allowlist file's entries for the run file's first line (the first configuration read wins).
pub(crate) fn note_allowlist(entries: &[crate::config::file::AllowEntry]) {
    let _ = ALLOWLIST.set(
        entries
            .iter()
            .map(|e| AllowlistEntryRecord {
                source: e.source.clone(),
                function: e.function.clone(),
                event: e.event.clone(),
                category: e.category,
                reason: e.reason.clone(),
            })
            .collect(),
    );
}

/// The records of the calls entries of the allowlist file left out in one scope.
pub(crate) fn allowed_records(
    by_entries: &[crate::symbolize::EntryAllowed],
    entries: &[crate::config::file::AllowEntry],
    origin: &Origin,
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
                request: origin.request.clone(),
                task: origin.task.clone(),
                test: origin.test.clone(),
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
    /// [`read_run_files`] resolves).
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

/// Where a scope's records come from: the request, task and test they belong to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
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
pub(crate) fn records(violations: &Violations, origin: &Origin, scope_id: u64) -> Vec<Record> {
    let pid = std::process::id();
    let mut out: Vec<Record> = violations
        .iter()
        .map(|v| Record {
            version: SCHEMA_VERSION,
            body: RecordBody::Violation(ViolationRecord::from_violation(v)),
            request: origin.request.clone(),
            task: v.task.clone().or_else(|| origin.task.clone()),
            test: origin.test.clone(),
            scope_id,
            pid,
            timestamp_us: micros_since_epoch(v.timestamp),
        })
        .collect();
    if violations.dropped > 0 {
        out.push(Record {
            version: SCHEMA_VERSION,
            body: RecordBody::Dropped { count: violations.dropped },
            request: origin.request.clone(),
            task: origin.task.clone(),
            test: origin.test.clone(),
            scope_id,
            pid,
            timestamp_us: micros_since_epoch(SystemTime::now()),
        });
    }
    out
}

enum Message {
    Records(Vec<Record>),
    Flush(mpsc::SyncSender<()>),
}

struct Writer {
    tx: Mutex<Sender<Message>>,
    path: PathBuf,
}

static WRITER: OnceLock<Result<Writer, RunFileError>> = OnceLock::new();

/// Why this process's run file could not be created: the directory, the operation that failed and the error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} failed: {message}")]
#[non_exhaustive]
pub struct RunFileError {
    /// The run-file directory ([`report_dir`]).
    pub dir: PathBuf,
    /// What failed, e.g. `creating the directory /proc/x`.
    pub operation: String,
    /// The error.
    pub message: String,
}

/// The directory run files go to: `BLOCKCOP_REPORT_DIR`, else `$CARGO_TARGET_DIR/blockcop` (a relative one taken
/// from the workspace root), else
/// `<workspace root>/target/blockcop`, else `./target/blockcop`.
pub fn report_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(ENV_REPORT_DIR).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        // Cargo reads a relative target dir from where it was run, the workspace root, not from the test's
        // working directory (its package).
        let target = PathBuf::from(target);
        let target = match crate::workspace_root() {
            Some(root) if target.is_relative() => root.join(target),
            _ => target,
        };
        return target.join("blockcop");
    }
    crate::workspace_root().map_or_else(|| PathBuf::from("target"), |r| r.join("target")).join("blockcop")
}

/// Creates this process's run file (once; later calls return the first outcome): its directory, the file, and the
/// thread that writes it. Blockcop calls it at start-up when it is enabled ([`Config::from_env`](crate::Config),
/// and the first enabled layer, scope or runtime installation); violations are appended to it from then on.
///
/// # Errors
///
/// A [`RunFileError`] naming the directory and the operation that failed (creating the directory, creating the
/// file, starting the writer thread). Nothing is recorded to a run file in this process then.
pub fn open() -> Result<&'static Path, &'static RunFileError> {
    started().map(|w| w.path.as_path())
}

fn started() -> Result<&'static Writer, &'static RunFileError> {
    WRITER.get_or_init(|| crate::allow_blocking(start_writer)).as_ref()
}

fn start_writer() -> Result<Writer, RunFileError> {
    let dir = report_dir();
    let failed = |operation: String, e: &dyn std::fmt::Display| RunFileError {
        dir: dir.clone(),
        operation,
        message: e.to_string(),
    };
    let name = format!("{}-{}.jsonl", micros_since_epoch(SystemTime::now()) / 1000, std::process::id());
    let path = dir.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| failed(format!("creating the directory {}", dir.display()), &e))?;
    let file = File::create(&path).map_err(|e| failed(format!("creating the file {}", path.display()), &e))?;
    let (tx, rx) = mpsc::channel();
    // The first line says where the sources are, so a report read anywhere finds them.
    let run = Record {
        version: SCHEMA_VERSION,
        body: RecordBody::Run {
            workspace_root: crate::workspace_root().map(|r| r.to_string_lossy().into_owned()),
            allowlist: ALLOWLIST.get().cloned().unwrap_or_default(),
        },
        request: None,
        task: None,
        test: None,
        scope_id: 0,
        pid: std::process::id(),
        timestamp_us: micros_since_epoch(SystemTime::now()),
    };
    let _ = tx.send(Message::Records(vec![run]));
    std::thread::Builder::new()
        .name("blockcop-run-file".into())
        .spawn(move || write_loop(rx, file))
        .map_err(|e| failed("starting the run-file writer thread".to_owned(), &e))?;
    crate::sys::exit::at_exit(flush_at_exit);
    Ok(Writer { tx: Mutex::new(tx), path })
}

/// Creates the run file, saying on stderr (once) when it cannot be.
pub(crate) fn start() {
    let _ = writer();
}

/// The writer, once the run file exists; a failure to create it is said once, on stderr.
fn writer() -> Option<&'static Writer> {
    match started() {
        Ok(w) => Some(w),
        Err(e) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                eprintln!(
                    "blockcop: cannot use the run-file directory {} ({ENV_REPORT_DIR}): {e}; violations are not \
                     recorded to a run file",
                    e.dir.display()
                );
            });
            None
        }
    }
}

fn write_loop(rx: Receiver<Message>, file: File) {
    let mut out = BufWriter::new(file);
    let mut stacks = Stacks::default();
    let mut failed = false;
    while let Ok(first) = rx.recv() {
        let mut acks = Vec::new();
        let mut next = Some(first);
        // Write everything that is waiting, then flush once.
        while let Some(msg) = next {
            match msg {
                Message::Records(records) => {
                    for record in records {
                        if let Err(e) = stacks.write(&mut out, record)
                            && !failed
                        {
                            failed = true;
                            eprintln!("blockcop: writing the run file failed: {e}");
                        }
                    }
                }
                Message::Flush(ack) => acks.push(ack),
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
        for ack in acks {
            let _ = ack.send(());
        }
    }
    let _ = out.flush();
}

/// A `stack` line's frames and call chain.
type InternedStack = (Arc<[Frame]>, Arc<[Frame]>);

/// The stacks a run file has written so far, by content: each is written once, as a `stack` line, and the records
/// after it refer to it by id.
#[derive(Default)]
struct Stacks {
    ids: HashMap<InternedStack, u64>,
}

impl Stacks {
    /// Writes `record` as one line, preceded by its stack's line when the file does not have that stack yet.
    fn write(&mut self, out: &mut impl Write, mut record: Record) -> std::io::Result<()> {
        if let RecordBody::Violation(v) = &mut record.body
            && !v.stack.is_empty()
        {
            let key = (std::mem::take(&mut v.stack), std::mem::take(&mut v.call_chain));
            let next = self.ids.len() as u64 + 1;
            let id = match self.ids.get(&key) {
                Some(id) => *id,
                None => {
                    let stack = Record {
                        version: SCHEMA_VERSION,
                        body: RecordBody::Stack { id: next, frames: key.0.clone(), call_chain: key.1.clone() },
                        request: None,
                        task: None,
                        test: None,
                        scope_id: record.scope_id,
                        pid: record.pid,
                        timestamp_us: record.timestamp_us,
                    };
                    write_line(out, &stack)?;
                    self.ids.insert(key, next);
                    next
                }
            };
            v.stack_id = Some(id);
        }
        write_line(out, &record)
    }
}

fn write_line(out: &mut impl Write, record: &Record) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, record)?;
    out.write_all(b"\n")
}

/// Appends records to this process's run file (starting the writer on first use).
pub(crate) fn append(records: Vec<Record>) {
    if records.is_empty() {
        return;
    }
    let Some(w) = writer() else { return };
    let _ = w.tx.lock().unwrap_or_else(PoisonError::into_inner).send(Message::Records(records));
}

/// Waits (up to `timeout`) until every record handed to the writer so far is written and flushed. Returns false on
/// timeout. Runs by itself at process exit.
pub fn flush(timeout: Duration) -> bool {
    let Some(Ok(w)) = WRITER.get() else { return true };
    let (ack_tx, ack_rx) = mpsc::sync_channel(1);
    if w.tx.lock().unwrap_or_else(PoisonError::into_inner).send(Message::Flush(ack_tx)).is_err() {
        return false;
    }
    ack_rx.recv_timeout(timeout).is_ok()
}

fn flush_at_exit() {
    // The runtime hooks' per-thread scopes are drained every 100 ms; take the rest now.
    crate::allow_blocking(crate::runtime::drain);
    flush(Duration::from_secs(2));
}

/// This process's run file, once something was written to it.
pub fn current_run_file() -> Option<&'static Path> {
    WRITER.get()?.as_ref().ok().map(|w| w.path.as_path())
}

/// A problem reading run files: a line or file that was skipped (reading goes on), or an input that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A line that is not a record (truncated, corrupt, not UTF-8, or referring to a stack the file does not
    /// define): skipped.
    #[error("{file}:{line}: skipped a corrupt record: {message}")]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// More corrupt lines of one file than are listed one by one ([`MAX_LISTED_PER_FILE`]): skipped and counted.
    #[error("{file}: skipped {count} more corrupt records")]
    MoreCorrupt {
        /// The file.
        file: PathBuf,
        /// How many lines beyond those listed.
        count: u64,
    },
    /// A path inside a directory that is not a regular file (a FIFO, socket or device, which could block the
    /// reader): skipped.
    #[error("{file}: skipped: not a regular file ({kind})")]
    NotRegularFile {
        /// The path.
        file: PathBuf,
        /// What it is: `FIFO`, `socket`, `device`, ...
        kind: &'static str,
    },
    /// A record of a schema version this build does not know: the whole input is refused.
    #[error(
        "{file}:{line}: run file schema version {found} is not supported (this blockcop reads versions \
         {OLDEST_SCHEMA_VERSION} to {SCHEMA_VERSION}); use the blockcop that wrote it"
    )]
    UnknownVersion {
        /// The file.
        file: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The version found.
        found: u64,
    },
    /// A path given to read does not exist.
    #[error("{file}: no such file or directory")]
    NotFound {
        /// The path.
        file: PathBuf,
    },
    /// The file or directory could not be read.
    #[error("{file}: {message}")]
    Io {
        /// The path.
        file: PathBuf,
        /// The error.
        message: String,
    },
}

/// How many corrupt lines of one file [`read_run_files`] lists one by one; the rest are counted
/// ([`ReadError::MoreCorrupt`]).
pub const MAX_LISTED_PER_FILE: usize = 20;

/// The longest line read, in bytes; a longer one is skipped as corrupt. A record with a 128-frame stack takes about
/// 30 KB.
pub const MAX_LINE_LEN: usize = 16 << 20;

/// What [`read_run_files`] found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunFiles {
    /// The records, file by file, in order (their stacks in place; `run` and `stack` lines are not records).
    pub records: Vec<Record>,
    /// The files read.
    pub files: Vec<PathBuf>,
    /// Lines and files that were skipped.
    pub skipped: Vec<ReadError>,
    /// The workspace roots the files' `run` records name, each once, in the order first seen.
    pub roots: Vec<PathBuf>,
    /// The allowlist file entries the files' `run` records list, each once (by `path:line`).
    pub allowlist: Vec<AllowlistEntryRecord>,
}

/// What [`read_run_files_with`] found besides the records it handed on.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunFilesRead {
    /// The files read.
    pub files: Vec<PathBuf>,
    /// Lines and files that were skipped.
    pub skipped: Vec<ReadError>,
    /// The workspace roots the files' `run` records name, each once, in the order first seen.
    pub roots: Vec<PathBuf>,
    /// The allowlist file entries the files' `run` records list, each once (by `path:line`).
    pub allowlist: Vec<AllowlistEntryRecord>,
}

/// Reads run files into memory; see [`read_run_files_with`], which hands records on one at a time instead.
///
/// # Errors
///
/// As [`read_run_files_with`].
pub fn read_run_files(paths: &[PathBuf]) -> Result<RunFiles, ReadError> {
    let mut records = Vec::new();
    let read = read_run_files_with(paths, |_, r| records.push(r))?;
    Ok(RunFiles { records, files: read.files, skipped: read.skipped, roots: read.roots, allowlist: read.allowlist })
}

/// Reads run files, handing each record to `each` with the index of its file in [`RunFilesRead::files`], in file
/// order then line order, with its stack in place. Each path is a `.jsonl` file or a directory searched for them,
/// subdirectories included, in file-name order (symlinked directories are not followed). Memory stays bounded by
/// the distinct stacks of one file, whatever the number of records.
///
/// Nothing readable is lost to a bad line: a line that is not valid UTF-8, not JSON, not a record, longer than
/// [`MAX_LINE_LEN`], or refers to a stack its file does not define is skipped and listed in
/// [`RunFilesRead::skipped`] with its file and line. So is anything in a directory that is not a regular file.
///
/// # Errors
///
/// [`ReadError::NotFound`] for a path that does not exist, [`ReadError::Io`] for one that cannot be read, and
/// [`ReadError::UnknownVersion`] for a record of a schema version this build does not read.
pub fn read_run_files_with(paths: &[PathBuf], mut each: impl FnMut(usize, Record)) -> Result<RunFilesRead, ReadError> {
    let io = |file: &Path, e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::NotFound { file: file.to_path_buf() },
        _ => ReadError::Io { file: file.to_path_buf(), message: e.to_string() },
    };
    let mut out = RunFilesRead::default();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| io(p, e))?;
        if meta.is_dir() {
            // Subdirectories too (a CI artifact folder of shards).
            for entry in walkdir::WalkDir::new(p).sort_by_file_name() {
                let entry = entry.map_err(|e| {
                    let at = e.path().unwrap_or(p).to_path_buf();
                    io(&at, e.into())
                })?;
                if entry.path().extension().is_none_or(|x| x != "jsonl") || entry.file_type().is_dir() {
                    continue;
                }
                match not_regular(entry.file_type()) {
                    None => out.files.push(entry.into_path()),
                    Some(kind) => out.skipped.push(ReadError::NotRegularFile { file: entry.into_path(), kind }),
                }
            }
        } else {
            // Named on purpose: read whatever it is (a FIFO fed by another process included).
            out.files.push(p.clone());
        }
    }
    for (index, file) in out.files.iter().enumerate() {
        let reader = BufReader::new(File::open(file).map_err(|e| io(file, e))?);
        read_file(file, reader, &mut out.skipped, &mut out.roots, &mut out.allowlist, |r| each(index, r))?;
    }
    Ok(out)
}

/// What a directory entry is when it is not a regular file (symlinks are followed only to files).
fn not_regular(t: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        None
    } else if t.is_fifo() {
        Some("FIFO")
    } else if t.is_socket() {
        Some("socket")
    } else if t.is_block_device() || t.is_char_device() {
        Some("device")
    } else if t.is_symlink() {
        Some("symlink")
    } else {
        Some("not a file")
    }
}

fn read_file(
    file: &Path,
    mut reader: impl BufRead,
    skipped: &mut Vec<ReadError>,
    roots: &mut Vec<PathBuf>,
    allowlist: &mut Vec<AllowlistEntryRecord>,
    mut each: impl FnMut(Record),
) -> Result<(), ReadError> {
    let mut stacks: HashMap<u64, InternedStack> = HashMap::new();
    let mut line = Vec::new();
    let (mut listed, mut more) = (0, 0);
    let mut skip = |at: usize, message: String| {
        if listed < MAX_LISTED_PER_FILE {
            listed += 1;
            skipped.push(ReadError::Corrupt { file: file.to_path_buf(), line: at, message });
        } else {
            more += 1;
        }
    };
    for number in 1.. {
        let Some(too_long) = next_line(&mut reader, &mut line)
            .map_err(|e| ReadError::Io { file: file.to_path_buf(), message: format!("line {number}: {e}") })?
        else {
            break;
        };
        if too_long {
            skip(number, format!("longer than {MAX_LINE_LEN} bytes"));
            continue;
        }
        let text = match std::str::from_utf8(&line) {
            Ok(text) => text,
            Err(e) => {
                skip(number, format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1));
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let record = match serde_json::from_str::<Record>(text) {
            Ok(r) => r,
            Err(e) => {
                #[derive(Deserialize)]
                struct Versioned {
                    version: u64,
                }
                // A record of a newer schema may not parse as this one: say so rather than "corrupt".
                if let Ok(v) = serde_json::from_str::<Versioned>(text)
                    && !known_version(v.version)
                {
                    return Err(ReadError::UnknownVersion { file: file.to_path_buf(), line: number, found: v.version });
                }
                skip(number, e.to_string());
                continue;
            }
        };
        if !known_version(u64::from(record.version)) {
            let found = u64::from(record.version);
            return Err(ReadError::UnknownVersion { file: file.to_path_buf(), line: number, found });
        }
        match record.body {
            RecordBody::Run { workspace_root, allowlist: entries } => {
                if let Some(root) = workspace_root.map(PathBuf::from).filter(|r| !roots.contains(r)) {
                    roots.push(root);
                }
                for entry in entries {
                    if !allowlist.iter().any(|e: &AllowlistEntryRecord| e.source == entry.source) {
                        allowlist.push(entry);
                    }
                }
            }
            RecordBody::Stack { id, frames, call_chain } => {
                stacks.insert(id, (frames, call_chain));
            }
            RecordBody::Violation(ref v) if v.stack_id.is_some_and(|id| !stacks.contains_key(&id)) => {
                let id = v.stack_id.unwrap_or_default();
                skip(number, format!("refers to stack {id}, which no earlier line of the file defines"));
            }
            mut body => {
                if let RecordBody::Violation(v) = &mut body
                    && let Some((frames, call_chain)) = v.stack_id.take().and_then(|id| stacks.get(&id))
                {
                    v.stack = frames.clone();
                    v.call_chain = call_chain.clone();
                }
                each(Record { body, ..record });
            }
        }
    }
    if more > 0 {
        skipped.push(ReadError::MoreCorrupt { file: file.to_path_buf(), count: more });
    }
    Ok(())
}

fn known_version(v: u64) -> bool {
    (u64::from(OLDEST_SCHEMA_VERSION)..=u64::from(SCHEMA_VERSION)).contains(&v)
}

/// Reads the next line (without its `\n`) into `line`, whatever its bytes. `None` at the end of the input;
/// `Some(true)` for a line longer than [`MAX_LINE_LEN`], whose bytes are dropped as they are read.
fn next_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    line.clear();
    let (mut seen, mut too_long) = (false, false);
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(seen.then_some(too_long));
        }
        seen = true;
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE_LEN {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(buf.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(Some(too_long));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = r#"{"version":2,"kind":"violation","event":"statx","category":"metadata","weight":1,"level":"low","duration_us":5,"count":1,"detail":"用","call_site":{"kind":"unknown"},"blocking_api":null,"blocking_api_crate":null,"thread":null,"request":null,"task":null,"test":null,"scope_id":1,"pid":7,"timestamp_us":0}"#;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever bytes surround them, every good record is read and every other non-blank line is skipped with
        /// its line number; nothing panics and nothing is lost silently.
        #[test]
        fn every_good_line_is_read_and_every_bad_one_listed(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just(None),
                    proptest::collection::vec(any::<u8>(), 0..120).prop_map(Some),
                    (0..GOOD.len()).prop_map(|cut| Some(GOOD.as_bytes()[..cut].to_vec())),
                ],
                0..40,
            ),
        ) {
            let mut input = Vec::new();
            let mut good = 0;
            let mut bad = Vec::new();
            for (i, line) in lines.iter().enumerate() {
                match line {
                    None => {
                        good += 1;
                        input.extend_from_slice(GOOD.as_bytes());
                    }
                    Some(bytes) => {
                        let bytes: Vec<u8> = bytes.iter().map(|b| if *b == b'\n' { b'x' } else { *b }).collect();
                        let blank = std::str::from_utf8(&bytes).is_ok_and(|t| t.trim().is_empty());
                        if !blank {
                            bad.push(i + 1);
                        }
                        input.extend_from_slice(&bytes);
                    }
                }
                input.push(b'\n');
            }
            let (mut skipped, mut roots, mut records) = (Vec::new(), Vec::new(), 0);
            let file = Path::new("f.jsonl");
            read_file(file, &input[..], &mut skipped, &mut roots, &mut Vec::new(), |_| records += 1)
                .expect("no error for these");
            prop_assert_eq!(records, good);
            let listed: Vec<usize> = skipped
                .iter()
                .filter_map(|e| match e {
                    ReadError::Corrupt { line, .. } => Some(*line),
                    _ => None,
                })
                .collect();
            let expected: Vec<usize> = bad.iter().copied().take(MAX_LISTED_PER_FILE).collect();
            prop_assert_eq!(listed, expected);
            let more = skipped.iter().find_map(|e| match e {
                ReadError::MoreCorrupt { count, .. } => Some(*count as usize),
                _ => None,
            });
            prop_assert_eq!(more.unwrap_or(0), bad.len().saturating_sub(MAX_LISTED_PER_FILE));
        }
    }
}
