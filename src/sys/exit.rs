//! Running a function at process exit (`atexit`).

/// Runs `f` when the process exits (`exit()` or returning from `main`), on the exiting thread, while other threads
/// still run. Only the first function registered is kept (blockcop has one: flushing the run file).
pub(crate) fn at_exit(f: fn()) {
    static AT_EXIT: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();
    extern "C" fn run_at_exit() {
        // Never unwind out of an extern "C" function.
        let _ = std::panic::catch_unwind(|| {
            if let Some(f) = AT_EXIT.get() {
                f();
            }
        });
    }
    if AT_EXIT.set(f).is_ok() {
        #[cfg(unix)]
        // SAFETY: registers a function that takes no arguments, touches only 'static state and never unwinds.
        unsafe {
            libc::atexit(run_at_exit);
        }
    }
}
