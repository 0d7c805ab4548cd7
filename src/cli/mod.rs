//! Arguments and menu.
