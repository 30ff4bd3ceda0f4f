#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzingclient against Herald's echo route
# (GET /ws/echo: the /ws codec and limits, docs/reliability.md "Autobahn"),
# every case but 9.* (performance), 12.* and 13.* (permessage-deflate, which
# Herald does not offer), and prints the tally of behaviours.
#
#   scripts/autobahn.sh [HERALD_BINARY]
#
# Needs Python 2.7 (pyenv 2.7.18 on these machines); the suite is installed
# once with pip into $AUTOBAHN_LIB (default /tmp/herald-autobahn/lib). The
# report goes to $AUTOBAHN_OUT (default /tmp/herald-autobahn/report; open
# index.html). Loopback only. CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."
herald="${1:-target/debug/herald}"
work="${AUTOBAHN_WORK:-/tmp/herald-autobahn}"
lib="${AUTOBAHN_LIB:-$work/lib}"
out="${AUTOBAHN_OUT:-$work/report}"
python2="${PYTHON2:-$HOME/.pyenv/versions/2.7.18/bin/python}"
mkdir -p "$work"

if [ ! -d "$lib/autobahntestsuite" ]; then
  "$python2" -m pip install --target "$lib" autobahntestsuite
fi
[ -x "$herald" ] || cargo build -p api

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The suite's largest messages (outside 9.*) are 64 KiB: the frame limit is
# raised for it, as an operator would raise it, through the same setting.
HERALD_LISTEN="127.0.0.1:$port" \
HERALD_TESTING_WS_ECHO=true \
HERALD_CONNECTION_MAX_FRAME_BYTES=16777216 \
HERALD_LOG_LEVEL=warn \
  "$herald" >"$work/herald.log" 2>&1 &
herald_pid=$!
trap 'kill "$herald_pid" 2>/dev/null || true; wait "$herald_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "herald listening" "$work/herald.log" && break
  sleep 0.1
done

cat >"$work/fuzzingclient.json" <<SPEC
{
  "outdir": "$out",
  "servers": [{"agent": "herald", "url": "ws://127.0.0.1:$port/ws/echo"}],
  "cases": ["*"],
  "exclude-cases": ["9.*", "12.*", "13.*"],
  "exclude-agent-cases": {}
}
SPEC
# addsitedir, not PYTHONPATH: it reads the .pth files that make zope a namespace package.
(cd "$work" && "$python2" -c '
import site, sys
site.addsitedir(sys.argv[1])
from autobahntestsuite.wstest import run
sys.argv = ["wstest", "-m", "fuzzingclient", "-s", "fuzzingclient.json"]
run()' "$lib")

# The tally, and every case that is neither OK, NON-STRICT nor INFORMATIONAL.
python3 - "$out/index.json" <<'PY'
import collections, json, sys
results = json.load(open(sys.argv[1]))["herald"]
tally = collections.Counter()
bad = []
for case, result in sorted(results.items(), key=lambda kv: [int(p) for p in kv[0].split(".")]):
    for key in ("behavior", "behaviorClose"):
        tally[(key, result[key])] += 1
    if result["behavior"] not in ("OK", "NON-STRICT", "INFORMATIONAL") or result["behaviorClose"] not in ("OK", "INFORMATIONAL"):
        bad.append((case, result["behavior"], result["behaviorClose"]))
print("cases: %d" % len(results))
for (key, value), count in sorted(tally.items()):
    print("%s %s: %d" % (key, value, count))
for case in bad:
    print("FAILED %s: behavior %s, close %s" % case)
sys.exit(1 if bad else 0)
PY
