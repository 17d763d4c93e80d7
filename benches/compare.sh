#!/usr/bin/env bash
# Side-by-side load runs on loopback: Petrel, Mosquitto and ejabberd, the same
# generator and scenarios against each — a freshly started broker per
# scenario, the brokers alternating — and a table of ratios at the end. Peers
# that are not installed are skipped with a one-line reason:
#   apt-get install mosquitto ejabberd erlang-p1-oauth2
#
#   bash benches/compare.sh                       # everything, defaults below
#   DURATION=5 CONNS=2000 bash benches/compare.sh # shorter
#   SCENARIOS="qos0 qos1" bash benches/compare.sh # a subset
#   PETREL=/path/to/petrel SKIP_BUILD=1 bash benches/compare.sh
#                                         # another Petrel build
#   PETREL_BASE=/path/to/older/petrel bash benches/compare.sh
#                                         # before/after: the older build runs
#                                         # every scenario too, right after this
#                                         # one, as "petrel-base"
#
# MQTT scenarios (Petrel, Mosquitto, ejabberd's mod_mqtt):
# qos0, qos1 (mqtt-pubsub one-to-one, PAIRS pairs, PAYLOAD bytes,
# publishers as fast as TCP takes them), qos0r (the same at QoS 0 with RATE
# msgs/s per publisher, an offered load below saturation),
# fanout (1 publisher -> FANOUT subscribers, QoS 0, FANOUT_RATE msgs/s),
# conn (mqtt-conn: CONNS idle connections with the broker's RSS before/after),
# storm (mqtt-storm: STORM devices with persistent sessions subscribe, drop at
# once, STORM_QUEUED QoS 1 messages each are queued, all reconnect together
# with at most STORM_CONCURRENCY handshakes at once, waited for STORM_WAIT s;
# Mosquitto runs with persistence on for it), qos1p (qos1 with the
# subscribers' sessions persistent, Session Expiry 3600 s: every message is
# stored for its subscriber before PUBACK; Mosquitto with persistence on).
# XMPP scenarios (Petrel, ejabberd):
# xlogin (xmpp-login: XLOGINS logins, 32 in progress at once, at up to
# XLOGIN_RATE/s (default: as fast as they complete) over XUSERS
# accounts, XAUTH x-oauth2 by default), xchat (xmpp-chat: XPAIRS pairs, user
# 2i with user 2i+1, PAYLOAD bytes, DURATION seconds; XCHAT_RATE and
# XCHAT_COUNT when set).
# ejabberd runs as a private node per scenario (temp config, spool and logs,
# its own node name and cookie, free loopback ports; see start_ejabberd).
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
STORM=${STORM:-19000}
STORM_QUEUED=${STORM_QUEUED:-1}
STORM_CONCURRENCY=${STORM_CONCURRENCY:-256}
STORM_WAIT=${STORM_WAIT:-120}
# Accounts the storm's devices log in as (device i as user i mod
# STORM_USERS): Petrel admits mqtt_max_sessions_per_account (10,000) per
# account, as a fleet spread over accounts would meet it.
STORM_USERS=${STORM_USERS:-4}
RATE=${RATE:-25000}
XLOGINS=${XLOGINS:-20000}
XLOGIN_RATE=${XLOGIN_RATE:-100000}
XUSERS=${XUSERS:-100}
XPAIRS=${XPAIRS:-4}
XAUTH=${XAUTH:-x-oauth2}
XCHAT_RATE=${XCHAT_RATE:-}
XCHAT_COUNT=${XCHAT_COUNT:-}
SCENARIOS=${SCENARIOS:-"qos0 qos0r qos1 qos1p fanout conn storm xlogin xchat"}
OUT=${OUT:-target/load/compare-$(date +%s)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}

# Connections need file descriptors on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files allowed: $(ulimit -n)"

[ -n "${SKIP_BUILD:-}" ] || cargo build --release --bin petrel
. benches/load-binary.sh

USER_PATTERN='user%d@localhost'
PASSWORD=bench-password
NOTES=()
note() { echo "$*"; NOTES+=("$*"); }

