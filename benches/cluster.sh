#!/usr/bin/env bash
# A cluster of three Petrel nodes against one node, on loopback, with the
# same load generator: the MQTT clients are spread over the nodes
# (`--target a,b,c`: subscriber i on node i mod 3, publisher i on the node
# after it, so every message crosses nodes through NATS).
#
#   bash benches/cluster.sh                          # everything below
#   TOPOLOGIES="sled n3" MODES=rate bash benches/cluster.sh
#   PETREL=/path/to/petrel SKIP_BUILD=1 bash benches/cluster.sh
#
# Topologies (each with fresh data, services and nodes):
#   sled  one node, the embedded store (what `petrel serve` runs by default)
#   n1    one node on PostgreSQL + NATS: a cluster of one
#   n3    three nodes on one PostgreSQL + one NATS
# Modes (run in this order on each topology):
#   rate  mqtt-pubsub one-to-one, PAIRS pairs, QoS 0 then QoS 1, RATE msgs/s
#         in all, RATE/PAIRS per publisher (an offered load below
#         saturation: latency and CPU per message)
#   flat  the same, publishers as fast as TCP and PUBACKs take them
#         (QoS 0 then 1: the highest throughput)
#   persist  as rate at QoS 1, the subscribers with persistent sessions
#         (Session Expiry 3600 s): every message is stored for its
#         subscriber before the publisher's PUBACK (PostgreSQL or sled writes)
#   conn  mqtt-conn: CONNS idle token-authenticated connections spread over
#         the nodes, held DURATION s: RSS per connection on each node
# Besides the generator's report, every run records the CPU seconds of each
# node, of nats-server and of PostgreSQL (postmaster and its backends), each
# node's RSS (the peak sampled while the run holds its connections), and the
# PostgreSQL transactions committed (pg_stat_database.xact_commit).
# Needs PostgreSQL's server programs (Debian `postgresql`) and `nats-server`.
# Everything runs on 127.0.0.1 with free ports and throw-away directories.
# Reports (JSON + SVG per run), per-run process figures and summary.txt go
# to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
PAIRS=${PAIRS:-6}
PAYLOAD=${PAYLOAD:-64}
RATE=${RATE:-10000}
CONNS=${CONNS:-9000}
CONN_RATE=${CONN_RATE:-2000}
TOPOLOGIES=${TOPOLOGIES:-"sled n1 n3"}
MODES=${MODES:-"rate persist flat conn"}
OUT=${OUT:-target/load/cluster-$(date +%s)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files allowed: $(ulimit -n)"

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL's server programs are missing (apt-get install postgresql)" >&2; exit 1; }
command -v nats-server >/dev/null || { echo "nats-server is missing (apt-get install nats-server)" >&2; exit 1; }

[ -n "${SKIP_BUILD:-}" ] || cargo build --release --bin petrel
. benches/load-binary.sh
PETREL=${PETREL:-target/release/petrel}
TICK=$(getconf CLK_TCK)

. benches/procs.sh
PG_STOP=()
# The nodes and NATS first, then PostgreSQL (before its directory goes).
cleanup_cluster() {
  stop_pids
  for c in "${PG_STOP[@]:-}"; do [ -n "$c" ] && eval "$c" >/dev/null 2>&1 || true; done
  PG_STOP=()
  remove_dirs
}
trap cleanup_cluster EXIT

# initdb refuses to run as root: then PostgreSQL runs as the postgres user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start_services() {  # DIR: PostgreSQL (PGPORT, PGPID) and NATS (NATSPORT, NATSPID)
  local dir=$1
  mkdir -p "$dir/pg"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$dir/pg"
  PGPORT=$(free_port)
  as_pg "$PG_BIN/initdb" -A trust -U petrel -E UTF8 -D "$dir/pg/data" >/dev/null
  # PostgreSQL's defaults otherwise (fsync and synchronous_commit on): an
  # acknowledgement waits for a durable commit, as on a real deployment.
  as_pg "$PG_BIN/pg_ctl" -w -t 60 -D "$dir/pg/data" -l "$dir/pg/log" \
    -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $dir/pg -c max_connections=200" start >/dev/null
  PG_STOP+=("as_pg $PG_BIN/pg_ctl -D $dir/pg/data -m fast stop")
  PGPID=$(head -1 "$dir/pg/data/postmaster.pid")
  as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U petrel petrel
  NATSPORT=$(free_port)
  nats-server -a 127.0.0.1 -p "$NATSPORT" > "$dir/nats.log" 2>&1 &
  NATSPID=$!
  PIDS+=("$NATSPID")
  for _ in $(seq 100); do grep -q "Server is ready" "$dir/nats.log" && break; sleep 0.1; done
  grep -q "Server is ready" "$dir/nats.log" || { echo "nats-server did not start:" >&2; cat "$dir/nats.log" >&2; exit 1; }
}

