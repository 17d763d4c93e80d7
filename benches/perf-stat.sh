#!/usr/bin/env bash
# Where the broker's CPU goes at a fixed offered load: perf stat (software
# events and syscall tracepoints; this VM exposes no hardware counters) on
# the broker while the generator runs one mqtt-pubsub scenario. Prints
# syscalls, context switches and CPU time per delivered message.
#
#   bash benches/perf-stat.sh petrel|mosquitto QOS RATE_PER_PUBLISHER [PAIRS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
BROKER=$1 QOS=$2 RATE=$3 PAIRS=${4:-4} SECS=${5:-8}
OUT=${OUT:-target/load/perf-$BROKER-qos$QOS-$RATE}
mkdir -p "$OUT"
LOAD=$(cargo bench --no-run --bench load --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "load":
        print(m["executable"])')
DIR=$(mktemp -d /tmp/perf-broker.XXXXXX)
trap 'kill $BPID 2>/dev/null || true; rm -rf "$DIR"' EXIT
case $BROKER in
  petrel)
    printf '%s\n' "data_dir = \"$DIR/data\"" '[[listen]]' 'module = "mqtt"' 'port = 0' > "$DIR/petrel.toml"
    target/release/petrel ctl --config "$DIR/petrel.toml" register bench localhost pw >/dev/null
    target/release/petrel ctl --config "$DIR/petrel.toml" oauth_issue_token bench@localhost 3600 sasl_auth > "$DIR/tokens"
    RUST_LOG=warn target/release/petrel serve --config "$DIR/petrel.toml" > "$DIR/out" 2>&1 &
    BPID=$!
    for _ in $(seq 100); do grep -q '^ready' "$DIR/out" && break; sleep 0.1; done
    TARGET=$(awk '$2=="mqtt" {print $3; exit}' "$DIR/out")
    AUTH=(--auth x-oauth2 --tokens "$DIR/tokens") ;;
  mosquitto)
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    printf '%s\n' "listener $PORT 127.0.0.1" 'allow_anonymous true' 'persistence false' 'log_dest none' \
      'max_queued_messages 1000000' > "$DIR/m.conf"
    chmod 755 "$DIR"; chmod 644 "$DIR/m.conf"
    mosquitto -c "$DIR/m.conf" > "$DIR/out" 2>&1 &
    BPID=$!
    sleep 0.5
    TARGET=127.0.0.1:$PORT
    AUTH=(--auth none) ;;
  *) echo "petrel or mosquitto" >&2; exit 2 ;;
esac
"$LOAD" mqtt-pubsub --target "$TARGET" "${AUTH[@]}" --publishers "$PAIRS" --subscribers "$PAIRS" \
  --qos "$QOS" --rate "$RATE" --duration "$SECS" --pid "$BPID" --quiet --out "$OUT/run.json" > "$OUT/table.txt" &
GEN=$!
sleep 1
perf stat -x, -o "$OUT/perf.csv" -p "$BPID" \
  -e task-clock,context-switches,cpu-migrations,page-faults,raw_syscalls:sys_enter \
  -e syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write \
  -e syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl \
  -e syscalls:sys_enter_futex -- sleep $((SECS - 2))
wait $GEN
cat "$OUT/table.txt"
python3 - "$OUT" "$SECS" <<'PY'
import csv, json, sys
out, secs = sys.argv[1], float(sys.argv[2])
r = json.load(open(f"{out}/run.json"))
rate = r["messages"]["received_per_s"]
window = secs - 2
msgs = rate * window  # delivered messages during the perf window
print(f"\nper delivered message (perf window {window:.0f} s, ~{msgs:,.0f} messages):")
for row in csv.reader(open(f"{out}/perf.csv")):
    if len(row) < 3 or not row[0].strip() or row[0].startswith("#"):
        continue
    try:
        v = float(row[0])
    except ValueError:
        continue
    name = row[2]
    if name == "task-clock":
        print(f"  {'CPU µs':<32} {v * 1000 / msgs:8.2f}   ({v / 1000 / window:.2f} cores)")
    else:
        print(f"  {name:<32} {v / msgs:8.3f}")
PY
