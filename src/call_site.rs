//! Choosing a violation's call site from its stack: which frames are std, libc, blockcop, dependencies or the
//! user's own code ([`classify`]); the call site, blocking API and trimmed stack ([`select`]); and the lock waits
//! that are tokio's own or console output's.

use std::path::Path;

use crate::violation::{CallSite, Frame};

/// Where a frame's code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameOrigin {
    /// std, core, alloc (from the toolchain's sources).
    Std,
    /// blockcop's interposer (the hook and the stack capture above it).
    Hook,
    /// blockcop itself, outside the interposer (the poll of a scope).
    Blockcop,
    /// A crate from a registry or git dependency (under the cargo home).
    Dependency,
    /// The user's own code.
    User,
    /// No file information: libc and other code without debug info.
    Unknown,
}

/// What the classifier needs to know about this machine.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    /// `$CARGO_HOME`, usually `~/.cargo`.
    pub(crate) cargo_home: Option<String>,
    /// blockcop's own `src/` directory.
    pub(crate) blockcop_src: String,
    /// The workspace root: non-Rust code under it (built with `cc`) is the user's own.
    pub(crate) workspace_root: Option<String>,
}

const STD_PREFIXES: [&str; 6] = ["std::", "core::", "alloc::", "<std::", "<core::", "<alloc::"];

pub(crate) fn classify(frame: &Frame, paths: &Paths) -> FrameOrigin {
    let func = frame.function.as_deref().unwrap_or("");
    let Some(file) = frame.file.as_deref() else {
        return if STD_PREFIXES.iter().any(|p| func.starts_with(p)) { FrameOrigin::Std } else { FrameOrigin::Unknown };
    };
    if file.starts_with("/rustc/") || file.contains("/rustlib/src/rust/library/") {
        FrameOrigin::Std
    } else if let Some(rest) = file.strip_prefix(&paths.blockcop_src) {
        // The interposer, the sampler and the platform primitives they call: the frames above the user's code
        // on a captured or sampled stack.
        if rest.starts_with("capture/intercept/") || rest.starts_with("capture/sampler/") || rest.starts_with("sys/") {
            FrameOrigin::Hook
        } else {
            FrameOrigin::Blockcop
        }
    } else if file.contains("/.cargo/registry/")
        || file.contains("/.cargo/git/")
        || paths.cargo_home.as_deref().is_some_and(|home| {
            Path::new(file).starts_with(Path::new(home).join("registry"))
                || Path::new(file).starts_with(Path::new(home).join("git"))
        })
    {
        FrameOrigin::Dependency
    } else if !file.ends_with(".rs") && !paths.workspace_root.as_deref().is_some_and(|r| file.starts_with(r)) {
        // C, assembly or other code from outside the workspace: libc with debug info, a system library.
        FrameOrigin::Unknown
    } else {
        FrameOrigin::User
    }
}

/// The call site, blocking API and trimmed stack chosen from a stack (innermost frame first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selection {
    pub(crate) call_site: CallSite,
    pub(crate) blocking_api: Option<String>,
    pub(crate) blocking_api_crate: Option<String>,
    pub(crate) stack: Vec<Frame>,
    pub(crate) call_chain: Vec<Frame>,
}

