//! What Herald refuses, and how each refusal reads on every route: the
//! stable code, its HTTP status and its WebSocket close code, in one table
//! ([`ErrorCode::TABLE`]). `docs/protocol.md` mirrors the table, and a test
//! holds the two together.

use std::borrow::Cow;

/// The stable codes of `docs/protocol.md`: in `error` frames and events, in
/// HTTP error bodies, as WebSocket close reasons and as metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame or body is not JSON (a frame: not one JSON object).
    BadJson,
    /// A binary frame, or a known `type` with a missing or ill-typed field.
    BadFrame,
    /// `type` is missing or unknown.
    UnknownType,
    /// A channel name broke the naming rules.
    InvalidChannel,
    /// `subscribe` to a channel the connection already has.
    AlreadySubscribed,
    /// `unsubscribe` from a channel the connection does not have.
    NotSubscribed,
    /// The connection has as many channels as it may.
    TooManySubscriptions,
    /// A request without its `channel`.
    MissingChannel,
    /// SSE: the same channel twice in one stream.
    DuplicateChannel,
    /// SSE: more channels than a stream may have.
    TooManyChannels,
    /// SSE: `Last-Event-ID` is not a cursor for this stream.
    BadLastEventId,
    /// A request Herald cannot parse, or that breaks the route's rules.
    BadRequest,
    /// A method the route does not take.
    MethodNotAllowed,
    /// A request head over the size limit.
    HeadersTooLarge,
    /// `/ws` without a WebSocket upgrade of version 13.
    UpgradeRequired,
    /// No such route.
    NotFound,
    /// A publisher without a credential, or with a secret or key of no site.
    Unauthorized,
    /// A signed request (or a `private-` channel signature) that the site's
    /// secrets did not make.
    SignatureInvalid,
    /// A signed request outside the signature window.
    SignatureExpired,
    /// A signed request that was already accepted.
    SignatureReplayed,
    /// A body or a message over its size limit.
    PayloadTooLarge,
    /// A publish or delivery body that is not `Content-Type: application/json`.
    UnsupportedMediaType,
    /// A request body that did not arrive within `publish.body_timeout_secs`.
    RequestTimeout,
    /// Request bodies in flight already hold `publish.max_body_bytes_in_flight`.
    Overloaded,
    /// This node's delivery runs further behind than `delivery.max_lag_ms`,
    /// and did not catch up within `delivery.max_publish_wait_ms`.
    DeliveryLagging,
    /// The site's publish rate is used up.
    RateLimited,
    /// No site has the key the client named (or several sites, and it named none).
    SiteUnknown,
    /// A reload removed the client's site.
    SiteRemoved,
    /// An operator disconnected the client's user (the console, or
    /// `POST /api/admin/disconnect`).
    Disconnected,
    /// The token is malformed, not HS256, or not signed by the site.
    TokenInvalid,
    /// The site is private and the client brought no token.
    TokenRequired,
    /// The token is past its `exp` (or before its `nbf`).
    TokenExpired,
    /// A browser page from an origin the site does not allow.
    OriginNotAllowed,
    /// The site has as many connections as it may.
    SiteConnectionLimit,
    /// The client's IP has as many connections to the site as it may.
    IpConnectionLimit,
    /// The client's IP opens connections faster than the site allows.
    ConnectionRateLimit,
    /// The client sends frames faster than its site's `command_rate`; the
    /// frame is refused, and a client that keeps on is closed (4105).
    CommandRateLimited,
    /// The site's clients open channels new to this node faster than its
    /// `new_channel_rate`.
    NewChannelRateLimited,
    /// The channel is not the client's to read (or the dev site's publisher
    /// is not on a trusted network).
    Forbidden,
    /// A request to the dev site that came through a proxy (`Forwarded`,
    /// `X-Forwarded-For` or `Via`): its loopback address says nothing then.
    ProxiedDevSite,
    /// A `private-` channel without a signature or grant.
    SignatureRequired,
    /// The engine could not serve the request right now.
    Unavailable,
    /// The server failed at something that is not the client's doing.
    Internal,
    /// The client did not read fast enough; its outbox passed its limit.
    SlowConsumer,
    /// Nothing was heard from the client for too long.
    IdleTimeout,
    /// The server is shutting down.
    Shutdown,
    /// The client broke RFC 6455 framing.
    ProtocolError,
    /// A text frame that is not UTF-8.
    InvalidPayload,
    /// A client frame over the size limit.
    MessageTooBig,
}

/// How one code reads on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeInfo {
    pub code: ErrorCode,
    /// The stable string.
    pub name: &'static str,
    /// The HTTP status of an answer with this code; `None` for codes that
    /// only ever end a connection that is already streaming.
    pub http_status: Option<u16>,
    /// The WebSocket close code when a connection ends with this code;
    /// `None` for codes that never end one by themselves (another refusal
    /// that ends a WebSocket closes it with 1008, "policy violation").
    pub close_code: Option<u16>,
}

const fn row(
    code: ErrorCode,
    name: &'static str,
    http_status: Option<u16>,
    close_code: Option<u16>,
) -> CodeInfo {
    CodeInfo {
        code,
        name,
        http_status,
        close_code,
    }
}

