//! Turning raw violations into [`Violation`]s: symbolizing stacks (cached per address), applying the allowlist and
//! choosing call sites. Runs with detection suspended, never inside an intercepted call.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use crate::call_site::{self, Paths, Selection};
use crate::capture::intercept::RawStack;
use crate::capture::scope::RawViolation;
use crate::catalogue::Category;
use crate::catalogue::Weight;
use crate::config::Config;
use crate::record::EntryAllowed;
use crate::violation::{CallSite, Frame, SourceLocation, Violation};

static FRAMES: LazyLock<Mutex<HashMap<usize, Arc<[Frame]>>>> = LazyLock::new(Default::default);

static PATHS: LazyLock<Paths> = LazyLock::new(|| Paths {
    cargo_home: crate::workspace::cargo_home(),
    blockcop_src: concat!(env!("CARGO_MANIFEST_DIR"), "/src/").to_owned(),
    workspace_root: crate::workspace::root().map(|r| r.to_string_lossy().into_owned()),
});

static WARM_UP: std::sync::OnceLock<()> = std::sync::OnceLock::new();
static WARMED_UP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts the warm-up once per process, on a thread of its own (`blockcop-warm-up`): finds the workspace root and
/// symbolizes the thread's own stack, which makes the symbolizer load the executable's debug info (about a second
/// on a 150 MB debug binary) before the first violation needs it, not on that request's path.
pub(crate) fn warm_up() {
    WARM_UP.get_or_init(|| {
        let spawned = std::thread::Builder::new().name("blockcop-warm-up".into()).spawn(|| {
            crate::capture::scope::allow_blocking(|| {
                LazyLock::force(&PATHS);
                let stack = RawStack::capture();
                for ip in stack.ips() {
                    frames_at(*ip);
                }
                warm_request_path();
            });
            WARMED_UP.store(true, std::sync::atomic::Ordering::Release);
        });
        if let Err(e) = spawned {
            eprintln!("blockcop: cannot start the warm-up thread: {e}; the first violation loads debug info itself");
        }
    });
}

/// The crates whose code every request's stack runs through (tokio's runtime, hyper's and tonic's servers, axum's
/// and tower's routing and middleware, blockcop's layer and hooks), by their legacy-mangled symbol prefix.
const REQUEST_PATH_CRATES: [&str; 7] =
    ["_ZN5tokio", "_ZN5hyper", "_ZN4axum", "_ZN5tower", "_ZN5tonic", "_ZN2h2", "_ZN8blockcop"];

