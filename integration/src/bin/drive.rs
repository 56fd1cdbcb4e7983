//! Drives a running service over loopback and tallies what blockcop said about each request, for trying blockcop
//! on a service as a new user would (`cargo xtask drive`).
//!
//! Start the service with the layer added as the README says and `RUST_TEST_BLOCKCOP=1`, then:
//!
//! ```text
//! cargo xtask drive http://127.0.0.1:8080 /api/v1/search?q=python "POST /api/v1/items {\"name\":\"a\"}"
//!     [--requests 1000] [--concurrency 16] [--load] [--fail-severity medium]
//! ```
//!
//! Requests cycle through the targets. Each target is a path, or a method and a path, optionally followed by a
//! body (sent as JSON when it starts with `{` or `[`, else as a form). Redirects are not followed: the header
//! belongs to the response that carries it. `CONNECT host:port` sends an authority-form CONNECT over its own
//! connection and reads the response head (the tunnel itself is not used). The tally counts, per target and overall, the responses with an `x-blocking-violations`
//! header, their levels, how many reach the fail severity with the calls the baseline does not know (what the
//! test harness would fail), the `first=`,
//! `worst=` and `from=` sites, and headers that did not parse (with the position the parser gave).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use blockcop::{Level, ViolationsHeader, X_BLOCKING_VIOLATIONS};
use clap::Parser;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "Drive a service over loopback and tally its x-blocking-violations headers")]
struct Args {
    /// The service's base URL, e.g. `http://127.0.0.1:8080`.
    base: String,
    /// What to request: `PATH`, `METHOD PATH` or `METHOD PATH BODY` (a BODY starting with `{` or `[` is sent as
    /// JSON, any other as `application/x-www-form-urlencoded`), or `CONNECT host:port`.
    #[arg(required = true)]
    targets: Vec<String>,
    /// How many requests to send in all (cycling through the targets).
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// How many requests are in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Run two busy loops per core while driving, as on a shared CI runner.
    #[arg(long)]
    load: bool,
    /// The fail line to count against: `low`, `medium`, `high` or a number (default: `BLOCKCOP_FAIL_SEVERITY`,
    /// else 10).
    #[arg(long)]
    fail_severity: Option<String>,
}

struct Target {
    method: reqwest::Method,
    path: String,
    body: Option<String>,
}

impl Target {
    fn parse(s: &str) -> Result<Target, String> {
        let mut parts = s.splitn(3, ' ');
        let first = parts.next().unwrap_or_default();
        if first.starts_with('/') {
            return Ok(Target { method: reqwest::Method::GET, path: s.to_owned(), body: None });
        }
        let method = reqwest::Method::from_bytes(first.as_bytes()).map_err(|_| format!("{s:?}: bad method"))?;
        if method == reqwest::Method::CONNECT {
            let authority = parts.next().filter(|a| a.contains(':'));
            let authority = authority.ok_or_else(|| format!("{s:?}: expected `CONNECT host:port`"))?;
            return Ok(Target { method, path: authority.to_owned(), body: None });
        }
        let path = parts.next().filter(|p| p.starts_with('/'));
        let path = path.ok_or_else(|| format!("{s:?}: expected `PATH`, `METHOD PATH` or `METHOD PATH BODY`"))?;
        Ok(Target { method, path: path.to_owned(), body: parts.next().map(str::to_owned) })
    }

    fn label(&self) -> String {
        match &self.body {
            Some(body) => format!("{} {} {body}", self.method, self.path),
            None => format!("{} {}", self.method, self.path),
        }
    }
}

/// What one request came back with.
enum Outcome {
    Clean(u16),
    Flagged(u16, ViolationsHeader),
    Malformed(u16, String),
    Failed(String),
}