is_mqtt() { case $1 in qos0|qos0r|qos1|qos1p|fanout|conn|storm) return 0 ;; *) return 1 ;; esac; }
# Accounts a scenario logs in with (user0 .. userN-1), one token each.
users_for() {
  case $1 in
    xlogin) echo "$XUSERS" ;;
    xchat) echo $((2 * XPAIRS)) ;;
    storm) echo "$STORM_USERS" ;;
    *) echo 1 ;;
  esac
}
gen_name() { case $1 in xlogin) echo xmpp-login ;; xchat) echo xmpp-chat ;; esac; }

. benches/procs.sh

# run_one NAME SCENARIO PID AUTH_ARGS...   (target: $BMQTT or $BC2S)
run_one() {
  local name=$1 s=$2 pid=$3; shift 3
  local target=$BMQTT
  is_mqtt "$s" || target=$BC2S
  local common=(--target "$target" --pid "$pid" --quiet "$@")
  echo "== $name: $s ($(uptime | sed 's/.*load/load/'))"
  case $s in
    qos0|qos1)
      "$LOAD" mqtt-pubsub "${common[@]}" --publishers "$PAIRS" --subscribers "$PAIRS" \
        --layout one-to-one --qos "${s#qos}" --payload "$PAYLOAD" --duration "$DURATION" \
        --out "$OUT/$name-$s.json" ;;
    qos1p)
      "$LOAD" mqtt-pubsub "${common[@]}" --publishers "$PAIRS" --subscribers "$PAIRS" \
        --layout one-to-one --qos 1 --payload "$PAYLOAD" --duration "$DURATION" \
        --session-expiry 3600 --out "$OUT/$name-$s.json" ;;
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
    storm)
      "$LOAD" mqtt-storm "${common[@]}" --count "$STORM" --queued "$STORM_QUEUED" \
        --duration "$STORM_WAIT" --connect-concurrency "$STORM_CONCURRENCY" \
        --out "$OUT/$name-$s.json" ;;
    xlogin)
      "$LOAD" xmpp-login "${common[@]}" --count "$XLOGINS" --rate "$XLOGIN_RATE" \
        --duration "$DURATION" --connect-concurrency 32 --out "$OUT/$name-$s.json" ;;
    xchat)
      "$LOAD" xmpp-chat "${common[@]}" --pairs "$XPAIRS" --payload "$PAYLOAD" \
        --duration "$DURATION" ${XCHAT_RATE:+--rate "$XCHAT_RATE"} \
        ${XCHAT_COUNT:+--count "$XCHAT_COUNT"} --out "$OUT/$name-$s.json" ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac || note "FAILED $name $s: the generator exited with $? (see above)"
}

# How a broker's clients log in for scenario $1: MQTT with an X-OAUTH2 token
# (the username beside it, which ejabberd's mod_mqtt needs and Petrel
# accepts), XMPP with XAUTH over USERS accounts (one token per account).
auth_for() {
  local s=$1 tokens=$2
  if is_mqtt "$s"; then
    AUTH=(--auth x-oauth2 --username-with-token --user-pattern "$USER_PATTERN"
      --users "$(users_for "$s")" --tokens "$tokens")
  else
    AUTH=(--auth "$XAUTH" --user-pattern "$USER_PATTERN" --users "$(users_for "$s")"
      --password "$PASSWORD" --tokens "$tokens")
  fi
}

