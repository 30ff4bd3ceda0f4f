//! Admission: which site a new connection belongs to, whether its origin
//! and token are good, and whether the site's limits leave room for it.
//! Both transports, and both ways of serving SSE, come through here.

use std::net::IpAddr;

use sites::{ConnectionLimit, Mode, token};

use crate::{
    Context, ErrorCode, Refusal,
    client::{Client, token_refusal},
};

/// What a connection request says about itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnectRequest<'a> {
    /// The `key` query parameter.
    pub key: Option<&'a str>,
    /// The `token` query parameter or the bearer of `Authorization`.
    pub token: Option<&'a str>,
    /// The `Origin` header, which browsers send.
    pub origin: Option<&'a str>,
    pub ip: Option<IpAddr>,
    /// Whether the request came through a proxy ([`is_proxied`]).
    pub proxied: bool,
    /// Whether the protocol verified a credential of its own for the site
    /// (a Mercure subscriber's JWT): a private site then asks for no token.
    pub vouched: bool,
}

/// The headers a proxy adds to a request it forwards (RFC 7239, the
/// de-facto `X-Forwarded-For`, and HTTP's own `Via`), in lower case.
pub const PROXY_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "via"];

/// Whether a request came through a proxy, by its headers: `has` answers
/// whether the request has the header of a lower-case name.
pub fn is_proxied(has: impl Fn(&str) -> bool) -> bool {
    PROXY_HEADERS.iter().any(|name| has(name))
}

/// The refusal of a request to the dev site that came through a proxy.
/// The dev site trusts loopback; behind a proxy on the same machine every
/// request comes from loopback, and the dev site has no channel rules.
pub fn proxied_dev_site() -> Refusal {
    Refusal::new(
        ErrorCode::ProxiedDevSite,
        "this is the dev site, which serves only its own machine, and this request came through \
         a proxy (Forwarded, X-Forwarded-For or Via): configure a publish secret or [[sites]] \
         before putting Herald behind a proxy",
    )
}

/// Admits a connection, or refuses it with the code of `docs/security.md`.
/// Every refusal is counted in `herald_rejections_total`.
pub fn admit(context: &Context, request: &ConnectRequest<'_>) -> Result<Client, Refusal> {
    let sites = context.sites();
    let named = request
        .key
        .map(str::to_string)
        .or_else(|| request.token.and_then(token::key_id));
    let site = match &named {
        Some(key) => sites.by_key(key),
        None => sites.only(),
    };
    let Some(site) = site else {
        let message = match named {
            Some(_) => "no site has this key",
            None => "name the site with the key parameter, or a token whose kid is its key",
        };
        context.metrics().reject("-", ErrorCode::SiteUnknown);
        return Err(Refusal::new(ErrorCode::SiteUnknown, message));
    };
    let refuse = |refusal: Refusal| {
        context.metrics().reject(site.id(), refusal.code);
        refusal
    };
    let settings = site.settings();
    if request.proxied && settings.is_dev() {
        return Err(refuse(proxied_dev_site()));
    }
    if let Some(origin) = request.origin
        && !settings.allows_origin(origin)
    {
        return Err(refuse(Refusal::new(
            ErrorCode::OriginNotAllowed,
            format!("origin {origin} is not allowed on this site"),
        )));
    }
    let claims = match request.token {
        Some(_) if settings.is_dev() => None,
        Some(token) => Some(
            token::verify(settings.token_secrets(), token).map_err(|e| refuse(token_refusal(e)))?,
        ),
        None if settings.mode == Mode::Private && !request.vouched => {
            return Err(refuse(Refusal::new(
                ErrorCode::TokenRequired,
                "this site is private: connect with a token",
            )));
        }
        None => None,
    };
    let ip = request.ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let counted_ip = site.open_connection(ip).map_err(|limit| {
        refuse(match limit {
            ConnectionLimit::Site => Refusal::new(
                ErrorCode::SiteConnectionLimit,
                "the site has as many connections as it may",
            ),
            ConnectionLimit::Ip => Refusal::new(
                ErrorCode::IpConnectionLimit,
                "this address has as many connections as it may",
            ),
            ConnectionLimit::Rate => Refusal::new(
                ErrorCode::ConnectionRateLimit,
                "this address opens connections too fast",
            ),
        })
    })?;
    Ok(Client::new(site, counted_ip, claims))
}

/// The credential of an `Authorization: Bearer <credential>` header, if
/// that is what the header holds.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization?.strip_prefix("Bearer ").map(str::trim)
}
