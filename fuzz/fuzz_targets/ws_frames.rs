//! Client-to-server WebSocket frames, read whole and in pieces.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| push::fuzz::ws_frames(data));
