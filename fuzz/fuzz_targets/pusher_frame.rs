//! A Pusher protocol client frame, as `/app/<key>` reads it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| push::fuzz::pusher_frame(data));
