"""Fixtures for the real infrastructure: the Kafka broker and the MongoDB-compatible store.

Order of preference: URLs from the environment (AUDIENCES_KAFKA_BOOTSTRAP, AUDIENCES_MONGO_URL),
then the deploy/local processes (started here if needed). Integration tests never skip: when no
broker or store can be had they fail and say why.
"""

import os
import subprocess
from collections.abc import AsyncIterator
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


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    if url := os.environ.get("AUDIENCES_KAFKA_BOOTSTRAP"):
        return url
    _provision("kafka.sh")
    return f"127.0.0.1:{os.environ.get('AUDIENCES_KAFKA_PORT', '19092')}"


@pytest.fixture(scope="session")
def mongo_url() -> str:
    if url := os.environ.get("AUDIENCES_MONGO_URL"):
        return url
    _provision("store.sh")
    return f"mongodb://127.0.0.1:{os.environ.get('AUDIENCES_STORE_PORT', '27027')}/"


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
