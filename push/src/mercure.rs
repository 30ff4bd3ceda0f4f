//! The Mercure hub's subscribe requests (docs/compat.md, "Mercure"):
//! `GET /.well-known/mercure?topic=…&match=…`, checked into a stream of
//! the site's Mercure channel and answered by `sse::answer` in the
//! [`MercureSse`] protocol, so admission, limits, history and the
//! connection core are SSE's.
//!
//! Both generations of the protocol are read (`../shared/reference` §2):
//! `topic=` (URI templates, exact topics, `*`) and `match=` (exact) select
//! topics; `lastEventID` and `last_event_id` (or the `Last-Event-ID`
//! header, which wins) resume; the JWT comes from `Authorization: Bearer`,
//! the `mercureAuthorization` cookie, or `?authorization=`, in that order.
//! `key=`, Herald's own, names the site when the process serves several.
//!
//! Resuming finds the given id in the channel's history and replays what
//! follows it; `earliest` replays all that is kept; an id history does not
//! hold replays nothing (as the Mercure hub does). The answer's
//! `Last-Event-ID` and `Mercure-Last-Event-ID` headers say where the
//! stream starts: the id resumed from, or the newest id kept, or `earliest`.

mod accept;
pub mod publish;
pub mod update;

pub use accept::{accept, is_mercure_request};

use std::{borrow::Cow, net::SocketAddr, sync::Arc};

use fanout::{ChannelKey, ChannelName, Position};
use sites::{Mode, Site, mercure as jwt, token::TokenError};

use crate::{
    Context, ErrorCode, MercureSse, Refusal,
    opening::{MAX_URL_CHANNELS, Opening},
    sse::{self, Answer, SseRequest},
    subscriptions::Backlog,
};

use self::update::Stored;

/// The name of every site's Mercure channel (`<site>/~mercure` inside Herald).
pub const CHANNEL: &str = "mercure";

/// The longest topic selector (and topic) accepted.
pub const MAX_TOPIC_BYTES: usize = 2048;

/// The resume id that replays everything kept.
pub const EARLIEST: &str = "earliest";

/// The Mercure channel of `site`.
pub fn channel(site: &str) -> ChannelKey {
    // Unwrap-free: the name is a constant that passes the name rules.
    let name = ChannelName::new(CHANNEL).unwrap_or_else(|_| unreachable!());
    ChannelKey::own(site, &name)
}

/// What a subscribe request carries besides its URL.
#[derive(Debug, Default, Clone, Copy)]
pub struct MercureHeaders<'a> {
    pub last_event_id: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub cookie: Option<&'a str>,
    pub origin: Option<&'a str>,
    /// Whether the request came through a proxy (`crate::is_proxied`).
    pub proxied: bool,
}

/// A checked subscribe request.
#[derive(Debug)]
pub struct MercureRequest {
    site: Arc<Site>,
    protocol: MercureSse,
    /// The id to resume after, if the client gave one.
    resume: Option<String>,
    origin: Option<String>,
    proxied: bool,
    /// Whether a valid JWT came with it.
    vouched: bool,
}

fn refusal(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Refusal {
    Refusal::new(code, message)
}

/// The query parameters of a subscribe request.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Query {
    pub selectors: Vec<Box<str>>,
    pub last_event_id: Option<String>,
    pub authorization: Option<String>,
    pub key: Option<String>,
}

impl Query {
    /// Parses a subscribe request's query: a `match…` parameter that is not
    /// `match` is refused, as the new Mercure draft says (400).
    pub(crate) fn parse(query: &str) -> Result<Self, Refusal> {
        let mut params = Query::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "topic" | "match" => {
                    if value.is_empty() || value.len() > MAX_TOPIC_BYTES {
                        return Err(refusal(
                            ErrorCode::BadRequest,
                            format!("a topic selector is 1 to {MAX_TOPIC_BYTES} bytes"),
                        ));
                    }
                    if params.selectors.len() == MAX_URL_CHANNELS {
                        return Err(refusal(
                            ErrorCode::TooManyChannels,
                            format!("a request may name at most {MAX_URL_CHANNELS} selectors"),
                        ));
                    }
                    params.selectors.push(value.into());
                }
                "match_urlpattern" => {
                    return Err(refusal(
                        ErrorCode::BadRequest,
                        "match_urlpattern is not supported: select with match= (exact) or \
                         topic= (exact, URI template or *)",
                    ));
                }
                other if other.starts_with("match") => {
                    return Err(refusal(
                        ErrorCode::BadRequest,
                        format!("unknown parameter {other:?}: select with match= or topic="),
                    ));
                }
                "lastEventID" | "last_event_id" => {
                    params.last_event_id = Some(value.into_owned());
                }
                "authorization" => params.authorization = Some(value.into_owned()),
                "key" => params.key = Some(value.into_owned()),
                _ => {}
            }
        }
        if params.selectors.is_empty() {
            return Err(refusal(
                ErrorCode::BadRequest,
                "missing topic: name at least one topic= or match= selector",
            ));
        }
        Ok(params)
    }
}

