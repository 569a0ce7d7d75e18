#!/usr/bin/env bash
# Where the gateway's CPU goes per unicast message (S1) and per new connection (S4), by
# instruction counts (valgrind's callgrind) and syscall counts (strace -c -f).
#
#   bash scripts/profile-hot-path.sh [--out DIR] [--skip-build] [--only callgrind|strace] [--scenario s1|s4]
#   bash scripts/profile-hot-path.sh --report DIR   # only rewrite DIR/results.md from its runs
#
# Starts the release gateway on the embedded default (SQLite history, durable, HS256 tokens;
# the environment gateway-bench gives a gateway it spawns) under the tool, pinned to core
# SERVER_CPU, drives it from outside with gateway-bench (attached, pinned to GENERATOR_CPU),
# stops it with SIGTERM by PID and reads what the tool wrote. Every figure is a difference of
# two workload sizes, so start-up, connecting and idle time cancel:
#   S1: CONNS connections, then MSGS unicast publications (one per request) at RATE/s, against
#       the same run with MSGS/2 at RATE/2 (same length); per delivered message.
#   S4: S4_CONNS connect + token + subscribe (IN_FLIGHT at once), then close, against
#       S4_CONNS/2; per connection.
# Each pair is run REPEATS times (default 2), and the report gives each repeat's figure.
# Defaults: CONNS=1000 MSGS=3000 RATE=60 S4_CONNS=1000 IN_FLIGHT=50 (the "before" figures of
# docs/benchmarks-log.md; callgrind keeps up at 60/s on a loaded host). What a message costs
# depends on how many publications share a SQLite commit, which depends on timing: compare S1
# figures only between runs of the same parameters, and read the commit counts in the log.
#
# Writes to DIR (default target/profile-hot-path/<time>): per run <name>.callgrind,
# <name>.strace, <name>.json (gateway-bench's report), and results.md with per message and
# per connection: instructions, the instructions by where they go (self cost grouped by
# component), the top inclusive functions (callgrind_annotate --inclusive=yes) and the
# syscalls by name. Installs valgrind and strace with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER_CPU=${SERVER_CPU:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
CONNS=${CONNS:-1000}
MSGS=${MSGS:-3000}
RATE=${RATE:-60}
S4_CONNS=${S4_CONNS:-1000}
IN_FLIGHT=${IN_FLIGHT:-50}
REPEATS=${REPEATS:-2}
out="target/profile-hot-path/$(date -u +%Y%m%dT%H%M%SZ)"
build=1
runs=1
tools=(callgrind strace)
kinds=(s1 s4)
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --skip-build) build=0; shift ;;
    --report) out="$2"; runs=0; build=0; shift 2 ;;
    --only) tools=("$2"); shift 2 ;;
    --scenario) kinds=("$2"); shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
for t in valgrind strace; do
  if ! command -v "$t" >/dev/null; then
    echo "installing $t"
    apt-get install -y "$t" >/dev/null
  fi
done
[ "$build" = 0 ] || cargo build --release --bins
gw=target/release/activity-gateway
bench_bin=target/release/gateway-bench
[ -x "$gw" ] && [ -x "$bench_bin" ] || { echo "no release build: run without --skip-build" >&2; exit 1; }

tool_pid=""
data_dir=""
cleanup() {
  if [ -n "$tool_pid" ] && kill -0 "$tool_pid" 2>/dev/null; then
    kill -KILL "$tool_pid" 2>/dev/null || true
  fi
  [ -z "$data_dir" ] || rm -rf "$data_dir"
}
trap cleanup EXIT

