//! Reports: run files read back and aggregated by `blockcop report` into the ranked text summary, JSON, SARIF
//! (validated against the SARIF 2.1.0 schema) and GitHub annotations; corrupt input; concurrent writers.

#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use blockcop::report::run::{RecordBody, SCHEMA_VERSION, read_run_files};
use serde_json::json;
use support::marked_line_in;

const HANDLERS: &str = "test-apps/notes/src/handlers.rs";
const STORE: &str = "test-apps/notes/src/store.rs";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One violation record, as the run-file schema documents it.
#[allow(clippy::too_many_arguments)]
fn violation(
    event: &str,
    category: &str,
    weight: u32,
    (file, line, column): (&str, u32, u32),
    duration_us: u64,
    api: Option<(&str, &str)>,
    request: Option<(&str, &str)>,
    test: Option<&str>,
) -> serde_json::Value {
    let level = match weight {
        50.. => "high",
        10..=49 => "medium",
        _ => "low",
    };
    let call_site = if file.is_empty() {
        json!({ "kind": "unknown" })
    } else {
        json!({ "kind": "source", "file": file, "line": line, "column": column })
    };
    json!({
        "version": SCHEMA_VERSION, "kind": "violation",
        "event": event, "category": category, "weight": weight, "level": level,
        "duration_us": duration_us, "count": 1, "detail": "",
        "call_site": call_site,
        "blocking_api": api.map(|a| a.0), "blocking_api_crate": api.map(|a| a.1),
        "stack": [], "thread": "tokio-runtime-worker",
        "request": request.map(|(m, p)| json!({ "method": m, "path": p })),
        "task": null, "test": test, "scope_id": 1, "pid": 4242, "timestamp_us": 1_795_000_000_000_000u64
    })
}

/// A run file of the notes app's v1 mistakes, pointing at their real lines.
fn fixture(dir: &Path) -> PathBuf {
    let sleep = marked_line_in(HANDLERS, "std::thread::sleep", "clock_nanosleep");
    let dns = marked_line_in(HANDLERS, "to_socket_addrs", "getaddrinfo");
    let template = marked_line_in(HANDLERS, "read_to_string", "open64");
    let sqlite = marked_line_in(STORE, "rows.next()", "stat64");
    let std_sleep = Some(("std::thread::functions::sleep", "std"));
    let lines = [
        violation(
            "getaddrinfo",
            "dns",
            50,
            (HANDLERS, dns, 47),
            140,
            Some(("<str as std::net::socket_addr::ToSocketAddrs>::to_socket_addrs", "std")),
            Some(("POST", "/v1/notes/1/publish")),
            Some("publish"),
        ),
        violation(
            "clock_nanosleep",
            "sleep",
            50,
            (HANDLERS, sleep, 13),
            50_100,
            std_sleep,
            Some(("POST", "/v1/notes/1/publish")),
            Some("publish"),
        ),
        violation(
            "clock_nanosleep",
            "sleep",
            50,
            (HANDLERS, sleep, 13),
            50_300,
            std_sleep,
            Some(("POST", "/v1/notes/2/publish")),
            Some("publish_twice"),
        ),
        violation(
            "open64",
            "file",
            10,
            (HANDLERS, template, 24),
            6,
            Some(("std::fs::read_to_string", "std")),
            Some(("GET", "/v1/notes/1/page")),
            None,
        ),
        violation(
            "open64",
            "file",
            10,
            (HANDLERS, template, 24),
            9,
            Some(("std::fs::read_to_string", "std")),
            Some(("GET", "/v1/notes/1/page")),
            None,
        ),
        violation(
            "open64",
            "file",
            10,
            (HANDLERS, template, 24),
            7,
            Some(("std::fs::read_to_string", "std")),
            Some(("GET", "/v1/notes/2/page")),
            None,
        ),
        // The same line's read of the file: one group with its opens (one change: the same API call).
        violation(
            "read",
            "blocking_io",
            10,
            (HANDLERS, template, 24),
            12,
            Some(("std::fs::read_to_string", "std")),
            Some(("GET", "/v1/notes/2/page")),
            None,
        ),
        violation(
            "stat64",
            "metadata",
            1,
            (STORE, sqlite, 15),
            4,
            Some(("rusqlite::row::Rows::next", "rusqlite")),
            Some(("GET", "/v1/notes/1")),
            None,
        ),
        violation("slow_poll", "slow_poll", 50, ("", 0, 0), 256_900, None, Some(("POST", "/v1/register")), None),
        json!({ "version": SCHEMA_VERSION, "kind": "dropped", "count": 3, "request": { "method": "GET", "path": "/v1/notes" },
                "task": null, "test": null, "scope_id": 9, "pid": 4242, "timestamp_us": 1_795_000_000_000_000u64 }),
    ];
    // Each record comes from a scope of its own (one request or test each), as the layer makes them.
    let mut lines = lines;
    // The sleeps' trimmed stacks, innermost first: std's sleep, then the handler.
    for sleep_record in &mut lines[1..3] {
        sleep_record["stack"] = json!([
            { "function": "std::thread::functions::sleep", "file": "/rustc/x/library/std/src/thread/functions.rs",
              "line": 315, "column": 5 },
            { "function": "notes::handlers::v1::publish_note::{{closure}}", "file": HANDLERS, "line": sleep,
              "column": 13 },
        ]);
    }
    // The SQLite read's call chain: the handler's line, then the store's call site.
    let handler = support::line_containing(HANDLERS, "let note = store::find(&conn, id)?");
    lines[7]["call_chain"] = json!([
        { "function": "notes::handlers::v1::get_note::{{closure}}", "file": HANDLERS, "line": handler, "column": 20 },
        { "function": "notes::store::find", "file": STORE, "line": sqlite, "column": 15 },
    ]);
    for (i, line) in lines.iter_mut().enumerate() {
        line["scope_id"] = json!(i + 1);
    }
    let path = dir.join("1795000000000-4242.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).expect("write fixture");
    path
}

/// Runs `blockcop` with `args`; returns (status, stdout, stderr).
fn blockcop(args: &[&str]) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let argv = std::iter::once("blockcop").chain(args.iter().copied()).map(str::to_owned);
    let status = blockcop::report::cli::run(argv, &mut out, &mut err);
    (status, String::from_utf8(out).expect("utf-8"), String::from_utf8(err).expect("utf-8"))
}

