#![no_main]
//! `cargo +nightly fuzz run archive` (docs/reliability.md). The body is shared with the corpus
//! replay in tests/fuzz_corpus.rs, which runs on stable in every `cargo test`.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::archive(data));
