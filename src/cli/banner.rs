//! The start-up line: where the peer server and the stats page really
//! listen, and what the network is told when that differs (`--bind`).
//! Owns only the wording; the driver binds and prints.

use crate::cli::args::Args;
use std::net::SocketAddr;
use std::path::Path;

/// The line printed once the listeners are bound. Tests and scripts read
/// the ports after `listening on <ip>:` and `http://<ip>:`, so those stay
/// the real bound addresses.
pub fn start_line(
    args: &Args,
    p2p: SocketAddr,
    http: SocketAddr,
    n_files: usize,
    dir: &Path,
) -> String {
    let advertised = format!("{}:{}", args.host, args.advertised_port(p2p.port()));
    let advert = if advertised == p2p.to_string() {
        String::new()
    } else {
        format!(" (advertised as {advertised})")
    };
    let everywhere = if http.ip().is_unspecified() {
        " (every interface)"
    } else {
        ""
    };
    format!(
        "peershare {}: peer server listening on {p2p}{advert}, stats page on http://{http}/{everywhere} ({n_files} files in {})",
        args.peer_id,
        dir.display()
    )
}

/// The page's address with its action token, like Jupyter's: the token
/// is in the fragment, which a browser never sends to the server (so it
/// stays out of request logs); the page's script reads it from there. A
/// page on every interface is shown at 127.0.0.1.
pub fn page_line(http: SocketAddr, token: &str) -> String {
    let host = if http.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), http.port())
    } else {
        http
    };
    format!("page: http://{host}/#token={token}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_line_carries_the_token_in_the_fragment() {
        let at = |a: &str| super::page_line(a.parse().expect("address"), "ab12");
        assert_eq!(
            at("127.0.0.1:8001"),
            "page: http://127.0.0.1:8001/#token=ab12"
        );
        assert_eq!(
            at("0.0.0.0:8001"),
            "page: http://127.0.0.1:8001/#token=ab12"
        );
    }

    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["peershare", "p1", "127.0.0.1", "9001", "8001"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).expect("valid arguments")
    }

    #[test]
    fn the_line_names_the_bound_addresses_and_no_advert_when_they_match() {
        let a = args(&[]);
        let line = start_line(
            &a,
            "127.0.0.1:9001".parse().unwrap(),
            "127.0.0.1:8001".parse().unwrap(),
            2,
            Path::new("storage_p1"),
        );
        assert_eq!(
            line,
            "peershare p1: peer server listening on 127.0.0.1:9001, stats page on http://127.0.0.1:8001/ (2 files in storage_p1)"
        );
    }

    #[test]
    fn a_bound_address_other_than_the_advertised_one_is_said() {
        let a = args(&["--bind", "127.0.0.1:7000", "--http-host", "0.0.0.0"]);
        let line = start_line(
            &a,
            "127.0.0.1:7000".parse().unwrap(),
            "0.0.0.0:8001".parse().unwrap(),
            0,
            Path::new("d"),
        );
        assert!(
            line.contains("listening on 127.0.0.1:7000 (advertised as 127.0.0.1:9001)"),
            "{line}"
        );
        assert!(
            line.contains("http://0.0.0.0:8001/ (every interface)"),
            "{line}"
        );
    }
}
