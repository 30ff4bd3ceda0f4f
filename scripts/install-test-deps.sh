#!/usr/bin/env bash
# Installs what Herald's integration tests need on a Debian machine: Chromium, curl, Redis, the
# PHP command line (for the PHP example's test) and systemd (`systemd-analyze`, for
# scripts/check-deploy.py) from Debian, promtool (taken out of Debian's `prometheus` package, for
# deploy/prometheus), and the npm clients (from tests/browser/package-lock.json: playwright-core,
# @stomp/stompjs, pusher-js, laravel-echo, the `pusher` library, `eventsource` for the Mercure hub)
# and the Python ones (tests/python/requirements.txt, in a venv there: the Pusher clients, and
# PyYAML for scripts/check-deploy.py and tests/python/check_k8s.py); and nginx with the Nchan
# module, the peer that `herald-bench compare` measures Herald against.
#
# Run as root (apt-get). Idempotent: it installs only what is missing, runs `apt-get update` only
# when a package is missing, and reruns `npm ci` only when the lock file changed.
# Node.js >= 20 and npm must already be there (Debian 12's nodejs is too old for playwright-core).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
browser_dir="$root/tests/browser"
# systemd: systemd-analyze, which scripts/check-deploy.py verifies the unit with.
packages=(chromium curl redis-server php-cli nginx libnginx-mod-nchan systemd)

fail() {
  echo "install-test-deps: $*" >&2
  exit 1
}

# --- Debian packages ---------------------------------------------------------------------------

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} > 0)); then
  [[ $(id -u) -eq 0 ]] || fail "run as root: apt-get must install ${missing[*]}"
  command -v apt-get >/dev/null || fail "apt-get not found: install ${missing[*]} by hand"
  echo "install-test-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Wait for another apt or dpkg run to finish instead of failing on its lock.
  apt_options=(-qq -o DPkg::Lock::Timeout=600)
  apt-get "${apt_options[@]}" update >/dev/null || fail "apt-get update failed"
  apt-get "${apt_options[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null \
    || fail "apt-get install ${missing[*]} failed"
fi

# --- promtool (deploy/prometheus/alerts.yml) ------------------------------------------------------

# Debian's `prometheus` package carries promtool. Installing the package would also install and
# start a Prometheus server, so only promtool is taken out of it, into /usr/local/bin.
if ! command -v promtool >/dev/null; then
  [[ $(id -u) -eq 0 ]] || fail "run as root: promtool goes to /usr/local/bin"
  command -v apt-get >/dev/null || fail "apt-get not found: install promtool by hand"
  echo "install-test-deps: installing promtool (from Debian's prometheus package)"
  promtool_dir="$(mktemp -d)"
  (
    cd "$promtool_dir"
    apt-get -qq -o DPkg::Lock::Timeout=600 download prometheus >/dev/null 2>&1 || {
      apt-get -qq -o DPkg::Lock::Timeout=600 update >/dev/null &&
        apt-get -qq -o DPkg::Lock::Timeout=600 download prometheus >/dev/null
    }
  ) || fail "apt-get download prometheus failed"
  dpkg-deb -x "$promtool_dir"/prometheus_*.deb "$promtool_dir/root" || fail "dpkg-deb -x failed"
  install -m 0755 "$promtool_dir/root/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$promtool_dir"
fi

# --- playwright-core ---------------------------------------------------------------------------

command -v node >/dev/null || fail "node not found: install Node.js >= 20 and npm"
command -v npm >/dev/null || fail "npm not found: install npm (Node.js >= 20)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || fail "Node.js >= 20 is needed, found $(node --version)"

# node_modules is current when it was installed from exactly this package.json and lock file.
stamp="$browser_dir/node_modules/.herald-lock.sha256"
wanted="$(cat "$browser_dir/package.json" "$browser_dir/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
  echo "install-test-deps: npm ci in tests/browser"
  (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
    || fail "npm ci in $browser_dir failed"
  echo "$wanted" >"$stamp"
fi

# --- Python clients (tests/python/requirements.txt) ----------------------------------------------

python_dir="$root/tests/python"
venv="$python_dir/.venv"
command -v python3 >/dev/null || fail "python3 not found: install Python 3.11 with venv and pip"
py_stamp="$venv/.herald-requirements.sha256"
py_wanted="$(sha256sum "$python_dir/requirements.txt" | cut -d' ' -f1)"
if [[ ! -f $py_stamp || $(cat "$py_stamp") != "$py_wanted" ]]; then
  echo "install-test-deps: pip install -r tests/python/requirements.txt (in tests/python/.venv)"
  [[ -x $venv/bin/python ]] || python3 -m venv "$venv" || fail "python3 -m venv failed"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$python_dir/requirements.txt" \
    || fail "pip install in $venv failed"
  echo "$py_wanted" >"$py_stamp"
fi

echo "install-test-deps: ready (chromium, curl, redis-server, php-cli, nginx + nchan, systemd, promtool, playwright-core, the Python Pusher clients, PyYAML)"
