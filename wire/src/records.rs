//! The TLS record layer once the handshake is over: application data
//! sealed into records and opened from them, with the traffic keys rustls
//! negotiated (`rustls::kernel`, the interface rustls offers for kernel
//! TLS, which is this same job done in the kernel).
//!
//! Why not rustls' own connection: it keeps, for the life of a connection,
//! its handshake state, its buffers and a cipher context per direction with
//! the key schedule expanded (AES-GCM's round keys and GHASH table, about
//! half a kilobyte each). An idle push connection would carry several
//! kilobytes of that to use a few times a minute. Here a connection keeps
//! only the raw keys, IVs and sequence numbers (a little over 100 bytes);
//! the cipher context is built for each read or write that needs one and
//! dropped after it: expanding a key costs well under a microsecond, less
//! than the system call that moves the record.
//!
//! What this layer does (RFC 8446 §5 for TLS 1.3, RFC 5246 §6.2 and
//! RFC 5288 for TLS 1.2):
//! - application data out, in records of at most 2^14 bytes;
//! - records in: application data, and alerts (a `close_notify` ends the
//!   stream; any other alert is an error);
//! - our `close_notify`.
//!
//! What it refuses, ending the connection (the client reconnects with a new
//! handshake): handshake messages after the handshake (a TLS 1.3
//! `KeyUpdate`, a TLS 1.2 renegotiation), records that fail to open, and a
//! key used up to its cipher suite's confidentiality limit (2^23 or 2^24
//! records under AES-GCM; rustls would update the key instead).
//!
//! Nonces and additional data are built with rustls' own helpers
//! (`Nonce::new`, `make_tls13_aad`, `make_tls12_aad`), the AEAD is ring's.

use std::fmt;

use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey};
use rustls::{
    ConnectionTrafficSecrets, ContentType, ExtractedSecrets, ProtocolVersion,
    crypto::cipher::{Iv, Nonce, make_tls12_aad, make_tls13_aad},
};
use zeroize::Zeroize;

/// The largest plaintext one record carries.
pub(crate) const MAX_PLAINTEXT: usize = 1 << 14;

/// A record's header: type, legacy version, length.
pub(crate) const HEADER: usize = 5;

/// An AEAD tag, for every suite rustls offers.
const TAG: usize = 16;

/// TLS 1.2 AES-GCM records carry the nonce's last 8 bytes in clear.
const EXPLICIT_NONCE: usize = 8;

/// The largest record accepted: TLS 1.2 allows 2^14 + 2048 bytes of
/// ciphertext (RFC 5246 §6.2.3), TLS 1.3 2^14 + 256 (RFC 8446 §5.2).
pub(crate) const MAX_RECORD: usize = HEADER + MAX_PLAINTEXT + 2048;

/// The most a sealed record adds to its plaintext.
pub(crate) const MAX_OVERHEAD: usize = HEADER + EXPLICIT_NONCE + 1 + TAG;

/// Why a record could not be sealed or opened; the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("a TLS record failed to decrypt")]
    BadRecord,
    #[error("a TLS record is longer than TLS allows")]
    Overflow,
    #[error(
        "the peer sent a TLS handshake message after the handshake (key update or renegotiation), which Herald does not follow"
    )]
    PostHandshake,
    #[error("the peer sent a TLS record of an unexpected type")]
    UnexpectedRecord,
    #[error("the peer sent a TLS alert")]
    Alert,
    #[error("the TLS key reached its cipher suite's limit; the connection must start over")]
    KeyExhausted,
    #[error("the negotiated TLS version or cipher suite has no record layer here")]
    Unsupported,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    Tls12,
    Tls13,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Cipher {
    fn algorithm(self) -> &'static Algorithm {
        match self {
            Cipher::Aes128Gcm => &AES_128_GCM,
            Cipher::Aes256Gcm => &AES_256_GCM,
            Cipher::Chacha20Poly1305 => &CHACHA20_POLY1305,
        }
    }
}

/// One direction's secrets: raw, never expanded between uses.
struct Keys {
    key: [u8; 32],
    iv: [u8; 12],
    key_len: u8,
    /// The next record's sequence number.
    seq: u64,
}

