//! Which of a site's connection limits a new connection hit.

/// A limit that refused a new connection; admission turns it into the
/// refusal code of `docs/security.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionLimit {
    /// The site has `max_connections` open.
    Site,
    /// The client's address has `connections_per_ip` open to the site.
    Ip,
    /// The client's address opens connections faster than `connection_rate_per_ip`.
    Rate,
}
