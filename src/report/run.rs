//! Run files: every process with blockcop enabled appends its violations as JSON Lines to
//! `target/blockcop/<unix-ms>-<pid>.jsonl` (`BLOCKCOP_REPORT_DIR` overrides the directory; one file per process,
//! so parallel test binaries never interleave).
//!
//! Records are handed to a writer thread, which writes and flushes each batch as it arrives, so a crash loses at
//! most the records of the last few milliseconds; at process exit the writer is drained and flushed. Violations
//! dropped by a scope's cap are written as a `dropped` record with their count.
//!
//! Each line is one [`Record`]; see the README for the schema. [`read_run_files`] reads them back, reporting a
//! corrupt line with its file and line number and carrying on.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::catalogue::Category;
use crate::violation::{CallSite, Frame, Level, Stuck, Violation, Violations};

/// The schema version written in every record's `version` field.
pub const SCHEMA_VERSION: u32 = 1;

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
    /// The first line of every run file: what the process that wrote it knew about its sources.
    Run {
        /// The workspace root of the crate that was built ([`crate::workspace_root`]); call sites inside it are
        /// relative to it, and `blockcop report` reads their source lines from it.
        workspace_root: Option<String>,
    },
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
    /// The trimmed stack.
    pub stack: Vec<Frame>,
    /// The user's frames, outermost first, the call site last (see [`Violation::call_chain`]).
    #[serde(default)]
    pub call_chain: Vec<Frame>,
    /// The name of the thread that blocked.
    pub thread: Option<String>,
    /// Set on a stuck poll's report and on the record that completes it (see [`Violation::stuck`]); absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
            duration_us: u64::try_from(v.duration.as_micros()).unwrap_or(u64::MAX),
            count: v.count,
            detail: v.detail.clone(),
            call_site: v.call_site.clone(),
            blocking_api: v.blocking_api.clone(),
            blocking_api_crate: v.blocking_api_crate.clone(),
            stack: v.stack.clone(),
            call_chain: v.call_chain.clone(),
            thread: v.thread_name.clone(),
            stuck: v.stuck.clone(),
        }
    }

    /// The violation this record describes (for rendering); ids and the thread id are not kept in run files.
    pub fn to_violation(&self) -> Violation {
        Violation {
            event: crate::catalogue::intern(&self.event),
            category: self.category,
            weight: crate::violation::Weight::from_value(self.weight),
            level: self.level,
            duration: Duration::from_micros(self.duration_us),
            count: self.count,
            detail: self.detail.clone(),
            call_site: self.call_site.clone(),
            blocking_api: self.blocking_api.clone(),
            blocking_api_crate: self.blocking_api_crate.clone(),
            stack: self.stack.clone(),
            call_chain: self.call_chain.clone(),
            task: None,
            scope_id: 0,
            thread_id: 0,
            thread_name: self.thread.clone(),
            timestamp: SystemTime::UNIX_EPOCH,
            stuck: self.stuck.clone(),
        }
    }
}

fn micros_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
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
    Lines(String),
    Flush(mpsc::SyncSender<()>),
}

struct Writer {
    tx: Mutex<Sender<Message>>,
    path: PathBuf,
}

static WRITER: OnceLock<Option<Writer>> = OnceLock::new();

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

fn writer() -> Option<&'static Writer> {
    WRITER
        .get_or_init(|| {
            crate::allow_blocking(|| {
                let dir = report_dir();
                let name = format!("{}-{}.jsonl", micros_since_epoch(SystemTime::now()) / 1000, std::process::id());
                let path = dir.join(name);
                let file = std::fs::create_dir_all(&dir).and_then(|()| File::create(&path));
                let file = match file {
                    Ok(f) => f,
                    Err(e) => {
                        eprintln!(
                            "blockcop: cannot write run file {}: {e}; violations are not recorded",
                            path.display()
                        );
                        return None;
                    }
                };
                let (tx, rx) = mpsc::channel();
                // The first line says where the sources are, so a report read anywhere finds them.
                let run = Record {
                    version: SCHEMA_VERSION,
                    body: RecordBody::Run {
                        workspace_root: crate::workspace_root().map(|r| r.to_string_lossy().into_owned()),
                    },
                    request: None,
                    task: None,
                    test: None,
                    scope_id: 0,
                    pid: std::process::id(),
                    timestamp_us: micros_since_epoch(SystemTime::now()),
                };
                if let Ok(line) = serde_json::to_string(&run) {
                    let _ = tx.send(Message::Lines(line + "\n"));
                }
                let spawned =
                    std::thread::Builder::new().name("blockcop-run-file".into()).spawn(move || write_loop(rx, file));
                if let Err(e) = spawned {
                    eprintln!("blockcop: cannot start the run-file writer: {e}; violations are not recorded");
                    return None;
                }
                crate::intercept::at_exit(flush_at_exit);
                Some(Writer { tx: Mutex::new(tx), path })
            })
        })
        .as_ref()
}

