//! Server-to-client WebSocket frames, all written by Herald itself (RFC 6455
//! §5.2): unmasked and final. Data frames and Pings go through the
//! connection's write queue; Pongs and the close handshake through the
//! link's own (`socket.rs`).

use bytes::{BufMut, Bytes, BytesMut};

/// A text frame carrying `payload`.
pub(crate) fn text(payload: &[u8]) -> Bytes {
    data(0x81, payload)
}

/// A binary frame carrying `payload` (only the echo route sends them).
pub(crate) fn binary(payload: &[u8]) -> Bytes {
    data(0x82, payload)
}

/// A final data frame: `first` is the FIN bit and the opcode.
fn data(first: u8, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 10);
    frame.put_u8(first);
    match payload.len() {
        len @ 0..=125 => frame.put_u8(len as u8),
        len @ 126..=0xffff => {
            frame.put_u8(126);
            frame.put_u16(len as u16);
        }
        len => {
            frame.put_u8(127);
            frame.put_u64(len as u64);
        }
    }
    frame.put_slice(payload);
    frame.freeze()
}

/// An empty Ping control frame.
pub(crate) fn ping() -> Bytes {
    Bytes::from_static(&[0x89, 0x00])
}

/// A Pong answering a Ping's `payload` (at most 125 bytes, as the reader
/// checked).
pub(crate) fn pong(payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(125)];
    let mut frame = BytesMut::with_capacity(2 + payload.len());
    frame.put_u8(0x8a);
    frame.put_u8(payload.len() as u8);
    frame.put_slice(payload);
    frame.freeze()
}

/// A Close control frame without a status code: the answer to a client's
/// close that had none.
pub(crate) fn close_empty() -> Bytes {
    Bytes::from_static(&[0x88, 0x00])
}

/// A Close control frame with `code` and a short `reason` (at most 123
/// bytes, as a control frame's payload is at most 125).
pub(crate) fn close(code: u16, reason: &str) -> Bytes {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut frame = BytesMut::with_capacity(4 + reason.len());
    frame.put_u8(0x88);
    frame.put_u8((2 + reason.len()) as u8);
    frame.put_u16(code);
    frame.put_slice(reason);
    frame.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frame_lengths() {
        for (len, header) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let frame = text(&vec![b'x'; len]);
            assert_eq!(frame.len(), len + header, "{len}");
            assert_eq!(frame[0], 0x81);
            let frame = binary(&vec![b'x'; len]);
            assert_eq!((frame.len(), frame[0]), (len + header, 0x82), "{len}");
        }
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        assert_eq!(&close(4100, "slow_consumer")[..4], &[0x88, 15, 0x10, 0x04]);
        assert_eq!(close(4000, &"x".repeat(200)).len(), 4 + 123);
        assert_eq!(&close_empty()[..], &[0x88, 0]);
    }

    #[test]
    fn pongs_carry_the_pings_payload() {
        assert_eq!(&pong(b"abc")[..], &[0x8a, 3, b'a', b'b', b'c']);
        assert_eq!(&pong(b"")[..], &[0x8a, 0]);
    }
}