#[derive(Default)]
struct Tally {
    requests: usize,
    statuses: BTreeMap<u16, usize>,
    errors: BTreeMap<String, usize>,
    flagged: usize,
    levels: BTreeMap<Level, usize>,
    failing: usize,
    malformed: Vec<String>,
    first: BTreeMap<String, usize>,
    worst: BTreeMap<String, usize>,
    from: BTreeMap<String, usize>,
}

impl Tally {
    fn add(&mut self, outcome: &Outcome, fail_severity: u32) {
        self.requests += 1;
        match outcome {
            Outcome::Clean(status) => *self.statuses.entry(*status).or_default() += 1,
            Outcome::Flagged(status, h) => {
                *self.statuses.entry(*status).or_default() += 1;
                self.flagged += 1;
                *self.levels.entry(h.level).or_default() += 1;
                self.failing += usize::from(h.new_severity() >= fail_severity);
                *self.first.entry(format!("{}@{}", h.first.event, h.first.site)).or_default() += 1;
                *self.worst.entry(format!("{}@{}", h.worst.event, h.worst.site)).or_default() += 1;
                if let Some(from) = &h.from {
                    *self.from.entry(from.clone()).or_default() += 1;
                }
            }
            Outcome::Malformed(status, e) => {
                *self.statuses.entry(*status).or_default() += 1;
                self.malformed.push(e.clone());
            }
            Outcome::Failed(e) => *self.errors.entry(e.clone()).or_default() += 1,
        }
    }

    fn summary(&self, fail_severity: u32) -> String {
        let per_100 = |n: usize| n as f64 * 100.0 / self.requests.max(1) as f64;
        let levels: Vec<String> = [Level::High, Level::Medium, Level::Low]
            .iter()
            .map(|l| format!("{l} {}", self.levels.get(l).copied().unwrap_or(0)))
            .collect();
        let statuses: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s} × {n}")).collect();
        let mut out = format!(
            "{} requests (status {}); x-blocking-violations on {} ({}); {} reach fail severity {fail_severity}: \
             {:.1} per 100 requests",
            self.requests,
            if statuses.is_empty() { "none".to_owned() } else { statuses.join(", ") },
            self.flagged,
            levels.join(", "),
            self.failing,
            per_100(self.failing),
        );
        for (e, n) in &self.errors {
            let _ = write!(out, "\n    {n} failed: {e}");
        }
        for e in self.malformed.iter().take(3) {
            let _ = write!(out, "\n    malformed header: {e}");
        }
        if self.malformed.len() > 3 {
            let _ = write!(out, "\n    ... {} malformed headers in all", self.malformed.len());
        }
        for (name, sites) in [("first", &self.first), ("worst", &self.worst), ("from", &self.from)] {
            let mut sites: Vec<_> = sites.iter().collect();
            sites.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (site, n) in sites.iter().take(5) {
                let _ = write!(out, "\n    {name}= {n:>5} × {site}");
            }
            if sites.len() > 5 {
                let _ = write!(out, "\n    {name}= ... {} sites in all", sites.len());
            }
        }
        out
    }
}

/// An error with its chain of causes (reqwest's own message rarely says why).
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(s, ": {cause}");
        source = cause.source();
    }
    s
}

/// The outcome of a response whose `x-blocking-violations` value is `header`.
fn outcome(status: u16, header: Option<Result<&str, String>>) -> Outcome {
    match header {
        None => Outcome::Clean(status),
        Some(value) => match value.and_then(|v| ViolationsHeader::parse(v).map_err(|e| format!("{e} in {v:?}"))) {
            Ok(h) => Outcome::Flagged(status, h),
            Err(e) => Outcome::Malformed(status, e),
        },
    }
}

