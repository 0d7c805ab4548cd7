//! The one unit style of everything the user reads (menu, progress line,
//! page): binary units, `MiB` and `MiB/s`, scaling through KiB and GiB.
//! The page's script mirrors these three functions.

use crate::protocol::message::human_bytes;

/// A byte count: `512 B`, `1.5 KiB`, `111.0 MiB`, `2.0 GiB`.
pub fn bytes(n: u64) -> String {
    human_bytes(n)
}

/// A rate: `80.2 MiB/s`, `0 B/s`.
pub fn rate(bytes_per_sec: u64) -> String {
    format!("{}/s", human_bytes(bytes_per_sec))
}

/// A time left: `7 s`, `2 min 05 s`, `1 h 02 min`.
pub fn eta(secs: u64) -> String {
    if secs < 60 {
        format!("{secs} s")
    } else if secs < 3600 {
        format!("{} min {:02} s", secs / 60, secs % 60)
    } else {
        format!("{} h {:02} min", secs / 3600, secs % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_scale_through_binary_units_with_one_decimal() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(111 * 1024 * 1024), "111.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn a_rate_is_bytes_per_second() {
        assert_eq!(rate(0), "0 B/s");
        assert_eq!(rate(84_100_000), "80.2 MiB/s");
    }

    #[test]
    fn an_eta_reads_in_seconds_minutes_or_hours() {
        assert_eq!(eta(7), "7 s");
        assert_eq!(eta(125), "2 min 05 s");
        assert_eq!(eta(3720), "1 h 02 min");
    }
}
