//! SIGTERM and SIGINT end the process within [`SIGNAL_EXIT_LIMIT`],
//! whatever the loop is doing.
//!
//! The loop sees the signal through its poll (signal-hook-mio) and runs the
//! orderly exit: a bounded drain of received files, the final metadata
//! write. Two things here make the bound hold even when that exit is slow
//! (an overloaded machine, a disk that takes seconds to fsync, a long step
//! of the loop before it polls again): a second SIGTERM/SIGINT ends the
//! process at once, and a watchdog thread ends it [`SIGNAL_EXIT_LIMIT`]
//! after the first. Ending it early loses nothing on disk: metadata.json is
//! only ever replaced by a rename (old or new, never half written), and
//! temp files left behind are removed at the next start.

use log::error;
use signal_hook::consts::{SIGINT, SIGTERM};
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Longest time from the first SIGTERM/SIGINT to the end of the process.
/// Under the 2 s the peer promises, with room for the kernel to tear the
/// process down.
pub const SIGNAL_EXIT_LIMIT: Duration = Duration::from_millis(1700);

/// Exit status after a second signal cut the orderly exit short.
pub const SECOND_SIGNAL_STATUS: i32 = 1;

/// Installs the second-signal exit and starts the watchdog thread. Call
/// once, before the loop registers its own handling of the signals.
pub fn install() -> io::Result<()> {
    let seen = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Order matters (signal-hook's documented pattern): the conditional
        // exit runs first, so the first signal only sets `seen` and the
        // second one exits.
        signal_hook::flag::register_conditional_shutdown(sig, SECOND_SIGNAL_STATUS, seen.clone())?;
        signal_hook::flag::register(sig, seen.clone())?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    thread::Builder::new()
        .name("exit-watchdog".into())
        .spawn(move || {
            if signals.forever().next().is_none() {
                return;
            }
            thread::sleep(SIGNAL_EXIT_LIMIT);
            error!(
                "exit took longer than {:.1} s after the signal; leaving now \
                 (metadata.json keeps its last complete write)",
                SIGNAL_EXIT_LIMIT.as_secs_f64()
            );
            log::logger().flush();
            signal_hook::low_level::exit(0);
        })?;
    Ok(())
}
