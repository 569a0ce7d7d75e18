#!/usr/bin/env bash
# Whether the gateway's memory stays flat under steady load: S1 unicast at RATE msgs/s (one
# publication per request) to 10,000 connections for MINUTES, with a short retention so that
# the history reaches its steady size early; the allocator's allocated bytes
# (`gateway_allocator_allocated_bytes` on /metrics) and the process's RSS are sampled every
# 30 s, and the slope is the least-squares fit from WARMUP minutes on.
#
#   bash scripts/memory-soak.sh [--out DIR] [--skip-build]
#
# Environment: RATE (default 5000), MINUTES (30), WARMUP (3), SERVER_CPU (0), GENERATOR_CPU (1).
# Writes DIR/samples.tsv (seconds, allocated bytes, RSS bytes), DIR/bench.txt and
# DIR/results.md. Stops only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-5000}
MINUTES=${MINUTES:-30}
WARMUP=${WARMUP:-3}
SERVER_CPU=${SERVER_CPU:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
out="target/memory-soak/$(date -u +%Y%m%dT%H%M%SZ)"
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --skip-build) build=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
[ "$build" = 0 ] || cargo build --release --bins
commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')

# A free loopback port for the metrics listener, so /metrics can be read while the main
# listener's port is the generator's business.
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
bench_pid=""
cleanup() { [ -z "$bench_pid" ] || kill "$bench_pid" 2>/dev/null || true; }
trap cleanup EXIT

taskset -c "$GENERATOR_CPU" target/release/gateway-bench \
  --gateway-bin target/release/activity-gateway --gateway-cpus "$SERVER_CPU" \
  --gateway-env GATEWAY__HISTORY__RETENTION_AGE=2m \
  --gateway-env GATEWAY__HISTORY__TRIM_INTERVAL=10s \
  --gateway-env "GATEWAY__METRICS__LISTEN=127.0.0.1:$metrics_port" \
  --max-duration "$((MINUTES + 5))m" --json "$out/bench.json" \
  s1 --batch 1 --rates "$RATE" --step "${MINUTES}m" --drain 5s >"$out/bench.txt" 2>&1 &
bench_pid=$!

start=""
: >"$out/samples.tsv"
while kill -0 "$bench_pid" 2>/dev/null; do
  metrics=$(curl -sf "http://127.0.0.1:$metrics_port/metrics" || true)
  alloc=$(sed -n 's/^gateway_allocator_allocated_bytes \(.*\)/\1/p' <<<"$metrics")
  # The generator's only child is `timeout`, whose only child is the gateway.
  pid=$(pgrep -P "$(pgrep -P "$bench_pid" | head -1)" | head -1 || true)
  rss=""
  [ -z "$pid" ] || rss=$(( $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0) * 1024 ))
  if [ -n "$alloc" ]; then
    now=$(date +%s)
    start=${start:-$now}
    printf '%s\t%s\t%s\n' "$((now - start))" "$alloc" "${rss:-0}" >>"$out/samples.tsv"
  fi
  sleep 30
done
wait "$bench_pid" || true
bench_pid=""

python3 - "$out" "$WARMUP" "$RATE" "$MINUTES" "$commit" >"$out/results.md" <<'PY'
import sys
out, warmup, rate, minutes, commit = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rows = [tuple(float(x) for x in l.split("\t")) for l in open(f"{out}/samples.tsv") if l.strip()]
kept = [r for r in rows if r[0] >= warmup * 60]
def slope(i):
    n = len(kept)
    if n < 3:
        return float("nan")
    mx = sum(r[0] for r in kept) / n
    my = sum(r[i] for r in kept) / n
    sxx = sum((r[0] - mx) ** 2 for r in kept)
    sxy = sum((r[0] - mx) * (r[i] - my) for r in kept)
    return sxy / sxx * 60 / 2**20  # MiB per minute
mib = lambda b: b / 2**20
print(f"# Memory under steady load (git {commit})\n")
print(f"S1 at {rate} msgs/s, one publication per request, 10,000 connections, {minutes} min, "
      f"retention 2 min; least-squares slope from {warmup:g} min on, {len(kept)} samples.\n")
print("| figure | at warm-up | at the end | slope |")
print("|---|---|---|---|")
if kept:
    print(f"| allocated (jemalloc) | {mib(kept[0][1]):.1f} MiB | {mib(kept[-1][1]):.1f} MiB | {slope(1):+.3f} MiB/min |")
    print(f"| RSS | {mib(kept[0][2]):.1f} MiB | {mib(kept[-1][2]):.1f} MiB | {slope(2):+.3f} MiB/min |")
print()
for line in open(f"{out}/bench.txt"):
    if line.startswith("step") and "delivered" in line and "|" in line:
        print("    " + line.rstrip())
PY
cat "$out/results.md"
echo "reports in $out"
