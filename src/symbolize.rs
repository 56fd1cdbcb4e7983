//! Turning raw violations into [`Violation`]s: symbolizing stacks (cached per address), applying the allowlist and
//! choosing call sites. Runs with detection suspended, never inside an intercepted call.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use crate::catalogue::Category;
use crate::config::Config;
use crate::scope::RawViolation;
use crate::violation::{self, CallSite, Frame, Level, Origin, Paths, SourceLocation, Violation};

static FRAMES: LazyLock<Mutex<HashMap<usize, Arc<[Frame]>>>> = LazyLock::new(Default::default);

static PATHS: LazyLock<Paths> = LazyLock::new(|| Paths {
    cargo_home: std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|p| p.to_string_lossy().into_owned()),
    blockcop_src: concat!(env!("CARGO_MANIFEST_DIR"), "/src/").to_owned(),
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
    let frames: Vec<Frame> = raw.stack.ips().iter().flat_map(|ip| frames_at(*ip).to_vec()).collect();
    if allowed(&frames, raw.event.category, config) {
        return None;
    }
    let selection = violation::select(&frames, &PATHS, root);
    // A slow poll has no blocking call to point at; its site is where the future was instrumented.
    let call_site = match raw.site {
        Some(loc) => CallSite::Source(SourceLocation {
            file: violation::relative(loc.file(), root),
            line: loc.line(),
            column: Some(loc.column()),
        }),
        None => selection.call_site,
    };
    Some(Violation {
        event: raw.event.name,
        category: raw.event.category,
        weight: raw.weight,
        level: Level::of(raw.weight.value()),
        duration: raw.duration,
        count: raw.count,
        detail: raw.detail.as_str().to_owned(),
        call_site,
        blocking_api: selection.blocking_api,
        blocking_api_crate: selection.blocking_api_crate,
        stack: selection.stack,
        scope_id,
        thread_id: raw.thread_id,
        thread_name: raw.thread_name,
        timestamp: raw.timestamp,
    })
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
    if category == Category::LockWait {
        let owner = frames
            .iter()
            .find(|f| !matches!(violation::classify(f, &PATHS), Origin::Std | Origin::Unknown | Origin::Blockcop));
        if let Some(f) = owner {
            let name = f.function.as_deref().unwrap_or("");
            return violation::classify(f, &PATHS) == Origin::Dependency
                && (name.starts_with("tokio::") || name.starts_with("<tokio::"));
        }
    }
    false
}
