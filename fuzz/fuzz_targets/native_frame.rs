//! A client frame of the native protocol on WebSocket.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| push::fuzz::native_frame(data));
