//! Coverage-guided target: `peershare::fuzzing::check_sanitizer`, the same
//! invariant check `cargo test` runs (tests/fuzz_corpus.rs), on the input
//! as text (invalid UTF-8 replaced, as a name from JSON always is valid).
#![no_main]

use libfuzzer_sys::fuzz_target;
use peershare::fuzzing::{check_sanitizer, MeteredAlloc};

#[global_allocator]
static ALLOC: MeteredAlloc = MeteredAlloc;

fuzz_target!(|data: &[u8]| check_sanitizer(&String::from_utf8_lossy(data)));
