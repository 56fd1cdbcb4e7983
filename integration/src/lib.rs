//! Integration tests live in `tests/`; this library holds what they share with the tools in `src/bin`.

mod busy_loops;

pub use busy_loops::BusyLoops;
