#!/usr/bin/env bash
# Start or stop the three services as separate processes, each waiting until it reports healthy.
# Usage: services.sh start|stop|status
source "$(dirname "$0")/lib.sh"

VENV_BIN="$ROOT/.venv/bin"
export AUDIENCES_KAFKA_BOOTSTRAP="${AUDIENCES_KAFKA_BOOTSTRAP:-127.0.0.1:$KAFKA_PORT}"
export AUDIENCES_MONGO_URL="${AUDIENCES_MONGO_URL:-mongodb://127.0.0.1:$STORE_PORT/}"
API_PORT="${AUDIENCES_API_PORT:-8000}"
EVALUATOR_PORT="${AUDIENCES_EVALUATOR_PORT:-8001}"
SYNC_PORT="${AUDIENCES_SYNC_PORT:-8002}"

wait_healthy() {
  local name="$1" port="$2"
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
      log "$name healthy on http://127.0.0.1:$port"; return 0
    fi
    pid_alive "$name" || die "$name exited; see $LOG_DIR/$name.log"
    sleep 0.2
  done
  die "$name not healthy within 60s; see $LOG_DIR/$name.log"
}

# One at a time: the first to start creates the store's collections and indexes, and schema
# changes must not race other clients' writes (FerretDB, see docs/operations.md).
start() {
  AUDIENCES_PORT="$EVALUATOR_PORT" start_daemon evaluator "$VENV_BIN/audience-evaluator"
  wait_healthy evaluator "$EVALUATOR_PORT"
  AUDIENCES_PORT="$SYNC_PORT" start_daemon sync "$VENV_BIN/audience-sync"
  wait_healthy sync "$SYNC_PORT"
  # The gateway's pipeline page reads the other services' readiness at these addresses.
  AUDIENCES_PORT="$API_PORT" AUDIENCES_EVALUATOR_URL="http://127.0.0.1:$EVALUATOR_PORT" \
    AUDIENCES_SYNC_URL="http://127.0.0.1:$SYNC_PORT" start_daemon api "$VENV_BIN/audience-api"
  wait_healthy api "$API_PORT"
}

case "${1:-}" in
  start) start ;;
  stop) for s in api sync evaluator; do stop_daemon "$s"; done ;;
  status) for s in api evaluator sync; do pid_alive "$s" && echo "$s: running" || echo "$s: stopped"; done ;;
  *) die "usage: services.sh start|stop|status" ;;
esac
