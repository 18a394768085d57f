#!/usr/bin/env bash
# Start or stop the local infrastructure: the Kafka broker and the store.
# Usage: infra.sh start|stop|status
source "$(dirname "$0")/lib.sh"
HERE="$(dirname "$0")"

case "${1:-}" in
  start) "$HERE/kafka.sh" start; "$HERE/store.sh" start ;;
  stop) "$HERE/store.sh" stop; "$HERE/kafka.sh" stop ;;
  status) "$HERE/kafka.sh" status; "$HERE/store.sh" status ;;
  *) die "usage: infra.sh start|stop|status" ;;
esac
