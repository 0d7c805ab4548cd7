//! Fuzzing in `cargo test`: every invariant check of `peershare::fuzzing`
//! (the same ones the coverage-guided targets under `fuzz/` run) over
//!
//! - the seed corpus `tests/corpus/` (real messages in the network's styles,
//!   HTTP requests, names, metadata files) plus the captured network
//!   metadata `tests/fixtures/network-metadata.json`, each file through
//!   every check, small messages cut at every split point;
//! - random bytes, mutations of the corpus, and structured inputs: JSON
//!   messages of every type with the odd values seen on the network,
//!   FILE_DATA variants, request-like HTTP heads, path-like names and
//!   metadata files in every peer style;
//! - named regression tests for what the fuzzers found.
//!
//! This binary installs the allocation meter, so the checks' memory bounds
//! are enforced here too.

use peershare::fuzzing::{
    check_file_data_decoder, check_http, check_message_decoder, check_metadata, check_sanitizer,
    meter_installed, MeteredAlloc,
};
use peershare::protocol::decoder::{
    decode_all, DataField, DataSink, DecoderLimits, Feed, MessageDecoder,
};
use peershare::protocol::{FileSize, Message, Timestamp};
use proptest::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[global_allocator]
static ALLOC: MeteredAlloc = MeteredAlloc;

// ---------------------------------------------------------------------------
// The seed corpus

fn corpus_files() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join("corpus"))
        .expect("tests/corpus")
        .map(|e| e.expect("corpus entry").path())
        .collect();
    paths.sort();
    paths.push(root.join("fixtures/network-metadata.json"));
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("corpus file"))
        })
        .collect()
}

fn corpus_file(name: &str) -> Vec<u8> {
    corpus_files()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no corpus file {name}"))
        .1
}

/// Every check, on one input (the sanitizer on its text and on each line).
fn run_all_checks(data: &[u8]) {
    check_message_decoder(data);
    check_file_data_decoder(data);
    check_http(data);
    check_metadata(data);
    let text = String::from_utf8_lossy(data);
    check_sanitizer(&text);
    for line in text.lines().take(64) {
        check_sanitizer(line);
    }
}

#[test]
fn the_allocation_meter_is_installed() {
    assert!(meter_installed());
}

#[test]
fn every_corpus_file_passes_every_check() {
    let files = corpus_files();
    assert!(files.len() >= 25, "only {} corpus files", files.len());
    for (name, data) in files {
        eprintln!("corpus: {name}");
        run_all_checks(&data);
    }
}

/// A message decoded whole, and its decoded data.
fn decode_whole(bytes: &[u8]) -> (peershare::protocol::decoder::Decoded, Vec<u8>) {
    decode_all(bytes, DecoderLimits::default()).expect("a corpus message decodes")
}

#[test]
fn small_corpus_messages_decode_identically_at_every_split_point() {
    let mut tried = 0;
    for (name, data) in corpus_files() {
        if !name.ends_with(".json") || name.starts_with("metadata") || data.len() > 2048 {
            continue;
        }
        let Ok(whole) = decode_all(&data, DecoderLimits::default()) else {
            continue;
        };
        tried += 1;
        // One cut anywhere, and two cuts around every position.
        for cut in 0..=data.len() {
            for cuts in [
                vec![cut],
                vec![cut, (cut + 1).min(data.len())],
                vec![cut / 2, cut],
            ] {
                let mut decoder = MessageDecoder::new(DecoderLimits::default());
                let mut sink = Vec::new();
                let mut offset = 0;
                let mut done = None;
                for end in cuts.into_iter().chain([data.len()]) {
                    if end < offset {
                        continue;
                    }
                    if let Feed::Done { consumed } =
                        decoder.feed(&data[offset..end], &mut sink).expect(&name)
                    {
                        done = Some(offset + consumed);
                        break;
                    }
                    offset = end;
                }
                assert!(done.is_some(), "{name} cut at {cut}: incomplete");
                let decoded = decoder.finish().expect(&name);
                assert_eq!(
                    (&decoded, &sink),
                    (&whole.0, &whole.1),
                    "{name} cut at {cut}"
                );
            }
        }
    }
    assert!(tried >= 15, "only {tried} small messages");
}

