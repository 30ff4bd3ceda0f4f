//! Herald's end-to-end tests: one test binary (one link, one place to look)
//! that starts the real `herald` binary on free ports and drives it with real
//! WebSocket, SSE and HTTP clients, `curl`, and headless Chromium.
//!
//! Index:
//! - `delivery`      — publish reaches WebSocket and SSE subscribers in order, exactly once, byte for byte; batch publish to 100 channels
//! - `recovery`      — `since`, `Last-Event-ID` and `last_event_id` replay exactly what was missed, also while publishing races the reconnect; `recovered: false`
//! - `slow_consumer` — a client that stops reading is closed 4100 (WS) or told `slow_consumer` (SSE), its neighbours lose nothing, and it resumes without a gap
//! - `rejections`    — every documented refusal (error frames, close 1009, 400/401/403/405/413/426/431) and that the server keeps serving others
//! - `heartbeat`     — server pings from the shared ticker; idle WebSockets closed 4101
//! - `shutdown`      — SIGTERM/SIGINT: reconnect advice, close 4200, exit 0 within the grace period
//! - `config`        — file, env and flags; `--check-config`; exit 64 naming the key
//! - `health`        — `/healthz`, `/readyz`, `/metrics`
//! - `lifecycle`     — one-off channels are freed when their history expires; watched ones are kept
//! - `redis`         — the Redis engine across nodes (own `redis-server` each): fan-out once and in order, resume on another node, upstream subscriptions follow local interest, history overflow and lost history; `redis::failure`: Redis SIGKILLed and restarted (503 while down, nothing acknowledged lost), a node SIGKILLed; `redis::churn`: subscribers joining and leaving busy channels
//! - `redis_cluster` — the fan-out, resume and interest cases on a three-master Redis Cluster (sharded pub/sub)
//! - `redis_sentinel` — the fan-out and resume cases with the master found through a Sentinel
//! - `sites`         — sites and security: publish credentials (bearer, HMAC, replay), tokens and refresh, channel rules, origins, per-site limits, SIGHUP reloads and secret rotation, isolation between sites (memory and Redis), the PHP example
//! - `timelines`     — `POST /api/deliver`: one message per shard touched, each connected recipient once and nobody else (memory; three Redis nodes with 3,000 clients; a Cluster), recovery on another node, catch-up after a Redis restart or dropped subscriptions, every refusal, `Idempotency-Key` on publish and deliver, nginx's shard hash
//! - `echo`          — `/ws/echo` (the Autobahn route): echoes text and binary under `/ws`'s frame limit, 404 unless configured, refused on a non-loopback listen
//! - `browser`       — the demo page in Debian's Chromium via playwright-core: a curl notice in both panels, and reconnect after a restart
//!
//! Set-up: `scripts/test` installs what these need and builds the binary first.

mod browser;
mod config;
mod delivery;
mod echo;
mod health;
mod heartbeat;
mod lifecycle;
mod recovery;
mod redis;
mod redis_cluster;
mod redis_sentinel;
mod rejections;
mod shutdown;
mod sites;
mod slow_consumer;
mod timelines;
