//! A Pusher-signed REST request: its query, then its body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sites::fuzz::pusher_request(data));
