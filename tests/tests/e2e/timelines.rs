//! Timelines (docs/timelines.md): `POST /api/deliver` groups a recipient list by shard and
//! publishes one engine message per shard touched; each node expands them into its users'
//! `user:`/`replies:` channels.
//!
//! - `redis_nodes` — three nodes on one Redis: 30,000 recipients, 3,000 connected, each gets the
//!   notice once and outsiders nothing; Redis publishes at most one message per shard; a retry
//!   publishes nothing; offline users recover on another node (WebSocket and SSE); a delivery cut
//!   by a Redis restart, and one made while a node's subscriptions were dropped, reach everyone
//!   once; upstream subscriptions per shard, not per user; the same on a Redis Cluster
//! - `memory`      — one node, memory engine: exactly once, duplicate ids, `replies`, publishes
//!   to `user:<id>` through the shard (offsets skip), resume with `since` / `Last-Event-ID`
//! - `rejections`  — every refusal of `POST /api/deliver`, nothing delivered, others served on;
//!   the shard channels out of reach
//! - `idempotency` — `Idempotency-Key` on publish and deliver: retries, races, other nodes, TTL
//! - `nginx`       — `deploy/nginx/herald.conf` in front of three nodes: one shard, one node
//! - `overflow`    — a site that floods the expander's bound: its dropped timelines are told
//!   `recovered: false`, other sites lose nothing

mod idempotency;
mod memory;
mod nginx;
mod overflow;
mod redis_nodes;
mod rejections;
mod support;