/// Chooses the call site: the first frame in the user's own code, skipping std/core/alloc, libc, blockcop and
/// dependencies; the blocking API is the frame just below it when that frame is std or a dependency. The trimmed
/// stack runs from the first frame past blockcop's hook to the outermost user frame (or, without one, to the frame
/// before blockcop's poll of the scope).
pub(crate) fn select(frames: &[Frame], paths: &Paths, root: Option<&Path>) -> Selection {
    let origins: Vec<FrameOrigin> = frames.iter().map(|f| classify(f, paths)).collect();
    // Skip everything up to the hook (the stack capture's own frames, std's catch_unwind) and libc's frames,
    // which have no file, just below it.
    let after_hook = origins.iter().rposition(|o| *o == FrameOrigin::Hook).map_or(0, |i| i + 1);
    let start = origins[after_hook..]
        .iter()
        .position(|o| !matches!(o, FrameOrigin::Blockcop | FrameOrigin::Unknown))
        .map_or(origins.len(), |i| after_hook + i);
    let scope_poll =
        origins[start..].iter().position(|o| *o == FrameOrigin::Blockcop).map_or(origins.len(), |i| start + i);
    // Past the outermost user frame there is only the runtime and the framework: leave them out.
    let end =
        origins[start..scope_poll].iter().rposition(|o| *o == FrameOrigin::User).map_or(scope_poll, |i| start + i + 1);
    let stack: Vec<Frame> = frames[start..end]
        .iter()
        .map(|f| Frame { file: f.file.as_deref().map(|p| relative(p, root)), ..f.clone() })
        .collect();
    let user = origins[start..end].iter().position(|o| *o == FrameOrigin::User);
    let call_site = match user {
        Some(i) => stack[i].location().map_or(CallSite::Unknown, CallSite::Source),
        None if frames.iter().all(|f| f.file.is_none()) && !frames.is_empty() => CallSite::NoDebugInfo,
        None => CallSite::Unknown,
    };
    let (blocking_api, blocking_api_crate) = match user {
        Some(0) | None => (None, None),
        Some(i) => {
            let frame = &frames[start + i - 1];
            match origins[start + i - 1] {
                FrameOrigin::Std => (frame.function.clone(), Some("std".to_owned())),
                FrameOrigin::Dependency => (frame.function.clone(), dependency_crate(frame)),
                _ => (None, None),
            }
        }
    };
    let mut call_chain: Vec<Frame> = Vec::new();
    for (frame, origin) in stack.iter().zip(&origins[start..end]).rev() {
        if *origin != FrameOrigin::User || frame.location().is_none() {
            continue;
        }
        // Of consecutive frames at one line, the innermost names the function: an async fn's body, not its poll.
        match call_chain.last_mut() {
            Some(last) if last.file == frame.file && last.line == frame.line => *last = frame.clone(),
            _ => call_chain.push(frame.clone()),
        }
    }
    Selection { call_site, blocking_api, blocking_api_crate, stack, call_chain }
}

/// The crate a dependency frame belongs to: from its path under the cargo home (`registry/src/<index>/<crate>-<ver>/`
/// or `git/checkouts/<crate>-<hash>/`), else the first segment of its function path.
fn dependency_crate(frame: &Frame) -> Option<String> {
    let file = frame.file.as_deref().unwrap_or("");
    let from_dir = |dir: &str| {
        // `tokio-1.54.1` -> `tokio`, `sqlite-3f2a9c` -> `sqlite`: cut at the last `-` that precedes a digit or hash.
        dir.rsplit_once('-').map_or(dir, |(name, _)| name).to_owned()
    };
    if let Some((_, rest)) = file.split_once("/registry/src/") {
        return rest.split('/').nth(1).map(from_dir);
    }
    if let Some((_, rest)) = file.split_once("/git/checkouts/") {
        return rest.split('/').next().map(from_dir);
    }
    let name = frame.function.as_deref()?.trim_start_matches('<');
    name.split("::").next().map(str::to_owned)
}

/// Crates that implement locks rather than hold them: a wait inside them belongs to whoever called them.
const LOCK_IMPLEMENTATIONS: &[&str] = &["parking_lot::", "parking_lot_core::", "lock_api::"];

/// Whether a lock wait (or a slow poll's stack sample) is tokio's own: the first frame past the
/// hook that is not std, libc, blockcop or a lock implementation (parking_lot, which tokio's `parking_lot` feature
/// uses) belongs to tokio. tokio's runtime, blocking pool and sync primitives hold their internal locks (and spin
/// on them) for a few instructions; that is not the user's blocking.
pub(crate) fn lock_owned_by_tokio(frames: &[Frame], paths: &Paths) -> bool {
    let origins: Vec<FrameOrigin> = frames.iter().map(|f| classify(f, paths)).collect();
    let after_hook = origins.iter().rposition(|o| *o == FrameOrigin::Hook).map_or(0, |i| i + 1);
    let lock_implementation = |f: &Frame| {
        let name = f.function.as_deref().unwrap_or("");
        let name = name.strip_prefix('<').unwrap_or(name);
        LOCK_IMPLEMENTATIONS.iter().any(|p| name.starts_with(p))
    };
    let owner = (after_hook..frames.len()).find(|&i| {
        !matches!(origins[i], FrameOrigin::Std | FrameOrigin::Unknown | FrameOrigin::Blockcop)
            && !lock_implementation(&frames[i])
    });
    owner.is_some_and(|i| {
        let name = frames[i].function.as_deref().unwrap_or("");
        origins[i] == FrameOrigin::Dependency && (name.starts_with("tokio::") || name.starts_with("<tokio::"))
    })
}

