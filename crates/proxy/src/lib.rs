//! Placeholder; filled in by the data-plane issue.

pub mod identity;
