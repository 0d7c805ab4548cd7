//! How values are shown on the stats page, as plain text (the caller
//! escapes). The inline script (`page.js`) mirrors each function here so the
//! live-updated tables read exactly like the server-rendered ones.

use serde_json::Value;

/// The first second of year 10000: later timestamps get no date.
const MAX_DATED_SECS: f64 = 253_402_300_800.0;

/// Characters of a file id shown in the table (the full id is in the
/// cell's title).
pub(crate) const SHORT_ID_CHARS: usize = 12;

/// A byte count, human-readable: [`crate::units::bytes`].
pub(crate) fn human_bytes(n: u64) -> String {
    crate::units::bytes(n)
}

/// A `file_size` as reported: integer bytes human-readable; any other
/// number is the network's float megabytes, shown as given with ` MB?`.
pub(crate) fn size_text(size: &Value) -> String {
    match size {
        Value::Number(n) => match n.as_u64() {
            Some(bytes) => human_bytes(bytes),
            None => format!("{n} MB?"),
        },
        other => plain_text(other),
    }
}

/// A `file_timestamp` as reported (number or string), shown as given.
pub(crate) fn timestamp_text(ts: &Value) -> String {
    plain_text(ts)
}

/// For a numeric `file_timestamp` (seconds since the epoch), the UTC date
/// and time, `YYYY-MM-DD HH:MM:SS UTC`, to show on hover.
pub(crate) fn timestamp_title(ts: &Value) -> Option<String> {
    let secs = ts.as_f64()?;
    if !(0.0..MAX_DATED_SECS).contains(&secs) {
        return None;
    }
    // In range, so the conversion is exact after flooring.
    let secs = secs.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    Some(format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// A JSON value as text: strings as they are, `null` as nothing, anything
/// else as compact JSON.
pub(crate) fn plain_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The first [`SHORT_ID_CHARS`] characters of an id, with `…` if cut.
pub(crate) fn short_id(id: &str) -> String {
    match id.char_indices().nth(SHORT_ID_CHARS) {
        Some((cut, _)) => format!("{}…", &id[..cut]),
        None => id.to_owned(),
    }
}

/// The "Local copy" column: `yes`, `no` or `yes (unverified)`.
pub(crate) fn local_text(local: bool, verified: bool) -> &'static str {
    match (local, verified) {
        (false, _) => "no",
        (true, true) => "yes",
        (true, false) => "yes (unverified)",
    }
}

/// The "Done" column: bytes so far, and of how many when known.
pub(crate) fn done_text(done: u64, total: Option<u64>) -> String {
    match total {
        Some(0) => format!("{} of {}", human_bytes(done), human_bytes(0)),
        Some(total) => {
            let pct = (u128::from(done) * 100 / u128::from(total)).min(100);
            format!("{} of {} ({pct}%)", human_bytes(done), human_bytes(total))
        }
        None => human_bytes(done),
    }
}

/// The "Rate" column.
pub(crate) fn rate_text(bytes_per_sec: u64) -> String {
    format!("{}/s", human_bytes(bytes_per_sec))
}

/// A transfer's other side; for a download from several holders, each
/// one's share after it: "3 holders at once: a (…) 4.0 MiB at 2.0 MiB/s;
/// b (…) 1.0 MiB at 0.5 MiB/s (dropped)" (as the page's script writes it).
pub(crate) fn peer_text(t: &crate::core::view::TransferView) -> String {
    if t.sources.is_empty() {
        return t.peer.clone();
    }
    let shares: Vec<String> = t
        .sources
        .iter()
        .map(|s| {
            let mut one = format!(
                "{} {} at {}",
                s.peer,
                human_bytes(s.bytes),
                rate_text(s.rate_bytes_per_sec)
            );
            if s.state != "active" {
                one.push_str(&format!(" ({})", s.state));
            }
            one
        })
        .collect();
    format!("{}: {}", t.peer, shares.join("; "))
}

/// `"1 peer"`, `"2 peers"`.
pub(crate) fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// Which files a page shows: `Files 101–200 of 20000`.
pub(crate) fn range_text(offset: usize, shown: usize, total: usize) -> String {
    if total == 0 {
        "No files.".to_string()
    } else if shown == 0 {
        format!(
            "No files from {} on ({total} in all)",
            offset.saturating_add(1)
        )
    } else {
        format!(
            "Files {}–{} of {total}",
            offset.saturating_add(1),
            offset.saturating_add(shown)
        )
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bytes_are_human_readable() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        // 1.25 KiB is a tie: rounds half up, like the script's Math.round.
        assert_eq!(human_bytes(1280), "1.3 KiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_bytes(100_000_000), "95.4 MiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn sizes_distinguish_bytes_from_float_megabytes() {
        let size = |text: &str| size_text(&serde_json::from_str(text).unwrap_or_default());
        assert_eq!(size("1536"), "1.5 KiB");
        assert_eq!(size("2.2"), "2.2 MB?");
        assert_eq!(size("0.0"), "0.0 MB?");
        assert_eq!(size("123.0"), "123.0 MB?");
        assert_eq!(size("2.8e-05"), "2.8e-05 MB?");
        assert_eq!(size("1.7906866073608398"), "1.7906866073608398 MB?");
        assert_eq!(size("-5"), "-5 MB?");
        assert_eq!(size("\"big\""), "big");
        assert_eq!(size("null"), "");
    }

    #[test]
    fn timestamps_as_given_with_a_date_title() {
        let v = |text: &str| -> Value { serde_json::from_str(text).unwrap_or_default() };
        assert_eq!(timestamp_text(&v("1744169352")), "1744169352");
        assert_eq!(timestamp_text(&v("1744169352.0")), "1744169352.0");
        assert_eq!(
            timestamp_text(&json!("Sun Jun 15 21:36:41 2025")),
            "Sun Jun 15 21:36:41 2025"
        );
        assert_eq!(
            timestamp_title(&v("0")).as_deref(),
            Some("1970-01-01 00:00:00 UTC")
        );
        assert_eq!(
            timestamp_title(&v("1744169352.9")).as_deref(),
            Some("2025-04-09 03:29:12 UTC")
        );
        assert_eq!(
            timestamp_title(&v("951782400")).as_deref(),
            Some("2000-02-29 00:00:00 UTC")
        );
        assert_eq!(timestamp_title(&json!("Sun Jun 15 21:36:41 2025")), None);
        assert_eq!(timestamp_title(&v("-1")), None);
        assert_eq!(timestamp_title(&v("1e300")), None);
    }

    #[test]
    fn short_ids_cut_on_char_boundaries() {
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id("0123456789ab"), "0123456789ab");
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab…");
        assert_eq!(short_id("ééééééééééééé"), "éééééééééééé…");
    }

    #[test]
    fn columns() {
        assert_eq!(local_text(true, true), "yes");
        assert_eq!(local_text(true, false), "yes (unverified)");
        assert_eq!(local_text(false, true), "no");
        assert_eq!(done_text(512, None), "512 B");
        assert_eq!(done_text(768, Some(1024)), "768 B of 1.0 KiB (75%)");
        assert_eq!(done_text(5, Some(0)), "5 B of 0 B");
        assert_eq!(rate_text(1536), "1.5 KiB/s");
        assert_eq!(count(1, "peer", "peers"), "1 peer");
        assert_eq!(count(0, "peer", "peers"), "0 peers");
        assert_eq!(range_text(100, 100, 20_000), "Files 101–200 of 20000");
        assert_eq!(
            range_text(25_000, 0, 20_000),
            "No files from 25001 on (20000 in all)"
        );
    }
}