/// `out` parsed as JSON, after asserting that it validates against the SARIF 2.1.0 schema.
#[track_caller]
fn valid_sarif(out: &str) -> serde_json::Value {
    let sarif: serde_json::Value = serde_json::from_str(out).expect("JSON");
    let schema_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/report/sarif-schema-2.1.0.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).expect("schema")).expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema (see tests/report/README.md)");
    let errors: Vec<String> =
        validator.iter_errors(&sarif).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "SARIF does not validate:\n{}", errors.join("\n"));
    sarif
}

fn snapshot_settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"\x1b\[[0-9;]*m", "");
    s.add_filter(r#""version": "\d+\.\d+\.\d+""#, r#""version": "[version]""#);
    s
}

#[test]
fn text_summary_ranks_call_sites_and_renders_each_once() {
    let dir = tempfile::tempdir().expect("dir");
    let file = fixture(dir.path());
    let root = workspace_root();
    let (status, out, err) =
        blockcop(&["report", file.to_str().expect("path"), "--root", root.to_str().expect("root")]);
    // Heavy and moderate call sites reach the default fail severity (medium): exit status 1.
    assert_eq!(status, 1, "{err}");
    assert_eq!(err, "blockcop: 4 call site(s) reach the fail severity 10\n");
    snapshot_settings().bind(|| insta::assert_snapshot!("summary_text", out));
    // The SQLite read's diagnostic names the handler that led to it, under the snippet.
    let handler = support::line_containing(HANDLERS, "let note = store::find(&conn, id)?");
    let note =
        format!("= note: called from {HANDLERS}:{handler}:20 (in notes::handlers::v1::get_note::{{{{closure}}}})");
    assert!(out.contains(&note), "{out}");
    let (status, _, _) = blockcop(&["report", file.to_str().expect("path"), "--fail-severity", "500"]);
    assert_eq!(status, 0);
}

#[test]
fn json_summary() {
    let dir = tempfile::tempdir().expect("dir");
    let file = fixture(dir.path());
    let (status, out, _) = blockcop(&["report", file.to_str().expect("path"), "--format", "json"]);
    assert_eq!(status, 1);
    let value: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let groups = value["groups"].as_array().expect("groups");
    // Ranked by level, then total blocked time: the 257 ms slow poll before the two 50 ms sleeps.
    let order: Vec<&str> = groups.iter().map(|g| g["event"].as_str().expect("event")).collect();
    assert_eq!(order, ["slow_poll", "clock_nanosleep", "getaddrinfo", "open64", "stat64"]);
    assert_eq!(groups[1]["occurrences"], 2);
    // One group per call site and API: the template's three opens and its read.
    assert_eq!(groups[3]["blocking_api"], "std::fs::read_to_string");
    assert_eq!(groups[3]["events"], json!({ "open64": 3, "read": 1 }));
    assert_eq!(groups[3]["request_count"], 4);
    // The example record carries the call chain, outermost first.
    let handler = support::line_containing(HANDLERS, "let note = store::find(&conn, id)?");
    let chain = &groups[4]["example"]["call_chain"];
    assert_eq!((&chain[0]["file"], &chain[0]["line"]), (&json!(HANDLERS), &json!(handler)), "{chain}");
    assert_eq!(value["dropped"], 3);
    snapshot_settings().bind(|| insta::assert_json_snapshot!("summary_json", value));
}

