//! Command-line arguments (clap derive: each doc comment is its `--help`).

use clap::builder::BoolishValueParser;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use std::path::PathBuf;
use std::time::Duration;

/// The network's well-known (bootstrap) peers, run by its operators.
pub const DEFAULT_WELL_KNOWN: [&str; 4] = [
    "silicon.cs.umanitoba.ca:8999",
    "eagle.cs.umanitoba.ca:8999",
    "grebe.cs.umanitoba.ca:8999",
    "hawk.cs.umanitoba.ca:8999",
];

/// A peer for the gossip file-sharing network.
///
/// Every option can also be set from the environment (`PEERSHARE_<OPTION>`,
/// shown below); an option on the command line wins over the environment.
#[derive(Parser, Debug, Clone)]
#[command(name = "peershare", version, about)]
pub struct Args {
    /// This peer's id on the network (any string).
    pub peer_id: String,
    /// Address advertised in GOSSIP (a name or an IPv4 literal); the peer
    /// server listens there too unless --bind says otherwise.
    pub host: String,
    /// TCP port advertised for the peer protocol, and listened on unless
    /// --bind (0: pick a free one; the real port is printed).
    pub p2p_port: u16,
    /// TCP port for the stats page (0: pick a free one).
    pub http_port: u16,
    /// Address the stats page and its API listen on (0.0.0.0: every
    /// interface; it has no password).
    #[arg(
        long,
        env = "PEERSHARE_HTTP_HOST",
        default_value = "127.0.0.1",
        value_name = "HOST"
    )]
    pub http_host: String,
    /// Listen for peers on this address instead of <host> <p2p_port> (port
    /// forwarding, containers, a proxy in front); GOSSIP still advertises
    /// <host> <p2p_port>, or the bound port when <p2p_port> is 0.
    #[arg(long, env = "PEERSHARE_BIND", value_name = "HOST:PORT", value_parser = parse_bind)]
    pub bind: Option<(String, u16)>,
    /// Storage folder [default: storage_<peer_id> in the current folder].
    #[arg(long, env = "PEERSHARE_STORAGE_DIR", value_name = "DIR")]
    pub storage_dir: Option<PathBuf>,
    /// A bootstrap peer as HOST:PORT; repeatable, or comma-separated [default: the network's four well-known hosts on port 8999].
    #[arg(long = "well-known", env = "PEERSHARE_WELL_KNOWN", value_name = "HOST:PORT", value_delimiter = ',', value_parser = parse_host_port)]
    pub well_known: Vec<(String, u16)>,
    /// Start alone: no bootstrap peers (in the environment: 1/0, true/false).
    #[arg(long, env = "PEERSHARE_NO_WELL_KNOWN", value_parser = BoolishValueParser::new())]
    pub no_well_known: bool,
    /// Seconds between gossip rounds (fractions allowed).
    #[arg(long, env = "PEERSHARE_GOSSIP_INTERVAL", default_value = "30", value_name = "SECS", value_parser = gossip_secs)]
    pub gossip_interval: Duration,
    /// Seconds of silence after which a peer is dropped.
    #[arg(long, env = "PEERSHARE_PEER_TIMEOUT", default_value = "60", value_name = "SECS", value_parser = peer_timeout_secs)]
    pub peer_timeout: Duration,
    /// Seconds allowed for a download source to accept the connection.
    #[arg(long, env = "PEERSHARE_CONNECT_TIMEOUT", default_value = "5", value_name = "SECS", value_parser = transfer_secs)]
    pub connect_timeout: Duration,
    /// Seconds without a byte after which a transfer (either way) gives up.
    #[arg(long, env = "PEERSHARE_IDLE_TIMEOUT", default_value = "10", value_name = "SECS", value_parser = transfer_secs)]
    pub idle_timeout: Duration,
    /// Largest file a peer may send us, in bytes.
    #[arg(long, env = "PEERSHARE_MAX_FILE_SIZE", default_value_t = crate::protocol::DEFAULT_MAX_FILE_SIZE, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..=MAX_FILE_SIZE_LIMIT))]
    pub max_file_size: u64,
    /// Files to fetch in the background at start (0 turns it off).
    #[arg(long, env = "PEERSHARE_AUTO_FETCH", default_value_t = 3, value_name = "N", value_parser = auto_fetch_count)]
    pub auto_fetch: usize,
    /// Log level: error, warn, info, debug or trace.
    #[arg(
        long,
        env = "PEERSHARE_LOG_LEVEL",
        default_value = "info",
        value_name = "LEVEL"
    )]
    pub log_level: log::LevelFilter,
    /// Write the log to this file instead of stderr.
    #[arg(long, env = "PEERSHARE_LOG_FILE", value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Also serve, list and announce copies whose bytes match their id under
    /// no timestamp spelling (off: such a copy stays with the user who asked).
    #[arg(long, env = "PEERSHARE_SHARE_UNVERIFIED", value_parser = BoolishValueParser::new())]
    pub share_unverified: bool,
    /// Seed for the peer's random choices [default: from the clock].
    #[arg(long, env = "PEERSHARE_SEED", value_name = "N")]
    pub seed: Option<u64>,
}

