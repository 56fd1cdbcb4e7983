//! Integration tests live in `tests/`; this library holds what they share with the tools in `src/bin`.

mod busy_loops;

pub use busy_loops::BusyLoops;

/// Returns from the test, saying so on stderr, when blockcop does not interpose libc on this platform (Linux with
/// glibc and the `intercept` feature are needed): a test of the interposer is skipped there, and says it was, rather
/// than passing silently.
#[macro_export]
macro_rules! skip_unless_interposing {
    () => {
        if !blockcop::is_interposing() {
            eprintln!(
                "skipped at {}:{}: blockcop does not interpose libc here (it needs Linux, glibc and the `intercept` \
                 feature)",
                file!(),
                line!()
            );
            return;
        }
    };
}
