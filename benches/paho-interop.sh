#!/usr/bin/env bash
# Runs the Eclipse Paho MQTT 5 interoperability suite against Petrel, from
# the suite's own checkout (never copied here): each test alone, against a
# fresh server started with configs/paho-interop.toml on a free port.
#
#   benches/paho-interop.sh SUITE_DIR [RUNS] [TEST_NAME...]
#
# SUITE_DIR is a checkout of github.com/eclipse/paho.mqtt.testing. Prints one
# line per run ("run 3: 27/27 passed") and the failures; exits 1 if any test
# failed in any run. Logs of failed tests go to target/paho-interop/.
set -euo pipefail

suite=${1:?usage: benches/paho-interop.sh SUITE_DIR [RUNS] [TEST_NAME...]}
runs=${2:-1}
shift $(( $# >= 2 ? 2 : 1 ))
root=$(cd "$(dirname "$0")/.." && pwd)
interop="$suite/interoperability"
[ -f "$interop/client_test5.py" ] || { echo "no interoperability/client_test5.py in $suite" >&2; exit 2; }

if [ $# -gt 0 ]; then
    tests=("$@")
else
    mapfile -t tests < <(grep -oE '^    def (test_[a-z0-9_]+)' "$interop/client_test5.py" | awk '{print $2}')
fi

cargo build --release --quiet --manifest-path "$root/Cargo.toml"
logs="$root/target/paho-interop"
mkdir -p "$logs"
# A copy: a rebuild while the runs go on does not change what is measured.
petrel="$logs/petrel"
cp "$root/target/release/petrel" "$petrel"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (at most 10 s) until the port accepts connections.
wait_port() {
    local deadline=$((SECONDS + 10))
    until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.05
    done
}

any_failed=0
for run in $(seq 1 "$runs"); do
    passed=0
    failed=()
    for t in "${tests[@]}"; do
        dir=$(mktemp -d)
        port=$(free_port)
        { echo "data_dir = \"$dir/data\""; sed "s/^port = 1883$/port = $port/" "$root/configs/paho-interop.toml"; } > "$dir/petrel.toml"
        "$petrel" serve --config "$dir/petrel.toml" > "$dir/server.log" 2>&1 &
        pid=$!
        ok=0
        if wait_port "$port"; then
            if (cd "$interop" && timeout 120 python3 client_test5.py -p "$port" "Test.$t") > "$dir/test.log" 2>&1; then
                ok=1
            fi
        fi
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        if [ $ok = 1 ]; then
            passed=$((passed + 1))
        else
            failed+=("$t")
            cp "$dir/test.log" "$logs/run$run-$t.test.log" 2>/dev/null || true
            cp "$dir/server.log" "$logs/run$run-$t.server.log" 2>/dev/null || true
        fi
        rm -rf "$dir"
    done
    echo "run $run: $passed/${#tests[@]} passed${failed:+ (failed: ${failed[*]})}"
    [ ${#failed[@]} -eq 0 ] || any_failed=1
done
exit $any_failed