impl ErrorCode {
    /// Every code, its string, its HTTP status and its close code: the one
    /// table that every answer reads, mirrored by `docs/protocol.md`.
    #[rustfmt::skip]
    pub const TABLE: &'static [CodeInfo] = &[
        row(ErrorCode::BadJson, "bad_json", Some(400), None),
        row(ErrorCode::BadFrame, "bad_frame", Some(400), None),
        row(ErrorCode::UnknownType, "unknown_type", Some(400), None),
        row(ErrorCode::InvalidChannel, "invalid_channel", Some(400), None),
        row(ErrorCode::AlreadySubscribed, "already_subscribed", Some(400), None),
        row(ErrorCode::NotSubscribed, "not_subscribed", Some(400), None),
        row(ErrorCode::TooManySubscriptions, "too_many_subscriptions", Some(400), None),
        row(ErrorCode::MissingChannel, "missing_channel", Some(400), None),
        row(ErrorCode::DuplicateChannel, "duplicate_channel", Some(400), None),
        row(ErrorCode::TooManyChannels, "too_many_channels", Some(400), None),
        row(ErrorCode::BadLastEventId, "bad_last_event_id", Some(400), None),
        row(ErrorCode::BadRequest, "bad_request", Some(400), None),
        row(ErrorCode::MethodNotAllowed, "method_not_allowed", Some(405), None),
        row(ErrorCode::HeadersTooLarge, "headers_too_large", Some(431), None),
        row(ErrorCode::UpgradeRequired, "upgrade_required", Some(426), None),
        row(ErrorCode::NotFound, "not_found", Some(404), None),
        row(ErrorCode::Unauthorized, "unauthorized", Some(401), None),
        row(ErrorCode::SignatureInvalid, "signature_invalid", Some(401), None),
        row(ErrorCode::SignatureExpired, "signature_expired", Some(401), None),
        row(ErrorCode::SignatureReplayed, "signature_replayed", Some(401), None),
        row(ErrorCode::PayloadTooLarge, "payload_too_large", Some(413), None),
        row(ErrorCode::UnsupportedMediaType, "unsupported_media_type", Some(415), None),
        row(ErrorCode::RequestTimeout, "request_timeout", Some(408), None),
        row(ErrorCode::Overloaded, "overloaded", Some(503), None),
        row(ErrorCode::DeliveryLagging, "delivery_lagging", Some(503), None),
        row(ErrorCode::RateLimited, "rate_limited", Some(429), None),
        row(ErrorCode::SiteUnknown, "site_unknown", Some(404), Some(4004)),
        row(ErrorCode::SiteRemoved, "site_removed", Some(410), Some(4010)),
        row(ErrorCode::Disconnected, "disconnected", None, Some(4011)),
        row(ErrorCode::TokenInvalid, "token_invalid", Some(401), Some(4001)),
        row(ErrorCode::TokenRequired, "token_required", Some(401), Some(4002)),
        row(ErrorCode::TokenExpired, "token_expired", Some(401), Some(4003)),
        row(ErrorCode::OriginNotAllowed, "origin_not_allowed", Some(403), None),
        row(ErrorCode::SiteConnectionLimit, "site_connection_limit", Some(429), Some(4102)),
        row(ErrorCode::IpConnectionLimit, "ip_connection_limit", Some(429), Some(4103)),
        row(ErrorCode::ConnectionRateLimit, "connection_rate_limit", Some(429), Some(4104)),
        row(ErrorCode::CommandRateLimited, "command_rate_limited", Some(429), Some(4105)),
        row(ErrorCode::NewChannelRateLimited, "new_channel_rate_limited", Some(429), None),
        row(ErrorCode::Forbidden, "forbidden", Some(403), None),
        row(ErrorCode::ProxiedDevSite, "proxied_dev_site", Some(403), None),
        row(ErrorCode::SignatureRequired, "signature_required", Some(403), None),
        row(ErrorCode::Unavailable, "unavailable", Some(503), None),
        row(ErrorCode::Internal, "internal", Some(500), None),
        row(ErrorCode::SlowConsumer, "slow_consumer", None, Some(4100)),
        row(ErrorCode::IdleTimeout, "idle_timeout", None, Some(4101)),
        row(ErrorCode::Shutdown, "shutdown", None, Some(4200)),
        row(ErrorCode::ProtocolError, "protocol_error", None, Some(1002)),
        row(ErrorCode::InvalidPayload, "invalid_payload", None, Some(1007)),
        row(ErrorCode::MessageTooBig, "message_too_big", None, Some(1009)),
    ];

    /// This code's row of [`ErrorCode::TABLE`].
    pub fn info(self) -> &'static CodeInfo {
        // The table lists the variants in declaration order (a test holds it).
        &Self::TABLE[self as usize]
    }

    pub fn as_str(self) -> &'static str {
        self.info().name
    }

    /// The HTTP status of an answer with this code (500 for the codes that
    /// have none: a bug, since those never answer a request).
    pub fn http_status(self) -> u16 {
        self.info().http_status.unwrap_or(500)
    }

    /// The WebSocket close code when this code ends a connection.
    pub fn close_code(self) -> u16 {
        self.info().close_code.unwrap_or(1008)
    }

    /// Whether the refusal is temporary: the client should come back after
    /// a while, with the same credentials. SSE answers these with `retry`.
    pub fn is_temporary(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable
                | ErrorCode::Overloaded
                | ErrorCode::DeliveryLagging
                | ErrorCode::SiteConnectionLimit
                | ErrorCode::IpConnectionLimit
                | ErrorCode::ConnectionRateLimit
                | ErrorCode::CommandRateLimited
                | ErrorCode::NewChannelRateLimited
        )
    }
}

