//! Configuration: [`Config`], its builder, the `RUST_TEST_BLOCKCOP` / `BLOCKCOP_*` environment variables and the
//! process-wide configuration used by [`instrument`](crate::instrument).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::catalogue::Level;

pub mod baseline;
mod error;
pub mod file;

pub use error::ConfigError;

/// The variable that turns blockcop on: `1`, `true`, `yes` or `on` (any case) enables it; `0`, `false`, `no`, `off`
/// or empty leaves it off, as does leaving it unset. Any other value also leaves it off, with one warning on stderr
/// naming the value (a typo in CI must not turn the guard off without a word).
pub const ENV_ENABLE: &str = "RUST_TEST_BLOCKCOP";
/// The slow-poll threshold in whole milliseconds, 1 to 3,600,000 (one hour).
pub const ENV_SLOW_POLL_MS: &str = "BLOCKCOP_SLOW_POLL_MS";
/// The severity at which the harness fails a request: a number, or `low`, `medium` or `high`.
pub const ENV_FAIL_SEVERITY: &str = "BLOCKCOP_FAIL_SEVERITY";
/// The stuck-poll threshold in whole milliseconds, 1 to 3,600,000 (one hour).
pub const ENV_STUCK_MS: &str = "BLOCKCOP_STUCK_MS";
/// The per-scope cap on recorded violations: a whole number, 1 to 1,000,000.
pub const ENV_MAX_VIOLATIONS: &str = "BLOCKCOP_MAX_VIOLATIONS";

/// How blockcop detects and judges blocking.
///
/// Cheap to clone (the settings are shared).
///
/// ```
/// use std::time::Duration;
/// let config = blockcop::Config::builder()
///     .enabled(true)
///     .slow_poll_threshold(Duration::from_millis(20))
///     .allow_blocking_in("my_app::cache::warm")
///     .build();
/// assert_eq!(config.slow_poll_threshold(), Duration::from_millis(20));
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    inner: Arc<Settings>,
}

#[derive(Debug, Clone)]
struct Settings {
    enabled: bool,
    slow_poll_threshold: Duration,
    stuck_poll_threshold: Duration,
    fail_severity: u32,
    max_violations_per_scope: usize,
    allowlist: Vec<String>,
    allow_entries: Vec<file::AllowEntry>,
    baseline: Arc<baseline::Baseline>,
    blocking_clients: Vec<String>,
    run_files: bool,
}

impl Default for Config {
    /// Disabled, with every other setting at its default.
    fn default() -> Self {
        Config::builder().build()
    }
}

impl Config {
    /// Slow-poll threshold used when none is set. By default, 10 ms.
    pub const DEFAULT_SLOW_POLL_THRESHOLD: Duration = Duration::from_millis(10);

    /// Severity at which the test harness fails a request. By default, 10 (level medium): any blocking call of
    /// moderate weight (opening a file, a blocking read, a lock wait of 1 ms or more), any heavy one, or enough light
    /// ones to add up to 10. `BLOCKCOP_FAIL_SEVERITY=high` (50) is the fail line of Galaxy's aiocop guard.
    pub const DEFAULT_FAIL_SEVERITY: u32 = 10;

    /// How long a poll may run before the watchdog reports it as a `stuck_poll`, while it is still running. By default,
    /// 1000 ms.
    pub const DEFAULT_STUCK_POLL_THRESHOLD: Duration = Duration::from_millis(1000);

    /// Maximum violations kept per scope; more are counted as dropped. By default, 64.
    pub const DEFAULT_MAX_VIOLATIONS_PER_SCOPE: usize = 64;

    /// Frames that allow blocking below them by default: tokio's `block_in_place` hands the worker thread's core to
    /// another thread first, so blocking inside it stalls no task; `tokio::process` is what blockcop's own fix hint
    /// for `std::process` recommends (it spawns with a short `posix_spawn` and reaps without waiting).
    pub const DEFAULT_ALLOWLIST: &[&str] = &[
        "tokio::task::blocking::block_in_place",
        "tokio::runtime::scheduler::multi_thread::worker::block_in_place",
        "tokio::runtime::scheduler::block_in_place::block_in_place",
        "tokio::process::",
    ];

    /// The largest threshold `BLOCKCOP_SLOW_POLL_MS` and `BLOCKCOP_STUCK_MS` accept, in milliseconds: one hour.
    pub const MAX_THRESHOLD_MS: u64 = 3_600_000;
    /// The largest per-scope cap `BLOCKCOP_MAX_VIOLATIONS` accepts.
    pub const MAX_VIOLATIONS_LIMIT: u64 = 1_000_000;

