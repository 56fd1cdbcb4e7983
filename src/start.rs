//! Start-up from the environment: [`Config::from_env`], the process-wide [`Config::global`] and [`init`].
//!
//! Reading the configuration itself is [`Config::from_lookup`]'s (in `config`); what this module adds is what an
//! enabled process does at start-up: it creates its run file, so that an unusable `BLOCKCOP_REPORT_DIR` is an error
//! there and not a lost report later.

use crate::capture::run_file;
use crate::config::{Config, ConfigError, GLOBAL};

impl Config {
    /// Reads the configuration from the environment: `RUST_TEST_BLOCKCOP`, `BLOCKCOP_SLOW_POLL_MS`,
    /// `BLOCKCOP_STUCK_MS`, `BLOCKCOP_FAIL_SEVERITY` and `BLOCKCOP_MAX_VIOLATIONS`; when enabled, also the allowlist
    /// file (`BLOCKCOP_CONFIG`, else `blockcop.toml` in the workspace root, see
    /// [`config_file`](crate::config::file)) and the baseline file (`BLOCKCOP_BASELINE`, else `blockcop-baseline.toml`
    /// there, see [`crate::config::baseline`]). Unset (or empty) variables keep
    /// their defaults. Values are read exactly as written: surrounding whitespace and signs (`+5`) are refused,
    /// not trimmed. When blockcop is enabled, this process's run file is created now, in `BLOCKCOP_REPORT_DIR` (see
    /// [`report::run`](crate::report::run)), so an unusable directory is an error at start-up.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the variable, its value and the accepted form when a `BLOCKCOP_*` value is
    /// malformed, out of range or not UTF-8, one naming the file and line of a malformed allowlist or baseline entry
    /// (or a `BLOCKCOP_BASELINE` file that cannot be read), and one
    /// naming `BLOCKCOP_REPORT_DIR` and the operation that failed
    /// when the run file cannot be created. `RUST_TEST_BLOCKCOP` never errors: a value that is not one of its
    /// words leaves blockcop off, with a warning on stderr.
    pub fn from_env() -> Result<Config, ConfigError> {
        let config = Self::from_os_lookup(|name| std::env::var_os(name))?;
        if config.is_enabled() && config.run_files() {
            run_file::open().map_err(|e| {
                ConfigError::variable(
                    run_file::ENV_REPORT_DIR,
                    &e.dir.to_string_lossy(),
                    &format!("a directory blockcop can create and write run files in ({e})"),
                )
            })?;
        }
        Ok(config)
    }

    /// The process-wide configuration used by [`instrument`](crate::instrument): the one set by
    /// [`init`] or [`Config::set_global`], otherwise read from the environment on first use.
    ///
    /// # Panics
    ///
    /// When nothing was set and the environment holds a malformed `BLOCKCOP_*` value; the message names the
    /// variable, its value and the accepted form. Call [`init`] at start-up to get that as an error.
    pub fn global() -> &'static Config {
        GLOBAL.get_or_init(|| match Config::from_env() {
            Ok(c) => c,
            Err(e) => panic!("blockcop: {e}"),
        })
    }
}

/// Reads the configuration from the environment and makes it process-wide, unless one is already set; returns the
/// one in force. Call it at start-up so that a malformed variable is an error there and not a panic later.
///
/// # Errors
///
/// A [`ConfigError`] when a `BLOCKCOP_*` value is malformed (see [`Config::from_env`]).
pub fn init() -> Result<&'static Config, ConfigError> {
    if let Some(c) = GLOBAL.get() {
        return Ok(c);
    }
    let c = Config::from_env()?;
    Ok(GLOBAL.get_or_init(|| c))
}
