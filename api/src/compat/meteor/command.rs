//! One line of the Meteor controller protocol, parsed: the command and its
//! arguments as Meteor's own controller splits them
//! (`../shared/reference/protocols.md` §3.2).

/// A controller command. Its arguments borrow the line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command<'a> {
    /// `ADDMESSAGE <channel> <text>`: the text is the rest of the line,
    /// verbatim (still `addslashes`-escaped).
    AddMessage {
        channel: &'a str,
        text: &'a [u8],
    },
    /// `COUNTSUBSCRIBERS <channel>`.
    CountSubscribers {
        channel: &'a str,
    },
    ListChannels,
    ShowStats,
    Quit,
}

/// What Meteor answers to any line it cannot parse.
pub(crate) const INVALID: &str = "ERR Invalid command syntax";

/// Parses one line, its end (`\n` or `\r\n`) already taken off.
///
/// Commands are case-sensitive, as Meteor's are. The channel is the first
/// run of non-space bytes after the command and exactly one separator; for
/// `ADDMESSAGE`, exactly one whitespace byte follows it and everything after
/// that is the text, which may be empty.
pub(crate) fn parse(line: &[u8]) -> Option<Command<'_>> {
    let (word, rest) = split_word(line);
    match word {
        b"ADDMESSAGE" => {
            let (channel, rest) = split_word(rest?);
            let text = rest?;
            Some(Command::AddMessage {
                channel: channel_name(channel)?,
                text,
            })
        }
        b"COUNTSUBSCRIBERS" => {
            let (channel, rest) = split_word(rest?);
            if rest.is_some_and(|rest| !rest.iter().all(u8::is_ascii_whitespace)) {
                return None;
            }
            Some(Command::CountSubscribers {
                channel: channel_name(channel)?,
            })
        }
        b"LISTCHANNELS" if no_arguments(rest) => Some(Command::ListChannels),
        b"SHOWSTATS" if no_arguments(rest) => Some(Command::ShowStats),
        b"QUIT" if no_arguments(rest) => Some(Command::Quit),
        _ => None,
    }
}

/// The bytes up to the first whitespace byte, and what follows that byte
/// (`None` when the line ends first).
fn split_word(line: &[u8]) -> (&[u8], Option<&[u8]>) {
    match line.iter().position(u8::is_ascii_whitespace) {
        Some(at) => (&line[..at], Some(&line[at + 1..])),
        None => (line, None),
    }
}

fn no_arguments(rest: Option<&[u8]>) -> bool {
    rest.is_none_or(|rest| rest.iter().all(u8::is_ascii_whitespace))
}

/// A channel as the controller names it: non-empty, and text. Whether it is
/// a valid Herald channel is the controller's to decide, with its own error.
fn channel_name(word: &[u8]) -> Option<&str> {
    if word.is_empty() {
        return None;
    }
    std::str::from_utf8(word).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_command_as_meteor_splits_it() {
        assert_eq!(
            parse(br#"ADDMESSAGE all-evan {\"id\":1,\"text\":\"a  b\"}"#),
            Some(Command::AddMessage {
                channel: "all-evan",
                text: br#"{\"id\":1,\"text\":\"a  b\"}"#,
            })
        );
        // One separator only: the text keeps its leading space.
        assert_eq!(
            parse(b"ADDMESSAGE public  x"),
            Some(Command::AddMessage {
                channel: "public",
                text: b" x",
            })
        );
        assert_eq!(
            parse(b"ADDMESSAGE public "),
            Some(Command::AddMessage {
                channel: "public",
                text: b"",
            })
        );
        assert_eq!(
            parse(b"COUNTSUBSCRIBERS public"),
            Some(Command::CountSubscribers { channel: "public" })
        );
        assert_eq!(parse(b"LISTCHANNELS"), Some(Command::ListChannels));
        assert_eq!(parse(b"SHOWSTATS"), Some(Command::ShowStats));
        assert_eq!(parse(b"QUIT"), Some(Command::Quit));
        assert_eq!(parse(b"QUIT "), Some(Command::Quit));
    }

    #[test]
    fn refuses_what_meteor_refuses() {
        for line in [
            &b""[..],
            b"NOPE",
            b"addmessage public x",
            b"ADDMESSAGE",
            b"ADDMESSAGE public",
            b"ADDMESSAGE  x",
            b"COUNTSUBSCRIBERS",
            b"COUNTSUBSCRIBERS a b",
            b"LISTCHANNELS now",
            b"QUIT please",
            b"ADDMESSAGE \xff\xfe x",
        ] {
            assert_eq!(parse(line), None, "{:?}", String::from_utf8_lossy(line));
        }
    }
}
