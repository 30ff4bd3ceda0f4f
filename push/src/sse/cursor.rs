//! The SSE event id: one cursor covering every channel of the stream.
//!
//! Format: `epoch:offset` per channel, in the order of the stream's
//! `channel` parameters, joined by `,` — for example `1f3a:42,9c0d:7`.

use bytes::Bytes;
use fanout::Position;

/// Writes the cursor for `positions`.
pub(crate) fn format(positions: impl Iterator<Item = Position>) -> String {
    let mut cursor = String::with_capacity(24);
    write_positions(&mut cursor, positions);
    cursor
}

fn write_positions(out: &mut String, positions: impl Iterator<Item = Position>) {
    use std::fmt::Write as _;
    for (i, position) in positions.enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Writing the parts into the string directly: this runs per event
        // per stream. The text is `Position`'s.
        let _ = write!(out, "{}:{}", position.epoch, position.offset);
    }
}

/// `id: <cursor>\n`, the per-stream line in front of a shared message
/// event, built in one allocation.
pub(crate) fn id_line(positions: impl Iterator<Item = Position>) -> Bytes {
    let mut line = String::with_capacity(32);
    line.push_str("id: ");
    write_positions(&mut line, positions);
    line.push('\n');
    Bytes::from(line)
}

/// Reads a cursor back; `None` unless it has exactly `channels` well-formed positions.
pub(crate) fn parse(cursor: &str, channels: usize) -> Option<Vec<Position>> {
    let positions: Result<Vec<Position>, _> = cursor.split(',').map(str::parse).collect();
    positions.ok().filter(|p| p.len() == channels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout::Epoch;

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