# One run: the gateway under TOOL, gateway-bench SCENARIO ARGS... against it, clean stop.
run_one() {
  local tool=$1 name=$2
  shift 2
  local secret="bench-secret-$RANDOM$RANDOM" key="bench-pub-$RANDOM$RANDOM"
  data_dir=$(mktemp -d)
  local wrap
  case "$tool" in
    callgrind) wrap=(valgrind --tool=callgrind --dump-instr=no --dump-line=no
                     "--callgrind-out-file=$out/$name.callgrind" "--log-file=$out/$name.tool.log") ;;
    strace) wrap=(strace -f -c -o "$out/$name.strace") ;;
  esac
  # The environment of gateway-bench's spawned gateway (src/bin/gateway-bench/gateway.rs),
  # with a short drain window: the generator has closed every connection before the SIGTERM.
  # Under valgrind on a busy machine opening SQLite can outlast the pool's acquire timeout:
  # the gateway then exits at start-up, and is started again (at most 3 times).
  local addr="" attempt
  for attempt in 1 2 3; do
    env -i PATH="$PATH" RUST_LOG=warn \
      GATEWAY__SERVER__LISTEN=127.0.0.1:0 \
      GATEWAY__AUTH__HS256_SECRET="$secret" \
      GATEWAY__PUBLISH__API_KEYS="$key" \
      GATEWAY__ADMIN__API_KEYS="bench-admin-$RANDOM$RANDOM" \
      GATEWAY__CHAINS__KNOWN=eip155:1,eip155:8453,eip155:137 \
      GATEWAY__SERVER__MAX_CONNECTIONS_PER_IP=1000000 \
      GATEWAY__SERVER__DRAIN_WINDOW=1s \
      GATEWAY__STORAGE__URL="sqlite://$data_dir/gateway.db" \
      nice -n -10 taskset -c "$SERVER_CPU" "${wrap[@]}" "$gw" >"$out/$name.stdout" 2>"$out/$name.stderr" &
    tool_pid=$!
    for _ in $(seq 600); do
      addr=$(sed -n 's/^listening on //p' "$out/$name.stdout" 2>/dev/null | head -1)
      [ -z "$addr" ] || break
      kill -0 "$tool_pid" 2>/dev/null || break
      sleep 0.2
    done
    [ -z "$addr" ] || break
    echo "$name: the gateway did not start (attempt $attempt): $(tail -1 "$out/$name.stderr")" >&2
    kill -KILL "$tool_pid" 2>/dev/null || true
    wait "$tool_pid" 2>/dev/null || true
    rm -rf "$data_dir"
    data_dir=$(mktemp -d)
  done
  [ -n "$addr" ] || { echo "$name: the gateway did not start; see $out/$name.stderr" >&2; exit 1; }
  # valgrind runs the gateway in its own pid; strace forks it.
  local gpid=$tool_pid
  if [ "$tool" = strace ]; then
    gpid=$(awk '{print $1}' "/proc/$tool_pid/task/$tool_pid/children")
  fi
  echo "== $name ($tool, gateway pid $gpid on $addr): gateway-bench $*"
  nice -n -10 taskset -c "$GENERATOR_CPU" "$bench_bin" --addr "$addr" --secret "$secret" \
    --publisher-key "$key" --server-pid "$gpid" --json "$out/$name.json" "$@" \
    >"$out/$name.bench.txt" 2>&1 || { cat "$out/$name.bench.txt" >&2; exit 1; }
  grep -E '^step|connect' "$out/$name.bench.txt" | head -3 || true
  kill -TERM "$gpid"
  for _ in $(seq 1200); do kill -0 "$tool_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$tool_pid" 2>/dev/null; then
    echo "$name: the gateway did not exit within 120 s of SIGTERM; killed" >&2
    kill -KILL "$gpid" "$tool_pid" 2>/dev/null || true
  fi
  wait "$tool_pid" || true
  tool_pid=""
  rm -rf "$data_dir"
  data_dir=""
  if [ "$tool" = callgrind ]; then
    callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$out/$name.callgrind" >"$out/$name.incl.txt"
    callgrind_annotate --auto=no --threshold=100 "$out/$name.callgrind" >"$out/$name.self.txt"
  fi
}

step=$(( MSGS / RATE ))
s1=(s1 --connections "$CONNS" --in-flight "$IN_FLIGHT" --batch 1 --step "${step}s" --drain 60s --keep-going)
for r in $(seq "$REPEATS"); do
  [ "$runs" = 1 ] || break
  for tool in "${tools[@]}"; do
    if [[ " ${kinds[*]} " == *" s1 "* ]]; then
      run_one "$tool" "s1-hi-$r-$tool" "${s1[@]}" --rates "$RATE"
      run_one "$tool" "s1-lo-$r-$tool" "${s1[@]}" --rates "$(( RATE / 2 ))"
    fi
    if [[ " ${kinds[*]} " == *" s4 "* ]]; then
      run_one "$tool" "s4-hi-$r-$tool" s4 --connections "$S4_CONNS" --in-flight "$IN_FLIGHT"
      run_one "$tool" "s4-lo-$r-$tool" s4 --connections "$(( S4_CONNS / 2 ))" --in-flight "$IN_FLIGHT"
    fi
  done
done

