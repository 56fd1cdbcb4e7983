//! A run's violations aggregated by (call site, event), ranked by severity then occurrences: the list of call
//! sites to fix.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::run::{Record, RecordBody, RunFiles, ViolationRecord};
use super::text::{TextRenderer, format_duration};
use crate::catalogue::Category;
use crate::violation::{CallSite, Level};

/// All violations at one call site with one event.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Group {
    /// The event.
    pub event: String,
    /// Its category.
    pub category: Category,
    /// The call site.
    pub call_site: CallSite,
    /// The group's score: the largest sum of weights (weight × calls) its records reached within one scope (one
    /// request, test body or task), so a call site fails the report exactly when it alone would fail a request.
    pub severity: u32,
    /// The level of `severity`.
    pub level: Level,
    /// How many calls (records times their counts).
    pub occurrences: u64,
    /// The longest single record's duration.
    #[serde(rename = "worst_duration_us", serialize_with = "micros")]
    pub worst_duration: Duration,
    /// The sum of all durations.
    #[serde(rename = "total_duration_us", serialize_with = "micros")]
    pub total_duration: Duration,
    /// Distinct requests (`METHOD /path`) affected.
    pub requests: BTreeSet<String>,
    /// Distinct tests affected.
    pub tests: BTreeSet<String>,
    /// The worst record of the group, for rendering.
    pub example: ViolationRecord,
}

impl Group {
    /// The group in one sentence, with its fix: for annotations and SARIF messages.
    pub fn one_line(&self) -> String {
        let what = if self.category == Category::SlowPoll {
            "a slow poll stalled a tokio worker".to_owned()
        } else {
            format!("`{}` blocked a tokio worker", self.event)
        };
        let calls = if self.occurrences == 1 { "call" } else { "calls" };
        let mut s = format!(
            "{what}: {} {calls}, worst {}, total {}, severity {} ({})",
            self.occurrences,
            format_duration(self.worst_duration),
            format_duration(self.total_duration),
            self.severity,
            self.level
        );
        if let Some(api) = &self.example.blocking_api {
            s.push_str(&format!(", via {api}"));
        }
        s.push_str(&format!(". Fix: {}", super::text::fix_hint(&self.example.to_violation())));
        s
    }
}

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The aggregated run.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// The groups, ranked: severity, then occurrences, both descending.
    pub groups: Vec<Group>,
    /// Violation records read.
    pub records: u64,
    /// Violations dropped by per-scope caps (from `dropped` records).
    pub dropped: u64,
    /// Run files read.
    pub files: usize,
    /// Corrupt lines skipped, as `file:line: message`.
    pub skipped: Vec<String>,
}

impl Summary {
    /// Aggregates run files.
    pub fn from_run_files(run: &RunFiles) -> Summary {
        let mut s = Summary::from_records(&run.records);
        s.files = run.files.len();
        s.skipped = run.skipped.iter().map(ToString::to_string).collect();
        s
    }

