//! The sans-IO peer.
pub mod view;
