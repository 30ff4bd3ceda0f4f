//! The payload of a timeline shard message, internal to Herald:
//! `<kind>\n<id>,<id>,…\n<data>`. User ids are channel-name characters, so
//! they never contain `,` or a line break; the data is copied in as is and
//! read back as a slice of the same bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::TimelineKind;

/// A decoded shard message, borrowing from its bytes.
pub(crate) struct ShardPayload<'a> {
    pub kind: TimelineKind,
    /// The recipients' ids, comma-separated.
    recipients: &'a str,
    /// Where the data starts in the payload.
    data_at: usize,
}

impl<'a> ShardPayload<'a> {
    pub fn decode(payload: &'a [u8]) -> Option<Self> {
        let first = payload.iter().position(|&b| b == b'\n')?;
        let kind = TimelineKind::parse(std::str::from_utf8(&payload[..first]).ok()?)?;
        let rest = &payload[first + 1..];
        let second = rest.iter().position(|&b| b == b'\n')?;
        let recipients = std::str::from_utf8(&rest[..second]).ok()?;
        Some(Self {
            kind,
            recipients,
            data_at: first + 1 + second + 1,
        })
    }

    pub fn recipients(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.recipients.split(',').filter(|id| !id.is_empty())
    }

    /// Whether `user` is a recipient: a substring search for the id
    /// between separators, without splitting the list (a resubscribing
    /// timeline checks every message its shard's history holds).
    pub fn includes(&self, user: &str) -> bool {
        let list = self.recipients.as_bytes();
        !user.is_empty()
            && self.recipients.match_indices(user).any(|(at, _)| {
                (at == 0 || list[at - 1] == b',')
                    && list.get(at + user.len()).is_none_or(|&b| b == b',')
            })
    }

    /// The data, sharing `payload`'s memory.
    pub fn data(&self, payload: &Bytes) -> Bytes {
        payload.slice(self.data_at..)
    }
}

/// Encodes a shard message for `ids` (already comma-separated).
pub(crate) fn encode(kind: TimelineKind, ids: &[u8], data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(kind.as_str().len() + ids.len() + data.len() + 2);
    out.put_slice(kind.as_str().as_bytes());
    out.put_u8(b'\n');
    out.put_slice(ids);
    out.put_u8(b'\n');
    out.put_slice(data);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let payload = encode(TimelineKind::Replies, b"1,42,alice", br#"{"a":"\n"}"#);
        let decoded = ShardPayload::decode(&payload).unwrap();
        assert_eq!(decoded.kind, TimelineKind::Replies);
        assert_eq!(
            decoded.recipients().collect::<Vec<_>>(),
            ["1", "42", "alice"]
        );
        assert!(decoded.includes("42") && !decoded.includes("4"));
        assert!(decoded.includes("1") && decoded.includes("alice"));
        assert!(!decoded.includes("2") && !decoded.includes("lice") && !decoded.includes(""));
        assert_eq!(&decoded.data(&payload)[..], br#"{"a":"\n"}"#);
        assert!(ShardPayload::decode(b"nope\n1\n{}").is_none());
        assert!(ShardPayload::decode(b"user\n1").is_none());
    }
}