/// A refusal: the stable code, a message for people, and the channel it
/// concerns, if any. Every route turns it into its own answer: an HTTP
/// status and JSON body, an `error` frame, a close frame, an SSE error event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    /// The channel as the client wrote it (it may not be a valid name).
    pub channel: Option<String>,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            channel: None,
        }
    }

    /// The same refusal, naming the channel it concerns.
    pub fn on_channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }

    /// The HTTP error body of `docs/protocol.md`: `{"error":{"code":…,"message":…}}`.
    pub fn http_body(&self) -> String {
        serde_json::json!({"error": {"code": self.code.as_str(), "message": self.message}})
            .to_string()
    }
}

impl From<fanout::Error> for Refusal {
    fn from(error: fanout::Error) -> Self {
        let code = match &error {
            fanout::Error::InvalidChannel(_) => ErrorCode::InvalidChannel,
            _ => ErrorCode::Unavailable,
        };
        Refusal::new(code, error.to_string())
    }
}

/// Why a connection ended: the label of `herald_disconnects_total`, and for
/// a WebSocket the close code Herald sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed or hung up.
    ClientClosed,
    /// The socket failed.
    IoError,
    /// The response said all it had to, and the client comes back for more
    /// (a long-poll that was answered: Meteor's `longpoll` mode).
    Answered,
    /// Herald ended it; the code says why.
    Code(ErrorCode),
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::IoError => "io_error",
            CloseReason::Answered => "answered",
            CloseReason::Code(code) => code.as_str(),
        }
    }

    /// The native WebSocket close code for this reason.
    pub fn ws_code(self) -> u16 {
        match self {
            CloseReason::ClientClosed | CloseReason::IoError | CloseReason::Answered => 1000,
            CloseReason::Code(code) => code.close_code(),
        }
    }

    /// The reasons a connection ends with, in the order their metric series
    /// are created: the two of the client's doing, a long-poll's answer,
    /// then every code with a close code of its own.
    pub(crate) fn all() -> impl Iterator<Item = CloseReason> {
        [
            CloseReason::ClientClosed,
            CloseReason::IoError,
            CloseReason::Answered,
        ]
        .into_iter()
        .chain(
            ErrorCode::TABLE
                .iter()
                .filter(|row| row.close_code.is_some())
                .map(|row| CloseReason::Code(row.code)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_code_once_in_order() {
        for (index, row) in ErrorCode::TABLE.iter().enumerate() {
            assert_eq!(row.code as usize, index, "{} is out of place", row.name);
            assert_eq!(row.code.info(), row);
        }
        let mut names: Vec<_> = ErrorCode::TABLE.iter().map(|row| row.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::TABLE.len(), "a name is used twice");
        assert_eq!(
            ErrorCode::MessageTooBig as usize + 1,
            ErrorCode::TABLE.len(),
            "the last variant ends the table"
        );
    }

    /// `docs/protocol.md` mirrors [`ErrorCode::TABLE`] row for row in its
    /// "Error codes" section: the same codes, statuses and close codes.
    #[test]
    fn the_protocol_docs_mirror_the_table() {
        let docs = include_str!("../../docs/protocol.md");
        let section = docs
            .split("\n## Error codes\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("docs/protocol.md has an \"Error codes\" section");
        let cell = |text: &str| match text.trim() {
            "–" => None,
            number => Some(number.parse::<u16>().expect(number)),
        };
        let documented: Vec<(String, Option<u16>, Option<u16>)> = section
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').collect();
                let code = cells[1].trim().trim_matches('`').to_string();
                (code, cell(cells[2]), cell(cells[3]))
            })
            .collect();
        let table: Vec<(String, Option<u16>, Option<u16>)> = ErrorCode::TABLE
            .iter()
            .map(|row| (row.name.to_string(), row.http_status, row.close_code))
            .collect();
        assert_eq!(
            documented, table,
            "docs/protocol.md and ErrorCode::TABLE differ"
        );
    }

    #[test]
    fn every_close_code_is_in_the_ranges_clients_act_on() {
        for row in ErrorCode::TABLE {
            if let Some(close) = row.close_code {
                assert!(
                    matches!(close, 1002 | 1007 | 1009 | 4000..=4299),
                    "{}: {close}",
                    row.name
                );
            }
            assert!(
                row.http_status.is_some() || row.close_code.is_some(),
                "{} reaches no client",
                row.name
            );
        }
    }
}
