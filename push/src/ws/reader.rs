//! Client-to-server WebSocket frames (RFC 6455 §5), read by Herald itself
//! so that an idle connection holds no read buffer.
//!
//! The socket reads into a buffer of its worker thread and hands the bytes
//! here. A frame that arrived whole is parsed and handed over in place; only
//! bytes that do not make a whole frame yet (or frames read together with
//! the one handed over), and the fragments of a message still arriving, are
//! copied into a boxed `Partial`, which is freed as soon as it is empty.
//!
//! Invariants:
//! - Nothing is allocated per connection while no frame is partly read.
//! - What this reader refuses, it refuses with the close code RFC 6455 asks
//!   for: broken framing (unmasked frames, RSV bits, unknown opcodes,
//!   fragmented or long control frames, a continuation out of place, a bad
//!   close code) is `protocol_error` (1002), text that is not UTF-8 is
//!   `invalid_payload` (1007), a frame or message over the site's
//!   `max_frame_bytes` is `message_too_big` (1009), refused as soon as its
//!   header says so, before any of it is kept.
//! - A frame is refused as soon as it shows itself bad, whether it came in
//!   one read or many: its header (including a data frame out of place in
//!   a fragmented message) before its payload, and text as it arrives (a
//!   fragmented message at each fragment, a frame still arriving at each
//!   read), so the same bytes get the same answer however they were split.
//!   The `ws_frames` fuzz target holds the reader to that.

use crate::ErrorCode;