#[test]
fn corpus_messages_are_the_real_thing() {
    let parse = |name: &str| {
        let (decoded, data) = decode_whole(&corpus_file(name));
        (Message::from_object(&decoded.fields), decoded.data, data)
    };

    let (m, _, _) = parse("gossip-reply-50-files.json");
    let Ok(Message::GossipReply { files, port, .. }) = m else {
        panic!("not a GOSSIP_REPLY: {m:?}")
    };
    assert_eq!((files.len(), port), (50, 8999));
    assert!(
        files.iter().any(|f| f.file_size.bytes().is_none()),
        "MB sizes"
    );
    assert!(files
        .iter()
        .any(|f| matches!(f.file_timestamp, Timestamp::Text(_))));
    assert!(files
        .iter()
        .any(|f| f.file_timestamp.hash_forms().len() == 2));

    let (m, data_field, data) = parse("file-data.json");
    let Ok(Message::FileData(h)) = m else {
        panic!("not FILE_DATA: {m:?}")
    };
    assert_eq!(data, b"hello EldenRing\n");
    assert_eq!(data_field, DataField::Bytes { len: 16 });
    let record = h.to_record().expect("a complete record");
    let ids: Vec<String> = record
        .file_timestamp
        .hash_forms()
        .iter()
        .map(|t| peershare::storage::file_id_for(&data, t).0)
        .collect();
    assert!(ids.contains(&record.file_id.0), "the id verifies");

    let (m, _, data) = parse("file-data-a-style.json");
    assert!(matches!(m, Ok(Message::FileData(_))));
    assert_eq!(data, b"hello EldenRing\n");

    let (m, data_field, _) = parse("file-data-not-found.json");
    assert_eq!(m, Ok(Message::file_not_found()));
    assert_eq!(data_field, DataField::Null);

    assert!(matches!(
        decode_all(
            &corpus_file("file-data-base64.json"),
            DecoderLimits::default()
        ),
        Err(peershare::protocol::decoder::DecodeError::BadHex)
    ));

    let (m, _, _) = parse("gossip-string-port.json");
    assert!(matches!(m, Ok(Message::Gossip { port: 9001, .. })), "{m:?}");
    let (m, _, _) = parse("announce-float.json");
    let Ok(Message::Announce { file, .. }) = m else {
        panic!("not ANNOUNCE")
    };
    assert_eq!(file.file_timestamp.to_string(), "1743970142.6140459");
    assert!(matches!(file.file_size, FileSize::Reported(_)));
    let (m, _, _) = parse("announce-string-timestamp.json");
    assert!(matches!(m, Ok(Message::Announce { .. })));
    assert!(parse("nulls.json").0.is_err());
    assert!(parse("unknown-type.json").0.is_err());
    let (m, _, data) = parse("strings-escapes.json");
    assert!(matches!(m, Ok(Message::Delete { .. })));
    assert_eq!(data, [0]);
}

// ---------------------------------------------------------------------------
// Regression tests: one per crash the fuzzers found (see fuzz/README.md).

