//! Reading run files back: [`read_run_files_with`] reads them one record at a time, skipping a corrupt line with its
//! file and line number and carrying on.
//!
//! Every process with blockcop enabled appends its violations as JSON Lines to
//! `target/blockcop/<unix-ms>-<pid>.jsonl` (`BLOCKCOP_REPORT_DIR` overrides the directory; one file per process,
//! so parallel test binaries never interleave). The file is created at start-up ([`open`]). Records are handed to a
//! writer thread, which serializes them, writes and flushes each batch as it arrives, so a crash loses at most the
//! records of the last few milliseconds; at process exit the writer is drained and flushed. Violations dropped by a
//! scope's cap are written as a `dropped` record with their count.
//!
//! Each line is one [`Record`]; see the README for the schema (version [`SCHEMA_VERSION`]: each distinct stack is
//! written once per file, as a `stack` line that later records refer to).

use serde::Deserialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

pub use crate::capture::run_file::{ENV_REPORT_DIR, RunFileError, current_run_file, flush, open, report_dir};
use crate::record::InternedStack;
pub use crate::record::{
    AllowlistEntryRecord, OLDEST_SCHEMA_VERSION, Record, RecordBody, SCHEMA_VERSION, ViolationRecord,
};
pub use crate::violation::{RequestContext, TaskContext};

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
///
/// # Examples
///
/// ```no_run
/// use blockcop::report::run::{RecordBody, read_run_files_with};
///
/// let mut violations = 0;
/// let read = read_run_files_with(&["target/blockcop".into()], |_file, record| {
///     violations += usize::from(matches!(record.body, RecordBody::Violation(_)));
/// })?;
/// println!("{violations} violations in {} run files, {} lines skipped", read.files.len(), read.skipped.len());
/// # Ok::<(), blockcop::report::run::ReadError>(())
/// ```
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