fn write_loop(rx: Receiver<Message>, file: File) {
    let mut out = BufWriter::new(file);
    let mut failed = false;
    while let Ok(first) = rx.recv() {
        let mut acks = Vec::new();
        let mut next = Some(first);
        // Write everything that is waiting, then flush once.
        while let Some(msg) = next {
            match msg {
                Message::Lines(lines) => {
                    if let Err(e) = out.write_all(lines.as_bytes())
                        && !failed
                    {
                        failed = true;
                        eprintln!("blockcop: writing the run file failed: {e}");
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

/// Appends records to this process's run file (starting the writer on first use).
pub(crate) fn append(records: &[Record]) {
    if records.is_empty() {
        return;
    }
    let Some(w) = writer() else { return };
    let mut lines = String::new();
    for r in records {
        if let Ok(line) = serde_json::to_string(r) {
            lines.push_str(&line);
            lines.push('\n');
        }
    }
    let _ = w.tx.lock().unwrap_or_else(PoisonError::into_inner).send(Message::Lines(lines));
}

/// Waits (up to `timeout`) until every record handed to the writer so far is written and flushed. Returns false on
/// timeout. Runs by itself at process exit.
pub fn flush(timeout: Duration) -> bool {
    let Some(Some(w)) = WRITER.get() else { return true };
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
    WRITER.get()?.as_ref().map(|w| w.path.as_path())
}

/// A problem reading run files: one corrupt line (skipped), or a file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A line that is not a record (truncated, corrupt): skipped.
    #[error("{file}:{line}: skipped a corrupt record: {message}")]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// A record of a schema version this build does not know: the whole input is refused.
    #[error(
        "{file}:{line}: run file schema version {found} is not supported (this blockcop reads version \
         {SCHEMA_VERSION}); use the blockcop that wrote it"
    )]
    UnknownVersion {
        /// The file.
        file: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The version found.
        found: u64,
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

/// What [`read_run_files`] found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunFiles {
    /// The records, file by file, in order.
    pub records: Vec<Record>,
    /// The files read.
    pub files: Vec<PathBuf>,
    /// Corrupt lines that were skipped.
    pub skipped: Vec<ReadError>,
    /// The workspace roots the files' `run` records name, each once, in the order first seen.
    pub roots: Vec<PathBuf>,
}

/// Reads run files: each path is a `.jsonl` file or a directory searched for them, subdirectories included (in
/// file-name order; symlinked directories are not followed; only regular files are read).
///
/// # Errors
///
/// [`ReadError::UnknownVersion`] for a record of another schema version, and [`ReadError::Io`] for a path that
/// cannot be read. Corrupt lines are not errors: they are listed in [`RunFiles::skipped`].
pub fn read_run_files(paths: &[PathBuf]) -> Result<RunFiles, ReadError> {
    let io = |file: &Path, e: std::io::Error| ReadError::Io { file: file.to_path_buf(), message: e.to_string() };
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            // Subdirectories too (a CI artifact folder of shards); only regular files, so a FIFO cannot hang it.
            for entry in walkdir::WalkDir::new(p).sort_by_file_name() {
                let entry = entry.map_err(|e| {
                    let at = e.path().unwrap_or(p).to_path_buf();
                    io(&at, e.into())
                })?;
                if entry.file_type().is_file() && entry.path().extension().is_some_and(|x| x == "jsonl") {
                    files.push(entry.into_path());
                }
            }
        } else {
            files.push(p.clone());
        }
    }
    let mut out = RunFiles { files: files.clone(), ..RunFiles::default() };
    for file in &files {
        let reader = BufReader::new(File::open(file).map_err(|e| io(file, e))?);
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| io(file, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let corrupt = |message: String| ReadError::Corrupt { file: file.clone(), line: i + 1, message };
            #[derive(Deserialize)]
            struct Versioned {
                version: u64,
            }
            match serde_json::from_str::<Versioned>(&line) {
                Ok(v) if v.version != u64::from(SCHEMA_VERSION) => {
                    return Err(ReadError::UnknownVersion { file: file.clone(), line: i + 1, found: v.version });
                }
                Ok(_) => match serde_json::from_str::<Record>(&line) {
                    Ok(Record { body: RecordBody::Run { workspace_root }, .. }) => {
                        let root = workspace_root.map(PathBuf::from);
                        if let Some(root) = root.filter(|r| !out.roots.contains(r)) {
                            out.roots.push(root);
                        }
                    }
                    Ok(r) => out.records.push(r),
                    Err(e) => out.skipped.push(corrupt(e.to_string())),
                },
                Err(e) => out.skipped.push(corrupt(e.to_string())),
            }
        }
    }
    Ok(out)
}