impl Args {
    /// The storage folder to use.
    pub fn storage_dir(&self) -> PathBuf {
        self.storage_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("storage_{}", self.peer_id)))
    }

    /// The bootstrap peers to use.
    pub fn well_known(&self) -> Vec<(String, u16)> {
        if self.no_well_known {
            return Vec::new();
        }
        if !self.well_known.is_empty() {
            return self.well_known.clone();
        }
        DEFAULT_WELL_KNOWN
            .iter()
            .filter_map(|s| parse_host_port(s).ok())
            .collect()
    }
}

impl Args {
    /// Where the peer server listens: `--bind`, else `<host> <p2p_port>`.
    pub fn p2p_listen(&self) -> (String, u16) {
        self.bind
            .clone()
            .unwrap_or_else(|| (self.host.clone(), self.p2p_port))
    }

    /// The port GOSSIP advertises, given the port the listener got:
    /// `<p2p_port>`, or the bound one when `<p2p_port>` is 0 (with or
    /// without `--bind`), so `0` always means "the port we really got".
    pub fn advertised_port(&self, bound: u16) -> u16 {
        if self.p2p_port == 0 {
            bound
        } else {
            self.p2p_port
        }
    }

    /// Parses the command line and the environment (`PEERSHARE_<OPTION>`).
    /// An option on the command line wins over the environment, also over
    /// one it excludes: `--well-known` given here beats
    /// `PEERSHARE_NO_WELL_KNOWN=1` from a unit file, and the other way round.
    pub fn try_parse_with_env<I, T>(argv: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut cmd = Args::command();
        let m = cmd.try_get_matches_from_mut(argv)?;
        let mut a = Args::from_arg_matches(&m)?;
        if a.no_well_known && !a.well_known.is_empty() {
            match (
                m.value_source("no_well_known"),
                m.value_source("well_known"),
            ) {
                (Some(ValueSource::EnvVariable), Some(ValueSource::CommandLine)) => {
                    a.no_well_known = false
                }
                (Some(ValueSource::CommandLine), Some(ValueSource::EnvVariable)) => {
                    a.well_known.clear()
                }
                _ => {
                    return Err(cmd.error(
                        clap::error::ErrorKind::ArgumentConflict,
                        "--no-well-known and --well-known exclude each other",
                    ))
                }
            }
        }
        Ok(a)
    }
}

/// `--bind HOST:PORT`: a non-empty host and any port (0: a free one).
pub fn parse_bind(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number"))?;
    if host.is_empty() {
        return Err(format!("{s:?} is not HOST:PORT"));
    }
    Ok((host.to_string(), port))
}

/// `HOST:PORT` with a non-empty host and a port in 1..=65535.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    match parse_bind(s)? {
        (_, 0) => Err(format!("{s:?} is not HOST:PORT")),
        ok => Ok(ok),
    }
}

/// Largest `--max-file-size` accepted: 1 TiB.
pub const MAX_FILE_SIZE_LIMIT: u64 = 1 << 40;
/// Most files `--auto-fetch` may ask for.
pub const MAX_AUTO_FETCH: usize = 100;

