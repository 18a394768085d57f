#!/usr/bin/env bash
# Create the virtualenv and install every Python package from the lock file (first run only).
source "$(dirname "$0")/lib.sh"

UV_VERSION="0.13.9"
TOOLS="$ROOT/.local/tools"
UV="$TOOLS/bin/uv"

if [[ ! -x "$UV" ]]; then
  log "installing uv $UV_VERSION (first run only)"
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
cd "$ROOT"
# --frozen: install exactly what uv.lock says; the lock file is the one source of versions.
"$UV" sync --frozen --all-packages -q
# aiokafka without its C extension consumes about four times slower; say so loudly.
"$ROOT/.venv/bin/python" - <<'PY'
import aiokafka.record._crecords  # noqa: F401  (ImportError here means the slow pure-Python path)
PY