pg_commits() {
  as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U petrel -d petrel -Atc \
    "select xact_commit from pg_stat_database where datname = 'petrel'"
}

# CPU ticks of a process (user + system, and of its waited-for children).
ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# PostgreSQL: the postmaster, the children it has reaped, and those alive.
pg_ticks() {
  local t c
  t=$(ticks "$PGPID")
  for c in $(ps -o pid= --ppid "$PGPID"); do t=$((t + $(ticks "$c"))); done
  echo "$t"
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", a / b }'; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

node_config() {  # DIR NAME: a node's config (sled when PGPORT is empty)
  local dir=$1 name=$2
  mkdir -p "$dir"
  {
    echo "data_dir = \"$dir/data\""
    echo 'hosts = ["localhost"]'
    if [ -n "${PGPORT:-}" ]; then
      echo "store = \"postgres://petrel@127.0.0.1:$PGPORT/petrel\""
      printf '\n[cluster]\nnats = "nats://127.0.0.1:%s"\nnode = "%s"\n' "$NATSPORT" "$name"
    fi
    printf '\n[[listen]]\nmodule = "mqtt"\nip = "127.0.0.1"\nport = 0\n'
    printf '\n[[listen]]\nmodule = "http"\nip = "127.0.0.1"\nport = 0\n'
  } > "$dir/petrel.toml"
}

start_node() {  # DIR: appends to NODE_PIDS and TARGETS
  local dir=$1 pid addr
  RUST_LOG=warn "$PETREL" serve --config "$dir/petrel.toml" > "$dir/stdout" 2> "$dir/stderr" &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 300); do grep -q '^ready' "$dir/stdout" 2>/dev/null && break; sleep 0.1; done
  grep -q '^ready' "$dir/stdout" || { echo "petrel ($dir) did not start:" >&2; cat "$dir/stderr" >&2; exit 1; }
  addr=$(awk '$1=="listening" && $2=="mqtt" {print $3; exit}' "$dir/stdout")
  NODE_PIDS+=("$pid")
  TARGETS+=("$addr")
}

stop_all() {
  cleanup_cluster
  PGPORT=; NATSPORT=; PGPID=; NATSPID=
}

