//! `blockcop-baseline.toml`: the violations a service already had when it turned blockcop on, checked in so that
//! only new ones fail.
//!
//! ```toml
//! # blockcop-baseline.toml, beside blockcop.toml at the workspace root; written by `blockcop baseline write`
//! [[known]]
//! function = "my_app::handlers::get_note::{{closure}}"  # the function of the call site
//! blocking_api = "rusqlite::Connection::execute"         # what it called: the std or dependency API ...
//! category = "blocking_io"
//! call_site = "src/handlers.rs:42"                       # where it was when written (not matched)
//!
//! [[known]]
//! function = "my_app::render::page"
//! event = "slow_poll"                                    # ... or, when there is none, the event
//! category = "slow_poll"
//! call_site = "src/render.rs:17"
//! ```
//!
//! A finding is **known** when the baseline has an entry with its call site's function and its blocking API (or
//! event): the line is not part of the key, so moving the call, or editing around it, keeps it known; a different
//! blocking call in the same function, or the same call in another function, is **new**. An entry no finding of a
//! run matches is **fixed** (SARIF's `absent`); `blockcop baseline prune` removes such entries. The format is the
//! allowlist's (`[[allow]]` in [`config_file`](crate::config::file)): a TOML array of tables with the same field
//! names; the allowlist says where blocking is fine for good, with a reason, the baseline what is still to fix.
//!
//! When blockcop is enabled, the harness reads the file named by `BLOCKCOP_BASELINE`, else
//! `blockcop-baseline.toml` in the workspace root the program was built in, if there is one; known findings then
//! do not fail a request or test body. `blockcop report` reads the same file (or `--baseline FILE`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalogue::Category;
use crate::config::ConfigError;
use crate::config::file;
use crate::violation::{CallSite, Frame, Violation, Violations};

/// The variable naming the baseline file, instead of `blockcop-baseline.toml` in the workspace root.
pub const ENV_BASELINE: &str = "BLOCKCOP_BASELINE";

/// The baseline file's name in the workspace root.
pub const BASELINE_FILE_NAME: &str = "blockcop-baseline.toml";

/// One `[[known]]` entry: a finding the service had when the baseline was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KnownFinding {
    /// The function of the call site (the user's own frame that made the blocking call), e.g.
    /// `my_app::handlers::get_note::{{closure}}`; when the stack had no function name, the call site's file, or
    /// `unknown`.
    pub function: String,
    /// The std or dependency API the call site called, e.g. `std::fs::read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking_api: Option<String>,
    /// The event, when the finding has no blocking API (a slow poll, or a libc call made directly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Its category.
    pub category: Category,
    /// Where the call site was when the baseline was written, `file:line`: for people, not matched.
    pub call_site: String,
    /// Where the entry is written, `path:line`; empty for an entry not read from a file.
    #[serde(skip)]
    pub source: String,
}

impl KnownFinding {
    /// What the call site called: the blocking API, else the event.
    pub fn what(&self) -> &str {
        self.blocking_api.as_deref().or(self.event.as_deref()).unwrap_or_default()
    }

    /// A finding with `key`'s function and API (or event).
    pub(crate) fn new(key: FindingKey, category: Category, call_site: &CallSite) -> KnownFinding {
        let (blocking_api, event) = if key.is_api { (Some(key.what), None) } else { (None, Some(key.what)) };
        KnownFinding {
            function: key.function,
            blocking_api,
            event,
            category,
            call_site: call_site.to_string(),
            source: String::new(),
        }
    }
}

/// What a finding is matched by: its call site's function, and the blocking API (or event) called there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FindingKey {
    /// The call site's function (see [`KnownFinding::function`]).
    pub function: String,
    /// The blocking API, else the event.
    pub what: String,
    /// Whether `what` is a blocking API (not an event).
    pub is_api: bool,
}

impl FindingKey {
    /// The key of a finding at `call_site`, with the user's frames `call_chain` (call site last) and the trimmed
    /// `stack`: the function is the call chain's last frame's, else that of the stack frame at the call site, else
    /// the call site's file.
    pub fn of(
        call_site: &CallSite,
        call_chain: &[Frame],
        stack: &[Frame],
        blocking_api: Option<&str>,
        event: &str,
    ) -> FindingKey {
        let at_site = |f: &&Frame| {
            call_site
                .location()
                .is_some_and(|site| f.file.as_deref() == Some(site.file.as_str()) && f.line == Some(site.line))
        };
        let function = call_chain
            .last()
            .and_then(|f| f.function.clone())
            .or_else(|| stack.iter().find(at_site).and_then(|f| f.function.clone()))
            .or_else(|| call_site.location().map(|l| l.file.clone()))
            .unwrap_or_else(|| call_site.to_string());
        FindingKey { function, what: blocking_api.unwrap_or(event).to_owned(), is_api: blocking_api.is_some() }
    }

