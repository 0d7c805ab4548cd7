//! The stats page in a real browser (headless Chromium through
//! chromedriver, 360 px wide) against real peers on 127.0.0.1: it shows
//! peers, files and a download's progress from the live API, its search
//! finds one file among 20 000, a Get click with the token starts a
//! download, the same request without the token (or from another origin)
//! is refused and starts nothing, and nothing overflows horizontally.
//! Without chromium/chromedriver the browser tests say so and skip.
mod support;

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::files::{
    file_data, file_record, pattern, sha256_hex, write_catalog, FakeHolder, FakeStyle,
};
use support::webdriver::{self, Browser};
use support::*;

const WAIT: Duration = Duration::from_secs(15);

/// The page's token, from the storage folder.
fn token_of(peer: &PeerProc) -> String {
    let path = peer.dir.join("http-token");
    assert!(
        wait_until(WAIT, || path.exists()),
        "no token file in {}",
        peer.dir.display()
    );
    std::fs::read_to_string(path)
        .expect("token")
        .trim()
        .to_owned()
}

/// A browser, or None after printing why the test skips.
fn browser() -> Option<Browser> {
    if !webdriver::available() {
        println!("skipped: chromium/chromedriver not installed");
        return None;
    }
    let b = Browser::start();
    assert!(
        b.is_some(),
        "chromium/chromedriver are installed but did not start"
    );
    b
}

/// The page's visible text of a table body.
const BODY_TEXT: &str = "return document.getElementById(arguments[0]).innerText;";

fn body_text(b: &Browser, id: &str) -> String {
    b.eval(BODY_TEXT, json!([id]))
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Whether the page fits its window: nothing scrolls sideways.
fn fits_width(b: &Browser) -> (u64, u64) {
    let v = b.eval(
        "return [document.documentElement.scrollWidth, window.innerWidth];",
        json!([]),
    );
    (
        v[0].as_u64().unwrap_or(u64::MAX),
        v[1].as_u64().unwrap_or(0),
    )
}

/// A fake holder that serves `data` slowly (in 32 chunks over about
/// `secs` seconds), so the download is in flight long enough to watch.
fn slow_holder(record: &Value, data: Vec<u8>, secs: u64) -> FakeHolder {
    let reply = file_data(record, &data);
    FakeHolder::start(
        "carol",
        vec![record.clone()],
        FakeStyle::default(),
        move |_req, mut conn, stop: &AtomicBool| {
            let step = reply.len().div_ceil(32);
            for chunk in reply.chunks(step) {
                if stop.load(Ordering::SeqCst) || conn.write_all(chunk).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(secs * 1000 / 32));
            }
        },
    )
}

