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

fn ci() -> Result<(), String> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run("cargo fmt --check", fmt)?;
    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"]);
    run("cargo clippy", clippy)?;
    let mut off = cargo();
    off.args(["test", "--workspace"]).env_remove("RUST_TEST_BLOCKCOP");
    run("tests, blockcop off", off)?;
    let mut on = cargo();
    on.args(["test", "--workspace"]).env("RUST_TEST_BLOCKCOP", "1");
    run("tests, RUST_TEST_BLOCKCOP=1", on)?;
    let mut unstable = cargo();
    unstable
        .args(["test", "--workspace"])
        .env("RUST_TEST_BLOCKCOP", "1")
        .env("RUSTFLAGS", "--cfg tokio_unstable")
        .env("CARGO_TARGET_DIR", project_root().join("target/unstable"));
    run("tests, --cfg tokio_unstable", unstable)?;
    loaded(&[])
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
            run(&what, loaded_tests(unstable, &suites)).map_err(|e| eprintln!("xtask: {e}")).is_ok()
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
