//! The frames a STOMP-over-WebSocket client sends to `/stomp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| push::fuzz::stomp_ws_frames(data));