impl Keys {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<(Cipher, Self), RecordError> {
        let (cipher, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Cipher::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Cipher::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (Cipher::Chacha20Poly1305, key, iv)
            }
            _ => return Err(RecordError::Unsupported),
        };
        let (key, iv) = (key.as_ref(), iv.as_ref());
        let mut keys = Keys {
            key: [0; 32],
            iv: [0; 12],
            key_len: key.len() as u8,
            seq,
        };
        if key.len() > keys.key.len() || iv.len() != keys.iv.len() {
            return Err(RecordError::Unsupported);
        }
        keys.key[..key.len()].copy_from_slice(key);
        keys.iv.copy_from_slice(iv);
        Ok((cipher, keys))
    }

    /// The cipher context, built for one read or write.
    fn expand(&self, cipher: Cipher) -> LessSafeKey {
        let key =
            ring::aead::UnboundKey::new(cipher.algorithm(), &self.key[..self.key_len as usize])
                // The key's length came from the suite rustls negotiated.
                .expect("a traffic key has its cipher's length");
        LessSafeKey::new(key)
    }

    /// The nonce for the next record: the IV XOR its sequence number.
    fn nonce(&self) -> [u8; 12] {
        Nonce::new(&Iv::new(self.iv), self.seq).0
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

/// A record's additional data, either version's, on the stack.
struct AadBytes {
    bytes: [u8; 13],
    len: usize,
}

impl AadBytes {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<const N: usize> From<[u8; N]> for AadBytes {
    fn from(aad: [u8; N]) -> Self {
        let mut bytes = [0; 13];
        bytes[..N].copy_from_slice(&aad);
        Self { bytes, len: N }
    }
}

/// A connection's record layer.
pub(crate) struct Records {
    tx: Keys,
    rx: Keys,
    /// Records one key may seal (the suite's confidentiality limit).
    limit: u64,
    version: Version,
    cipher: Cipher,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records").finish_non_exhaustive()
    }
}

/// A record opened in place.
pub(crate) enum Opened {
    /// Application data (possibly empty).
    Data(std::ops::Range<usize>),
    /// The peer's `close_notify`.
    CloseNotify,
}

impl Records {
    pub fn new(
        version: ProtocolVersion,
        limit: u64,
        secrets: ExtractedSecrets,
    ) -> Result<Self, RecordError> {
        let version = match version {
            ProtocolVersion::TLSv1_2 => Version::Tls12,
            ProtocolVersion::TLSv1_3 => Version::Tls13,
            _ => return Err(RecordError::Unsupported),
        };
        let ExtractedSecrets { tx, rx } = secrets;
        let (cipher, tx) = Keys::new(tx.0, tx.1)?;
        let (rx_cipher, rx) = Keys::new(rx.0, rx.1)?;
        if cipher != rx_cipher {
            return Err(RecordError::Unsupported);
        }
        Ok(Self {
            tx,
            rx,
            limit,
            version,
            cipher,
        })
    }

    /// Whether TLS 1.2 GCM's explicit nonce travels in each record.
    fn explicit_nonce(&self) -> usize {
        match (self.version, self.cipher) {
            (Version::Tls12, Cipher::Aes128Gcm | Cipher::Aes256Gcm) => EXPLICIT_NONCE,
            _ => 0,
        }
    }

    /// Seals application data taken from `slices` (at most
    /// [`MAX_PLAINTEXT`] bytes of them) into one record appended to `out`.
    /// Returns how many plaintext bytes it took.
    pub fn seal_data(
        &mut self,
        slices: &[std::io::IoSlice<'_>],
        out: &mut Vec<u8>,
    ) -> Result<usize, RecordError> {
        self.seal(ContentType::ApplicationData, out, |out| {
            let mut taken = 0;
            for slice in slices {
                let take = slice.len().min(MAX_PLAINTEXT - taken);
                out.extend_from_slice(&slice[..take]);
                taken += take;
                if taken == MAX_PLAINTEXT {
                    break;
                }
            }
            taken
        })
    }

    /// Seals our `close_notify` alert into a record appended to `out`.
    pub fn seal_close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        // Level warning (1), description close_notify (0).
        self.seal(ContentType::Alert, out, |out| {
            out.extend_from_slice(&[1, 0]);
            2
        })
        .map(drop)
    }

    fn seal(
        &mut self,
        typ: ContentType,
        out: &mut Vec<u8>,
        fill: impl FnOnce(&mut Vec<u8>) -> usize,
    ) -> Result<usize, RecordError> {
        if self.tx.seq >= self.limit {
            return Err(RecordError::KeyExhausted);
        }
        let start = out.len();
        let explicit = self.explicit_nonce();
        let nonce = self.tx.nonce();
        // TLS 1.3 hides the real type inside and says "application data"
        // outside; TLS 1.2 says the type outside.
        let outer = match self.version {
            Version::Tls13 => ContentType::ApplicationData,
            Version::Tls12 => typ,
        };
        out.extend_from_slice(&[u8::from(outer), 3, 3, 0, 0]);
        if explicit > 0 {
            out.extend_from_slice(&nonce[4..]);
        }
        let body = out.len();
        let taken = fill(out);
        if self.version == Version::Tls13 {
            out.push(u8::from(typ));
        }
        let plain_len = out.len() - body;
        let length = explicit + plain_len + TAG;
        out[start + 3..start + HEADER].copy_from_slice(&(length as u16).to_be_bytes());
        let aad = match self.version {
            Version::Tls13 => AadBytes::from(make_tls13_aad(length)),
            Version::Tls12 => AadBytes::from(make_tls12_aad(
                self.tx.seq,
                typ,
                ProtocolVersion::TLSv1_2,
                plain_len,
            )),
        };
        let key = self.tx.expand(self.cipher);
        let tag = key
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_slice()),
                &mut out[body..],
            )
            .map_err(|_| RecordError::BadRecord)?;
        out.extend_from_slice(tag.as_ref());
        self.tx.seq += 1;
        Ok(taken)
    }

    /// The length of the record that starts `buffer`, header included,
    /// once its header is there.
    pub fn record_len(buffer: &[u8]) -> Result<Option<usize>, RecordError> {
        if buffer.len() < HEADER {
            return Ok(None);
        }
        let length = usize::from(u16::from_be_bytes([buffer[3], buffer[4]]));
        if HEADER + length > MAX_RECORD {
            return Err(RecordError::Overflow);
        }
        Ok(Some(HEADER + length))
    }

    /// Opens the whole record `record` (header included) in place.
    pub fn open(&mut self, record: &mut [u8]) -> Result<Opened, RecordError> {
        let (header, payload) = record.split_at_mut(HEADER);
        let outer = ContentType::from(header[0]);
        let explicit = self.explicit_nonce();
        if payload.len() < explicit + TAG {
            return Err(RecordError::BadRecord);
        }
        let mut nonce = self.rx.nonce();
        if explicit > 0 {
            nonce[4..].copy_from_slice(&payload[..EXPLICIT_NONCE]);
        }
        let (aad, typ_outside) = match self.version {
            Version::Tls13 => {
                if outer != ContentType::ApplicationData {
                    return Err(RecordError::UnexpectedRecord);
                }
                (AadBytes::from(make_tls13_aad(payload.len())), None)
            }
            Version::Tls12 => {
                let plain_len = payload.len() - explicit - TAG;
                let aad = make_tls12_aad(self.rx.seq, outer, ProtocolVersion::TLSv1_2, plain_len);
                (AadBytes::from(aad), Some(outer))
            }
        };
        let key = self.rx.expand(self.cipher);
        let plain = key
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_slice()),
                &mut payload[explicit..],
            )
            .map_err(|_| RecordError::BadRecord)?;
        let mut plain_len = plain.len();
        self.rx.seq += 1;
        let typ = match typ_outside {
            Some(typ) => typ,
            None => {
                // TLS 1.3: zero padding, then the real type, at the end.
                while plain_len > 0 && plain[plain_len - 1] == 0 {
                    plain_len -= 1;
                }
                if plain_len == 0 {
                    return Err(RecordError::UnexpectedRecord);
                }
                plain_len -= 1;
                ContentType::from(plain[plain_len])
            }
        };
        let start = HEADER + explicit;
        match typ {
            ContentType::ApplicationData => Ok(Opened::Data(start..start + plain_len)),
            ContentType::Alert => match &record[start..start + plain_len] {
                [_, 0] => Ok(Opened::CloseNotify),
                _ => Err(RecordError::Alert),
            },
            ContentType::Handshake => Err(RecordError::PostHandshake),
            _ => Err(RecordError::UnexpectedRecord),
        }
    }
}
