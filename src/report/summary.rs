//! A run's violations aggregated by what the developer changes, a call site and the blocking API called there
//! (or, [`GroupBy::Event`], by call site and event), ranked by level then total blocked time: the list of call
//! sites to fix.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::run::{Record, RecordBody, RunFiles, ViolationRecord};
use super::text::TextRenderer;
use crate::catalogue::Category;
use crate::catalogue::Level;
use crate::clock::format_duration;
use crate::config::baseline::{Baseline, FindingKey, KnownFinding};
use crate::violation::CallSite;

/// How violations are grouped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupBy {
    /// One group per call site and blocking API (the std or dependency function the site called; the event when
    /// there is none, as for a slow poll): a group is one change to make. The default.
    #[default]
    Api,
    /// One group per call site and event (syscall).
    Event,
}

/// All violations at one call site through one blocking API (or with one event, [`GroupBy::Event`]).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Group {
    /// The event of the group's worst record.
    pub event: String,
    /// The std or dependency function the call site called, when there is one.
    pub blocking_api: Option<String>,
    /// Calls per event, e.g. `{"fstat64": 3, "pread64": 29}`.
    pub events: BTreeMap<String, u64>,
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
    /// Distinct request targets (`METHOD /path`) affected, the first [`MAX_TARGETS_LISTED`] in order.
    pub requests: BTreeSet<String>,
    /// Whether more targets were affected than `requests` lists.
    pub more_targets: bool,
    /// How many requests were affected (each request counts once, however many share a target).
    pub request_count: u64,
    /// Distinct tests affected.
    pub tests: BTreeSet<String>,
    /// How many tasks were affected (those whose id is known: runtime mode).
    pub task_count: u64,
    /// The worst record of the group, for rendering: of the heaviest event, the one with the most calls (so a
    /// site's three `open64`s and one `read` at equal weight render as a file open), its longest record.
    pub example: ViolationRecord,
    /// Whether the baseline knows the group (`unchanged`) or not (`new`); absent when the report has no baseline
    /// ([`Summary::apply_baseline`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_state: Option<BaselineState>,
    /// Each event's longest record of the heaviest weight, to choose `example` from.
    #[serde(skip)]
    worst_per_event: BTreeMap<String, ViolationRecord>,
    /// The requests (scope ids) of the current file, to count them.
    #[serde(skip)]
    request_ids: HashSet<u64>,
    /// The tasks (task ids) of the current file, to count them.
    #[serde(skip)]
    task_ids: HashSet<u64>,
}

/// A group compared with the baseline, in SARIF's terms (`baselineState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BaselineState {
    /// Not in the baseline: it fails as without one.
    New,
    /// Known: in the baseline, reported but not failing.
    Unchanged,
}

impl Group {
    /// The group's baseline key: its call site's function and what it called.
    pub fn key(&self) -> FindingKey {
        let v = &self.example;
        FindingKey::of(&self.call_site, &v.call_chain, &v.stack, v.blocking_api.as_deref(), &v.event)
    }

    /// Whether the baseline knows the group.
    pub fn is_known(&self) -> bool {
        self.baseline_state == Some(BaselineState::Unchanged)
    }

    /// What was called: the blocking API, else the event.
    pub fn what(&self) -> &str {
        self.blocking_api.as_deref().unwrap_or(&self.event)
    }

    /// The calls per event, most frequent first: `pread64×29, fstat64×3`.
    pub fn events_line(&self) -> String {
        let mut events: Vec<(&String, &u64)> = self.events.iter().collect();
        events.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        events.iter().map(|(e, n)| format!("{e}×{n}")).collect::<Vec<_>>().join(", ")
    }

