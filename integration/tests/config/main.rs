//! Configuration at start-up, as a service's `main` meets it: a mistyped `RUST_TEST_BLOCKCOP` is said, an unusable
//! run-file directory is an error naming `BLOCKCOP_REPORT_DIR` and what failed, and errors read well through `?`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::Command;

/// Runs the probe with only `vars` set among blockcop's variables; returns (exit code, stdout, stderr).
fn probe(vars: &[(&str, OsString)], report_dir: &std::path::Path) -> (i32, String, String) {
    probe_mode(None, vars, report_dir)
}

/// Runs the probe in `mode` (see `integration/src/bin/config-probe.rs`) with only `vars` set among blockcop's
/// variables; returns (exit code, stdout, stderr).
fn probe_mode(mode: Option<&str>, vars: &[(&str, OsString)], report_dir: &std::path::Path) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_config-probe"));
    c.args(mode);
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str().filter(|n| n.starts_with("BLOCKCOP_") || *n == "RUST_TEST_BLOCKCOP") {
            c.env_remove(name);
        }
    }
    c.env("BLOCKCOP_REPORT_DIR", report_dir);
    for (name, value) in vars {
        c.env(name, value);
    }
    let out = c.output().expect("run the probe");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

fn jsonl_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir).map_or_else(
        |_| Vec::new(),
        |d| {
            d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "jsonl")).collect()
        },
    )
}

#[test]
fn a_mistyped_enable_value_is_said_once_and_leaves_blockcop_off() {
    let dir = tempfile::tempdir().expect("dir");
    for value in ["ture", "ｙｅｓ", "enabled"] {
        let (code, out, err) = probe(&[("RUST_TEST_BLOCKCOP", value.into())], dir.path());
        assert_eq!((code, out.as_str()), (0, "enabled=false\n"));
        assert_eq!(
            err,
            format!(
                "blockcop: warning: RUST_TEST_BLOCKCOP={value:?} is not one of 1, true, yes, on (to enable) or 0, \
                 false, no, off (to disable); blockcop is off\n"
            )
        );
    }
    for (value, on) in [("on", true), ("off", false), ("", false)] {
        let (code, out, err) = probe(&[("RUST_TEST_BLOCKCOP", value.into())], dir.path());
        assert_eq!((code, out, err), (0, format!("enabled={on}\n"), String::new()), "{value:?}");
    }
}

#[test]
fn an_enabled_process_writes_its_run_file_at_start_up() {
    let dir = tempfile::tempdir().expect("dir");
    let runs = dir.path().join("runs");
    let (code, out, _) = probe(&[("RUST_TEST_BLOCKCOP", "1".into())], &runs);
    assert_eq!((code, out.as_str()), (0, "enabled=true\n"));
    // No violation, yet a run file: `blockcop report` tells a clean run from one where blockcop never ran.
    let files = jsonl_files(&runs);
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).expect("read");
    assert!(text.starts_with("{\"version\":2,\"kind\":\"run\""), "{text}");
    // Off, nothing is written.
    let off = dir.path().join("off");
    probe(&[], &off);
    assert!(!off.exists());
}

#[test]
fn an_unusable_report_dir_is_an_error_at_start_up_naming_the_variable_and_what_failed() {
    let dir = tempfile::tempdir().expect("dir");
    let (code, out, err) = probe(&[("RUST_TEST_BLOCKCOP", "1".into())], std::path::Path::new("/proc/blockcop"));
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.starts_with(
            "Error: invalid BLOCKCOP_REPORT_DIR=\"/proc/blockcop\": expected a directory blockcop can create and write \
             run files in (creating the directory /proc/blockcop failed: "
        ),
        "{err}"
    );
    // A regular file where the directory should be.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("write");
    let (code, _, err) = probe(&[("RUST_TEST_BLOCKCOP", "1".into())], &file);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("(creating the directory {} failed: ", file.display())), "{err}");
}

