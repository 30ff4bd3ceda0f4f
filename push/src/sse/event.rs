//! SSE framing (the WHATWG event-stream format): events of `id:`,
//! `event:` and `data:` lines, ended by a blank line.

use bytes::{BufMut, Bytes, BytesMut};

/// A complete event with an optional `id` and `event` type.
pub(crate) fn event(id: Option<&str>, kind: Option<&str>, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 64);
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(kind) = kind {
        out.put_slice(b"event: ");
        out.put_slice(kind.as_bytes());
        out.put_u8(b'\n');
    }
    data_lines(data.as_bytes(), &mut out);
    out.put_u8(b'\n');
    out.freeze()
}

/// Writes `data` as `data:` lines. JSON may contain line breaks only as
/// whitespace between tokens, so splitting there keeps every string intact,
/// and EventSource joins the lines back with `\n`.
pub(crate) fn data_lines(data: &[u8], out: &mut BytesMut) {
    let mut rest = data;
    loop {
        out.put_slice(b"data: ");
        match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(at) => {
                out.put_slice(&rest[..at]);
                out.put_u8(b'\n');
                let skip = if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[at + skip..];
            }
            None => {
                out.put_slice(rest);
                out.put_u8(b'\n');
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_lines() {
        let event = event(Some("1f:3"), Some("subscribed"), "a\r\nb\rc");
        assert_eq!(
            &event[..],
            b"id: 1f:3\nevent: subscribed\ndata: a\ndata: b\ndata: c\n\n"
        );
    }
}