    /// A builder starting from the defaults (disabled).
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            settings: Settings {
                enabled: false,
                slow_poll_threshold: Config::DEFAULT_SLOW_POLL_THRESHOLD,
                stuck_poll_threshold: Config::DEFAULT_STUCK_POLL_THRESHOLD,
                fail_severity: Config::DEFAULT_FAIL_SEVERITY,
                max_violations_per_scope: Config::DEFAULT_MAX_VIOLATIONS_PER_SCOPE,
                allowlist: Config::DEFAULT_ALLOWLIST.iter().map(|s| (*s).to_owned()).collect(),
                allow_entries: Vec::new(),
                baseline: Arc::default(),
                blocking_clients: crate::catalogue::BLOCKING_CLIENTS.iter().map(|s| (*s).to_owned()).collect(),
                run_files: true,
            },
        }
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup` (and creating no run file).
    ///
    /// # Errors
    ///
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Self::from_os_lookup(|name| lookup(name).map(std::ffi::OsString::from))
    }

    pub(crate) fn from_os_lookup(lookup: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<Config, ConfigError> {
        let text = |variable: &'static str, expected: &str| text_value(variable, lookup(variable), expected);
        let mut b = Config::builder();
        let enable = lookup(ENV_ENABLE).map(|v| v.to_string_lossy().into_owned());
        b = b.enabled(match enable.as_deref().map(parse_enabled) {
            None => false,
            Some(Ok(on)) => on,
            Some(Err(value)) => {
                warn_unknown_enable(value);
                false
            }
        });
        if let Some(v) = text(ENV_SLOW_POLL_MS, MS_FORM)? {
            let ms = parse_bounded(ENV_SLOW_POLL_MS, &v, Config::MAX_THRESHOLD_MS, MS_FORM)?;
            b = b.slow_poll_threshold(Duration::from_millis(ms));
        }
        if let Some(v) = text(ENV_STUCK_MS, MS_FORM)? {
            let ms = parse_bounded(ENV_STUCK_MS, &v, Config::MAX_THRESHOLD_MS, MS_FORM)?;
            b = b.stuck_poll_threshold(Duration::from_millis(ms));
        }
        if let Some(v) = text(ENV_FAIL_SEVERITY, SEVERITY_FORM)? {
            b = b.fail_severity(parse_severity(&v)?);
        }
        if let Some(v) = text(ENV_MAX_VIOLATIONS, COUNT_FORM)? {
            let n = parse_bounded(ENV_MAX_VIOLATIONS, &v, Config::MAX_VIOLATIONS_LIMIT, COUNT_FORM)?;
            b = b.max_violations_per_scope(usize::try_from(n).unwrap_or(usize::MAX));
        }
        // The checked-in allowlist, only when blockcop is on (finding the workspace root reads the debug info).
        if b.settings.enabled
            && let Some((path, named)) = file::locate(&lookup, crate::workspace::root())
        {
            b.settings.allow_entries = file::read(&path, named)?;
            file::note(&b.settings.allow_entries);
        }
        // The checked-in baseline of known findings, likewise.
        if b.settings.enabled
            && let Some((path, named)) = baseline::locate(&lookup, crate::workspace::root())
        {
            b = b.baseline(baseline::Baseline::read_from(&path, named)?);
        }
        Ok(b.build())
    }

    /// Whether detection is on. Off, instrumented futures are plain pass-throughs.
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    /// A poll running at least this long is a `slow_poll` violation (moderate; heavy at ten times this). Blocking
    /// calls at least this long are at least moderate. By default, 10 ms ([`Config::DEFAULT_SLOW_POLL_THRESHOLD`]).
    pub fn slow_poll_threshold(&self) -> Duration {
        self.inner.slow_poll_threshold
    }

    /// A poll still running after this long is reported as a `stuck_poll` by the watchdog, while it is still
    /// running. By default, 1000 ms ([`Config::DEFAULT_STUCK_POLL_THRESHOLD`]).
    pub fn stuck_poll_threshold(&self) -> Duration {
        self.inner.stuck_poll_threshold
    }

    /// The severity at which the test harness fails a request. By default, 10 (medium;
    /// [`Config::DEFAULT_FAIL_SEVERITY`]).
    pub fn fail_severity(&self) -> u32 {
        self.inner.fail_severity
    }

    /// The cap on violations recorded per scope; further ones are counted in
    /// [`Violations::dropped`](crate::Violations::dropped). By default, 64
    /// ([`Config::DEFAULT_MAX_VIOLATIONS_PER_SCOPE`]).
    pub fn max_violations_per_scope(&self) -> usize {
        self.inner.max_violations_per_scope
    }

    /// Whether violations are appended to this process's run file (see [`report::run`](crate::report::run)). By
    /// default, on.
    pub fn run_files(&self) -> bool {
        self.inner.run_files
    }

    /// Function-path prefixes below which blocking is allowed (the defaults are in [`Config::DEFAULT_ALLOWLIST`]).
    pub fn allowlist(&self) -> &[String] {
        &self.inner.allowlist
    }

    /// The `[[allow]]` entries of the configuration file (`blockcop.toml`, see [`config_file`](crate::config::file)),
    /// each with its reason and `path:line`; empty when there is none or blockcop is off.
    pub fn allow_entries(&self) -> &[file::AllowEntry] {
        &self.inner.allow_entries
    }

    /// The known findings of the baseline file (`blockcop-baseline.toml`, see [`crate::config::baseline`]): they
    /// do not fail a request or test body. Empty when there is none or blockcop is off.
    pub fn baseline(&self) -> &baseline::Baseline {
        &self.inner.baseline
    }

    /// Function-path prefixes of synchronous database and network clients: a blocking call made through one of
    /// them weighs heavy (the defaults are [`BLOCKING_CLIENTS`](crate::BLOCKING_CLIENTS)).
    pub fn blocking_clients(&self) -> &[String] {
        &self.inner.blocking_clients
    }

    /// The process-wide configuration if one was set or read, otherwise the defaults (never reads the
    /// environment, never panics).
    pub(crate) fn global_or_default() -> &'static Config {
        static DEFAULT: OnceLock<Config> = OnceLock::new();
        GLOBAL.get().unwrap_or_else(|| DEFAULT.get_or_init(Config::default))
    }

    /// Makes this the process-wide configuration.
    ///
    /// # Errors
    ///
    /// Gives `self` back when a process-wide configuration was already set or read.
    pub fn set_global(self) -> Result<(), Config> {
        GLOBAL.set(self)
    }
}

/// The process-wide configuration, once set ([`Config::set_global`], [`init`](crate::init)) or read
/// ([`Config::global`]).
pub(crate) static GLOBAL: OnceLock<Config> = OnceLock::new();

/// The same as [`Config::DEFAULT_SLOW_POLL_THRESHOLD`], which replaces it.
#[deprecated(since = "0.2.0", note = "use Config::DEFAULT_SLOW_POLL_THRESHOLD")]
pub const DEFAULT_SLOW_POLL_THRESHOLD: Duration = Config::DEFAULT_SLOW_POLL_THRESHOLD;
/// The same as [`Config::DEFAULT_FAIL_SEVERITY`], which replaces it.
#[deprecated(since = "0.2.0", note = "use Config::DEFAULT_FAIL_SEVERITY")]
pub const DEFAULT_FAIL_SEVERITY: u32 = Config::DEFAULT_FAIL_SEVERITY;
/// The same as [`Config::DEFAULT_STUCK_POLL_THRESHOLD`], which replaces it.
#[deprecated(since = "0.2.0", note = "use Config::DEFAULT_STUCK_POLL_THRESHOLD")]
pub const DEFAULT_STUCK_POLL_THRESHOLD: Duration = Config::DEFAULT_STUCK_POLL_THRESHOLD;
/// The same as [`Config::DEFAULT_MAX_VIOLATIONS_PER_SCOPE`], which replaces it.
#[deprecated(since = "0.2.0", note = "use Config::DEFAULT_MAX_VIOLATIONS_PER_SCOPE")]
pub const DEFAULT_MAX_VIOLATIONS_PER_SCOPE: usize = Config::DEFAULT_MAX_VIOLATIONS_PER_SCOPE;
/// The same as [`Config::DEFAULT_ALLOWLIST`], which replaces it.
#[deprecated(since = "0.2.0", note = "use Config::DEFAULT_ALLOWLIST")]
pub const DEFAULT_ALLOWLIST: &[&str] = Config::DEFAULT_ALLOWLIST;
/// The same as [`Config::MAX_THRESHOLD_MS`], which replaces it.
#[deprecated(since = "0.2.0", note = "use Config::MAX_THRESHOLD_MS")]
pub const MAX_THRESHOLD_MS: u64 = Config::MAX_THRESHOLD_MS;
/// The same as [`Config::MAX_VIOLATIONS_LIMIT`], which replaces it.
#[deprecated(since = "0.2.0", note = "use Config::MAX_VIOLATIONS_LIMIT")]
pub const MAX_VIOLATIONS_LIMIT: u64 = Config::MAX_VIOLATIONS_LIMIT;

/// Builds a [`Config`]; see [`Config::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ConfigBuilder {
    settings: Settings,
}