#[test]
fn malformed_values_print_their_message_through_question_mark_in_main() {
    let dir = tempfile::tempdir().expect("dir");
    let (code, out, err) = probe(&[("BLOCKCOP_SLOW_POLL_MS", "18446744073709551615".into())], dir.path());
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        "Error: invalid BLOCKCOP_SLOW_POLL_MS=\"18446744073709551615\": expected a whole number of milliseconds from 1 \
         to 3600000, digits only (e.g. 10)\n"
    );
    let (code, _, err) = probe(&[("BLOCKCOP_STUCK_MS", OsString::from_vec(vec![b'5', 0xff]))], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.starts_with("Error: invalid BLOCKCOP_STUCK_MS=\"5\u{fffd}\": expected ")
            && err.ends_with("(the value is not UTF-8)\n"),
        "{err}"
    );
}

#[test]
fn a_router_function_builds_the_layer_or_stops_at_start_up_with_the_message() {
    let dir = tempfile::tempdir().expect("dir");
    let (code, out, err) = probe_mode(Some("layer-or-panic"), &[("RUST_TEST_BLOCKCOP", "1".into())], dir.path());
    assert_eq!((code, out.as_str()), (0, "layer built\n"), "{err}");
    let (code, out, err) = probe_mode(Some("layer-or-panic"), &[("BLOCKCOP_SLOW_POLL_MS", "abc".into())], dir.path());
    assert_eq!((code, out.as_str()), (101, ""));
    assert!(
        err.contains(
            "blockcop: invalid BLOCKCOP_SLOW_POLL_MS=\"abc\": expected a whole number of milliseconds from 1 to \
             3600000, digits only (e.g. 10)"
        ) && err.contains("integration/src/bin/config-probe.rs"),
        "{err}"
    );
}

#[test]
fn question_mark_works_in_a_function_returning_io_result() {
    let dir = tempfile::tempdir().expect("dir");
    let (code, out, _) = probe_mode(Some("layer-io"), &[("RUST_TEST_BLOCKCOP", "yes".into())], dir.path());
    assert_eq!((code, out.as_str()), (0, "active=true\n"));
    let (code, out, err) = probe_mode(Some("layer-io"), &[("BLOCKCOP_FAIL_SEVERITY", "-1".into())], dir.path());
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.starts_with("Error: Custom { kind: InvalidInput, error: invalid BLOCKCOP_FAIL_SEVERITY=\"-1\": "),
        "{err}"
    );
}

/// A configuration read the way `from_env` reads it, with only `vars` set.
/// Asserts that `variable` naming a file that does not exist (in `dir`) is an error naming the variable, the path
/// and the accepted form, with blockcop on; returns the path.
#[track_caller]
fn assert_named_file_must_exist(variable: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let missing = dir.join("nope.toml");
    let err = config_with(&[("RUST_TEST_BLOCKCOP", "1"), (variable, missing.to_str().expect("utf-8"))])
        .expect_err("missing file");
    assert!(
        err.to_string().starts_with(&format!(
            "invalid {variable}={:?}: expected a readable TOML file (",
            missing.display().to_string()
        )),
        "{err}"
    );
    missing
}

fn config_with(vars: &[(&str, &str)]) -> Result<blockcop::Config, blockcop::ConfigError> {
    let vars: std::collections::HashMap<String, String> =
        vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    blockcop::Config::from_lookup(|name| vars.get(name).cloned())
}

/// Blocking made at start-up, which the allowlist file below allows for `statx` only.
#[inline(never)]
fn allowlisted_startup(path: &std::path::Path) -> u64 {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    std::thread::sleep(std::time::Duration::from_micros(1));
    len
}

#[test]
fn an_allowlist_file_entry_allows_its_function_and_event_only() {
    integration::skip_unless_interposing!();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("blockcop.toml");
    std::fs::write(
        &file,
        "# the team's allowlist\n[[allow]]\nfunction = \"config::allowlisted_startup\"\nevent = \"statx\"\n\
         reason = \"reads its own file once, at start-up\"\n",
    )
    .expect("write");
    let run = |config: &blockcop::Config| {
        let scope = blockcop::Scope::new(config);
        scope.in_scope(|| allowlisted_startup(&file));
        scope.take_violations().iter().map(|v| v.event).collect::<Vec<_>>()
    };
    let with_file = config_with(&[("RUST_TEST_BLOCKCOP", "1"), ("BLOCKCOP_CONFIG", file.to_str().expect("utf-8"))])
        .expect("a valid file");
    let entries = with_file.allow_entries();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].reason, "reads its own file once, at start-up");
    assert_eq!(entries[0].source, format!("{}:2", file.display()));
    assert_eq!(run(&with_file), ["clock_nanosleep"]);
    let without = config_with(&[("RUST_TEST_BLOCKCOP", "1")]).expect("no file");
    assert_eq!(run(&without), ["statx", "clock_nanosleep"]);
}

