//! Herald's end-to-end tests: one test binary (one link, one place to look)
//! that starts the real `herald` binary on free ports and drives it with real
//! WebSocket, SSE and HTTP clients, `curl`, and headless Chromium.
//!
//! Index:
//! - `delivery`      — publish reaches WebSocket and SSE subscribers in order, exactly once, byte for byte; batch publish to 100 channels
//! - `recovery`      — `since`, `Last-Event-ID` and `last_event_id` replay exactly what was missed, also while publishing races the reconnect; `recovered: false`
//! - `pushback`      — delivery lagging past `delivery.max_lag_ms`: publishes wait, then 503 `delivery_lagging` with `Retry-After`; nothing accepted is lost, nothing refused is delivered
//! - `history`       — history kept by age beyond `history.size`, up to `history.max_size` (memory and Redis): a client that missed more than `size` young messages recovers them all; past the cap, or once they aged, `recovered: false`; Redis trims the stream by age
//! - `slow_consumer` — a client that stops reading is closed 4100 (WS) or told `slow_consumer` (SSE), its neighbours lose nothing, and it resumes without a gap
//! - `churn`         — anonymous subscribe/unsubscribe churn: `command_rate_limited` then close 4105, `new_channel_rate_limited`, channels that only had readers freed as they are left
//! - `rejections`    — every documented refusal (error frames, close 1009, 400/401/403/405/413/426/431) and that the server keeps serving others
//! - `heartbeat`     — server pings from the shared ticker; idle WebSockets closed 4101
//! - `shutdown`      — SIGTERM/SIGINT: reconnect advice, close 4200, exit 0 within the grace period
//! - `config`        — file, env and flags; `--check-config`; exit 64 naming the key
//! - `health`        — `/healthz`, `/readyz`, `/metrics`
//! - `dashboard`     — `deploy/grafana/herald.json` has a panel for every family of `/metrics` (memory and Redis engines) and of docs/operations.md's table, and names no other
//! - `listener`      — before a request is known: partial request lines cost no CPU and end with their peers, `listener.max_pending`, the header deadline, TCP keepalive on SSE, `metrics.listen`
//! - `mercure`       — the Mercure hub (`/.well-known/mercure`): npm `eventsource` gets public updates, private ones only with a JWT's `subscribe` claim (cookie or Bearer), and after a cut what it missed through its own `Last-Event-ID`; several topics, URI templates, `*` and `match=` on the wire; resume by header, `lastEventID`, `last_event_id` and `earliest`; the dev site with Mercure's development key; a private site takes a JWT; every 400/401/403/413/415 while another subscriber carries on; fresh streams off hyper and reused connections' on hyper answer the same; shutdown's `retry:`; across two Redis nodes
//! - `meteor`        — the Meteor controller port: StatusNet's Meteor plugin code (PHP) publishes unchanged and WebSocket and SSE subscribers get the JSON byte for byte; on Redis it reaches other nodes and is recovered there; `COUNTSUBSCRIBERS`, `LISTCHANNELS`, `SHOWSTATS`, `QUIT` answered in order; bad lines get `ERR` and publish nothing; loopback unless allowed
//! - `meteor_push`   — Meteor's subscriber side: a Chromium page loading `/meteor.js` and running the plugin's `meteorupdater.js` flow renders the plugin's notices, streaming and long-polling; `/push` lines in Meteor's templates with the JSON byte for byte; `.r`/`.b`/`.h` on two Redis nodes; every refusal; `compat.nicks_file` maps `all-<nick>` to the user's timeline
//! - `pusher`        — the Pusher protocol and REST API: pusher-js receives what the npm `pusher` library triggers (public, private, batch, `socket_id`, sign-in and `sendToUser`) and what Herald's API publishes; Laravel Echo and pysher receive what the PyPI `pusher` library triggers; client events; forged signatures and presence get `pusher:error`; unknown keys close 4001; every unsigned or wrongly signed REST request is 401, bad bodies 400
//! - `lifecycle`     — one-off channels are freed when their history expires; watched ones are kept
//! - `redis`         — the Redis engine across nodes (own `redis-server` each): fan-out once and in order, resume on another node, upstream subscriptions follow local interest, history overflow and lost history; `redis::failure`: Redis SIGKILLed and restarted (503 while down, nothing acknowledged lost), a node SIGKILLed; `redis::churn`: subscribers joining and leaving busy channels; `redis::readiness`: `/readyz` follows the upstream subscriptions (SUBSCRIBE refused, then allowed again), and a channel whose history fails delays no other; `redis::regression`: Redis coming back behind where it was starts a new epoch; `redis::matrix`: the failure matrix of docs/reliability.md (Redis killed with and without persistence, Sentinel failover to a lagging replica, Cluster primary failover, node killed, SUBSCRIBE refused), silent losses 0
//! - `redis_cluster` — the fan-out, resume and interest cases on a three-master Redis Cluster (sharded pub/sub); lost pub/sub connections, and a master failover with replicas, after which every node delivers again on every shard
//! - `reuseport`     — `--reuseport`: three processes on one port and one Redis, clients spread over them, one publish reaches every subscriber once; refused on the memory engine (exit 64)
//! - `redis_sentinel` — the fan-out and resume cases with the master found through a Sentinel
//! - `sites`         — sites and security: publish credentials (bearer, HMAC, replay), tokens and refresh, channel rules, origins, per-site limits, SIGHUP reloads and secret rotation, isolation between sites (memory and Redis), the PHP example; bodies read only after the credential (408 deadline, 503 budget, 415 JSON only), the dev site behind a proxy, replays across Redis nodes, every refusal held to the code docs/protocol.md gives it
//! - `stomp`         — the STOMP publish port: StatusNet's Orbited plugin frames (`Stomp.php` wire format, PHP) reach WebSocket and SSE subscribers byte for byte; site key and secret checked; every refusal an `ERROR` frame then the close, nothing published; receipts, STOMP 1.2, loopback unless allowed
//! - `stomp_ws`      — STOMP over WebSocket (`/stomp`): `@stomp/stompjs` in Node and a native client get the Orbited plugin's notices byte for byte; receipts, unsubscribe, heart-beats; `SEND` and every bad frame an `ERROR` frame with the connection kept; subprotocol negotiation
//! - `timelines`     — `POST /api/deliver`: one message per shard touched, each connected recipient once and nobody else (memory; three Redis nodes with 3,000 clients; a Cluster), recovery on another node, catch-up after a Redis restart or dropped subscriptions, every refusal, `Idempotency-Key` on publish and deliver, nginx's shard hash
//! - `traffic`       — traffic accounting: `GET /api/admin/traffic` ranks a heavy user first among more light users than the sketch's slots, totals match what was published and delivered, the split-out flag, per-site totals in `/metrics` with no user, every refusal of the admin route (404 without `admin.secret`, 401, 405, 400)
//! - `echo`          — `/ws/echo` (the Autobahn route): echoes text and binary under `/ws`'s frame limit, 404 unless configured, refused on a non-loopback listen
//! - `ws_url`        — `GET /ws?channel=…&since=…`: subscribed in the URL with no frame (`welcome`, `subscribed` in URL order, the replay, then live), every refusal of URL channels as an `error` frame and close 1008, on the listener's path and on hyper's
//! - `poll`          — HTTP long-poll (`GET`/`POST /poll`): a first poll's `subscribed` events and cursor; every message once, in order, across polls (recovered from history between them); the timeout's empty answer; a publish answers a held poll; a form `POST` with 40 channels; a cursor history no longer covers answers `recovered:false` at once; every refusal's status and code while another poll is held and then answered; a held poll answered with `reconnect` advice and a good cursor on shutdown; `poll.timeout_secs` bounds what a poll asks for, and 0 exits 64; a held poll counts against the site's connection limit (429 `site_connection_limit` with `Retry-After`), an answered one does not; a token expiring while held answers `token_expired` with the cursor; the CORS preflight
//! - `console`       — the operator console (`/console`) in Chromium: signed in from `#secret=`, its charts rise under `herald-bench` load, a heavy publisher first among top users, publish (a WebSocket client gets it), channel view, disconnect (close 4011), a wrong secret back to the sign-in form; 404 without `admin.secret`
//! - `tls`           — native TLS (`tls.cert`, `tls.key`): `wss://`, `https://` and SSE over TLS on one port with rustls' client, tungstenite and Chromium (the demo page over https and wss); messages larger than a TLS record; plain HTTP on the TLS port answered 400; SIGHUP presents a renewed certificate while open connections carry on, a broken one is refused; bad TLS settings exit 64; a `wss://` client that stops reading closed as a slow consumer and one sending records no key opens closed, while a neighbour on the channel gets every message
//! - `browser`       — the demo page in Debian's Chromium via playwright-core: a curl notice in both panels, and reconnect after a restart
//! - `browser_fallback` — the demo page in Chromium behind `herald_tests::Proxy`: WebSocket refused → SSE, streams buffered → long-poll, network cuts, and a restart on Redis; numbered notices published meanwhile all shown once, in order; screenshots and traces in `target/browser-artifacts/`
//!
//! Set-up: `scripts/test` installs what these need and builds the binary first.

mod admin;
mod browser;
mod browser_fallback;
mod churn;
mod config;
mod console;
mod dashboard;
mod delivery;
mod demo_api;
mod echo;
mod health;
mod heartbeat;
mod history;
mod lifecycle;
mod listener;
mod mercure;
mod meteor;
mod meteor_push;
mod node_script;
mod poll;
mod presence;
mod pushback;
mod pusher;
mod recovery;
mod redis;
mod redis_cluster;
mod redis_sentinel;
mod rejections;
mod reuseport;
mod shutdown;
mod sites;
mod slow_consumer;
mod stomp;
mod stomp_ws;
mod timelines;
mod tls;
mod traffic;
mod webhooks;
mod ws_url;