    /// The group in one sentence, with its fix: for annotations and SARIF messages.
    pub fn one_line(&self) -> String {
        let what = if let Some(stuck) = &self.example.stuck {
            format!("a poll was stuck (reported after {})", format_duration(stuck.reported_after()))
        } else if self.category == Category::SlowPoll {
            "a slow poll stalled a tokio worker".to_owned()
        } else if self.events.len() > 1 {
            format!("blocking calls ({}) stalled a tokio worker", self.events_line())
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
    s.serialize_u64(crate::clock::micros(*d))
}

/// The aggregated run.
///
/// # Examples
///
/// ```no_run
/// use blockcop::report::{Summary, run::read_run_files};
///
/// let run = read_run_files(&["target/blockcop".into()])?;
/// let summary = Summary::from_run_files(&run);
/// for group in summary.new_groups() {
///     println!("{} × {} at {} ({})", group.occurrences, group.event, group.call_site, group.level);
/// }
/// # Ok::<(), blockcop::report::run::ReadError>(())
/// ```
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// The groups, ranked: level, then total blocked time, both descending.
    pub groups: Vec<Group>,
    /// Violation records read.
    pub records: u64,
    /// Violations dropped by per-scope caps (from `dropped` records).
    pub dropped: u64,
    /// Run files read.
    pub files: usize,
    /// Corrupt lines skipped, as `file:line: message`.
    pub skipped: Vec<String>,
    /// The workspace roots the run files name: where their relative call sites' sources are.
    pub roots: Vec<std::path::PathBuf>,
    /// The entries of the allowlist file the run files list, each with the calls it allowed in the run; an entry
    /// that allowed none is stale.
    pub allowlist: Vec<AllowlistUse>,
    /// The run compared with a baseline file, after [`Summary::apply_baseline`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineComparison>,
    /// Calls allowed, by entry (`path:line`), until [`Summary::allowlist`] is made from them.
    #[serde(skip)]
    allowed_calls: HashMap<String, u64>,
}

/// What a baseline file says of the run: its groups are marked known or new ([`Group::baseline_state`]); its
/// entries no group matched are fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BaselineComparison {
    /// The baseline file, when it was read from one.
    pub path: Option<String>,
    /// How many entries it has.
    pub entries: usize,
    /// The entries no finding of the run matched: fixed (SARIF's `absent`).
    pub fixed: Vec<KnownFinding>,
}

/// An entry of the allowlist file and what it allowed in the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AllowlistUse {
    /// The entry.
    #[serde(flatten)]
    pub entry: super::run::AllowlistEntryRecord,
    /// The calls it allowed; 0 when it matched nothing in the run (stale).
    pub allowed_calls: u64,
}

impl AllowlistUse {
    /// Whether the entry matched nothing in the run.
    pub fn is_stale(&self) -> bool {
        self.allowed_calls == 0
    }
}

/// The most distinct request targets a group lists; more are counted in [`Group::more_targets`].
pub const MAX_TARGETS_LISTED: usize = 100;

type GroupKey = (String, String);

/// Summary under construction, one record at a time.
struct Aggregate {
    by: GroupBy,
    groups: Vec<Group>,
    index: HashMap<GroupKey, usize>,
    /// Each group's score within each scope (and task: the runtime hooks' per-thread scopes hold many tasks) of the
    /// current file.
    scores: HashMap<(usize, u64, Option<u64>), u32>,
    /// The current file, whose scopes, requests and tasks are being counted.
    file: Option<usize>,
    /// Stuck polls' reports made while they were stuck, held back until the end: a report gives way to the record
    /// that completed it, when there is one.
    provisional: Vec<(usize, Record)>,
    /// The stuck polls (file, pid, id) whose completing record was seen.
    completed: HashSet<(usize, u32, u64)>,
    records: u64,
    dropped: u64,
    allowed_calls: HashMap<String, u64>,
}

impl Aggregate {
    fn new(by: GroupBy) -> Aggregate {
        Aggregate {
            by,
            groups: Vec::new(),
            index: HashMap::new(),
            scores: HashMap::new(),
            file: None,
            provisional: Vec::new(),
            completed: HashSet::new(),
            records: 0,
            dropped: 0,
            allowed_calls: HashMap::new(),
        }
    }

    fn add(&mut self, file: usize, r: &Record) {
        if self.file != Some(file) {
            self.end_file();
            self.file = Some(file);
        }
        let v = match &r.body {
            RecordBody::Violation(v) => v,
            RecordBody::Dropped { count } => {
                self.dropped += count;
                return;
            }
            RecordBody::Allowed { entry, count, .. } => {
                *self.allowed_calls.entry(entry.clone()).or_default() += count;
                return;
            }
            _ => return,
        };
        if let Some(stuck) = &v.stuck {
            if !stuck.returned {
                self.provisional.push((file, r.clone()));
                return;
            }
            self.completed.insert((file, r.pid, stuck.id));
        }
        self.count(r, v);
    }

