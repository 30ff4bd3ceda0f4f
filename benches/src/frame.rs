//! RFC 6455 frames as a benchmark client sees them: the header of a
//! server-to-client frame read in place from the bytes received, and the
//! client's own (masked) frames written into a buffer. Messages out of
//! frames are [`Reader`]'s.
//!
//! Invariants:
//! - Parsing never copies a payload: [`Header`] says where the payload lies
//!   in the bytes given, so that a read holding several frames is parsed
//!   without an allocation per frame.
//! - A frame that breaks RFC 6455 (reserved bits, a masked server frame, a
//!   reserved opcode, a fragmented or oversized control frame, a length with
//!   its top bit set) is refused with an error naming what was wrong; so is a
//!   payload over [`MAX_PAYLOAD`], which no benchmark sends.

mod reader;

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

pub use reader::{Flow, Reader};

/// Largest payload accepted in one frame (and in one reassembled message).
pub const MAX_PAYLOAD: usize = 16 << 20;

/// The opcodes of RFC 6455 section 5.2.
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// One frame's header, and where its payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The final fragment of its message.
    pub fin: bool,
    pub opcode: u8,
    /// Bytes of header before the payload (2, 4 or 10).
    pub header_len: usize,
    pub payload_len: usize,
}

impl Header {
    /// The header and payload together.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Reads the header of the frame at the start of `bytes`: `Ok(None)` while
/// the header itself is incomplete (the payload may still be missing too;
/// compare [`Header::frame_len`] with what is there).
pub fn header(bytes: &[u8]) -> anyhow::Result<Option<Header>> {
    let [first, second, rest @ ..] = bytes else {
        return Ok(None);
    };
    let fin = first & 0x80 != 0;
    if first & 0x70 != 0 {
        anyhow::bail!(
            "WebSocket frame with reserved bits set ({first:#04x}): no extension was negotiated"
        );
    }
    let opcode = first & 0x0F;
    if second & 0x80 != 0 {
        anyhow::bail!("masked WebSocket frame from the server (RFC 6455 5.1 forbids it)");
    }
    let (header_len, payload_len) = match second & 0x7F {
        126 => match rest {
            [a, b, ..] => (4, u16::from_be_bytes([*a, *b]) as u64),
            _ => return Ok(None),
        },
        127 => match rest.first_chunk::<8>() {
            Some(len) => (10, u64::from_be_bytes(*len)),
            None => return Ok(None),
        },
        len => (2, u64::from(len)),
    };
    let header = Header {
        fin,
        opcode,
        header_len,
        payload_len: usize::try_from(payload_len).unwrap_or(usize::MAX),
    };
    match opcode {
        opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => {}
        opcode::CLOSE | opcode::PING | opcode::PONG => {
            if !fin || payload_len > 125 {
                anyhow::bail!(
                    "WebSocket control frame {opcode:#x} fragmented or over 125 bytes ({payload_len})"
                );
            }
        }
        _ => anyhow::bail!("WebSocket frame with reserved opcode {opcode:#x}"),
    }
    if payload_len >> 63 != 0 {
        anyhow::bail!("WebSocket frame length with its top bit set");
    }
    if header.payload_len > MAX_PAYLOAD {
        anyhow::bail!(
            "WebSocket frame of {payload_len} bytes, over the bench's limit of {MAX_PAYLOAD}"
        );
    }
    Ok(Some(header))
}

/// Appends a final client frame (masked, as RFC 6455 requires of clients).
pub fn write_masked(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    let key = mask_key();
    out.extend_from_slice(&key);
    out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
}

/// A masking key that changes from frame to frame. The key only keeps
/// intermediaries from reading client bytes as something else; on loopback,
/// to a benchmarked server, a cheap sequence is enough.
fn mask_key() -> [u8; 4] {
    static NEXT: AtomicU32 = AtomicU32::new(0x9E37_79B9);
    NEXT.fetch_add(0x9E37_79B9, Relaxed)
        .wrapping_mul(0x85EB_CA6B)
        .to_be_bytes()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Server frames (unmasked), and the header or the piece of the error.
    #[test]
    fn reads_headers() {
        let long64 = {
            let mut f = vec![0x82, 127];
            f.extend_from_slice(&70_000u64.to_be_bytes());
            f
        };
        /// (fin, opcode, header length, payload length), or a piece of the error.
        type Expected = Result<Option<(bool, u8, usize, usize)>, &'static str>;
        let cases: &[(&[u8], Expected)] = &[
            (b"", Ok(None)),
            (b"\x81", Ok(None)),
            (b"\x81\x05hello", Ok(Some((true, opcode::TEXT, 2, 5)))),
            // The payload need not be there yet.
            (b"\x81\x05he", Ok(Some((true, opcode::TEXT, 2, 5)))),
            (b"\x01\x03abc", Ok(Some((false, opcode::TEXT, 2, 3)))),
            (b"\x80\x00", Ok(Some((true, opcode::CONTINUATION, 2, 0)))),
            (b"\x81\x7e", Ok(None)),
            (b"\x81\x7e\x01", Ok(None)),
            (b"\x81\x7e\x01\x00", Ok(Some((true, opcode::TEXT, 4, 256)))),
            (b"\x82\x7f\0\0\0\0\0\x01", Ok(None)),
            (&long64, Ok(Some((true, opcode::BINARY, 10, 70_000)))),
            (b"\x89\x02hi", Ok(Some((true, opcode::PING, 2, 2)))),
            (b"\x88\x02\x03\xe8", Ok(Some((true, opcode::CLOSE, 2, 2)))),
            (b"\x8a\x00", Ok(Some((true, opcode::PONG, 2, 0)))),
            (b"\xc1\x01x", Err("reserved bits")),
            (b"\x81\x81abcdx", Err("masked")),
            (b"\x83\x00", Err("reserved opcode 0x3")),
            (b"\x8b\x00", Err("reserved opcode 0xb")),
            (b"\x09\x00", Err("fragmented")),
            (b"\x89\x7e\x00\x7e", Err("over 125")),
            (b"\x82\x7f\x80\0\0\0\0\0\0\0", Err("top bit")),
            (
                b"\x82\x7f\0\0\0\0\x01\0\0\x01",
                Err("over the bench's limit"),
            ),
        ];
        for (bytes, expected) in cases {
            let got = header(bytes)
                .map(|h| h.map(|h| (h.fin, h.opcode, h.header_len, h.payload_len)))
                .map_err(|e| e.to_string());
            match (expected, &got) {
                (Ok(want), Ok(got)) => assert_eq!(got, want, "{bytes:x?}"),
                (Err(piece), Err(error)) => assert!(error.contains(piece), "{bytes:x?}: {error}"),
                _ => panic!("{bytes:x?}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    /// Unmasks a client frame the way a server would.
    pub fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        let (len, at) = match frame[1] & 0x7F {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                10,
            ),
            len => (len as usize, 2),
        };
        assert_eq!(frame[1] & 0x80, 0x80, "client frames are masked");
        let key = &frame[at..at + 4];
        let payload = &frame[at + 4..];
        assert_eq!(payload.len(), len);
        let data = payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k);
        (frame[0], data.collect())
    }

    #[test]
    fn writes_masked_frames() {
        for len in [0, 5, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            write_masked(&mut out, opcode::PONG, &payload);
            let (first, data) = unmask(&out);
            assert_eq!(first, 0x80 | opcode::PONG, "{len}");
            assert_eq!(data, payload, "{len}");
        }
    }
}
