//! An SSE request head off a fresh socket.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| push::fuzz::sse_head(data));