python3 - "$out" "$REPEATS" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
  "CONNS=$CONNS MSGS=$MSGS RATE=$RATE S4_CONNS=$S4_CONNS IN_FLIGHT=$IN_FLIGHT, gateway on cpu $SERVER_CPU, generator on cpu $GENERATOR_CPU" \
  "${kinds[*]}" "${tools[@]}" >"$out/results.md" <<'PY'
import json, os, re, sys
from collections import defaultdict

out, repeats, commit, params, kinds, tools = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5].split(), sys.argv[6:]

# Where an instruction goes, by the function it is executed in (first match wins).
GROUPS = [
    ("SQLite SQL compile (parse, resolve, codegen)", r"sqlite3(RunParser|Parser|GetToken|Prepare|LockAndPrepare|Resolve|Expr|Insert|GenerateConstraint|Select|Walk|Finish|Code|VdbeAdd|VdbeChange|VdbeMake|VdbeResolve|VdbeAssert|VdbeGoto|VdbeJumpHere|VdbeMemTranslate|NameFrom|LocateTable|FindTable|SrcList|IdList|ExprList|Pragma|BeginTransaction|EndTransaction)|^yy_|keywordCode|tokenExpr|resolveExpr|^lookupName|^getToken|analyzeAggregate|^exprAnalyze"),
    ("SQLite commit + WAL (pager, wal, os)", r"sqlite3(Pager|Wal(?!k)|Os|PcacheFetch|Pcache|Btree(Commit|Begin|BeginTrans|SavepointDone)|WalFrames)|sqlite3VdbeHalt|unixSync|unixWrite|unixRead|walIndex|walWrite|walFrames|walChecksum|walMerge|walHash|walIterator|walFramePage|walCleanupHash|walEncodeFrame|pager_|pcache|unixLock|unixUnlock|unixFileControl"),
    ("SQLite statements (VDBE, B-tree, parse)", r"sqlite3|libsqlite3|^btree|^vdbe|^balance|^moveTo|^insertCell|^fillInCell|^yy_|^get4byte|^put4byte"),
    ("sqlx (driver, worker thread)", r"sqlx"),
    ("HTTP parsing / hyper / axum", r"hyper|httparse|^http::|<http::|axum|tower|matchit|h2::|mime"),
    ("JSON serde", r"serde_json|serde::|serde_core|ryu|itoa"),
    ("WebSocket writer / tungstenite", r"tungstenite|sha1|fastwebsockets"),
    ("tokio scheduling / wake-ups / sync", r"tokio::runtime|tokio::sync|tokio::task|tokio::time|tokio::loom|tokio::util|parking_lot|std::sync|std::thread|crossbeam|event_listener|futures_util|futures_channel|futures_core|core::task|Waker|__pthread|pthread_|futex|sched_yield"),
    ("tokio I/O / mio", r"mio::|tokio::net|tokio::io|tokio_util"),
    ("allocation (jemalloc; glibc malloc in SQLite)", r"_rjem|je_|jemalloc|tikv_jemalloc|__rust_alloc|__rust_dealloc|__rust_realloc|alloc::alloc|alloc::raw_vec|^malloc|^free$|^realloc|^calloc|_int_malloc|_int_free|_int_realloc|malloc_consolidate|cfree|do_rallocx|extent_|arena_|tcache_|sdallocx|mallocx|rallocx"),
    ("memcpy / memcmp / libc string", r"mem(cpy|move|set|cmp|chr)|str(len|cmp|chr)|__memcpy|__memmove|__memset|__memcmp|bcmp"),
    ("syscall wrappers (user side; kernel time is not counted)", r"^(__libc_)?(write|writev|read|readv|send|sendto|sendmsg|recv|recvfrom|recvmsg|epoll_wait|epoll_ctl|accept4?|close|fsync|fdatasync|pwrite64|pread64|fcntl|getrandom|clock_gettime|__clock_gettime|syscall|__GI_|__libc)|vdso"),
    ("auth (JWT, HMAC, base64)", r"jsonwebtoken|(^|[^a-z_])ring::|hmac|sha2|base64|subtle"),
    ("tracing / metrics", r"tracing|metrics|prometheus"),
    ("gateway code (activity_gateway)", r"activity_gateway"),
    ("hashing / collections", r"hashbrown|siphash|ahash|foldhash|BTreeMap|btree::|core::hash|std::collections"),
    ("core / std formatting", r"core::fmt|alloc::fmt|alloc::string|core::str|alloc::str"),
]
GROUPS = [(n, re.compile(p)) for n, p in GROUPS]

