#!/usr/bin/env bash
# `make up`: install, provision, start everything, create the demo tenant and data, print how to
# reach it. Running it twice is harmless.
source "$(dirname "$0")/lib.sh"
HERE="$(dirname "$0")"

"$HERE/bootstrap.sh"
"$HERE/infra.sh" start

# The demo organization's admin key: the one given, else one generated once and kept.
KEY_FILE="$LOCAL/demo/admin-key"
mkdir -p "$(dirname "$KEY_FILE")"
if [[ -n "${AUDIENCES_BOOTSTRAP_API_KEY:-}" ]]; then
  echo "$AUDIENCES_BOOTSTRAP_API_KEY" >"$KEY_FILE"
elif [[ ! -s "$KEY_FILE" ]]; then
  echo "sk_admin_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$KEY_FILE"
fi
chmod 600 "$KEY_FILE"
export AUDIENCES_BOOTSTRAP_API_KEY="$(cat "$KEY_FILE")"

"$HERE/services.sh" start
"$ROOT/.venv/bin/python" "$HERE/demo.py" \
  --api "http://127.0.0.1:${AUDIENCES_API_PORT:-8000}" --admin-key "$AUDIENCES_BOOTSTRAP_API_KEY" \
  --out "$LOCAL/demo"