    /// Counts one violation record.
    fn count(&mut self, r: &Record, v: &ViolationRecord) {
        self.records += 1;
        let what = match self.by {
            GroupBy::Api => v.blocking_api.as_deref().unwrap_or(&v.event),
            GroupBy::Event => &v.event,
        };
        let key = (v.call_site.to_string(), what.to_owned());
        let duration = Duration::from_micros(v.duration_us);
        let calls = u64::from(v.count.max(1));
        let task = r.task.as_ref().and_then(|t| t.id);
        let by = self.by;
        let groups = &mut self.groups;
        let i = *self.index.entry(key).or_insert_with(|| {
            groups.push(Group {
                event: v.event.clone(),
                blocking_api: if by == GroupBy::Api { v.blocking_api.clone() } else { None },
                events: BTreeMap::new(),
                category: v.category,
                call_site: v.call_site.clone(),
                severity: 0,
                level: Level::Low,
                occurrences: 0,
                worst_duration: duration,
                total_duration: Duration::ZERO,
                requests: BTreeSet::new(),
                more_targets: false,
                request_count: 0,
                tests: BTreeSet::new(),
                task_count: 0,
                example: v.clone(),
                baseline_state: None,
                worst_per_event: BTreeMap::new(),
                request_ids: HashSet::new(),
                task_ids: HashSet::new(),
            });
            groups.len() - 1
        });
        let score = self.scores.entry((i, r.scope_id, task)).or_default();
        *score = score.saturating_add(v.weight.saturating_mul(v.count.max(1)));
        let score = *score;
        let g = &mut self.groups[i];
        if r.request.is_some() {
            g.request_ids.insert(r.scope_id);
        }
        if let Some(id) = task {
            g.task_ids.insert(id);
        }
        *g.events.entry(v.event.clone()).or_default() += calls;
        g.occurrences += calls;
        g.total_duration += duration;
        match g.worst_per_event.get_mut(&v.event) {
            Some(worst) => {
                if (v.weight, v.stuck.is_some(), v.duration_us)
                    > (worst.weight, worst.stuck.is_some(), worst.duration_us)
                {
                    *worst = v.clone();
                }
            }
            None => {
                g.worst_per_event.insert(v.event.clone(), v.clone());
            }
        }
        g.severity = g.severity.max(score);
        g.level = Level::of(g.severity);
        g.worst_duration = g.worst_duration.max(duration);
        if let Some(req) = &r.request {
            let target = format!("{} {}", req.method, req.path);
            if g.requests.len() < MAX_TARGETS_LISTED {
                g.requests.insert(target);
            } else if !g.requests.contains(&target) {
                g.more_targets = true;
            }
        }
        if let Some(test) = &r.test
            && !g.tests.contains(test)
        {
            g.tests.insert(test.clone());
        }
    }

    /// Closes the current file: its scopes, requests and tasks are counted (scope and task ids are per process).
    fn end_file(&mut self) {
        self.scores.clear();
        for g in &mut self.groups {
            g.request_count += g.request_ids.len() as u64;
            g.task_count += g.task_ids.len() as u64;
            g.request_ids.clear();
            g.task_ids.clear();
        }
    }

    fn finish(mut self) -> Summary {
        // A stuck poll is one finding: the report made while it was stuck counts only when nothing completed it.
        let provisional = std::mem::take(&mut self.provisional);
        self.end_file();
        // A report made without its call site (symbolizing took long) is followed by the one that has it: the
        // last report of each stuck poll counts.
        let mut seen = HashSet::new();
        for (file, r) in provisional.into_iter().rev() {
            let RecordBody::Violation(v) = &r.body else { continue };
            let Some(id) = v.stuck.as_ref().map(|s| s.id) else { continue };
            if self.completed.contains(&(file, r.pid, id)) || !seen.insert((file, r.pid, id)) {
                continue;
            }
            self.file = Some(file);
            self.count(&r, v);
            self.end_file();
        }
        let mut groups = self.groups;
        for g in &mut groups {
            let events = &g.events;
            // A stuck poll is the group's worst form: it renders as one.
            let example = g
                .worst_per_event
                .values()
                .max_by_key(|v| (v.weight, v.stuck.is_some(), events.get(&v.event), v.duration_us));
            if let Some(example) = example {
                g.example = example.clone();
                g.event = example.event.clone();
                g.category = example.category;
            }
            g.worst_per_event.clear();
        }
        groups.sort_by(|a, b| {
            (b.level, b.total_duration, b.severity)
                .cmp(&(a.level, a.total_duration, a.severity))
                .then_with(|| (a.call_site.to_string(), a.what()).cmp(&(b.call_site.to_string(), b.what())))
        });
        Summary {
            groups,
            records: self.records,
            dropped: self.dropped,
            allowed_calls: self.allowed_calls,
            ..Summary::default()
        }
    }
}

