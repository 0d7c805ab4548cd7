//! Transfer benchmarks: the FILE_DATA codec, raw loopback TCP, and real
//! peershare processes end to end.
//!
//! ```text
//! cargo bench --bench transfer   # everything (3-7 minutes on 2 cores)
//! cargo bench --bench transfer -- end_to_end   # one group
//! ```
//!
//! Every group reports `Throughput::Bytes(file bytes)`, so MB/s are file
//! bytes per second everywhere and the groups compare directly.
//!
//! - `encode/{memory,mapped}`: `FileDataEncoder` writing one FILE_DATA into
//!   `io::sink()` (hex encoding and the write loop; no socket copy). `memory`
//!   serves a `Vec`, `mapped` a memory-mapped temp file as the peer does
//!   (page faults and the per-chunk `MADV_DONTNEED` included).
//! - `decode`: `MessageDecoder` fed a pre-encoded FILE_DATA in 1 MiB pieces
//!   (as the driver's 1 MiB socket reads arrive) into a discarding sink.
//! - `loopback_raw`: a plain TCP copy over 127.0.0.1 of as many bytes as the
//!   FILE_DATA message has on the wire (2 x file + envelope): one thread
//!   writes 1 MiB buffers, the other reads with a 1 MiB buffer. It moves
//!   twice the file's bytes but reports the file's, so it is the ceiling the
//!   end-to-end figure can be compared against.
//! - `end_to_end`: two release `peershare` processes on 127.0.0.1. The
//!   serving peer holds a random file of the size (written into its storage
//!   folder before it starts; its folder scan adds it) and runs with
//!   `--gossip-interval 0.2 --auto-fetch 0 --no-well-known`. For every
//!   iteration a fresh downloader (new empty storage folder,
//!   `--well-known` the server, `--gossip-interval 0.2 --auto-fetch 0`) is
//!   started and waits until it knows the file; that set-up is not timed
//!   (`iter_custom`). Timed: from typing `get <file_id>` on its stdin to its
//!   `get: saved ...` stdout line, which the peer prints after the file is
//!   hashed, fsynced and renamed into place.
//!
//! The peershare binary: `PEERSHARE_BIN` if set, else the one cargo builds
//! for this bench (`CARGO_BIN_EXE_peershare`): that is
//! `$CARGO_TARGET_DIR/release/peershare` (default `target/release/`), the
//! file `cargo build --release` makes, rebuilt by `cargo bench` with the
//! bench profile (the release settings), so it is never stale.
//!
//! Storage folders, the served files and temp files live in temp folders
//! under `$TMPDIR` (default `/tmp`), removed when done. The downloader's
//! fsync makes the end-to-end figure depend on that file system: run with
//! `TMPDIR=/dev/shm` to measure the transfer without the disk.

#[path = "support/peers.rs"]
mod peers;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use peershare::net::sockopt;
use peershare::protocol::decoder::{DecoderLimits, DiscardSink, Feed, MessageDecoder};
use peershare::protocol::encoder::{FileDataEncoder, FileSource, WriteProgress};
use peershare::protocol::{FileRecord, FileSize, Timestamp};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

/// Socket read and write size of the loopback copy, and the decoder's feed
/// size (the driver reads sockets 1 MiB at a time).
const PIECE: usize = MIB;

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; len];
    SmallRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// A record like the one the end-to-end server sends.
fn record(len: usize) -> FileRecord {
    FileRecord {
        file_name: format!("blob-{len}.bin"),
        file_size: FileSize::Bytes(len as u64),
        file_id: "5f".repeat(32).as_str().into(),
        file_owner: "bench-server".into(),
        file_timestamp: Timestamp::from_secs(1_764_000_000),
    }
}

/// Writes the whole message into a writer that never blocks.
fn encode_all(enc: &mut FileDataEncoder, w: &mut impl Write) {
    match enc.write_to(w) {
        Ok(WriteProgress::Done) => {}
        Ok(WriteProgress::Blocked) => panic!("a sink never blocks"),
        Err(e) => panic!("encode failed: {e}"),
    }
}

/// Bytes of the FILE_DATA for a file of `len` bytes: envelope + 2 x len + tail.
fn wire_len(len: usize) -> usize {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    // The message of a 1-byte file with this size's record, plus the hex
    // of the other bytes; `file_size` then has one digit where the real one
    // has more.
    let mut enc = FileDataEncoder::new(&record(len), FileSource::Memory(vec![0]));
    let mut c = Count(0);
    encode_all(&mut enc, &mut c);
    c.0 + 2 * (len - 1) + len.to_string().len() - 1
}

fn map_file(file: &std::fs::File) -> memmap2::Mmap {
    // SAFETY: a private temp file of this bench, never changed while mapped.
    #[allow(unsafe_code)]
    unsafe {
        memmap2::Mmap::map(file).expect("mmap")
    }
}