/// The site a Mercure request is for: the one its `key` names, or the one
/// site this process serves.
pub fn site(context: &Context, key: Option<&str>) -> Result<Arc<Site>, Refusal> {
    let sites = context.sites();
    match key {
        Some(key) => sites.by_key(key),
        None => sites.only(),
    }
    .ok_or_else(|| {
        context.metrics().reject("-", ErrorCode::SiteUnknown);
        refusal(
            ErrorCode::SiteUnknown,
            match key {
                Some(_) => "no site has this key",
                None => "this hub serves several sites: name one with ?key=",
            },
        )
    })
}

/// `origin` when the site a request's `target` names (`?key=`, or the one
/// site) lists it in its `allowed_origins`: only such a page may send its
/// cookie (the `mercureAuthorization` JWT) along, as with a Mercure hub's
/// `cors_origins`. Any other page reads streams without credentials.
pub fn listed_origin<'a>(
    context: &Context,
    target: &str,
    origin: Option<&'a str>,
) -> Option<&'a str> {
    let origin = origin?;
    let query = target.split_once('?').map_or("", |(_, query)| query);
    let key = form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "key")
        .map(|(_, value)| value.into_owned());
    let sites = context.sites();
    let site = match key {
        Some(key) => sites.by_key(&key),
        None => sites.only(),
    }?;
    let settings = site.settings();
    (!settings.allowed_origins.is_empty() && settings.allows_origin(origin)).then_some(origin)
}

/// The JWT of a request: the bearer of `Authorization`, else the
/// `mercureAuthorization` cookie, else `query` (`?authorization=`).
pub fn jwt<'a>(
    authorization: Option<&'a str>,
    cookie: Option<&'a str>,
    query: Option<&'a str>,
) -> Option<&'a str> {
    crate::bearer(authorization)
        .or_else(|| {
            cookie?.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                (name.trim() == "mercureAuthorization").then(|| value.trim())
            })
        })
        .or(query)
        .filter(|token| !token.is_empty())
}

/// A refused JWT: 401 with the code that says why.
pub fn jwt_refusal(error: TokenError) -> Refusal {
    match error {
        TokenError::Expired => refusal(ErrorCode::TokenExpired, "the JWT has expired"),
        TokenError::Invalid(why) => refusal(ErrorCode::TokenInvalid, why),
    }
}

/// Checks a subscribe request: its method, its selectors, its site and its
/// JWT (a bad one is 401, as the Mercure hub answers; none is fine, and
/// gets public updates only, except on a private site).
pub fn check(
    context: &Context,
    method: &str,
    target: &str,
    headers: MercureHeaders<'_>,
) -> Result<MercureRequest, Refusal> {
    if method != "GET" {
        return Err(refusal(
            ErrorCode::MethodNotAllowed,
            "subscribe with GET, publish with POST",
        ));
    }
    let query = target.split_once('?').map_or("", |(_, query)| query);
    let params = Query::parse(query)?;
    let site = site(context, params.key.as_deref())?;
    let refuse = |refusal: Refusal| {
        context.metrics().reject(site.id(), refusal.code);
        refusal
    };
    let settings = site.settings();
    let max = settings.limits.max_subscriptions;
    if params.selectors.len() > max {
        return Err(refuse(refusal(
            ErrorCode::TooManyChannels,
            format!("a subscriber may have at most {max} topic selectors on this site"),
        )));
    }
    let token = jwt(
        headers.authorization,
        headers.cookie,
        params.authorization.as_deref(),
    );
    let claims = match token {
        Some(token) => {
            Some(jwt::verify(settings.mercure_keys(), token).map_err(|e| refuse(jwt_refusal(e)))?)
        }
        None if settings.mode == Mode::Private => {
            return Err(refuse(refusal(
                ErrorCode::TokenRequired,
                "this site is private: subscribe with a Mercure JWT",
            )));
        }
        None => None,
    };
    let resume = headers
        .last_event_id
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .or(params.last_event_id.filter(|id| !id.is_empty()));
    let vouched = claims.is_some();
    let private = claims.map(|claims| claims.subscribe).unwrap_or_default();
    Ok(MercureRequest {
        protocol: MercureSse::new(params.selectors.into(), private),
        site,
        resume,
        origin: headers.origin.map(str::to_string),
        proxied: headers.proxied,
        vouched,
    })
}

