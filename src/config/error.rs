//! [`ConfigError`]: a malformed `BLOCKCOP_*` value or entry of a checked-in file, named with the accepted form.

/// A malformed `BLOCKCOP_*` value, a run-file directory that cannot be used, or a malformed entry of the
/// configuration file (`blockcop.toml`).
///
/// Displays as `invalid BLOCKCOP_SLOW_POLL_MS="abc": expected …` for a variable, and as
/// `invalid blockcop.toml at /path/blockcop.toml:3: missing field `reason`; expected …` for the file.
/// `Debug` prints the message too, so that `fn main() -> Result<(), Box<dyn Error>>` (or `-> Result<(),
/// ConfigError>`) shows it as it is when `?` returns it.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// The environment variable, e.g. `BLOCKCOP_SLOW_POLL_MS`; for the configuration file, `blockcop.toml`.
    pub variable: &'static str,
    /// The value it had (non-UTF-8 bytes replaced by U+FFFD); for the configuration file, what is wrong.
    pub value: String,
    /// The accepted form, and what failed when the value had it.
    pub expected: String,
    /// For the configuration file: where, as `path:line` (line 0: the whole file).
    pub location: Option<String>,
}

impl ConfigError {
    pub(crate) fn variable(variable: &'static str, value: &str, expected: &str) -> ConfigError {
        ConfigError { variable, value: value.to_owned(), expected: expected.to_owned(), location: None }
    }

    /// An error in the file `name` (`blockcop.toml`, `blockcop-baseline.toml`) at `path`.
    pub(crate) fn in_file(name: &'static str, path: &str, line: usize, problem: &str, expected: &str) -> ConfigError {
        ConfigError {
            variable: name,
            value: problem.to_owned(),
            expected: expected.to_owned(),
            location: Some(if line == 0 { path.to_owned() } else { format!("{path}:{line}") }),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            None => write!(f, "invalid {}={:?}: expected {}", self.variable, self.value, self.expected),
            Some(at) => {
                write!(f, "invalid {} at {at}: {}; expected {}", self.variable, self.value, self.expected)
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl std::fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// For `?` in a function returning `std::io::Result` (a `main` that also binds a listener): an
/// [`InvalidInput`](std::io::ErrorKind::InvalidInput) error carrying the `ConfigError`.
impl From<ConfigError> for std::io::Error {
    fn from(e: ConfigError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}
