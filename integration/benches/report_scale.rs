//! `blockcop report` at scale: 1,000,000 violation records in 200 run files (800 groups), as a day of CI shards
//! leaves them. Writes them in the run-file schema (version 2: each file's distinct stacks once, records referring
//! to them; `--v1` writes every stack inline instead, as version 1 did), then runs the report in a child process
//! and prints its wall time and peak RSS (`VmHWM`). Run by `cargo xtask bench` (release).
//!
//! `report_scale [--v1] [--records N]`

use std::io::Write;
use std::time::Instant;

use serde_json::json;

const FILES: usize = 200;
const SITES_PER_FILE: usize = 40;
const GROUPS: usize = 800;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir] = args.as_slice()
        && flag == "--child"
    {
        child(dir);
        return;
    }
    let v1 = args.iter().any(|a| a == "--v1");
    let records: usize = args
        .iter()
        .position(|a| a == "--records")
        .and_then(|i| args.get(i + 1))
        .map_or(1_000_000, |n| n.parse().expect("--records takes a whole number"));
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = write_run_files(dir.path(), records, v1);
    let started = Instant::now();
    let out = std::process::Command::new(std::env::current_exe().expect("this benchmark"))
        .args(["--child", &dir.path().display().to_string()])
        .output()
        .expect("run the report");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let peak = stderr.lines().find_map(|l| l.strip_prefix("peak_rss_kb=")).unwrap_or("?");
    let groups = stderr.lines().find_map(|l| l.strip_prefix("groups=")).unwrap_or("?");
    println!(
        "report_scale: {records} records in {FILES} files ({:.0} MB, schema v{}): {groups} groups in {:.2}s, peak \
         RSS {} MB",
        bytes as f64 / 1e6,
        if v1 { 1 } else { 2 },
        elapsed.as_secs_f64(),
        peak.parse::<u64>().map_or_else(|_| "?".to_owned(), |kb| format!("{:.0}", kb as f64 / 1024.0)),
    );
    if !out.status.success() && out.status.code() != Some(1) {
        eprintln!("{stderr}");
        std::process::exit(1);
    }
}

/// The report, as `blockcop report DIR --format json` runs it; then this process's peak RSS.
fn child(dir: &str) {
    let mut out = Vec::new();
    let argv = ["blockcop", "report", dir, "--format", "json"].map(str::to_owned);
    let status = blockcop::report::cli::run(argv, &mut out, &mut std::io::sink());
    let summary: serde_json::Value = serde_json::from_slice(&out).expect("the JSON summary");
    eprintln!("groups={}", summary["groups"].as_array().map_or(0, Vec::len));
    let status_file = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status_file.lines().find_map(|l| l.strip_prefix("VmHWM:")).map(|v| v.trim().trim_end_matches(" kB"));
    eprintln!("peak_rss_kb={}", peak.unwrap_or("?"));
    std::process::exit(i32::from(status));
}

/// A 30-frame stack ending in the group's call site.
fn stack(group: usize) -> serde_json::Value {
    let mut frames: Vec<serde_json::Value> = (0..29)
        .map(|i| {
            json!({
                "function": format!("tokio::runtime::task::harness::Harness<T,S>::poll_inner::{{{{closure}}}}::level_{i}"),
                "file": format!("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.48.0/src/runtime/task/harness_{i}.rs"),
                "line": 100 + i, "column": 9
            })
        })
        .collect();
    frames.insert(0, site_frame(group));
    serde_json::Value::Array(frames)
}

fn site_frame(group: usize) -> serde_json::Value {
    json!({ "function": format!("app::handlers::handler_{}", group / 4), "file": format!("src/handlers/h{}.rs", group / 4), "line": 10 + group % 4, "column": 5 })
}

/// Writes `records` violation records over [`FILES`] files; returns the bytes written.
fn write_run_files(dir: &std::path::Path, records: usize, v1: bool) -> u64 {
    let apis = ["std::fs::read", "std::thread::sleep", "std::net::TcpStream::connect", "rusqlite::Connection::execute"];
    let events = ["read", "clock_nanosleep", "connect", "pread64"];
    let per_file = records / FILES;
    let mut bytes = 0;
    for f in 0..FILES {
        let path = dir.join(format!("{:013}-{}.jsonl", 1_795_000_000_000u64 + f as u64, 10_000 + f));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        let version = if v1 { 1 } else { 2 };
        let common = |scope: usize| {
            json!({ "request": { "method": "GET", "path": format!("/items/{}", scope % 50) }, "task": null,
                    "test": null, "scope_id": scope, "pid": 10_000 + f, "timestamp_us": 1_795_000_000_000_000u64 })
        };
        let mut line = |value: serde_json::Value| {
            serde_json::to_writer(&mut out, &value).expect("write");
            out.write_all(b"\n").expect("write");
        };
        let mut run = common(0);
        run["version"] = json!(version);
        run["kind"] = json!("run");
        run["workspace_root"] = json!("/src/app");
        line(run);
        let mut written = vec![false; GROUPS];
        for k in 0..per_file {
            // Each file (one test binary) meets 40 of the 800 groups.
            let group = (f * SITES_PER_FILE + k % SITES_PER_FILE) % GROUPS;
            let api = group % 4;
            let scope = k / 3 + 1;
            let mut r = common(scope);
            if !v1 && !written[group] {
                written[group] = true;
                let mut s = common(scope);
                s["version"] = json!(2);
                s["kind"] = json!("stack");
                s["id"] = json!(group + 1);
                s["frames"] = stack(group);
                s["call_chain"] = json!([site_frame(group)]);
                line(s);
            }
            let site = site_frame(group);
            for (key, value) in [
                ("version", json!(version)),
                ("kind", json!("violation")),
                ("event", json!(events[api])),
                ("category", json!("blocking_io")),
                ("weight", json!(10)),
                ("level", json!("medium")),
                ("duration_us", json!(120 + k % 1000)),
                ("count", json!(1)),
                ("detail", json!("/var/lib/app/data.db")),
                ("call_site", json!({ "kind": "source", "file": site["file"], "line": site["line"], "column": 5 })),
                ("blocking_api", json!(apis[api])),
                ("blocking_api_crate", json!("std")),
                ("thread", json!("tokio-rt-worker")),
            ] {
                r[key] = value;
            }
            if v1 {
                r["stack"] = stack(group);
                r["call_chain"] = json!([site]);
            } else {
                r["stack_id"] = json!(group + 1);
            }
            line(r);
        }
        out.flush().expect("flush");
        bytes += std::fs::metadata(&path).map_or(0, |m| m.len());
    }
    bytes
}