impl Summary {
    /// Aggregates run files by call site and blocking API.
    pub fn from_run_files(run: &RunFiles) -> Summary {
        Summary::from_run_files_by(run, GroupBy::Api)
    }

    /// Aggregates run files, grouped `by`.
    pub fn from_run_files_by(run: &RunFiles, by: GroupBy) -> Summary {
        let mut s = Summary::from_records_by(&run.records, by);
        s.files = run.files.len();
        s.skipped = run.skipped.iter().map(ToString::to_string).collect();
        s.roots = run.roots.clone();
        s.attach_allowlist(&run.allowlist);
        s
    }

    /// The allowlist file's entries, each with the calls it allowed, and a warning for each stale one.
    fn render_allowlist(&self, out: &mut String) {
        if self.allowlist.is_empty() {
            return;
        }
        let _ = writeln!(out, "\nallowlist: {} entries", self.allowlist.len());
        for u in &self.allowlist {
            let e = &u.entry;
            let only: Vec<String> = e.event.iter().cloned().chain(e.category.map(|c| c.to_string())).collect();
            let only = if only.is_empty() { String::new() } else { format!(" ({})", only.join(", ")) };
            if u.is_stale() {
                let _ = writeln!(
                    out,
                    "warning: {}: `{}`{only} allowed nothing in this run: the entry is stale; remove it, or correct \
                     its function path (reason: {})",
                    e.source, e.function, e.reason
                );
            } else {
                let calls = if u.allowed_calls == 1 { "call" } else { "calls" };
                let _ = writeln!(
                    out,
                    "  {}: `{}`{only} allowed {} {calls} (reason: {})",
                    e.source, e.function, u.allowed_calls, e.reason
                );
            }
        }
    }

    /// Pairs the allowlist entries the run files list with the calls each allowed.
    fn attach_allowlist(&mut self, entries: &[super::run::AllowlistEntryRecord]) {
        self.allowlist = entries
            .iter()
            .map(|e| AllowlistUse {
                entry: e.clone(),
                allowed_calls: self.allowed_calls.get(&e.source).copied().unwrap_or(0),
            })
            .collect();
    }

    /// The entries of the allowlist file that matched nothing in the run.
    pub fn stale_allowlist_entries(&self) -> impl Iterator<Item = &AllowlistUse> {
        self.allowlist.iter().filter(|u| u.is_stale())
    }

    /// Compares the groups with `baseline`: each is marked known ([`BaselineState::Unchanged`]) when an entry has
    /// its call site's function and blocking API (or event), else new; entries that match no group are listed as
    /// fixed in [`Summary::baseline`].
    pub fn apply_baseline(&mut self, baseline: &Baseline) {
        let mut matched = vec![false; baseline.entries().len()];
        for g in &mut self.groups {
            let entry = baseline.position(&g.key());
            if let Some(i) = entry {
                matched[i] = true;
            }
            g.baseline_state = Some(if entry.is_some() { BaselineState::Unchanged } else { BaselineState::New });
        }
        let fixed = baseline.entries().iter().zip(matched).filter(|(_, m)| !m).map(|(e, _)| e.clone()).collect();
        self.baseline = Some(BaselineComparison {
            path: baseline.path().map(|p| p.display().to_string()),
            entries: baseline.entries().len(),
            fixed,
        });
    }

    /// A baseline of the run's findings: one entry per call-site function and blocking API (or event).
    pub fn to_baseline(&self) -> Baseline {
        Baseline::new(self.groups.iter().map(|g| KnownFinding::new(g.key(), g.category, &g.call_site)))
    }

