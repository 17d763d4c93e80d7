#!/usr/bin/env bash
# Side-by-side load runs on loopback: Petrel and Mosquitto (ejabberd once
# the XMPP scenarios are wired in here), the same generator and scenarios against
# each — a freshly started broker per scenario, the brokers alternating —
# and a table of ratios at the end. Peers that are not installed are
# skipped with a message:  apt-get install mosquitto ejabberd
#
#   bash benches/compare.sh                       # everything, defaults below
#   DURATION=5 CONNS=2000 bash benches/compare.sh # shorter
#   SCENARIOS="qos0 qos1" bash benches/compare.sh # a subset
#
# Scenarios: qos0, qos1 (mqtt-pubsub one-to-one, PAIRS pairs, PAYLOAD bytes,
# publishers as fast as TCP takes them), qos0r (the same at QoS 0 with RATE
# msgs/s per publisher, an offered load below saturation),
# fanout (1 publisher -> FANOUT subscribers, QoS 0, FANOUT_RATE msgs/s),
# conn (mqtt-conn: CONNS idle connections with the broker's RSS before/after).
# Reports (JSON + SVG per run) and summary.txt go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
PAIRS=${PAIRS:-4}
PAYLOAD=${PAYLOAD:-64}
FANOUT=${FANOUT:-1000}
FANOUT_RATE=${FANOUT_RATE:-200}
CONNS=${CONNS:-10000}
CONN_RATE=${CONN_RATE:-2000}
RATE=${RATE:-25000}
SCENARIOS=${SCENARIOS:-"qos0 qos0r qos1 fanout conn"}
OUT=${OUT:-target/load/compare-$(date +%s)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}

# Connections need file descriptors on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files allowed: $(ulimit -n)"

cargo build --release --bin petrel
LOAD=$(cargo bench --no-run --bench load --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "load":
        print(m["executable"])')
[ -x "$LOAD" ] || { echo "could not build the load generator" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

PIDS=()
DIRS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for d in "${DIRS[@]:-}"; do [ -n "$d" ] && rm -rf "$d"; done
}
trap cleanup EXIT

# run_one NAME SCENARIO TARGET PID AUTH_ARGS...
run_one() {
  local name=$1 s=$2 target=$3 pid=$4; shift 4
  local common=(--target "$target" --pid "$pid" --quiet "$@")
  echo "== $name: $s ($(uptime | sed 's/.*load/load/'))"
  case $s in
    qos0|qos1)
      "$LOAD" mqtt-pubsub "${common[@]}" --publishers "$PAIRS" --subscribers "$PAIRS" \
        --layout one-to-one --qos "${s#qos}" --payload "$PAYLOAD" --duration "$DURATION" \
        --out "$OUT/$name-$s.json" ;;
    qos0r)
      "$LOAD" mqtt-pubsub "${common[@]}" --publishers "$PAIRS" --subscribers "$PAIRS" \
        --layout one-to-one --qos 0 --payload "$PAYLOAD" --rate "$RATE" --duration "$DURATION" \
        --out "$OUT/$name-$s.json" ;;
    fanout)
      "$LOAD" mqtt-pubsub "${common[@]}" --publishers 1 --subscribers "$FANOUT" \
        --layout fan-out --qos 0 --payload "$PAYLOAD" --rate "$FANOUT_RATE" \
        --duration "$DURATION" --connect-concurrency 32 --out "$OUT/$name-$s.json" ;;
    conn)
      "$LOAD" mqtt-conn "${common[@]}" --count "$CONNS" --rate "$CONN_RATE" \
        --duration "$DURATION" --connect-concurrency 32 \
        --out "$OUT/$name-$s.json" ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
}

# Each scenario gets a freshly started broker, so no run inherits another's
# heap (RSS per connection is only meaningful from a fresh start), and the
# two brokers alternate so that background load hits both alike.
PETREL=target/release/petrel
start_petrel() {
  PDIR=$(mktemp -d /tmp/petrel-bench.XXXXXX)
  DIRS+=("$PDIR")
  printf '%s\n' "data_dir = \"$PDIR/data\"" 'hosts = ["localhost"]' '' \
    '[[listen]]' 'module = "mqtt"' 'ip = "127.0.0.1"' 'port = 0' '' \
    '[[listen]]' 'module = "http"' 'ip = "127.0.0.1"' 'port = 0' > "$PDIR/petrel.toml"
  "$PETREL" ctl --config "$PDIR/petrel.toml" register bench localhost bench-password >/dev/null
  "$PETREL" ctl --config "$PDIR/petrel.toml" oauth_issue_token bench@localhost 86400 sasl_auth > "$PDIR/tokens.txt"
  RUST_LOG=warn "$PETREL" serve --config "$PDIR/petrel.toml" > "$PDIR/stdout" 2> "$PDIR/stderr" &
  BPID=$!
  PIDS+=("$BPID")
  for _ in $(seq 100); do grep -q '^ready' "$PDIR/stdout" 2>/dev/null && break; sleep 0.1; done
  grep -q '^ready' "$PDIR/stdout" || { echo "petrel did not start:" >&2; cat "$PDIR/stderr" >&2; exit 1; }
  BTARGET=$(awk '$1=="listening" && $2=="mqtt" {print $3; exit}' "$PDIR/stdout")
  AUTH=(--auth x-oauth2 --tokens "$PDIR/tokens.txt")
}

