//! The rustc-style text renderer, built on `annotate-snippets` (the crate rustc and cargo render with).
//!
//! ```text
//! error[blocking/sleep]: `clock_nanosleep` blocked a tokio worker for 52.1ms
//!   --> test-apps/notes/src/handlers.rs:88:9
//!    |
//! 88 |         std::thread::sleep(backoff);
//!    |         ^^^^^^^^^^^^^^^^^^^^^^^^^^^ blocking call inside an async task
//!    |
//!    = note: via std::thread::functions::sleep; request GET /notes/7; severity 50 (high)
//!    = help: use `tokio::time::sleep(..).await`
//! ```

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use annotate_snippets::{AnnotationKind, Group, Level as Kind, Origin, Renderer, Snippet};

use crate::catalogue::{Category, Level};
use crate::clock::format_duration;
use crate::config::baseline::Baseline;
use crate::violation::{CallSite, Violation, Violations};

/// Colored or plain output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// ANSI colors, like rustc on a terminal.
    Colored,
    /// Plain text.
    Plain,
}

impl Style {
    /// Colored when stderr is a terminal and `NO_COLOR` is unset (or empty); plain otherwise.
    pub fn for_stderr() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if !no_color && std::io::stderr().is_terminal() { Style::Colored } else { Style::Plain }
    }
}

/// Renders violations as rustc-style diagnostics.
#[derive(Debug, Clone)]
pub struct TextRenderer {
    style: Style,
    /// Where relative call sites' source files are looked for, in order.
    roots: Vec<PathBuf>,
    stack: bool,
}

impl Default for TextRenderer {
    fn default() -> Self {
        TextRenderer::new(Style::for_stderr())
    }
}

impl TextRenderer {
    /// A renderer reading source files relative to the workspace root ([`crate::workspace_root`]).
    pub fn new(style: Style) -> TextRenderer {
        TextRenderer {
            style,
            roots: crate::workspace_root().map(Path::to_path_buf).into_iter().collect(),
            stack: false,
        }
    }

    /// Reads source files relative to `root` only.
    #[must_use]
    pub fn with_root(mut self, root: impl Into<PathBuf>) -> TextRenderer {
        self.roots = vec![root.into()];
        self
    }

    /// Looks for source files under `roots` first (e.g. the workspace roots run files record, [`Summary::roots`]),
    /// then where it looked before.
    ///
    /// [`Summary::roots`]: crate::report::Summary::roots
    #[must_use]
    pub fn with_roots_first(mut self, roots: impl IntoIterator<Item = PathBuf>) -> TextRenderer {
        let mut all: Vec<PathBuf> = roots.into_iter().collect();
        for root in self.roots {
            if !all.contains(&root) {
                all.push(root);
            }
        }
        self.roots = all;
        self
    }

    /// Adds the trimmed stack as a note.
    #[must_use]
    pub fn with_stack(mut self, on: bool) -> TextRenderer {
        self.stack = on;
        self
    }