#[test]
fn malformed_allowlist_entries_name_the_file_the_line_and_the_form() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("blockcop.toml");
    let check = |text: &str, line: usize, problem: &str| {
        std::fs::write(&file, text).expect("write");
        let err = config_with(&[("RUST_TEST_BLOCKCOP", "1"), ("BLOCKCOP_CONFIG", file.to_str().expect("utf-8"))])
            .expect_err("malformed");
        let message = err.to_string();
        let at = format!("invalid blockcop.toml at {}:{line}: {problem}", file.display());
        assert!(message.starts_with(&at), "{message}\nwanted: {at}");
        assert!(
            message.contains("; expected [[allow]] entries with `function` (a function-path prefix) and "),
            "{message}"
        );
        assert!(message.contains("`reason` (why)"), "{message}");
    };
    let good = "[[allow]]\nfunction = \"app::startup\"\nreason = \"once\"\n\n";
    check(&format!("{good}[[allow]]\nfunction = \"app::cache\"\n"), 5, "missing field `reason`");
    check(
        &format!("{good}[[allow]]\nfunction = \"app::cache\"\nevent = \"open65\"\nreason = \"r\"\n"),
        5,
        "unknown event `open65`",
    );
    check(&format!("{good}[[allow]]\nfunction = \"app::cache\"\nreasons = \"r\"\n"), 7, "unknown field `reasons`");
    check(&format!("{good}[[allow]]\nfunction = \"app::cache\"\nreason = \"  \"\n"), 5, "`reason` is empty");
    check(
        &format!("{good}[[allow]]\nfunction = \"app::cache\"\ncategory = \"disk\"\nreason = \"r\"\n"),
        7,
        "unknown variant `disk`",
    );
    check("[[allow]\nfunction = 1\n", 1, "");
    // A file named by BLOCKCOP_CONFIG must exist; blockcop off reads no file at all.
    let missing = assert_named_file_must_exist("BLOCKCOP_CONFIG", dir.path());
    assert!(config_with(&[("BLOCKCOP_CONFIG", missing.to_str().expect("utf-8"))]).is_ok());
}

/// The baseline file is read when blockcop is on, from `BLOCKCOP_BASELINE`: its entries reach the harness through
/// the configuration; a malformed entry names the file and line, a missing named file the variable.
#[test]
fn the_baseline_file_is_read_from_blockcop_baseline_with_clear_errors() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("blockcop-baseline.toml");
    let path = file.to_str().expect("utf-8");
    std::fs::write(
        &file,
        "[[known]]\nfunction = \"app::db::find\"\nblocking_api = \"rusqlite::Statement::query\"\n\
         category = \"blocking_io\"\ncall_site = \"src/db.rs:9\"\n",
    )
    .expect("write");
    let config = config_with(&[("RUST_TEST_BLOCKCOP", "1"), ("BLOCKCOP_BASELINE", path)]).expect("a good baseline");
    let entries = config.baseline().entries();
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].function.as_str(), entries[0].what()), ("app::db::find", "rusqlite::Statement::query"));
    assert_eq!(entries[0].source, format!("{path}:1"));
    // Off, no file is read.
    assert!(config_with(&[("BLOCKCOP_BASELINE", path)]).expect("off").baseline().is_empty());
    std::fs::write(&file, "[[known]]\nfunction = \"app::db::find\"\ncategory = \"blocking_io\"\ncall_site = \"x:1\"\n")
        .expect("write");
    let err = config_with(&[("RUST_TEST_BLOCKCOP", "1"), ("BLOCKCOP_BASELINE", path)]).expect_err("malformed");
    assert!(
        err.to_string().starts_with(&format!(
            "invalid blockcop-baseline.toml at {path}:1: neither `blocking_api` nor `event`; expected [[known]] entries"
        )),
        "{err}"
    );
    assert_named_file_must_exist("BLOCKCOP_BASELINE", dir.path());
}

