#!/usr/bin/env bash
# XMPP login cost by method, Petrel alone, same run: SASL2 + FAST + Bind 2
# (one round trip), X-OAUTH2 (SASL, restart, bind: three) and SCRAM-SHA-256
# (four), each over plain TCP and direct TLS. Every round starts a fresh
# release server with USERS accounts (and a token each), runs COUNT
# xmpp-login logins (CONC in progress at once) and records logins/s, the
# latencies and the server's CPU per login; ROUNDS rounds alternate the
# methods, and the table shows each method's median round.
# Usage: benches/xmpp-logins.sh   (env: COUNT ROUNDS USERS CONC OUT SKIP_BUILD)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-20000}
ROUNDS=${ROUNDS:-3}
USERS=${USERS:-100}
CONC=${CONC:-32}
OUT=${OUT:-target/load/xmpp-logins-$(date +%s)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --bin petrel
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
PETREL=$TARGET_DIR/release/petrel
. benches/load-binary.sh

run() {  # METHOD TRANSPORT ROUND
  local method=$1 transport=$2 round=$3 d pid target
  d=$(mktemp -d /tmp/petrel-logins.XXXXXX)
  # The throttle's in-flight allowance per address (5) would refuse the
  # generator's concurrent password logins from one address: raised here.
  printf '%s\n' "data_dir = \"$d/data\"" 'login_failures_allowed = 100000' \
    '[[listen]]' 'module = "c2s"' 'ip = "127.0.0.1"' 'port = 0' \
    '[[listen]]' 'module = "c2s"' 'ip = "127.0.0.1"' 'port = 0' 'tls = true' > "$d/petrel.toml"
  for ((i = 0; i < USERS; i++)); do
    "$PETREL" ctl --config "$d/petrel.toml" register "user$i" localhost pw >/dev/null
    "$PETREL" ctl --config "$d/petrel.toml" oauth_issue_token "user$i@localhost" 86400 sasl_auth >> "$d/tokens"
  done
  RUST_LOG=warn "$PETREL" serve --config "$d/petrel.toml" > "$d/stdout" 2> "$d/stderr" &
  pid=$!
  for _ in $(seq 100); do grep -q '^ready' "$d/stdout" 2>/dev/null && break; sleep 0.1; done
  grep -q '^ready' "$d/stdout" || { cat "$d/stderr" >&2; exit 1; }
  local tls=()
  if [ "$transport" = tls ]; then
    target=$(awk '$2=="c2s" {print $3}' "$d/stdout" | sed -n 2p); tls=(--tls)
  else
    target=$(awk '$2=="c2s" {print $3}' "$d/stdout" | sed -n 1p)
  fi
  "$LOAD" xmpp-login --target "$target" "${tls[@]}" --pid "$pid" --quiet --auth "$method" \
    --user-pattern 'user%d@localhost' --users "$USERS" --password pw --tokens "$d/tokens" \
    --count "$COUNT" --rate 1000000 --connect-concurrency "$CONC" --duration 1 \
    --out "$OUT/$method-$transport-$round.json" > /dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$d"
}

for ((r = 1; r <= ROUNDS; r++)); do
  for t in plain tls; do
    for m in fast x-oauth2 scram-sha-256; do
      echo "round $r: $m over $t"
      run "$m" "$t" "$r"
    done
  done
done

python3 - "$OUT" "$ROUNDS" <<'PY' | tee "$OUT/summary.txt"
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
print(f"{'method':16} {'transport':9} {'logins/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'server CPU us/login':>20}  (median of {rounds} rounds)")
for t in ["plain", "tls"]:
    for m in ["fast", "x-oauth2", "scram-sha-256"]:
        rows = []
        for r in range(1, rounds + 1):
            j = json.load(open(f"{out}/{m}-{t}-{r}.json"))
            c = j["connects"]
            b = next(p for p in j["processes"] if p["role"] == "broker")
            assert c["failed"] == 0, f"{m} {t}: {c['failed']} failed logins"
            rows.append((c["per_s"], c["latency"]["p50_us"] / 1000, c["latency"]["p99_us"] / 1000, b["cpu_s"] / c["ok"] * 1e6))
        med = sorted(rows)[len(rows) // 2]
        print(f"{m:16} {t:9} {med[0]:9.0f} {med[1]:7.2f} {med[2]:7.2f} {statistics.median(x[3] for x in rows):20.0f}")
PY
