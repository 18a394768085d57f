"""Fresh Kafka and store for a benchmark run, on their own ports and data, torn down after; the
percentile every benchmark reports."""

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], share: float) -> float:
    """The value `share` of the way up the sorted values (NaN for none)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


@contextmanager
def fresh_infrastructure(name: str, kafka_port: int, store_port: int) -> Iterator[dict[str, str]]:
    """Start a broker and a store with empty data; yield the env the services need."""
    local = ROOT / ".local" / f"bench-{name}"
    env = {
        **os.environ,
        "AUDIENCES_LOCAL_DIR": str(local),
        "AUDIENCES_CACHE_DIR": str(ROOT / ".local" / "cache"),
        "AUDIENCES_KAFKA_PORT": str(kafka_port),
        "AUDIENCES_KAFKA_CONTROLLER_PORT": str(kafka_port + 1),
        "AUDIENCES_STORE_PORT": str(store_port),
    }
    env.pop("AUDIENCES_MONGO_URL", None)
    scripts = ROOT / "deploy" / "local"
    # A run that was interrupted leaves its broker and store up: stop them before wiping their data.
    for script in ("store.sh", "kafka.sh"):
        subprocess.run([str(scripts / script), "stop"], env=env, check=False)
    shutil.rmtree(local, ignore_errors=True)
    try:
        for script in ("kafka.sh", "store.sh"):
            subprocess.run([str(scripts / script), "start"], env=env, check=True)
        yield {
            **env,
            "AUDIENCES_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
            "AUDIENCES_MONGO_URL": f"mongodb://127.0.0.1:{store_port}/",
        }
    finally:
        for script in ("store.sh", "kafka.sh"):
            subprocess.run([str(scripts / script), "stop"], env=env, check=False)
