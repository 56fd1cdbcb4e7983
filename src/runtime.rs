//! Whole-runtime coverage: the blocking calls of every task a runtime polls on its worker threads, and with
//! `--cfg tokio_unstable` every task poll as a scope of its own.
//!
//! ```no_run
//! let mut builder = tokio::runtime::Builder::new_multi_thread();
//! builder.enable_all();
//! blockcop::runtime::install(&mut builder).expect("never fails");
//! let rt = builder.build().unwrap();
//! ```
//!
//! **On stable tokio** (no `tokio_unstable`) [`install`] uses `on_thread_unpark` / `on_thread_park`, which fire on
//! worker threads only: from unpark to park the thread is in a scope of its own that records the blocking calls
//! made inside a task (`tokio::task::try_id`), with the task's id. Not recorded: `spawn_blocking` closures,
//! `block_in_place` closures, `block_on` bodies, the scheduler's own code between tasks. Not available: per-poll
//! timing (slow and stuck polls of tasks), spawn locations, and tasks inheriting the scope they were spawned in
//! (spawn them with [`InstrumentExt::blockcop_current`](crate::InstrumentExt::blockcop_current) instead). A worker
//! thread is covered from its first park on (at start-up, once it finds nothing to do).
//!
//! **With `--cfg tokio_unstable`** it uses tokio's `on_before_task_poll` / `on_after_task_poll` / `on_task_spawn`
//! / `on_task_terminate`. They do not fire for `block_on` bodies (so not for `#[tokio::main]` / `#[tokio::test]`
//! bodies: see [`crate::test`]) nor for `LocalSet::spawn_local` tasks.
//!
//! - Each worker thread polls its tasks inside a scope of its own; violations carry the task id and its spawn
//!   location (`TaskMeta::spawned_at`), which is also a slow poll's call site. These scopes are drained into the run
//!   file and `tracing` events (target `blockcop`) in the background and at exit.
//! - A task spawned while a request (or any other scope) is being handled inherits that scope: the request's
//!   header counts what the task does while the request is served, and what it does later still reaches the run
//!   file under that request when the task ends.
//! - tokio keeps one callback per hook; [`Hooks`] chains your own in front of blockcop's.

#[cfg(tokio_unstable)]
use std::collections::HashMap;
use std::sync::Arc;
#[cfg(tokio_unstable)]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::capture::scope::Scope;
use crate::config::Config;
use crate::recent::Recent;

/// tokio's task hooks are missing: the build lacks `--cfg tokio_unstable`. No longer returned by [`install`] (which
/// falls back to stable tokio's thread hooks); kept so that code matching on it compiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "blockcop::runtime needs tokio's task hooks, which exist only with `--cfg tokio_unstable`: build with \
     RUSTFLAGS=\"--cfg tokio_unstable\" (or put `rustflags = [\"--cfg\", \"tokio_unstable\"]` under [build] in \
     .cargo/config.toml)"
)]
#[non_exhaustive]
pub struct HooksUnavailable;

/// Whether this build has tokio's task hooks (`--cfg tokio_unstable`): per-poll timing of tasks, spawn locations
/// and inheritance. Without them [`install`] uses stable tokio's thread hooks (blocking calls inside tasks only).
pub const fn hooks_available() -> bool {
    cfg!(tokio_unstable)
}

#[cfg(tokio_unstable)]
type UserHook = Arc<dyn Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync>;

/// blockcop's task hooks, with your own chained in front; [`install`](Hooks::install) puts them on a builder.
///
/// # Examples
///
/// ```
/// let config = blockcop::Config::builder().enabled(true).build();
/// let mut builder = tokio::runtime::Builder::new_multi_thread();
/// builder.enable_all();
/// blockcop::runtime::Hooks::new(&config).install(&mut builder).expect("hooks");
/// let rt = builder.build().expect("runtime");
/// rt.block_on(async {
///     tokio::spawn(async { std::fs::metadata("Cargo.toml").is_ok() }).await.expect("task");
/// });
/// ```
#[derive(Clone)]
#[must_use]
pub struct Hooks {
    config: Config,
    #[cfg(tokio_unstable)]
    user: [Option<UserHook>; 4],
    user_park: Option<ThreadHook>,
    user_unpark: Option<ThreadHook>,
}