impl ConfigBuilder {
    /// Turns detection on or off. By default, off.
    pub fn enabled(mut self, on: bool) -> Self {
        self.settings.enabled = on;
        self
    }

    /// Sets the slow-poll threshold. By default, 10 ms ([`Config::DEFAULT_SLOW_POLL_THRESHOLD`]). A zero threshold is raised to 1 µs.
    pub fn slow_poll_threshold(mut self, threshold: Duration) -> Self {
        self.settings.slow_poll_threshold = threshold.max(Duration::from_micros(1));
        self
    }

    /// Sets the stuck-poll threshold. By default, 1000 ms ([`Config::DEFAULT_STUCK_POLL_THRESHOLD`]). A zero threshold is raised to 1 ms.
    pub fn stuck_poll_threshold(mut self, threshold: Duration) -> Self {
        self.settings.stuck_poll_threshold = threshold.max(Duration::from_millis(1));
        self
    }

    /// Sets the severity at which the harness fails a request. By default, 10 ([`Config::DEFAULT_FAIL_SEVERITY`]).
    pub fn fail_severity(mut self, severity: u32) -> Self {
        self.settings.fail_severity = severity;
        self
    }

    /// Sets the per-scope cap on recorded violations. By default, 64 ([`Config::DEFAULT_MAX_VIOLATIONS_PER_SCOPE`]).
    /// Zero is raised to 1.
    pub fn max_violations_per_scope(mut self, cap: usize) -> Self {
        self.settings.max_violations_per_scope = cap.max(1);
        self
    }

