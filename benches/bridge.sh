#!/usr/bin/env bash
# The MQTT ⇄ XMPP bridge under load (issue 16), on loopback: a freshly
# started Petrel per scenario with one bridge rule, and beside it Petrel's
# plain MQTT QoS 1 and XMPP chat with as many pairs, for the ratios.
#
#   bash benches/bridge.sh                          # defaults below
#   PAIRS=10 DURATION=5 bash benches/bridge.sh      # smaller
#   RATE=50 bash benches/bridge.sh                  # 50 msgs/s per pair
#                                                   # (default: as fast as
#                                                   # the window allows)
#   SCENARIOS="bridge mqtt" bash benches/bridge.sh  # a subset
#   QOS=0 SCENARIOS=bridge bash benches/bridge.sh   # MQTT publishes at QoS 0
#                                                   # (no store barrier before
#                                                   # an acknowledgement)
#   PETREL=/path/to/petrel SKIP_BUILD=1 bash benches/bridge.sh
#   PERF=1 SCENARIOS=bridge bash benches/bridge.sh  # also `perf record -g` of
#                                                   # the broker: $OUT/<s>.perf.data
#                                                   # (PERF_ARGS="-F 99 --call-graph dwarf"
#                                                   # for call chains: no frame pointers)
#
# Scenarios (the generator's, `cargo bench --bench load -- --help`):
#   bridge       PAIRS MQTT publishers, each on bench/<i>/data at QOS →
#                PAIRS XMPP sessions, each subscribed to node bench/<i>/data
#   bridge-back  PAIRS XMPP sessions publishing items to bench/<i>/data (at
#                most INFLIGHT unanswered) → PAIRS MQTT subscribers
#   mqtt         mqtt-pubsub, PAIRS publishers → PAIRS subscribers one to
#                one, QOS (the bridge's MQTT side alone)
#   xchat        xmpp-chat, PAIRS pairs of sessions (the XMPP side alone;
#                each session sends too, so twice the senders)
# The rule (written to $OUT/petrel.toml):
#   [[bridge.rule]] mqtt = "bench/+/data", node = "bench/{1}/data",
#   direction = "both", qos = 1, retain = true, access = "open",
#   publishers = the PAIRS accounts (bridge-back publishes as them).
# Pair i logs in as user<i>@localhost on both sides (tokens over
# MQTT 5 and XMPP X-OAUTH2), one token per account (petrel ctl, offline).
# Reports (JSON + SVG per run) and summary.txt go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
PAIRS=${PAIRS:-100}
PAYLOAD=${PAYLOAD:-64}
INFLIGHT=${INFLIGHT:-64}
RATE=${RATE:-}
QOS=${QOS:-1}
SCENARIOS=${SCENARIOS:-"bridge bridge-back mqtt xchat"}
OUT=${OUT:-target/load/bridge-$(date +%s)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

[ -n "${SKIP_BUILD:-}" ] || cargo build --release --bin petrel
if [ -z "${LOAD:-}" ]; then
  . benches/load-binary.sh
fi
PETREL=${PETREL:-target/release/petrel}
USER_PATTERN='user%d@localhost'
PASSWORD=bench-password

. benches/procs.sh

# Accounts: xmpp-chat logs in 2 × PAIRS sessions, one account each.
NUSERS=$((2 * PAIRS))

# The accounts and tokens are made once (offline), and each scenario's
# server starts on a copy of that data directory.
SEED=$(mktemp -d /tmp/petrel-bridge-seed.XXXXXX)
DIRS+=("$SEED")
write_config() {  # DIR
  {
    printf '%s\n' "data_dir = \"$1/data\"" 'hosts = ["localhost"]' '' \
      '[[bridge.rule]]' 'mqtt = "bench/+/data"' 'node = "bench/{1}/data"' \
      'direction = "both"' 'qos = 1' 'retain = true' 'access = "open"'
    printf 'publishers = ['
    for ((i = 0; i < PAIRS; i++)); do
      printf '%s"%s"' "$([ "$i" -gt 0 ] && echo ', ')" "${USER_PATTERN//%d/$i}"
    done
    printf ']\n\n'
    printf '%s\n' '[[listen]]' 'module = "mqtt"' 'ip = "127.0.0.1"' 'port = 0' '' \
      '[[listen]]' 'module = "c2s"' 'ip = "127.0.0.1"' 'port = 0' '' \
      '[[listen]]' 'module = "http"' 'ip = "127.0.0.1"' 'port = 0' '' \
      '[[listen]]' 'module = "metrics"' 'ip = "127.0.0.1"' 'port = 0'
  } > "$1/petrel.toml"
}
write_config "$SEED"
cp "$SEED/petrel.toml" "$OUT/petrel.toml"
t0=$(date +%s%N)
: > "$SEED/tokens.txt"
for ((i = 0; i < NUSERS; i++)); do
  user=${USER_PATTERN//%d/$i}
  "$PETREL" ctl --config "$SEED/petrel.toml" register "${user%@*}" "${user#*@}" "$PASSWORD" >/dev/null
  "$PETREL" ctl --config "$SEED/petrel.toml" oauth_issue_token "$user" 86400 sasl_auth >> "$SEED/tokens.txt"
done
echo "petrel: $NUSERS users and tokens (petrel ctl, offline) in $((($(date +%s%N) - t0) / 1000000)) ms"

start_petrel() {
  PDIR=$(mktemp -d /tmp/petrel-bridge.XXXXXX)
  DIRS+=("$PDIR")
  cp -a "$SEED/data" "$PDIR/data"
  write_config "$PDIR"
  RUST_LOG=warn "$PETREL" serve --config "$PDIR/petrel.toml" > "$PDIR/stdout" 2> "$PDIR/stderr" &
  BPID=$!
  PIDS+=("$BPID")
  for _ in $(seq 100); do grep -q '^ready' "$PDIR/stdout" 2>/dev/null && break; sleep 0.1; done
  grep -q '^ready' "$PDIR/stdout" || { echo "petrel did not start:" >&2; cat "$PDIR/stderr" >&2; exit 1; }
  BMQTT=$(awk '$1=="listening" && $2=="mqtt" {print $3; exit}' "$PDIR/stdout")
  BC2S=$(awk '$1=="listening" && $2=="c2s" {print $3; exit}' "$PDIR/stdout")
  BMETRICS=$(awk '$1=="listening" && $2=="metrics" {print $3; exit}' "$PDIR/stdout")
}

# The store thread's work over a run, from the broker's Prometheus metrics:
# write batches applied and commits (sled flush, what a QoS 1
# acknowledgement waits for), how many and how long on average.
store_figures() {  # SCENARIO
  curl -s "http://$BMETRICS/metrics" > "$OUT/$1.metrics" || return 0
  python3 - "$OUT/$1.metrics" "$1" <<'PY'
import re, sys
text, s = open(sys.argv[1]).read(), sys.argv[2]
def val(name, op):
    m = re.search(rf'^\w*{name}\{{op="{op}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0
parts = []
for op in ("write", "commit"):
    n = val("store_operation_duration_seconds_count", op)
    t = val("store_operation_duration_seconds_sum", op)
    parts.append(f"{op} {n:,.0f} × {1e3 * t / max(n, 1):.2f} ms = {t:.2f} s")
print(f"-- store ({s}): " + ", ".join(parts))
PY
}

stop_petrel() {
  kill "$BPID" 2>/dev/null || true
  for _ in $(seq 100); do alive "$BPID" || break; sleep 0.1; done
  alive "$BPID" && { echo "petrel $BPID ignored SIGTERM for 10 s: SIGKILL" >&2; kill -9 "$BPID" 2>/dev/null || true; }
  wait "$BPID" 2>/dev/null || true
  if [ -s "$PDIR/stderr" ]; then
    echo "-- petrel stderr ($1):"; tail -5 "$PDIR/stderr"
  fi
  PIDS=()
  sleep 1
}

NOTES=()
run_one() {  # SCENARIO
  local s=$1
  local common=(--pid "$BPID" --quiet --auth x-oauth2 --user-pattern "$USER_PATTERN"
    --tokens "$SEED/tokens.txt" --payload "$PAYLOAD" --inflight "$INFLIGHT"
    --duration "$DURATION" ${RATE:+--rate "$RATE"} --out "$OUT/$s.json")
  # bridge-back: the MQTT subscriptions' QoS (the rule sends at QoS 1).
  [ "$s" = xchat ] || common+=(--qos "$QOS")
  echo "== $s ($(uptime | sed 's/.*load/load/'))"
  case $s in
    bridge|bridge-back)
      "$LOAD" "$s" "${common[@]}" --target "$BMQTT" --xmpp-target "$BC2S" \
        --users "$NUSERS" --pairs "$PAIRS" ;;
    mqtt)
      "$LOAD" mqtt-pubsub "${common[@]}" --target "$BMQTT" \
        --users "$NUSERS" --publishers "$PAIRS" --subscribers "$PAIRS" --layout one-to-one ;;
    xchat)
      "$LOAD" xmpp-chat "${common[@]}" --target "$BC2S" --users "$NUSERS" --pairs "$PAIRS" ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac || NOTES+=("FAILED $s: the generator exited with $?")
}

