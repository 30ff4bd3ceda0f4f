//! The bytes a STOMP client sends to the STOMP publish port.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| api::fuzz::stomp_frames(data));