/// A CI artifact folder of shards: run files in subdirectories are read too.
#[test]
fn reads_run_files_in_subdirectories() {
    let dir = tempfile::tempdir().expect("dir");
    let nested = dir.path().join("shard-1/target/blockcop");
    std::fs::create_dir_all(&nested).expect("mkdir");
    fixture(&nested);
    let (status, out, err) = blockcop(&["report", dir.path().to_str().expect("path"), "--format", "json"]);
    assert_eq!(status, 1, "{err}");
    let value: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!((value["files"].as_u64(), value["records"].as_u64()), (Some(1), Some(9)), "{out}");
}

#[test]
fn by_syscall_splits_a_site_and_stacks_prints_the_worst_stack() {
    let dir = tempfile::tempdir().expect("dir");
    let file = fixture(dir.path());
    let file = file.to_str().expect("path");
    let (_, out, _) = blockcop(&["report", file, "--format", "json", "--by", "syscall"]);
    let value: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let template = marked_line_in(HANDLERS, "read_to_string", "open64");
    let at_template: Vec<&str> = value["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter(|g| g["call_site"]["line"] == template)
        .map(|g| g["event"].as_str().expect("event"))
        .collect();
    assert_eq!(at_template, ["open64", "read"]);
    let (_, out, _) = blockcop(&["report", file, "--stacks"]);
    let sleep = marked_line_in(HANDLERS, "std::thread::sleep", "clock_nanosleep");
    let stack = format!(
        "   = stack of the worst call, innermost first:\n       std::thread::functions::sleep at \
         /rustc/x/library/std/src/thread/functions.rs:315:5\n       notes::handlers::v1::publish_note::{{{{closure}}}} \
         at {HANDLERS}:{sleep}:13\n"
    );
    assert!(out.contains(&stack), "{out}");
    let (_, out, _) = blockcop(&["report", file]);
    assert!(!out.contains("= stack of"), "{out}");
}

#[test]
fn sarif_is_valid_2_1_0_and_points_at_the_lines() {
    let dir = tempfile::tempdir().expect("dir");
    let file = fixture(dir.path());
    let (_, out, _) = blockcop(&["report", file.to_str().expect("path"), "--format", "sarif"]);
    let sarif = valid_sarif(&out);
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().expect("results");
    let sleep = results.iter().find(|r| r["ruleId"] == "blocking/sleep").expect("the sleep's result");
    assert_eq!(sleep["level"], "error");
    let loc = &sleep["locations"][0]["physicalLocation"];
    assert_eq!(loc["artifactLocation"]["uri"], HANDLERS);
    assert_eq!(loc["artifactLocation"]["uriBaseId"], "%SRCROOT%");
    let line = marked_line_in(HANDLERS, "std::thread::sleep", "clock_nanosleep");
    assert_eq!(loc["region"]["startLine"], line);
    // The SQLite read's call chain: the handler's line is a related location, linked from the message, and the
    // code flow runs from it to the call site.
    let handler = support::line_containing(HANDLERS, "let note = store::find(&conn, id)?");
    let sqlite = results.iter().find(|r| r["ruleId"] == "blocking/metadata").expect("the SQLite read's result");
    let related = &sqlite["relatedLocations"][0];
    assert_eq!(related["physicalLocation"]["artifactLocation"]["uri"], HANDLERS, "{sqlite:#}");
    assert_eq!(related["physicalLocation"]["region"]["startLine"], handler, "{sqlite:#}");
    let text = sqlite["message"]["text"].as_str().expect("message");
    assert!(text.ends_with(&format!(" Called from [{HANDLERS}:{handler}:20](1).")), "{text}");
    let flow = sqlite["codeFlows"][0]["threadFlows"][0]["locations"].as_array().expect("a code flow");
    let lines: Vec<&serde_json::Value> =
        flow.iter().map(|l| &l["location"]["physicalLocation"]["region"]["startLine"]).collect();
    let site = marked_line_in(STORE, "rows.next()", "stat64");
    assert_eq!(lines, [&json!(handler), &json!(site)]);
    // One rule per category.
    let rules = sarif["runs"][0]["tool"]["driver"]["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), blockcop::CATALOGUE.len());
    snapshot_settings().bind(|| insta::assert_json_snapshot!("summary_sarif", sarif));
}

#[test]
fn github_annotations_name_file_and_line() {
    let dir = tempfile::tempdir().expect("dir");
    let run = read_run_files(&[fixture(dir.path())]).expect("read");
    let annotations = blockcop::report::Summary::from_run_files(&run).github_annotations();
    let line = marked_line_in(HANDLERS, "std::thread::sleep", "clock_nanosleep");
    let first = annotations.lines().next().expect("an annotation");
    assert!(
        first.starts_with(&format!("::error file={HANDLERS},line={line},col=13,title=blockcop%3A blocking/sleep::")),
        "{first}"
    );
    // The slow poll has no source location, so no annotation.
    assert_eq!(annotations.lines().count(), 4);
}

#[test]
fn corrupt_lines_are_reported_with_position_and_skipped() {
    let dir = tempfile::tempdir().expect("dir");
    let file = fixture(dir.path());
    let good = std::fs::read_to_string(&file).expect("read");
    let first = good.lines().next().expect("a line");
    let corrupt = format!("{first}\n{}\nnot json at all\n\n{first}\n", &first[..first.len() / 2]);
    std::fs::write(&file, corrupt).expect("write");
    let run = read_run_files(std::slice::from_ref(&file)).expect("read");
    assert_eq!(run.records.len(), 2);
    let positions: Vec<String> = run.skipped.iter().map(|e| e.to_string()).collect();
    assert_eq!(positions.len(), 2, "{positions:?}");
    assert!(positions[0].starts_with(&format!("{}:2: skipped a corrupt record: ", file.display())), "{positions:?}");
    assert!(positions[1].starts_with(&format!("{}:3: skipped a corrupt record: ", file.display())), "{positions:?}");
    let (status, out, err) = blockcop(&["report", file.to_str().expect("path")]);
    assert_eq!(status, 1);
    assert!(err.contains(&format!("{}:2: skipped a corrupt record", file.display())), "{err}");
    assert!(out.contains("blockcop: 2 violations at 1 call sites"), "{out}");
}

#[test]
fn unknown_schema_version_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("future.jsonl");
    std::fs::write(&file, "{\"version\":99,\"kind\":\"violation\"}\n").expect("write");
    let (status, out, err) = blockcop(&["report", file.to_str().expect("path")]);
    assert_eq!(status, 2);
    assert!(out.is_empty());
    assert_eq!(
        err,
        format!(
            "blockcop: {}:1: run file schema version 99 is not supported (this blockcop reads versions 1 to 2); use \
             the blockcop that wrote it\n",
            file.display()
        )
    );
}

/// A bad byte costs its own line, never the file: a non-UTF-8 line in the middle and a last line cut inside a
/// multi-byte character (a crash mid-write) are skipped with their position; every other record counts.
#[test]
fn lines_that_are_not_utf8_are_skipped_with_their_position() {
    let dir = tempfile::tempdir().expect("dir");
    let file = fixture(dir.path());
    let good = std::fs::read(&file).expect("read");
    let lines: Vec<&[u8]> = good.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let mut bytes = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if i == 2 {
            bytes.extend_from_slice(b"{\"version\":2,\"detail\":\"\xff\xfe\"}\n");
        }
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }
    // The first record again, cut inside the three bytes of a `用` in its detail.
    let cut = String::from_utf8_lossy(lines[0]).replace("\"detail\":\"\"", "\"detail\":\"用用\"");
    let cut = cut.as_bytes();
    let inside = cut.windows(3).position(|w| w == "用".as_bytes()).expect("the detail") + 4;
    bytes.extend_from_slice(&cut[..inside]);
    std::fs::write(&file, &bytes).expect("write");

    let run = read_run_files(std::slice::from_ref(&file)).expect("read");
    assert_eq!(run.records.len(), lines.len(), "every good record is read");
    let skipped: Vec<String> = run.skipped.iter().map(ToString::to_string).collect();
    let at = |line: usize| format!("{}:{line}: skipped a corrupt record: not valid UTF-8", file.display());
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].starts_with(&at(3)), "{skipped:?}");
    assert!(skipped[1].starts_with(&at(lines.len() + 2)), "{skipped:?}");
    let (status, out, err) = blockcop(&["report", file.to_str().expect("path")]);
    assert_eq!(status, 1);
    assert!(err.contains(&at(3)), "{err}");
    let violations = lines.iter().filter(|l| String::from_utf8_lossy(l).contains("\"kind\":\"violation\"")).count();
    assert!(out.contains(&format!("blockcop: {violations} violations at")), "{out}");
}

