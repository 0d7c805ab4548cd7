//! One way to write sizes, rates and durations everywhere (menu, progress
//! line, page): binary units, `KiB`, `MiB`, `GiB`, `MiB/s`. The page's
//! script mirrors these three functions.

/// A byte count: `512 B`, `1.5 KiB`, `111.0 MiB`, `2.00 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    // GiB and up keep two decimals: a tenth of a GiB is 100 MiB.
    if unit >= 2 {
        format!("{value:.2} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
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
        assert_eq!(bytes(2 * 1024 * 1024 * 1024), "2.00 GiB");
        assert_eq!(bytes(u64::MAX), "16384.00 PiB");
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
