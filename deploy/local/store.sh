#!/usr/bin/env bash
# Provision and run the MongoDB-compatible store: AUDIENCES_MONGO_URL if given, else a mongod on
# PATH, else FerretDB v1.24 (SQLite backend) built from its Go module with the patches in
# deploy/local/ferretdb/ (see docs/operations.md, "FerretDB").
# Usage: store.sh install|start|stop|status|url|backend|ferretdb-bin
source "$(dirname "$0")/lib.sh"

FERRETDB_VERSION="v1.24.0"
# Bump the suffix whenever a patch in deploy/local/ferretdb/ changes, so cached builds are redone.
FERRETDB_BUILD="$FERRETDB_VERSION-audiences.15"
# FerretDB's wire-protocol module, built from a patched copy (see wire-release-checks.patch).
FERRETDB_WIRE_VERSION="v0.0.7"
FERRETDB_BIN="$CACHE_DIR/ferretdb/$FERRETDB_BUILD/ferretdb"
DATA_DIR="$LOCAL/store/data"

# The store we run: "external" (URL given), "mongod" or "ferretdb".
backend() {
  if [[ -n "${AUDIENCES_MONGO_URL:-}" ]]; then echo external
  elif command -v mongod >/dev/null 2>&1; then echo mongod
  else echo ferretdb; fi
}

url() {
  if [[ -n "${AUDIENCES_MONGO_URL:-}" ]]; then echo "$AUDIENCES_MONGO_URL"
  else echo "mongodb://127.0.0.1:$STORE_PORT/"; fi
}

# The directory of a Go module downloaded into the module cache.
module_dir() {
  (cd "$1" && GOFLAGS=-mod=mod go mod download -json "$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
}

install_ferretdb() {
  [[ -x "$FERRETDB_BIN" ]] && return 0
  command -v go >/dev/null || die "Go is required to build FerretDB (or put mongod on PATH, or set AUDIENCES_MONGO_URL)"
  log "building FerretDB $FERRETDB_VERSION from its Go module (first run only)"
  local gomod wiremod src build
  build="$(mktemp -d)"
  gomod="$(module_dir "$build" "github.com/FerretDB/FerretDB@$FERRETDB_VERSION")"
  wiremod="$(module_dir "$build" "github.com/FerretDB/wire@$FERRETDB_WIRE_VERSION")"
  [[ -d "$gomod" && -d "$wiremod" ]] || die "could not download the FerretDB modules"
  src="$build/src"
  cp -r "$gomod" "$src" && chmod -R u+w "$src"
  mkdir "$src/third_party" && cp -r "$wiremod" "$src/third_party/wire" && chmod -R u+w "$src/third_party"
  # FerretDB embeds its version from build/version/version.txt, which the module archive lacks.
  echo "$FERRETDB_VERSION" >"$src/build/version/version.txt"
  # Our fixes (deploy/local/ferretdb/, explained in docs/operations.md): lookups by _id use the
  # _id index, update/findAndModify/delete commands are atomic, a replace guarded by version is
  # one UPDATE statement, deletes by _id skip reading the documents, documents are encoded
  # without reflection, and release builds skip leak tracking and the wire module's debug checks.
  local patch_file
  while read -r patch_file; do
    (cd "$src" && git apply -p1 "$ROOT/deploy/local/ferretdb/$patch_file") || die "could not apply $patch_file"
  done < <(grep -v '^#' "$ROOT/deploy/local/ferretdb/series")
  # The faster encoder must write exactly what FerretDB's own did (sjson-append.patch's test;
  # FerretDB's test helpers find the source root by its .git directory).
  git -C "$src" init -q
  (cd "$src" && CGO_ENABLED=0 go test -count=1 ./internal/handler/sjson/ >&2) || die "FerretDB's sjson tests failed"
  mkdir -p "$(dirname "$FERRETDB_BIN")"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$FERRETDB_BIN" ./cmd/ferretdb)
  rm -rf "$build"
  # Builds of an earlier patch series are never run again (a store running one keeps its file
  # open, so removing it under that process is safe).
  find "$CACHE_DIR/ferretdb" -mindepth 1 -maxdepth 1 -type d ! -name "$FERRETDB_BUILD" \
    -exec rm -rf {} +
}

install() { [[ "$(backend)" == ferretdb ]] && install_ferretdb; return 0; }

start() {
  mkdir -p "$DATA_DIR"
  case "$(backend)" in
    external) log "using the store at AUDIENCES_MONGO_URL"; return 0 ;;
    mongod)
      start_daemon store mongod --bind_ip 127.0.0.1 --port "$STORE_PORT" --dbpath "$DATA_DIR" --quiet ;;
    ferretdb)
      install_ferretdb
      # WAL with synchronous=NORMAL: a commit survives a crash of any process (not a power cut
      # of the machine), like MongoDB's default write concern; every commit no longer waits on
      # an fsync, which halves the cost of an update.
      # GOGC=400: the server decodes and re-encodes whole documents on every command, and with
      # Go's default collector a fifth of its CPU went to garbage collection; memory is cheap.
      start_daemon store env GOGC="${AUDIENCES_STORE_GOGC:-400}" "$FERRETDB_BIN" --handler=sqlite \
        --sqlite-url="file:$DATA_DIR/?_pragma=synchronous(normal)" \
        --listen-addr="127.0.0.1:$STORE_PORT" --telemetry=disable --log-level=warn \
        --debug-addr="${AUDIENCES_STORE_DEBUG_ADDR:--}" --state-dir="$LOCAL/store" ;;
  esac
  wait_port store "$STORE_PORT" 60
  log "store ($(backend)) listening on 127.0.0.1:$STORE_PORT"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop_daemon store ;;
  status) pid_alive store && echo "store: $(backend) running on $(url)" || echo "store: $(backend), not running here" ;;
  url) url ;;
  backend) backend ;;
  # The FerretDB binary we build (built first if needed), whatever the backend in use.
  ferretdb-bin) install_ferretdb >&2; echo "$FERRETDB_BIN" ;;
  *) die "usage: store.sh install|start|stop|status|url|backend|ferretdb-bin" ;;
esac
