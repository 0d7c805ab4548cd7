//! The stats page: server-rendered HTML of a [`StateView`], with inline CSS
//! (`page.css`) and a small inline script (`page.js`) that re-renders the
//! tables from `/api/state` every second without reloading the page. The
//! file list is one page of the catalog, with links to the previous and
//! next pages (`/?offset=N`, which work without the script too).
//!
//! Every string that came from the network goes through [`escape_html`]
//! here; the script only ever sets `textContent`.

use super::format::{
    count, done_text, local_text, range_text, rate_text, short_id, size_text, timestamp_text,
    timestamp_title,
};
use crate::core::view::{Direction, EventView, FileView, PeerView, StateView, TransferView};

/// The page's stylesheet, inlined into a `<style>` element.
pub(super) const CSS: &str = include_str!("page.css");
/// The live-update script, inlined into a `<script>` element.
pub(super) const SCRIPT: &str = include_str!("page.js");

/// Escapes `s` for HTML text and quoted attribute values: `&`, `<`, `>`,
/// `"` and `'` become character references.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A peer heard from within this many seconds is "live"; the page's
/// script uses the same figure.
pub(crate) const LIVE_SECS: u64 = 15;

/// The whole page for `state`: transfers first, then peers, files (with
/// search, sort and pager) and recent events.
pub(crate) fn render_page(state: &StateView) -> String {
    let title = escape_html(&format!("Peer Stats for {}", state.peer_id));
    let mut html = String::with_capacity(
        CSS.len()
            + SCRIPT.len()
            + 4096
            + 256 * (state.peers.len() + state.files.len() + state.events.len()),
    );
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    html.push_str("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>\n");
    html.push_str(&format!(
        "<title>{title}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n"
    ));
    html.push_str(&format!("<header>\n<h1 id=\"heading\">{title}</h1>\n"));
    html.push_str(&format!(
        "<p id=\"summary\" class=\"summary\">{}</p>\n",
        escape_html(&summary(state))
    ));
    html.push_str("<p id=\"status\" class=\"status\" role=\"status\" aria-live=\"polite\"></p>\n");
    html.push_str(
        "<p id=\"action-status\" class=\"status\" role=\"status\" aria-live=\"polite\"></p>\n",
    );
    html.push_str(
        "<noscript><p class=\"status\">Scripts are off: this page reloads every 5 seconds.</p></noscript>\n",
    );
    html.push_str("</header>\n<main>\n");

    section(
        &mut html,
        "Transfers",
        "transfers",
        &[
            ("Dir", ""),
            ("File", ""),
            ("Peer", ""),
            ("Progress", ""),
            ("Rate", "num"),
            ("ETA", "num"),
        ],
        &state.transfers,
        "No transfers in flight.",
        transfer_row,
    );
    section(
        &mut html,
        "Peers",
        "peers",
        &[("Peer ID", ""), ("Address", ""), ("State", "")],
        &state.peers,
        "No tracked peers.",
        peer_row,
    );
    html.push_str(
        "<section>\n<h2>Files</h2>\n<div class=\"controls\">\
         <input id=\"files-q\" type=\"search\" placeholder=\"Search name, id or owner\" aria-label=\"Search files\" maxlength=\"256\">\
         <select id=\"files-sort\" aria-label=\"Sort by\"><option value=\"name\">Name</option><option value=\"size\">Size</option><option value=\"time\">Time</option><option value=\"owner\">Owner</option></select>\
         <select id=\"files-order\" aria-label=\"Order\"><option value=\"asc\">Ascending</option><option value=\"desc\">Descending</option></select>\
         </div>\n",
    );
    table(
        &mut html,
        "files",
        &[
            ("ID", ""),
            ("Name", ""),
            ("Owner", ""),
            ("Size", "num"),
            ("Timestamp", ""),
            ("Local copy", ""),
            ("Peers", ""),
            ("Action", ""),
        ],
        &state.files,
        "No files known.",
        file_row,
    );
    pager(&mut html, state);
    html.push_str("</section>\n");
    section(
        &mut html,
        "Recent events",
        "events",
        &[("Time", ""), ("Event", ""), ("What happened", "")],
        &state.events,
        "No events yet.",
        event_row,
    );

    html.push_str("</main>\n<script>\n");
    html.push_str(SCRIPT);
    html.push_str("</script>\n</body>\n</html>\n");
    html
}