# measure TOPOLOGY MODE-NAME GENERATOR-ARGS...: one generator run, with the
# processes' CPU and RSS around it, into $OUT/TOPOLOGY-MODE.{json,procs.json}
measure() {
  local topo=$1 name=$2; shift 2
  local i before=() after=() peak=() rss0=() nats0=0 pg0=0 c0=0 t0 t1 sampler
  echo "== $topo $name ($(uptime | sed 's/.*load/load/'))"
  for i in "${!NODE_PIDS[@]}"; do
    before[$i]=$(ticks "${NODE_PIDS[$i]}")
    rss0[$i]=$(rss_kib "${NODE_PIDS[$i]}")
  done
  if [ -n "${PGPORT:-}" ]; then nats0=$(ticks "$NATSPID"); pg0=$(pg_ticks); c0=$(pg_commits); fi
  # Peak RSS of each node, sampled while the generator runs.
  (
    declare -A max
    while :; do
      for p in "${NODE_PIDS[@]}"; do
        r=$(rss_kib "$p"); [ "${r:-0}" -gt "${max[$p]:-0}" ] && max[$p]=$r
      done
      for p in "${NODE_PIDS[@]}"; do echo "$p ${max[$p]:-0}"; done > "$OUT/.peak.tmp"
      mv "$OUT/.peak.tmp" "$OUT/.peak"
      sleep 0.25
    done
  ) &
  sampler=$!
  t0=$(date +%s%N)
  "$LOAD" "$@" --target "$(IFS=,; echo "${TARGETS[*]}")" --pid "${NODE_PIDS[0]}" --quiet \
    --out "$OUT/$topo-$name.json" || echo "FAILED $topo $name: the generator exited with $?" | tee -a "$OUT/notes.txt"
  t1=$(date +%s%N)
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  local nodes_json="" sep=""
  for i in "${!NODE_PIDS[@]}"; do
    local p=${NODE_PIDS[$i]} pk
    pk=$(awk -v p="$p" '$1==p {print $2}' "$OUT/.peak" 2>/dev/null)
    nodes_json+="$sep{\"pid\":$p,\"cpu_s\":$(div $(($(ticks "$p") - before[i])) "$TICK"),\"rss_start_kib\":${rss0[$i]},\"rss_peak_kib\":${pk:-0}}"
    sep=,
  done
  local nats_s=null pg_s=null commits=null
  if [ -n "${PGPORT:-}" ]; then
    nats_s=$(div $(($(ticks "$NATSPID") - nats0)) "$TICK")
    pg_s=$(div $(($(pg_ticks) - pg0)) "$TICK")
    commits=$(($(pg_commits) - c0))
  fi
  echo "{\"wall_s\":$(div $((t1 - t0)) 1000000000),\"nodes\":[$nodes_json],\"nats_cpu_s\":$nats_s,\"pg_cpu_s\":$pg_s,\"pg_commits\":$commits}" \
    > "$OUT/$topo-$name.procs.json"
}

run_topology() {
  local topo=$1 n dir i m
  case $topo in sled) n=1 ;; n1) n=1 ;; n3) n=3 ;; *) echo "unknown topology $topo" >&2; exit 2 ;; esac
  dir=$(mktemp -d /tmp/petrel-cluster-bench.XXXXXX)
  chmod 755 "$dir"
  DIRS+=("$dir")
  NODE_PIDS=(); TARGETS=()
  [ "$topo" = sled ] || start_services "$dir"
  for ((i = 1; i <= n; i++)); do node_config "$dir/n$i" "n$i"; done
  # One account and a token per connection, issued offline on node 1's
  # store (the shared database in a cluster: every node accepts them).
  "$PETREL" ctl --config "$dir/n1/petrel.toml" register bench localhost bench-password >/dev/null
  "$PETREL" ctl --config "$dir/n1/petrel.toml" oauth_issue_token bench@localhost 86400 sasl_auth > "$dir/tokens.txt"
  for ((i = 1; i <= n; i++)); do start_node "$dir/n$i"; done
  local auth=(--auth x-oauth2 --tokens "$dir/tokens.txt")
  for m in $MODES; do
    case $m in
      rate)
        for q in 0 1; do
          measure "$topo" "qos$q-rate" mqtt-pubsub "${auth[@]}" --publishers "$PAIRS" \
            --subscribers "$PAIRS" --layout one-to-one --qos "$q" --payload "$PAYLOAD" \
            --rate "$(div "$RATE" "$PAIRS")" --duration "$DURATION"
        done ;;
      persist)
        measure "$topo" qos1-persist mqtt-pubsub "${auth[@]}" --publishers "$PAIRS" \
          --subscribers "$PAIRS" --layout one-to-one --qos 1 --payload "$PAYLOAD" \
          --rate "$(div "$RATE" "$PAIRS")" --duration "$DURATION" --session-expiry 3600 ;;
      flat)
        for q in 0 1; do
          measure "$topo" "qos$q-flat" mqtt-pubsub "${auth[@]}" --publishers "$PAIRS" \
            --subscribers "$PAIRS" --layout one-to-one --qos "$q" --payload "$PAYLOAD" \
            --duration "$DURATION"
        done ;;
      conn)
        measure "$topo" conn mqtt-conn "${auth[@]}" --count "$CONNS" --rate "$CONN_RATE" \
          --duration "$DURATION" --connect-concurrency 32 ;;
      *) echo "unknown mode $m" >&2; exit 2 ;;
    esac
  done
  for ((i = 1; i <= n; i++)); do
    if grep -qv '^$' "$dir/n$i/stderr"; then
      echo "-- node n$i ($topo) said on stderr:" | tee -a "$OUT/notes.txt"
      sed -E 's/^[0-9T:.-]+Z +//' "$dir/n$i/stderr" | cut -c1-160 | sort | uniq -c | sort -rn \
        | head -5 | tee -a "$OUT/notes.txt"
    fi
  done
  stop_all
}