/// A test body's adoption: its blocking fails it; a baseline written from that run (`blockcop baseline write`) lets
/// the same body pass, read from `BLOCKCOP_BASELINE` at start-up.
#[test]
fn a_test_body_passes_with_a_baseline_written_from_its_failing_run() {
    integration::skip_unless_interposing!();
    let dir = tempfile::tempdir().expect("dir");
    let (runs, again) = (dir.path().join("runs"), dir.path().join("again"));
    let on = [("RUST_TEST_BLOCKCOP", OsString::from("1"))];
    let (code, out, err) = probe_mode(Some("test-body"), &on, &runs);
    assert_eq!((code, out.as_str()), (101, ""), "{err}");
    assert!(err.contains("blockcop: the test body at integration/src/bin/config-probe.rs:"), "{err}");
    let baseline = dir.path().join("blockcop-baseline.toml");
    let args = ["blockcop", "baseline", "write", runs.to_str().expect("utf-8"), "--baseline"];
    let argv = args.iter().map(|a| (*a).to_owned()).chain([baseline.display().to_string()]);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    assert_eq!(blockcop::report::cli::run(argv, &mut stdout, &mut stderr), 0, "{}", String::from_utf8_lossy(&stderr));
    let text = std::fs::read_to_string(&baseline).expect("baseline");
    assert!(text.contains("function = \"config_probe::body_sleep\"\nblocking_api = \"std::thread::"), "{text}");
    let with = [on[0].clone(), ("BLOCKCOP_BASELINE", baseline.clone().into_os_string())];
    let (code, out, err) = probe_mode(Some("test-body"), &with, &again);
    assert_eq!((code, out.as_str()), (0, "test body passed\n"), "{err}");
}

/// The run file records which entry of the allowlist file allowed what; `blockcop report` lists each entry with the
/// calls it allowed, warns about an entry that allowed nothing (stale), and fails on it with
/// `--deny-stale-allowlist`.
#[test]
fn the_report_counts_each_allowlist_entry_and_warns_about_stale_ones() {
    integration::skip_unless_interposing!();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("blockcop.toml");
    std::fs::write(
        &file,
        "[[allow]]\nfunction = \"config_probe::startup_stat\"\nevent = \"statx\"\nreason = \"stats its own file once\"\n\n\
         [[allow]]\nfunction = \"config_probe::removed_long_ago\"\nreason = \"code that is gone\"\n",
    )
    .expect("write");
    let runs = dir.path().join("runs");
    let out = Command::new(env!("CARGO_BIN_EXE_config-probe"))
        .args([std::ffi::OsStr::new("allowlisted"), file.as_os_str()])
        .env("RUST_TEST_BLOCKCOP", "1")
        .env("BLOCKCOP_REPORT_DIR", &runs)
        .env("BLOCKCOP_CONFIG", &file)
        .output()
        .expect("run the probe");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "violations=0\n", "{}", String::from_utf8_lossy(&out.stderr));
    let report = |extra: &[&str]| {
        let mut args = vec!["blockcop".to_owned(), "report".to_owned(), runs.display().to_string()];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = blockcop::report::cli::run(args, &mut out, &mut err);
        (code, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
    };
    let (code, text, _) = report(&[]);
    assert_eq!(code, 0, "{text}");
    let shown = file.display();
    assert!(
        text.contains(&format!(
            "  {shown}:1: `config_probe::startup_stat` (statx) allowed 1 call (reason: stats its own file once)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "warning: {shown}:6: `config_probe::removed_long_ago` allowed nothing in this run: the entry is stale"
        )),
        "{text}"
    );
    let (code, _, err) = report(&["--deny-stale-allowlist"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("1 allowlist entry allowed nothing (--deny-stale-allowlist)"), "{err}");
    let (_, json, _) = report(&["--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(json["allowlist"][0]["allowed_calls"], 1, "{json}");
    assert_eq!(json["allowlist"][1]["allowed_calls"], 0, "{json}");
    assert_eq!(json["allowlist"][1]["reason"], "code that is gone", "{json}");
}