/// Found by `check_message_decoder` on `announce-nulls.json` and by
/// `check_metadata` on generated metadata (proptest, here), then again by
/// the coverage-guided `message_decoder` and `metadata` targets from seeds
/// without it (minimised: `tests/corpus/regression-*-without-size.json`):
/// a `file_size` that is missing, null or a string was kept as
/// `Reported(0)`, re-sent as `0`, and read back as `Bytes(0)`: the record
/// changed across a GOSSIP_REPLY / ANNOUNCE or a restart (metadata.json).
/// Now it is `Reported(0.0)`.
#[test]
fn regression_a_size_that_is_not_a_number_survives_re_emission() {
    check_message_decoder(&corpus_file("regression-gossip-reply-without-size.json"));
    check_metadata(&corpus_file("regression-metadata-without-size.json"));
    check_message_decoder(&corpus_file("announce-nulls.json"));

    let announce = br#"{"type":"ANNOUNCE","from":"p","file_name":"n","file_size":null,"file_id":"i","file_owner":"o","file_timestamp":1}"#;
    check_message_decoder(announce);
    let Ok(Message::Announce { file, .. }) = Message::parse(announce) else {
        panic!("not an ANNOUNCE")
    };
    assert_eq!(
        file.file_size.bytes(),
        None,
        "an unknown size is not 0 bytes"
    );
    let Ok(Message::Announce { file: again, .. }) = Message::parse(
        &Message::Announce {
            from: "p".into(),
            file: file.clone(),
        }
        .to_bytes(),
    ) else {
        panic!("not an ANNOUNCE")
    };
    assert_eq!(again, file);

    for size in ["", r#""file_size":"2 MB","#, r#""file_size":null,"#] {
        let metadata =
            format!(r#"{{"k":{{"file_name":"x",{size}"file_owner":"o","file_timestamp":1}}}}"#);
        check_metadata(metadata.as_bytes());
        let reply = format!(
            r#"{{"type":"GOSSIP_REPLY","host":"h","port":1,"peerId":"p","files":[{{"file_name":"x",{size}"file_id":"i","file_owner":"o","file_timestamp":1}}]}}"#
        );
        check_message_decoder(reply.as_bytes());
        let file_data = format!(
            r#"{{"type":"FILE_DATA",{size}"file_id":"i","file_name":"x","file_owner":"o","file_timestamp":1,"data":"00"}}"#
        );
        check_message_decoder(file_data.as_bytes());
    }
}

// ---------------------------------------------------------------------------
// Structured inputs

/// A JSON value text of the kinds seen on the network, and odd ones.
fn odd_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u32>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_string()),
        Just("1744169352.0".to_string()),
        Just("1743970142.6140459".to_string()),
        Just("2.8e-05".to_string()),
        Just("1.7906866073608398".to_string()),
        Just("0.0".to_string()),
        Just("-0".to_string()),
        Just("1E400".to_string()),
        any::<f64>().prop_map(|f| serde_json::to_string(&f).unwrap()),
        Just("null".to_string()),
        Just("true".to_string()),
        Just("\"Sun Jun 15 21:36:41 2025\"".to_string()),
        Just("\"8999\"".to_string()),
        Just("\" 65535 \"".to_string()),
        "[a-zA-Z0-9 !/.\\\\\"{}\\[\\]é😀\u{1}]{0,16}"
            .prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("[\"A\",\"B\"]".to_string()),
        Just("{\"}\":\"{\",\"data\":\"zz\"}".to_string()),
    ]
}

/// A plausible string value (a peer id, a host, a name, an id).
fn some_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("nanday".to_string()),
        Just("Starscourge Radahn".to_string()),
        Just("TEST8!!!".to_string()),
        Just("silicon.cs.umanitoba.ca".to_string()),
        Just("dir/x.txt".to_string()),
        Just("../../etc/passwd".to_string()),
        "[0-9a-f]{64}",
        "[ -~é😀]{0,24}",
    ]
    .prop_map(|s| serde_json::to_string(&s).unwrap())
}

/// Either a plausible value for the field, or an odd one.
fn field(plausible: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop_oneof![3 => plausible, 1 => odd_value()].boxed()
}