/// One raw POST to the peer's HTTP port: (status, body).
fn post(port: u16, path: &str, headers: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

#[test]
fn the_page_shows_peers_and_files_and_a_get_click_with_the_token_downloads_with_live_progress() {
    let Some(b) = browser() else { return };
    let me = PeerBuilder::new("watcher")
        .args(&QUIET)
        .file("mine.txt", b"my own file")
        .spawn();
    let data = pattern(7, 512 * 1024);
    let record = file_record("slow.bin", &data, "carol", 1_750_000_000);
    let id = record["file_id"].as_str().expect("id").to_owned();
    let carol = slow_holder(&record, data.clone(), 6);
    carol.send_gossip_reply(me.p2p_port).expect("gossip reply");
    assert!(
        wait_until(WAIT, || me.file(&id).is_some()),
        "the file is known"
    );

    let token = token_of(&me);
    b.goto(&format!("http://127.0.0.1:{}/#token={token}", me.http_port));
    let shown = b.wait_for(
        WAIT,
        "const t = document.getElementById('peers-body').innerText + \
         document.getElementById('files-body').innerText; \
         return t.includes('carol') && t.includes('slow.bin') && t.includes('mine.txt');",
    );
    assert_eq!(shown, json!(true), "peers: {}", body_text(&b, "peers-body"));
    assert!(body_text(&b, "peers-body").contains("live"));
    assert_eq!(
        b.eval("return location.hash;", json!([])),
        json!(""),
        "the token leaves the address bar"
    );

    let get = b
        .find(&format!("button.act-get[data-file-id='{id}']"))
        .expect("a Get button on the file we don't hold");
    b.click(&get);
    let progress = b.wait_for(
        WAIT,
        "const bar = document.querySelector('#transfers-body progress'); \
         return bar && bar.value > 0 ? [bar.value, bar.max, \
         document.getElementById('transfers-body').innerText] : null;",
    );
    println!("see_page: progress seen in the browser: {progress}");
    assert!(progress.is_array(), "no progress bar moved");
    assert_eq!(progress[1], json!(data.len()));
    assert!(progress[2].as_str().unwrap_or("").contains("slow.bin"));
    let status = body_text(&b, "action-status");
    assert!(
        status.contains("get"),
        "the click's answer is shown: {status:?}"
    );

    let path = me.dir.join("slow.bin");
    assert!(
        wait_until(Duration::from_secs(30), || {
            std::fs::read(&path).is_ok_and(|got| sha256_hex(&got) == sha256_hex(&data))
        }),
        "the file arrived whole"
    );
    let done = b.wait_for(
        WAIT,
        "return document.getElementById('transfers-body').innerText.includes('No transfers');",
    );
    assert_eq!(done, json!(true));
    let (scroll, inner) = fits_width(&b);
    println!("see_page: at 360 px: scrollWidth {scroll}, innerWidth {inner}");
    assert!(scroll <= inner, "the page overflows: {scroll} > {inner}");
}

#[test]
fn an_action_without_the_token_or_from_another_origin_is_refused_and_with_them_get_and_delete_run()
{
    let me = PeerBuilder::new("guarded")
        .args(&QUIET)
        .file("ours.txt", b"a file we own")
        .spawn();
    let data = pattern(9, 4096);
    let record = file_record("wanted.bin", &data, "carol", 1_750_000_001);
    let id = record["file_id"].as_str().expect("id").to_owned();
    let carol = slow_holder(&record, data, 1);
    carol.send_gossip_reply(me.p2p_port).expect("gossip reply");
    assert!(
        wait_until(WAIT, || me.file(&id).is_some()),
        "the file is known"
    );
    let token = token_of(&me);
    let body = json!({ "file_id": id }).to_string();
    let port = me.http_port;
    let origin = format!("Origin: http://127.0.0.1:{port}\r\n");
    let cases = [
        ("no token".to_owned(), String::new()),
        (
            "a wrong token".to_owned(),
            "X-Peershare-Token: 00000000000000000000000000000000\r\n".to_owned(),
        ),
        (
            "another origin".to_owned(),
            format!("X-Peershare-Token: {token}\r\nOrigin: http://evil.example\r\n"),
        ),
        ("the token in the query".to_owned(), origin.clone()),
    ];
    for (what, headers) in &cases {
        let path = if what.contains("query") {
            format!("/api/get?token={token}")
        } else {
            "/api/get".to_owned()
        };
        let (status, answer) = post(port, &path, headers, &body);
        assert_eq!(status, 403, "{what}: {answer}");
        assert_eq!(answer["ok"], json!(false), "{what}");
        let (status, _) = post(port, "/api/delete", headers, &body);
        assert_eq!(status, 403, "{what}: delete");
    }
    std::thread::sleep(Duration::from_millis(500));
    let state = me.state().expect("state");
    assert_eq!(state["transfers"], json!([]), "nothing started");
    assert!(
        carol.received().iter().all(|m| m["type"] != "GET_FILE"),
        "no GET_FILE was sent"
    );
    assert!(me.file(&id).is_some(), "nothing deleted");

    // The same request with the token and the page's own origin works.
    let (status, answer) = post(
        port,
        "/api/get",
        &format!("X-Peershare-Token: {token}\r\n{origin}"),
        &body,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ok"], json!(true));
    assert!(
        carol.wait_message("GET_FILE", WAIT).is_some(),
        "the download started"
    );
}

#[test]
fn the_search_finds_one_file_among_20000_and_the_page_fits_360_px() {
    let Some(b) = browser() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("storage");
    write_catalog(
        &dir,
        20_000,
        |i| format!("catalog-{i:05}.bin"),
        "owner-of-many",
        &["holder-one"],
    );
    let me = PeerBuilder::new("many")
        .storage(&dir)
        .args(&["--peer-timeout", "600", "--gossip-interval", "30"])
        .spawn();
    assert!(
        wait_until(WAIT, || me
            .state()
            .is_some_and(|s| s["files_total"] == json!(20_000))),
        "the catalog loaded"
    );
    b.goto(&format!("http://127.0.0.1:{}/", me.http_port));
    let range = b.wait_for(
        WAIT,
        "const t = document.getElementById('files-range').innerText; \
         return t.includes('20000') ? t : null;",
    );
    assert!(range.is_string(), "the pager shows the whole catalog");
    let search = b.find("#files-q").expect("a search box");
    let started = std::time::Instant::now();
    b.type_into(&search, "catalog-12345");
    let found = b.wait_for(
        WAIT,
        "const rows = document.querySelectorAll('#files-body tr'); \
         return rows.length === 1 && rows[0].innerText.includes('catalog-12345.bin') \
           ? document.getElementById('files-range').innerText : null;",
    );
    println!(
        "see_page: search among 20 000 files shown in {:?} (typing, 300 ms debounce, fetch, render)",
        started.elapsed()
    );
    assert!(
        found.is_string(),
        "found: {found}; files: {}",
        body_text(&b, "files-body")
    );
    assert!(found.as_str().unwrap_or("").contains("1 found of 20000"));
    // Without the token the Get button is there but cannot act.
    let disabled = b.eval(
        "const b = document.querySelector('#files-body button.act-get'); return b && b.disabled;",
        json!([]),
    );
    assert_eq!(disabled, json!(true));
    let (scroll, inner) = fits_width(&b);
    println!("see_page: 20 000 files at 360 px: scrollWidth {scroll}, innerWidth {inner}");
    assert!(scroll <= inner, "the page overflows: {scroll} > {inner}");
}

/// A fake holder that serves ranges (pieces) slowly: each reply in 16
/// chunks, `pause` apart.
fn slow_ranged_holder(id: &str, record: &Value, data: Vec<u8>, pause: Duration) -> FakeHolder {
    let rec = record.clone();
    FakeHolder::start(
        id,
        vec![record.clone()],
        FakeStyle {
            ranges: true,
            ..FakeStyle::default()
        },
        move |req, mut conn, stop: &AtomicBool| {
            let offset = req["offset"].as_u64().unwrap_or(0) as usize;
            let offset = offset.min(data.len());
            let len = req["length"]
                .as_u64()
                .map_or(data.len() - offset, |l| l as usize);
            let end = (offset + len).min(data.len());
            let mut head = rec.clone();
            head["offset"] = offset.into();
            head["length"] = (end - offset).into();
            let reply = file_data(&head, &data[offset..end]);
            for chunk in reply.chunks(reply.len().div_ceil(16)) {
                if stop.load(Ordering::SeqCst) || conn.write_all(chunk).is_err() {
                    return;
                }
                std::thread::sleep(pause);
            }
        },
    )
}

#[test]
fn a_download_from_several_holders_shows_each_holders_share_on_the_page() {
    let Some(b) = browser() else { return };
    let me = PeerBuilder::new("watcher").args(&QUIET).spawn();
    let data = pattern(8, 8 << 20);
    let record = file_record("pieces.bin", &data, "carol", 1_750_000_000);
    let id = record["file_id"].as_str().expect("id").to_owned();
    let pause = Duration::from_millis(120);
    let holders = [
        slow_ranged_holder("dave", &record, data.clone(), pause),
        slow_ranged_holder("erin", &record, data.clone(), pause),
    ];
    for h in &holders {
        h.send_gossip_reply(me.p2p_port).expect("gossip reply");
    }
    assert!(wait_until(WAIT, || me.file(&id).is_some_and(|f| f
        ["peers_with_file"]
        .as_array()
        .map_or(0, Vec::len)
        == 2)));
    let token = token_of(&me);
    b.goto(&format!("http://127.0.0.1:{}/#token={token}", me.http_port));
    let mut me = me;
    me.send_line(&format!("get {id}"));
    let shown = b.wait_for(
        WAIT,
        "const t = document.getElementById('transfers-body').innerText; \
         return t.includes('2 holders at once') && t.includes('dave') && t.includes('erin') \
         && t.includes('/s') ? t : null;",
    );
    println!("see_page: the transfer as shown: {shown}");
    assert!(
        shown.is_string(),
        "no holder shares shown: {}",
        body_text(&b, "transfers-body")
    );
    let path = me.dir.join("pieces.bin");
    assert!(
        wait_until(Duration::from_secs(60), || {
            std::fs::read(&path).is_ok_and(|got| sha256_hex(&got) == sha256_hex(&data))
        }),
        "the file arrived whole"
    );
    let (scroll, inner) = fits_width(&b);
    assert!(scroll <= inner, "the page overflows: {scroll} > {inner}");
}
