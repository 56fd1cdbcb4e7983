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
