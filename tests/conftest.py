"""Fixtures for the real infrastructure: the Kafka broker and the MongoDB-compatible store.

Order of preference: URLs from the environment (AUDIENCES_KAFKA_BOOTSTRAP, AUDIENCES_MONGO_URL),
then testcontainers when a Docker engine answers, then the deploy/local processes (started here
if needed; `make test` starts them and sets the URLs). Integration tests never skip: when no
broker or store can be had they fail and say why.
"""

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

ROOT = Path(__file__).resolve().parents[1]


def _provision(script: str) -> None:
    result = subprocess.run(
        [str(ROOT / "deploy" / "local" / script), "start"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"could not start {script} for the integration tests:\n{result.stderr[-2000:]}",
            pytrace=False,
        )


def _docker_engine_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if url := os.environ.get("AUDIENCES_KAFKA_BOOTSTRAP"):
        yield url
    elif _docker_engine_answers():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as kafka:
            yield str(kafka.get_bootstrap_server())
    else:
        _provision("kafka.sh")
        yield f"127.0.0.1:{os.environ.get('AUDIENCES_KAFKA_PORT', '19092')}"


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    if url := os.environ.get("AUDIENCES_MONGO_URL"):
        yield url
    elif _docker_engine_answers():
        from testcontainers.community.mongodb import MongoDbContainer

        with MongoDbContainer("mongo:8.0") as mongo:
            yield str(mongo.get_connection_url())
    else:
        _provision("store.sh")
        yield f"mongodb://127.0.0.1:{os.environ.get('AUDIENCES_STORE_PORT', '27027')}/"


@pytest.fixture(scope="session")
async def mongo_client(mongo_url: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_url, tz_aware=True, serverSelectionTimeoutMS=10_000
    )
    try:
        await client.admin.command("ping")
    except Exception as exc:
        pytest.fail(f"the store at {mongo_url} does not answer: {exc!r}", pytrace=False)
    yield client
    await client.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that stop the session's broker or store run last, so no other test shares the
    recovery they cause."""
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)
