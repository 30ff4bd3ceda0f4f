#!/usr/bin/env bash
# Nchan for herald-bench: installs nginx with the Nchan module (Debian packages) and runs it as a
# private nginx instance on loopback, with its own prefix, config and pid file under a work folder.
#
#   benches/nchan/setup.sh install               apt-get install nginx libnginx-mod-nchan, only if missing
#   benches/nchan/setup.sh config DIR PORT [CERT KEY]
#                                                write DIR/nginx.conf for 127.0.0.1:PORT; with CERT and
#                                                KEY (PEM files), the listener speaks TLS alone
#   benches/nchan/setup.sh proxy DIR PORT UPSTREAM CERT KEY
#                                                write DIR/nginx.conf for a TLS proxy (no Nchan) on
#                                                127.0.0.1:PORT in front of UPSTREAM (host:port, plain)
#   benches/nchan/setup.sh start [DIR] [PORT]    install, config, start nginx as a daemon (DIR/nginx.pid)
#   benches/nchan/setup.sh stop [DIR]            stop the nginx that `start` started, by its pid file
#
# herald-bench runs `install` and `config` itself and starts nginx in the foreground as its own
# child (`nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'`), so it knows and stops exactly the PIDs
# it started. The system's nginx service and /etc/nginx are never touched, and nothing here uses
# systemctl. Defaults: DIR=/tmp/herald-nchan, PORT=8090.
#
# The instance: one worker process (the measurements compare one Herald process with one nginx
# worker), publisher at /pub/<channel>, subscriber (WebSocket, EventSource, long-poll) at
# /sub/<channel>, a long-poll-only subscriber at /poll/<channel> whose polls time out after 25 s
# like Herald's poll.timeout_secs, history of 100 messages for 10 minutes per channel like Herald's
# defaults, and new subscribers start at the newest message like a Herald subscribe without `since`.
#
# The TLS proxy (herald-bench --tls-proxy): one worker too, nginx's TLS defaults, every path passed
# to Herald over HTTP/1.1 with the WebSocket upgrade headers, nothing buffered either way, and idle
# connections held for an hour (Herald pings its WebSocket clients every 25 s and sends SSE
# keep-alives, so nginx's 60-s default would do; an hour leaves no doubt). No X-Forwarded-* or
# Forwarded header: Herald's dev site, which the bench runs, refuses proxied requests (it serves its
# own machine only), and a header read once per connection changes nothing an idle one holds.
set -euo pipefail

module=/usr/lib/nginx/modules/ngx_nchan_module.so

fail() {
  echo "nchan/setup.sh: $*" >&2
  exit 1
}

install() {
  local missing=()
  for package in nginx libnginx-mod-nchan; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
      missing+=("$package")
    fi
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) -eq 0 ]] || fail "run as root: apt-get must install ${missing[*]}"
  echo "nchan/setup.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt_options=(-qq -o DPkg::Lock::Timeout=600)
  apt-get "${apt_options[@]}" update >/dev/null || fail "apt-get update failed"
  # Debian's package would start the system nginx service where an init system allows it; that
  # service is not ours to stop, and nothing below depends on it.
  apt-get "${apt_options[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null \
    || fail "apt-get install ${missing[*]} failed"
}

# nginx's certificate lines for a TLS listener, when CERT and KEY are given (none otherwise).
tls_lines() {
  local cert="${1:-}" key="${2:-}"
  [[ -z $cert ]] && return 0
  [[ -r $cert && -r $key ]] || fail "cannot read $cert and $key"
  printf '        ssl_certificate %s;\n        ssl_certificate_key %s;\n' "$cert" "$key"
}

# The http block's opening lines both configs share: no access log, and every temporary folder
# inside DIR, so that the instance writes nothing outside it.
http_head() {
  local dir="$1"
  printf '%s\n' "    access_log off;" \
    "    client_body_temp_path $dir/tmp/body;" \
    "    proxy_temp_path $dir/tmp/proxy;" \
    "    fastcgi_temp_path $dir/tmp/fastcgi;" \
    "    uwsgi_temp_path $dir/tmp/uwsgi;" \
    "    scgi_temp_path $dir/tmp/scgi;" \
    "    keepalive_requests 1000000;" \
    "    keepalive_timeout 600s;"
}

hard_nofile() {
  local nofile
  nofile="$(ulimit -Hn)"
  [[ $nofile == unlimited ]] && nofile=1048576
  echo "$nofile"
}