/// A FIFO (or socket) named like a run file in the folder is skipped with a note, not read: reading it would wait
/// forever for a writer.
#[test]
fn a_fifo_in_the_folder_is_skipped_with_a_note() {
    let dir = tempfile::tempdir().expect("dir");
    fixture(dir.path());
    let fifo = dir.path().join("0-fifo.jsonl");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.path().to_str().expect("path").to_owned();
    std::thread::spawn(move || tx.send(blockcop(&["report", &path])));
    let (status, out, err) =
        rx.recv_timeout(std::time::Duration::from_secs(120)).expect("the report finishes without the FIFO");
    assert_eq!(status, 1);
    let note = format!("blockcop: warning: {}: skipped: not a regular file (FIFO)", fifo.display());
    assert!(err.contains(&note), "{err}");
    assert!(out.contains("from 1 run file"), "{out}");
}

#[test]
fn a_missing_path_or_no_run_file_is_an_error_not_a_clean_run() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("never-written");
    let (status, out, err) = blockcop(&["report", missing.to_str().expect("path")]);
    assert_eq!((status, out.as_str()), (2, ""));
    assert_eq!(err, format!("blockcop: {}: no such file or directory\n", missing.display()));
    // A directory without any run file: blockcop never ran there.
    std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
    let (status, out, err) = blockcop(&["report", dir.path().to_str().expect("path")]);
    assert_eq!((status, out.as_str()), (2, ""));
    assert!(err.starts_with(&format!("blockcop: no run files (*.jsonl) in {}", dir.path().display())), "{err}");
    // A run file without violations (an enabled process that blocked nowhere) is a clean run.
    let run = json!({
        "version": SCHEMA_VERSION, "kind": "run", "workspace_root": null,
        "request": null, "task": null, "test": null, "scope_id": 0, "pid": 1, "timestamp_us": 0
    });
    std::fs::write(dir.path().join("1-1.jsonl"), format!("{run}\n")).expect("write");
    assert_eq!(
        blockcop(&["report", dir.path().to_str().expect("path")]),
        (0, "no violations recorded\n\n".into(), String::new())
    );
}

