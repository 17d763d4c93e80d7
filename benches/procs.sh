# Sourced by the bench scripts: the processes and directories a run starts
# (PIDS, DIRS) are stopped and removed on exit, or by `cleanup` between
# runs; `free_port` gives a free loopback port.
PIDS=()
DIRS=()
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
alive() { [ -n "$1" ] && ps -o stat= -p "$1" 2>/dev/null | grep -qv Z; }
# SIGTERM to every process, SIGKILL to those still there after 5 s.
stop_pids() {
  local p
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do
    for _ in $(seq 50); do alive "$p" || break; sleep 0.1; done
    if alive "$p"; then kill -9 "$p" 2>/dev/null || true; fi
  done
  PIDS=()
}
remove_dirs() {
  local d
  for d in "${DIRS[@]:-}"; do if [ -n "$d" ]; then rm -rf "$d"; fi; done
  DIRS=()
}
cleanup() { stop_pids; remove_dirs; }
trap cleanup EXIT
