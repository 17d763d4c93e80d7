# Sourced by the bench scripts: builds the load generator (benches/load.rs)
# in release and sets LOAD to its path.
LOAD=$(cargo bench --no-run --bench load --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "load":
        print(m["executable"])')
[ -x "$LOAD" ] || { echo "could not build the load generator" >&2; exit 1; }