/// Version 1 run files (stacks inline, from an older blockcop) still read.
#[test]
fn version_1_run_files_still_read() {
    let dir = tempfile::tempdir().expect("dir");
    let file = fixture(dir.path());
    let text = std::fs::read_to_string(&file).expect("read");
    let frame = json!({ "function": "notes::handlers::f", "file": HANDLERS, "line": 3, "column": 1 });
    let v1: String = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["version"] = json!(1);
            v["stack"] = json!([frame]);
            format!("{v}\n")
        })
        .collect();
    std::fs::write(&file, v1).expect("write");
    let run = read_run_files(std::slice::from_ref(&file)).expect("read");
    assert!(run.skipped.is_empty(), "{:?}", run.skipped);
    assert_eq!(run.records.len(), text.lines().count());
    let stacks: Vec<usize> = run
        .records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Violation(v) => Some(v.stack.len()),
            _ => None,
        })
        .collect();
    assert!(stacks.len() > 5 && stacks.iter().all(|n| *n == 1), "{stacks:?}");
}

#[test]
fn bad_arguments_are_refused() {
    let (status, _, err) = blockcop(&["report", "--fail-severity", "severe"]);
    assert_eq!(status, 2);
    assert!(err.contains("invalid value 'severe' for '--fail-severity"), "{err}");
}

/// A server's records (made on tokio's worker threads, `tokio-rt-worker` from tokio 1.50) name no test.
#[test]
fn records_of_worker_threads_name_no_test() {
    let dir = tempfile::tempdir().expect("dir");
    let probe = dir.path().join("probe.txt");
    std::fs::write(&probe, "x").expect("write");
    let reports = dir.path().join("runs");
    for name in ["tokio-rt-worker", "tokio-runtime-worker", "api-worker"] {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_run-file-writer"))
            .args(["2", "4", &probe.display().to_string(), name])
            .env("BLOCKCOP_REPORT_DIR", &reports)
            .status()
            .expect("run the writer");
        assert!(status.success());
    }
    let run = read_run_files(&[reports]).expect("read");
    let stats: Vec<_> =
        run.records.iter().filter(|r| matches!(&r.body, RecordBody::Violation(v) if v.event == "statx")).collect();
    assert_eq!(stats.len(), 3 * 2 * 4);
    assert!(stats.iter().all(|r| r.test.is_none()), "{:?}", stats.iter().map(|r| &r.test).collect::<Vec<_>>());
}

#[test]
fn two_processes_with_eight_threads_each_lose_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let probe = dir.path().join("probe.txt");
    std::fs::write(&probe, "x").expect("write");
    let reports = dir.path().join("runs");
    let (threads, scopes) = (8, 40);
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_run-file-writer"))
                .args([threads.to_string(), scopes.to_string(), probe.display().to_string()])
                .env("BLOCKCOP_REPORT_DIR", &reports)
                .spawn()
                .expect("spawn writer process")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    let run = read_run_files(&[reports]).expect("read");
    assert!(run.skipped.is_empty(), "{:?}", run.skipped);
    assert_eq!(run.files.len(), 2, "one file per process");
    let mut pids: Vec<u32> = run.records.iter().map(|r| r.pid).collect();
    pids.dedup();
    assert_eq!(pids.len(), 2, "each file holds one process's records, in order");
    // 16 threads on a small machine get preempted, which can add a slow poll here and there: count the stats.
    let stat = |r: &&blockcop::report::run::Record| matches!(&r.body, RecordBody::Violation(v) if v.event == "statx");
    assert_eq!(run.records.iter().filter(stat).count(), 2 * threads * scopes);
    // Each distinct stack is written once per file; the records refer to it, and read back with it in place.
    assert!(
        run.records.iter().filter(stat).all(|r| matches!(&r.body, RecordBody::Violation(v) if !v.stack.is_empty()))
    );
    for file in &run.files {
        let text = std::fs::read_to_string(file).expect("read");
        let stacks = text.lines().filter(|l| l.contains("\"kind\":\"stack\"")).count();
        let records = text.lines().filter(|l| l.contains("\"kind\":\"violation\"")).count();
        assert!(stacks >= 1 && stacks * 10 < records, "{stacks} stacks for {records} records");
        let per_record = (text.len()
            - text.lines().filter(|l| !l.contains("\"kind\":\"violation\"")).map(str::len).sum::<usize>())
            / records;
        assert!(per_record <= 1024, "{per_record} bytes per repeated record");
    }
    for t in 0..threads {
        let name = format!("writer_{t}");
        let of_thread = run.records.iter().filter(stat).filter(|r| r.test.as_deref() == Some(name.as_str())).count();
        assert_eq!(of_thread, 2 * scopes);
    }
}

