# Shared helpers for the deploy/local scripts: paths, ports, pid files, waiting.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOCAL="${AUDIENCES_LOCAL_DIR:-$ROOT/.local}"
RUN_DIR="$LOCAL/run"
LOG_DIR="$LOCAL/log"
CACHE_DIR="${AUDIENCES_CACHE_DIR:-$LOCAL/cache}"
mkdir -p "$RUN_DIR" "$LOG_DIR" "$CACHE_DIR"

KAFKA_PORT="${AUDIENCES_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${AUDIENCES_KAFKA_CONTROLLER_PORT:-19093}"
STORE_PORT="${AUDIENCES_STORE_PORT:-27027}"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# pid_alive NAME: true when .local/run/NAME.pid names a live process.
pid_alive() {
  local pidfile="$RUN_DIR/$1.pid"
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# start_daemon NAME CMD...: start CMD detached, log to .local/log/NAME.log, pid to .local/run/NAME.pid.
start_daemon() {
  local name="$1"; shift
  if pid_alive "$name"; then log "$name already running (pid $(cat "$RUN_DIR/$name.pid"))"; return 0; fi
  log "starting $name"
  setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 < /dev/null &
  echo $! >"$RUN_DIR/$name.pid"
}

# stop_daemon NAME: TERM the process group, then KILL after a grace period.
stop_daemon() {
  local name="$1" pidfile="$RUN_DIR/$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# wait_port NAME PORT SECONDS: wait until something listens on 127.0.0.1:PORT.
wait_port() {
  local name="$1" port="$2" secs="$3"
  for _ in $(seq 1 $((secs * 5))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if ! pid_alive "$name"; then die "$name exited; see $LOG_DIR/$name.log"; fi
    sleep 0.2
  done
  die "$name did not listen on port $port within ${secs}s; see $LOG_DIR/$name.log"
}