    /// The groups the baseline does not know (all of them without a baseline).
    pub fn new_groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter().filter(|g| !g.is_known())
    }

    /// Reads run files and aggregates them as they are read, grouped `by`: memory grows with the groups (and the
    /// distinct stacks, scopes and requests of one file), not with the records.
    ///
    /// # Errors
    ///
    /// As [`read_run_files_with`](super::run::read_run_files_with).
    pub fn read(paths: &[std::path::PathBuf], by: GroupBy) -> Result<Summary, super::run::ReadError> {
        let mut aggregate = Aggregate::new(by);
        let read = super::run::read_run_files_with(paths, |file, r| aggregate.add(file, &r))?;
        let mut s = aggregate.finish();
        s.files = read.files.len();
        s.skipped = read.skipped.iter().map(ToString::to_string).collect();
        s.roots = read.roots;
        s.attach_allowlist(&read.allowlist);
        Ok(s)
    }

    /// Aggregates records by call site and blocking API.
    pub fn from_records(records: &[Record]) -> Summary {
        Summary::from_records_by(records, GroupBy::Api)
    }

    /// Aggregates records, grouped `by`. Records of one process's run file must be consecutive (as run files
    /// keep them).
    pub fn from_records_by(records: &[Record], by: GroupBy) -> Summary {
        let mut aggregate = Aggregate::new(by);
        // One process's records are one file's: the pid changing is a file boundary.
        let mut file = 0;
        let mut pid = None;
        for r in records {
            if pid.is_some_and(|p| p != r.pid) {
                file += 1;
            }
            pid = Some(r.pid);
            aggregate.add(file, r);
        }
        aggregate.finish()
    }

    /// The highest severity of any group, 0 when there is none.
    pub fn severity(&self) -> u32 {
        self.groups.iter().map(|g| g.severity).max().unwrap_or(0)
    }

    /// The ranked table, then each group rendered once with `renderer`.
    pub fn render_text(&self, renderer: &TextRenderer) -> String {
        self.render_text_with(renderer, false)
    }

    /// The ranked table, then each group rendered once with `renderer`; with `stacks`, each group's worst stack
    /// follows its diagnostic.
    pub fn render_text_with(&self, renderer: &TextRenderer, stacks: bool) -> String {
        let mut out = String::new();
        for s in &self.skipped {
            let _ = writeln!(out, "warning: {s}");
        }
        if self.groups.is_empty() {
            out.push_str("no violations recorded\n");
            if self.dropped > 0 {
                let _ = writeln!(out, "({} violations were dropped by per-scope caps)", self.dropped);
            }
            self.render_allowlist(&mut out);
            self.render_baseline(&mut out);
            return out;
        }
        let known = self.groups.iter().filter(|g| g.is_known()).count();
        let _ = writeln!(
            out,
            "blockcop: {} violations at {} call sites{}, from {} run file{}{}",
            self.records,
            self.groups.len(),
            if known > 0 { format!(" ({known} known from the baseline)") } else { String::new() },
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
            "{:>3}  {:<12} {:>6} {:>9} {:>9} {:>5} {:>5} {:>5}  call site (what it called)",
            "#", "severity", "calls", "worst", "total", "reqs", "tests", "tasks"
        );
        for (i, g) in self.groups.iter().enumerate() {
            let _ = writeln!(
                out,
                "{:>3}  {:<12} {:>6} {:>9} {:>9} {:>5} {:>5} {:>5}  {} ({}){}",
                i + 1,
                format!("{} {}", g.severity, g.level),
                g.occurrences,
                format_duration(g.worst_duration),
                format_duration(g.total_duration),
                g.request_count,
                g.tests.len(),
                g.task_count,
                g.call_site,
                g.what(),
                if g.is_known() { " known" } else { "" }
            );
        }
        // Known groups stay in the table; the diagnostics are for the ones to fix now.
        for (i, g) in self.groups.iter().enumerate().filter(|(_, g)| !g.is_known()) {
            let _ = writeln!(out);
            let calls = if g.occurrences == 1 { "call" } else { "calls" };
            let mut context = format!("#{}: {} {calls}", i + 1, g.occurrences);
            if g.events.len() > 1 {
                let _ = write!(context, " ({})", g.events_line());
            }
            if let Some(first) = g.requests.iter().next() {
                let requests = if g.request_count == 1 { "request" } else { "requests" };
                let _ = write!(context, "; {} {requests}: {first}", g.request_count);
                let more = g.requests.len() - 1;
                if g.more_targets {
                    let _ = write!(context, " and more than {more} other targets");
                } else if more > 0 {
                    let _ = write!(context, " and {more} other target{}", if more == 1 { "" } else { "s" });
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
            if stacks && !g.example.stack.is_empty() {
                let _ = writeln!(out, "   = stack of the worst call, innermost first:");
                for frame in g.example.stack.iter() {
                    let _ = writeln!(out, "       {frame}");
                }
            }
        }
        self.render_allowlist(&mut out);
        self.render_baseline(&mut out);
        out
    }

    /// What the baseline says of the run: known and new groups, and the fixed entries with the command that
    /// removes them.
    fn render_baseline(&self, out: &mut String) {
        let Some(b) = &self.baseline else { return };
        let known = self.groups.iter().filter(|g| g.is_known()).count();
        let file = b.path.as_deref().unwrap_or("the baseline");
        let _ = writeln!(
            out,
            "\nbaseline {file}: {} entries; {known} known call site{} (not failing), {} new",
            b.entries,
            if known == 1 { "" } else { "s" },
            self.groups.len() - known
        );
        for e in &b.fixed {
            let at = if e.source.is_empty() { String::new() } else { format!("{}: ", e.source) };
            let _ = writeln!(
                out,
                "fixed: {at}`{}` calling `{}` (was at {}) no longer blocks; `blockcop baseline prune` removes the \
                 entry",
                e.function,
                e.what(),
                e.call_site
            );
        }
    }

    /// GitHub Actions workflow commands, one per group with a source location that the baseline does not know:
    /// `::error file=…,line=…,col=…,title=…::…` (`warning` for medium, `notice` for low).
    pub fn github_annotations(&self) -> String {
        let mut out = String::new();
        for g in self.new_groups() {
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
        record_in(event, None, weight, line, us, path, 1)
    }

    fn record_in(event: &str, api: Option<&str>, weight: u32, line: u32, us: u64, path: &str, scope: u64) -> Record {
        let call_site = CallSite::Source(SourceLocation { file: "src/h.rs".into(), line, column: Some(5) });
        serde_json::from_value(serde_json::json!({
            "version": SCHEMA_VERSION,
            "kind": "violation",
            "event": event, "category": "sleep", "weight": weight, "level": Level::of(weight),
            "duration_us": us, "count": 1, "detail": "", "call_site": call_site,
            "blocking_api": api, "blocking_api_crate": null, "stack": [], "thread": null,
            "request": RequestContext { method: "GET".into(), path: path.into() },
            "task": null, "test": "t", "scope_id": scope, "pid": 1, "timestamp_us": 0
        }))
        .expect("a valid record")
    }

    #[test]
    fn groups_by_site_and_api_ranked_by_level_then_total_time() {
        let read = Some("std::fs::read");
        let records = vec![
            record_in("read", read, 10, 7, 5, "/a", 1),
            record_in("read", read, 10, 7, 9, "/b", 2),
            record_in("read", read, 10, 7, 1, "/a", 3),
            record_in("open64", read, 10, 7, 4, "/a", 3),
            record_in("clock_nanosleep", None, 50, 3, 50_000, "/a", 1),
            record_in("statx", None, 1, 9, 2, "/a", 1),
            record_in("fsync", None, 10, 8, 100, "/c", 4),
        ];
        let s = Summary::from_records(&records);
        let order: Vec<(u32, &str, u64)> =
            s.groups.iter().map(|g| (g.call_site.location().map_or(0, |l| l.line), g.what(), g.occurrences)).collect();
        // One fsync of 100 µs ranks above four reads of 19 µs at the same level.
        assert_eq!(order, [(3, "clock_nanosleep", 1), (8, "fsync", 1), (7, "std::fs::read", 4), (9, "statx", 1)]);
        let read = &s.groups[2];
        assert_eq!(read.events_line(), "read×3, open64×1");
        assert_eq!(read.worst_duration, Duration::from_micros(9));
        assert_eq!(read.total_duration, Duration::from_micros(19));
        assert_eq!(read.requests.iter().map(String::as_str).collect::<Vec<_>>(), ["GET /a", "GET /b"]);
        assert_eq!(read.request_count, 3);
        // The largest sum within one request: two calls of 10.
        assert_eq!((read.severity, read.level), (20, Level::Medium));
        assert_eq!(s.severity(), 50);
        // By event, the site's reads and its open are two groups again.
        let by_event = Summary::from_records_by(&records, GroupBy::Event);
        let at_7: Vec<&str> = by_event
            .groups
            .iter()
            .filter(|g| g.call_site.location().is_some_and(|l| l.line == 7))
            .map(|g| g.event.as_str())
            .collect();
        assert_eq!(at_7, ["read", "open64"]);
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