/// Whether a lock wait is for std's stdout or stderr lock: a std `stdio` frame lies between the hook and the first
/// frame outside std and libc. Console output is trivial, and so is waiting for its lock.
pub(crate) fn waits_for_stdio(frames: &[Frame], paths: &Paths) -> bool {
    let origins: Vec<FrameOrigin> = frames.iter().map(|f| classify(f, paths)).collect();
    let after_hook = origins.iter().rposition(|o| *o == FrameOrigin::Hook).map_or(0, |i| i + 1);
    frames[after_hook..]
        .iter()
        .zip(&origins[after_hook..])
        .take_while(|(_, o)| matches!(o, FrameOrigin::Std | FrameOrigin::Unknown))
        .any(|(f, _)| f.function.as_deref().is_some_and(|n| n.contains("std::io::stdio::")))
}

/// `file` relative to the workspace `root` when it lies inside it, otherwise unchanged.
pub(crate) fn relative(file: &str, root: Option<&Path>) -> String {
    root.and_then(|r| Path::new(file).strip_prefix(r).ok())
        .map_or_else(|| file.to_owned(), |p| p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: Option<&str>, line: u32) -> Frame {
        Frame {
            function: Some(function.to_owned()),
            file: file.map(str::to_owned),
            line: file.map(|_| line),
            column: file.map(|_| 5),
        }
    }

    fn paths() -> Paths {
        Paths {
            cargo_home: Some("/home/dev/.cargo".into()),
            blockcop_src: "/work/blockcop/src/".into(),
            workspace_root: Some("/work/app".into()),
        }
    }

    const ROOT: &str = "/work/app";

    fn hook() -> Vec<Frame> {
        vec![
            frame(
                "backtrace::backtrace::trace_unsynchronized",
                Some("/home/dev/.cargo/registry/src/index.crates.io-1/backtrace-0.3.77/src/backtrace/mod.rs"),
                66,
            ),
            frame("std::panicking::try", Some("/rustc/abc/library/std/src/panicking.rs"), 500),
            frame(
                "blockcop::capture::intercept::hooks::record",
                Some("/work/blockcop/src/capture/intercept/hooks.rs"),
                200,
            ),
            frame("clock_nanosleep", Some("/work/blockcop/src/capture/intercept/hooks.rs"), 90),
        ]
    }

    fn poll_tail() -> Vec<Frame> {
        vec![
            frame(
                "<blockcop::Instrumented<F> as core::future::Future>::poll",
                Some("/work/blockcop/src/instrument.rs"),
                70,
            ),
            frame(
                "tokio::runtime::task::core::Core::poll",
                Some("/home/dev/.cargo/registry/src/index.crates.io-1/tokio-1.54.1/src/runtime/task/core.rs"),
                300,
            ),
        ]
    }

    #[test]
    fn call_site_skips_std_and_names_the_std_api() {
        let mut frames = hook();
        frames.extend([
            frame(
                "std::sys::pal::unix::thread::Thread::sleep",
                Some("/rustc/abc/library/std/src/sys/pal/unix/thread.rs"),
                10,
            ),
            frame("std::thread::sleep", Some("/rustc/abc/library/std/src/thread/mod.rs"), 20),
            frame("app::handlers::retry::{{closure}}", Some("/work/app/src/handlers.rs"), 88),
            frame("app::main::{{closure}}", Some("/work/app/src/main.rs"), 12),
        ]);
        frames.extend(poll_tail());
        let s = select(&frames, &paths(), Some(Path::new(ROOT)));
        assert_eq!(s.call_site.to_string(), "src/handlers.rs:88:5");
        assert_eq!(s.blocking_api.as_deref(), Some("std::thread::sleep"));
        assert_eq!(s.blocking_api_crate.as_deref(), Some("std"));
        // Trimmed: no blockcop frames, nothing past the scope's poll.
        assert_eq!(s.stack.len(), 4);
        assert_eq!(s.stack[0].function.as_deref(), Some("std::sys::pal::unix::thread::Thread::sleep"));
    }

    #[test]
    fn call_chain_runs_from_the_outermost_user_frame_to_the_call_site() {
        let mut frames = hook();
        frames.extend([
            frame("std::fs::read_to_string", Some("/rustc/abc/library/std/src/fs.rs"), 10),
            frame("app::util::read_config", Some("/work/app/src/util.rs"), 7),
            frame("app::util::load", Some("/work/app/src/util.rs"), 15),
            frame("tower::util::map::Map::call", Some("/home/dev/.cargo/registry/src/i/tower-0.5.2/src/map.rs"), 3),
            frame("app::handlers::index::{{closure}}", Some("/work/app/src/handlers.rs"), 40),
            frame("<app::handlers::index::{{closure}} as Future>::poll", Some("/work/app/src/handlers.rs"), 40),
        ]);
        frames.extend(poll_tail());
        let s = select(&frames, &paths(), Some(Path::new(ROOT)));
        let chain: Vec<String> = s.call_chain.iter().map(|f| f.location().expect("a location").to_string()).collect();
        // Outermost first, the call site last; the dependency between is not the user's; the handler once.
        assert_eq!(chain, ["src/handlers.rs:40:5", "src/util.rs:15:5", "src/util.rs:7:5"]);
        assert_eq!(chain.last().map(String::as_str), Some(s.call_site.to_string().as_str()));
        assert_eq!(s.call_chain[0].function.as_deref(), Some("app::handlers::index::{{closure}}"));
    }

    #[test]
    fn blocking_call_inside_a_dependency_points_at_the_users_call() {
        let mut frames = hook();
        frames.extend([
            frame("std::fs::File::open", Some("/rustc/abc/library/std/src/fs.rs"), 10),
            frame(
                "sqlite::conn::open",
                Some("/home/dev/.cargo/registry/src/index.crates.io-1/sqlite-0.3.0/src/conn.rs"),
                44,
            ),
            frame("sqlite::Db::query", Some("/home/dev/.cargo/git/checkouts/sqlite-1/src/lib.rs"), 9),
            frame("app::store::load", Some("/work/app/src/store.rs"), 31),
        ]);
        frames.extend(poll_tail());
        let s = select(&frames, &paths(), Some(Path::new(ROOT)));
        assert_eq!(s.call_site.to_string(), "src/store.rs:31:5");
        assert_eq!(s.blocking_api.as_deref(), Some("sqlite::Db::query"));
        assert_eq!(s.blocking_api_crate.as_deref(), Some("sqlite"));
    }

    #[test]
    fn user_helper_two_calls_deep_is_the_call_site() {
        let mut frames = hook();
        frames.extend([
            frame("std::fs::read_to_string", Some("/rustc/abc/library/std/src/fs.rs"), 10),
            frame("app::util::read_config", Some("/work/app/src/util.rs"), 7),
            frame("app::util::load", Some("/work/app/src/util.rs"), 15),
            frame("app::handlers::index::{{closure}}", Some("/work/app/src/handlers.rs"), 40),
        ]);
        frames.extend(poll_tail());
        let s = select(&frames, &paths(), Some(Path::new(ROOT)));
        assert_eq!(s.call_site.to_string(), "src/util.rs:7:5");
        assert_eq!(s.blocking_api.as_deref(), Some("std::fs::read_to_string"));
    }

    #[test]
    fn std_frames_without_files_are_still_std_and_libc_is_skipped() {
        let mut frames = vec![frame("__GI___clock_nanosleep", None, 0)];
        frames.extend(hook());
        frames.extend([frame("std::thread::sleep", None, 0), frame("app::run", Some("/elsewhere/app/src/lib.rs"), 3)]);
        let s = select(&frames, &paths(), Some(Path::new(ROOT)));
        assert_eq!(s.call_site.to_string(), "/elsewhere/app/src/lib.rs:3:5");
        assert_eq!(s.blocking_api.as_deref(), Some("std::thread::sleep"));
    }

    #[test]
    fn c_code_outside_the_workspace_is_not_the_users() {
        let mut frames = hook();
        frames.extend([
            frame("__GI___clock_gettime", Some("./time/../sysdeps/unix/sysv/linux/clock_gettime.c"), 42),
            frame("cpu_time::ThreadTime::now", Some("/home/dev/.cargo/registry/src/i/cpu-time-1.0.0/src/lib.rs"), 9),
            frame("app::hash", Some("/work/app/src/hash.rs"), 12),
        ]);
        let s = select(&frames, &paths(), Some(Path::new(ROOT)));
        assert_eq!(s.call_site.to_string(), "src/hash.rs:12:5");
        assert_eq!(s.blocking_api_crate.as_deref(), Some("cpu-time"));
        // The user's own C code (built with `cc`, inside the workspace) is the user's.
        let frames = vec![frame("native_sum", Some("/work/app/native/sum.c"), 3)];
        assert_eq!(select(&frames, &paths(), Some(Path::new(ROOT))).call_site.to_string(), "native/sum.c:3:5");
    }

    #[test]
    fn tokio_internal_lock_waits_are_tokios_not_the_users() {
        let tokio_file = Some("/home/dev/.cargo/registry/src/x/tokio-1.54.1/src/runtime/blocking/pool.rs");
        let mut frames = hook();
        frames.extend([
            frame(
                "std::sys::sync::mutex::futex::Mutex::lock_contended",
                Some("/rustc/abc/library/std/src/sys/sync/mutex/futex.rs"),
                9,
            ),
            frame("tokio::runtime::blocking::pool::Spawner::spawn_task", tokio_file, 40),
            frame("app::handlers::create::{{closure}}", Some("/work/app/src/handlers.rs"), 159),
        ]);
        frames.extend(poll_tail());
        assert!(lock_owned_by_tokio(&frames, &paths()));
        // The user's own std Mutex is the user's, even with tokio further down the stack.
        let mut frames = hook();
        frames.extend([
            frame(
                "std::sys::sync::mutex::futex::Mutex::lock_contended",
                Some("/rustc/abc/library/std/src/sys/sync/mutex/futex.rs"),
                9,
            ),
            frame("app::store::save", Some("/work/app/src/store.rs"), 12),
        ]);
        frames.extend(poll_tail());
        assert!(!lock_owned_by_tokio(&frames, &paths()));
        // tokio built with its `parking_lot` feature: the wait is inside parking_lot, the lock is tokio's.
        let pl = |krate: &str| format!("/home/dev/.cargo/registry/src/x/{krate}-0.9.12/src/lib.rs");
        let mut frames = hook();
        frames.extend([
            frame("parking_lot_core::thread_parker::imp::ThreadParker::futex_wait", Some(&pl("parking_lot_core")), 1),
            frame("parking_lot_core::word_lock::WordLock::lock_slow", Some(&pl("parking_lot_core")), 2),
            frame("<lock_api::mutex::Mutex<R, T>>::lock", Some(&pl("lock_api")), 3),
            frame("tokio::loom::std::parking_lot::Mutex<T>::lock", tokio_file, 4),
            frame("app::handlers::create::{{closure}}", Some("/work/app/src/handlers.rs"), 159),
        ]);
        frames.extend(poll_tail());
        assert!(lock_owned_by_tokio(&frames, &paths()));
        // The user's own parking_lot Mutex stays the user's.
        let mut frames = hook();
        frames.extend([
            frame("parking_lot_core::word_lock::WordLock::lock_slow", Some(&pl("parking_lot_core")), 2),
            frame("parking_lot::raw_mutex::RawMutex::lock_slow", Some(&pl("parking_lot")), 3),
            frame("app::store::save", Some("/work/app/src/store.rs"), 12),
        ]);
        frames.extend(poll_tail());
        assert!(!lock_owned_by_tokio(&frames, &paths()));
    }

    #[test]
    fn no_debug_info_is_said_not_invented() {
        let frames = vec![frame("read", None, 0), frame("app::run", None, 0), frame("main", None, 0)];
        let s = select(&frames, &paths(), None);
        assert_eq!(s.call_site, CallSite::NoDebugInfo);
        assert_eq!(s.call_site.to_string(), "no debug info");
        assert_eq!(s.blocking_api, None);
    }

    #[test]
    fn runtime_only_stack_has_unknown_site() {
        let mut frames = hook();
        frames.extend(poll_tail());
        frames.insert(
            2,
            frame(
                "tokio::sync::notify::Notify::notify_one",
                Some("/home/dev/.cargo/registry/src/x/tokio-1/src/sync/notify.rs"),
                5,
            ),
        );
        let s = select(&frames, &paths(), None);
        assert_eq!(s.call_site, CallSite::Unknown);
    }
}