# Each scenario gets a freshly started broker, so no run inherits another's
# heap (RSS per connection is only meaningful from a fresh start), and the
# brokers alternate so that background load hits them alike.
PETREL=${PETREL:-target/release/petrel}
start_petrel() {  # SCENARIO [BINARY]
  local n i user t0 bin=${2:-$PETREL}
  n=$(users_for "$1")
  PDIR=$(mktemp -d /tmp/petrel-bench.XXXXXX)
  DIRS+=("$PDIR")
  printf '%s\n' "data_dir = \"$PDIR/data\"" 'hosts = ["localhost"]' '' \
    '[[listen]]' 'module = "mqtt"' 'ip = "127.0.0.1"' 'port = 0' '' \
    '[[listen]]' 'module = "c2s"' 'ip = "127.0.0.1"' 'port = 0' '' \
    '[[listen]]' 'module = "http"' 'ip = "127.0.0.1"' 'port = 0' > "$PDIR/petrel.toml"
  t0=$(date +%s%N)
  : > "$PDIR/tokens.txt"
  for ((i = 0; i < n; i++)); do
    user=${USER_PATTERN//%d/$i}
    "$bin" ctl --config "$PDIR/petrel.toml" register "${user%@*}" "${user#*@}" "$PASSWORD" >/dev/null
    "$bin" ctl --config "$PDIR/petrel.toml" oauth_issue_token "$user" 86400 sasl_auth >> "$PDIR/tokens.txt"
  done
  [ "$n" -gt 1 ] && echo "petrel: $n users and tokens (petrel ctl, offline) in $((($(date +%s%N) - t0) / 1000000)) ms"
  RUST_LOG=warn "$bin" serve --config "$PDIR/petrel.toml" > "$PDIR/stdout" 2> "$PDIR/stderr" &
  BPID=$!
  PIDS+=("$BPID")
  for _ in $(seq 100); do grep -q '^ready' "$PDIR/stdout" 2>/dev/null && break; sleep 0.1; done
  grep -q '^ready' "$PDIR/stdout" || { echo "petrel did not start:" >&2; cat "$PDIR/stderr" >&2; exit 1; }
  BMQTT=$(awk '$1=="listening" && $2=="mqtt" {print $3; exit}' "$PDIR/stdout")
  BC2S=$(awk '$1=="listening" && $2=="c2s" {print $3; exit}' "$PDIR/stdout")
  auth_for "$1" "$PDIR/tokens.txt"
}

MOSQ=$(command -v mosquitto || ls /usr/sbin/mosquitto 2>/dev/null || true)
start_mosquitto() {  # [SCENARIO]: storm and qos1p run with persistence on
  MDIR=$(mktemp -d /tmp/mosquitto-bench.XXXXXX)
  DIRS+=("$MDIR")
  MPORT=$(free_port)
  local persistence=('persistence false')
  case ${1:-} in storm|qos1p) persistence=('persistence true' "persistence_location $MDIR/") ;; esac
  printf '%s\n' "listener $MPORT 127.0.0.1" 'allow_anonymous true' "${persistence[@]}" \
    'log_dest none' 'max_queued_messages 1000000' 'max_queued_bytes 0' \
    'max_connections -1' > "$MDIR/mosquitto.conf"
  chmod 755 "$MDIR"; chmod 644 "$MDIR/mosquitto.conf"
  "$MOSQ" -c "$MDIR/mosquitto.conf" > "$MDIR/log" 2>&1 &
  BPID=$!
  PIDS+=("$BPID")
  sleep 0.5
  alive "$BPID" || { echo "mosquitto did not start:" >&2; cat "$MDIR/log" >&2; exit 1; }
  BMQTT=127.0.0.1:$MPORT
  BC2S=
  AUTH=(--auth none)
}

# --- ejabberd ----------------------------------------------------------------
# A private node per scenario, as the current user. Debian's ejabberdctl
# cannot do that: called by root it runs the node as the `ejabberd` user (su),
# and it refuses every other user. So erl is started here with the arguments
# ejabberdctl would pass (ERL_LIBS, EJABBERD_CONFIG_PATH, EJABBERD_LOG_PATH,
# `-mnesia dir`, `-s ejabberd`), plus a node name and cookie of our own and
# Erlang distribution on a free loopback port without epmd (-erl_epmd_port,
# -start_epmd false: what ejabberdctl does for ERL_DIST_PORT), so nothing is
# left behind and nothing listens beyond 127.0.0.1. Accounts and tokens are
# made by one hidden erl node over distribution (ejabberd_auth:try_register
# and ejabberd_oauth:oauth_issue_token, the functions behind `ejabberdctl
# register` and `oauth_issue_token`), 32 at a time.
EJCTL=$(command -v ejabberdctl || ls /usr/sbin/ejabberdctl 2>/dev/null || true)
EJ_ERL=$(command -v erl || true)
EJ_LIBS=
EJ_SKIP=
if [ -z "$EJCTL" ]; then
  EJ_SKIP="not installed (apt-get install ejabberd erlang-p1-oauth2)"