/// Seconds as a positive decimal (`0.5`, `30`).
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v < 1e9) {
        return Err(format!("{s:?} must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Seconds within `[min, max]`; the error names the range.
fn secs_in(s: &str, min: f64, max: f64) -> Result<Duration, String> {
    let d = parse_secs(s)?;
    let v = d.as_secs_f64();
    if v < min || v > max {
        return Err(format!("{s} is out of range: from {min} to {max} seconds"));
    }
    Ok(d)
}

/// A gossip round period: a tenth of a second to an hour (shorter ones
/// would flood every tracked peer with connections).
pub fn gossip_secs(s: &str) -> Result<Duration, String> {
    secs_in(s, 0.1, 3600.0)
}

/// A peer timeout: half a second to a day.
pub fn peer_timeout_secs(s: &str) -> Result<Duration, String> {
    secs_in(s, 0.5, 86_400.0)
}

/// A transfer's connect or idle timeout: 0.1 s to an hour.
pub fn transfer_secs(s: &str) -> Result<Duration, String> {
    secs_in(s, 0.1, 3600.0)
}

/// `--auto-fetch`: 0 to [`MAX_AUTO_FETCH`].
pub fn auto_fetch_count(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|_| format!("{s:?} is not a count"))?;
    if n > MAX_AUTO_FETCH {
        return Err(format!("{n} is out of range: from 0 to {MAX_AUTO_FETCH}"));
    }
    Ok(n)
}

impl Args {
    /// Checks that need more than one option: a peer timeout shorter than
    /// a gossip round would drop every peer between two rounds.
    pub fn check(&self) -> Result<(), String> {
        if self.peer_timeout < self.gossip_interval {
            return Err(format!(
                "--peer-timeout ({} s) must be at least --gossip-interval ({} s)",
                self.peer_timeout.as_secs_f64(),
                self.gossip_interval.as_secs_f64()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_of_seconds_are_accepted_and_nonsense_is_not() {
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("abc").is_err());
        assert!(parse_secs("0").is_err());
    }

    #[test]
    fn timers_and_counts_out_of_range_are_refused_with_the_range() {
        let parse = |extra: &[&str]| {
            let mut v = vec!["peershare", "p1", "h", "1", "2"];
            v.extend_from_slice(extra);
            Args::try_parse_from(v)
        };
        for bad in [
            &["--gossip-interval", "1e-9"][..],
            &["--gossip-interval", "7200"],
            &["--peer-timeout", "0.1"],
            &["--idle-timeout", "0.01"],
            &["--connect-timeout", "4000"],
            &["--max-file-size", "0"],
            &["--auto-fetch", "1000"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
            let text = e.to_string();
            assert!(
                text.contains("range") || text.contains("in "),
                "{bad:?}: {text}"
            );
        }
        assert!(parse(&["--gossip-interval", "0.1", "--idle-timeout", "0.15"]).is_ok());
        let a = parse(&["--gossip-interval", "30", "--peer-timeout", "10"]).unwrap();
        assert!(a.check().unwrap_err().contains("--peer-timeout"));
        assert!(parse(&[]).unwrap().check().is_ok());
    }

    #[test]
    fn both_bootstrap_options_on_the_command_line_are_refused() {
        let e = Args::try_parse_with_env([
            "peershare",
            "p1",
            "h",
            "1",
            "2",
            "--no-well-known",
            "--well-known",
            "127.0.0.1:9",
        ])
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("exclude each other"), "{e}");
    }

    #[test]
    fn every_option_has_its_peershare_env_name_and_positionals_have_none() {
        // Variables the tests set for themselves: no option may read one.
        const TEST_VARS: [&str; 3] = ["PEERSHARE_TEST_", "PEERSHARE_SIM_", "PEERSHARE_CRASH_"];
        let cmd = Args::command();
        let mut named = 0;
        for arg in cmd.get_arguments() {
            let env = arg.get_env().and_then(|e| e.to_str());
            match arg.get_long() {
                Some("help" | "version") | None => {
                    assert!(env.is_none(), "{:?} reads {env:?}", arg.get_id())
                }
                Some(long) => {
                    let want = format!("PEERSHARE_{}", long.replace('-', "_").to_uppercase());
                    assert_eq!(env, Some(want.as_str()), "--{long}");
                    assert!(!TEST_VARS.iter().any(|t| want.starts_with(t)), "{want}");
                    assert_ne!(want, "PEERSHARE_BIN", "the tests' binary path");
                    named += 1;
                }
            }
        }
        assert_eq!(named, 15, "every option counted");
    }

    #[test]
    fn bind_moves_only_the_listener_and_port_zero_advertises_the_bound_port() {
        let parse = |v: &[&str]| Args::try_parse_with_env(v).unwrap();
        let a = parse(&["peershare", "p1", "h.example", "9001", "8001"]);
        assert_eq!(a.p2p_listen(), ("h.example".to_string(), 9001));
        assert_eq!(a.advertised_port(9001), 9001);
        assert_eq!(a.http_host, "127.0.0.1");
        let b = parse(&[
            "peershare",
            "p1",
            "h.example",
            "9001",
            "8001",
            "--bind",
            "0.0.0.0:7000",
        ]);
        assert_eq!(b.p2p_listen(), ("0.0.0.0".to_string(), 7000));
        assert_eq!(b.advertised_port(7000), 9001);
        let c = parse(&[
            "peershare",
            "p1",
            "h.example",
            "0",
            "8001",
            "--bind",
            "0.0.0.0:0",
        ]);
        assert_eq!(c.advertised_port(41234), 41234);
        assert!(
            Args::try_parse_with_env(["peershare", "p", "h", "1", "2", "--bind", ":7"]).is_err()
        );
        assert!(
            Args::try_parse_with_env(["peershare", "p", "h", "1", "2", "--bind", "h"]).is_err()
        );
    }

    #[test]
    fn host_port_pairs_parse() {
        assert_eq!(
            parse_host_port("127.0.0.1:9001"),
            Ok(("127.0.0.1".into(), 9001))
        );
        assert!(parse_host_port("nope").is_err());
        assert!(parse_host_port(":9").is_err());
        assert!(parse_host_port("h:0").is_err());
    }

    #[test]
    fn defaults_match_the_network() {
        let a = Args::try_parse_from(["peershare", "p1", "127.0.0.1", "9001", "8001"]).unwrap();
        assert_eq!(a.gossip_interval, Duration::from_secs(30));
        assert_eq!(a.peer_timeout, Duration::from_secs(60));
        assert_eq!(a.well_known().len(), 4);
        assert_eq!(a.storage_dir(), PathBuf::from("storage_p1"));
        let b =
            Args::try_parse_from(["peershare", "p1", "h", "1", "2", "--no-well-known"]).unwrap();
        assert!(b.well_known().is_empty());
    }
}
