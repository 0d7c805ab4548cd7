//! `peershare <peer_id> <host> <p2p_port> <http_port>`: parse the arguments,
//! set up logging, run the loop. Only this file decides to exit.

use peershare::cli::args::Args;
use peershare::cli::escape::EscapingWriter;
use simplelog::{ConfigBuilder, WriteLogger};
use std::io::{IsTerminal, LineWriter};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::try_parse_with_env(std::env::args_os()).unwrap_or_else(|e| e.exit());
    if let Err(why) = args.check() {
        use clap::CommandFactory;
        Args::command()
            .error(clap::error::ErrorKind::ArgumentConflict, why)
            .exit();
    }
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .build();
    // Every record goes through the escaping sink: names from the network
    // can't drive the terminal or forge a log line. Plain text, no colour.
    let logger_ok = match &args.log_file {
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => WriteLogger::init(args.log_level, config, EscapingWriter::new(f)).is_ok(),
            Err(e) => {
                eprintln!("peershare: cannot open log file {}: {e}", path.display());
                return ExitCode::from(1);
            }
        },
        None => {
            let stderr = LineWriter::new(std::io::stderr());
            let sink = if std::io::stderr().is_terminal() {
                EscapingWriter::on_terminal(stderr)
            } else {
                EscapingWriter::new(stderr)
            };
            WriteLogger::init(args.log_level, config, sink).is_ok()
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
