//! The query of a `GET /ws?…` upgrade: its channels and `since`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| push::fuzz::ws_query(data));
