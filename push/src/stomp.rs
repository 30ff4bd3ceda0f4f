//! STOMP 1.0–1.2 frames: parsed from what a connection has read so far, and
//! written. Both STOMP ways in use them: the publish port for Orbited sites
//! (`api::compat::stomp`, frames on a TCP stream) and STOMP over WebSocket
//! (`protocol/stomp.rs`, one frame per WebSocket message). Header values are taken with their leading spaces trimmed,
//! because the PHP client StatusNet bundles (`extlib/Stomp.php`) writes
//! `name: value` (`../shared/reference/protocols.md` §4); a repeated header
//! keeps its first value, as STOMP 1.2 says.

use bytes::{Buf, Bytes, BytesMut};

/// A frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// What the bytes read so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole frame, taken off the buffer.
    Frame(Frame),
    /// Not a whole frame yet.
    Incomplete,
    /// Not STOMP: the reason, for the `ERROR` frame.
    Invalid(&'static str),
}

/// Takes the next frame off `buffer`, skipping the line ends that may come
/// between frames (heart-beats, the `\n` after a frame's NUL).
pub fn parse(buffer: &mut BytesMut) -> Parsed {
    let start = buffer
        .iter()
        .position(|&byte| byte != b'\n' && byte != b'\r')
        .unwrap_or(buffer.len());
    buffer.advance(start);
    let Some(head_end) = find(buffer, b"\n\n", b"\r\n\r\n") else {
        return Parsed::Incomplete;
    };
    let (head_len, blank_len) = head_end;
    let Ok(head) = std::str::from_utf8(&buffer[..head_len]) else {
        return Parsed::Invalid("frame headers are not UTF-8");
    };
    let mut lines = head.lines();
    let command = lines.next().unwrap_or_default().trim_end().to_string();
    if command.is_empty() || !command.bytes().all(|b| b.is_ascii_uppercase()) {
        return Parsed::Invalid("a frame starts with its command in capitals");
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        let line = line.trim_end_matches('\r');
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Invalid("a header line has no ':'");
        };
        if !headers.iter().any(|(key, _)| key == name) {
            headers.push((name.to_string(), value.trim_start().to_string()));
        }
    }
    let body_start = head_len + blank_len;
    let length = headers
        .iter()
        .find(|(key, _)| key == "content-length")
        .map(|(_, value)| value.parse::<usize>());
    let body_end = match length {
        Some(Err(_)) => return Parsed::Invalid("content-length is not a number"),
        Some(Ok(length)) => {
            let end = body_start + length;
            if buffer.len() <= end {
                return Parsed::Incomplete;
            }
            if buffer[end] != 0 {
                return Parsed::Invalid("no NUL after content-length bytes of body");
            }
            end
        }
        None => match buffer[body_start..].iter().position(|&byte| byte == 0) {
            Some(at) => body_start + at,
            None => return Parsed::Incomplete,
        },
    };
    let mut frame = buffer.split_to(body_end + 1);
    frame.truncate(body_end);
    let body = frame.split_off(body_start).freeze();
    Parsed::Frame(Frame {
        command,
        headers,
        body,
    })
}

/// Where the head ends: its length and that of the blank line after it.
fn find(buffer: &[u8], lf: &[u8], crlf: &[u8]) -> Option<(usize, usize)> {
    let at = |needle: &[u8]| buffer.windows(needle.len()).position(|w| w == needle);
    match (at(lf), at(crlf)) {
        (Some(a), Some(b)) if b < a => Some((b, crlf.len())),
        (Some(a), _) => Some((a, lf.len())),
        (None, Some(b)) => Some((b, crlf.len())),
        (None, None) => None,
    }
}

/// A server frame, ending in NUL and LF: the PHP client reads until it sees
/// both, so a frame without the LF would leave it waiting.
pub fn encode(command: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(command.len() + body.len() + 64);
    out.extend_from_slice(command.as_bytes());
    out.push(b'\n');
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        // A line end in a value would end the header early.
        out.extend(
            value
                .bytes()
                .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(b"\0\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> (Vec<Parsed>, usize) {
        let mut buffer = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match parse(&mut buffer) {
                Parsed::Incomplete => return (out, buffer.len()),
                other => {
                    let invalid = matches!(other, Parsed::Invalid(_));
                    out.push(other);
                    if invalid {
                        return (out, buffer.len());
                    }
                }
            }
        }
    }

    fn frame(command: &str, headers: &[(&str, &str)], body: &str) -> Parsed {
        Parsed::Frame(Frame {
            command: command.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Bytes::copy_from_slice(body.as_bytes()),
        })
    }

    #[test]
    fn reads_what_stomp_php_writes() {
        let (parsed, left) = frames(
            b"CONNECT\nlogin: site\npasscode: secret\n\n\x00\n\
              SEND\ndestination: /all/evan\n\n{\"text\":\"hi\"}\x00\n\
              DISCONNECT\n\n\x00\n",
        );
        assert_eq!(
            parsed,
            [
                frame("CONNECT", &[("login", "site"), ("passcode", "secret")], ""),
                frame("SEND", &[("destination", "/all/evan")], r#"{"text":"hi"}"#),
                frame("DISCONNECT", &[], ""),
            ]
        );
        assert_eq!(left, 0);
    }

    #[test]
    fn content_length_bodies_may_hold_nul_and_crlf_heads_are_read() {
        let (parsed, _) = frames(
            b"\r\n\nSEND\r\ndestination:/a\r\ncontent-length:3\r\ndestination:/b\r\n\r\na\x00b\x00",
        );
        assert_eq!(
            parsed,
            [frame(
                "SEND",
                &[("destination", "/a"), ("content-length", "3")],
                "a\0b"
            )]
        );
    }

    #[test]
    fn waits_for_the_rest_and_refuses_what_is_not_stomp() {
        for partial in [
            &b"SEND\ndestination:/a\n"[..],
            b"SEND\n\nbody",
            b"SEND\ncontent-length:5\n\nab\x00",
        ] {
            assert_eq!(frames(partial).0, [], "{partial:?}");
        }
        for bad in [
            &b"send\n\n\x00"[..],
            b"SEND\nno colon\n\n\x00",
            b"SEND\ncontent-length:x\n\n\x00",
            b"SEND\ncontent-length:1\n\nab\x00",
            b"SEND\nd:\xff\n\n\x00",
        ] {
            assert!(
                matches!(frames(bad).0.last(), Some(Parsed::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn server_frames_end_in_nul_and_lf() {
        assert_eq!(
            encode("CONNECTED", &[("session", "1"), ("message", "a\nb")], ""),
            b"CONNECTED\nsession:1\nmessage:a b\n\n\x00\n"
        );
    }
}
