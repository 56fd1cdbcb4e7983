//! `blockcop.toml`: the allowlist a team checks in, each entry with the reason it is there.
//!
//! ```toml
//! # blockcop.toml, at the workspace root
//! [[allow]]
//! function = "my_app::templates::load"  # a function-path prefix: blocking below a matching frame is allowed
//! event = "open64"                       # optional: only this libc function (an event of the catalogue)
//! category = "file"                      # optional: only this category
//! reason = "templates are read once, at start-up"
//! ```
//!
//! A file of its own, as `deny.toml`, `clippy.toml` and `rustfmt.toml` are, rather than
//! `[workspace.metadata.blockcop]`: a crate that is not a workspace has no such table, a workspace's `Cargo.toml`
//! would have to be found and parsed whole, and steps of CI that are not cargo (`blockcop report`) read it as it is.
//!
//! It is read when blockcop is enabled: from `BLOCKCOP_CONFIG` when that is set (the file must exist), else from
//! `blockcop.toml` in the workspace root the program was built in, if there is one.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;

use crate::catalogue::Category;
use crate::config::ConfigError;

/// The variable naming the configuration file, instead of `blockcop.toml` in the workspace root.
pub const ENV_CONFIG: &str = "BLOCKCOP_CONFIG";

/// The file's name in the workspace root.
pub const CONFIG_FILE_NAME: &str = "blockcop.toml";

/// One `[[allow]]` entry of the configuration file: blocking below a frame whose function path starts with
/// `function` (of `event` and `category`, when given) is not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AllowEntry {
    /// The function-path prefix, e.g. `my_app::templates::load`.
    pub function: String,
    /// Only this event (a libc function of the catalogue, or `slow_poll`), when given.
    pub event: Option<String>,
    /// Only this category, when given.
    pub category: Option<Category>,
    /// Why blocking is allowed there.
    pub reason: String,
    /// Where the entry is written: `path:line`.
    pub source: String,
}

impl AllowEntry {
    /// Whether the entry allows `event` (of `category`) made below a frame named in `functions`.
    pub(crate) fn allows<'a>(
        &self,
        event: &str,
        category: Category,
        mut functions: impl Iterator<Item = &'a str>,
    ) -> bool {
        self.event.as_deref().is_none_or(|e| e == event)
            && self.category.is_none_or(|c| c == category)
            && functions.any(|f| f.starts_with(self.function.as_str()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    allow: Vec<toml::Spanned<EntryShape>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryShape {
    function: String,
    event: Option<String>,
    category: Option<Category>,
    reason: String,
}

/// The accepted form of an entry, for error messages.
const ENTRY_FORM: &str = "[[allow]] entries with `function` (a function-path prefix) and `reason` (why), and \
                          optionally `event` (a libc function of the catalogue, or `slow_poll`) and `category` (sleep, \
                          dns, net, process, file, blocking_io, metadata, lock_wait or slow_poll)";

/// The configuration file to read: `BLOCKCOP_CONFIG` when `lookup` has it, else `blockcop.toml` in `root` if it
/// exists.
pub(crate) fn locate(
    lookup: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    root: Option<&Path>,
) -> Option<(PathBuf, bool)> {
    locate_named(ENV_CONFIG, CONFIG_FILE_NAME, lookup, root)
}

/// A checked-in file to read: the one `variable` names when `lookup` has it (the file must exist; `true`), else
/// `file_name` in `root` if it exists (`false`).
pub(crate) fn locate_named(
    variable: &str,
    file_name: &str,
    lookup: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    root: Option<&Path>,
) -> Option<(PathBuf, bool)> {
    match lookup(variable).filter(|v| !v.is_empty()) {
        Some(path) => Some((PathBuf::from(path), true)),
        None => root.map(|r| r.join(file_name)).filter(|p| p.is_file()).map(|p| (p, false)),
    }
}

/// The text of the checked-in file `file_name` at `path`. One that cannot be read is an error naming `variable`
/// when it named the file (`from_env`), else the file, with `expected` as the accepted form.
pub(crate) fn read_text(
    path: &Path,
    from_env: bool,
    variable: &'static str,
    file_name: &'static str,
    expected: &str,
) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        let shown = path.display().to_string();
        if from_env {
            ConfigError::variable(variable, &shown, &format!("a readable TOML file ({e})"))
        } else {
            ConfigError::in_file(file_name, &shown, 0, &format!("cannot be read: {e}"), expected)
        }
    })
}

/// Parses the TOML `text` of the file `file_name` (shown as `shown`); a syntax or shape error names the line and
/// `form`, the accepted form of its entries.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    shown: &str,
    file_name: &'static str,
    form: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_at(text, s.start));
        ConfigError::in_file(file_name, shown, line, e.message().trim_end(), form)
    })
}

/// The 1-based line of `text` that byte `offset` is on.
pub(crate) fn line_at(text: &str, offset: usize) -> usize {
    1 + text[..offset.min(text.len())].matches('\n').count()
}

/// Reads the allowlist entries of the file at `path` (`from_env`: named by `BLOCKCOP_CONFIG`).
///
/// # Errors
///
/// A [`ConfigError`] naming the file and line: the file cannot be read, is not TOML, or an entry lacks `function`
/// or `reason`, names an unknown event or category, or has a field not in the form.
pub(crate) fn read(path: &Path, from_env: bool) -> Result<Vec<AllowEntry>, ConfigError> {
    let shown = path.display().to_string();
    let text = read_text(path, from_env, ENV_CONFIG, CONFIG_FILE_NAME, "a readable TOML file")?;
    let file: FileShape = parse_toml(&text, &shown, CONFIG_FILE_NAME, ENTRY_FORM)?;
    file.allow
        .into_iter()
        .map(|spanned| {
            let line = line_at(&text, spanned.span().start);
            let entry = spanned.into_inner();
            let problem = |what: &str| ConfigError::in_file(CONFIG_FILE_NAME, &shown, line, what, ENTRY_FORM);
            if entry.function.trim().is_empty() {
                return Err(problem("`function` is empty"));
            }
            if entry.reason.trim().is_empty() {
                return Err(problem("`reason` is empty: say why blocking is allowed there"));
            }
            if let Some(event) = entry.event.as_deref().filter(|e| !crate::catalogue::is_event(e)) {
                return Err(problem(&format!("unknown event `{event}`")));
            }
            Ok(AllowEntry {
                function: entry.function,
                event: entry.event,
                category: entry.category,
                reason: entry.reason,
                source: format!("{shown}:{line}"),
            })
        })
        .collect()
}

/// The entries of the first allowlist file this process read, for the first line of its run file.
static NOTED: OnceLock<Vec<AllowEntry>> = OnceLock::new();

/// Notes the entries of an allowlist file that was read (the first read wins).
pub(crate) fn note(entries: &[AllowEntry]) {
    let _ = NOTED.get_or_init(|| entries.to_vec());
}

/// The entries of the first allowlist file this process read (none before one was read).
pub(crate) fn noted() -> &'static [AllowEntry] {
    NOTED.get().map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accepted_form_names_every_category() {
        for c in Category::ALL {
            assert!(ENTRY_FORM.contains(c.as_str()), "ENTRY_FORM does not name the category {c}");
        }
    }
}
