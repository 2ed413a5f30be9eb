//! Placeholder; filled in by the data-plane issue.
