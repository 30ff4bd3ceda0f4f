//! A POST /api/deliver body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| api::fuzz::deliver_body(data));