type ThreadHook = Arc<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").field("config", &self.config).finish_non_exhaustive()
    }
}

#[cfg(tokio_unstable)]
const SPAWN: usize = 0;
#[cfg(tokio_unstable)]
const BEFORE: usize = 1;
#[cfg(tokio_unstable)]
const AFTER: usize = 2;
#[cfg(tokio_unstable)]
const TERMINATE: usize = 3;

impl Hooks {
    /// Hooks judging by `config`. When it is disabled, installing them installs only your own hooks.
    pub fn new(config: &Config) -> Hooks {
        Hooks {
            config: config.clone(),
            #[cfg(tokio_unstable)]
            user: [None, None, None, None],
            user_park: None,
            user_unpark: None,
        }
    }

    /// Runs `f` when a worker thread parks (tokio's `on_thread_park`), after blockcop's own hook (without
    /// `tokio_unstable`, blockcop uses this hook; with it, `f` is installed as it is).
    pub fn on_thread_park(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.user_park = Some(Arc::new(f));
        self
    }

    /// Runs `f` when a worker thread unparks (tokio's `on_thread_unpark`), before blockcop's own hook (without
    /// `tokio_unstable`, blockcop uses this hook; with it, `f` is installed as it is).
    pub fn on_thread_unpark(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.user_unpark = Some(Arc::new(f));
        self
    }

    /// Runs `f` on every task spawn, before blockcop's own hook.
    #[cfg(tokio_unstable)]
    pub fn on_task_spawn(mut self, f: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static) -> Self {
        self.user[SPAWN] = Some(Arc::new(f));
        self
    }

    /// Runs `f` before every task poll, before blockcop's own hook.
    #[cfg(tokio_unstable)]
    pub fn on_before_task_poll(mut self, f: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static) -> Self {
        self.user[BEFORE] = Some(Arc::new(f));
        self
    }

    /// Runs `f` after every task poll, after blockcop's own hook.
    #[cfg(tokio_unstable)]
    pub fn on_after_task_poll(mut self, f: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static) -> Self {
        self.user[AFTER] = Some(Arc::new(f));
        self
    }

    /// Runs `f` when a task terminates, before blockcop's own hook.
    #[cfg(tokio_unstable)]
    pub fn on_task_terminate(mut self, f: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static) -> Self {
        self.user[TERMINATE] = Some(Arc::new(f));
        self
    }

    /// Installs the hooks on `builder`, replacing any it had (tokio keeps one callback per hook: chain yours with
    /// the methods above): the thread park/unpark hooks on stable tokio, the task hooks with `--cfg tokio_unstable`
    /// (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// None: the `Result` is kept for code written when stable tokio returned [`HooksUnavailable`].
    pub fn install(self, builder: &mut tokio::runtime::Builder) -> Result<(), HooksUnavailable> {
        crate::capture::run_file::register_drain(drain_in_background);
        #[cfg(tokio_unstable)]
        {
            hooks::install(self, builder);
            Ok(())
        }
        #[cfg(not(tokio_unstable))]
        {
            worker_threads::install(self, builder);
            Ok(())
        }
    }
}

/// Installs blockcop's hooks, judging by the process-wide configuration ([`Config::global`]); see
/// [`Hooks::install`].
///
/// # Errors
///
/// None: the `Result` is kept for code written when stable tokio returned [`HooksUnavailable`].
///
/// # Panics
///
/// As [`Config::global`], on a malformed `BLOCKCOP_*` variable.
pub fn install(builder: &mut tokio::runtime::Builder) -> Result<(), HooksUnavailable> {
    Hooks::new(Config::global()).install(builder)
}

/// A multi-thread runtime builder (`enable_all`) with blockcop's hooks installed.
///
/// # Panics
///
/// As [`Config::global`], on a malformed `BLOCKCOP_*` variable.
pub fn new_multi_thread() -> tokio::runtime::Builder {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    if let Err(e) = install(&mut b) {
        panic!("{e}");
    }
    b
}

/// Scopes of worker threads, drained in the background and at exit.
static THREAD_SCOPES: Mutex<Vec<Scope>> = Mutex::new(Vec::new());

