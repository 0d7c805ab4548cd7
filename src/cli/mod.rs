//! The user's side: command-line arguments and the stdin menu.

pub mod args;
pub mod banner;
pub mod console;
pub mod escape;
pub mod menu;
pub mod progress;