    /// Aggregates records by (call site, event).
    pub fn from_records(records: &[Record]) -> Summary {
        let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
        // Each group's score within each scope (and task: the runtime hooks' per-thread scopes hold many tasks).
        let mut scores: HashMap<(String, String, u64, Option<u64>), u32> = HashMap::new();
        let mut summary = Summary::default();
        for r in records {
            let v = match &r.body {
                RecordBody::Violation(v) => v,
                RecordBody::Dropped { count } => {
                    summary.dropped += count;
                    continue;
                }
            };
            summary.records += 1;
            let key = (v.call_site.to_string(), v.event.clone());
            let duration = Duration::from_micros(v.duration_us);
            let task = r.task.as_ref().and_then(|t| t.id);
            let score = scores.entry((key.0.clone(), key.1.clone(), r.scope_id, task)).or_default();
            *score = score.saturating_add(v.weight.saturating_mul(v.count.max(1)));
            let score = *score;
            let g = groups.entry(key).or_insert_with(|| Group {
                event: v.event.clone(),
                category: v.category,
                call_site: v.call_site.clone(),
                severity: score,
                level: Level::of(score),
                occurrences: 0,
                worst_duration: duration,
                total_duration: Duration::ZERO,
                requests: BTreeSet::new(),
                tests: BTreeSet::new(),
                example: v.clone(),
            });
            g.occurrences += u64::from(v.count.max(1));
            g.total_duration += duration;
            if (v.weight, duration) > (g.example.weight, Duration::from_micros(g.example.duration_us)) {
                g.example = v.clone();
            }
            g.severity = g.severity.max(score);
            g.level = Level::of(g.severity);
            g.worst_duration = g.worst_duration.max(duration);
            if let Some(req) = &r.request {
                g.requests.insert(format!("{} {}", req.method, req.path));
            }
            if let Some(test) = &r.test {
                g.tests.insert(test.clone());
            }
        }
        summary.groups = groups.into_values().collect();
        summary.groups.sort_by(|a, b| {
            (b.severity, b.occurrences)
                .cmp(&(a.severity, a.occurrences))
                .then_with(|| (a.call_site.to_string(), &a.event).cmp(&(b.call_site.to_string(), &b.event)))
        });
        summary
    }

    /// The highest severity of any group, 0 when there is none.
    pub fn severity(&self) -> u32 {
        self.groups.iter().map(|g| g.severity).max().unwrap_or(0)
    }

    /// The ranked table, then each group rendered once with `renderer`.
    pub fn render_text(&self, renderer: &TextRenderer) -> String {
        let mut out = String::new();
        for s in &self.skipped {
            let _ = writeln!(out, "warning: {s}");
        }
        if self.groups.is_empty() {
            out.push_str("no violations recorded\n");
            if self.dropped > 0 {
                let _ = writeln!(out, "({} violations were dropped by per-scope caps)", self.dropped);
            }
            return out;
        }
        let _ = writeln!(
            out,
            "blockcop: {} violations at {} call sites, from {} run file{}{}",
            self.records,
            self.groups.len(),
            self.files,
            if self.files == 1 { "" } else { "s" },
            if self.dropped > 0 {
                format!(" ({} more dropped by per-scope caps)", self.dropped)
            } else {
                String::new()
            }
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:>3}  {:<12} {:<16} {:>6} {:>9} {:>9} {:>5} {:>5}  call site",
            "#", "severity", "event", "calls", "worst", "total", "reqs", "tests"
        );
        for (i, g) in self.groups.iter().enumerate() {
            let _ = writeln!(
                out,
                "{:>3}  {:<12} {:<16} {:>6} {:>9} {:>9} {:>5} {:>5}  {}",
                i + 1,
                format!("{} {}", g.severity, g.level),
                g.event,
                g.occurrences,
                format_duration(g.worst_duration),
                format_duration(g.total_duration),
                g.requests.len(),
                g.tests.len(),
                g.call_site
            );
        }
        for (i, g) in self.groups.iter().enumerate() {
            let _ = writeln!(out);
            let calls = if g.occurrences == 1 { "call" } else { "calls" };
            let mut context = format!("#{}: {} {calls}", i + 1, g.occurrences);
            if let Some(first) = g.requests.iter().next() {
                let more = g.requests.len() - 1;
                let _ = write!(context, "; request {first}");
                if more > 0 {
                    let _ = write!(context, " and {more} more");
                }
            }
            if let Some(first) = g.tests.iter().next() {
                let more = g.tests.len() - 1;
                let _ = write!(context, "; test {first}");
                if more > 0 {
                    let _ = write!(context, " and {more} more");
                }
            }
            out.push_str(renderer.render(&g.example.to_violation(), Some(&context)).trim_end());
            out.push('\n');
        }
        out
    }

    /// GitHub Actions workflow commands, one per group with a source location:
    /// `::error file=…,line=…,col=…,title=…::…` (`warning` for medium, `notice` for low).
    pub fn github_annotations(&self) -> String {
        let mut out = String::new();
        for g in &self.groups {
            let Some(loc) = g.call_site.location() else { continue };
            let command = match g.level {
                Level::High => "error",
                Level::Medium => "warning",
                Level::Low => "notice",
            };
            let message = g.one_line();
            let _ = write!(out, "::{command} file={},line={}", escape_property(&loc.file), loc.line);
            if let Some(col) = loc.column {
                let _ = write!(out, ",col={col}");
            }
            let _ = writeln!(
                out,
                ",title={}::{}",
                escape_property(&format!("blockcop: blocking/{}", g.category)),
                escape_data(&message)
            );
        }
        out
    }
}

