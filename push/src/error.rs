//! Stable codes for what the native protocol tells clients.

/// Codes of `error` frames (the connection stays open) and of HTTP error
/// bodies on the SSE route. Each string is part of the protocol contract in
/// `docs/protocol.md` and a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not a JSON object.
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
    /// The engine could not serve the request right now.
    Unavailable,
    /// SSE: no `channel` parameter.
    MissingChannel,
    /// SSE: the same channel twice in one stream.
    DuplicateChannel,
    /// SSE: more channels than a stream may have.
    TooManyChannels,
    /// SSE: `Last-Event-ID` is not a cursor for this stream.
    BadLastEventId,
    /// SSE: an unparsable request head.
    BadRequest,
    /// SSE: a method other than GET.
    MethodNotAllowed,
    /// SSE: a request head over the size limit.
    HeadersTooLarge,
    /// No site has the key the client named (or several sites, and it named none).
    SiteUnknown,
    /// A reload removed the client's site.
    SiteRemoved,
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
    /// The channel is not the client's to read.
    Forbidden,
    /// A `private-` channel without a signature or grant.
    SignatureRequired,
    /// A `private-` channel signature that the site's secrets did not make.
    SignatureInvalid,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::AlreadySubscribed => "already_subscribed",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::MissingChannel => "missing_channel",
            ErrorCode::DuplicateChannel => "duplicate_channel",
            ErrorCode::TooManyChannels => "too_many_channels",
            ErrorCode::BadLastEventId => "bad_last_event_id",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::SiteUnknown => "site_unknown",
            ErrorCode::SiteRemoved => "site_removed",
            ErrorCode::TokenInvalid => "token_invalid",
            ErrorCode::TokenRequired => "token_required",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::SiteConnectionLimit => "site_connection_limit",
            ErrorCode::IpConnectionLimit => "ip_connection_limit",
            ErrorCode::ConnectionRateLimit => "connection_rate_limit",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::SignatureRequired => "signature_required",
            ErrorCode::SignatureInvalid => "signature_invalid",
        }
    }

    /// The HTTP status for this code on the SSE route.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::HeadersTooLarge => 431,
            ErrorCode::Unavailable => 503,
            ErrorCode::SiteUnknown => 404,
            ErrorCode::SiteRemoved => 410,
            ErrorCode::TokenInvalid | ErrorCode::TokenRequired | ErrorCode::TokenExpired => 401,
            ErrorCode::OriginNotAllowed
            | ErrorCode::Forbidden
            | ErrorCode::SignatureRequired
            | ErrorCode::SignatureInvalid => 403,
            ErrorCode::SiteConnectionLimit
            | ErrorCode::IpConnectionLimit
            | ErrorCode::ConnectionRateLimit => 429,
            _ => 400,
        }
    }

    /// Whether the refusal is temporary: the client should come back after
    /// a while, with the same credentials. SSE answers these with `retry`.
    pub fn is_temporary(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable
                | ErrorCode::SiteConnectionLimit
                | ErrorCode::IpConnectionLimit
                | ErrorCode::ConnectionRateLimit
        )
    }
}

/// Why a connection ended. The string is the `reason` label of
/// `herald_disconnects_total`; for server-initiated WebSocket closes the
/// close code is part of the protocol contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed or hung up.
    ClientClosed,
    /// The outbox passed its byte limit.
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
    /// The socket failed.
    IoError,
    /// The connection was refused, or its site or token stopped admitting
    /// it; the code says why.
    Refused(ErrorCode),
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::InvalidPayload => "invalid_payload",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::IoError => "io_error",
            CloseReason::Refused(code) => code.as_str(),
        }
    }

    /// The WebSocket close code Herald sends for this reason.
    pub fn ws_code(self) -> u16 {
        match self {
            CloseReason::ClientClosed | CloseReason::IoError => 1000,
            CloseReason::ProtocolError => 1002,
            CloseReason::InvalidPayload => 1007,
            CloseReason::MessageTooBig => 1009,
            CloseReason::SlowConsumer => 4100,
            CloseReason::IdleTimeout => 4101,
            CloseReason::Shutdown => 4200,
            CloseReason::Refused(code) => match code {
                ErrorCode::TokenInvalid => 4001,
                ErrorCode::TokenRequired => 4002,
                ErrorCode::TokenExpired => 4003,
                ErrorCode::SiteUnknown => 4004,
                ErrorCode::SiteRemoved => 4010,
                ErrorCode::SiteConnectionLimit => 4102,
                ErrorCode::IpConnectionLimit => 4103,
                ErrorCode::ConnectionRateLimit => 4104,
                // Not a connection-level refusal; "policy violation".
                _ => 1008,
            },
        }
    }

    pub(crate) const ALL: [CloseReason; 16] = [
        CloseReason::ClientClosed,
        CloseReason::SlowConsumer,
        CloseReason::IdleTimeout,
        CloseReason::Shutdown,
        CloseReason::ProtocolError,
        CloseReason::InvalidPayload,
        CloseReason::MessageTooBig,
        CloseReason::IoError,
        CloseReason::Refused(ErrorCode::TokenInvalid),
        CloseReason::Refused(ErrorCode::TokenRequired),
        CloseReason::Refused(ErrorCode::TokenExpired),
        CloseReason::Refused(ErrorCode::SiteUnknown),
        CloseReason::Refused(ErrorCode::SiteRemoved),
        CloseReason::Refused(ErrorCode::SiteConnectionLimit),
        CloseReason::Refused(ErrorCode::IpConnectionLimit),
        CloseReason::Refused(ErrorCode::ConnectionRateLimit),
    ];
}
