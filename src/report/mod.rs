//! Reports: a violation rendered the way `rustc` renders a diagnostic ([`TextRenderer`]), the JSON Lines run files
//! every process with blockcop enabled leaves behind ([`run`]), and their aggregation.

#[cfg(feature = "cli")]
pub mod cli;
pub mod run;
#[cfg(feature = "cli")]
pub mod sarif;
mod summary;
mod text;

pub use summary::{Group, Summary};
pub(crate) use text::format_duration;
pub use text::{Style, TextRenderer};
