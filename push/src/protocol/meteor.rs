//! Meteor's subscriber protocol (`GET /push/…`, docs/compat.md): the
//! default templates of Meteor 1.06, one `<script>` line per event, which
//! Meteor's own `meteor.js` and Herald's run as they arrive.
//!
//! | event | line |
//! |---|---|
//! | a channel's position, as the stream opens | `<script>ch("name", lastId);</script>` |
//! | a message | `<script>p(id,"name","text");</script>` |
//! | the heartbeat | `<script>p(-1,"");</script>` |
//! | a close the client must not retry | `<script>eof();</script>` |
//!
//! Every line ends in CRLF. `id` is the message's offset in its channel, so
//! that a client resumes with `.r<id + 1>` through Herald's history; `name`
//! is the channel as the client named it in its URL. The text is the
//! message as published (a JSON string's own text, as Meteor had it) in a
//! double-quoted JavaScript string literal, escaped once per message and
//! shared by every Meteor subscriber.
//!
//! In `longpoll` mode a response ends after the first line that carries a
//! message or a ping (Meteor's `MaxMessages 1`); the client asks again.

use std::sync::Arc;

use bytes::Bytes;
use fanout::Message;

use super::{ClientFrame, Event, Intent, Protocol, Slot};
use crate::{
    CloseReason, ErrorCode, Refusal, Transport, connection::Outgoing, subscriptions::Subscriptions,
};

const PING: &[u8] = b"<script>p(-1,\"\");</script>\r\n";
const EOF: &[u8] = b"<script>eof();</script>\r\n";
const MESSAGE_END: &[u8] = b");</script>\r\n";

/// The Meteor subscriber protocol on one `/push` stream.
#[derive(Debug, Default)]
pub struct MeteorStream {
    /// The channels as the client named them, by slot, each escaped for a
    /// string literal.
    names: Box<[Box<str>]>,
    /// `longpoll`: the response ends once it carried a message or a ping.
    longpoll: bool,
    answered: bool,
}

impl MeteorStream {
    /// A stream of `names` (the client's channel names, in slot order).
    pub fn new(names: &[&str], longpoll: bool) -> Self {
        Self {
            names: names.iter().map(|name| js_string(name).into()).collect(),
            longpoll,
            answered: false,
        }
    }

    fn name(&self, slot: Option<u32>) -> &str {
        slot.and_then(|slot| self.names.get(slot as usize))
            .map_or("\"\"", |name| name)
    }
}

impl Protocol for MeteorStream {
    /// An HTTP response that streams, as SSE's: the client says nothing
    /// after its request.
    const TRANSPORT: Transport = Transport::Sse;

    fn parse(&mut self, _frame: ClientFrame<'_>) -> Result<Intent, Refusal> {
        Err(Refusal::new(
            ErrorCode::BadFrame,
            "a Meteor stream takes no frames",
        ))
    }

    fn encode(&mut self, event: Event<'_>, _view: &Subscriptions, out: &mut Outgoing) {
        match event {
            Event::Subscribed { slot, position, .. } => {
                let name = self.name(Some(slot));
                let line = format!("<script>ch({name}, {});</script>\r\n", position.offset);
                out.push(Bytes::from(line));
            }
            Event::Heartbeat => {
                out.push(Bytes::from_static(PING));
                self.answered |= self.longpoll;
            }
            // Meteor's client stops for good on `eof()`: said only when
            // coming back would be refused again. A shutdown, a slow
            // client or an answered poll just end, and the client resumes.
            Event::Closing { reason, .. } => {
                if let CloseReason::Code(code) = reason
                    && !code.is_temporary()
                    && !matches!(code, ErrorCode::Shutdown | ErrorCode::SlowConsumer)
                {
                    out.push(Bytes::from_static(EOF));
                }
            }
            Event::Opened { .. }
            | Event::Refused(_)
            | Event::Unsubscribed { .. }
            | Event::Pong
            | Event::Refreshed { .. }
            | Event::SignedIn { .. } => {}
        }
    }

    fn message(&mut self, message: &Arc<Message>, view: &Subscriptions, out: &mut Outgoing) {
        let name = self.name(view.find(&message.channel));
        let head = format!("<script>p({},{name},", message.offset());
        out.push_part(Bytes::from(head));
        out.push_part(meteor_text(message));
        out.push(Bytes::from_static(MESSAGE_END));
        self.answered |= self.longpoll;
    }

    fn answered(&self) -> bool {
        self.answered
    }
}

/// A message's text as a JavaScript string literal, built once and shared
/// by every Meteor subscriber: what was published, or a JSON string's own
/// text (Meteor's publishers sent text, which Herald keeps as a JSON string
/// when it is not JSON).
pub(crate) fn meteor_text(message: &Message) -> Bytes {
    message.encoded(Slot::MeteorText.index(), |m| {
        let text = std::str::from_utf8(&m.data).unwrap_or_default();
        let decoded = text
            .starts_with('"')
            .then(|| serde_json::from_str::<String>(text).ok())
            .flatten();
        Bytes::from(js_string(decoded.as_deref().unwrap_or(text)))
    })
}

/// `text` as a double-quoted JavaScript string literal that is JSON too,
/// and safe inside a `<script>` element: `<` is escaped, so no `</script>`
/// can end it early, and so are the line separators JavaScript once
/// refused in literals.
fn js_string(text: &str) -> String {
    use std::fmt::Write;
    let mut literal = String::with_capacity(text.len() + 2);
    literal.push('"');
    for c in text.chars() {
        match c {
            '"' => literal.push_str("\\\""),
            '\\' => literal.push_str("\\\\"),
            '\n' => literal.push_str("\\n"),
            '\r' => literal.push_str("\\r"),
            '\t' => literal.push_str("\\t"),
            '<' | '\u{2028}' | '\u{2029}' | '\0'..='\u{1f}' => {
                let _ = write!(literal, "\\u{:04x}", u32::from(c));
            }
            c => literal.push(c),
        }
    }
    literal.push('"');
    literal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_json_and_close_no_script() {
        let text = "{\"text\":\"it's </script> \\\\ a\nb\u{2028}\"}";
        let literal = js_string(text);
        assert!(!literal.contains("</"), "{literal}");
        assert!(!literal.contains('\n'));
        let back: String = serde_json::from_str(&literal).unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn lines_follow_meteors_templates() {
        let stream = MeteorStream::new(&["mysite-all-evan"], false);
        assert_eq!(stream.name(Some(0)), "\"mysite-all-evan\"");
        assert_eq!(stream.name(Some(1)), "\"\"");
        assert_eq!(PING, b"<script>p(-1,\"\");</script>\r\n");
    }
}