else
  EJ_LIBS=$(sed -n "s/^ERL_LIBS='\\(.*\\)'\$/\\1/p" "$EJCTL" | head -1)
  EJ_LIBS=${EJ_LIBS:-/usr/lib/x86_64-linux-gnu}
  EJ_APP=$(ls "$EJ_LIBS"/ejabberd-*/ebin/ejabberd.app 2>/dev/null | head -1 || true)
  if [ -z "$EJ_ERL" ]; then
    EJ_SKIP="erl not found (it comes with the ejabberd package)"
  elif [ -z "$EJ_APP" ]; then
    EJ_SKIP="no ejabberd.app under $EJ_LIBS (ERL_LIBS of $EJCTL)"
  elif ! compgen -G "/usr/lib/erlang/lib/p1_oauth2-*" >/dev/null \
      && ! compgen -G "$EJ_LIBS/p1_oauth2-*" >/dev/null; then
    EJ_SKIP="erlang-p1-oauth2 is missing (ejabberd's OAuth crashes without it: apt-get install erlang-p1-oauth2)"
  else
    EJ_VSN=$(sed -n 's/.*{vsn, *"\([^"]*\)".*/\1/p' "$EJ_APP" | head -1)
  fi
fi
EJ_COOKIE=cmp$$x$RANDOM$RANDOM
EJ_N=0

# Waits for the node, registers USERS accounts and prints one sasl_auth token
# per account (line i for user i). Parameters come in EJ_* variables.
EJ_PREPARE=$(cat <<'ERL'
Node = list_to_atom(os:getenv("EJ_NODE")),
Users = list_to_integer(os:getenv("EJ_USERS")),
Pattern = os:getenv("EJ_USER_PATTERN"),
Password = list_to_binary(os:getenv("EJ_PASSWORD")),
Fail = fun(Fmt, Args) -> io:format(standard_error, Fmt ++ "~n", Args), halt(1) end,
Wait = fun W(0) -> false;
           W(K) -> case catch rpc:call(Node, ejabberd_admin, status, [], 5000) of
                       {ok, _} -> true;
                       _ -> timer:sleep(100), W(K - 1)
                   end
       end,
Wait(600) orelse Fail("ejabberd node ~p did not answer within 60 s", [Node]),
Jids = [lists:flatten(string:replace(Pattern, "%d", integer_to_list(I), all))
        || I <- lists:seq(0, Users - 1)],
InBatches = fun B([], _F, Acc) -> lists:reverse(Acc);
                B(L, F, Acc) ->
                    {H, T} = lists:split(min(32, length(L)), L),
                    Keys = [F(X) || X <- H],
                    B(T, F, lists:reverse([rpc:yield(K) || K <- Keys], Acc))
            end,
T0 = erlang:monotonic_time(millisecond),
Reg = InBatches(Jids, fun(J) ->
          [U, S] = string:split(J, "@"),
          rpc:async_call(Node, ejabberd_auth, try_register,
                         [list_to_binary(U), list_to_binary(S), Password])
      end, []),
[ok] == lists:usort(Reg) orelse Fail("ejabberd register: ~p", [lists:usort(Reg)]),
T1 = erlang:monotonic_time(millisecond),
Toks = InBatches(Jids, fun(J) ->
           rpc:async_call(Node, ejabberd_oauth, oauth_issue_token, [J, 86400, "sasl_auth"])
       end, []),
T2 = erlang:monotonic_time(millisecond),
[case T of
     {Tok, _, _} -> io:format("~s~n", [Tok]);
     Other -> Fail("ejabberd oauth_issue_token: ~p", [Other])
 end || T <- Toks],
io:format(standard_error, "ejabberd: ~b users registered in ~.2f s, tokens issued in ~.2f s~n",
          [Users, (T1 - T0) / 1000, (T2 - T1) / 1000]),
%% A quiet heap before the run, so that the RSS baseline (bytes per
%% connection) does not include start-up garbage.
[rpc:call(Node, erlang, garbage_collect, [P]) || P <- rpc:call(Node, erlang, processes, [])],
halt(0).
ERL
)

ej_erl() {  # a hidden node that talks to the current ejabberd node; args: erl args
  timeout 300 env ERL_LIBS="$EJ_LIBS" "$EJ_ERL" -sname "ctl-$$-$EJ_N@localhost" \
    -setcookie "$EJ_COOKIE" -hidden -noinput -kernel inet_dist_use_interface '{127,0,0,1}' \
    -erl_epmd_port "$EDIST" -start_epmd false -dist_listen false "$@"
}

