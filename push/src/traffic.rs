//! What reaches each connection, for the traffic accounting that the
//! server keeps per site and per user (docs/operations.md, "Accounting").
//!
//! The hub counts what it hands to a connection in its outbox, under the
//! lock it takes anyway; the connection passes the counts on once per
//! tick and when it ends, so that the sink is called about once per ping
//! interval per connection, never per delivery.

/// What one connection received since it last reported.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Messages handed to the connection, replays from history included.
    pub deliveries: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Milliseconds the connection was open, for a connection that has a
    /// user (a token's subject or a signed sign-in); 0 for anonymous ones,
    /// whose time the site's own count of open connections measures.
    pub connected_ms: u64,
}

/// Where connections report what they received.
pub trait TrafficSink: Send + Sync {
    /// `user` is the connection's user, when it has one.
    fn received(&self, site: &str, user: Option<&str>, received: Received);
}
