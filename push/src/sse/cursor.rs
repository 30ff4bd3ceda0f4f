//! The SSE event id: one cursor covering every channel of the stream.
//!
//! Format: `epoch:offset` per channel, in the order of the stream's
//! `channel` parameters, joined by `,` — for example `1f3a:42,9c0d:7`.

use bytes::Bytes;
use fanout::{Epoch, Position};

/// Writes the cursor for `positions`.
pub(crate) fn format(positions: impl Iterator<Item = Position>) -> String {
    let mut cursor = String::with_capacity(24);
    for (i, position) in positions.enumerate() {
        if i > 0 {
            cursor.push(',');
        }
        cursor.push_str(&position.epoch.to_string());
        cursor.push(':');
        cursor.push_str(&position.offset.to_string());
    }
    cursor
}

/// `id: <cursor>\n`, the per-stream line in front of a shared message event.
pub(crate) fn id_line(cursor: &str) -> Bytes {
    let mut line = Vec::with_capacity(cursor.len() + 5);
    line.extend_from_slice(b"id: ");
    line.extend_from_slice(cursor.as_bytes());
    line.push(b'\n');
    Bytes::from(line)
}

/// Reads a cursor back; `None` unless it has exactly `channels` well-formed positions.
pub(crate) fn parse(cursor: &str, channels: usize) -> Option<Vec<Position>> {
    let positions: Option<Vec<Position>> = cursor
        .split(',')
        .map(|part| {
            let (epoch, offset) = part.split_once(':')?;
            let epoch = epoch.parse::<Epoch>().ok()?;
            // `u64::from_str` accepts a leading `+`; a cursor never has one.
            if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let offset = offset.parse::<u64>().ok()?;
            Some(Position { epoch, offset })
        })
        .collect();
    positions.filter(|p| p.len() == channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let positions = vec![
            Position {
                epoch: Epoch::from_u64(0x1f3a),
                offset: 42,
            },
            Position {
                epoch: Epoch::from_u64(0x9c0d),
                offset: 0,
            },
        ];
        let cursor = format(positions.iter().copied());
        assert_eq!(cursor, "1f3a:42,9c0d:0");
        assert_eq!(parse(&cursor, 2), Some(positions));
    }

    #[test]
    fn rejects() {
        let cases = [
            ("", 1),
            ("1f", 1),
            ("1f:", 1),
            (":3", 1),
            ("zz:3", 1),
            ("1f:-3", 1),
            ("1f:+3", 1),
            ("1f:3", 2),
            ("1f:3,1f:4", 1),
            ("1f:3,,1f:4", 3),
            ("1f:99999999999999999999", 1),
        ];
        for (cursor, channels) in cases {
            assert_eq!(parse(cursor, channels), None, "{cursor:?}");
        }
    }
}
