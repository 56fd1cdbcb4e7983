//! `cargo xtask <command>`: the project's tasks.
//!
//! - `demo`: the main job; starts the notes test app with blockcop on, drives every endpoint and prints what it
//!   found (`--detector`: runs the detector scenarios without HTTP instead).
//! - `bench`: blockcop's overhead benchmark (per poll, per libc call, per recorded violation), the HTTP
//!   benchmark of the layer (no layer / disabled / enabled), the runtime hooks' benchmark, `blockcop report` over
//!   1,000,000 records (time, peak RSS), and the first flagged request against later ones on a debug binary (right
//!   at start-up, and after the warm-up).
//! - `report`: `blockcop report` (a release build) over the run files (`--format text|json|sarif`,
//!   `--fail-severity`).
//! - `ci`: what CI runs: format check, clippy, and the test suite with and without `RUST_TEST_BLOCKCOP=1`, then
//!   `loaded`.
//! - `loaded`: the detector, layer and runtime suites with `RUST_TEST_BLOCKCOP=1` (also with `--cfg tokio_unstable`)
//!   while two busy loops per core run beside them, as on a shared CI runner: a detector that cries wolf under
//!   load gets switched off. `--times N` runs them N times in a row and counts the runs that passed.
//! - `drive`: drives a running service over loopback and tallies its `x-blocking-violations` headers: how many
//!   requests would fail, at which sites (`cargo xtask drive --help`; `--load` adds the busy loops).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives one level below the root").to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(project_root());
    c
}

fn run(what: &str, mut cmd: Command) -> Result<(), String> {
    eprintln!("xtask: {what}");
    let status = cmd.status().map_err(|e| format!("{what}: could not start: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{what}: {status}")) }
}

fn demo(args: &[String]) -> Result<(), String> {
    let (package, bin) = match args.first().map(String::as_str) {
        None => ("notes", "notes-demo"),
        Some("--detector") => ("scenarios", "detector-demo"),
        Some(other) => return Err(format!("demo: unknown option {other:?} (accepted: --detector)")),
    };
    let mut c = cargo();
    c.args(["run", "--quiet", "--package", package, "--bin", bin]).env("RUST_TEST_BLOCKCOP", "1");
    run("demo", c)
}

fn bench() -> Result<(), String> {
    let mut c = cargo();
    c.args(["bench", "--package", "blockcop", "--bench", "overhead"]);
    run("overhead benchmark", c)?;
    let mut c = cargo();
    c.args(["bench", "--package", "blockcop", "--bench", "http"]);
    run("HTTP benchmark", c)?;
    let mut c = cargo();
    c.args(["bench", "--package", "blockcop", "--bench", "hooks"])
        .env("RUSTFLAGS", "--cfg tokio_unstable")
        .env("CARGO_TARGET_DIR", project_root().join("target/unstable"));
    run("runtime hooks and watchdog benchmark (--cfg tokio_unstable)", c)?;
    let mut c = cargo();
    c.args(["bench", "--package", "integration", "--bench", "report_scale"]);
    run("blockcop report over 1,000,000 records", c)?;
    // A debug build on purpose: what the first flagged request costs is loading debug info.
    for mode in ["at-start", "after-warm-up"] {
        let mut c = cargo();
        c.args(["bench", "--package", "integration", "--bench", "first_request", "--profile", "dev", "--", mode]);
        run(&format!("first flagged request ({mode})"), c)?;
    }
    Ok(())
}

fn report(args: &[String]) -> Result<(), String> {
    let mut c = cargo();
    // Release: a day of CI shards is a million records (see the README's performance section).
    c.args([
        "run",
        "--quiet",
        "--release",
        "--package",
        "blockcop",
        "--features",
        "cli",
        "--bin",
        "blockcop",
        "--",
        "report",
    ]);
    c.args(args);
    run("report", c)
}

/// The test counts of every `cargo test` CI runs, summed from libtest's `test result:` lines.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    /// Counts one line of a test binary's output.
    fn count(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else { return };
        let number = |word: &str| -> u64 {
            rest.split(';')
                .find_map(|part| part.trim().rsplit_once(' ').filter(|(_, w)| *w == word).map(|(n, _)| n))
                .and_then(|n| n.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0)
        };
        self.passed += number("passed");
        self.failed += number("failed");
    }
}

/// Runs `cmd` like [`run`], echoing its standard output line by line and counting its test results.
fn run_counted(what: &str, mut cmd: Command, tally: &mut Tally) -> Result<(), String> {
    use std::io::{BufRead, Write};
    eprintln!("xtask: {what}");
    let mut child =
        cmd.stdout(std::process::Stdio::piped()).spawn().map_err(|e| format!("{what}: could not start: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut out = std::io::stdout().lock();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("{what}: reading its output: {e}"))?;
        tally.count(&line);
        let _ = writeln!(out, "{line}");
    }
    let status = child.wait().map_err(|e| format!("{what}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{what}: {status}")) }
}

/// What CI runs (`.ci/run` calls this after installing what is missing): the format check, clippy on both builds
/// and without the interposer, README's test command with blockcop off and on and with `--cfg tokio_unstable`,
/// then the detector, layer and runtime suites on a loaded machine; one closing line counts every test.
fn ci() -> Result<(), String> {
    let mut tally = Tally::default();
    let result = ci_steps(&mut tally);
    println!("blockcop CI:");
    println!("{} passed, {} failed", tally.passed, tally.failed);
    result
}

