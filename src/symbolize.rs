//! Turning raw violations into [`Violation`]s: symbolizing stacks (cached per address), applying the allowlist and
//! choosing call sites. Runs with detection suspended, never inside an intercepted call.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use crate::catalogue::Category;
use crate::config::Config;
use crate::intercept::RawStack;
use crate::scope::RawViolation;
use crate::violation::{self, CallSite, Frame, Level, Paths, Selection, SourceLocation, Violation, Weight};

static FRAMES: LazyLock<Mutex<HashMap<usize, Arc<[Frame]>>>> = LazyLock::new(Default::default);

static PATHS: LazyLock<Paths> = LazyLock::new(|| Paths {
    cargo_home: std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|p| p.to_string_lossy().into_owned()),
    blockcop_src: concat!(env!("CARGO_MANIFEST_DIR"), "/src/").to_owned(),
    workspace_root: workspace_root().map(|r| r.to_string_lossy().into_owned()),
});

/// The workspace root: the nearest ancestor of the running package's manifest directory (or the current
/// directory) whose `Cargo.toml` has a `[workspace]` table. Call sites inside it are shown relative to it.
static WORKSPACE_ROOT: LazyLock<Option<PathBuf>> = LazyLock::new(|| {
    let start = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).or_else(|| std::env::current_dir().ok())?;
    let is_workspace = |dir: &Path| {
        std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
    };
    start
        .ancestors()
        .find(|d| is_workspace(d))
        .or_else(|| start.ancestors().find(|d| d.join("Cargo.toml").is_file()))
        .map(Path::to_path_buf)
});

/// The workspace root call sites are shown relative to, if one was found.
pub(crate) fn workspace_root() -> Option<&'static Path> {
    WORKSPACE_ROOT.as_deref()
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

/// Symbolizes and judges raw violations; allowlisted ones are left out.
pub(crate) fn resolve(raws: Vec<RawViolation>, config: &Config, scope_id: u64) -> Vec<Violation> {
    raws.into_iter().filter_map(|raw| resolve_one(raw, config, scope_id)).collect()
}

fn resolve_one(raw: RawViolation, config: &Config, scope_id: u64) -> Option<Violation> {
    let root = workspace_root();
    let frames = frames_of(&raw.stack);
    if allowed(&frames, raw.event.category, config) {
        return None;
    }
    // A slow poll whose every stack sample is inside tokio's own code (its blocking pool's spawn spinning on a
    // parking_lot lock, `sched_yield`) is the runtime's, not the user's.
    if !raw.samples.is_empty() && raw.samples.iter().all(|s| violation::lock_owned_by_tokio(&frames_of(s), &PATHS)) {
        return None;
    }
    let weight = judged_weight(&raw, &frames, config);
    let mut detail = raw.detail.as_str().to_owned();
    let mut selection = violation::select(&frames, &PATHS, root);
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
            file: violation::relative(loc.file(), root),
            line: loc.line(),
            column: Some(loc.column()),
        }),
        _ => selection.call_site,
    };
    Some(Violation {
        event: raw.event.name,
        category: raw.event.category,
        weight,
        level: Level::of(weight.value()),
        duration: raw.duration,
        count: raw.count,
        detail,
        call_site,
        blocking_api: selection.blocking_api,
        blocking_api_crate: selection.blocking_api_crate,
        stack: selection.stack,
        call_chain: selection.call_chain,
        task: raw.task.map(|t| crate::report::run::TaskContext {
            id: t.id.to_string().parse().ok(),
            spawned_at: Some(t.spawned_at.to_string()),
        }),
        scope_id,
        thread_id: raw.thread_id,
        thread_name: raw.thread_name,
        timestamp: raw.timestamp,
        stuck: raw.stuck,
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
    if category == Category::LockWait && violation::waits_for_stdio(frames, &PATHS) {
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
    let root = workspace_root();
    let mut tally: Vec<(Selection, usize)> = Vec::new();
    for sample in samples {
        let frames = frames_of(sample);
        if allowed(&frames, crate::catalogue::Category::SlowPoll, config) {
            continue;
        }
        let sel = violation::select(&frames, &PATHS, root);
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
/// or it is a lock wait of tokio's own runtime (its internal locks are held for a few instructions).
fn allowed(frames: &[Frame], category: Category, config: &Config) -> bool {
    let matches = |f: &Frame| {
        f.function.as_deref().is_some_and(|name| config.allowlist().iter().any(|p| name.starts_with(p.as_str())))
    };
    if frames.iter().any(matches) {
        return true;
    }
    category == Category::LockWait && violation::lock_owned_by_tokio(frames, &PATHS)
}
