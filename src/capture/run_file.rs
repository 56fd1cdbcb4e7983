//! This process's run file: every process with blockcop enabled appends its violations as JSON Lines to
//! `target/blockcop/<unix-ms>-<pid>.jsonl` (`BLOCKCOP_REPORT_DIR` overrides the directory; one file per process,
//! so parallel test binaries never interleave).
//!
//! The file is created at start-up ([`open`]). Records are handed to a writer thread, which serializes them, writes
//! and flushes each batch as it arrives, so a crash loses at most the records of the last few milliseconds; at
//! process exit the writer is drained and flushed. Violations dropped by a scope's cap are written as a `dropped`
//! record with their count.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use crate::clock::micros_since_epoch;
use crate::record::{AllowlistEntryRecord, InternedStack, Record, RecordBody, SCHEMA_VERSION};

/// The variable naming the run-file directory. By default, `<target dir>/blockcop`.
pub const ENV_REPORT_DIR: &str = "BLOCKCOP_REPORT_DIR";

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
    WRITER.get_or_init(|| crate::capture::scope::allow_blocking(start_writer)).as_ref()
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
            allowlist: crate::config::file::noted().iter().map(AllowlistEntryRecord::from).collect(),
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
    crate::capture::scope::allow_blocking(drain);
    flush(Duration::from_secs(2));
}

/// Functions that take what long-lived scopes recorded (the runtime hooks' per-thread scopes, registered when the
/// hooks are installed) into the run file and `tracing`.
static DRAINS: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

/// Registers a drain (once per function): the watchdog runs the drains every 100 ms, and the writer at exit,
/// before its last flush.
pub(crate) fn register_drain(f: fn()) {
    let mut drains = DRAINS.lock().unwrap_or_else(PoisonError::into_inner);
    if !drains.contains(&f) {
        drains.push(f);
    }
}

/// Runs the registered drains.
pub(crate) fn drain() {
    let drains = DRAINS.lock().unwrap_or_else(PoisonError::into_inner).clone();
    for f in drains {
        f();
    }
}

/// This process's run file, once something was written to it.
pub fn current_run_file() -> Option<&'static Path> {
    WRITER.get()?.as_ref().ok().map(|w| w.path.as_path())
}
