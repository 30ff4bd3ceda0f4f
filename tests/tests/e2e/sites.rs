//! Sites and security (docs/security.md): who may publish, who may read which channel, the
//! limits, reloads and secret rotation, each refusal with its documented status, close code or
//! error frame, and the clients of the same and of other sites serving on through every refusal.
//!
//! The tests play the web application: they mint tokens and sign requests by hand
//! (`herald_tests::auth`), and `php` runs the PHP example of the docs.

mod channel_rules;
mod isolation;
mod keep_alive;
mod limits;
mod origins;
mod php;
mod publish_auth;
mod refresh;
mod reload;
mod rotation;
mod support;
mod tokens;