/// What one client frame meant, as handed to the reader's caller.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A whole text message (possibly assembled from fragments).
    Text(&'a str),
    /// A whole binary message.
    Binary(&'a [u8]),
    /// A fragment of a message still arriving: nothing to hand over yet.
    Fragment,
    /// A Ping with its payload, to be answered with a Pong carrying it.
    Ping(&'a [u8]),
    Pong,
    /// The client's close: its status code and reason, if it sent any.
    Close(Option<(u16, &'a str)>),
}

/// One connection's read state: a null pointer while no frame is partly
/// read. The link keeps its own momentary state (`E`) in the same box, so
/// that an idle connection pays for one pointer.
pub(crate) struct Reader<E: Extra = ()> {
    partial: Option<Box<Partial<E>>>,
}

/// What a reader's owner keeps in the reader's box, beside the bytes.
pub(crate) trait Extra: Default {
    /// Whether it holds nothing, so that the box may go.
    fn is_idle(&self) -> bool;
}

impl Extra for () {
    fn is_idle(&self) -> bool {
        true
    }
}

/// What exists only while a frame is partly read (or the owner needs it).
#[derive(Default)]
struct Partial<E> {
    /// Bytes read but not parsed yet: the start of a frame, or frames read
    /// together with an earlier one. Parsing resumes at `start`.
    unread: Vec<u8>,
    start: usize,
    /// Of a text frame at `start` that is not whole yet: how much of its
    /// payload is unmasked already, and how much of that is valid UTF-8
    /// (the rest, at most the start of one character). Zero otherwise.
    unmasked: usize,
    valid: usize,
    /// A data message whose last fragment has not arrived.
    message: Option<Fragments>,
    extra: E,
}

/// A fragmented data message being put together.
struct Fragments {
    text: bool,
    data: Vec<u8>,
    /// How much of `data` is known to be valid UTF-8 (for text): the rest is
    /// at most the start of one character.
    valid: usize,
}

/// A frame's header.
struct Header {
    fin: bool,
    opcode: u8,
    /// Where the payload starts, and its length.
    offset: usize,
    len: usize,
    mask: [u8; 4],
}

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

impl<E: Extra> Reader<E> {
    /// A reader that starts with `read_ahead`: bytes the HTTP server read
    /// past the handshake.
    pub(crate) fn new(read_ahead: Vec<u8>) -> Self {
        let mut reader = Self { partial: None };
        if !read_ahead.is_empty() {
            reader.partial = Some(Box::new(Partial {
                unread: read_ahead,
                ..Partial::default()
            }));
        }
        reader
    }

    /// Whether bytes are kept that may hold a whole frame.
    pub(crate) fn has_unread(&self) -> bool {
        self.partial
            .as_ref()
            .is_some_and(|partial| partial.start < partial.unread.len())
    }

    /// Whether anything is kept at all.
    #[cfg(test)]
    fn holds_memory(&self) -> bool {
        self.partial.is_some()
    }

    /// The owner's state, if any is kept.
    pub(crate) fn extra(&self) -> Option<&E> {
        self.partial.as_ref().map(|partial| &partial.extra)
    }

    /// The owner's state, kept from now on until it is idle again and
    /// [`Reader::tidy`] runs.
    pub(crate) fn extra_mut(&mut self) -> &mut E {
        &mut self.partial_mut().extra
    }

    /// Frees the box once nothing in it is needed.
    pub(crate) fn tidy(&mut self) {
        let Some(partial) = self.partial.as_deref_mut() else {
            return;
        };
        if partial.start < partial.unread.len() {
            return;
        }
        if partial.message.is_none() && partial.extra.is_idle() {
            self.partial = None;
        } else if partial.unread.capacity() > 0 {
            partial.unread = Vec::new();
            partial.start = 0;
            (partial.unmasked, partial.valid) = (0, 0);
        }
    }

    fn partial_mut(&mut self) -> &mut Partial<E> {
        self.partial.get_or_insert_default()
    }

    /// Reads the next frame from what is kept followed by `input` (fresh
    /// bytes from the socket; empty to parse only what is kept), and hands
    /// it to `on_frame` with the owner's state. `Ok(None)`: no whole frame
    /// yet, and `input` is kept. Bytes past the frame are kept for the next
    /// call. `max` is the largest frame or message payload accepted.
    pub(crate) fn read<R>(
        &mut self,
        input: &mut [u8],
        max: usize,
        on_frame: impl FnOnce(Frame<'_>, &mut E) -> R,
    ) -> Result<Option<R>, ErrorCode> {
        let result = if self.has_unread() {
            self.read_kept(input, max, on_frame)
        } else {
            self.read_fresh(input, max, on_frame)
        };
        self.tidy();
        result
    }

    /// Parses from the kept bytes, with `input` appended.
    fn read_kept<R>(
        &mut self,
        input: &[u8],
        max: usize,
        on_frame: impl FnOnce(Frame<'_>, &mut E) -> R,
    ) -> Result<Option<R>, ErrorCode> {
        let partial = self.partial_mut();
        if !input.is_empty() {
            partial.unread.drain(..partial.start);
            partial.start = 0;
            partial.unread.extend_from_slice(input);
        }
        let header = match parse(&mut partial.unread[partial.start..], max, partial.unmasked)? {
            Parsed::Frame(header) => header,
            Parsed::Needs(total, header) => {
                partial.unread.drain(..partial.start);
                partial.start = 0;
                // The header told the frame's length (bounded by `max`).
                partial
                    .unread
                    .reserve(total.saturating_sub(partial.unread.len()));
                if let Some(header) = header {
                    partial.check_partial(&header)?;
                }
                return Ok(None);
            }
        };
        let Partial {
            unread,
            start,
            unmasked,
            valid,
            message,
            extra,
        } = partial;
        (*unmasked, *valid) = (0, 0);
        let frame_start = *start;
        *start += header.offset + header.len;
        let payload = &unread[frame_start + header.offset..*start];
        handle(&header, payload, message, max, |frame| {
            on_frame(frame, extra)
        })
        .map(Some)
    }

    /// Parses straight from `input`, keeping what is left of it.
    fn read_fresh<R>(
        &mut self,
        input: &mut [u8],
        max: usize,
        on_frame: impl FnOnce(Frame<'_>, &mut E) -> R,
    ) -> Result<Option<R>, ErrorCode> {
        let header = match parse(input, max, 0)? {
            Parsed::Frame(header) => header,
            Parsed::Needs(total, header) => {
                let partial = self.partial_mut();
                partial.unread.reserve_exact(total.max(input.len()));
                partial.unread.extend_from_slice(input);
                partial.start = 0;
                if let Some(header) = header {
                    partial.check_partial(&header)?;
                }
                return Ok(None);
            }
        };
        let end = header.offset + header.len;
        let (frame, rest) = input.split_at(end);
        if !rest.is_empty() {
            let partial = self.partial_mut();
            partial.unread.extend_from_slice(rest);
            partial.start = 0;
        }
        let payload = &frame[header.offset..];
        if let Some(partial) = self.partial.as_deref_mut() {
            let Partial { message, extra, .. } = partial;
            return handle(&header, payload, message, max, |frame| {
                on_frame(frame, extra)
            })
            .map(Some);
        }
        // Nothing is kept: whatever this frame starts is kept from now on.
        let (mut message, mut extra) = (None, E::default());
        let result = handle(&header, payload, &mut message, max, |frame| {
            on_frame(frame, &mut extra)
        });
        if message.is_some() || !extra.is_idle() {
            let partial = self.partial_mut();
            partial.message = message;
            partial.extra = extra;
        }
        result.map(Some)
    }
}

impl<E: Extra> Default for Reader<E> {
    fn default() -> Self {
        Self { partial: None }
    }
}

impl<E> Partial<E> {
    /// Checks a frame at `start` that is not whole yet, so that it is
    /// refused as soon as it shows itself bad rather than once it is whole:
    /// a data frame out of place, and bad UTF-8 in a text frame. What it
    /// unmasks stays unmasked.
    fn check_partial(&mut self, header: &Header) -> Result<(), ErrorCode> {
        match header.opcode {
            TEXT | BINARY if self.message.is_some() => return Err(ErrorCode::ProtocolError),
            CONTINUATION if self.message.is_none() => return Err(ErrorCode::ProtocolError),
            TEXT => {}
            _ => return Ok(()),
        }
        let payload = &mut self.unread[self.start + header.offset..];
        unmask(&mut payload[self.unmasked..], header.mask, self.unmasked);
        self.unmasked = payload.len();
        match std::str::from_utf8(&payload[self.valid..]) {
            Ok(_) => self.valid = payload.len(),
            Err(error) if error.error_len().is_none() => self.valid += error.valid_up_to(),
            Err(_) => return Err(ErrorCode::InvalidPayload),
        }
        Ok(())
    }
}

/// What a buffer holds.
enum Parsed {
    /// A whole frame, its payload unmasked in place.
    Frame(Header),
    /// Not a whole frame yet: this many bytes in all would make one (the
    /// header's own length while even that is incomplete), and the header
    /// once it is whole.
    Needs(usize, Option<Header>),
}

/// Parses the frame at the start of `buf` and, once it is whole, unmasks
/// its payload in place past the first `unmasked` bytes (unmasked before).
/// Refuses what breaks RFC 6455 as soon as the bytes that show it are there.
fn parse(buf: &mut [u8], max: usize, unmasked: usize) -> Result<Parsed, ErrorCode> {
    let [first, second, ..] = *buf else {
        return Ok(Parsed::Needs(2, None));
    };
    let fin = first & 0x80 != 0;
    // No extension is negotiated, so every RSV bit must be clear.
    if first & 0x70 != 0 {
        return Err(ErrorCode::ProtocolError);
    }
    let opcode = first & 0x0f;
    let control = match opcode {
        CONTINUATION | TEXT | BINARY => false,
        CLOSE | PING | PONG => true,
        _ => return Err(ErrorCode::ProtocolError),
    };
    // Clients must mask every frame (§5.1).
    if second & 0x80 == 0 {
        return Err(ErrorCode::ProtocolError);
    }
    let short = usize::from(second & 0x7f);
    if control && (!fin || short > 125) {
        return Err(ErrorCode::ProtocolError);
    }
    let (len, extended) = match short {
        126 => match buf.get(2..4) {
            Some(bytes) => (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 2),
            None => return Ok(Parsed::Needs(4, None)),
        },
        127 => match buf.get(2..10) {
            Some(bytes) => {
                let mut word = [0; 8];
                word.copy_from_slice(bytes);
                (u64::from_be_bytes(word), 8)
            }
            None => return Ok(Parsed::Needs(10, None)),
        },
        short => (short as u64, 0),
    };
    if len >> 63 != 0 {
        return Err(ErrorCode::ProtocolError);
    }
    let len = match usize::try_from(len) {
        Ok(len) if len <= max => len,
        _ => return Err(ErrorCode::MessageTooBig),
    };
    let offset = 2 + extended + 4;
    let Some(mask) = buf.get(offset - 4..offset) else {
        return Ok(Parsed::Needs(offset + len, None));
    };
    let header = Header {
        fin,
        opcode,
        offset,
        len,
        mask: [mask[0], mask[1], mask[2], mask[3]],
    };
    let Some(frame) = buf.get_mut(..offset + len) else {
        return Ok(Parsed::Needs(offset + len, Some(header)));
    };
    unmask(&mut frame[offset + unmasked..], header.mask, unmasked);
    Ok(Parsed::Frame(header))
}

/// Unmasks `payload`, which starts `from` bytes into a frame's payload.
fn unmask(payload: &mut [u8], mut mask: [u8; 4], from: usize) {
    mask.rotate_left(from % 4);
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// What a whole frame means, given the message in progress.
fn handle<R>(
    header: &Header,
    payload: &[u8],
    message: &mut Option<Fragments>,
    max: usize,
    on_frame: impl FnOnce(Frame<'_>) -> R,
) -> Result<R, ErrorCode> {
    let frame = match header.opcode {
        PING => Frame::Ping(payload),
        PONG => Frame::Pong,
        CLOSE => Frame::Close(close_payload(payload)?),
        TEXT | BINARY if message.is_some() => return Err(ErrorCode::ProtocolError),
        TEXT if header.fin => {
            Frame::Text(std::str::from_utf8(payload).map_err(|_| ErrorCode::InvalidPayload)?)
        }
        BINARY if header.fin => Frame::Binary(payload),
        opcode @ (TEXT | BINARY) => {
            let mut started = Fragments {
                text: opcode == TEXT,
                data: payload.to_vec(),
                valid: 0,
            };
            started.check()?;
            *message = Some(started);
            Frame::Fragment
        }
        // CONTINUATION: the parser lets no other opcode through.
        _ => {
            let Some(fragments) = message else {
                return Err(ErrorCode::ProtocolError);
            };
            if fragments.data.len() + payload.len() > max {
                return Err(ErrorCode::MessageTooBig);
            }
            fragments.data.extend_from_slice(payload);
            fragments.check()?;
            if !header.fin {
                Frame::Fragment
            } else {
                // `message` was Some just above.
                let Some(whole) = message.take() else {
                    return Err(ErrorCode::ProtocolError);
                };
                return whole.finish(on_frame);
            }
        }
    };
    Ok(on_frame(frame))
}

/// The status code and reason of a close frame (§5.5.1, §7.4).
fn close_payload(payload: &[u8]) -> Result<Option<(u16, &str)>, ErrorCode> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(ErrorCode::ProtocolError),
        [high, low, reason @ ..] => (u16::from_be_bytes([*high, *low]), reason),
    };
    // Codes a peer may send: the ones RFC 6455 and IANA define for use in a
    // close frame, and the ranges for libraries and applications.
    if !matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999) {
        return Err(ErrorCode::ProtocolError);
    }
    let reason = std::str::from_utf8(reason).map_err(|_| ErrorCode::InvalidPayload)?;
    Ok(Some((code, reason)))
}

// === impl Fragments ===

impl Fragments {
    /// Checks text received so far: refused at the first byte that cannot
    /// begin or continue a character, not only once the message is whole.
    fn check(&mut self) -> Result<(), ErrorCode> {
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.valid..]) {
            Ok(_) => self.valid = self.data.len(),
            Err(error) if error.error_len().is_none() => self.valid += error.valid_up_to(),
            Err(_) => return Err(ErrorCode::InvalidPayload),
        }
        Ok(())
    }

    fn finish<R>(self, on_frame: impl FnOnce(Frame<'_>) -> R) -> Result<R, ErrorCode> {
        if !self.text {
            return Ok(on_frame(Frame::Binary(&self.data)));
        }
        let text = std::str::from_utf8(&self.data).map_err(|_| ErrorCode::InvalidPayload)?;
        Ok(on_frame(Frame::Text(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: `first` is FIN, RSV and opcode; masked with a fixed key.
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![first];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        frame
    }

    /// What a reader makes of `bytes` fed `chunk` bytes at a time: one line
    /// per frame, then `error <code>` if it refused, or `wants more` if the
    /// bytes ended inside a frame.
    fn read_all(bytes: &[u8], chunk: usize, max: usize) -> Vec<String> {
        let mut reader = Reader::<()>::default();
        let mut seen = Vec::new();
        let describe = |frame: Frame<'_>, _: &mut ()| format!("{frame:?}");
        for chunk in bytes.chunks(chunk) {
            let mut result = reader.read(&mut chunk.to_vec(), max, describe);
            loop {
                match result {
                    Ok(Some(frame)) => seen.push(frame),
                    Ok(None) => break,
                    Err(code) => {
                        seen.push(format!("error {}", code.as_str()));
                        return seen;
                    }
                }
                if !reader.has_unread() {
                    break;
                }
                // Frames read together with the one handed over.
                result = reader.read(&mut [], max, describe);
            }
        }
        if reader.holds_memory() {
            seen.push("wants more".into());
        }
        seen
    }

    fn check(name: &str, bytes: &[u8], expect: &[&str]) {
        // Whatever the bytes' split into reads, the same frames come out.
        for chunk in [bytes.len().max(1), 1, 2, 3, 7, 64] {
            assert_eq!(
                read_all(bytes, chunk, 300),
                expect,
                "{name}, read {chunk} at a time"
            );
        }
    }

    fn cat(frames: &[Vec<u8>]) -> Vec<u8> {
        frames.concat()
    }

    #[test]
    fn frames_are_read_whatever_the_split() {
        let long = "x".repeat(200);
        check("text", &masked(0x81, b"hello"), &[r#"Text("hello")"#]);
        check("empty text", &masked(0x81, b""), &[r#"Text("")"#]);
        check("binary", &masked(0x82, &[0, 255]), &["Binary([0, 255])"]);
        check(
            "16-bit length",
            &masked(0x81, long.as_bytes()),
            &[&format!("Text({long:?})")],
        );
        check("ping", &masked(0x89, b"p"), &["Ping([112])"]);
        check("pong", &masked(0x8a, b"anything"), &["Pong"]);
        check("close, empty", &masked(0x88, b""), &["Close(None)"]);
        check(
            "close",
            &masked(0x88, b"\x03\xe8bye"),
            &[r#"Close(Some((1000, "bye")))"#],
        );
        check(
            "several in one read",
            &cat(&[masked(0x81, b"a"), masked(0x89, b""), masked(0x82, b"b")]),
            &[r#"Text("a")"#, "Ping([])", "Binary([98])"],
        );
        check(
            "fragments, with a ping between",
            &cat(&[
                masked(0x01, b"he"),
                masked(0x89, b""),
                masked(0x00, b"l"),
                masked(0x80, b"lo"),
            ]),
            &["Fragment", "Ping([])", "Fragment", r#"Text("hello")"#],
        );
        check(
            "a character split over fragments",
            &cat(&[
                masked(0x01, "é".as_bytes()[..1].as_ref()),
                masked(0x80, &"é".as_bytes()[1..]),
            ]),
            &["Fragment", r#"Text("é")"#],
        );
        check(
            "binary fragments",
            &cat(&[masked(0x02, &[1]), masked(0x80, &[2])]),
            &["Fragment", "Binary([1, 2])"],
        );
        check("cut short", &masked(0x81, b"hello")[..5], &["wants more"]);
    }

    #[test]
    fn broken_framing_is_refused_with_its_code() {
        let unmasked = [0x81, 0x01, b'a'];
        check("unmasked", &unmasked, &["error protocol_error"]);
        check("rsv bit", &masked(0xc1, b"a"), &["error protocol_error"]);
        check(
            "reserved opcode",
            &masked(0x83, b"a"),
            &["error protocol_error"],
        );
        check(
            "reserved control opcode",
            &masked(0x8b, b""),
            &["error protocol_error"],
        );
        check(
            "fragmented ping",
            &masked(0x09, b""),
            &["error protocol_error"],
        );
        check(
            "long ping",
            &masked(0x89, &[0; 126]),
            &["error protocol_error"],
        );
        check(
            "lone continuation",
            &masked(0x80, b"a"),
            &["error protocol_error"],
        );
        // Refused from the header, before the frame is whole (and before its
        // text could be found bad).
        let late = masked(0x00, b"abc");
        check(
            "lone continuation, still arriving",
            &late[..7],
            &["error protocol_error"],
        );
        let text = masked(0x81, b"b\xffcd");
        check(
            "text inside a fragmented message, still arriving",
            &cat(&[masked(0x01, b"a"), text[..8].to_vec()]),
            &["Fragment", "error protocol_error"],
        );
        check(
            "text inside a fragmented message",
            &cat(&[masked(0x01, b"a"), masked(0x81, b"b")]),
            &["Fragment", "error protocol_error"],
        );
        check(
            "bad utf-8",
            &masked(0x81, &[0xff]),
            &["error invalid_payload"],
        );
        // Refused at the bytes that make it bad, before the frame is whole.
        let bad = masked(0x81, b"ab\xffcdef");
        check(
            "bad utf-8 in a frame still arriving",
            &bad[..9],
            &["error invalid_payload"],
        );
        let good = masked(0x81, "aé".as_bytes());
        check(
            "a frame still arriving, cut in a character",
            &good[..8],
            &["wants more"],
        );
        check("and whole", &good, &[r#"Text("aé")"#]);
        check(
            "bad utf-8 in the first fragment",
            &cat(&[masked(0x01, &[0xce, 0xff]), masked(0x80, b"")]),
            &["error invalid_payload"],
        );
        check(
            "a character never finished",
            &cat(&[masked(0x01, &[0xce]), masked(0x80, b"")]),
            &["Fragment", "error invalid_payload"],
        );
        check(
            "close of one byte",
            &masked(0x88, &[3]),
            &["error protocol_error"],
        );
        for code in [
            0u16, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000, 65535,
        ] {
            let frame = masked(0x88, &code.to_be_bytes());
            check(&format!("close {code}"), &frame, &["error protocol_error"]);
        }
        for code in [1000u16, 1003, 1007, 1011, 3000, 4999] {
            let frame = masked(0x88, &code.to_be_bytes());
            check(
                &format!("close {code}"),
                &frame,
                &[&format!("Close(Some(({code}, \"\")))")],
            );
        }
        check(
            "close reason",
            &masked(0x88, &[3, 232, 0xff]),
            &["error invalid_payload"],
        );
    }

    #[test]
    fn frames_and_messages_over_the_limit_are_refused_from_the_header() {
        check(
            "at the limit",
            &masked(0x82, &[0; 300]),
            &[&format!("Binary({:?})", [0; 300])],
        );
        // Only the header is sent: the refusal needs nothing more.
        check(
            "over the limit",
            &masked(0x82, &[0; 301])[..8],
            &["error message_too_big"],
        );
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        check("64-bit length", &huge, &["error message_too_big"]);
        let mut top_bit = vec![0x82, 0x80 | 127];
        top_bit.extend_from_slice(&(1u64 << 63).to_be_bytes());
        check(
            "64-bit length with its top bit",
            &top_bit,
            &["error protocol_error"],
        );
        check(
            "message over the limit in fragments",
            &cat(&[masked(0x02, &[0; 200]), masked(0x80, &[0; 101])]),
            &["Fragment", "error message_too_big"],
        );
    }

    #[test]
    fn nothing_is_kept_between_whole_frames() {
        let mut reader = Reader::<()>::default();
        let mut frame = masked(0x81, b"hello");
        let text = reader
            .read(&mut frame, 100, |f, _| format!("{f:?}"))
            .unwrap();
        assert_eq!(text.as_deref(), Some(r#"Text("hello")"#));
        assert!(!reader.holds_memory());

        let frame = masked(0x81, b"hello");
        let (head, tail) = frame.split_at(4);
        assert_eq!(
            reader.read(&mut head.to_vec(), 100, |_, _| ()).unwrap(),
            None
        );
        assert!(reader.holds_memory(), "a partly read frame is kept");
        assert_eq!(
            reader.read(&mut tail.to_vec(), 100, |_, _| ()).unwrap(),
            Some(())
        );
        assert!(!reader.holds_memory(), "and freed once whole");

        let mut first = masked(0x01, b"he");
        reader.read(&mut first, 100, |_, _| ()).unwrap();
        assert!(reader.holds_memory(), "a fragmented message is kept");
        let mut last = masked(0x80, b"llo");
        let text = reader
            .read(&mut last, 100, |f, _| format!("{f:?}"))
            .unwrap();
        assert_eq!(text.as_deref(), Some(r#"Text("hello")"#));
        assert!(!reader.holds_memory(), "and freed once whole");
    }

    #[test]
    fn read_ahead_bytes_come_first() {
        let mut reader = Reader::<()>::new(masked(0x81, b"early"));
        assert!(reader.has_unread());
        let text = reader.read(&mut [], 100, |f, _| format!("{f:?}")).unwrap();
        assert_eq!(text.as_deref(), Some(r#"Text("early")"#));
        assert!(!reader.holds_memory());
        assert!(!Reader::<()>::new(Vec::new()).holds_memory());
    }
}