def group(fn):
    for name, rx in GROUPS:
        if rx.search(fn):
            return name
    return "other"

LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(?:\*\s+)?(.*?)\s*$")
def annotate(path, inclusive=False):
    """function -> Ir from callgrind_annotate output. A function inlined from several files
    has one line per file: their self costs add up; for inclusive costs the line the callers'
    edges point at already holds the whole call, so the largest line is taken."""
    costs = {}
    started = False
    with open(path, errors="replace") as f:
        for line in f:
            if not started:
                # The function list follows the header line naming the event column.
                if re.match(r"^\s*Ir\s+(file:function|\S)", line) and "file:function" in line:
                    started = True
                continue
            m = LINE.match(line)
            if not m:
                continue
            ir = int(m.group(1).replace(",", ""))
            rest = m.group(2)
            if "PROGRAM TOTALS" in rest:
                continue
            rest = re.sub(r"\s*\[[^\]]*\]\s*$", "", rest)       # [object]
            rest = re.sub(r"^(\?\?\?|[^ :<]*\.(rs|c|h|S|s|cc|cpp)|/[^: ]*):", "", rest)  # file:
            costs[rest] = max(costs.get(rest, 0), ir) if inclusive else costs.get(rest, 0) + ir
    return costs

def totals(path):
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")

def report(path):
    with open(path) as f:
        return json.load(f)

def work(kind, name):
    """Delivered messages (s1) or connections set up (s4) of one run."""
    r = report(os.path.join(out, name + ".json"))
    if kind == "s1":
        return sum(s["delivered"] for s in r["steps"]), sum(s["lost"] for s in r["steps"])
    return r["connect"]["connected"], r["connect"]["failed"]

def fmt(x, d=0):
    return f"{x:,.{d}f}"

unit = {"s1": "delivered message", "s4": "connection (connect + token + subscribe + close)"}
print(f"# Where the CPU goes: instructions and syscalls (git {commit})\n")
print(f"{params}; each figure is (run with the larger workload - run with half of it) / (difference in work).\n")

