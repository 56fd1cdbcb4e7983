//! [`BlockCopLayer`]: the tower layer, built from a configuration or the environment.

use tower::Layer;

use super::BlockCop;
use crate::config::{Config, ConfigError};

/// The tower layer; see the [module docs](crate::layer).
///
/// Active when its configuration is enabled; otherwise a pass-through that adds no header and costs one branch
/// per request.
#[derive(Debug, Clone)]
pub struct BlockCopLayer {
    config: Option<Config>,
}

impl BlockCopLayer {
    /// A layer judging by `config`; active iff `config.is_enabled()`. An active layer starts blockcop's watchdog
    /// and, in the background, loads the program's debug info (see [`crate::warmed_up`]), so that the first request
    /// that blocks is not the one that pays for it.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use std::time::Duration;
    ///
    /// let config = blockcop::Config::builder().enabled(true).slow_poll_threshold(Duration::from_millis(20)).build();
    /// let app: Router = Router::new()
    ///     .route("/health", get(|| async { "ok" }))
    ///     .layer(blockcop::BlockCopLayer::new(config));
    /// ```
    pub fn new(config: Config) -> BlockCopLayer {
        crate::capture::sampler::ensure_watchdog(&config);
        BlockCopLayer { config: config.is_enabled().then_some(config) }
    }

    /// A layer from the environment: active iff `RUST_TEST_BLOCKCOP` enables it (see [`Config::from_env`]).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the variable, its value and the accepted form when a `BLOCKCOP_*` value is
    /// malformed.
    pub fn from_env() -> Result<BlockCopLayer, ConfigError> {
        Config::from_env().map(BlockCopLayer::new)
    }

    /// A layer from the environment, for code that cannot return [`ConfigError`] (a function returning `Router`):
    /// as [`from_env`](Self::from_env), but a malformed `BLOCKCOP_*` value stops the program at start-up.
    ///
    /// ```no_run
    /// fn app() -> axum::Router {
    ///     axum::Router::new()
    ///         .route("/", axum::routing::get(|| async { "hi" }))
    ///         .layer(blockcop::BlockCopLayer::from_env_or_panic())
    /// }
    /// ```
    ///
    /// # Panics
    ///
    /// When a `BLOCKCOP_*` value is malformed, with the message [`ConfigError`] displays (the variable, its value
    /// and the accepted form), e.g. `blockcop: invalid BLOCKCOP_SLOW_POLL_MS="abc": expected a whole number of
    /// milliseconds from 1 to 3600000, digits only (e.g. 10)`.
    #[track_caller]
    pub fn from_env_or_panic() -> BlockCopLayer {
        match BlockCopLayer::from_env() {
            Ok(layer) => layer,
            Err(e) => panic!("blockcop: {e}"),
        }
    }

    /// A layer that never does anything.
    pub fn disabled() -> BlockCopLayer {
        BlockCopLayer { config: None }
    }

    /// Whether the layer is active.
    pub fn is_active(&self) -> bool {
        self.config.is_some()
    }
}

impl<S> Layer<S> for BlockCopLayer {
    type Service = BlockCop<S>;

    fn layer(&self, inner: S) -> BlockCop<S> {
        BlockCop::new(inner, self.config.clone())
    }
}