MOSQ=$(command -v mosquitto || ls /usr/sbin/mosquitto 2>/dev/null || true)
start_mosquitto() {
  MDIR=$(mktemp -d /tmp/mosquitto-bench.XXXXXX)
  DIRS+=("$MDIR")
  MPORT=$(free_port)
  printf '%s\n' "listener $MPORT 127.0.0.1" 'allow_anonymous true' 'persistence false' \
    'log_dest none' 'max_queued_messages 1000000' 'max_queued_bytes 0' \
    'max_connections -1' > "$MDIR/mosquitto.conf"
  chmod 755 "$MDIR"; chmod 644 "$MDIR/mosquitto.conf"
  "$MOSQ" -c "$MDIR/mosquitto.conf" > "$MDIR/log" 2>&1 &
  BPID=$!
  PIDS+=("$BPID")
  sleep 0.5
  kill -0 "$BPID" || { echo "mosquitto did not start:" >&2; cat "$MDIR/log" >&2; exit 1; }
  BTARGET=127.0.0.1:$MPORT
  AUTH=(--auth none)
}

stop_broker() {
  kill "$BPID" 2>/dev/null || true
  wait "$BPID" 2>/dev/null || true
  sleep 1
}

if [ -n "$MOSQ" ]; then
  echo "petrel: X-OAUTH2 token login; mosquitto: $("$MOSQ" -h 2>/dev/null | head -1), anonymous"
else
  echo "SKIPPED mosquitto: not installed (apt-get install mosquitto)"
fi
for s in $SCENARIOS; do
  start_petrel
  run_one petrel "$s" "$BTARGET" "$BPID" "${AUTH[@]}"
  stop_broker
  if [ -n "$MOSQ" ]; then
    start_mosquitto
    run_one mosquitto "$s" "$BTARGET" "$BPID" "${AUTH[@]}"
    stop_broker
  fi
done

# --- ejabberd ---------------------------------------------------------------
if command -v ejabberdctl >/dev/null 2>&1; then
  echo "SKIPPED ejabberd: xmpp-login / xmpp-chat exist but are not wired in here yet (see BENCHMARKS.md)"
else
  echo "SKIPPED ejabberd: not installed (apt-get install ejabberd)"
fi

# --- Ratios -----------------------------------------------------------------
python3 - "$OUT" $SCENARIOS <<'PY' | tee "$OUT/summary.txt"
import json, os, sys
out, scenarios = sys.argv[1], sys.argv[2:]
def load(name, s):
    p = os.path.join(out, f"{name}-{s}.json")
    return json.load(open(p)) if os.path.exists(p) else None
def proc(r, role):
    return next((p for p in r.get("processes", []) if p["role"] == role), {})
def broker(r):
    return proc(r, "broker")
rows = []
for s in scenarios:
    p, m = load("petrel", s), load("mosquitto", s)
    if p is None:
        continue
    if s == "conn":
        figs = [
            ("connects/s", lambda r: r["connects"]["per_s"], "higher"),
            ("connect p99 µs", lambda r: r["connects"]["latency"]["p99_us"], "lower"),
            ("failed", lambda r: r["connects"]["failed"], "lower"),
            ("RSS bytes/conn", lambda r: (r["memory"] or {}).get("bytes_per_connection", 0), "lower"),
            ("broker cores used", lambda r: broker(r).get("cpu_cores_used", 0), "-"),
        ]
    else:
        figs = [
            ("received msgs/s", lambda r: r["messages"]["received_per_s"], "higher"),
            ("sent msgs/s", lambda r: r["messages"]["sent_per_s"], "higher"),
            ("lost", lambda r: r["messages"]["lost"], "lower"),
            ("latency p50 µs", lambda r: r["messages"]["latency"]["p50_us"], "lower"),
            ("latency p99 µs", lambda r: r["messages"]["latency"]["p99_us"], "lower"),
            ("broker cores used", lambda r: broker(r).get("cpu_cores_used", 0), "-"),
            ("broker CPU µs/msg", lambda r: broker(r).get("cpu_s", 0) * 1e6 / max(r["messages"]["received"], 1), "lower"),
            ("generator cores", lambda r: proc(r, "generator").get("cpu_cores_used", 0), "-"),
        ]
    for label, f, better in figs:
        pv = f(p)
        mv = f(m) if m else None
        ratio = (pv / mv) if (mv not in (None, 0)) else None
        rows.append((s, label, pv, mv, ratio, better))
print(f"{'scenario':<8} {'figure':<18} {'petrel':>14} {'mosquitto':>14} {'petrel/mosq':>12}  better")
for s, label, pv, mv, ratio, better in rows:
    fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}")
    r = "-" if ratio is None else f"{ratio:.2f}x"
    print(f"{s:<8} {label:<18} {fmt(pv):>14} {fmt(mv):>14} {r:>12}  {better}")
print(f"\nreports: {out}")
PY