    /// The key of a violation recorded in this process.
    pub fn of_violation(v: &Violation) -> FindingKey {
        FindingKey::of(&v.call_site, &v.call_chain, &v.stack, v.blocking_api.as_deref(), v.event)
    }
}

/// The known findings of a baseline file; empty when there is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    entries: Vec<KnownFinding>,
    path: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape<T> {
    #[serde(default = "Vec::new")]
    known: Vec<T>,
}

/// The accepted form of an entry, for error messages.
const ENTRY_FORM: &str = "[[known]] entries with `function` (the call site's function), `category`, `call_site` \
                          (`file:line`) and one of `blocking_api` (the std or dependency API) or `event` (a libc \
                          function of the catalogue, `slow_poll` or `stuck_poll`), as `blockcop baseline write` \
                          writes them";

impl Baseline {
    /// A baseline of `entries`, sorted by function and API (or event), one entry per pair.
    pub fn new(entries: impl IntoIterator<Item = KnownFinding>) -> Baseline {
        let mut entries: Vec<KnownFinding> = entries.into_iter().collect();
        entries.sort_by(|a, b| (&a.function, a.what()).cmp(&(&b.function, b.what())));
        entries.dedup_by(|a, b| a.function == b.function && a.what() == b.what());
        Baseline { entries, path: None }
    }

    /// The baseline of every finding among `violations` (recorded in this process).
    pub fn from_violations<'a>(violations: impl IntoIterator<Item = &'a Violation>) -> Baseline {
        Baseline::new(
            violations.into_iter().map(|v| KnownFinding::new(FindingKey::of_violation(v), v.category, &v.call_site)),
        )
    }

    /// The entries, sorted by function and API (or event).
    pub fn entries(&self) -> &[KnownFinding] {
        &self.entries
    }

    /// The file the entries were read from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether the baseline has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry matching `key`, if any.
    pub fn find(&self, key: &FindingKey) -> Option<&KnownFinding> {
        self.position(key).map(|i| &self.entries[i])
    }

    /// The index in [`entries`](Self::entries) of the entry matching `key`, if any.
    pub fn position(&self, key: &FindingKey) -> Option<usize> {
        self.entries.iter().position(|e| e.function == key.function && e.what() == key.what)
    }

    /// Whether `v` is a known finding.
    pub fn knows(&self, v: &Violation) -> bool {
        !self.entries.is_empty() && self.find(&FindingKey::of_violation(v)).is_some()
    }

    /// The severity of the violations the baseline does not know: the sum of their weights (as
    /// [`Violations::severity`]).
    pub fn new_severity(&self, violations: &Violations) -> u32 {
        self.split(violations).1
    }

    /// One pass over `violations`: how many calls the baseline knows among those that weigh something (counted as
    /// the header counts them), and the severity of the violations it does not know.
    pub fn split(&self, violations: &Violations) -> (u64, u32) {
        violations.iter().fold((0, 0), |(known, new), v| {
            if !self.knows(v) {
                (known, new.saturating_add(v.score()))
            } else if v.weight > crate::catalogue::Weight::Trivial {
                (known + u64::from(v.count.max(1)), new)
            } else {
                (known, new)
            }
        })
    }

    /// The file's text: a comment saying what it is, then one `[[known]]` table per entry.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(&FileShape { known: self.entries.clone() }).unwrap_or_default();
        format!(
            "# blockcop's baseline: blocking the service already did when it adopted blockcop. Known findings are\n\
             # reported but do not fail; new ones do. Written by `blockcop baseline write`; `blockcop baseline prune`\n\
             # removes the entries a run no longer finds. A finding is matched by `function` and `blocking_api` (or\n\
             # `event`); `call_site` is where it was when written.\n\n{body}"
        )
    }

    /// Reads the baseline file at `path`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the file and line: the file cannot be read, is not TOML, or an entry lacks a field,
    /// has a field not in the form, both or neither of `blocking_api` and `event`, an unknown event or category, or
    /// an empty `function`.
    pub fn read(path: &Path) -> Result<Baseline, ConfigError> {
        Baseline::read_from(path, false)
    }

    /// As [`read`](Self::read); `from_env`: the file is named by `BLOCKCOP_BASELINE`, which an unreadable file's
    /// error names.
    pub(crate) fn read_from(path: &Path, from_env: bool) -> Result<Baseline, ConfigError> {
        let text = file::read_text(path, from_env, ENV_BASELINE, BASELINE_FILE_NAME, ENTRY_FORM)?;
        let mut baseline = Baseline::parse(&text, &path.display().to_string())?;
        baseline.path = Some(path.to_owned());
        Ok(baseline)
    }

    /// Parses a baseline file's `text`; errors name `shown` as its path.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read).
    pub fn parse(text: &str, shown: &str) -> Result<Baseline, ConfigError> {
        let file: FileShape<toml::Spanned<KnownFinding>> =
            file::parse_toml(text, shown, BASELINE_FILE_NAME, ENTRY_FORM)?;
        let entries = file
            .known
            .into_iter()
            .map(|spanned| {
                let line = file::line_at(text, spanned.span().start);
                let mut entry = spanned.into_inner();
                let problem = |what: &str| ConfigError::in_file(BASELINE_FILE_NAME, shown, line, what, ENTRY_FORM);
                if entry.function.trim().is_empty() {
                    return Err(problem("`function` is empty"));
                }
                match (&entry.blocking_api, &entry.event) {
                    (Some(_), Some(_)) => return Err(problem("both `blocking_api` and `event`")),
                    (None, None) => return Err(problem("neither `blocking_api` nor `event`")),
                    (Some(api), None) if api.trim().is_empty() => return Err(problem("`blocking_api` is empty")),
                    (None, Some(event)) if !crate::catalogue::is_event(event) => {
                        return Err(problem(&format!("unknown event `{event}`")));
                    }
                    _ => {}
                }
                entry.source = format!("{shown}:{line}");
                Ok(entry)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Baseline { entries, path: None })
    }
}