/// Symbolizes the executable's functions of [`REQUEST_PATH_CRATES`] (a few thousand in a typical axum service), so
/// that the compile units a request's stack passes through are parsed before a request needs them: without this,
/// the first violation's stack costs 100-150 ms more than later ones even with the debug info loaded.
fn warm_request_path() {
    use object::{Object as _, ObjectSymbol as _};
    let Some(file) = std::env::current_exe().ok().and_then(|exe| std::fs::File::open(exe).ok()) else { return };
    let cache = object::ReadCache::new(file);
    let Ok(obj) = object::File::parse(&cache) else { return };
    // Where this function runs, against where the symbol table puts it: the executable's load bias.
    let here = warm_request_path as fn() as usize;
    let mut bias = None;
    let mut addresses = Vec::new();
    for symbol in obj.symbols() {
        if symbol.kind() != object::SymbolKind::Text {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        let Ok(address) = usize::try_from(symbol.address()) else { continue };
        if name.starts_with("_ZN8blockcop9symbolize17warm_request_path17h") {
            bias = Some(here.wrapping_sub(address));
        } else if REQUEST_PATH_CRATES.iter().any(|c| name.starts_with(c)) {
            addresses.push(address);
        }
    }
    let Some(bias) = bias else { return };
    for address in addresses {
        frames_at(address.wrapping_add(bias));
    }
}

/// Whether the warm-up (see [`crate::warmed_up`]) has finished.
pub(crate) fn warmed_up() -> bool {
    WARMED_UP.load(std::sync::atomic::Ordering::Acquire)
}

/// The symbolized frames at one return address, innermost (inlined) first.
fn frames_at(ip: usize) -> Arc<[Frame]> {
    if let Some(f) = FRAMES.lock().unwrap_or_else(PoisonError::into_inner).get(&ip) {
        return f.clone();
    }
    let mut frames = Vec::new();
    backtrace::resolve(ip as *mut std::ffi::c_void, |sym| {
        frames.push(Frame {
            function: sym.name().map(|n| format!("{n:#}")),
            file: sym.filename().map(|p| p.to_string_lossy().into_owned()),
            line: sym.lineno(),
            column: sym.colno(),
        });
    });
    if frames.is_empty() {
        frames.push(Frame { function: None, file: None, line: None, column: None });
    }
    let frames: Arc<[Frame]> = frames.into();
    FRAMES.lock().unwrap_or_else(PoisonError::into_inner).insert(ip, frames.clone());
    frames
}

/// Symbolizes and judges raw violations; allowlisted ones are left out, and those an entry of the allowlist file
/// left out are counted in `by_entries`.
pub(crate) fn resolve(
    raws: Vec<RawViolation>,
    config: &Config,
    scope_id: u64,
    by_entries: &mut Vec<EntryAllowed>,
) -> Vec<Violation> {
    raws.into_iter().filter_map(|raw| resolve_one(raw, config, scope_id, by_entries)).collect()
}

fn resolve_one(
    raw: RawViolation,
    config: &Config,
    scope_id: u64,
    by_entries: &mut Vec<EntryAllowed>,
) -> Option<Violation> {
    let root = crate::workspace::root();
    let frames = frames_of(&raw.stack);
    match allowed(&frames, raw.event, config) {
        Allowed::No => {}
        Allowed::Builtin => return None,
        Allowed::Entry(i) => {
            by_entries.push((i, raw.event.name, raw.count));
            return None;
        }
    }
    // A slow poll whose every stack sample is inside tokio's own code (its blocking pool's spawn spinning on a
    // parking_lot lock, `sched_yield`) is the runtime's, not the user's.
    if !raw.samples.is_empty() && raw.samples.iter().all(|s| call_site::lock_owned_by_tokio(&frames_of(s), &PATHS)) {
        return None;
    }
    let weight = judged_weight(&raw, &frames, config);
    let mut detail = raw.detail.as_str().to_owned();
    let mut selection = call_site::select(&frames, &PATHS, root);
    // A slow poll has no blocking call to point at: its site is the hottest user frame of the watchdog's stack
    // samples, else where the future was instrumented (or the task spawned).
    if !raw.samples.is_empty() {
        let hot = hottest(&raw.samples, config);
        if hot.call_site.location().is_some() {
            detail.push_str(&format!("; hottest frame of {} stack samples", raw.samples.len()));
            selection = hot;
        }
    }
    let call_site = match (raw.site, selection.call_site.location()) {
        (Some(loc), None) => CallSite::Source(SourceLocation {
            file: call_site::relative(loc.file(), root),
            line: loc.line(),
            column: Some(loc.column()),
        }),
        _ => selection.call_site,
    };
    Some(Violation {
        count: raw.count,
        call_site,
        blocking_api: selection.blocking_api,
        blocking_api_crate: selection.blocking_api_crate,
        stack: selection.stack,
        call_chain: selection.call_chain,
        task: raw.task.map(|t| crate::violation::TaskContext {
            id: t.id.to_string().parse().ok(),
            spawned_at: t.spawned_at.map(ToString::to_string),
        }),
        scope_id,
        thread_id: raw.thread_id,
        thread_name: raw.thread_name,
        timestamp: raw.timestamp,
        stuck: raw.stuck,
        ..Violation::new(raw.event, weight, raw.duration, detail)
    })
}

/// The weight of a blocking call once its stack is known: heavy through a synchronous database or network client
/// ([`Config::blocking_clients`]); trivial when it waits for std's stdout/stderr lock (console output is trivial
/// whatever its duration, like the write the lock guards); otherwise as recorded.
fn judged_weight(raw: &RawViolation, frames: &[Frame], config: &Config) -> Weight {
    let category = raw.event.category;
    if category == Category::SlowPoll {
        return raw.weight;
    }
    if category == Category::LockWait && call_site::waits_for_stdio(frames, &PATHS) {
        return Weight::Trivial;
    }
    let through_client = frames
        .iter()
        .filter_map(|f| f.function.as_deref())
        .any(|name| crate::catalogue::is_blocking_client(name, config.blocking_clients()));
    if through_client { Weight::Heavy } else { raw.weight }
}

fn frames_of(stack: &RawStack) -> Vec<Frame> {
    stack.ips().iter().flat_map(|ip| frames_at(*ip).to_vec()).collect()
}

/// The call site most stack samples agree on (the first among equals), with that sample's stack; `Unknown` when no
/// sample reaches user code.
pub(crate) fn hottest(samples: &[RawStack], config: &Config) -> Selection {
    let root = crate::workspace::root();
    let mut tally: Vec<(Selection, usize)> = Vec::new();
    for sample in samples {
        let frames = frames_of(sample);
        if !matches!(allowed(&frames, crate::catalogue::SLOW_POLL, config), Allowed::No) {
            continue;
        }
        let sel = call_site::select(&frames, &PATHS, root);
        if sel.call_site.location().is_none() {
            continue;
        }
        match tally.iter_mut().find(|(s, _)| s.call_site == sel.call_site) {
            Some((_, n)) => *n += 1,
            None => tally.push((sel, 1)),
        }
    }
    let best = tally.iter().map(|(_, n)| *n).max().unwrap_or(0);
    tally.into_iter().find(|(_, n)| *n == best && best > 0).map_or(
        Selection {
            call_site: CallSite::Unknown,
            blocking_api: None,
            blocking_api_crate: None,
            stack: Vec::new(),
            call_chain: Vec::new(),
        },
        |(s, _)| s,
    )
}

/// True when blocking is allowed here: a frame matches the allowlist (BlockHound's `allowBlockingCallsInside`),
/// the call was made by a `spawn_blocking` closure, or it is a lock wait of tokio's own runtime (its internal locks
/// are held for a few instructions).
fn allowed(frames: &[Frame], event: crate::catalogue::Event, config: &Config) -> Allowed {
    let matches = |f: &Frame| {
        f.function.as_deref().is_some_and(|name| config.allowlist().iter().any(|p| name.starts_with(p.as_str())))
    };
    if frames.iter().any(matches) || in_spawn_blocking(frames) {
        return Allowed::Builtin;
    }
    let functions = || frames.iter().filter_map(|f| f.function.as_deref());
    if let Some(i) = config.allow_entries().iter().position(|e| e.allows(event.name, event.category, functions())) {
        return Allowed::Entry(i);
    }
    if event.category == Category::LockWait && call_site::lock_owned_by_tokio(frames, &PATHS) {
        return Allowed::Builtin;
    }
    Allowed::No
}

/// Whether, and by what, a violation is allowed.
enum Allowed {
    No,
    /// By the allowlist of the configuration in code, a `spawn_blocking` closure, or tokio's own lock.
    Builtin,
    /// By this entry of the allowlist file.
    Entry(usize),
}

/// Whether a stack is a `spawn_blocking` closure's: it runs in the blocking pool's task type with no scheduler
/// below it. (A worker thread runs inside a blocking-pool task too, but with the scheduler's frames between.) A
/// thread that gave its worker core away in `block_in_place` goes on to run such closures without parking as a
/// worker, so stable tokio's park/unpark hooks alone would leave it counted as a worker.
fn in_spawn_blocking(frames: &[Frame]) -> bool {
    let named = |needle: &str| frames.iter().any(|f| f.function.as_deref().is_some_and(|n| n.contains(needle)));
    named("tokio::runtime::blocking::task::BlockingTask<") && !named("tokio::runtime::scheduler::")
}