fn file_record_members() -> BoxedStrategy<Vec<(String, String)>> {
    (
        field(some_string().boxed()),
        field(prop_oneof![any::<u32>().prop_map(|n| n.to_string()), Just("2.2".into())].boxed()),
        field("[0-9a-f]{64}".prop_map(|s| format!("\"{s}\"")).boxed()),
        field(some_string().boxed()),
        field(any::<u32>().prop_map(|n| n.to_string()).boxed()),
        proptest::option::of(Just("[\"A\",\"B\"]".to_string())),
    )
        .prop_map(|(name, size, id, owner, ts, peers)| {
            let mut m = vec![
                ("file_name".into(), name),
                ("file_size".into(), size),
                ("file_id".into(), id),
                ("file_owner".into(), owner),
                ("file_timestamp".into(), ts),
            ];
            if let Some(p) = peers {
                m.push(("peers".into(), p));
            }
            m
        })
        .boxed()
}

fn object_text(members: &[(String, String)]) -> String {
    let inner: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A message of any type, its members in any order, with odd values.
fn arb_message() -> impl Strategy<Value = Vec<(String, String)>> {
    let port = || {
        field(
            prop_oneof![
                (1u16..).prop_map(|p| p.to_string()),
                Just("\"9001\"".into())
            ]
            .boxed(),
        )
    };
    let gossip = (
        field(some_string().boxed()),
        port(),
        field(some_string().boxed()),
        field(some_string().boxed()),
    )
        .prop_map(|(h, p, id, peer)| {
            vec![
                ("type".into(), "\"GOSSIP\"".into()),
                ("host".into(), h),
                ("port".into(), p),
                ("id".into(), id),
                ("peerId".into(), peer),
            ]
        });
    let reply = (
        field(some_string().boxed()),
        port(),
        field(some_string().boxed()),
        proptest::collection::vec(file_record_members(), 0..6),
    )
        .prop_map(|(h, p, peer, files)| {
            let files: Vec<String> = files.iter().map(|f| object_text(f)).collect();
            vec![
                ("type".into(), "\"GOSSIP_REPLY\"".into()),
                ("host".into(), h),
                ("port".into(), p),
                ("peerId".into(), peer),
                ("files".into(), format!("[{}]", files.join(","))),
            ]
        });
    let get = field(some_string().boxed()).prop_map(|id| {
        vec![
            ("type".into(), "\"GET_FILE\"".into()),
            ("file_id".into(), id),
        ]
    });
    let file_data = (
        file_record_members(),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64)
                .prop_map(|b| format!("\"{}\"", faster_hex::hex_string(&b))),
            Just("null".to_string()),
            Just("\"aGVsbG8=\"".to_string()),
            Just("\"ABCDEF\"".to_string()),
        ],
    )
        .prop_map(|(mut m, data)| {
            m.insert(0, ("type".into(), "\"FILE_DATA\"".into()));
            m.push(("data".into(), data));
            m
        });
    let announce =
        (file_record_members(), field(some_string().boxed())).prop_map(|(mut m, from)| {
            m.insert(0, ("type".into(), "\"ANNOUNCE\"".into()));
            m.push(("from".into(), from));
            m
        });
    let delete =
        (field(some_string().boxed()), field(some_string().boxed())).prop_map(|(from, id)| {
            vec![
                ("type".into(), "\"DELETE\"".into()),
                ("from".into(), from),
                ("file_id".into(), id),
            ]
        });
    prop_oneof![
        gossip,
        reply,
        get,
        file_data,
        announce,
        delete,
        odd_value().prop_map(|t| vec![("type".to_string(), t)])
    ]
    .prop_shuffle()
}

/// Writes members as the network's peers do: compact (R, H), with spaces
/// and a newline (A), or pretty; sometimes followed by another message.
fn message_text(members: &[(String, String)], style: u8, trailer: bool) -> Vec<u8> {
    let (open, colon, sep, close) = match style % 3 {
        0 => ("{", ":", ",", "}"),
        1 => ("{", ": ", ", ", "}\n"),
        _ => (" \r\n{\n    ", " : ", ",\n    ", "\n}\n"),
    };
    let inner: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}{colon}{v}", serde_json::to_string(k).unwrap()))
        .collect();
    let mut text = format!("{open}{}{close}", inner.join(sep)).into_bytes();
    if trailer {
        text.extend_from_slice(br#"{"type":"DELETE","from":"x","file_id":"y"}"#);
    }
    text
}