start_ejabberd() {  # SCENARIO
  local n c2s mqtt http
  n=$(users_for "$1")
  EDIR=$(mktemp -d /tmp/ejabberd-bench.XXXXXX)
  DIRS+=("$EDIR")
  mkdir "$EDIR/spool" "$EDIR/logs"
  EJ_N=$((EJ_N + 1))
  ENODE=ejabberd-cmp-$$-$EJ_N@localhost
  EDIST=$(free_port); c2s=$(free_port); mqtt=$(free_port); http=$(free_port)
  # No traffic shaper anywhere (listener `shaper: none`, no shaper rules: the
  # Debian default config limits c2s to 3000 B/s), a listen backlog like
  # Petrel's (ejabberd's default is 5), queues as deep as Mosquitto's here,
  # SCRAM-SHA-256 storage (auth_scram_hash; the default is SHA-1), OAuth for
  # everyone with any client id, and no TLS (all runs are plain TCP).
  cat > "$EDIR/ejabberd.yml" <<YML
# Generated by benches/compare.sh for one benchmark run.
hosts:
  - localhost
loglevel: warning
hide_sensitive_log_data: true
acme:
  auto: false
certfiles: []
listen:
  -
    port: $c2s
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
    shaper: none
    max_stanza_size: 1048576
    max_fsm_queue: 1000000
    backlog: 1024
  -
    port: $mqtt
    ip: "127.0.0.1"
    module: mod_mqtt
    max_fsm_queue: 1000000
    backlog: 1024
  -
    port: $http
    ip: "127.0.0.1"
    module: ejabberd_http
    backlog: 1024
    request_handlers:
      /oauth: ejabberd_oauth
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha256
oauth_expire: 86400
oauth_access: all
oauth_client_id_check: allow
shaper: {}
shaper_rules: {}
modules:
  mod_mqtt:
    max_queue: 1000000
  mod_roster: {}
  mod_offline: {}
  mod_disco: {}
  mod_ping: {}
YML
  [ -f "$OUT/ejabberd.yml" ] || cp "$EDIR/ejabberd.yml" "$OUT/ejabberd.yml"
  printf '%s\n' '{lookup,["file","native"]}.' '{host,{127,0,0,1}, ["localhost"]}.' > "$EDIR/inetrc"
  (cd "$EDIR/spool" && exec env ERL_LIBS="$EJ_LIBS" EJABBERD_CONFIG_PATH="$EDIR/ejabberd.yml" \
    EJABBERD_LOG_PATH="$EDIR/logs/ejabberd.log" ERL_CRASH_DUMP="$EDIR/logs/erl_crash.dump" \
    ERL_INETRC="$EDIR/inetrc" ERL_MAX_PORTS=65536 ERL_MAX_ETS_TABLES=1400 \
    "$EJ_ERL" -sname "$ENODE" -setcookie "$EJ_COOKIE" -noinput +P 1000000 \
    -env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface '{127,0,0,1}' \
    -erl_epmd_port "$EDIST" -start_epmd false \
    -mnesia dir "\"$EDIR/spool\"" -s ejabberd) > "$EDIR/stdout" 2>&1 &
  BPID=$!  # erl execs erlexec, which execs beam.smp: this is the node itself
  PIDS+=("$BPID")
  if ! EJ_NODE=$ENODE EJ_USERS=$n EJ_USER_PATTERN=$USER_PATTERN EJ_PASSWORD=$PASSWORD \
      ej_erl -eval "$EJ_PREPARE" > "$EDIR/tokens.txt" 2> "$EDIR/prepare.err"; then
    echo "ejabberd did not start or refused the accounts:" >&2
    cat "$EDIR/prepare.err" >&2; tail -20 "$EDIR/stdout" "$EDIR/logs/ejabberd.log" >&2 2>/dev/null
    exit 1
  fi
  [ "$n" -gt 1 ] && cat "$EDIR/prepare.err"
  BMQTT=127.0.0.1:$mqtt
  BC2S=127.0.0.1:$c2s
  auth_for "$1" "$EDIR/tokens.txt"
}

stop_broker() {
  kill "$BPID" 2>/dev/null || true
  for _ in $(seq 100); do alive "$BPID" || break; sleep 0.1; done
  alive "$BPID" && { echo "broker $BPID ignored SIGTERM for 10 s: SIGKILL" >&2; kill -9 "$BPID" 2>/dev/null || true; }
  wait "$BPID" 2>/dev/null || true
  PIDS=()
  sleep 1
}