/// Takes what the runtime hooks' per-thread scopes recorded so far: into the run file and as `tracing` events
/// (target `blockcop`), and returns them. Runs every 100 ms on blockcop's watchdog thread and at exit; call it to
/// see task violations at once (each violation is returned by one call only).
pub fn drain() -> crate::Violations {
    // One drain at a time: a drain that finds a scope already taken by a concurrent one (the watchdog's) returns
    // only after that one has put what it took in `recent()`, so what was recorded before a call is seen after it.
    static DRAINING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = DRAINING.lock().unwrap_or_else(PoisonError::into_inner);
    let scopes: Vec<Scope> = {
        let mut kept = THREAD_SCOPES.lock().unwrap_or_else(PoisonError::into_inner);
        let scopes = kept.clone();
        // A scope whose worker thread has exited is held only here and by `scopes`: drained this once, then let go.
        kept.retain(|s| Arc::strong_count(&s.shared) > 2);
        scopes
    };
    let mut all = crate::Violations::default();
    for scope in scopes {
        let v = scope.take_violations();
        all.dropped += v.dropped;
        crate::record::events::emit(&v, None);
        all.list.extend(v.list);
    }
    if !all.list.is_empty() {
        RECENT.extend(all.list.iter().cloned());
    }
    all
}

/// [`drain`] as the watchdog (every 100 ms) and the run file's writer (at exit) run it.
fn drain_in_background() {
    drain();
}

static RECENT: Recent<crate::Violation> = Recent::new(1024);

/// The latest task violations drained (by [`drain`], the watchdog or at exit), at most 1024, oldest first.
pub fn recent() -> Vec<crate::Violation> {
    RECENT.to_vec()
}

#[cfg(tokio_unstable)]
mod hooks {
    use super::*;
    use crate::capture::intercept::thread::{self, TaskTag};
    use crate::capture::sampler::Padded;

    /// State shared by one installation's hooks, which every poll reads on every worker thread. Aligned to (so
    /// filling whole) 128-byte line pairs, so that no heap neighbour that another worker writes on every poll can
    /// make each read a cache miss.
    #[repr(align(128))]
    struct Installed {
        config: Config,
        /// Tasks spawned inside a scope, with the scope they inherit.
        inherited: Mutex<HashMap<tokio::task::Id, Scope>>,
        inherited_len: AtomicUsize,
    }

    /// A new per-thread scope of this installation, registered for draining.
    fn new_own_scope(installed: &Installed) -> Scope {
        let scope = Scope::for_runtime(&installed.config);
        THREAD_SCOPES.lock().unwrap_or_else(PoisonError::into_inner).push(scope.clone());
        crate::capture::sampler::ensure_watchdog(&installed.config);
        scope
    }

    pub(super) fn install(hooks: Hooks, builder: &mut tokio::runtime::Builder) {
        let Hooks { config, user, user_park, user_unpark } = hooks;
        let [u_spawn, u_before, u_after, u_terminate] = user;
        if let Some(f) = user_park {
            builder.on_thread_park(move || f());
        }
        if let Some(f) = user_unpark {
            builder.on_thread_unpark(move || f());
        }
        if !config.is_enabled() {
            // Only the user's hooks, as if blockcop were not there.
            if let Some(f) = u_spawn {
                builder.on_task_spawn(move |m| f(m));
            }
            if let Some(f) = u_before {
                builder.on_before_task_poll(move |m| f(m));
            }
            if let Some(f) = u_after {
                builder.on_after_task_poll(move |m| f(m));
            }
            if let Some(f) = u_terminate {
                builder.on_task_terminate(move |m| f(m));
            }
            return;
        }
        let installed =
            Arc::new(Installed { config, inherited: Mutex::new(HashMap::new()), inherited_len: AtomicUsize::new(0) });
        let i = installed.clone();
        builder.on_task_spawn(move |meta| {
            if let Some(f) = &u_spawn {
                f(meta);
            }
            // Spawned while a request (or another inheritable scope) is being polled: the task belongs to it.
            if let Some(scope) = thread::current_scope().filter(|s| s.inheritable()) {
                let mut map = i.inherited.lock().unwrap_or_else(PoisonError::into_inner);
                map.insert(meta.id(), Scope { shared: scope });
                i.inherited_len.store(map.len(), Ordering::Relaxed);
            }
        });
        // tokio allocates each hook next to data its workers write, and each poll reads the hook's captures: they
        // get their own line pairs.
        let before = Padded((installed.clone(), u_before));
        builder.on_before_task_poll(move |meta| {
            let (i, u_before) = &before.0;
            if let Some(f) = u_before {
                f(meta);
            }
            let task = Some(TaskTag { id: meta.id(), spawned_at: Some(meta.spawned_at()) });
            let inherited = if i.inherited_len.load(Ordering::Relaxed) > 0 {
                i.inherited.lock().unwrap_or_else(PoisonError::into_inner).get(&meta.id()).cloned()
            } else {
                None
            };
            let key = Arc::as_ptr(i) as usize;
            thread::begin_detached(inherited.as_ref(), key, || new_own_scope(i), task);
        });
        let after = Padded(u_after);
        builder.on_after_task_poll(move |meta| {
            thread::end_detached();
            if let Some(f) = &after.0 {
                f(meta);
            }
        });
        let i = installed;
        builder.on_task_terminate(move |meta| {
            if let Some(f) = &u_terminate {
                f(meta);
            }
            if i.inherited_len.load(Ordering::Relaxed) > 0 {
                let removed = {
                    let mut map = i.inherited.lock().unwrap_or_else(PoisonError::into_inner);
                    let removed = map.remove(&meta.id());
                    i.inherited_len.store(map.len(), Ordering::Relaxed);
                    removed
                };
                // Dropping the last handle writes what the scope still holds to the run file.
                drop(removed);
            }
        });
    }
}

