//! The `blockcop` command (feature `cli`): `blockcop report` reads run files and prints the call sites to fix,
//! one group per call site and blocking API, ranked by level then total blocked time.
//!
//! ```text
//! blockcop report [PATH...] [--format text|json|sarif] [--fail-severity N|low|medium|high] [--root DIR]
//!                 [--by api|syscall] [--stacks]
//! ```
//!
//! Exit status:
//! - 0: no group reaches the fail severity (a clean run included: run files that hold no violation).
//! - 1: some group reaches `--fail-severity` (default `BLOCKCOP_FAIL_SEVERITY`, else medium, as the harness).
//! - 2: the report could not be made: bad arguments or a malformed `BLOCKCOP_FAIL_SEVERITY`, a path that does not
//!   exist or cannot be read, no run file at all under the paths, or a run file of a newer schema.
//!
//! Lines that are not records (not UTF-8, not JSON, truncated) and entries that are not regular files (FIFOs,
//! sockets) are skipped with a warning naming them (`file:line`), never the rest of the input.
//! With `GITHUB_ACTIONS=true`, the text format ends with GitHub Actions annotations (`::error file=…,line=…::…`).

use std::io::Write;
use std::path::PathBuf;

use super::run::{ReadError, report_dir};
use super::{GroupBy, Style, Summary, TextRenderer};
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
    let Command::Report(args) = cli.command;
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
    let defaulted = args.paths.is_empty();
    let paths = if defaulted { vec![report_dir()] } else { args.paths };
    let by = match args.by {
        By::Api => GroupBy::Api,
        By::Syscall => GroupBy::Event,
    };
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
            return 2;
        }
        Err(e) => {
            let _ = writeln!(err, "blockcop: {e}");
            return 2;
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
        return 2;
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
    let failing = summary.groups.iter().filter(|g| g.severity >= fail_severity).count();
    let stale = summary.stale_allowlist_entries().count();
    if failing > 0 {
        let _ = writeln!(err, "blockcop: {failing} call site(s) reach the fail severity {fail_severity}");
    }
    if stale > 0 && args.deny_stale_allowlist {
        let _ = writeln!(
            err,
            "blockcop: {stale} allowlist entr{} allowed nothing (--deny-stale-allowlist)",
            if stale == 1 { "y" } else { "ies" }
        );
    }
    u8::from(failing > 0 || (stale > 0 && args.deny_stale_allowlist))
}
