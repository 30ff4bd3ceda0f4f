//! The configuration file, the `/api/deliver` body, a Meteor controller
//! line and STOMP frames, as the fuzz targets
//! in `fuzz/` read them, and the replay of their committed corpora as unit
//! tests (so stable CI runs every input the fuzzers kept, without nightly).
//! Not an API: nothing outside the fuzz targets may depend on it.

use bytes::Bytes;
use fanout::Recipients;

use crate::{
    compat::{
        meteor::{command, unslash::strip_slashes},
        publish::message_data,
    },
    config,
    http::deliver::parse,
};

/// The text of a configuration file, parsed and validated.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = config::from_toml(text);
    }
}

/// The largest `data` the fuzzed deliveries may carry.
const MAX_MESSAGE_BYTES: usize = 1024;

/// A `POST /api/deliver` body. A delivery that parses has recipients, and
/// its `data` is JSON cut from the body, within the size limit.
pub fn deliver_body(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    if let Ok(delivery) = parse::parse(&body, Recipients::new("fuzz", 16), MAX_MESSAGE_BYTES) {
        assert!(
            delivery.recipients.added() > 0,
            "a delivery without recipients"
        );
        assert!(delivery.data.len() <= MAX_MESSAGE_BYTES);
        assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(&delivery.data).is_ok(),
            "data {:?} is not JSON",
            String::from_utf8_lossy(&delivery.data)
        );
    }
}

/// One line of the Meteor controller port. A message it would publish is
/// JSON once unescaped, whatever the text.
pub fn meteor_line(data: &[u8]) {
    if let Some(command::Command::AddMessage { text, .. }) = command::parse(data) {
        let message = message_data(strip_slashes(text));
        assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(&message).is_ok(),
            "message {:?} is not JSON",
            String::from_utf8_lossy(&message)
        );
    }
}

/// The bytes a STOMP client sends. Each frame taken comes off the front of
/// what was read, so the reader always moves on or waits for more.
pub fn stomp_frames(data: &[u8]) {
    let mut buffer = bytes::BytesMut::from(data);
    loop {
        let before = buffer.len();
        match push::stomp::parse(&mut buffer) {
            push::stomp::Parsed::Frame(frame) => {
                assert!(buffer.len() < before, "a frame took no bytes");
                assert!(!frame.command.is_empty());
            }
            push::stomp::Parsed::Incomplete | push::stomp::Parsed::Invalid(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays every file of `fuzz/corpus/<target>` through `run`.
    fn replay(target: &str, run: fn(&[u8])) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut replayed = 0;
        for entry in entries {
            run(&std::fs::read(entry.unwrap().path()).unwrap());
            replayed += 1;
        }
        assert!(replayed > 0, "{} holds no input", dir.display());
    }

    #[test]
    fn replays_the_config_corpus() {
        replay("config", config);
    }

    #[test]
    fn replays_the_deliver_body_corpus() {
        replay("deliver_body", deliver_body);
    }

    #[test]
    fn replays_the_meteor_line_corpus() {
        replay("meteor_line", meteor_line);
    }

    #[test]
    fn replays_the_stomp_frames_corpus() {
        replay("stomp_frames", stomp_frames);
    }
}