/// The line under the heading: address and counts (plain text).
fn summary(state: &StateView) -> String {
    format!(
        "{}:{} · {} · {} · {}",
        state.host,
        state.port,
        count(state.peers.len(), "tracked peer", "tracked peers"),
        count(state.files_total, "file", "files"),
        count(state.transfers.len(), "transfer", "transfers"),
    )
}

/// One titled table (see [`table`]).
fn section<T>(
    html: &mut String,
    heading: &str,
    id: &str,
    columns: &[(&str, &str)],
    items: &[T],
    empty: &str,
    row: fn(&mut String, &T),
) {
    html.push_str(&format!("<section>\n<h2>{heading}</h2>\n"));
    table(html, id, columns, items, empty, row);
    html.push_str("</section>\n");
}

/// A table in its own scrolling box (so a narrow screen scrolls the table,
/// never the page); `columns` are (heading, class) pairs, and the body is
/// `<tbody id="{id}-body">`, which the script replaces.
fn table<T>(
    html: &mut String,
    id: &str,
    columns: &[(&str, &str)],
    items: &[T],
    empty: &str,
    row: fn(&mut String, &T),
) {
    html.push_str(&format!(
        "<div class=\"scroll\"><table id=\"{id}\">\n<thead><tr>"
    ));
    for (name, class) in columns {
        html.push_str(&format!("<th{}>{name}</th>", class_attr(class)));
    }
    html.push_str(&format!("</tr></thead>\n<tbody id=\"{id}-body\">\n"));
    if items.is_empty() {
        html.push_str(&format!(
            "<tr><td class=\"empty\" colspan=\"{}\">{empty}</td></tr>\n",
            columns.len()
        ));
    }
    for item in items {
        html.push_str("<tr>");
        row(html, item);
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table></div>\n");
}

/// Links to the previous and next pages of files, and which files this
/// page shows. The script keeps them current; both links are always there
/// (hidden when there is no such page) so it only flips `hidden`.
fn pager(html: &mut String, state: &StateView) {
    let shown = state.files.len();
    let prev = state.offset.saturating_sub(state.limit.max(1));
    let next = state.offset.saturating_add(shown);
    let hidden = |yes: bool| if yes { " hidden" } else { "" };
    html.push_str(&format!(
        "<nav class=\"pager\" id=\"files-pager\" data-offset=\"{}\" data-limit=\"{}\">\
         <a id=\"files-prev\" href=\"/?offset={prev}&amp;limit={}\"{}>← Previous</a> \
         <span id=\"files-range\">{}</span> \
         <a id=\"files-next\" href=\"/?offset={next}&amp;limit={}\"{}>Next →</a></nav>\n",
        state.offset,
        state.limit,
        state.limit,
        hidden(state.offset == 0),
        escape_html(&range_text(state.offset, shown, state.files_matching)),
        state.limit,
        hidden(next >= state.files_matching),
    ));
}

/// "live", or how long the peer has been silent.
pub(crate) fn peer_state(last_seen_secs_ago: u64) -> String {
    if last_seen_secs_ago <= LIVE_SECS {
        "live".to_owned()
    } else {
        format!("silent for {last_seen_secs_ago} s")
    }
}

fn peer_row(html: &mut String, peer: &PeerView) {
    cell(html, "mono", None, &peer.peer_id);
    cell(html, "", None, &format!("{}:{}", peer.host, peer.port));
    cell(html, "", None, &peer_state(peer.last_seen_secs_ago));
}

fn file_row(html: &mut String, file: &FileView) {
    cell(html, "mono", Some(&file.file_id), &short_id(&file.file_id));
    cell(html, "", None, &file.file_name);
    cell(html, "", None, &file.file_owner);
    cell(html, "num", None, &size_text(&file.file_size));
    cell(
        html,
        "",
        timestamp_title(&file.file_timestamp).as_deref(),
        &timestamp_text(&file.file_timestamp),
    );
    cell(html, "", None, local_text(file.local, file.verified));
    let peers = if file.peers_with_file.is_empty() {
        "—".to_owned()
    } else {
        file.peers_with_file.join(", ")
    };
    cell(html, "", None, &peers);
    // Actions need the token, which only the script has.
    cell(html, "", None, "");
}

fn transfer_row(html: &mut String, t: &TransferView) {
    let dir = match t.direction {
        Direction::Down => "↓ down",
        Direction::Up => "↑ up",
    };
    cell(html, "", None, dir);
    cell(html, "", Some(&t.file_id), &t.file_name);
    cell(html, "", None, &super::format::peer_text(t));
    html.push_str("<td>");
    if let Some(total) = t.bytes_total.filter(|&n| n > 0) {
        html.push_str(&format!(
            "<progress max=\"{total}\" value=\"{}\"></progress> ",
            t.bytes_done.min(total)
        ));
    }
    html.push_str(&escape_html(&done_text(t.bytes_done, t.bytes_total)));
    html.push_str("</td>");
    cell(html, "num", None, &rate_text(t.rate_bytes_per_sec));
    let eta = t.eta_secs.map_or_else(|| "—".to_owned(), crate::units::eta);
    cell(html, "num", None, &eta);
}

fn event_row(html: &mut String, e: &EventView) {
    let when = timestamp_title(&serde_json::json!(e.at_unix)).unwrap_or_default();
    cell(html, "num", None, &when);
    let kind = serde_json::to_value(e.kind)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_default();
    cell(html, "", None, &kind);
    cell(html, "", None, &e.text);
}

/// A `<td>` with an optional class and title; `text` and `title` are
/// escaped here.
fn cell(html: &mut String, class: &str, title: Option<&str>, text: &str) {
    html.push_str("<td");
    html.push_str(&class_attr(class));
    if let Some(title) = title {
        html.push_str(&format!(" title=\"{}\"", escape_html(title)));
    }
    html.push('>');
    html.push_str(&escape_html(text));
    html.push_str("</td>");
}

/// ` class="…"`, or nothing for an empty class (classes here are constants).
fn class_attr(class: &str) -> String {
    if class.is_empty() {
        String::new()
    } else {
        format!(" class=\"{class}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::test_support::sample_state;
    use serde_json::json;

    #[test]
    fn escapes_the_five_characters() {
        assert_eq!(
            escape_html(r#"<a href="x" onclick='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(escape_html("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn page_shows_the_state() {
        let page = render_page(&sample_state());
        assert!(page.contains("<title>Peer Stats for nanday</title>"));
        assert!(page.contains("<h1 id=\"heading\">Peer Stats for nanday</h1>"));
        assert!(page.contains("127.0.0.1:8001 · 1 tracked peer · 1 file · 1 transfer"));
        for header in [
            "Dir", "File", "Peer", "Progress", "Rate", "ETA", "Peer ID", "Address", "State",
        ] {
            assert!(page.contains(&format!(">{header}</th>")), "{header}");
        }
        for header in [
            "ID",
            "Name",
            "Owner",
            "Size",
            "Timestamp",
            "Local copy",
            "Peers",
            "Action",
            "Time",
            "Event",
            "What happened",
        ] {
            assert!(page.contains(&format!(">{header}</th>")), "{header}");
        }
        // Transfers first, then peers, files and events.
        let at = |h: &str| page.find(&format!("<h2>{h}</h2>")).expect(h);
        assert!(at("Transfers") < at("Peers") && at("Peers") < at("Files"));
        assert!(at("Files") < at("Recent events"));
        assert!(page.contains("<td>live</td>"));
        assert!(page.contains("<td>silicon.cs.umanitoba.ca:8999</td>"));
        assert!(page.contains("<progress max=\"1024\" value=\"768\"></progress>"));
        assert!(page.contains("<td>Silicon (silicon.cs.umanitoba.ca:8999)</td>"));
        assert!(page.contains("<td class=\"num\">1s</td>"));
        assert!(page.contains("<td>peer joined</td>"));
        assert!(page.contains("<td class=\"num\">2025-04-09 03:29:11 UTC</td>"));
        assert!(page.contains("id=\"files-q\" type=\"search\""));
        assert!(page.contains("silicon.cs.umanitoba.ca"));
        assert!(page.contains(
            "<td class=\"mono\" title=\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\">9f86d081884c…</td>"
        ));
        assert!(page.contains("<td class=\"num\">1.5 KiB</td>"));
        assert!(page.contains("<td title=\"2025-04-09 03:29:12 UTC\">1744169352</td>"));
        assert!(page.contains("<td>yes (unverified)</td>"));
        assert!(page.contains("<td>Silicon, nanday</td>"));
        assert!(page.contains("768 B of 1.0 KiB (75%)"));
        assert!(page.contains("1.5 KiB/s"));
        assert!(page.contains("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>"));
        assert!(page.contains("/api/state?offset="));
        assert!(page.contains("connection lost"));
        // Self-contained: no external assets.
        for external in ["src=\"http", "href=\"http", "<link", "src=\"/"] {
            assert!(!page.contains(external), "{external}");
        }
    }

    #[test]
    fn the_pager_links_to_the_neighbouring_pages_only_when_they_exist() {
        let mut state = sample_state();
        let page = render_page(&state);
        assert!(page.contains("<a id=\"files-prev\" href=\"/?offset=0&amp;limit=100\" hidden>"));
        assert!(page.contains("<a id=\"files-next\" href=\"/?offset=1&amp;limit=100\" hidden>"));
        assert!(page.contains("Files 1–1 of 1"));
        state.files_total = 20_000;
        state.files_matching = 20_000;
        state.offset = 19_800;
        state.limit = 100;
        state.files = vec![state.files[0].clone(); 100];
        let page = render_page(&state);
        assert!(page.contains("<a id=\"files-prev\" href=\"/?offset=19700&amp;limit=100\">"));
        assert!(page.contains("<a id=\"files-next\" href=\"/?offset=19900&amp;limit=100\">"));
        assert!(page.contains("Files 19801–19900 of 20000"));
        assert!(page.contains("20000 files"));
    }

    #[test]
    fn a_peer_is_live_until_it_has_been_silent_a_while() {
        assert_eq!(peer_state(0), "live");
        assert_eq!(peer_state(LIVE_SECS), "live");
        assert_eq!(
            peer_state(LIVE_SECS + 1),
            format!("silent for {} s", LIVE_SECS + 1)
        );
    }

    #[test]
    fn local_column_variants() {
        let mut state = sample_state();
        state.files[0].verified = true;
        assert!(render_page(&state).contains("<td>yes</td>"));
        state.files[0].local = false;
        state.files[0].peers_with_file.clear();
        let page = render_page(&state);
        assert!(page.contains("<td>no</td>"));
        assert!(page.contains("<td>—</td>"));
    }

    #[test]
    fn empty_state_has_placeholder_rows() {
        let mut state = sample_state();
        state.peers.clear();
        state.files.clear();
        state.files_total = 0;
        state.transfers.clear();
        state.events.clear();
        let page = render_page(&state);
        assert!(page.contains("colspan=\"3\">No tracked peers.</td>"));
        assert!(page.contains("colspan=\"8\">No files known.</td>"));
        assert!(page.contains("colspan=\"6\">No transfers in flight.</td>"));
        assert!(page.contains("colspan=\"3\">No events yet.</td>"));
        assert!(page.contains("0 tracked peers · 0 files · 0 transfers"));
    }

    #[test]
    fn network_strings_are_escaped() {
        let peer_name = "<script>alert(1)</script>";
        let file_name = "\"><img src=x onerror=alert(1)>";
        let mut state = sample_state();
        state.peer_id = "me & <b>you</b>".into();
        state.host = "<i>host</i>".into();
        state.peers[0].peer_id = peer_name.into();
        state.peers[0].host = file_name.into();
        state.files[0].file_name = file_name.into();
        state.files[0].file_id = file_name.into();
        state.files[0].file_owner = peer_name.into();
        state.files[0].file_timestamp = json!(peer_name);
        state.files[0].file_size = json!(file_name);
        state.files[0].peers_with_file = vec![peer_name.into()];
        state.transfers[0].file_name = peer_name.into();
        state.transfers[0].file_id = file_name.into();
        state.transfers[0].source = file_name.into();
        state.transfers[0].peer = file_name.into();
        state.events[0].text = peer_name.into();
        let page = render_page(&state);
        for raw in [
            peer_name,
            file_name,
            "<b>you</b>",
            "<i>host</i>",
            "alert(1)>",
        ] {
            assert!(!page.contains(raw), "unescaped {raw:?}");
        }
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
        assert!(page.contains("<title>Peer Stats for me &amp; &lt;b&gt;you&lt;/b&gt;</title>"));
        // Only our own script element.
        assert_eq!(page.matches("<script").count(), 1);
        assert_eq!(page.matches("<img").count(), 0);
    }

    #[test]
    fn inline_assets_cannot_break_out_of_their_elements() {
        for asset in [CSS, SCRIPT] {
            let lower = asset.to_ascii_lowercase();
            assert!(!lower.contains("</script"));
            assert!(!lower.contains("</style"));
            assert!(!lower.contains("<!--"));
        }
        assert!(!SCRIPT.contains("innerHTML"));
    }
}
