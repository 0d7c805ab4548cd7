//! Simulated network (filled in later).
