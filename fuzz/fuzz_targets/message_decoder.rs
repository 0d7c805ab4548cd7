//! Coverage-guided target: `peershare::fuzzing::check_message_decoder`, the same invariant
//! check `cargo test` runs (tests/fuzz_corpus.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use peershare::fuzzing::{check_message_decoder, MeteredAlloc};

// Counts allocations so the check's memory bounds are enforced.
#[global_allocator]
static ALLOC: MeteredAlloc = MeteredAlloc;

fuzz_target!(|data: &[u8]| check_message_decoder(data));
