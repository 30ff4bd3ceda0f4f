//! The transports that carry Herald's wire protocols, as labels: in
//! metrics, in logs, and in what the connection core expects of them.

/// A transport: how a connection's bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket (RFC 6455): frames both ways.
    Ws,
    /// Server-Sent Events: a response body that streams; the client says
    /// nothing after its request.
    Sse,
    /// HTTP long-poll: a response answered once, whole; the client says
    /// nothing after its request.
    Poll,
}

impl Transport {
    /// The `transport` label of metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }

    /// Whether the client can be heard after it connected (frames, pongs).
    /// Only then does a silent client time out.
    pub(crate) fn hears_client(self) -> bool {
        matches!(self, Transport::Ws)
    }
}
