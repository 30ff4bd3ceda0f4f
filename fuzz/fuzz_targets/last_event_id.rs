//! A Last-Event-ID cursor, with the stream's channel count.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| push::fuzz::last_event_id(data));
