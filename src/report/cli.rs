//! The `blockcop` command (feature `cli`): `blockcop report` reads run files and prints the call sites to fix,
//! one group per call site and blocking API, ranked by level then total blocked time.
//!
//! ```text
//! blockcop report [PATH...] [--format text|json|sarif] [--fail-severity N|low|medium|high] [--root DIR]
//!                 [--by api|syscall] [--stacks] [--deny-stale-allowlist] [--baseline FILE] [--deny-fixed-baseline]
//! blockcop baseline write [PATH...] [--baseline FILE]
//! blockcop baseline prune [PATH...] [--baseline FILE]
//! ```
//!
//! The baseline file ([`crate::config::baseline`]) is `--baseline FILE`, else `BLOCKCOP_BASELINE`, else
//! `blockcop-baseline.toml` in the workspace root the run files record (or the current directory). `report` reads it
//! when it exists: known groups are listed but do not fail, fixed entries are listed with the command that removes
//! them. `baseline write` records every group of the run, replacing the file; `baseline prune` only removes the
//! entries the run no longer finds.
//!
//! Exit status:
//! - 0: no group the baseline does not know reaches the fail severity (a clean run included: run files that hold no
//!   violation); `baseline write` and `prune`: the file was written.
//! - 1: some new group reaches `--fail-severity` (default `BLOCKCOP_FAIL_SEVERITY`, else medium, as the harness);
//!   or, asked to deny them, a stale allowlist entry or a fixed baseline entry.
//! - 2: the report could not be made: bad arguments or a malformed `BLOCKCOP_FAIL_SEVERITY`, a path that does not
//!   exist or cannot be read, no run file at all under the paths, a run file of a newer schema, a malformed
//!   baseline file (named with the line), or a baseline file that cannot be written.
//!
//! Lines that are not records (not UTF-8, not JSON, truncated) and entries that are not regular files (FIFOs,
//! sockets) are skipped with a warning naming them (`file:line`), never the rest of the input.
//! With `GITHUB_ACTIONS=true`, the text format ends with GitHub Actions annotations (`::error file=…,line=…::…`).

use std::io::Write;
use std::path::PathBuf;

use super::run::{ReadError, report_dir};
use super::{GroupBy, Style, Summary, TextRenderer};
use crate::config::baseline::{BASELINE_FILE_NAME, Baseline, ENV_BASELINE};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "blockcop", version, about = "Reports on code that blocked tokio's worker threads")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Aggregates run files by call site and blocking API, ranked by level then total blocked time.
    Report(ReportArgs),
    /// Writes or prunes the baseline of known findings (`blockcop-baseline.toml`).
    #[command(subcommand)]
    Baseline(BaselineCommand),
}

#[derive(Subcommand)]
enum BaselineCommand {
    /// Records every finding of the run as known, replacing the baseline file.
    Write(BaselineArgs),
    /// Removes the baseline entries the run no longer finds (fixed); adds nothing.
    Prune(BaselineArgs),
}

