//! One way to write sizes, rates and durations everywhere (menu, progress
//! line, page): binary units, `KiB`, `MiB`, `GiB`, `MiB/s`. The page's
//! script mirrors these three functions (`humanBytes`, `unitRate`,
//! `unitEta` in src/http/page.js).

/// A byte count: `512 B`, `1.5 KiB`, `111.0 MiB`, `2.0 GiB` (one decimal,
/// rounded half up, in the largest unit that keeps it under 1024, so
/// never `1024.0 KiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let n = u128::from(n);
    let mut divisor: u128 = 1;
    let mut shown = String::new();
    for unit in UNITS {
        divisor *= 1024;
        // round(n * 10 / divisor), half up, in integers.
        let tenths = (n * 20 + divisor) / (2 * divisor);
        shown = format!("{}.{} {unit}", tenths / 10, tenths % 10);
        if tenths < 10_240 {
            break;
        }
    }
    shown
}

/// A rate: [`bytes`] per second, `1.5 MiB/s`.
pub fn rate(bytes_per_sec: u64) -> String {
    format!("{}/s", bytes(bytes_per_sec))
}

/// A duration left: `45s`, `3m 07s`, `2h 05m`.
pub fn eta(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_scale_by_1024_with_binary_unit_names() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(111 * 1024 * 1024), "111.0 MiB");
        assert_eq!(bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(bytes(2 * 1024 * 1024 * 1024), "2.0 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn rates_are_bytes_per_second() {
        assert_eq!(rate(0), "0 B/s");
        assert_eq!(rate(3 * 1024 * 1024 / 2), "1.5 MiB/s");
    }

    #[test]
    fn etas_read_as_seconds_minutes_or_hours() {
        assert_eq!(eta(0), "0s");
        assert_eq!(eta(59), "59s");
        assert_eq!(eta(187), "3m 07s");
        assert_eq!(eta(7500), "2h 05m");
    }
}