/// Escapes a workflow command's message (GitHub's `escapeData`).
fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Escapes a workflow command's property (GitHub's `escapeProperty`).
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::run::{RequestContext, SCHEMA_VERSION};
    use crate::violation::SourceLocation;

    fn record(event: &str, weight: u32, line: u32, us: u64, path: &str) -> Record {
        let v = ViolationRecord {
            event: event.into(),
            category: Category::Sleep,
            weight,
            level: Level::of(weight),
            duration_us: us,
            count: 1,
            detail: String::new(),
            call_site: CallSite::Source(SourceLocation { file: "src/h.rs".into(), line, column: Some(5) }),
            blocking_api: None,
            blocking_api_crate: None,
            stack: vec![],
            thread: None,
        };
        serde_json::from_value(serde_json::json!({
            "version": SCHEMA_VERSION,
            "kind": "violation",
            "event": v.event, "category": "sleep", "weight": v.weight, "level": v.level,
            "duration_us": v.duration_us, "count": 1, "detail": "", "call_site": v.call_site,
            "blocking_api": null, "blocking_api_crate": null, "stack": [], "thread": null,
            "request": RequestContext { method: "GET".into(), path: path.into() },
            "task": null, "test": "t", "scope_id": 1, "pid": 1, "timestamp_us": 0
        }))
        .expect("a valid record")
    }

    #[test]
    fn groups_by_site_and_event_ranked_by_severity_then_occurrences() {
        let records = vec![
            record("read", 10, 7, 5, "/a"),
            record("read", 10, 7, 9, "/b"),
            record("read", 10, 7, 1, "/a"),
            record("clock_nanosleep", 50, 3, 50_000, "/a"),
            record("statx", 1, 9, 2, "/a"),
            record("open64", 10, 8, 4, "/c"),
        ];
        let s = Summary::from_records(&records);
        let order: Vec<(&str, u64)> = s.groups.iter().map(|g| (g.event.as_str(), g.occurrences)).collect();
        assert_eq!(order, [("clock_nanosleep", 1), ("read", 3), ("open64", 1), ("statx", 1)]);
        let read = &s.groups[1];
        assert_eq!(read.worst_duration, Duration::from_micros(9));
        assert_eq!(read.total_duration, Duration::from_micros(15));
        assert_eq!(read.requests.iter().map(String::as_str).collect::<Vec<_>>(), ["GET /a", "GET /b"]);
        assert_eq!(s.severity(), 50);
    }

    #[test]
    fn annotations_escape_and_map_levels() {
        let s =
            Summary::from_records(&[record("clock_nanosleep", 50, 3, 50_000, "/a"), record("read", 10, 7, 5, "/a")]);
        let a = s.github_annotations();
        let lines: Vec<&str> = a.lines().collect();
        assert!(
            lines[0].starts_with(
                "::error file=src/h.rs,line=3,col=5,title=blockcop%3A blocking/sleep::`clock_nanosleep` blocked"
            ),
            "{a}"
        );
        assert!(lines[1].starts_with("::warning file=src/h.rs,line=7,col=5,"), "{a}");
        assert_eq!(escape_data("50%\nx"), "50%25%0Ax");
    }

    #[test]
    fn empty_says_so() {
        let s = Summary::from_records(&[]);
        assert_eq!(s.render_text(&TextRenderer::new(crate::report::Style::Plain)), "no violations recorded\n");
    }
}
