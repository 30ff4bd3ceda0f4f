#!/usr/bin/env bash
# Runs every cargo-fuzz target (nightly) for a number of executions each,
# one after another, with the committed seed corpus in fuzz/corpus/<target>/
# and a working corpus outside the tree; prints each target's last stats
# line. docs/reliability.md ("Fuzzing") records the figures.
#
#   scripts/fuzz.sh [RUNS] [TARGET…]   (RUNS defaults to 10000000; WORK to /tmp/herald-fuzz)
#
# Stable CI does not run this: it replays fuzz/corpus/ as unit tests
# (`fuzz::tests` in push, sites and api).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
runs="${1:-10000000}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(native_frame ws_frames sse_head last_event_id ws_query token config deliver_body meteor_line stomp_frames meteor_push_url stomp_ws_frames pusher_frame pusher_request mercure_request)
fi
work="${WORK:-/tmp/herald-fuzz}"
# No sanitizer: Herald's crates forbid unsafe code, and the parsers run
# about twice as fast without AddressSanitizer's instrumentation.
cargo +nightly fuzz build -s none
for target in "${targets[@]}"; do
  mkdir -p "$work/corpus/$target" "$work/artifacts/$target"
  started=$(date +%s)
  set +e
  nice -n 19 "target/x86_64-unknown-linux-gnu/release/$target" \
    -runs="$runs" -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/$target/" \
    "$work/corpus/$target" "corpus/$target" >"$work/$target.log" 2>&1
  status=$?
  set -e
  took=$(($(date +%s) - started))
  files=$(find "$work/corpus/$target" "corpus/$target" -type f | wc -l)
  echo "$target: exit $status, ${took} s, corpus $files files; $(grep -E '^#[0-9]+' "$work/$target.log" | tail -1)"
  if [ "$status" -ne 0 ]; then
    echo "$target: crash; see $work/$target.log and $work/artifacts/$target/" >&2
  fi
done
