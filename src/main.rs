//! `peershare <peer_id> <host> <p2p_port> <http_port>`: parse the arguments,
//! set up logging, run the loop. Only this file decides to exit.

use clap::Parser;
use peershare::cli::args::Args;
use simplelog::{ColorChoice, ConfigBuilder, TermLogger, TerminalMode, WriteLogger};
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .build();
    let logger_ok = match &args.log_file {
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => WriteLogger::init(args.log_level, config, f).is_ok(),
            Err(e) => {
                eprintln!("peershare: cannot open log file {}: {e}", path.display());
                return ExitCode::from(1);
            }
        },
        None => {
            // Colour only on a terminal: redirected logs stay plain text.
            let color = if std::io::stderr().is_terminal() {
                ColorChoice::Auto
            } else {
                ColorChoice::Never
            };
            TermLogger::init(args.log_level, config, TerminalMode::Stderr, color).is_ok()
        }
    };
    if !logger_ok {
        eprintln!("peershare: logging could not be set up");
    }
    match peershare::net::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peershare: {e}");
            ExitCode::from(1)
        }
    }
}