    /// Allows blocking below any frame whose function path starts with `prefix`, like BlockHound's
    /// `allowBlockingCallsInside`, e.g. `"my_app::startup::load_templates"`.
    pub fn allow_blocking_in(mut self, prefix: impl Into<String>) -> Self {
        self.settings.allowlist.push(prefix.into());
        self
    }

    /// Known findings that do not fail a request or test body (see [`crate::config::baseline`]); by default,
    /// none, or from the environment the baseline file.
    pub fn baseline(mut self, baseline: baseline::Baseline) -> Self {
        self.settings.baseline = Arc::new(baseline);
        self
    }

    /// Adds a synchronous database or network client, by function-path prefix (e.g. `"my_db_driver::"`): a
    /// blocking call made through it weighs heavy, as aiocop weighs network and database calls. The defaults are
    /// [`BLOCKING_CLIENTS`](crate::BLOCKING_CLIENTS).
    pub fn blocking_client(mut self, prefix: impl Into<String>) -> Self {
        self.settings.blocking_clients.push(prefix.into());
        self
    }

    /// Appends violations to the run file, or not. By default, on (when enabled).
    pub fn run_files(mut self, on: bool) -> Self {
        self.settings.run_files = on;
        self
    }

    /// Builds the configuration.
    pub fn build(self) -> Config {
        Config { inner: Arc::new(self.settings) }
    }
}

const MS_FORM: &str = "a whole number of milliseconds from 1 to 3600000, digits only (e.g. 10)";
const COUNT_FORM: &str = "a whole number from 1 to 1000000, digits only (e.g. 64)";
const SEVERITY_FORM: &str = "a whole number (0, 1, 10, 50, ...; digits only) or one of low, medium, high";

/// `RUST_TEST_BLOCKCOP`'s words, any case; `Err` gives back any other value.
fn parse_enabled(v: &str) -> Result<bool, &str> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(v),
    }
}

/// Says once per process that an unrecognized `RUST_TEST_BLOCKCOP` value leaves blockcop off.
fn warn_unknown_enable(value: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!(
            "blockcop: warning: {ENV_ENABLE}={value:?} is not one of 1, true, yes, on (to enable) or 0, false, no, \
             off (to disable); blockcop is off"
        );
    });
}