/// A program started outside its workspace (a service binary run from `/`, a test binary run by hand) still
/// gives sites relative to the workspace it was built in, and its run file records that root.
#[test]
fn sites_are_relative_to_the_built_workspace_whatever_the_working_directory() {
    let dir = tempfile::tempdir().expect("dir");
    let probe = dir.path().join("probe.txt");
    std::fs::write(&probe, "x").expect("write");
    let reports = dir.path().join("runs");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_run-file-writer"))
        .args(["1", "2", &probe.display().to_string()])
        .current_dir(dir.path())
        .env_remove("CARGO_MANIFEST_DIR")
        .env("BLOCKCOP_REPORT_DIR", &reports)
        .status()
        .expect("run the writer");
    assert!(status.success());
    let run = read_run_files(&[reports]).expect("read");
    let root = workspace_root().canonicalize().expect("root");
    assert_eq!(run.roots, [root], "the run file records the workspace root");
    let sites: Vec<String> = run
        .records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Violation(v) if v.event == "statx" => Some(v.call_site.to_string()),
            _ => None,
        })
        .collect();
    let line = support::line_containing("integration/src/bin/run-file-writer.rs", "std::fs::metadata(&file)");
    assert_eq!(sites.len(), 2, "{sites:?}");
    assert!(
        sites.iter().all(|s| s.starts_with(&format!("integration/src/bin/run-file-writer.rs:{line}:"))),
        "{sites:?}"
    );
}

/// `blockcop report` reads snippets under the root the run file records, not under the workspace it runs in.
#[test]
fn snippets_come_from_the_root_the_run_file_records() {
    let dir = tempfile::tempdir().expect("dir");
    let built = dir.path().join("service");
    std::fs::create_dir_all(built.join("src")).expect("mkdir");
    std::fs::write(built.join("src/lib.rs"), "async fn handler() {\n    std::thread::sleep(d); // in the service\n}\n")
        .expect("write");
    let run = json!({ "version": SCHEMA_VERSION, "kind": "run", "workspace_root": built, "request": null,
                      "task": null, "test": null, "scope_id": 0, "pid": 7, "timestamp_us": 1u64 });
    let sleep = violation("clock_nanosleep", "sleep", 50, ("src/lib.rs", 2, 5), 50_000, None, None, None);
    let file = dir.path().join("1-7.jsonl");
    std::fs::write(&file, format!("{run}\n{sleep}\n")).expect("write");
    // This workspace has a src/lib.rs too: its line 2 must not be shown.
    let (_, out, err) = blockcop(&["report", file.to_str().expect("path")]);
    assert!(out.contains("2 |     std::thread::sleep(d); // in the service"), "{out}{err}");
    // --root still wins.
    let (_, out, _) = blockcop(&["report", file.to_str().expect("path"), "--root", "/nonexistent"]);
    assert!(!out.contains("// in the service"), "{out}");
}

/// The fixture's records, changed by `edit`, as the run file of `dir` (a directory of its own).
fn edited_fixture(dir: &Path, edit: impl FnOnce(&mut Vec<serde_json::Value>)) -> PathBuf {
    let original = tempfile::tempdir().expect("dir");
    let text = std::fs::read_to_string(fixture(original.path())).expect("fixture");
    let mut records: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("a record")).collect();
    edit(&mut records);
    std::fs::create_dir_all(dir).expect("mkdir");
    let path = dir.join("1795000000001-4242.jsonl");
    std::fs::write(&path, records.iter().map(|r| format!("{r}\n")).collect::<String>()).expect("write");
    path
}

fn is_sleep(r: &serde_json::Value) -> bool {
    r["event"] == "clock_nanosleep"
}

