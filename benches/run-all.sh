#!/usr/bin/env bash
# Regenerates docs/benchmarks.md and its plots (docs/img/) from one run of `herald-bench report`:
# Herald and Nchan measured back to back, idle memory at 1k/10k/18k WebSocket and 10k SSE
# connections, broadcasts to 1k and 10k subscribers at three publish rates, 10k subscribers with
# 2, 8 and 32 publish calls in flight (and the 8 again unpinned, for reference), a reconnect storm
# of 10,000 clients on WebSocket and on SSE; and Herald alone on Redis, with 10,000 configured idle
# sites, delivering one notice to 1,000,000 timelines with 15,000 recipients connected (memory
# engine; Redis with 3 nodes), and 15,000 clients following a node through a restart (SIGTERM,
# SIGKILL) on Redis. Before overwriting docs/img/results.json it reads the previous one,
# whose headline figures become the "before" of the page's "Before and after" section.
#
# Installs nginx and Nchan if missing (benches/nchan/setup.sh install; needs root for apt-get),
# builds the release binaries, then runs the report: about 15 minutes, and it uses the whole
# machine, so run it on an otherwise quiet one. Extra arguments go to `herald-bench report`
# (e.g. --quick for a fast check of the pipeline, --docs DIR to write elsewhere, --only sites to
# rewrite the idle-sites section alone: Herald only, about 10 s, no Nchan needed; --only fanout
# for the timeline fan-out section: Herald and Redis, about a minute; --only restart for the
# node-restart section: Herald and Redis, about a minute; --only publish for the publish-cost
# section: Herald and Nchan, about half a minute).
#
# herald-bench pins by default: on 2 CPUs or more, the servers run on the first half of the CPUs
# and the bench with its workers on the rest (CPU 0 and CPU 1 on a 2-core machine), since sharing
# every core, the server's latency tail would mostly be the load generator waiting for one.
# --server-cpus LIST / --client-cpus LIST choose the sets; --no-pin pins nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in
  *" --only "* | *" --only="*) ;;
  *) benches/nchan/setup.sh install ;;
esac
cargo build --release --locked -p api -p herald-bench
exec target/release/herald-bench report "$@"
