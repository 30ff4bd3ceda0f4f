# syntax=docker/dockerfile:1
# Herald's container image: docs/deploy.md, "One machine: the container image".
#
#   docker build -t herald .
#   docker run -p 8080:8080 -e HERALD_PUBLISH_SECRET=change-me-to-32-random-bytes herald
#
# Two stages (BuildKit, the default builder, for the cache mounts): the release build on Debian 12's
# Rust image, then only the binary on debian:bookworm-slim (the binary links glibc; jemalloc is
# compiled in).

FROM rust:bookworm AS build
WORKDIR /src
# The whole workspace: cargo resolves every member even when building one binary.
COPY . .
# The registry and target folders as build caches: a rebuild after a source change recompiles
# Herald's crates only.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p api --bin herald \
    && cp target/release/herald /usr/local/bin/herald

FROM debian:bookworm-slim
# busybox only for its `wget`, which the HEALTHCHECK uses (the slim image has no curl or wget),
# about 1 MB, rather than a probe command built into Herald.
RUN apt-get update \
    && apt-get install -y --no-install-recommends busybox \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent herald \
    && mkdir -p /etc/herald
COPY --from=build /usr/local/bin/herald /usr/local/bin/herald
COPY deploy/herald.toml /etc/herald/herald.toml

USER herald:herald
# Listen on every interface of the container. A dev site (no publish secret, no [[sites]]) refuses
# that and exits 64: give HERALD_PUBLISH_SECRET, or mount a file with [[sites]] over
# /etc/herald/herald.toml.
ENV HERALD_LISTEN=0.0.0.0:8080 \
    HERALD_CONFIG=/etc/herald/herald.toml
EXPOSE 8080
# /readyz turns 503 from the first moment of a drain (SIGTERM) and while the Redis engine cannot
# serve; /healthz would only say the process runs. Another port in HERALD_LISTEN needs its own
# --health-cmd.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/readyz"]
# docker stop sends SIGTERM and waits 10 s by default: the drain takes shutdown.readiness_delay_ms
# + shutdown.grace_secs (2 + 10 s), so run with `--stop-timeout 30` (compose: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/herald"]
