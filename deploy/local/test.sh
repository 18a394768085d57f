#!/usr/bin/env bash
# `make test`: its own broker and store (separate ports and data under .local/test), then the
# whole suite. The infrastructure it started is stopped again afterwards.
HERE="$(cd "$(dirname "$0")" && pwd)"
export AUDIENCES_LOCAL_DIR="${AUDIENCES_TEST_LOCAL_DIR:-$(cd "$HERE/../.." && pwd)/.local/test}"
export AUDIENCES_CACHE_DIR="$(cd "$HERE/../.." && pwd)/.local/cache"
export AUDIENCES_KAFKA_PORT="${AUDIENCES_TEST_KAFKA_PORT:-29092}"
export AUDIENCES_KAFKA_CONTROLLER_PORT="${AUDIENCES_TEST_KAFKA_CONTROLLER_PORT:-29093}"
export AUDIENCES_STORE_PORT="${AUDIENCES_TEST_STORE_PORT:-28027}"
source "$HERE/lib.sh"

"$HERE/bootstrap.sh"
"$HERE/browser.sh"  # the dashboard's browser tests drive Debian's Chromium
# Every run starts from an empty broker and store, so nothing of an earlier run is replayed.
for s in kafka store; do "$HERE/$s.sh" stop; done
rm -rf "$LOCAL/kafka" "$LOCAL/store"
started=()
if [[ -z "${AUDIENCES_KAFKA_BOOTSTRAP:-}" ]]; then
  "$HERE/kafka.sh" start; started+=(kafka)
  export AUDIENCES_KAFKA_BOOTSTRAP="127.0.0.1:$AUDIENCES_KAFKA_PORT"
fi
if [[ -z "${AUDIENCES_MONGO_URL:-}" ]]; then
  "$HERE/store.sh" start; started+=(store)
  export AUDIENCES_MONGO_URL="mongodb://127.0.0.1:$AUDIENCES_STORE_PORT/"
fi
cleanup() { for s in "${started[@]}"; do "$HERE/$s.sh" stop; done; }
trap cleanup EXIT

cd "$ROOT"
"$ROOT/.venv/bin/python" -m pytest "$@"