/// Sends `CONNECT authority` to the service at `base` on a connection of its own and reads the response head.
async fn send_connect(base: &str, authority: &str) -> Outcome {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.strip_prefix("http://").unwrap_or(base);
    let mut stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("connecting to {addr}: {e}")),
    };
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return Outcome::Failed(format!("sending CONNECT: {e}"));
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let status = response.code.unwrap_or(0);
                let header =
                    response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(X_BLOCKING_VIOLATIONS.as_str()));
                return outcome(status, header.map(|h| std::str::from_utf8(h.value).map_err(|e| e.to_string())));
            }
            Ok(httparse::Status::Partial) if head.len() < 64 * 1024 => {}
            Ok(httparse::Status::Partial) => return Outcome::Failed("CONNECT response head over 64 KiB".to_owned()),
            Err(e) => return Outcome::Failed(format!("CONNECT response: {e}")),
        }
        match stream.read(&mut buf).await {
            Ok(0) => return Outcome::Failed("CONNECT: connection closed before the response head".to_owned()),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Outcome::Failed(format!("reading the CONNECT response: {e}")),
        }
    }
}

async fn send(client: &reqwest::Client, base: &str, target: &Target) -> Outcome {
    if target.method == reqwest::Method::CONNECT {
        return send_connect(base, &target.path).await;
    }
    let mut request = client.request(target.method.clone(), format!("{base}{}", target.path));
    if let Some(body) = &target.body {
        let json = body.starts_with('{') || body.starts_with('[');
        let content_type = if json { "application/json" } else { "application/x-www-form-urlencoded" };
        request = request.header("content-type", content_type).body(body.clone());
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(with_sources(&e)),
    };
    let status = response.status().as_u16();
    let header = response.headers().get(X_BLOCKING_VIOLATIONS).cloned();
    // Read the whole body: what the service does while sending it belongs to the request.
    if let Err(e) = response.bytes().await {
        return Outcome::Failed(format!("reading the body: {}", with_sources(&e)));
    }
    match header {
        None => Outcome::Clean(status),
        Some(value) => match value
            .to_str()
            .map_err(|e| e.to_string())
            .and_then(|v| ViolationsHeader::parse(v).map_err(|e| format!("{e} in {v:?}")))
        {
            Ok(h) => Outcome::Flagged(status, h),
            Err(e) => Outcome::Malformed(status, e),
        },
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let fail_severity = match &args.fail_severity {
        Some(s) => blockcop::parse_severity(s).map_err(|e| e.to_string())?,
        None => blockcop::Config::from_env().map_err(|e| e.to_string())?.fail_severity(),
    };
    let targets: Vec<Target> = args.targets.iter().map(|t| Target::parse(t)).collect::<Result<_, _>>()?;
    let targets = Arc::new(targets);
    let base = Arc::new(args.base.trim_end_matches('/').to_owned());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let in_flight = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let _load = args.load.then(|| integration::BusyLoops::start(2));
    eprintln!(
        "drive: {} requests to {base}, {} in flight{}",
        args.requests,
        args.concurrency,
        if args.load { ", two busy loops per core" } else { "" }
    );
    let mut handles = Vec::with_capacity(args.requests);
    for i in 0..args.requests {
        let permit = in_flight.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        let (client, base, targets) = (client.clone(), base.clone(), targets.clone());
        handles.push(tokio::spawn(async move {
            let _permit = permit;
            let t = i % targets.len();
            (t, send(&client, &base, &targets[t]).await)
        }));
    }
    let mut total = Tally::default();
    let mut per_target: Vec<Tally> = targets.iter().map(|_| Tally::default()).collect();
    for h in handles {
        let (t, outcome) = h.await.map_err(|e| e.to_string())?;
        total.add(&outcome, fail_severity);
        per_target[t].add(&outcome, fail_severity);
    }
    for (target, tally) in targets.iter().zip(&per_target) {
        println!("{}\n    {}\n", target.label(), tally.summary(fail_severity));
    }
    println!("all targets\n    {}", total.summary(fail_severity));
    let failed: usize = total.errors.values().sum();
    if failed > 0 {
        return Err(format!("{failed} of {} requests got no response", total.requests));
    }
    Ok(())
}
