//! The end-to-end test harness: a real `herald` process and real WebSocket, SSE and HTTP clients.
//!
//! Every test binary in `tests/tests/` starts its own Herald on a free port with [`Herald::start`]
//! or [`Herald::builder`], talks to it with [`WsClient`], [`SseClient`] and [`Request`], and lets it
//! be killed when the [`Herald`] is dropped. The binary is `HERALD_BIN`, or `target/<profile>/herald`
//! next to the test: run `cargo build --workspace` before `cargo test`.

mod api;
mod auth;
mod deliver;
mod herald;
mod http;
mod message;
mod metrics;
mod proxy;
mod redis;
mod sse;
mod ws;

pub mod tls;

pub use api::publish_results;
pub use auth::{
    ConfigFile, Site, Token, b64url, channel_signature, forge_claims, hmac_hex, hmac_sha256,
    publish_body, request_signature, signed_request, sites_toml, unix_now, unix_now_f64,
};
pub use deliver::{
    DEFAULT_SHARDS, DEFAULT_SITE, Delivery, DeliveryAnswer, shard_of, shards_touched,
};
pub use herald::{Finished, Herald, HeraldBuilder, free_port, herald_bin};
pub use http::{HTTP_TIMEOUT, PartRequest, Request, Response};
pub use message::{Delivered, Position};
pub use metrics::metric_value;
pub use proxy::{Proxy, ProxyMode};
pub use redis::{Redis, RedisCluster, RedisSentinel, RedisSnapshot, redis_cli};
pub use sse::{SSE_TIMEOUT, SseClient, SseEvent, SseNext};
pub use ws::{WS_TIMEOUT, WsClient, WsEvent, WsOptions};