/// A whole number from 1 to `max`, written with ASCII digits only.
fn parse_bounded(variable: &'static str, v: &str, max: u64, expected: &str) -> Result<u64, ConfigError> {
    let err = || ConfigError::variable(variable, v, expected);
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    match v.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(err()),
    }
}

/// `BLOCKCOP_FAIL_SEVERITY` read from the environment, or [`Config::DEFAULT_FAIL_SEVERITY`] when it is unset or empty.
#[cfg(feature = "cli")]
pub(crate) fn env_fail_severity() -> Result<u32, ConfigError> {
    match text_value(ENV_FAIL_SEVERITY, std::env::var_os(ENV_FAIL_SEVERITY), SEVERITY_FORM)? {
        None => Ok(Config::DEFAULT_FAIL_SEVERITY),
        Some(v) => parse_severity(&v),
    }
}

/// A `BLOCKCOP_*` variable's value as text: `None` when unset or empty, an error naming the variable when it is not
/// UTF-8.
fn text_value(
    variable: &'static str,
    value: Option<std::ffi::OsString>,
    expected: &str,
) -> Result<Option<String>, ConfigError> {
    match value.map(std::ffi::OsString::into_string) {
        None => Ok(None),
        Some(Ok(v)) if v.is_empty() => Ok(None),
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(v)) => {
            Err(ConfigError::variable(variable, &v.to_string_lossy(), &format!("{expected} (the value is not UTF-8)")))
        }
    }
}

