//! Undoing PHP's `addslashes`, which the Meteor plugin applies to the JSON
//! it publishes (`addslashes(json_encode($notice))`): Meteor pasted the text
//! raw into a JavaScript string literal, and Herald's subscribers want the
//! JSON back.

/// The text with PHP's `stripslashes` applied: `\\`, `\'` and `\"` lose
/// their backslash and `\0` becomes NUL, which inverts `addslashes`
/// exactly; any other escaped byte loses its backslash too, and a lone
/// backslash at the end is dropped, as `stripslashes` does.
pub(crate) fn strip_slashes(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.iter().copied();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        match bytes.next() {
            Some(b'0') => out.push(0),
            Some(escaped) => out.push(escaped),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PHP's `addslashes`, for the round trip.
    fn add_slashes(text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &byte in text {
            match byte {
                b'\\' | b'\'' | b'"' => out.extend_from_slice(&[b'\\', byte]),
                0 => out.extend_from_slice(b"\\0"),
                _ => out.push(byte),
            }
        }
        out
    }

    #[test]
    fn inverts_addslashes() {
        let texts: [&[u8]; 5] = [
            br#"{"text":"it's \"quoted\" and a \\ backslash","id":7}"#,
            b"",
            b"\0nul\0",
            br#"\\\\"#,
            "{\"text\":\"caf\u{e9} \\u00e9 \u{1f600}\"}".as_bytes(),
        ];
        for text in texts {
            assert_eq!(strip_slashes(&add_slashes(text)), text);
        }
    }

    #[test]
    fn treats_other_escapes_as_stripslashes_does() {
        assert_eq!(strip_slashes(br"\n\x"), b"nx");
        assert_eq!(strip_slashes(br"end\"), b"end");
    }
}
