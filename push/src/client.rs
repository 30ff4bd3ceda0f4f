//! An admitted client: its site, its address and what its token says.
//! Every session holds one; dropping it gives back the connection's place
//! in the site's limits. The channel rules of `docs/security.md` live here.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use fanout::{
    ChannelKey, ChannelName,
    presence::{self, Member},
};

use sites::{
    Mode, Site, signature,
    token::{self, Claims, TokenError},
};

use crate::{ErrorCode, Refusal};

pub struct Client {
    site: Arc<Site>,
    /// Boxed, and absent for most connections (anonymous, on a site without
    /// per-IP limits): every idle connection carries a `Client`, and a
    /// session future a few words bigger lands in a bigger allocation.
    details: Option<Box<Details>>,
}

struct Details {
    /// The address, when it was counted against the site's per-IP limits.
    counted_ip: Option<IpAddr>,
    token: Option<Claims>,
    /// The user a signed sign-in (Pusher's `pusher:signin`) proved this
    /// connection is, when it has no token.
    signed_in: Option<Box<str>>,
    /// Unix milliseconds up to which the connection's time was reported to
    /// the traffic accounting ([`Client::take_connected_ms`]); it starts
    /// when the connection is admitted or its user signs in.
    counted_to_ms: u64,
}

/// How a subscribe proves it may read a `private-` or `presence-` channel
/// (WebSocket only).
pub(crate) struct ChannelProof<'a> {
    pub connection_id: &'a str,
    pub signature: Option<&'a str>,
    /// A presence channel's member, which the signature covers.
    pub channel_data: Option<&'a str>,
}

