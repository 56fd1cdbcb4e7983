//! Capture: finding violations while task code runs.
//!
//! - [`intercept`]: the libc interposer and each thread's state (its current scope, its sampler slot);
//! - [`scope`]: scopes, their poll timer and the raw violations they collect;
//! - [`sampler`]: the watchdog, the stack sampler (slow polls) and stuck-poll reports;
//! - [`symbolize`]: turning raw violations into [`Violation`](crate::Violation)s (symbols, allowlist, call site);
//! - [`run_file`]: this process's run file, where finished records go.
//!
//! These parts share one protocol (a thread's state points at its scope and its sampler slot, and each of them reads
//! the thread's state back), so they live in one folder; the modules outside it see only what they export. Capture
//! builds on the model (`catalogue`, `violation`, `config`, `record`, `clock`, `sys`) and knows nothing of the entry
//! points (`instrument`, `runtime`, `layer`) or the outputs (`report`, `testing`).

pub(crate) mod intercept;
pub(crate) mod run_file;
pub(crate) mod sampler;
pub(crate) mod scope;
pub(crate) mod symbolize;
