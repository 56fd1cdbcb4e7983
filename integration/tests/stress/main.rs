//! Nothing lost under load: every violation a response's `x-blocking-violations` header counts is in the run file
//! under that request's id (10,000 requests over two worker threads), and a server killed with SIGKILL keeps every
//! record it had written.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use blockcop::ViolationsHeader;
use blockcop::report::run::{RecordBody, read_run_files};

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Server {
    let probe = dir.join("probe.txt");
    std::fs::write(&probe, "x").expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_stress-server"))
        .arg(&probe)
        .env("RUST_TEST_BLOCKCOP", "1")
        .env("BLOCKCOP_REPORT_DIR", dir.join("runs"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let mut base = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut base).expect("read");
    Server { child, base: base.trim_end().trim_end_matches('/').to_owned() }
}

/// Sends `requests` requests from `clients` concurrent clients; returns each flagged response's (request id, count).
fn drive(base: &str, requests: usize, clients: usize) -> Vec<(u64, u64)> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (client, base) = (client.clone(), base.to_owned());
                tokio::spawn(async move {
                    let mut flagged = Vec::new();
                    for i in (c..requests).step_by(clients) {
                        let res = client.get(format!("{base}/stat/{i}")).send().await.expect("request");
                        assert!(res.status().is_success());
                        let header = res.headers().get("x-blocking-violations").map(|h| h.to_str().expect("ascii"));
                        if let Some(header) = header {
                            let header = ViolationsHeader::parse(header).expect("a valid header");
                            let id = res.headers()["x-blockcop-request-id"].to_str().expect("id").parse().expect("id");
                            flagged.push((id, header.count));
                        }
                        let _ = res.bytes().await.expect("body");
                    }
                    flagged
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("client"));
        }
        all
    })
}

/// The weighted calls the run files hold per request id (scope id), counting merged records one by one.
fn recorded(dir: &Path) -> (HashMap<u64, u64>, usize) {
    let run = read_run_files(&[dir.join("runs")]).expect("read");
    let mut per_request = HashMap::new();
    for r in &run.records {
        if let (RecordBody::Violation(v), Some(_)) = (&r.body, &r.request)
            && v.weight > 0
        {
            *per_request.entry(r.scope_id).or_default() += u64::from(v.count);
        }
    }
    (per_request, run.skipped.len())
}

fn wait_for(dir: &Path, flagged: &[(u64, u64)]) -> HashMap<u64, u64> {
    let started = std::time::Instant::now();
    loop {
        let (per_request, skipped) = recorded(dir);
        assert_eq!(skipped, 0);
        if flagged.iter().all(|(id, count)| per_request.get(id) == Some(count))
            || started.elapsed() > std::time::Duration::from_secs(30)
        {
            return per_request;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn header_counts_reconcile_with_run_file_records_over_ten_thousand_requests() {
    let dir = tempfile::tempdir().expect("dir");
    let server = start(dir.path());
    let flagged = drive(&server.base, 10_000, 4);
    // Two of every three requests make one or two blocking calls.
    assert!(flagged.len() >= 6_000, "{} flagged responses", flagged.len());
    let per_request = wait_for(dir.path(), &flagged);
    let mismatched: Vec<_> = flagged.iter().filter(|(id, count)| per_request.get(id) != Some(count)).take(5).collect();
    assert!(mismatched.is_empty(), "header and run file disagree: {mismatched:?}");
    let headers: u64 = flagged.iter().map(|(_, c)| c).sum();
    let records: u64 = per_request.values().sum();
    assert_eq!(headers, records, "every recorded request was flagged");
}

#[test]
fn sigkill_mid_load_keeps_every_record_written_before() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = start(dir.path());
    let before = drive(&server.base, 600, 2);
    wait_for(dir.path(), &before);
    // Killed while requests are in flight: what it wrote stays readable, a cut last line at most is skipped.
    let base = server.base.clone();
    let load = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        runtime.block_on(async {
            let client = reqwest::Client::new();
            for i in 0..100_000 {
                if client.get(format!("{base}/stat/{i}")).send().await.is_err() {
                    break;
                }
            }
        });
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("wait");
    load.join().expect("load");
    let run = read_run_files(&[dir.path().join("runs")]).expect("read");
    assert!(run.skipped.len() <= 1, "{:?}", run.skipped);
    let (per_request, _) = recorded(dir.path());
    let lost: Vec<_> = before.iter().filter(|(id, count)| per_request.get(id) != Some(count)).take(5).collect();
    assert!(lost.is_empty(), "records lost: {lost:?}");
}