    /// Renders one violation; `context` (e.g. `request GET /notes/7`) goes into its note.
    pub fn render(&self, v: &Violation, context: Option<&str>) -> String {
        let kind = match v.level {
            Level::High => Kind::ERROR,
            Level::Medium => Kind::WARNING,
            Level::Low => Kind::NOTE,
        };
        let title = title(v);
        let id = match v.stuck {
            Some(_) => "blocking/stuck_poll".to_owned(),
            None => format!("blocking/{}", v.category),
        };
        let mut notes = Vec::new();
        if let Some(api) = &v.blocking_api {
            notes.push(format!("via {api}"));
        }
        if let Some(c) = context {
            notes.push(c.to_owned());
        }
        notes.push(format!("severity {} ({})", v.weight.value(), v.level));
        let mut note = notes.join("; ");
        if !v.detail.is_empty() && v.category != Category::SlowPoll {
            note.push_str(&format!("\ndetail: {}", v.detail));
        }
        if v.count > 1 {
            note.push_str(&format!("\n{} consecutive calls from this stack", v.count));
        }
        if let Some(stuck) = &v.stuck {
            let reported = format_duration(stuck.reported_after());
            match (stuck.returned, v.event) {
                (false, _) => note.push_str(&format!("\nthe thread is {}", stuck.thread_state)),
                (true, "stuck_poll" | "slow_poll") => note.push_str(&format!(
                    "\nreported stuck after {reported}, when the thread was {}",
                    stuck.thread_state
                )),
                (true, event) => note.push_str(&format!("\nreported stuck after {reported}, blocked in `{event}`")),
            }
        }
        // A stuck poll's stack is the only way to see what it waits for: always shown.
        if (self.stack || v.stuck.is_some()) && !v.stack.is_empty() {
            note.push_str("\nstack:");
            for (i, f) in v.stack.iter().enumerate() {
                note.push_str(&format!("\n  {i:>2}: {f}"));
            }
        }
        let help = fix_hint(v);
        let source = self.source_line(&v.call_site);
        let head = kind.primary_title(title.as_str()).id(id.as_str());
        let label = if v.stuck.is_some() {
            "this poll did not return"
        } else if v.category == Category::SlowPoll {
            "this future's poll did not yield"
        } else {
            "blocking call inside an async task"
        };
        let group = match (&v.call_site, &source) {
            (CallSite::Source(loc), Some((line, span))) => head.element(
                Snippet::source(line.as_str())
                    .line_start(loc.line as usize)
                    .path(loc.file.as_str())
                    .annotation(AnnotationKind::Primary.span(span.clone()).label(label)),
            ),
            (CallSite::Source(loc), None) => {
                let mut origin = Origin::path(loc.file.as_str()).line(loc.line as usize);
                if let Some(c) = loc.column {
                    origin = origin.char_column(c as usize);
                }
                head.element(origin)
            }
            (site, _) => head.element(Kind::NOTE.message(format!("call site: {site}"))),
        };
        let callers = callers(v);
        let group = callers.iter().fold(group, |group, c| group.element(Kind::NOTE.message(c.as_str())));
        let group = group.element(Kind::NOTE.message(note.as_str())).element(Kind::HELP.message(help.as_str()));
        let renderer = match self.style {
            Style::Colored => Renderer::styled(),
            Style::Plain => Renderer::plain(),
        };
        renderer.render(&[group] as &[Group<'_>])
    }

    /// The call site's source line and the span to underline: from the column to the end of the statement.
    fn source_line(&self, site: &CallSite) -> Option<(String, std::ops::Range<usize>)> {
        let loc = site.location()?;
        let path = Path::new(&loc.file);
        let candidates: Vec<PathBuf> =
            if path.is_relative() { self.roots.iter().map(|r| r.join(path)).collect() } else { vec![path.into()] };
        // Reading the source is blockcop's own I/O; it must not be recorded if this runs inside a scope.
        let text = crate::allow_blocking(|| candidates.iter().find_map(|p| std::fs::read_to_string(p).ok()))?;
        let line = text.lines().nth(loc.line.checked_sub(1)? as usize)?.to_owned();
        let indent = line.len() - line.trim_start().len();
        let start = loc.column.map_or(indent, |c| line.char_indices().nth(c as usize - 1).map_or(indent, |(i, _)| i));
        let code = line.split("//").next().unwrap_or(&line).trim_end();
        let end = code.strip_suffix(';').unwrap_or(code).trim_end().len();
        if start >= end {
            return Some((line.clone(), indent..line.trim_end().len()));
        }
        Some((line, start..end))
    }
}

/// `called from <file:line:col> (in <function>)` for each user frame that led to the call site, nearest first:
/// the call chain without the call site itself.
fn callers(v: &Violation) -> Vec<String> {
    crate::violation::callers(&v.call_chain, &v.call_site)
        .into_iter()
        .map(|(loc, f)| match &f.function {
            Some(function) => format!("called from {loc} (in {function})"),
            None => format!("called from {loc}"),
        })
        .collect()
}

/// The calls that fail a test body or a request, rendered with their stacks under `context` (e.g. `request GET
/// /notes`), worst first, then in the order they happened; those `baseline` knows are counted, not rendered, and so
/// are those the per-scope cap dropped.
pub(crate) fn write_failing_calls(
    f: &mut impl std::fmt::Write,
    violations: &Violations,
    baseline: &Baseline,
    context: &str,
) -> std::fmt::Result {
    let renderer = TextRenderer::new(Style::for_stderr()).with_stack(true);
    let (known, mut list): (Vec<_>, Vec<_>) = violations.iter().partition(|v| baseline.knows(v));
    list.sort_by_key(|v| std::cmp::Reverse(v.weight));
    for v in list {
        writeln!(f, "{}", renderer.render(v, Some(context)))?;
    }
    if !known.is_empty() {
        let file = baseline.path().map_or_else(|| "the baseline".to_owned(), |p| p.display().to_string());
        writeln!(f, "({} known violation record(s) of {file} not shown)", known.len())?;
    }
    if violations.dropped > 0 {
        writeln!(f, "({} more violations were dropped by the per-scope cap)", violations.dropped)?;
    }
    Ok(())
}

fn title(v: &Violation) -> String {
    let d = format_duration(v.duration);
    if let Some(stuck) = &v.stuck {
        return if stuck.returned {
            format!("a poll did not return for {d}, stalling its tokio worker")
        } else {
            format!("a poll has not returned for {}", format_duration(stuck.reported_after()))
        };
    }
    match v.category {
        Category::SlowPoll => format!("a poll ran {d} without yielding, stalling its tokio worker"),
        Category::LockWait => format!("`{}` waited {d} for a lock on a tokio worker", v.event),
        _ => format!("`{}` blocked a tokio worker for {d}", v.event),
    }
}

pub(crate) fn fix_hint(v: &Violation) -> String {
    // A stuck poll with no blocking call recorded: the advice follows what the thread was doing.
    if let Some(stuck) = v.stuck.as_ref().filter(|_| v.category == Category::SlowPoll) {
        let state = if stuck.thread_state == "running" {
            Some(Category::SlowPoll)
        } else {
            stuck.syscall().and_then(|name| {
                crate::catalogue::CATALOGUE.iter().find(|r| r.functions.contains(&name)).map(|r| r.category)
            })
        };
        return match state {
            Some(Category::SlowPoll) => Category::SlowPoll.fix_hint().to_owned(),
            Some(category) => fix_hint(&Violation { category, stuck: None, ..v.clone() }),
            None => "see the stack for what the poll waits on: move the blocking work into \
                     `tokio::task::spawn_blocking`, or await it with an async alternative"
                .to_owned(),
        };
    }
    let api = v.blocking_api.as_deref().unwrap_or("");
    // A synchronous dependency (a database driver, an SDK): the fix is where it is called, not inside it.
    if let Some(krate) = v.blocking_api_crate.as_deref().filter(|k| *k != "std" && v.category != Category::SlowPoll) {
        return format!("`{krate}` blocks: call it inside `tokio::task::spawn_blocking`, or use an async alternative");
    }
    let specific = match v.category {
        Category::File | Category::BlockingIo | Category::Metadata if api.contains("std::fs::File>") => {
            Some("use `tokio::fs::File`, whose methods are async")
        }
        Category::Sleep => Some("use `tokio::time::sleep(..).await`"),
        Category::Dns if api.contains("ToSocketAddrs") || api.contains("lookup_host") => {
            Some("use `tokio::net::lookup_host(..).await`")
        }
        Category::File if api.starts_with("std::fs::") || api.starts_with("<std::fs::") => {
            Some("use the same function from `tokio::fs` (`tokio::fs::read_to_string(..).await`, ...)")
        }
        Category::LockWait if api.contains("Mutex") => {
            Some("use `tokio::sync::Mutex`, or do not hold the lock across slow work")
        }
        _ => None,
    };
    specific.unwrap_or_else(|| v.category.fix_hint()).to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::catalogue::Weight;
    use crate::violation::SourceLocation;

    fn violation(site: CallSite) -> Violation {
        Violation {
            event: "clock_nanosleep",
            category: Category::Sleep,
            weight: Weight::Heavy,
            level: Level::High,
            duration: Duration::from_micros(52_100),
            count: 1,
            detail: "sleep 50ms".into(),
            call_site: site,
            blocking_api: Some("std::thread::functions::sleep".into()),
            blocking_api_crate: Some("std".into()),
            stack: vec![],
            call_chain: vec![],
            task: None,
            scope_id: 7,
            thread_id: 1,
            thread_name: None,
            timestamp: SystemTime::UNIX_EPOCH,
            stuck: None,
        }
    }

    #[test]
    fn renders_a_snippet_with_note_and_help() {
        let dir = std::env::temp_dir().join(format!("blockcop-text-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(
            dir.join("src/retry.rs"),
            "fn a() {}\nasync fn retry() {\n    std::thread::sleep(backoff); // oops\n}\n",
        )
        .unwrap();
        let site = CallSite::Source(SourceLocation { file: "src/retry.rs".into(), line: 3, column: Some(5) });
        let out =
            TextRenderer::new(Style::Plain).with_root(&dir).render(&violation(site), Some("request GET /notes/7"));
        let expected = "\
error[blocking/sleep]: `clock_nanosleep` blocked a tokio worker for 52.1ms
 --> src/retry.rs:3:5
  |
3 |     std::thread::sleep(backoff); // oops
  |     ^^^^^^^^^^^^^^^^^^^^^^^^^^^ blocking call inside an async task
  |
  = note: via std::thread::functions::sleep; request GET /notes/7; severity 50 (high)
          detail: sleep 50ms
  = help: use `tokio::time::sleep(..).await`";
        assert_eq!(out.trim_end(), expected);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn unreadable_source_prints_the_site_without_a_snippet() {
        let site = CallSite::Source(SourceLocation { file: "src/gone.rs".into(), line: 12, column: Some(9) });
        let out = TextRenderer::new(Style::Plain).with_root("/nonexistent").render(&violation(site), None);
        assert!(out.contains("--> src/gone.rs:12:9"), "{out}");
        assert!(!out.contains(" | "), "{out}");
        let out = TextRenderer::new(Style::Plain).render(&violation(CallSite::NoDebugInfo), None);
        assert!(out.contains("call site: no debug info"), "{out}");
    }

    #[test]
    fn level_maps_to_error_warning_note() {
        let mut v = violation(CallSite::Unknown);
        assert!(TextRenderer::new(Style::Plain).render(&v, None).starts_with("error[blocking/sleep]"));
        v.level = Level::Medium;
        assert!(TextRenderer::new(Style::Plain).render(&v, None).starts_with("warning[blocking/sleep]"));
        v.level = Level::Low;
        assert!(TextRenderer::new(Style::Plain).render(&v, None).starts_with("note[blocking/sleep]"));
    }

    #[test]
    fn fix_hints_follow_the_api() {
        let mut v = violation(CallSite::Unknown);
        v.category = Category::BlockingIo;
        v.blocking_api = Some("rusqlite::row::Rows::next".into());
        v.blocking_api_crate = Some("rusqlite".into());
        assert_eq!(
            fix_hint(&v),
            "`rusqlite` blocks: call it inside `tokio::task::spawn_blocking`, or use an async alternative"
        );
        v.category = Category::File;
        v.blocking_api_crate = Some("std".into());
        v.blocking_api = Some("<std::fs::File>::sync_data".into());
        assert_eq!(fix_hint(&v), "use `tokio::fs::File`, whose methods are async");
        v.blocking_api = Some("std::fs::read_to_string".into());
        assert!(fix_hint(&v).starts_with("use the same function from `tokio::fs`"));
    }

    #[test]
    fn a_stuck_poll_reads_as_stuck_with_advice_for_what_its_thread_does() {
        let stuck = |state: &str| Violation {
            event: "stuck_poll",
            category: Category::SlowPoll,
            duration: Duration::from_millis(1_004),
            blocking_api: None,
            blocking_api_crate: None,
            stuck: Some(crate::violation::Stuck {
                id: 1,
                reported_after_us: 1_004_000,
                thread_state: state.to_owned(),
                returned: false,
            }),
            ..violation(CallSite::Unknown)
        };
        let out = TextRenderer::new(Style::Plain).render(&stuck("blocked in syscall 230 (clock_nanosleep)"), None);
        assert!(out.starts_with("error[blocking/stuck_poll]: a poll has not returned for 1.00s"), "{out}");
        assert!(out.contains("the thread is blocked in syscall 230 (clock_nanosleep)"), "{out}");
        assert!(out.contains("help: use `tokio::time::sleep(..).await`"), "{out}");
        let hint = |state| fix_hint(&stuck(state));
        assert_eq!(hint("blocked in syscall 202 (futex)"), Category::LockWait.fix_hint());
        assert_eq!(hint("running"), Category::SlowPoll.fix_hint());
        assert!(hint("blocked in syscall 61 (wait4)").contains("spawn_blocking"));
        assert!(hint("in an unknown state").starts_with("see the stack"));
    }
}
