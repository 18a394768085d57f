#!/usr/bin/env bash
# Debian's Chromium for the dashboard's browser tests (Playwright drives it; Playwright's own
# browser download cannot work on these machines). Idempotent: installs only when missing.
source "$(dirname "$0")/lib.sh"

CHROMIUM="${AUDIENCES_CHROMIUM:-/usr/bin/chromium}"
[[ -x "$CHROMIUM" ]] && exit 0
command -v apt-get >/dev/null || die "no $CHROMIUM and no apt-get; install Chromium and set AUDIENCES_CHROMIUM"
log "installing chromium (first run only)"
export DEBIAN_FRONTEND=noninteractive
# A stale package index is the usual reason the install fails; refresh it once and retry.
apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
[[ -x "$CHROMIUM" ]] || die "chromium did not install to $CHROMIUM"