for s in $SCENARIOS; do
  start_petrel
  PERF_PID=
  if [ -n "${PERF:-}" ]; then
    # Samples of the broker's threads over the send phase (after the logins).
    # shellcheck disable=SC2086
    (sleep 1; exec perf record ${PERF_ARGS:--F 499 -g} -p "$BPID" -o "$OUT/$s.perf.data" -- sleep "$((DURATION - 2))") \
      > "$OUT/$s.perf.log" 2>&1 &
    PERF_PID=$!
  fi
  run_one "$s"
  [ -z "$PERF_PID" ] || wait "$PERF_PID" || true
  store_figures "$s" | tee -a "$OUT/store.txt"
  stop_petrel "$s"
done
printf '%s\n' "${NOTES[@]:-}" > "$OUT/notes.txt"

python3 - "$OUT" $SCENARIOS <<'PY' | tee "$OUT/summary.txt"
import json, os, sys
out, scenarios = sys.argv[1], sys.argv[2:]
def load(s):
    p = os.path.join(out, f"{s}.json")
    return json.load(open(p)) if os.path.exists(p) else None
def proc(r, role):
    return next((p for p in r.get("processes", []) if p.get("role") == role), {})
rows = []
for s in scenarios:
    r = load(s)
    if not r or not r.get("messages"):
        continue
    m = r["messages"]
    b = proc(r, "broker")
    rows.append((s, m["received_per_s"], m["sent"], m["acked"], m["received"], m["lost"],
                 m["duplicates"], m["latency"]["p50_us"], m["latency"]["p99_us"],
                 m["ack_latency"]["p50_us"] if m["ack_latency"]["count"] else None,
                 b.get("cpu_cores_used"), b.get("cpu_s", 0) * 1e6 / max(m["received"], 1),
                 proc(r, "generator").get("cpu_cores_used")))
fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}")
print(f"{'scenario':<12} {'recv msg/s':>11} {'sent':>9} {'acked':>9} {'received':>9} {'lost':>5} "
      f"{'dup':>4} {'p50 µs':>8} {'p99 µs':>8} {'ack p50':>8} {'broker cores':>12} "
      f"{'µs CPU/msg':>10} {'gen cores':>9}")
for row in rows:
    s, rate, sent, acked, rx, lost, dup, p50, p99, ack, cores, per, gen = row
    print(f"{s:<12} {fmt(rate):>11} {sent:>9} {acked:>9} {rx:>9} {lost:>5} {dup:>4} "
          f"{fmt(p50):>8} {fmt(p99):>8} {fmt(ack):>8} {fmt(cores):>12} {fmt(per):>10} {fmt(gen):>9}")
by = {r[0]: r for r in rows}
if "mqtt" in by:
    for s in ("bridge", "bridge-back"):
        if s in by:
            print(f"{s} / mqtt: throughput {by[s][1] / by['mqtt'][1]:.3f}x, "
                  f"p50 latency {by[s][7] / by['mqtt'][7]:.1f}x")
store = os.path.join(out, "store.txt")
if os.path.exists(store):
    print(open(store).read().rstrip())
notes = os.path.join(out, "notes.txt")
if os.path.exists(notes) and open(notes).read().strip():
    print(open(notes).read().rstrip())
print(f"\nreports: {out}")
PY
