#!/usr/bin/env bash
# Provision and run the real Apache Kafka broker (single-node KRaft) from Maven Central artifacts.
# Usage: kafka.sh install|start|stop|status
source "$(dirname "$0")/lib.sh"

KAFKA_HOME="$CACHE_DIR/kafka"
LIBS="$KAFKA_HOME/libs"
DATA_DIR="$LOCAL/kafka/data"
CONF="$LOCAL/kafka/server.properties"
POM="$ROOT/deploy/local/kafka/pom.xml"

install() {
  # The pom's hash marks the cache, so a version bump re-resolves and a second run does nothing.
  local stamp; stamp="$(sha256sum "$POM" | cut -c1-16)"
  if [[ -f "$LIBS/.stamp" && "$(cat "$LIBS/.stamp")" == "$stamp" ]]; then return 0; fi
  command -v java >/dev/null || die "Java 17 is required for Kafka (apt-get install openjdk-17-jre-headless)"
  command -v mvn >/dev/null || die "Maven is required to fetch Kafka (apt-get install maven)"
  log "resolving Apache Kafka from Maven Central into $LIBS"
  rm -rf "$LIBS"; mkdir -p "$LIBS"
  mvn -q -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$LIBS" -DincludeScope=runtime
  echo "$stamp" >"$LIBS/.stamp"
}

configure() {
  mkdir -p "$DATA_DIR"
  sed -e "s|@PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
      -e "s|@DATA_DIR@|$DATA_DIR|g" "$ROOT/deploy/local/kafka/server.properties.in" >"$CONF"
  if [[ ! -f "$DATA_DIR/meta.properties" ]]; then
    log "formatting KRaft storage"
    local cluster_id; cluster_id="$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid)"
    java -cp "$LIBS/*" -Dlog4j.configuration="file:$ROOT/deploy/local/kafka/log4j.properties" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$CONF" >/dev/null
  fi
}

start() {
  install
  if pid_alive kafka; then log "kafka already running"; return 0; fi
  configure
  # The JIT's optimizing compiler (C2) kept compiling through a four-minute benchmark, in bursts
  # of half a core to a core lasting a quarter second and more: on a small machine running the
  # whole stack, every service stalled in them. The quick compiler alone made the broker cheaper
  # there, not dearer (bench-evaluator: 0.16 cores in the workload phase against 0.28).
  # AUDIENCES_KAFKA_JVM_OPTS replaces it, for a broker with cores of its own.
  # The heap is fixed at 1 GB with 4 MB regions: a heap that started at 256 MB sat above G1's
  # initiating occupancy, and every produce request over half a 1 MB region (a batch's membership
  # changes) started a concurrent marking cycle: 151 in a benchmark run, a third of a core.
  # shellcheck disable=SC2086  # options, split on purpose
  start_daemon kafka java -Xms1g -Xmx1g -XX:+UseG1GC -XX:G1HeapRegionSize=4m \
    ${AUDIENCES_KAFKA_JVM_OPTS--XX:TieredStopAtLevel=1} \
    -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$ROOT/deploy/local/kafka/log4j.properties" \
    -cp "$LIBS/*" kafka.Kafka "$CONF"
  wait_port kafka "$KAFKA_PORT" 90
  log "kafka listening on 127.0.0.1:$KAFKA_PORT"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop_daemon kafka ;;
  status) pid_alive kafka && echo "kafka: running on 127.0.0.1:$KAFKA_PORT" || echo "kafka: stopped" ;;
  *) die "usage: kafka.sh install|start|stop|status" ;;
esac
