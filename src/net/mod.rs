//! The one mio event loop.
