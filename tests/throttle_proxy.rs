//! The resume benchmark's proxy (`benches/support/throttle_proxy.rs`) on
//! real sockets, 127.0.0.1 only: what it reports is what went through it,
//! its cut falls where it was planned and only once, its corruption
//! changes exactly the planned hex digits (to other hex digits), and it
//! keeps to its rate. The benchmark's figures are these counters.

#[path = "../benches/support/throttle_proxy.rs"]
mod throttle_proxy;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use throttle_proxy::{Corruption, CutPlan, ProxyPort};

/// Bound on every socket wait here.
const WAIT: Duration = Duration::from_secs(10);

/// A FILE_DATA of `len` bytes as a holder sends it (data last), and the
/// length of its head (everything before the hex).
fn file_data(len: usize) -> (Vec<u8>, usize) {
    let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let head = format!(
        r#"{{"type":"FILE_DATA","file_id":"ab12","file_name":"x.bin","file_size":{len},"data":""#
    );
    let mut msg = head.clone().into_bytes();
    msg.extend_from_slice(faster_hex::hex_string(&bytes).as_bytes());
    msg.extend_from_slice(b"\"}");
    (msg, head.len())
}

/// A holder stand-in: answers each of `conns` connections, in turn, with
/// `reply` once it has read the request's closing brace, then closes.
fn upstream(reply: Vec<u8>, conns: usize) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let h = thread::spawn(move || {
        let deadline = Instant::now() + WAIT;
        let mut served = 0;
        while served < conns && Instant::now() < deadline {
            let Ok((mut conn, _)) = listener.accept() else {
                thread::sleep(Duration::from_millis(2));
                continue;
            };
            served += 1;
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(WAIT)).unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8];
            while request.len() < 4096 && !request.ends_with(b"}") {
                match conn.read(&mut byte) {
                    Ok(1) => request.push(byte[0]),
                    _ => break,
                }
            }
            // The proxy may close first (a cut): its error is expected.
            let _ = conn.write_all(&reply);
        }
    });
    (port, h)
}

/// Sends `request` through the proxy at `port` and reads until it closes.
fn fetch(port: u16, request: &str) -> Vec<u8> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn the_cut_falls_after_the_planned_hex_digits_once_and_every_request_is_recorded() {
    let len = 100_000;
    let (msg, head) = file_data(len);
    let (up, server) = upstream(msg.clone(), 2);
    // Half the hex digits and one more: the cut may fall inside a byte.
    let planned = len as u64 + 1;
    let proxy = ProxyPort::bind()
        .unwrap()
        .relay_to(up, 1_000_000_000, Some(CutPlan::once_after(planned)))
        .unwrap();

    let first = fetch(
        proxy.port,
        r#"{"type":"GET_FILE","file_id":"ab12","offset":123,"length":5}"#,
    );
    assert_eq!(first.len(), head + planned as usize, "cut where planned");
    assert!(
        first == msg[..first.len()],
        "relayed unchanged up to the cut"
    );
    let cut = proxy.traffic().cut().expect("a cut is recorded");
    assert_eq!(cut.hex_relayed, planned);

    // The plan is used up: the next reply goes through whole.
    let second = fetch(proxy.port, r#"{"type":"GET_FILE","file_id":"ab12"}"#);
    assert!(second == msg, "the second reply is relayed whole");
    server.join().unwrap();

    let traffic = proxy.traffic();
    assert_eq!(
        traffic.data_hex.load(std::sync::atomic::Ordering::SeqCst),
        planned + 2 * len as u64,
        "every hex digit relayed is counted, and only those"
    );
    assert_eq!(traffic.data_bytes(), (planned + 2 * len as u64) / 2);
    let asked = traffic.get_files();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!((asked[0].offset, asked[0].length), (Some(123), Some(5)));
    assert_eq!((asked[1].offset, asked[1].length), (None, None));
}

#[test]
fn the_link_keeps_to_its_rate() {
    // 1 MB of reply at 10 MB/s: the first piece leaves at once, the rest
    // (about 0.97 MB) no sooner than its share of the rate.
    let (msg, _) = file_data(500_000);
    let (up, server) = upstream(msg.clone(), 1);
    let proxy = ProxyPort::bind()
        .unwrap()
        .relay_to(up, 10_000_000, None)
        .unwrap();
    let started = Instant::now();
    let got = fetch(proxy.port, r#"{"type":"GET_FILE","file_id":"ab12"}"#);
    let took = started.elapsed();
    server.join().unwrap();
    assert!(got == msg, "relayed whole");
    let floor = Duration::from_secs_f64((msg.len() - 32 * 1024) as f64 / 10e6);
    assert!(took >= floor, "{took:?} for {} B at 10 MB/s", msg.len());
    assert!(took < floor * 10, "{took:?}: paced far below the rate");
    assert!(proxy.traffic().cut().is_none(), "no plan, no cut");
}

#[test]
fn corruption_changes_one_digit_every_planned_bytes_in_each_reply_and_keeps_the_hex_valid() {
    let len = 100_000;
    let (msg, head) = file_data(len);
    let (up, server) = upstream(msg.clone(), 2);
    let corruption = Corruption {
        first_byte: 1000,
        every_bytes: 30_000,
    };
    let proxy = ProxyPort::bind()
        .unwrap()
        .relay_corrupting(up, 1_000_000_000, corruption)
        .unwrap();
    // Bytes 1000, 31 000, 61 000 and 91 000 of each reply: their first digit.
    let planned: Vec<usize> = (0..4).map(|k| head + 2 * (1000 + 30_000 * k)).collect();
    for _ in 0..2 {
        let got = fetch(proxy.port, r#"{"type":"GET_FILE","file_id":"ab12"}"#);
        assert_eq!(got.len(), msg.len(), "relayed whole");
        let changed: Vec<usize> = (0..msg.len()).filter(|&i| got[i] != msg[i]).collect();
        assert_eq!(changed, planned, "the planned digits, and only those");
        assert!(
            got[head..head + 2 * len].iter().all(u8::is_ascii_hexdigit),
            "the hex stays valid"
        );
    }
    server.join().unwrap();
    let traffic = proxy.traffic();
    assert_eq!(
        traffic.corrupted.load(std::sync::atomic::Ordering::SeqCst),
        8,
        "every change is counted"
    );
    assert_eq!(traffic.data_bytes(), 2 * len as u64);
}

#[test]
fn the_hex_is_found_and_counted_after_python_spacing_split_across_reads() {
    // json.dumps' `"data": "`, after a file named "data", the head arriving
    // in pieces of 3 bytes.
    let len = 1000;
    let hex = "ab".repeat(len);
    let msg = format!(
        r#"{{"type": "FILE_DATA", "file_id": "ab12", "file_name": "data", "file_size": {len}, "data": "{hex}"}}"#
    );
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let up = listener.local_addr().unwrap().port();
    let reply = msg.clone().into_bytes();
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        let mut request = [0u8; 64];
        let _ = conn.read(&mut request);
        for piece in reply.chunks(3) {
            conn.write_all(piece).unwrap();
            conn.flush().unwrap();
            thread::sleep(Duration::from_micros(200));
        }
    });
    let proxy = ProxyPort::bind()
        .unwrap()
        .relay_to(up, 1_000_000_000, None)
        .unwrap();
    let got = fetch(proxy.port, r#"{"type":"GET_FILE","file_id":"ab12"}"#);
    server.join().unwrap();
    assert!(got == msg.as_bytes(), "relayed unchanged");
    assert_eq!(
        proxy.traffic().data_bytes(),
        len as u64,
        "every digit, only those"
    );
}