for t in $TOPOLOGIES; do run_topology "$t"; done

python3 - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, os, sys, glob
out = sys.argv[1]
TOPOS = ["sled", "n1", "n3"]
RUNS = ["qos0-rate", "qos1-rate", "qos1-persist", "qos0-flat", "qos1-flat", "conn"]
def load(topo, run, ext):
    p = os.path.join(out, f"{topo}-{run}.{ext}")
    return json.load(open(p)) if os.path.exists(p) else None
fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}")
print(f"{'run':<10} {'topology':<6} {'recv/s':>10} {'lost':>6} {'p50 µs':>8} {'p99 µs':>8} "
      f"{'node CPU µs/msg':>16} {'NATS µs/msg':>12} {'PG µs/msg':>10} {'commits/msg':>12} "
      f"{'node cores':>18}")
for run in RUNS:
    for topo in TOPOS:
        r, p = load(topo, run, "json"), load(topo, run, "procs.json")
        if not r or not p:
            continue
        wall = p["wall_s"] or 1
        cores = "/".join(f"{n['cpu_s'] / wall:.2f}" for n in p["nodes"])
        node_s = sum(n["cpu_s"] for n in p["nodes"])
        if run == "conn":
            c = r["connects"]
            per_node = c["ok"] / len(p["nodes"])
            kib = [(n["rss_peak_kib"] - n["rss_start_kib"]) for n in p["nodes"]]
            bpc = "/".join(f"{k * 1024 / per_node:,.0f}" for k in kib) if per_node else "-"
            # The generator's own figure for node 1: RSS at the end of the
            # hold less RSS before the first connect, over node 1's share.
            mem = r.get("memory") or {}
            held = ((mem["rss_held_bytes"] - mem["rss_before_bytes"]) / per_node
                    if mem and per_node else None)
            print(f"{run:<10} {topo:<6} connects {c['ok']:,} ok {c['failed']} failed, "
                  f"{c['per_s']:,.0f}/s, p99 {c['latency']['p99_us']:,.0f} µs; "
                  f"RSS B/conn held on node 1 {fmt(held)}, peak per node {bpc}; "
                  f"node cores {cores}")
            continue
        m = r["messages"]
        n = m["received"] or 1
        per = lambda s: None if s is None else s * 1e6 / n
        cm = None if p["pg_commits"] is None else p["pg_commits"] / n
        print(f"{run:<10} {topo:<6} {fmt(m['received_per_s']):>10} {m['lost']:>6} "
              f"{fmt(m['latency']['p50_us']):>8} {fmt(m['latency']['p99_us']):>8} "
              f"{fmt(per(node_s)):>16} {fmt(per(p['nats_cpu_s'])):>12} {fmt(per(p['pg_cpu_s'])):>10} "
              f"{fmt(cm):>12} {cores:>18}")
notes = os.path.join(out, "notes.txt")
if os.path.exists(notes):
    print()
    print(open(notes).read().rstrip())
print(f"\nreports: {out}")
PY
