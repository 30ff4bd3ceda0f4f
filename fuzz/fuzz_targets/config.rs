//! The text of a configuration file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| api::fuzz::config(data));
