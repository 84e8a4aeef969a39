//! The edge where decisions become words and JSON: tables, the text of
//! reasons and durations, the typed JSON contract, and the `explain` view.
//! Nothing below this layer formats text for people, and it knows no
//! command line: which of its outputs to print is `cli::Format`'s choice.

pub mod explain;
pub mod json;
pub mod table;
pub mod text;