# Whether the generator runs an XMPP scenario, rather than only naming it
# (it answers "not available yet" until the XMPP scenarios are merged). The
# probe targets a free port where nothing listens.
gen_runs() {
  local out
  out=$(timeout 30 "$LOAD" "$1" --target "127.0.0.1:$(free_port)" --auth password \
    --password x --user-pattern probe@localhost --count 1 --duration 1 --quiet \
    --out "$OUT/.probe.json" 2>&1 || true)
  rm -f "$OUT"/.probe.*
  ! grep -qiE 'not available yet|invalid value|unrecognized' <<< "$out"
}

if [ -n "$MOSQ" ]; then
  note "mosquitto: $("$MOSQ" -h 2>/dev/null | head -1), anonymous (MQTT scenarios only)"
else
  note "SKIPPED mosquitto: not installed (apt-get install mosquitto)"
fi
if [ -z "$EJ_SKIP" ]; then
  note "ejabberd: $EJ_VSN (Erlang/OTP $("$EJ_ERL" -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().' 2>/dev/null)), private node per scenario; MQTT 5 X-OAUTH2 with the username in CONNECT (mod_mqtt needs it); XMPP $XAUTH"
else
  note "SKIPPED ejabberd: $EJ_SKIP"
fi
note "petrel: MQTT 5 X-OAUTH2 with the username; XMPP $XAUTH"
[ -n "${PETREL_BASE:-}" ] && note "petrel-base: $PETREL_BASE, the same way"
RUN=()
for s in $SCENARIOS; do
  case $s in
    qos0|qos0r|qos1|qos1p|fanout|conn|storm) RUN+=("$s") ;;
    xlogin|xchat)
      if gen_runs "$(gen_name "$s")"; then RUN+=("$s")
      else note "SKIPPED $s: the generator does not run $(gen_name "$s") yet"; fi ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
done
for s in "${RUN[@]}"; do
  start_petrel "$s"
  run_one petrel "$s" "$BPID" "${AUTH[@]}"
  stop_broker
  if [ -n "${PETREL_BASE:-}" ]; then
    start_petrel "$s" "$PETREL_BASE"
    run_one petrel-base "$s" "$BPID" "${AUTH[@]}"
    stop_broker
  fi
  if [ -n "$MOSQ" ] && is_mqtt "$s"; then
    start_mosquitto "$s"
    run_one mosquitto "$s" "$BPID" "${AUTH[@]}"
    stop_broker
  fi
  if [ -z "$EJ_SKIP" ]; then
    start_ejabberd "$s"
    run_one ejabberd "$s" "$BPID" "${AUTH[@]}"
    stop_broker
  fi
done
printf '%s\n' "${NOTES[@]}" > "$OUT/notes.txt"

# --- Ratios -----------------------------------------------------------------
python3 - "$OUT" "${RUN[@]}" <<'PY' | tee "$OUT/summary.txt"
import json, os, sys
out, scenarios = sys.argv[1], sys.argv[2:]
BROKERS = ["petrel", "petrel-base", "mosquitto", "ejabberd"]
def load(name, s):
    p = os.path.join(out, f"{name}-{s}.json")
    return json.load(open(p)) if os.path.exists(p) else None
def get(r, *paths):
    """The first of the dotted paths that leads to a number (the XMPP reports
    may name their sections differently from the MQTT ones)."""
    for path in paths:
        v = r
        for k in path.split("."):
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            return v
    return None
def proc(r, role):
    return next((p for p in r.get("processes", []) if p.get("role") == role), {})
def per(r, num, den):
    n, d = num(r), den(r)
    return None if n is None or not d else n / d