config() {
  local dir="$1" port="$2" cert="${3:-}" key="${4:-}"
  [[ -f $module ]] || fail "$module is missing: run '$0 install'"
  mkdir -p "$dir/tmp"
  local nofile ssl="" certificates
  nofile="$(hard_nofile)"
  certificates="$(tls_lines "$cert" "$key")"
  [[ -n $cert ]] && ssl=" ssl"
  cat >"$dir/nginx.conf" <<CONF
# Written by benches/nchan/setup.sh for herald-bench; a private instance, not the system nginx.
load_module $module;
worker_processes 1;
worker_rlimit_nofile $nofile;
pid $dir/nginx.pid;
error_log $dir/error.log warn;

events {
    worker_connections $nofile;
    multi_accept on;
}

http {
$(http_head "$dir")
    client_body_buffer_size 64k;
    client_max_body_size 1m;
    nchan_shared_memory_size 256m;

    server {
        listen 127.0.0.1:$port$ssl backlog=4096;
$certificates

        location ~ ^/pub/([A-Za-z0-9_.:@=-]+)\$ {
            nchan_publisher;
            nchan_channel_id \$1;
            nchan_message_buffer_length 100;
            nchan_message_timeout 600s;
        }

        location ~ ^/sub/([A-Za-z0-9_.:@=-]+)\$ {
            nchan_subscriber;
            nchan_channel_id \$1;
            nchan_subscriber_first_message newest;
        }

        # Long-poll alone: each answer is one message with its id in Last-Modified and Etag; the
        # next poll sends them back as If-Modified-Since and If-None-Match.
        location ~ ^/poll/([A-Za-z0-9_.:@=-]+)\$ {
            nchan_subscriber longpoll;
            nchan_channel_id \$1;
            nchan_subscriber_first_message newest;
            nchan_subscriber_timeout 25s;
        }
    }
}
CONF
}

proxy() {
  local dir="$1" port="$2" upstream="$3" cert="$4" key="$5"
  mkdir -p "$dir/tmp"
  local nofile certificates
  nofile="$(hard_nofile)"
  certificates="$(tls_lines "$cert" "$key")"
  # worker_connections at twice the open-files limit: each client takes two connections (its own,
  # and nginx's to Herald), and nginx starts closing connections that wait for a request once fewer
  # than a sixteenth of worker_connections are free, so at the limit itself it would refuse clients
  # with a sixteenth of it still unused. The open-files limit is then what bounds it (nginx warns
  # that worker_connections exceed it; that is the point).
  cat >"$dir/nginx.conf" <<CONF
# Written by benches/nchan/setup.sh for herald-bench; a private TLS proxy, not the system nginx.
worker_processes 1;
worker_rlimit_nofile $nofile;
pid $dir/nginx.pid;
error_log $dir/error.log warn;

events {
    worker_connections $((2 * nofile));
    multi_accept on;
}

http {
$(http_head "$dir")

    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        '' close;
    }

    server {
        listen 127.0.0.1:$port ssl backlog=4096;
$certificates

        location / {
            proxy_pass http://$upstream;
            proxy_http_version 1.1;
            proxy_set_header Host \$host;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }
    }
}
CONF
}

start() {
  local dir="$1" port="$2"
  install
  config "$dir" "$port"
  if [[ -f $dir/nginx.pid ]] && kill -0 "$(cat "$dir/nginx.pid")" 2>/dev/null; then
    fail "already running (pid $(cat "$dir/nginx.pid")); run '$0 stop $dir' first"
  fi
  nginx -q -t -p "$dir" -c "$dir/nginx.conf" || fail "nginx rejected $dir/nginx.conf"
  nginx -p "$dir" -c "$dir/nginx.conf"
  echo "nchan/setup.sh: nginx with Nchan on 127.0.0.1:$port (pid $(cat "$dir/nginx.pid"), config $dir/nginx.conf)"
}

stop() {
  local dir="$1" pid
  [[ -f $dir/nginx.pid ]] || fail "no $dir/nginx.pid: nothing of ours to stop"
  pid="$(cat "$dir/nginx.pid")"
  # SIGQUIT: the master stops its workers and exits; only this pid is signalled.
  kill -QUIT "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || { echo "nchan/setup.sh: stopped pid $pid"; return 0; }
    sleep 0.1
  done
  kill -TERM "$pid" 2>/dev/null || true
  echo "nchan/setup.sh: sent SIGTERM to pid $pid"
}

command="${1:-start}"
case "$command" in
  install) install ;;
  config) [[ $# -eq 3 || $# -eq 5 ]] || fail "usage: $0 config DIR PORT [CERT KEY]"; config "${@:2}" ;;
  proxy) [[ $# -eq 6 ]] || fail "usage: $0 proxy DIR PORT UPSTREAM CERT KEY"; proxy "${@:2}" ;;
  start) start "${2:-/tmp/herald-nchan}" "${3:-8090}" ;;
  stop) stop "${2:-/tmp/herald-nchan}" ;;
  *) fail "unknown command $command (install, config, proxy, start, stop)" ;;
esac