/// Stable tokio (no `tokio_unstable`): the thread park/unpark hooks, which fire on worker threads only. From unpark
/// to park a worker thread is current in a scope of its own that records the blocking calls made inside a task
/// (`tokio::task::try_id`); nothing is timed, nothing is inherited.
#[cfg(not(tokio_unstable))]
mod worker_threads {
    use super::*;
    use crate::capture::intercept::thread;

    pub(super) fn install(hooks: Hooks, builder: &mut tokio::runtime::Builder) {
        let Hooks { config, user_park, user_unpark } = hooks;
        if !config.is_enabled() {
            // Only the user's hooks, as if blockcop were not there.
            if let Some(f) = user_park {
                builder.on_thread_park(move || f());
            }
            if let Some(f) = user_unpark {
                builder.on_thread_unpark(move || f());
            }
            return;
        }
        crate::capture::sampler::ensure_watchdog(&config);
        let config = Arc::new(config);
        // One key per installation: a thread's own scope belongs to the runtime it works for.
        let key = Arc::as_ptr(&config) as usize;
        let c = config.clone();
        builder.on_thread_unpark(move || {
            if let Some(f) = &user_unpark {
                f();
            }
            thread::enter_worker(key, || {
                let scope = Scope::for_worker_threads(&c);
                THREAD_SCOPES.lock().unwrap_or_else(PoisonError::into_inner).push(scope.clone());
                scope
            });
        });
        builder.on_thread_park(move || {
            let _keep = &config;
            thread::leave_worker(key);
            if let Some(f) = &user_park {
                f();
            }
        });
    }
}

#[cfg(all(test, tokio_unstable))]
mod tests {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use super::*;

    fn scope_ids() -> HashSet<u64> {
        THREAD_SCOPES.lock().unwrap_or_else(PoisonError::into_inner).iter().map(Scope::id).collect()
    }

    #[test]
    fn scopes_of_exited_worker_threads_are_let_go() {
        let before = scope_ids();
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2).enable_all();
        Hooks::new(&Config::builder().enabled(true).build()).install(&mut b).expect("hooks");
        let rt = b.build().expect("runtime");
        rt.block_on(async {
            for _ in 0..8 {
                tokio::spawn(async { tokio::task::yield_now().await }).await.expect("task");
            }
        });
        let ours: HashSet<u64> = scope_ids().difference(&before).copied().collect();
        assert!(!ours.is_empty(), "the workers polled in scopes of their own");
        drop(rt);
        // The workers' thread-local destructors run as they exit, just after the runtime's drop returns.
        let deadline = Instant::now() + Duration::from_secs(10);
        while scope_ids().intersection(&ours).next().is_some() && Instant::now() < deadline {
            drain();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(scope_ids().is_disjoint(&ours), "the exited workers' scopes are still kept");
    }
}
