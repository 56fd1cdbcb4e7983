//! Reports: a violation rendered the way `rustc` renders a diagnostic ([`TextRenderer`]), the JSON Lines run files
//! every process with blockcop enabled leaves behind ([`run`]), and their aggregation.

#[cfg(feature = "cli")]
pub mod cli;
pub mod run;
#[cfg(feature = "cli")]
pub mod sarif;
mod summary;
mod text;

pub use summary::{BaselineComparison, BaselineState, Group, GroupBy, MAX_TARGETS_LISTED, Summary};
pub(crate) use text::write_failing_calls;
pub use text::{Style, TextRenderer};
