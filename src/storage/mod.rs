//! The storage folder.
