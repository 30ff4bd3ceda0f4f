#!/usr/bin/env bash
# Regenerates docs/benchmarks.md and its plots (docs/img/) from one run of `herald-bench report`:
# Herald and Nchan measured back to back, idle memory at 1k/10k/18k WebSocket and 10k SSE
# connections, broadcasts to 1k and 10k subscribers at three publish rates; and Herald alone on
# Redis, with 10,000 configured idle sites, and delivering one notice to 1,000,000 timelines with
# 15,000 recipients connected (memory engine; Redis with 3 nodes).
#
# Installs nginx and Nchan if missing (benches/nchan/setup.sh install; needs root for apt-get),
# builds the release binaries, then runs the report: about 14 minutes, and it uses the whole
# machine, so run it on an otherwise quiet one. Extra arguments go to `herald-bench report`
# (e.g. --quick for a fast check of the pipeline, --docs DIR to write elsewhere, --only sites to
# rewrite the idle-sites section alone: Herald only, about 10 s, no Nchan needed; --only fanout
# for the timeline fan-out section: Herald and Redis, about a minute).
#
# On a 2-core machine, unless the arguments already pin something, the server runs on CPU 0 and the
# bench with its workers on CPU 1 (--server-cpus 0 --client-cpus 1): sharing both cores, the
# server's latency tail would mostly be the load generator waiting for a core.
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in
  *" --only "* | *" --only="*) ;;
  *) benches/nchan/setup.sh install ;;
esac
cargo build --release --locked -p api -p herald-bench
pinning=()
case " $* " in
  *" --server-cpus"* | *" --client-cpus"*) ;;
  *) if [ "$(nproc)" -eq 2 ]; then pinning=(--server-cpus 0 --client-cpus 1); fi ;;
esac
# "${pinning[@]}" alone is an unbound variable to `set -u` in bash before 4.4 when it is empty.
exec target/release/herald-bench report ${pinning[@]+"${pinning[@]}"} "$@"