#[derive(clap::Args)]
struct BaselineArgs {
    /// Run files or directories of them. By default, the run-file directory (`BLOCKCOP_REPORT_DIR`, else
    /// `target/blockcop`).
    paths: Vec<PathBuf>,
    /// The baseline file. By default, `BLOCKCOP_BASELINE`, else `blockcop-baseline.toml` in the workspace root the
    /// run files record (or the current directory).
    #[arg(long)]
    baseline: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// Run files or directories of them. By default, the run-file directory (`BLOCKCOP_REPORT_DIR`, else
    /// `target/blockcop`).
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Exit with status 1 when any group reaches this severity: a number, or low, medium, high. By default,
    /// `BLOCKCOP_FAIL_SEVERITY` as the test harness reads it, else medium (10).
    #[arg(long, value_parser = parse_severity)]
    fail_severity: Option<u32>,
    /// Read source snippets relative to this directory. By default, the workspace roots the run files record
    /// (where the programs that wrote them were built), then the current workspace root.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Group by call site and blocking API (`api`: one group per change to make), or by call site and event
    /// (`syscall`: one group per libc call or slow poll).
    #[arg(long, value_enum, default_value_t = By::Api)]
    by: By,
    /// Print each group's worst stack after its diagnostic (text format).
    #[arg(long)]
    stacks: bool,
    /// Exit with status 1 when an entry of the allowlist file (`blockcop.toml`) allowed nothing in the run (it is
    /// stale), as well as warning about it.
    #[arg(long)]
    deny_stale_allowlist: bool,
    /// The baseline file of known findings. By default, `BLOCKCOP_BASELINE`, else `blockcop-baseline.toml` in the
    /// workspace root the run files record (or the current directory), when it exists.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Exit with status 1 when an entry of the baseline matched nothing in the run (it is fixed), as well as listing
    /// it: keeps the file shrinking.
    #[arg(long)]
    deny_fixed_baseline: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum By {
    /// Call site and blocking API.
    Api,
    /// Call site and event.
    Syscall,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// The ranked table and each group as a rustc-style diagnostic (plus GitHub annotations when
    /// `GITHUB_ACTIONS=true`).
    Text,
    /// The aggregated groups as JSON.
    Json,
    /// SARIF 2.1.0, for code scanning.
    Sarif,
}

fn parse_severity(s: &str) -> Result<u32, String> {
    crate::parse_severity(s).map_err(|e| format!("{} (a number, or low, medium, high)", e.value))
}

/// Runs `blockcop` with `args` (the first is the program name), writing the report to `out` and problems to `err`.
/// Returns the exit status: 0, 1 when a group reaches the fail severity, 2 when no report can be made (see the
/// module documentation).
pub fn run(args: impl IntoIterator<Item = String>, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = write!(err, "{e}");
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let args = match cli.command {
        Command::Report(args) => args,
        Command::Baseline(command) => return baseline(command, err),
    };
    let fail_severity = match args.fail_severity {
        Some(severity) => severity,
        // As the test harness: BLOCKCOP_FAIL_SEVERITY, else medium.
        None => match crate::config::env_fail_severity() {
            Ok(severity) => severity,
            Err(e) => {
                let _ = writeln!(err, "blockcop: {e}");
                return 2;
            }
        },
    };
    let by = match args.by {
        By::Api => GroupBy::Api,
        By::Syscall => GroupBy::Event,
    };
    let Some(mut summary) = read_summary(args.paths, by, err) else { return 2 };
    // A baseline named by --baseline or BLOCKCOP_BASELINE must exist; the default one is read when it does.
    let (path, named) = baseline_path(args.baseline, &summary);
    if named || path.is_file() {
        match Baseline::read(&path) {
            Ok(baseline) => summary.apply_baseline(&baseline),
            Err(e) => {
                let _ = writeln!(err, "blockcop: {e}");
                return 2;
            }
        }
    }
    let written = match args.format {
        Format::Text => {
            // Sources are read under --root, else under the roots the run files record, else this workspace's.
            let renderer = TextRenderer::new(Style::for_stderr());
            let renderer = match args.root {
                Some(root) => renderer.with_root(root),
                None => renderer.with_roots_first(summary.roots.iter().cloned()),
            };
            let mut text = summary.render_text_with(&renderer, args.stacks);
            if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
                text.push_str(&summary.github_annotations());
            }
            out.write_all(text.as_bytes())
        }
        Format::Json => serde_json::to_writer_pretty(&mut *out, &summary).map_err(std::io::Error::other),
        Format::Sarif => {
            serde_json::to_writer_pretty(&mut *out, &super::sarif::to_sarif(&summary)).map_err(std::io::Error::other)
        }
    };
    if let Err(e) = written.and_then(|()| writeln!(out)) {
        let _ = writeln!(err, "blockcop: writing the report failed: {e}");
        return 2;
    }
    let failing = summary.new_groups().filter(|g| g.severity >= fail_severity).count();
    let stale = summary.stale_allowlist_entries().count();
    let fixed = summary.baseline.as_ref().map_or(0, |b| b.fixed.len());
    if failing > 0 {
        let new = if summary.baseline.is_some() { "new " } else { "" };
        let _ = writeln!(err, "blockcop: {failing} {new}call site(s) reach the fail severity {fail_severity}");
    }
    if fixed > 0 && args.deny_fixed_baseline {
        let _ = writeln!(
            err,
            "blockcop: {fixed} baseline entr{} matched nothing (--deny-fixed-baseline): `blockcop baseline prune` \
             removes them",
            if fixed == 1 { "y" } else { "ies" }
        );
    }
    if stale > 0 && args.deny_stale_allowlist {
        let _ = writeln!(
            err,
            "blockcop: {stale} allowlist entr{} allowed nothing (--deny-stale-allowlist)",
            if stale == 1 { "y" } else { "ies" }
        );
    }
    u8::from(failing > 0 || (stale > 0 && args.deny_stale_allowlist) || (fixed > 0 && args.deny_fixed_baseline))
}

