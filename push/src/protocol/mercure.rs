//! The Mercure hub's subscriber side (`GET /.well-known/mercure`,
//! docs/compat.md): each update the subscriber's topic selectors pick,
//! and, when the update is private, that its JWT's `subscribe` selectors
//! pick too, as the SSE event its publisher's request made.
//!
//! Every update of a site travels on one channel of Herald's own
//! (`push::mercure::channel`), whatever its topics, and this protocol
//! writes only those its connection asked for. One channel, not one per
//! topic, because Mercure's selectors are templates and `*`, which no
//! channel name can stand for: a subscriber to
//! `https://example.com/books/{id}` must get updates of topics nobody
//! named before. The price is that every Mercure subscriber of a site
//! looks at every update of that site (a few string comparisons each).
//!
//! The event is the update's stored bytes from its `id:` line on, sliced
//! (no copy, no encoding slot: `push::mercure::update`), the same bytes
//! for every subscriber that gets it. The selectors are the connection's
//! whole state, behind one pointer, since an idle subscriber's memory is
//! the product.

use std::sync::Arc;

use bytes::Bytes;
use fanout::Message;
use sites::mercure::matches;

use super::{ClientFrame, Event, Intent, Protocol};
use crate::{
    CloseReason, ErrorCode, Refusal, Transport, connection::Outgoing, mercure::update::Stored,
    subscriptions::Subscriptions,
};

/// The smallest `retry:` sent on shutdown, in milliseconds (as the native
/// SSE protocol's, for the same reason: EventSource has no back-off).
const MIN_SHUTDOWN_RETRY_MS: u128 = 1000;

/// The Mercure protocol on one SSE stream.
#[derive(Debug, Default)]
pub struct MercureSse {
    access: Box<Access>,
}

/// What one subscriber gets.
#[derive(Debug, Default)]
struct Access {
    /// The `topic=` and `match=` selectors of its URL.
    selectors: Box<[Box<str>]>,
    /// Its JWT's `subscribe` selectors: the private updates it may get.
    private: Box<[Box<str>]>,
}

impl MercureSse {
    /// A subscriber of `selectors`, allowed the private updates `private`
    /// selects (empty without a JWT).
    pub fn new(selectors: Box<[Box<str>]>, private: Box<[Box<str>]>) -> Self {
        Self {
            access: Box::new(Access { selectors, private }),
        }
    }

    /// Whether the subscriber gets `update`: one of its topics is selected,
    /// and, for a private update, one of them is allowed by the JWT.
    pub(crate) fn wants(&self, update: &Stored<'_>) -> bool {
        let picks = |selectors: &[Box<str>]| {
            update
                .topics()
                .any(|t| selectors.iter().any(|s| matches(s, t)))
        };
        picks(&self.access.selectors) && (!update.private || picks(&self.access.private))
    }
}

impl Protocol for MercureSse {
    const TRANSPORT: Transport = Transport::Sse;

    /// An EventSource sends nothing after its request.
    fn parse(&mut self, _frame: ClientFrame<'_>) -> Result<Intent, Refusal> {
        Err(Refusal::new(
            ErrorCode::BadFrame,
            "an event stream takes no frames",
        ))
    }

    fn encode(&mut self, event: Event<'_>, _view: &Subscriptions, out: &mut Outgoing) {
        match event {
            // Mercure's keep-alive is a comment line.
            Event::Heartbeat => out.push(Bytes::from_static(b":\n\n")),
            // A shutdown tells EventSource when to come back (with its
            // `Last-Event-ID`, so nothing is missed); other closes just end.
            Event::Closing {
                reason: CloseReason::Code(ErrorCode::Shutdown),
                reconnect_after,
                ..
            } => {
                let delay = reconnect_after.unwrap_or_default().as_millis();
                let retry = delay.max(MIN_SHUTDOWN_RETRY_MS);
                out.push(Bytes::from(format!("retry: {retry}\n\n")));
            }
            // Mercure has no events of its own for these: its subscribers
            // see updates, and the hub's answer headers.
            Event::Opened { .. }
            | Event::Subscribed { .. }
            | Event::Unsubscribed { .. }
            | Event::Pong
            | Event::Refreshed { .. }
            | Event::SignedIn { .. }
            | Event::Refused(_)
            | Event::Closing { .. } => {}
        }
    }

    fn message(&mut self, message: &Arc<Message>, _view: &Subscriptions, out: &mut Outgoing) {
        let Some(update) = Stored::read(&message.data) else {
            return;
        };
        if self.wants(&update) {
            out.push(message.data.slice(update.frame_start..));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mercure::update::Update;

    fn boxed(list: &[&str]) -> Box<[Box<str>]> {
        list.iter().map(|s| Box::from(*s)).collect()
    }

    #[test]
    fn subscribers_get_what_they_select_and_may_read() {
        let topics = vec![
            "https://example.com/books/1".to_string(),
            "https://example.com/authors/2/books".into(),
        ];
        let update = |private| Update {
            topics: &topics,
            private,
            id: "1",
            kind: None,
            retry: None,
            data: "x",
        };
        let (public, private) = (update(false).store(), update(true).store());
        let public = Stored::read(&public).unwrap();
        let private = Stored::read(&private).unwrap();
        let cases: &[(&[&str], &[&str], bool, bool)] = &[
            (&["*"], &[], true, false),
            (&["https://example.com/books/{id}"], &[], true, false),
            (
                &["https://example.com/authors/{id}/books"],
                &["*"],
                true,
                true,
            ),
            (&["https://example.com/books/2"], &["*"], false, false),
            (
                &["*"],
                &["https://example.com/authors/{a}/books"],
                true,
                true,
            ),
            (
                &["*"],
                &["https://example.com/authors/3/books"],
                true,
                false,
            ),
        ];
        for (selectors, claim, gets_public, gets_private) in cases {
            let subscriber = MercureSse::new(boxed(selectors), boxed(claim));
            assert_eq!(
                subscriber.wants(&public),
                *gets_public,
                "{selectors:?} {claim:?}"
            );
            assert_eq!(
                subscriber.wants(&private),
                *gets_private,
                "{selectors:?} {claim:?}"
            );
        }
    }

    #[test]
    fn the_state_is_one_pointer() {
        assert_eq!(size_of::<MercureSse>(), size_of::<usize>());
    }
}
