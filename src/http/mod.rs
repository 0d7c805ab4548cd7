//! The stats page.
