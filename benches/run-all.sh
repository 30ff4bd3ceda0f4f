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
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in
  *" --only "* | *" --only="*) ;;
  *) benches/nchan/setup.sh install ;;
esac
cargo build --release --locked -p api -p herald-bench
exec target/release/herald-bench report "$@"