/// Parses a severity: a whole number (digits only), or a level name (any case) standing for its lowest severity.
///
/// # Errors
///
/// A [`ConfigError`] for `BLOCKCOP_FAIL_SEVERITY` when `v` is neither.
pub fn parse_severity(v: &str) -> Result<u32, ConfigError> {
    let err = || ConfigError::variable(ENV_FAIL_SEVERITY, v, SEVERITY_FORM);
    if let Ok(level) = v.to_ascii_lowercase().parse::<Level>() {
        return Ok(level.min_severity());
    }
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    v.parse::<u32>().map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn unset_means_defaults_and_disabled() {
        let c = from(&[]).unwrap();
        assert!(!c.is_enabled());
        assert_eq!(c.slow_poll_threshold(), Config::DEFAULT_SLOW_POLL_THRESHOLD);
        assert_eq!(c.fail_severity(), 10);
        assert_eq!(c.max_violations_per_scope(), 64);
        assert!(c.allowlist().iter().any(|p| p.ends_with("block_in_place")));
        assert!(c.allowlist().iter().any(|p| p == "tokio::process::"));
        assert!(c.blocking_clients().iter().any(|p| p == "rusqlite::"));
    }

    #[test]
    fn enable_values() {
        for v in ["1", "true", "TRUE", "yes", "on", "On"] {
            assert!(from(&[(ENV_ENABLE, v)]).unwrap().is_enabled(), "{v:?}");
        }
        for v in ["0", "false", "no", "", "off", "OFF"] {
            assert_eq!(parse_enabled(v), Ok(false), "{v:?}");
        }
        // Anything else is off too, but said (once, on stderr): a typo must not disable the guard silently.
        for v in ["ture", "2", " yes ", "ｙｅｓ", "enable"] {
            assert_eq!(parse_enabled(v), Err(v), "{v:?}");
            assert!(!from(&[(ENV_ENABLE, v)]).unwrap().is_enabled(), "{v:?}");
        }
    }

    #[test]
    fn numbers_and_levels_parse() {
        let c = from(&[(ENV_SLOW_POLL_MS, "25"), (ENV_FAIL_SEVERITY, "medium"), (ENV_MAX_VIOLATIONS, "8")]).unwrap();
        assert_eq!(c.slow_poll_threshold(), Duration::from_millis(25));
        assert_eq!(c.fail_severity(), 10);
        assert_eq!(c.max_violations_per_scope(), 8);
        assert_eq!(parse_severity("high").unwrap(), 50);
        assert_eq!(parse_severity("low").unwrap(), 0);
        assert_eq!(parse_severity("1").unwrap(), 1);
    }

    #[test]
    fn malformed_values_name_variable_value_and_form() {
        let e = from(&[(ENV_SLOW_POLL_MS, "10ms")]).unwrap_err();
        assert_eq!(e.variable, ENV_SLOW_POLL_MS);
        assert_eq!(
            e.to_string(),
            "invalid BLOCKCOP_SLOW_POLL_MS=\"10ms\": expected a whole number of milliseconds from 1 to 3600000, digits \
             only (e.g. 10)"
        );
        // Debug says the same, so `?` in `main` prints the message.
        assert_eq!(format!("{e:?}"), e.to_string());
        assert_eq!(from(&[(ENV_SLOW_POLL_MS, "0")]).unwrap_err().value, "0");
        let e = from(&[(ENV_FAIL_SEVERITY, "severe")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid BLOCKCOP_FAIL_SEVERITY=\"severe\": expected a whole number (0, 1, 10, 50, ...; digits only) or one \
             of low, medium, high"
        );
        assert_eq!(from(&[(ENV_MAX_VIOLATIONS, "many")]).unwrap_err().variable, ENV_MAX_VIOLATIONS);
    }

    #[test]
    fn whitespace_signs_and_out_of_range_values_are_refused() {
        let cases: &[(&str, &str)] = &[
            (ENV_SLOW_POLL_MS, "18446744073709551615"),
            (ENV_SLOW_POLL_MS, "3600001"),
            (ENV_STUCK_MS, "99999999999"),
            (ENV_SLOW_POLL_MS, " 10 "),
            (ENV_SLOW_POLL_MS, "10\u{a0}"),
            (ENV_SLOW_POLL_MS, "+5"),
            (ENV_SLOW_POLL_MS, "-5"),
            (ENV_STUCK_MS, "１０"),
            (ENV_MAX_VIOLATIONS, "1000001"),
            (ENV_MAX_VIOLATIONS, "0"),
            (ENV_FAIL_SEVERITY, " high"),
            (ENV_FAIL_SEVERITY, "+10"),
            (ENV_FAIL_SEVERITY, "4294967296"),
        ];
        for (variable, value) in cases {
            let e = from(&[(variable, value)]).expect_err(value);
            assert_eq!((e.variable, e.value.as_str()), (*variable, *value));
        }
        // The bounds themselves are accepted; empty is unset.
        let c = from(&[(ENV_SLOW_POLL_MS, "3600000"), (ENV_STUCK_MS, "1"), (ENV_MAX_VIOLATIONS, "")]).unwrap();
        assert_eq!(c.slow_poll_threshold(), Duration::from_secs(3600));
        assert_eq!(c.stuck_poll_threshold(), Duration::from_millis(1));
        assert_eq!(c.max_violations_per_scope(), Config::DEFAULT_MAX_VIOLATIONS_PER_SCOPE);
    }

    #[test]
    fn a_value_that_is_not_utf8_is_an_error_naming_the_variable() {
        use std::os::unix::ffi::OsStringExt;
        let e = Config::from_os_lookup(|name| {
            (name == ENV_STUCK_MS).then(|| std::ffi::OsString::from_vec(vec![b'1', 0xff, b'0']))
        })
        .unwrap_err();
        assert_eq!(e.variable, ENV_STUCK_MS);
        assert!(e.to_string().ends_with("(the value is not UTF-8)"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Any value of any variable gives a configuration or an error naming that variable and the value, never a
        /// panic; an accepted number is exactly the digits written, within the bounds.
        #[test]
        fn any_value_is_accepted_as_written_or_refused_by_name(
            variable in proptest::sample::select(vec![ENV_SLOW_POLL_MS, ENV_STUCK_MS, ENV_MAX_VIOLATIONS, ENV_FAIL_SEVERITY]),
            value in "[0-9]{1,22}|[+ -]?[0-9]{1,8}[ a-z]?|\\PC{0,12}",
        ) {
            match from(&[(variable, value.as_str())]) {
                Ok(c) => {
                    proptest::prop_assert!(value.is_empty() || value.bytes().all(|b| b.is_ascii_alphanumeric()));
                    if variable == ENV_SLOW_POLL_MS && !value.is_empty() {
                        let ms: u64 = value.parse().unwrap();
                        proptest::prop_assert!((1..=Config::MAX_THRESHOLD_MS).contains(&ms));
                        proptest::prop_assert_eq!(c.slow_poll_threshold(), Duration::from_millis(ms));
                    }
                }
                Err(e) => {
                    proptest::prop_assert_eq!(e.variable, variable);
                    proptest::prop_assert_eq!(&e.value, &value);
                }
            }
        }
    }
}
