//! Who is publishing (or reading history): the site a request's credential
//! belongs to. `docs/security.md` is the contract: a bearer secret, or a
//! request signed with HMAC-SHA256 with a timestamp and a replay window;
//! without either, only the dev site's trusted networks, and never through
//! a proxy.
//!
//! The credential is checked in two steps, so that nobody without one can
//! make Herald read a body: [`identify`] decides everything the headers
//! decide (which site, a bearer secret, a signed request's timestamp and
//! the form of its signature, the dev site's networks), and only then is
//! the body read and a signature checked over it ([`Credential::verify`]),
//! with the secrets of the one site the request names.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hyper::{HeaderMap, header};
use sites::{
    ReplayError, Site,
    signature::{self, Signature},
};

use crate::App;
use push::{ErrorCode, Refusal};

/// The parts of a request a signature covers, besides the headers.
pub(crate) struct Signed<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    /// The `Idempotency-Key`, empty when the request has none.
    pub idempotency_key: &'a str,
    pub body: &'a [u8],
}

/// A credential as the headers give it, before the body is read.
pub(crate) enum Credential {
    /// A bearer secret, or the dev site's trusted network: nothing is left
    /// to check.
    Checked(Arc<Site>),
    /// A signed request whose site, timestamp and signature's form were
    /// checked; the signature itself is checked over the body.
    Signed(SignedRequest),
}

/// What a signed request's headers said.
pub(crate) struct SignedRequest {
    site: Arc<Site>,
    /// `X-Herald-Timestamp` as sent (it is signed as sent) and as read.
    timestamp_text: String,
    timestamp: u64,
    signature: Signature,
}

/// A checked credential: the site, and for a signed request the signature
/// to remember once the request is accepted.
pub(crate) struct Authenticated {
    pub site: Arc<Site>,
    signature: Option<(Signature, u64)>,
}

impl Credential {
    /// The site the credential belongs to.
    pub fn site(&self) -> &Arc<Site> {
        match self {
            Credential::Checked(site) => site,
            Credential::Signed(signed) => &signed.site,
        }
    }

    /// Checks a signed request's signature over `signed` (the body
    /// included), with the secrets of its own site only: one, or two while
    /// a secret is rotated. A refusal is counted under the site.
    pub fn verify(self, app: &App, signed: Signed<'_>) -> Result<Authenticated, Refusal> {
        let request = match self {
            Credential::Checked(site) => {
                return Ok(Authenticated {
                    site,
                    signature: None,
                });
            }
            Credential::Signed(request) => request,
        };
        let parts = signature::request_parts(
            signed.method,
            signed.path_and_query,
            &request.timestamp_text,
            signed.idempotency_key,
            signed.body,
        );
        let settings = request.site.settings();
        if !signature::verify(&settings.secrets, &parts, &request.signature) {
            app.sessions()
                .metrics()
                .reject(request.site.id(), ErrorCode::SignatureInvalid);
            return Err(Refusal::new(
                ErrorCode::SignatureInvalid,
                "X-Herald-Signature is not this site's HMAC-SHA256 of the request",
            ));
        }
        Ok(Authenticated {
            site: request.site,
            signature: Some((request.signature, request.timestamp)),
        })
    }
}

impl Authenticated {
    /// Marks a signed request as accepted, so that sending it again is a
    /// replay: in this process, and where the engine keeps a record every
    /// node sees (Redis), there too, so that another node or a restart
    /// refuses it as well. Called only once the request passed every other
    /// check: a request refused for its body or a limit may be sent again
    /// as it is.
    pub async fn accept(&self, app: &App) -> Result<(), Refusal> {
        let Some((signature, timestamp)) = self.signature else {
            return Ok(());
        };
        let window = app.config().publish.signature_window.as_secs();
        let now = unix_now();
        let result = match self
            .site
            .remember_signature(signature, timestamp, now, window)
        {
            Err(error) => Err(replay_refusal(error)),
            Ok(()) => {
                // Remembered until the timestamp leaves the window, which
                // is when the request would be refused as expired anyway.
                let ttl = Duration::from_secs((timestamp + window).saturating_sub(now) + 1);
                match app
                    .fanout()
                    .claim_signature(self.site.id(), &signature, ttl)
                    .await
                {
                    None | Some(Ok(true)) => Ok(()),
                    Some(Ok(false)) => Err(replay_refusal(ReplayError::Replayed)),
                    Some(Err(error)) => Err(Refusal::from(error)),
                }
            }
        };
        if let Err(refusal) = &result {
            app.sessions()
                .metrics()
                .reject(self.site.id(), refusal.code);
        }
        result
    }
}

