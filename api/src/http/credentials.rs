//! Who is publishing (or reading history): the site a request's credential
//! belongs to. `docs/security.md` is the contract: a bearer secret, or a
//! request signed with HMAC-SHA256 with a timestamp and a replay window;
//! without either, only the dev site's trusted networks.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use hyper::{HeaderMap, header};
use sites::{ReplayError, Site, signature};

use crate::App;
use push::{ErrorCode, Refusal};

/// The parts of a request a signature covers, besides the headers.
pub(crate) struct Signed<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub body: &'a [u8],
}

/// A checked credential: the site, and for a signed request the signature
/// to remember once the request is accepted.
pub(crate) struct Authenticated {
    pub site: Arc<Site>,
    signature: Option<([u8; 32], u64)>,
}

impl Authenticated {
    /// Marks a signed request as accepted, so that sending it again is a
    /// replay. Called only once the request passed every other check: a
    /// request refused for its body or a limit may be sent again as it is.
    pub fn accept(&self, app: &App) -> Result<(), Refusal> {
        let Some((signature, timestamp)) = self.signature else {
            return Ok(());
        };
        let window = app.config().publish.signature_window.as_secs();
        let result = self
            .site
            .remember_signature(signature, timestamp, unix_now(), window)
            .map_err(replay_refusal);
        if let Err(refusal) = &result {
            app.sessions()
                .metrics()
                .reject(self.site.id(), refusal.code);
        }
        result
    }
}

/// Finds the site of the request's credential and checks the credential.
/// Every refusal is counted in `herald_rejections_total`, under the site
/// it concerns ("-" when no site is known).
pub(crate) fn authenticate(
    app: &App,
    peer: SocketAddr,
    headers: &HeaderMap,
    signed: Signed<'_>,
) -> Result<Authenticated, Refusal> {
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
        let signature = verify_signature(&site, headers, signed, window)
            .map_err(|refusal| refuse(site.id(), refusal))?;
        return Ok(Authenticated {
            site,
            signature: Some(signature),
        });
    }
    if let Some(authorization) = header(header::AUTHORIZATION.as_str()) {
        let secret = push::bearer(Some(authorization)).unwrap_or("");
        return match sites.by_secret(secret) {
            Some(site) => Ok(Authenticated {
                site,
                signature: None,
            }),
            None => Err(refuse("-", unauthorized("this secret belongs to no site"))),
        };
    }
    // No credential: only the dev site, and only from its trusted networks.
    let Some(dev) = sites.only().filter(|site| site.settings().is_dev()) else {
        let message = "send the site's secret as `Authorization: Bearer <secret>`, or sign the \
                       request (X-Herald-Key, X-Herald-Timestamp, X-Herald-Signature)";
        return Err(refuse("-", unauthorized(message)));
    };
    let ip = peer.ip().to_canonical();
    let trusted = &app.config().publish.trusted_networks;
    if trusted.iter().any(|net| net.contains(&ip)) {
        return Ok(Authenticated {
            site: dev,
            signature: None,
        });
    }
    let message = "this is the dev site: without a publish secret configured, only trusted \
                   networks may publish";
    Err(refuse(
        dev.id(),
        Refusal::new(ErrorCode::Forbidden, message),
    ))
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

/// Checks a signed request; answers the signature and timestamp to
/// remember once the request is accepted.
fn verify_signature(
    site: &Site,
    headers: &HeaderMap,
    signed: Signed<'_>,
    window: u64,
) -> Result<([u8; 32], u64), Refusal> {
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
    let given = header("x-herald-signature").unwrap_or("");
    let parts = signature::request_parts(
        signed.method,
        signed.path_and_query,
        timestamp_text,
        signed.body,
    );
    if !signature::verify(&site.settings().secrets, &parts, given) {
        return Err(Refusal::new(
            ErrorCode::SignatureInvalid,
            "X-Herald-Signature is not this site's HMAC-SHA256 of the request",
        ));
    }
    let mut signature = [0u8; 32];
    // A verified signature is 32 bytes of hex.
    let _ = hex::decode_to_slice(given.trim(), &mut signature);
    // Refused early when already seen; remembered only once accepted.
    if site.signature_seen(&signature) {
        return Err(replay_refusal(ReplayError::Replayed));
    }
    Ok((signature, timestamp))
}