/// A baseline written from a run: the same run passes, a known call moved five lines down stays known, a new
/// blocking call in another function or a different one in a known function fails, a removed one is reported fixed
/// with the command that removes it, and that command does.
#[test]
fn a_baseline_lets_known_findings_pass_and_fails_new_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).expect("mkdir");
    fixture(&run);
    let baseline = dir.path().join("blockcop-baseline.toml");
    let (b, r) = (baseline.to_str().expect("path"), run.to_str().expect("path"));
    let (status, _, err) = blockcop(&["baseline", "write", r, "--baseline", b]);
    assert_eq!(status, 0, "{err}");
    assert_eq!(err, format!("blockcop: {b}: recorded 5 known findings; 5 entries\n"));
    let text = std::fs::read_to_string(&baseline).expect("baseline");
    // Keyed by the call site's function and API: the sleep's function comes from its stack, the SQLite read's from
    // its call chain.
    let sleep = marked_line_in(HANDLERS, "std::thread::sleep", "clock_nanosleep");
    let entry = format!(
        "[[known]]\nfunction = \"notes::handlers::v1::publish_note::{{{{closure}}}}\"\n\
         blocking_api = \"std::thread::functions::sleep\"\ncategory = \"sleep\"\ncall_site = \"{HANDLERS}:{sleep}:13\"\n"
    );
    assert!(text.contains(&entry), "{text}");
    assert!(text.contains("function = \"notes::store::find\"\nblocking_api = \"rusqlite::row::Rows::next\""), "{text}");
    assert!(text.contains("function = \"unknown\"\nevent = \"slow_poll\""), "{text}");

    // The same run: everything known, nothing fails, no diagnostic rendered.
    let (status, out, err) = blockcop(&["report", r, "--baseline", b]);
    assert_eq!((status, err.as_str()), (0, ""), "{out}");
    assert!(
        out.starts_with("blockcop: 9 violations at 5 call sites (5 known from the baseline), from 1 run file"),
        "{out}"
    );
    assert!(!out.contains("error["), "{out}");
    assert!(out.contains(&format!("baseline {b}: 5 entries; 5 known call sites (not failing), 0 new")), "{out}");
    // Without it, the run fails as before.
    assert_eq!(blockcop(&["report", r]).0, 1);

    // The sleep moved five lines down (an edit above it): still known.
    let moved = edited_fixture(&dir.path().join("moved"), |records| {
        for r in records.iter_mut().filter(|r| is_sleep(r)) {
            r["call_site"]["line"] = json!(sleep + 5);
            r["stack"][1]["line"] = json!(sleep + 5);
        }
    });
    let (status, out, err) = blockcop(&["report", moved.to_str().expect("path"), "--baseline", b]);
    assert_eq!((status, err.as_str()), (0, ""), "{out}");

    // A sleep in another handler, and a file read in the known handler: both new, both fail, each rendered.
    let new = edited_fixture(&dir.path().join("new"), |records| {
        let mut elsewhere = records[1].clone();
        elsewhere["stack"][1]["function"] = json!("notes::handlers::v1::delete_note::{{closure}}");
        elsewhere["call_site"]["line"] = json!(sleep + 40);
        elsewhere["stack"][1]["line"] = json!(sleep + 40);
        let mut other_call = records[1].clone();
        other_call["event"] = json!("read");
        other_call["category"] = json!("blocking_io");
        other_call["blocking_api"] = json!("std::fs::read");
        other_call["call_site"]["line"] = json!(sleep + 1);
        other_call["stack"][1]["line"] = json!(sleep + 1);
        records.extend([elsewhere, other_call]);
    });
    let (status, out, err) = blockcop(&["report", new.to_str().expect("path"), "--baseline", b]);
    assert_eq!(status, 1, "{out}");
    assert_eq!(err, "blockcop: 2 new call site(s) reach the fail severity 10\n");
    assert!(out.contains(&format!("baseline {b}: 5 entries; 5 known call sites (not failing), 2 new")), "{out}");
    assert_eq!(out.matches("error[").count() + out.matches("warning[").count(), 2, "{out}");

    // The sleep removed: reported fixed with the command that removes it; failing on it only when asked.
    let fixed = edited_fixture(&dir.path().join("fixed"), |records| records.retain(|r| !is_sleep(r)));
    let f = fixed.to_str().expect("path");
    let (status, out, _) = blockcop(&["report", f, "--baseline", b]);
    assert_eq!(status, 0, "{out}");
    let line = out.lines().find(|l| l.starts_with("fixed: ")).expect("a fixed entry");
    assert_eq!(
        line,
        format!(
            "fixed: {b}:6: `notes::handlers::v1::publish_note::{{{{closure}}}}` calling \
             `std::thread::functions::sleep` (was at {HANDLERS}:{sleep}:13) no longer blocks; `blockcop baseline \
             prune` removes the entry"
        )
    );
    let (status, _, err) = blockcop(&["report", f, "--baseline", b, "--deny-fixed-baseline"]);
    assert_eq!(status, 1);
    assert!(err.contains("1 baseline entry matched nothing (--deny-fixed-baseline)"), "{err}");
    let (status, _, err) = blockcop(&["baseline", "prune", f, "--baseline", b]);
    assert_eq!((status, err), (0, format!("blockcop: {b}: removed 1 fixed entry; 4 entries\n")));
    assert!(!std::fs::read_to_string(&baseline).expect("baseline").contains("publish_note"));
    assert_eq!(blockcop(&["report", f, "--baseline", b, "--deny-fixed-baseline"]).0, 0);
}