/// Finds the site of the request's credential and checks what the headers
/// alone can tell. Every refusal is counted in `herald_rejections_total`,
/// under the site it concerns ("-" when no site is known).
pub(crate) fn identify(
    app: &App,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Credential, Refusal> {
    let sites = app.sessions().sites();
    let refuse = |site: &str, refusal: Refusal| {
        app.sessions().metrics().reject(site, refusal.code);
        refusal
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(key) = header("x-herald-key") {
        let Some(site) = sites.by_key(key).filter(|site| !site.settings().is_dev()) else {
            return Err(refuse("-", unauthorized("no site has this key")));
        };
        let window = app.config().publish.signature_window.as_secs();
        return signed_request(site.clone(), headers, window)
            .map(Credential::Signed)
            .map_err(|refusal| refuse(site.id(), refusal));
    }
    if let Some(authorization) = header(header::AUTHORIZATION.as_str()) {
        let secret = push::bearer(Some(authorization)).unwrap_or("");
        return match sites.by_secret(secret) {
            Some(site) => Ok(Credential::Checked(site)),
            None => Err(refuse("-", unauthorized("this secret belongs to no site"))),
        };
    }
    // No credential: only the dev site, and only from its trusted networks.
    let Some(dev) = sites.only().filter(|site| site.settings().is_dev()) else {
        let message = "send the site's secret as `Authorization: Bearer <secret>`, or sign the \
                       request (X-Herald-Key, X-Herald-Timestamp, X-Herald-Signature)";
        return Err(refuse("-", unauthorized(message)));
    };
    // Behind a proxy on the same machine every request comes from
    // loopback, so the trusted networks would let the whole internet in.
    if push::is_proxied(|name| headers.contains_key(name)) {
        return Err(refuse(dev.id(), push::proxied_dev_site()));
    }
    let ip = peer.ip().to_canonical();
    let trusted = &app.config().publish.trusted_networks;
    if trusted.iter().any(|net| net.contains(&ip)) {
        return Ok(Credential::Checked(dev));
    }
    let message = "this is the dev site: without a publish secret configured, only trusted \
                   networks may publish";
    Err(refuse(
        dev.id(),
        Refusal::new(ErrorCode::Forbidden, message),
    ))
}

/// The whole check of a request without a body (`GET /api/history`).
pub(crate) fn authenticate(
    app: &App,
    peer: SocketAddr,
    headers: &HeaderMap,
    signed: Signed<'_>,
) -> Result<Authenticated, Refusal> {
    identify(app, peer, headers)?.verify(app, signed)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn replay_refusal(error: ReplayError) -> Refusal {
    match error {
        ReplayError::Replayed => Refusal::new(
            ErrorCode::SignatureReplayed,
            "this signed request was already accepted; sign each request anew",
        ),
        ReplayError::Full => Refusal::new(
            ErrorCode::RateLimited,
            "too many signed requests inside the replay window",
        ),
    }
}

fn unauthorized(message: &'static str) -> Refusal {
    Refusal::new(ErrorCode::Unauthorized, message)
}

/// Reads a signed request's headers: a timestamp inside the window, a
/// signature of the right form, and not one this process already accepted.
fn signed_request(
    site: Arc<Site>,
    headers: &HeaderMap,
    window: u64,
) -> Result<SignedRequest, Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = unix_now();
    let timestamp_text = header("x-herald-timestamp").unwrap_or("");
    let timestamp = timestamp_text
        .parse::<u64>()
        .ok()
        .filter(|ts| ts.abs_diff(now) <= window)
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::SignatureExpired,
                format!("X-Herald-Timestamp must be the Unix time within {window} s of now"),
            )
        })?;
    let signature = header("x-herald-signature")
        .and_then(signature::parse)
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::SignatureInvalid,
                "X-Herald-Signature must be the 64 hex digits of an HMAC-SHA256",
            )
        })?;
    // Refused early when already seen; remembered only once accepted.
    if site.signature_seen(&signature) {
        return Err(replay_refusal(ReplayError::Replayed));
    }
    Ok(SignedRequest {
        site,
        timestamp_text: timestamp_text.to_string(),
        timestamp,
        signature,
    })
}