/// 20 samples of 1 MiB; 10 flat samples of larger sizes.
fn codec_sampling(g: &mut BenchmarkGroup<'_, WallTime>, len: usize) {
    if len <= MIB {
        g.sample_size(20)
            .sampling_mode(SamplingMode::Auto)
            .measurement_time(Duration::from_secs(2));
    } else {
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .measurement_time(Duration::from_secs(3));
    }
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.warm_up_time(Duration::from_millis(500));
    for len in [MIB, 64 * MIB] {
        codec_sampling(&mut g, len);
        let data = random_bytes(len, 1);
        let rec = record(len);
        g.throughput(Throughput::Bytes(len as u64));
        // The source moves into the encoder: its copy is made untimed.
        g.bench_with_input(BenchmarkId::new("memory", len / MIB), &len, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let source = FileSource::Memory(data.clone());
                    let start = Instant::now();
                    let mut enc = FileDataEncoder::new(&rec, source);
                    encode_all(&mut enc, &mut io::sink());
                    total += start.elapsed();
                    black_box(enc);
                }
                total
            })
        });
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(&data).expect("write temp file");
        g.bench_with_input(BenchmarkId::new("mapped", len / MIB), &len, |b, _| {
            b.iter(|| {
                let mut enc = FileDataEncoder::new(&rec, FileSource::Mapped(map_file(&file)));
                encode_all(&mut enc, &mut io::sink());
                black_box(enc)
            })
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.warm_up_time(Duration::from_millis(500));
    for len in [MIB, 64 * MIB] {
        codec_sampling(&mut g, len);
        let mut wire = Vec::with_capacity(wire_len(len));
        let mut enc = FileDataEncoder::new(&record(len), FileSource::Memory(random_bytes(len, 2)));
        encode_all(&mut enc, &mut wire);
        assert_eq!(wire.len(), wire_len(len));
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len / MIB), &len, |b, _| {
            b.iter(|| {
                let mut decoder = MessageDecoder::new(DecoderLimits::default());
                let mut sink = DiscardSink;
                let mut done = false;
                for piece in wire.chunks(PIECE) {
                    if let Feed::Done { .. } = decoder.feed(piece, &mut sink).expect("decode") {
                        done = true;
                        break;
                    }
                }
                assert!(done, "message did not end");
                black_box(decoder.finish().expect("finish"))
            })
        });
    }
    g.finish();
}

/// Copies `total` bytes over a fresh loopback connection; the time from the
/// first write to the last byte read (connection set-up excluded). The
/// sender is set up as a peer's GET_FILE reply is: accepted from a listener
/// switched to the unpaced congestion control (`net::sockopt`), so the
/// ratio compares like with like.
fn loopback_copy(total: usize) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    sockopt::unpaced_listener(&listener);
    let addr = listener.local_addr().expect("addr");
    let mut rx = TcpStream::connect(addr).expect("connect");
    let (mut tx, _) = listener.accept().expect("accept");
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; PIECE];
        let mut got = 0;
        while got < total {
            match rx.read(&mut buf) {
                Ok(0) => panic!("early EOF after {got} bytes"),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        Instant::now()
    });
    let buf = vec![b'a'; PIECE];
    let start = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(PIECE);
        tx.write_all(&buf[..n]).expect("write");
        left -= n;
    }
    let end = reader.join().expect("reader");
    end - start
}

fn loopback_raw(c: &mut Criterion) {
    let mut g = c.benchmark_group("loopback_raw");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500));
    for (len, measure) in [(MIB, 1), (64 * MIB, 3), (512 * MIB, 8)] {
        let total = wire_len(len);
        g.measurement_time(Duration::from_secs(measure));
        // Twice the file's bytes (plus the envelope) cross the socket, but
        // the throughput is counted in file bytes, like end_to_end's.
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(len / MIB),
            &total,
            |b, &total| b.iter_custom(|iters| (0..iters).map(|_| loopback_copy(total)).sum()),
        );
    }
    g.finish();
}

fn end_to_end(c: &mut Criterion) {
    let mut g = c.benchmark_group("end_to_end");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(100));
    // Each iteration also starts a downloader (untimed, a few tenths of a
    // second), so the measurement times stay short: criterion then runs 10
    // samples of one or a few iterations each.
    for (len, measure) in [(MIB, 0.5), (64 * MIB, 3.0), (512 * MIB, 10.0)] {
        let root = tempfile::tempdir().expect("temp dir");
        let server = peers::Server::start(root.path(), len as u64);
        g.throughput(Throughput::Bytes(len as u64))
            .measurement_time(Duration::from_secs_f64(measure));
        let mut round = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(len / MIB), &len, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    let dir = root.path().join(format!("downloader-{round}"));
                    let mut down = server.downloader(&dir);
                    total += down.get(&server.file_id);
                    drop(down);
                    std::fs::remove_dir_all(&dir).expect("remove downloader folder");
                }
                total
            })
        });
        drop(server);
    }
    g.finish();
}

criterion_group!(benches, encode, decode, loopback_raw, end_to_end);
criterion_main!(benches);
