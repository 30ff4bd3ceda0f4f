//! A Mercure subscribe query (even first byte) or publish form (odd first byte).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| push::fuzz::mercure_request(data));
