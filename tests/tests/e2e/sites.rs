//! Sites and security (docs/security.md): who may publish, who may read which channel, the
//! limits, reloads and secret rotation, each refusal with its documented status, close code or
//! error frame, and the clients of the same and of other sites serving on through every refusal.
//!
//! The tests play the web application: they mint tokens and sign requests by hand
//! (`herald_tests::auth`), and `php` runs the PHP example of the docs.
//!
//! - `documented_codes` — every refusal a publisher or a client can provoke, held to the code,
//!   status and close code docs/protocol.md gives it, and named in its route's docs
//! - `request_bodies` — credentials checked before any body is read; the body deadline (408), the
//!   budget of body bytes in flight (503 `overloaded`), JSON only (415)
//! - `proxied_dev_site` — the dev site refuses requests through a proxy on every route
//! - `replay_nodes` — on Redis, a signed request is accepted once by every node, also after a
//!   restart; the `Idempotency-Key` is signed

mod channel_rules;
mod documented_codes;
mod isolation;
mod keep_alive;
mod limits;
mod origins;
mod php;
mod proxied_dev_site;
mod publish_auth;
mod refresh;
mod reload;
mod replay_nodes;
mod request_bodies;
mod rotation;
mod support;
mod tokens;
