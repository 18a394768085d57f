"""The quick reliability scenarios (bench/reliability), run through the same harness functions
as `make reliability`, on the session's broker, store and services."""

import os
from functools import partial
from pathlib import Path

import pytest

from bench.reliability import faults, inputs, security
from bench.reliability.harness import Harness, Sizes
from tests.integration.conftest import LOG_DIR, Stack

pytestmark = pytest.mark.integration

SIZES = Sizes(
    kill_events=0,
    stream_events=1_200,
    outage_s=8.0,
    converge_timeout_s=240.0,
    load_phase_s=0.0,
    fuzz_examples=200,
)


@pytest.fixture
def harness(stack: Stack) -> Harness:
    return Harness(
        env=stack.env,
        infra_env=dict(os.environ),
        api_url=stack.api_url,
        admin_key=stack.admin_key,
        log_dir=LOG_DIR,
    )


async def test_poison_records__dead_lettered__good_ones_equal_oracle(harness: Harness) -> None:
    result = await inputs.poison_messages(harness, SIZES)
    assert result.passed, result.as_json()


async def test_every_event_twice_and_shuffled__memberships_equal_oracle(harness: Harness) -> None:
    result = await inputs.duplicates_reordered(harness, SIZES)
    assert result.passed, result.as_json()


async def test_fuzzed_criteria_and_bodies__no_crash__only_good_events_count(
    harness: Harness,
) -> None:
    result = await partial(inputs.bad_input, openapi_fuzz=False)(harness, SIZES)
    assert result.passed, result.as_json()


async def test_keys_scopes_tenancy_cursors_bodies__refused__nothing_leaks(
    harness: Harness,
) -> None:
    result = await security.security(harness, SIZES)
    assert result.passed, result.as_json()


@pytest.mark.disruptive
async def test_broker_stopped__ingestion_answers_503__nothing_accepted_is_lost(
    harness: Harness,
) -> None:
    # The scenario stops and starts the session's own broker through deploy/local/kafka.sh.
    local = os.environ.get("AUDIENCES_LOCAL_DIR")
    if not local or not (Path(local) / "run" / "kafka.pid").exists():
        pytest.fail(
            "this test stops the broker through deploy/local/kafka.sh: run it under "
            "deploy/local/test.sh, which starts that broker",
            pytrace=False,
        )
    result = await faults.broker_stopped(harness, SIZES)
    assert result.passed, result.as_json()