/// Now, in Unix seconds: token times are Unix seconds.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Now, in Unix milliseconds.
pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Client {
    pub(crate) fn new(site: Arc<Site>, counted_ip: Option<IpAddr>, token: Option<Claims>) -> Self {
        let details = (counted_ip.is_some() || token.is_some()).then(|| {
            Box::new(Details {
                counted_ip,
                token,
                signed_in: None,
                counted_to_ms: unix_now_ms(),
            })
        });
        Self { site, details }
    }

    fn token(&self) -> Option<&Claims> {
        self.details.as_ref()?.token.as_ref()
    }

    pub fn site(&self) -> &Arc<Site> {
        &self.site
    }

    /// The milliseconds since the last call (or since the user became
    /// known), for a client that has a user; 0 for an anonymous one.
    pub(crate) fn take_connected_ms(&mut self, now_ms: u64) -> u64 {
        if self.user().is_none() {
            return 0;
        }
        let Some(details) = self.details.as_mut() else {
            return 0;
        };
        let connected = now_ms.saturating_sub(details.counted_to_ms);
        details.counted_to_ms = details.counted_to_ms.max(now_ms);
        connected
    }

    /// The client's user: its token's, or the one it signed in as.
    pub fn user(&self) -> Option<&str> {
        let details = self.details.as_ref()?;
        match &details.token {
            Some(claims) => Some(&claims.sub),
            None => details.signed_in.as_deref(),
        }
    }

    /// Signs the connection in as the user of `user_data` (JSON with a
    /// string `id`), when `signature` is the site's HMAC of
    /// `connection_id::user::user_data` (Pusher's user authentication).
    /// Answers the user id. A client with a token, or already signed in,
    /// may only sign in as the same user.
    pub(crate) fn sign_in(
        &mut self,
        connection_id: &str,
        user_data: &str,
        given: &str,
    ) -> Result<String, Refusal> {
        let settings = self.site.settings();
        let parts = [connection_id.as_bytes(), b"::user::", user_data.as_bytes()];
        let verified = signature::parse(given)
            .is_some_and(|given| signature::verify(&settings.secrets, &parts, &given));
        if !verified {
            return Err(Refusal::new(
                ErrorCode::SignatureInvalid,
                "the sign-in is not signed by the site for this connection and user data",
            ));
        }
        let id = serde_json::from_str::<serde_json::Value>(user_data)
            .ok()
            .and_then(|data| data.get("id")?.as_str().map(str::to_string))
            .filter(|id| fanout::timeline::is_user_id(id))
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::BadRequest,
                    "user_data is JSON with an id of 1 to 100 channel-name characters",
                )
            })?;
        if self.user().is_some_and(|user| user != id) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "this connection is already another user's",
            ));
        }
        let details = self.details.get_or_insert_with(|| {
            Box::new(Details {
                counted_ip: None,
                token: None,
                signed_in: None,
                counted_to_ms: 0,
            })
        });
        if details.token.is_none() && details.signed_in.is_none() {
            details.signed_in = Some(id.as_str().into());
            // The user's time starts now; before, the connection was anonymous.
            details.counted_to_ms = unix_now_ms();
        }
        Ok(id)
    }

    /// Who this client is on `channel`, when it is a presence channel that
    /// [`Client::may_read`] let it read: the member of its `channel_data`,
    /// else its user with no `user_info`. `channel_data` that no signature
    /// covered (a token grant let the client in) may only name the
    /// client's own user, except on the dev site.
    pub(crate) fn member(
        &self,
        channel: &ChannelName,
        channel_data: Option<&str>,
        signed: bool,
    ) -> Result<Option<Member>, Refusal> {
        if !presence::is_presence(channel.as_str()) {
            return Ok(None);
        }
        let invalid = |e: presence::InvalidMember| {
            Refusal::new(ErrorCode::BadRequest, format!("channel_data: {e}"))
        };
        let member = match (channel_data, self.user()) {
            (Some(data), user) => {
                let member = Member::from_channel_data(data).map_err(invalid)?;
                let trusted = signed
                    || self.site.settings().is_dev()
                    || user.is_some_and(|user| user == &*member.user_id);
                if !trusted {
                    return Err(Refusal::new(
                        ErrorCode::Forbidden,
                        "unsigned channel_data may only name the token's own user",
                    ));
                }
                member
            }
            (None, Some(user)) => Member::new(user).map_err(invalid)?,
            (None, None) => {
                return Err(Refusal::new(
                    ErrorCode::Forbidden,
                    "a presence- channel needs a member: channel_data signed by the site, or a token's user",
                ));
            }
        };
        Ok(Some(member))
    }

    /// When the token expires (Unix seconds), if the client has one.
    pub fn expires_at(&self) -> Option<u64> {
        self.token().map(|claims| claims.exp)
    }

    /// `local` as a channel of this client's site.
    pub(crate) fn scope(&self, name: &ChannelName) -> ChannelKey {
        ChannelKey::new(self.site.id(), name)
    }

    /// Why the connection must end now, if it must: its site was removed,
    /// or its token expired without a refresh.
    pub(crate) fn check(&self, now: u64) -> Option<ErrorCode> {
        if self.site.is_removed() {
            return Some(ErrorCode::SiteRemoved);
        }
        match self.expires_at() {
            Some(exp) if now >= exp => Some(ErrorCode::TokenExpired),
            _ => None,
        }
    }

    /// Replaces the token with a fresher one for the same user; answers the
    /// new expiry. On refusal the old token stays in force.
    pub(crate) fn refresh(&mut self, token: &str) -> Result<u64, Refusal> {
        let settings = self.site.settings();
        let claims = token::verify(settings.token_secrets(), token).map_err(token_refusal)?;
        if self.user() != Some(&*claims.sub) {
            return Err(Refusal::new(
                ErrorCode::TokenInvalid,
                "a refreshed token must be for the same user (sub)",
            ));
        }
        let exp = claims.exp;
        // A refresh only ever follows a token, so the details exist.
        if let Some(details) = &mut self.details {
            details.token = Some(claims);
        }
        Ok(exp)
    }

    /// Whether this client may read `channel` (a local name), by the rules
    /// of `docs/security.md`.
    pub(crate) fn may_read(
        &self,
        channel: &ChannelName,
        proof: Option<ChannelProof<'_>>,
    ) -> Result<(), Refusal> {
        let settings = self.site.settings();
        if settings.is_dev() {
            return Ok(());
        }
        let name = channel.as_str();
        let token = self.token();
        // A presence channel's signed member is checked even where a token
        // grants the channel: the member is trusted as signed
        // ([`Client::member`]).
        let signed_member = proof
            .as_ref()
            .is_some_and(|p| p.signature.is_some() && p.channel_data.is_some());
        if token.is_some_and(|claims| claims.grants(name))
            && !(presence::is_presence(name) && signed_member)
        {
            return Ok(());
        }
        if let Some((_, owner)) = channel.timeline() {
            return match self.user() {
                Some(user) if user == owner => Ok(()),
                Some(_) => Err(Refusal::new(
                    ErrorCode::Forbidden,
                    "this channel belongs to another user",
                )),
                None => Err(Refusal::new(
                    ErrorCode::Forbidden,
                    "this channel needs a token for its user",
                )),
            };
        }
        if presence::is_presence(name) {
            let Some(ChannelProof {
                connection_id,
                signature: Some(given),
                channel_data: Some(channel_data),
            }) = proof
            else {
                return Err(Refusal::new(
                    ErrorCode::SignatureRequired,
                    "a presence- channel needs channel_data and the site's signature of it, or a token grant",
                ));
            };
            // Pusher's formula: `socket_id:channel:channel_data`.
            let [id, colon, channel] = signature::channel_parts(connection_id, name);
            let parts = [id, colon, channel, b":", channel_data.as_bytes()];
            return signed_by_site(
                &settings.secrets,
                &parts,
                given,
                "the signature is not the site's for this connection, channel and channel_data",
            );
        }
        if name.starts_with("private-") {
            let Some(ChannelProof {
                connection_id,
                signature: Some(given),
                ..
            }) = proof
            else {
                return Err(Refusal::new(
                    ErrorCode::SignatureRequired,
                    "a private- channel needs a signature from the site, or a token grant",
                ));
            };
            let parts = signature::channel_parts(connection_id, name);
            return signed_by_site(
                &settings.secrets,
                &parts,
                given,
                "the signature is not the site's for this connection and channel",
            );
        }
        if settings.mode == Mode::Private && token.is_none() {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "this site is private: every channel needs a token",
            ));
        }
        Ok(())
    }
}

/// Whether `given` is the site's signature of `parts`; `wrong` says why not.
fn signed_by_site(
    secrets: &[String],
    parts: &[&[u8]],
    given: &str,
    wrong: &'static str,
) -> Result<(), Refusal> {
    let verified =
        signature::parse(given).is_some_and(|given| signature::verify(secrets, parts, &given));
    if verified {
        Ok(())
    } else {
        Err(Refusal::new(ErrorCode::SignatureInvalid, wrong))
    }
}

/// The refusal for a token that did not verify.
pub(crate) fn token_refusal(error: TokenError) -> Refusal {
    match error {
        TokenError::Expired => Refusal::new(ErrorCode::TokenExpired, "the token has expired"),
        TokenError::Invalid(why) => Refusal::new(ErrorCode::TokenInvalid, why),
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let counted_ip = self.details.as_ref().and_then(|d| d.counted_ip);
        self.site.close_connection(counted_ip);
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("site", &self.site.id())
            .field("user", &self.user())
            .finish_non_exhaustive()
    }
}