/// Answers a checked (or refused) subscribe request, with the id its
/// stream starts after (the `Last-Event-ID` answer header) when it starts.
pub async fn answer(
    context: &Context,
    request: Result<MercureRequest, Refusal>,
    peer: SocketAddr,
) -> (Answer<MercureSse>, Option<String>) {
    let request = match request {
        Ok(request) => request,
        Err(refusal) => {
            let answer = sse::answer(context, Err(refusal), peer, MercureSse::default()).await;
            return (answer, None);
        }
    };
    let key = channel(request.site.id());
    let (backlog, last_id) = match start(context, &key, request.resume.as_deref()).await {
        Ok(start) => start,
        Err(error) => {
            tracing::warn!(client.addr = %peer, %error, "Mercure history read failed");
            let refusal = refusal(ErrorCode::Unavailable, error.to_string());
            let answer = sse::answer(context, Err(refusal), peer, MercureSse::default()).await;
            return (answer, None);
        }
    };
    // Unwrap-free: the name is a constant that passes the name rules.
    let name = ChannelName::new(CHANNEL).unwrap_or_else(|_| unreachable!());
    let stream = SseRequest {
        opening: Opening::own(name, backlog),
        key: Some(request.site.settings().key.clone()),
        token: None,
        origin: request.origin,
        proxied: request.proxied,
        vouched: request.vouched,
    };
    let answer = sse::answer(context, Ok(stream), peer, request.protocol).await;
    (answer, Some(last_id))
}

/// What a stream replays, and the id it starts after.
async fn start(
    context: &Context,
    channel: &ChannelKey,
    resume: Option<&str>,
) -> Result<(Backlog, String), fanout::Error> {
    let fanout = context.fanout();
    let id_of =
        |message: &fanout::Message| Stored::read(&message.data).map(|update| update.id.to_string());
    match resume {
        Some(EARLIEST) => Ok((Backlog::All, EARLIEST.to_string())),
        Some(id) => {
            let kept = fanout.history(channel, None).await?;
            // From the newest: a client that reconnects missed little.
            let found = kept
                .messages
                .iter()
                .rev()
                .find(|m| Stored::read(&m.data).is_some_and(|update| update.id == id));
            Ok(match found {
                Some(message) => (Backlog::From(message.offset() + 1), id.to_string()),
                None => {
                    let newest = kept.messages.last().and_then(|m| id_of(m));
                    (Backlog::None, newest.unwrap_or_else(|| EARLIEST.into()))
                }
            })
        }
        None => {
            let position = fanout.position(channel).await?;
            if position.offset == 0 {
                return Ok((Backlog::None, EARLIEST.into()));
            }
            let before_newest = Position {
                offset: position.offset - 1,
                ..position
            };
            let newest = fanout.history(channel, Some(before_newest)).await?;
            let newest = newest.messages.last().and_then(|m| id_of(m));
            Ok((Backlog::None, newest.unwrap_or_else(|| EARLIEST.into())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Ok`: the number of selectors and the resume id; `Err`: the code.
    type Parsed = Result<(usize, Option<String>), ErrorCode>;

    fn parsed(query: &str) -> Parsed {
        Query::parse(query)
            .map(|q| (q.selectors.len(), q.last_event_id))
            .map_err(|r| r.code)
    }

    #[test]
    fn queries_of_both_generations() {
        let cases: &[(&str, Parsed)] = &[
            (
                "topic=https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D",
                Ok((1, None)),
            ),
            ("topic=a&topic=b&match=c", Ok((3, None))),
            (
                "topic=*&lastEventID=urn%3Auuid%3A1",
                Ok((1, Some("urn:uuid:1".into()))),
            ),
            ("match=a&last_event_id=7", Ok((1, Some("7".into())))),
            ("topic=a&key=k&authorization=x&other=1", Ok((1, None))),
            ("", Err(ErrorCode::BadRequest)),
            ("lastEventID=1", Err(ErrorCode::BadRequest)),
            ("topic=", Err(ErrorCode::BadRequest)),
            ("match=a&match_type=exact", Err(ErrorCode::BadRequest)),
            ("match=a&matcher=x", Err(ErrorCode::BadRequest)),
            (
                "match_urlpattern=https://example.com/*",
                Err(ErrorCode::BadRequest),
            ),
        ];
        for (query, expected) in cases {
            assert_eq!(&parsed(query), expected, "{query:?}");
        }
        let many: Vec<String> = (0..=MAX_URL_CHANNELS)
            .map(|i| format!("topic={i}"))
            .collect();
        assert_eq!(parsed(&many.join("&")), Err(ErrorCode::TooManyChannels));
    }

    #[test]
    fn jwts_come_from_the_header_the_cookie_or_the_query() {
        assert_eq!(
            jwt(Some("Bearer a"), Some("mercureAuthorization=b"), Some("c")),
            Some("a")
        );
        assert_eq!(
            jwt(None, Some("x=1; mercureAuthorization=b"), Some("c")),
            Some("b")
        );
        assert_eq!(jwt(None, Some("x=1"), Some("c")), Some("c"));
        assert_eq!(jwt(Some("Basic z"), None, None), None);
        assert_eq!(jwt(None, None, Some("")), None);
    }
}