summary = []
for kind in kinds:
    print(f"## {kind.upper()}: per {unit[kind]}\n")
    if "callgrind" in tools:
        per_rep, selfs, incls = [], [], []
        print("| repeat | work (hi / lo) | lost or failed (hi / lo) | Ir hi | Ir lo | Ir per unit |")
        print("|---|---|---|---|---|---|")
        for r in range(1, repeats + 1):
            hi, lo = f"{kind}-hi-{r}-callgrind", f"{kind}-lo-{r}-callgrind"
            (wh, xh), (wl, xl) = work(kind, hi), work(kind, lo)
            th, tl = totals(os.path.join(out, hi + ".callgrind")), totals(os.path.join(out, lo + ".callgrind"))
            d = wh - wl
            per = (th - tl) / d
            per_rep.append(per)
            print(f"| {r} | {wh} / {wl} | {xh} / {xl} | {fmt(th)} | {fmt(tl)} | **{fmt(per)}** |")
            sh, sl = annotate(os.path.join(out, hi + ".self.txt")), annotate(os.path.join(out, lo + ".self.txt"))
            ih, il = annotate(os.path.join(out, hi + ".incl.txt"), True), annotate(os.path.join(out, lo + ".incl.txt"), True)
            selfs.append({k: (sh.get(k, 0) - sl.get(k, 0)) / d for k in set(sh) | set(sl)})
            incls.append({k: (ih.get(k, 0) - il.get(k, 0)) / d for k in set(ih) | set(il)})
        spread = (max(per_rep) - min(per_rep)) / (sum(per_rep) / len(per_rep)) * 100
        print(f"\nInstructions per {unit[kind]}: {' / '.join(fmt(p) for p in per_rep)} (repeats differ by {spread:.1f} %)\n")
        summary.append((kind, "instructions", per_rep, spread))
        # Self cost by group: a partition of the instructions (no double counting).
        print("### Self cost by where it goes (instructions per unit, each repeat)\n")
        print("| where | " + " | ".join(f"repeat {r}" for r in range(1, repeats + 1)) + " | share |")
        print("|---|" + "---|" * (repeats + 1))
        g = [defaultdict(float) for _ in selfs]
        for i, s in enumerate(selfs):
            for k, v in s.items():
                g[i][group(k)] += v
        names = sorted(set().union(*g), key=lambda n: -g[0][n])
        total0 = sum(g[0].values()) or 1
        for n in names:
            print(f"| {n} | " + " | ".join(fmt(x[n]) for x in g) + f" | {g[0][n] / total0 * 100:.1f} % |")
        print("| **total** | " + " | ".join(fmt(sum(x.values())) for x in g) + " | |\n")
        # Inclusive: the top functions, and per group its top entries.
        print("### Top inclusive functions (instructions per unit, each repeat; thread, runtime and combinator frames left out)\n")
        print("| inclusive | function | group |")
        print("|---|---|---|")
        # Thread, runtime and future-combinator frames hold everything beneath them: left out.
        generic = re.compile(r"thread_start|start_thread|^clone3?$|call_once|__rust_begin_short_backtrace|"
                             r"scoped::Scoped|enter_runtime|context::set_scheduler|CoreGuard|block_on|"
                             r"worker::(Context::run|run)|blocking::pool|BlockingTask|task::raw::poll|"
                             r"task::core::Core|task::harness|Pin<P> as core::future|PollFn|future::map::Map|"
                             r"TrackedFuture|Instrumented|^0x|^main$|lang_start|__libc_start")
        top = sorted(((k, v) for k, v in incls[0].items() if not generic.search(k)), key=lambda kv: -kv[1])
        shown = 0
        for k, v in top:
            if shown >= 45:
                break
            if len(k) > 140:
                k2 = k[:137] + "..."
            else:
                k2 = k
            others = " / ".join(fmt(i.get(k, 0)) for i in incls[1:])
            print(f"| {fmt(v)}{' / ' + others if others else ''} | `{k2}` | {group(k)} |")
            shown += 1
        print("\n### Largest inclusive entries per group (repeat 1)\n")
        for n in names:
            best = [(k, v) for k, v in top if group(k) == n][:4]
            if not best or best[0][1] <= 0:
                continue
            items = "; ".join(f"`{k[:100]}` {fmt(v)}" for k, v in best)
            print(f"- **{n}**: {items}")
        print()
    if "strace" in tools:
        per_rep = []
        calls = []
        for r in range(1, repeats + 1):
            hi, lo = f"{kind}-hi-{r}-strace", f"{kind}-lo-{r}-strace"
            (wh, xh), (wl, xl) = work(kind, hi), work(kind, lo)
            d = wh - wl
            def parse(p):
                c = {}
                for line in open(p):
                    f = line.split()
                    if len(f) >= 5 and re.match(r"^[\d.]+$", f[0]) and f[-1] != "total":
                        c[f[-1]] = int(f[3])
                return c
            ch, cl = parse(os.path.join(out, hi + ".strace")), parse(os.path.join(out, lo + ".strace"))
            calls.append(({k: (ch.get(k, 0) - cl.get(k, 0)) / d for k in set(ch) | set(cl)}, wh, wl, xh, xl))
            per_rep.append(sum(calls[-1][0].values()))
        spread = (max(per_rep) - min(per_rep)) / (sum(per_rep) / len(per_rep)) * 100 if per_rep else 0
        summary.append((kind, "syscalls", per_rep, spread))
        print(f"### Syscalls per {unit[kind]} (strace -c -f)\n")
        print("work (hi / lo), lost or failed: " + "; ".join(f"repeat {i+1}: {c[1]} / {c[2]}, {c[3]} / {c[4]}" for i, c in enumerate(calls)) + "\n")
        print("| syscall | " + " | ".join(f"repeat {r}" for r in range(1, repeats + 1)) + " |")
        print("|---|" + "---|" * repeats)
        keys = sorted(set().union(*[c[0] for c in calls]), key=lambda k: -calls[0][0].get(k, 0))
        for k in keys:
            vals = [c[0].get(k, 0) for c in calls]
            if max(abs(v) for v in vals) < 0.005:
                continue
            print(f"| {k} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
        print("| **total** | " + " | ".join(f"{v:.2f}" for v in per_rep) + f" |\n\nRepeats differ by {spread:.1f} %.\n")

print("## Summary\n")
for kind, what, per, spread in summary:
    print(f"- {kind.upper()} {what} per {unit[kind]}: {' / '.join(fmt(p, 0 if what == 'instructions' else 2) for p in per)} (repeats differ by {spread:.1f} %)")
PY
cat "$out/results.md"
echo "reports in $out"