fn ci_steps(tally: &mut Tally) -> Result<(), String> {
    let unstable = |c: &mut Command| {
        // tokio's task hooks exist only with --cfg tokio_unstable; a target directory of its own keeps the two
        // builds from invalidating each other.
        c.env("RUSTFLAGS", "--cfg tokio_unstable").env("CARGO_TARGET_DIR", project_root().join("target/unstable"));
    };
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run("cargo fmt --check", fmt)?;
    let clippy_args = ["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"];
    let mut clippy = cargo();
    clippy.args(clippy_args);
    run("cargo clippy -D warnings", clippy)?;
    let mut bare = cargo();
    bare.args(["clippy", "-p", "blockcop", "--no-default-features", "--", "-D", "warnings"]);
    run("the library without the interposer (the path other platforms take)", bare)?;
    let mut off = cargo();
    off.args(["test", "--workspace"]).env_remove("RUST_TEST_BLOCKCOP");
    run_counted("tests, blockcop off (README: cargo test --workspace)", off, tally)?;
    let mut on = cargo();
    on.args(["test", "--workspace"]).env("RUST_TEST_BLOCKCOP", "1");
    run_counted("tests, RUST_TEST_BLOCKCOP=1", on, tally)?;
    let mut clippy = cargo();
    clippy.args(clippy_args);
    unstable(&mut clippy);
    run("cargo clippy -D warnings, --cfg tokio_unstable", clippy)?;
    let mut tests = cargo();
    tests.args(["test", "--workspace"]).env("RUST_TEST_BLOCKCOP", "1");
    unstable(&mut tests);
    run_counted("tests, --cfg tokio_unstable, RUST_TEST_BLOCKCOP=1", tests, tally)?;
    // Shared CI runners are loaded: a detector that cries wolf under load gets switched off.
    loaded_counted(1, tally)
}

#[cfg(test)]
mod tidy;

#[path = "../../integration/src/busy_loops.rs"]
mod busy_loops;

use busy_loops::BusyLoops;

fn loaded(args: &[String]) -> Result<(), String> {
    let times: usize = match args {
        [] => 1,
        [flag, n] if flag == "--times" => {
            n.parse().map_err(|_| format!("loaded: --times takes a whole number, got {n:?}"))?
        }
        _ => return Err(format!("loaded: unknown arguments {args:?} (accepted: --times N)")),
    };
    loaded_counted(times, &mut Tally::default())
}

/// The detector, layer and runtime suites `times` times beside two busy loops per core, on both builds.
fn loaded_counted(times: usize, tally: &mut Tally) -> Result<(), String> {
    let suites = ["--test", "detector", "--test", "layer", "--test", "runtime"];
    // Build first, unloaded: the load is for the tests, not the compiler.
    for unstable in [false, true] {
        let mut build = loaded_tests(unstable, &suites);
        build.arg("--no-run");
        run("build the loaded suites", build)?;
    }
    let load = BusyLoops::start(2);
    eprintln!("xtask: {} busy loops running (2 per core)", load.count());
    let mut passed = 0;
    for i in 1..=times {
        let ok = [false, true].into_iter().all(|unstable| {
            let what = format!(
                "run {i}/{times}: detector, layer, runtime on a loaded machine{}",
                if unstable { ", --cfg tokio_unstable" } else { "" }
            );
            run_counted(&what, loaded_tests(unstable, &suites), tally).map_err(|e| eprintln!("xtask: {e}")).is_ok()
        });
        passed += usize::from(ok);
    }
    eprintln!("xtask: loaded: {passed} of {times} runs passed");
    if passed == times { Ok(()) } else { Err(format!("loaded: {} of {times} runs failed", times - passed)) }
}

fn loaded_tests(unstable: bool, suites: &[&str]) -> Command {
    let mut c = cargo();
    c.args(["test", "--package", "integration"]).args(suites).env("RUST_TEST_BLOCKCOP", "1");
    if unstable {
        c.env("RUSTFLAGS", "--cfg tokio_unstable").env("CARGO_TARGET_DIR", project_root().join("target/unstable"));
    }
    c
}

fn drive(args: &[String]) -> Result<(), String> {
    let mut c = cargo();
    c.args(["run", "--quiet", "--package", "integration", "--bin", "drive", "--"]).args(args);
    run("drive", c)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result =
        match args.first().map(String::as_str) {
            Some("demo") => demo(&args[1..]),
            Some("bench") => bench(),
            Some("ci") => ci(),
            Some("report") => report(&args[1..]),
            Some("loaded") => loaded(&args[1..]),
            Some("drive") => drive(&args[1..]),
            _ => Err("usage: cargo xtask <demo [--detector]|bench|report [args]|ci|loaded [--times N]|drive [args]>"
                .to_owned()),
        };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tally_tests {
    use super::Tally;

    #[test]
    fn ci_counts_passed_and_failed_tests_from_libtest_summaries() {
        let mut t = Tally::default();
        t.count("test result: ok. 52 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 7.18s");
        t.count("test result: FAILED. 5 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.37s");
        t.count("running 7 tests");
        t.count("test tidy::x ... ok");
        assert_eq!((t.passed, t.failed), (57, 2));
    }
}
