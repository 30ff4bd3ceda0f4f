//! One line of the Meteor controller port.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| api::fuzz::meteor_line(data));
