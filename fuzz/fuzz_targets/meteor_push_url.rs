//! A Meteor subscriber URL: `GET /push/<hostid>/<mode>/<channel>[suffix]…`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| push::fuzz::meteor_push_url(data));
