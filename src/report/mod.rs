//! Reports for people: a violation rendered the way `rustc` renders a diagnostic, with the source line, what
//! blocked, where it came through and how to fix it.

mod text;

pub use text::{Style, TextRenderer};