/// Reads and aggregates the run files under `paths` (the run-file directory when empty), reporting skipped lines
/// and files to `err`; `None`, after saying why on `err`, when there is no report to make.
fn read_summary(paths: Vec<PathBuf>, by: GroupBy, err: &mut dyn Write) -> Option<Summary> {
    let defaulted = paths.is_empty();
    let paths = if defaulted { vec![report_dir()] } else { paths };
    let mut summary = match Summary::read(&paths, by) {
        Ok(summary) => summary,
        Err(ReadError::NotFound { file }) if defaulted => {
            let _ = writeln!(
                err,
                "blockcop: no run files: {} does not exist. Every process blockcop is enabled in writes one there \
                 (RUST_TEST_BLOCKCOP=1 on the tests; {} moves it); name another directory with `blockcop report DIR`",
                file.display(),
                crate::report::run::ENV_REPORT_DIR,
            );
            return None;
        }
        Err(e) => {
            let _ = writeln!(err, "blockcop: {e}");
            return None;
        }
    };
    for skipped in &summary.skipped {
        let _ = writeln!(err, "blockcop: warning: {skipped}");
    }
    // Skipped lines and files went to `err`; keep `out` for the report.
    summary.skipped.clear();
    if summary.files == 0 {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let _ = writeln!(
            err,
            "blockcop: no run files (*.jsonl) in {}: was RUST_TEST_BLOCKCOP=1 set where the tests ran?",
            shown.join(", ")
        );
        return None;
    }
    Some(summary)
}

/// The baseline file: `given`, else `BLOCKCOP_BASELINE`, else `blockcop-baseline.toml` in the first workspace root
/// the run files record, else in the current directory; and whether it was named (by the option or the variable),
/// in which case it must exist.
fn baseline_path(given: Option<PathBuf>, summary: &Summary) -> (PathBuf, bool) {
    match given.or_else(|| std::env::var_os(ENV_BASELINE).filter(|v| !v.is_empty()).map(PathBuf::from)) {
        Some(path) => (path, true),
        None => (summary.roots.first().map_or_else(PathBuf::new, Clone::clone).join(BASELINE_FILE_NAME), false),
    }
}

/// `blockcop baseline write|prune`.
fn baseline(command: BaselineCommand, err: &mut dyn Write) -> u8 {
    let (args, prune) = match command {
        BaselineCommand::Write(args) => (args, false),
        BaselineCommand::Prune(args) => (args, true),
    };
    let Some(mut summary) = read_summary(args.paths, GroupBy::Api, err) else { return 2 };
    let (path, _) = baseline_path(args.baseline, &summary);
    let (baseline, said) = if prune {
        let old = match Baseline::read(&path) {
            Ok(old) => old,
            Err(e) => {
                let _ = writeln!(err, "blockcop: {e}");
                return 2;
            }
        };
        summary.apply_baseline(&old);
        let fixed = summary.baseline.as_ref().map(|b| b.fixed.clone()).unwrap_or_default();
        let kept = old.entries().iter().filter(|e| !fixed.contains(e)).cloned();
        let said = format!("removed {} fixed entr{}", fixed.len(), if fixed.len() == 1 { "y" } else { "ies" });
        (Baseline::new(kept), said)
    } else {
        let baseline = summary.to_baseline();
        let n = baseline.entries().len();
        (baseline, format!("recorded {n} known finding{}", if n == 1 { "" } else { "s" }))
    };
    if let Err(e) = std::fs::write(&path, baseline.to_toml()) {
        let _ = writeln!(err, "blockcop: cannot write the baseline file {}: {e}", path.display());
        return 2;
    }
    let _ = writeln!(err, "blockcop: {}: {said}; {} entries", path.display(), baseline.entries().len());
    0
}
