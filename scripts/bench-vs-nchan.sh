#!/usr/bin/env bash
# Measures the gateway and its peer, nginx + Nchan, side by side: the same generator
# (gateway-bench) drives the gateway, then nginx, in one run, each server pinned to the same
# core and the generator to the other; the table gives each figure of both and their ratio.
#
#   bash scripts/bench-vs-nchan.sh [--out DIR] ['SCENARIO[:ARGS]']...
#
# SCENARIO is s1, s2, s3 or s4 (default: all four, s1 with one publication per request, s2
# through every rate, since its first step already fails the 100 ms p99 on both servers);
# ARGS are extra gateway-bench arguments for both servers, separated by spaces (quote the
# spec), e.g. 's1:--batch 1 --rates 2000,5000,10000' (Nchan always takes one publication per
# request).
# Reports go to DIR (default target/bench-vs-nchan/<time>): <spec>-gateway.json,
# <spec>-nchan.json (the spec with every other character as `_`) and results.md with one
# table per spec.
#
# Installs nginx and libnginx-mod-nchan from Debian's packages if they are missing. Stops only
# the nginx it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER_CPU=${SERVER_CPU:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
out="target/bench-vs-nchan/$(date -u +%Y%m%dT%H%M%SZ)"
scenarios=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) scenarios+=("$1"); shift ;;
  esac
done
[ ${#scenarios[@]} -gt 0 ] || scenarios=('s1:--batch 1' 's2:--rates 1,5,10,20,30,40,50 --keep-going' s3 s4)
mkdir -p "$out"

module=/usr/lib/nginx/modules/ngx_nchan_module.so
if ! command -v nginx >/dev/null || [ ! -f "$module" ]; then
  echo "installing nginx and Nchan from Debian's packages"
  apt-get install -y nginx-light libnginx-mod-nchan >/dev/null
fi

cargo build --release --bins
bench="nice -n -10 taskset -c $GENERATOR_CPU target/release/gateway-bench"
gateway="--gateway-bin target/release/activity-gateway --gateway-cpus $SERVER_CPU"

nginx_dir=$(mktemp -d)
nginx_master=""
stop_nginx() {
  if [ -n "$nginx_master" ] && kill -0 "$nginx_master" 2>/dev/null; then
    kill -QUIT "$nginx_master" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$nginx_master" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$nginx_master" 2>/dev/null || true
  fi
  nginx_master=""
}
trap 'stop_nginx; rm -rf "$nginx_dir"' EXIT

# A free loopback port for nginx (its configuration needs one by number).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# One worker, pinned like the gateway; subscribers on /sub/<id>, publishers on /pub/<id>.
start_nginx() {
  local port
  port=$(free_port)
  mkdir -p "$nginx_dir/logs"
  cat >"$nginx_dir/nginx.conf" <<CONF
load_module $module;
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $nginx_dir/nginx.pid;
error_log $nginx_dir/logs/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path $nginx_dir/body;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location ~ ^/sub/(\w+)$ { nchan_subscriber websocket; nchan_channel_id \$1; }
    location ~ ^/pub/(\w+)$ { nchan_publisher; nchan_channel_id \$1; }
  }
}
CONF
  nice -n -10 taskset -c "$SERVER_CPU" nginx -p "$nginx_dir" -c "$nginx_dir/nginx.conf" &
  nginx_master=$!
  for _ in $(seq 100); do
    nginx_worker=$(cat "/proc/$nginx_master/task/$nginx_master/children" 2>/dev/null | awk '{print $1}')
    if [ -n "$nginx_worker" ] && curl -s -o /dev/null "http://127.0.0.1:$port/"; then
      nginx_addr="127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  echo "nginx did not start; see $nginx_dir/logs/error.log" >&2
  cat "$nginx_dir/logs/error.log" >&2 || true
  exit 1
}

{
  echo "# Gateway and nginx + Nchan, side by side"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cpus, kernel $(uname -r), servers on cpu $SERVER_CPU, generator on cpu $GENERATOR_CPU, git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
} >"$out/results.md"

for spec in "${scenarios[@]}"; do
  name=${spec%%:*}
  extra=()
  if [ "$spec" != "$name" ]; then read -r -a extra <<<"${spec#*:}"; fi
  # One file name per spec, so that a scenario can be run with two sets of arguments.
  label=$(tr -c 'A-Za-z0-9\n' '_' <<<"$spec")
  echo "== $spec: gateway"
  $bench $gateway --json "$out/$label-gateway.json" "$name" "${extra[@]}" | tee "$out/$label-gateway.txt"
  echo "== $spec: nginx + Nchan"
  start_nginx
  $bench --nchan --addr "$nginx_addr" --server-pid "$nginx_worker" \
    --json "$out/$label-nchan.json" "$name" "${extra[@]}" | tee "$out/$label-nchan.txt"
  stop_nginx
  {
    echo "\`$spec\`"
    echo
    target/release/gateway-bench compare "$out/$label-gateway.json" "$out/$label-nchan.json"
    echo
  } >>"$out/results.md"
done
echo
cat "$out/results.md"
echo "reports in $out"