/// The baseline file to read: `BLOCKCOP_BASELINE` when `lookup` has it (the file must exist; `true`), else
/// `blockcop-baseline.toml` in `root` if it exists.
pub(crate) fn locate(
    lookup: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    root: Option<&Path>,
) -> Option<(PathBuf, bool)> {
    file::locate_named(ENV_BASELINE, BASELINE_FILE_NAME, lookup, root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::violation::SourceLocation;

    fn frame(function: &str, file: &str, line: u32) -> Frame {
        Frame { function: Some(function.into()), file: Some(file.into()), line: Some(line), column: None }
    }

    #[test]
    fn the_key_is_the_call_sites_function_from_the_chain_else_the_stack_else_the_file() {
        let site = CallSite::Source(SourceLocation { file: "src/a.rs".into(), line: 7, column: Some(3) });
        let chain = [frame("app::handler::{{closure}}", "src/h.rs", 2), frame("app::a::load", "src/a.rs", 7)];
        let stack = [frame("std::fs::read", "/rustc/x/fs.rs", 1), frame("app::a::other", "src/a.rs", 7)];
        let key = FindingKey::of(&site, &chain, &stack, Some("std::fs::read"), "open64");
        assert_eq!((key.function.as_str(), key.what.as_str(), key.is_api), ("app::a::load", "std::fs::read", true));
        assert_eq!(FindingKey::of(&site, &[], &stack, None, "open64").function, "app::a::other");
        let key = FindingKey::of(&site, &[], &[], None, "slow_poll");
        assert_eq!((key.function.as_str(), key.what.as_str(), key.is_api), ("src/a.rs", "slow_poll", false));
        assert_eq!(FindingKey::of(&CallSite::Unknown, &[], &[], None, "slow_poll").function, "unknown");
    }

    #[test]
    fn written_entries_read_back_sorted_and_deduplicated() {
        let site = CallSite::Source(SourceLocation { file: "src/a.rs".into(), line: 7, column: None });
        let key = |f: &str, what: &str, is_api| FindingKey { function: f.into(), what: what.into(), is_api };
        let baseline = Baseline::new([
            KnownFinding::new(key("app::z", "slow_poll", false), Category::SlowPoll, &site),
            KnownFinding::new(key("app::a", "std::fs::read", true), Category::File, &site),
            KnownFinding::new(key("app::a", "std::fs::read", true), Category::File, &CallSite::Unknown),
        ]);
        let text = baseline.to_toml();
        let back = Baseline::parse(&text, "b.toml").expect("parses");
        let read: Vec<(&str, &str, &str)> =
            back.entries().iter().map(|e| (e.function.as_str(), e.what(), e.call_site.as_str())).collect();
        assert_eq!(read, [("app::a", "std::fs::read", "src/a.rs:7"), ("app::z", "slow_poll", "src/a.rs:7")]);
        assert!(back.entries()[0].source.starts_with("b.toml:"), "{text}");
    }
}