#[test]
fn sarif_marks_each_result_with_its_baseline_state() {
    let dir = tempfile::tempdir().expect("dir");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).expect("mkdir");
    fixture(&run);
    let baseline = dir.path().join("blockcop-baseline.toml");
    let b = baseline.to_str().expect("path");
    assert_eq!(blockcop(&["baseline", "write", run.to_str().expect("path"), "--baseline", b]).0, 0);
    // The sleep gone, a sleep in another handler new.
    let next = edited_fixture(&dir.path().join("next"), |records| {
        let mut elsewhere = records[1].clone();
        elsewhere["stack"][1]["function"] = json!("notes::handlers::v1::delete_note::{{closure}}");
        records.retain(|r| !is_sleep(r));
        records.push(elsewhere);
    });
    let (status, out, _) = blockcop(&["report", next.to_str().expect("path"), "--baseline", b, "--format", "sarif"]);
    assert_eq!(status, 1);
    let sarif = valid_sarif(&out);
    let results = sarif["runs"][0]["results"].as_array().expect("results");
    let states: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r["ruleId"].as_str().expect("rule"), r["baselineState"].as_str().expect("baselineState")))
        .collect();
    assert_eq!(
        states,
        [
            ("blocking/slow_poll", "unchanged"),
            ("blocking/sleep", "new"),
            ("blocking/dns", "unchanged"),
            ("blocking/file", "unchanged"),
            ("blocking/metadata", "unchanged"),
            ("blocking/sleep", "absent"),
        ]
    );
    let known = &results[0];
    assert_eq!(known["suppressions"][0]["kind"], "external", "{known:#}");
    assert!(results[1].get("suppressions").is_none());
    let absent = &results[5];
    assert_eq!((&absent["kind"], &absent["level"]), (&json!("pass"), &json!("none")));
    assert!(absent["message"]["text"].as_str().expect("text").contains("publish_note"), "{absent:#}");
}

#[test]
fn malformed_baseline_entries_name_the_file_the_line_and_the_form() {
    let dir = tempfile::tempdir().expect("dir");
    let run = fixture(dir.path());
    let baseline = dir.path().join("blockcop-baseline.toml");
    let check = |text: &str, line: usize, problem: &str| {
        std::fs::write(&baseline, text).expect("write");
        let (status, out, err) =
            blockcop(&["report", run.to_str().expect("path"), "--baseline", baseline.to_str().expect("path")]);
        assert_eq!((status, out.as_str()), (2, ""), "{err}");
        let at = format!("blockcop: invalid blockcop-baseline.toml at {}:{line}: {problem}", baseline.display());
        assert!(err.starts_with(&at), "{err}\nwanted: {at}");
        assert!(err.contains("; expected [[known]] entries with `function` (the call site's function), "), "{err}");
    };
    let good = "[[known]]\nfunction = \"app::a\"\nevent = \"slow_poll\"\ncategory = \"slow_poll\"\ncall_site = \"src/a.rs:1\"\n\n";
    check(
        &format!("{good}[[known]]\nfunction = \"app::b\"\ncategory = \"file\"\ncall_site = \"src/b.rs:2\"\n"),
        7,
        "neither `blocking_api` nor `event`",
    );
    check(
        &format!(
            "{good}[[known]]\nfunction = \"app::b\"\nevent = \"open65\"\ncategory = \"file\"\ncall_site = \"x:1\"\n"
        ),
        7,
        "unknown event `open65`",
    );
    check(
        &format!(
            "{good}[[known]]\nfunction = \"app::b\"\nevent = \"open64\"\nblocking_api = \"std::fs::read\"\ncategory = \"file\"\ncall_site = \"x:1\"\n"
        ),
        7,
        "both `blocking_api` and `event`",
    );
    check(
        &format!("{good}[[known]]\nfunction = \"app::b\"\nevent = \"open64\"\ncategory = \"file\"\n"),
        7,
        "missing field `call_site`",
    );
    check(
        &format!(
            "{good}[[known]]\nfunction = \"app::b\"\nevent = \"open64\"\ncategory = \"disk\"\ncall_site = \"x:1\"\n"
        ),
        10,
        "unknown variant `disk`",
    );
    // A baseline named on the command line must exist.
    let missing = dir.path().join("nope.toml");
    let (status, _, err) =
        blockcop(&["report", run.to_str().expect("path"), "--baseline", missing.to_str().expect("path")]);
    assert_eq!(status, 2);
    assert!(
        err.starts_with(&format!("blockcop: invalid blockcop-baseline.toml at {}: cannot be read", missing.display())),
        "{err}"
    );
}