cores = ("broker cores used", lambda r: proc(r, "broker").get("cpu_cores_used"), "-")
gen_cores = ("generator cores", lambda r: proc(r, "generator").get("cpu_cores_used"), "-")
def message_figs(unit):
    return [
        (f"received {unit}/s", lambda r: get(r, "messages.received_per_s"), "higher"),
        (f"sent {unit}/s", lambda r: get(r, "messages.sent_per_s"), "higher"),
        ("lost", lambda r: get(r, "messages.lost"), "lower"),
        ("latency p50 µs", lambda r: get(r, "messages.latency.p50_us"), "lower"),
        ("latency p99 µs", lambda r: get(r, "messages.latency.p99_us"), "lower"),
        cores,
        (f"broker CPU µs/{unit}", lambda r: per(r, lambda r: proc(r, "broker").get("cpu_s", 0) * 1e6,
                                               lambda r: get(r, "messages.received")), "lower"),
        gen_cores,
    ]
FIGS = {
    "conn": [
        ("connects/s", lambda r: get(r, "connects.per_s"), "higher"),
        ("connect p99 µs", lambda r: get(r, "connects.latency.p99_us"), "lower"),
        ("failed", lambda r: get(r, "connects.failed"), "lower"),
        ("RSS bytes/conn", lambda r: get(r, "memory.bytes_per_connection"), "lower"),
        cores,
    ],
    "xlogin": [
        ("logins/s", lambda r: get(r, "logins.per_s", "connects.per_s"), "higher"),
        ("login p50 µs", lambda r: get(r, "logins.latency.p50_us", "connects.latency.p50_us"), "lower"),
        ("login p99 µs", lambda r: get(r, "logins.latency.p99_us", "connects.latency.p99_us"), "lower"),
        ("failed", lambda r: get(r, "logins.failed", "connects.failed"), "lower"),
        ("RSS bytes/session", lambda r: get(r, "memory.bytes_per_connection"), "lower"),
        cores,
        ("broker CPU µs/login", lambda r: per(r, lambda r: proc(r, "broker").get("cpu_s", 0) * 1e6,
                                              lambda r: get(r, "logins.ok", "connects.ok")), "lower"),
    ],
    "xchat": message_figs("msg"),
    "storm": [
        ("all back s", lambda r: get(r, "storm.all_back_s"), "lower"),
        ("all delivered s", lambda r: get(r, "storm.all_delivered_s"), "lower"),
        ("reconnects/s", lambda r: get(r, "connects.per_s"), "higher"),
        ("reconnect p99 µs", lambda r: get(r, "storm.reconnect_latency.p99_us"), "lower"),
        ("failed", lambda r: get(r, "storm.failed"), "lower"),
        ("sessions found", lambda r: get(r, "storm.sessions_resumed"), "higher"),
        ("queued lost", lambda r: get(r, "storm.lost"), "lower"),
        ("peak RSS MB", lambda r: per(r, lambda r: get(r, "storm.rss_peak_bytes"), lambda r: 1e6), "lower"),
        cores,
    ],
}
rows = []
for s in scenarios:
    runs = {b: load(b, s) for b in BROKERS}
    if not any(runs.values()):
        continue
    for label, f, better in FIGS.get(s, message_figs("msg")):
        vals = {b: (f(r) if r else None) for b, r in runs.items()}
        ratio = lambda b: (vals["petrel"] / vals[b]) if vals["petrel"] is not None and vals[b] else None
        rows.append((s, label, vals, ratio("mosquitto"), ratio("ejabberd"), ratio("petrel-base"), better))
fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}")
rfmt = lambda v: "-" if v is None else f"{v:.2f}x"
base = any(r[2]["petrel-base"] is not None for r in rows)
bh = f" {'petrel-base':>12}" if base else ""
bt = f" {'petrel/base':>12}" if base else ""
print(f"{'scenario':<8} {'figure':<20} {'petrel':>12}{bh} {'mosquitto':>12} {'ejabberd':>12} "
      f"{'petrel/mosq':>12} {'petrel/ejab':>12}{bt}  better")
for s, label, vals, rm, re, rb, better in rows:
    bv = f" {fmt(vals['petrel-base']):>12}" if base else ""
    br = f" {rfmt(rb):>12}" if base else ""
    print(f"{s:<8} {label:<20} {fmt(vals['petrel']):>12}{bv} {fmt(vals['mosquitto']):>12} "
          f"{fmt(vals['ejabberd']):>12} {rfmt(rm):>12} {rfmt(re):>12}{br}  {better}")
notes = os.path.join(out, "notes.txt")
if os.path.exists(notes):
    print()
    print(open(notes).read().rstrip())
print(f"\nreports: {out}")
PY