fn mutate(mut data: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, op, byte) in edits {
        let at = if data.is_empty() {
            0
        } else {
            at % (data.len() + 1)
        };
        match op % 4 {
            0 if at < data.len() => data[at] = byte,
            1 => data.insert(at, byte),
            2 if at < data.len() => {
                data.remove(at);
            }
            _ if at < data.len() => data[at] ^= 1 << (byte % 8),
            _ => data.push(byte),
        }
    }
    data
}

fn metadata_text() -> impl Strategy<Value = Vec<u8>> {
    let entry = (
        file_record_members(),
        prop_oneof![
            Just(None),
            Just(Some(("has_copy", "\"yes\""))),
            Just(Some(("has_copy", "\"no\""))),
            Just(Some(("hasCopy", "true"))),
            Just(Some(("hasCopy", "\"YES\""))),
            Just(Some(("has_copy", "7"))),
        ],
        prop_oneof![
            Just(None),
            Just(Some(("peers_with_file", "[\"a\",\"b b!\",\"a\"]"))),
            Just(Some(("peers", "[\"A\", 5, null]"))),
            Just(Some(("peers_with_file", "\"x\""))),
        ],
        proptest::option::of(some_string()),
        proptest::option::of(prop_oneof![Just("true"), Just("\"no\""), Just("null")]),
        any::<bool>(),
    )
        .prop_map(|(mut m, copy, peers, local, verified, drop_id)| {
            if drop_id {
                m.retain(|(k, _)| k != "file_id");
            }
            for (k, v) in [copy, peers].into_iter().flatten() {
                m.push((k.into(), v.into()));
            }
            if let Some(l) = local {
                m.push(("local_name".into(), l));
            }
            if let Some(v) = verified {
                m.push(("verified".into(), v.into()));
            }
            m
        });
    proptest::collection::vec(
        (
            "[a-f0-9]{1,8}",
            prop_oneof![4 => entry.prop_map(|m| object_text(&m)), 1 => odd_value()],
        ),
        0..8,
    )
    .prop_map(|entries| {
        let members: Vec<(String, String)> = entries;
        message_text(&members, 2, false)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    // --- random and mutated bytes through every check

    #[test]
    fn random_bytes_pass_every_check(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        run_all_checks(&data);
    }

    #[test]
    fn json_noise_passes_the_decoder_checks(
        data in proptest::collection::vec(
            prop_oneof![
                Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b'"'), Just(b'\\'),
                Just(b':'), Just(b','), Just(b' '), Just(b'0'), Just(b'a'), Just(b'd'),
                Just(b't'), Just(b'n'), Just(b'u'), Just(b'l'), Just(b'\n'),
            ],
            0..120,
        ),
        prefix in prop_oneof![Just(&b""[..]), Just(&b"{\"data\":\""[..]), Just(&b"{\"a\":"[..]), Just(&b"{\"data\":"[..])],
    ) {
        let mut input = prefix.to_vec();
        input.extend_from_slice(&data);
        check_message_decoder(&input);
        check_metadata(&input);
    }

    #[test]
    fn mutated_corpus_files_pass_every_check(
        index in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let files = corpus_files();
        let (_, data) = &files[index.index(files.len())];
        run_all_checks(&mutate(data.clone(), &edits));
    }

    // --- structured inputs

    #[test]
    fn generated_messages_pass_the_decoder_check(
        members in arb_message(),
        style in any::<u8>(),
        trailer in any::<bool>(),
    ) {
        let text = message_text(&members, style, trailer);
        check_message_decoder(&text);
        // A well-typed message of a known type parses as that type.
        let (decoded, _) = match decode_all(&text, DecoderLimits::default()) {
            Ok(d) => d,
            Err(e) => {
                // Only a bad `data` may refuse a generated message.
                prop_assert!(matches!(e, peershare::protocol::decoder::DecodeError::BadHex), "{e:?}");
                return Ok(());
            }
        };
        if let Ok(m) = Message::from_object(&decoded.fields) {
            prop_assert_eq!(Some(&Value::String(m.kind().into())), decoded.fields.get("type"));
        }
    }

    #[test]
    fn file_data_variants_pass_their_check(
        variant in any::<u8>(),
        ctl in any::<u8>(),
        payload in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            "[0-9a-fA-F]{0,40}".prop_map(String::into_bytes),
            "[0-9a-fA-Fg\"\\\\ ]{0,40}".prop_map(String::into_bytes),
        ],
    ) {
        let mut input = vec![variant, ctl];
        input.extend_from_slice(&payload);
        check_file_data_decoder(&input);
    }

    #[test]
    fn request_like_heads_pass_the_http_check(
        lead in prop_oneof![Just(""), Just("\r\n"), Just("\n")],
        method in prop_oneof![Just("GET".to_string()), Just("HEAD".to_string()), "[A-Za-z]{0,7}"],
        target in prop_oneof![
            Just("/".to_string()), Just("/index.html".to_string()), Just("/api/state".to_string()),
            Just("/api/state?t=1".to_string()), Just("HTTP://h:1/api/state#x".to_string()),
            Just("*".to_string()), "[ -~]{0,24}",
        ],
        version in prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0"), Just("HTTP/2"), Just("")],
        headers in proptest::collection::vec(("[!-~&&[^:]]{0,10}", "[ -~\u{80}-\u{ff}]{0,20}"), 0..36),
        end in prop_oneof![Just("\r\n"), Just("\n"), Just("")],
        body in "[ -~]{0,16}",
    ) {
        let mut req = format!("{lead}{method} {target} {version}\r\n");
        for (name, value) in &headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str(end);
        req.push_str(&body);
        check_http(req.as_bytes());
    }

    #[test]
    fn path_like_names_pass_the_sanitizer_check(
        parts in proptest::collection::vec(
            prop_oneof![
                Just(".".to_string()), Just("..".to_string()), Just("".to_string()),
                Just("metadata.json".to_string()), Just("metadata.json.corrupt-1".to_string()),
                Just(".partial-x".to_string()), Just(".bashrc".to_string()),
                "[a-zé😀 .\u{0}\n\u{7f}\u{85}]{0,12}",
                (1usize..300).prop_map(|n| "é".repeat(n) + ".txt"),
                (250usize..260).prop_map(|n| "x".repeat(n)),
                (200usize..300).prop_map(|n| format!("a.{}", "e".repeat(n))),
            ],
            1..5,
        ),
        sep in prop_oneof![Just("/"), Just("\\"), Just("//")],
    ) {
        check_sanitizer(&parts.join(sep));
        check_sanitizer(&parts.concat());
    }

    #[test]
    fn generated_metadata_passes_the_metadata_check(text in metadata_text()) {
        check_metadata(&text);
    }
}

/// A sink that accepts nothing, to check a failing disk is an error, at any
/// split (the checks only use sinks that accept).
#[test]
fn a_failing_sink_is_an_error_at_every_split() {
    struct Full;
    impl DataSink for Full {
        fn write_data(&mut self, _: &[u8]) -> std::io::Result<()> {
            Err(std::io::Error::other("disk full"))
        }
    }
    let msg = corpus_file("file-data.json");
    for cut in 0..=msg.len() {
        let mut decoder = MessageDecoder::new(DecoderLimits::default());
        let first = decoder.feed(&msg[..cut], &mut Full);
        let result = first.and_then(|f| match f {
            Feed::Done { .. } => Ok(f),
            Feed::NeedMore => decoder.feed(&msg[cut..], &mut Full),
        });
        assert!(result.is_err(), "cut at {cut}");
    }
}
