//! A client token: kid, verification, and claims behind a good signature.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sites::fuzz::token(data));
