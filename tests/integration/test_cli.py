"""The `audience` console script against the running stack: keys, audiences, imports, exports."""

import csv
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.fakes.klaviyo import FakeKlaviyo, running
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

AUDIENCE = Path(sys.executable).with_name("audience")
DATA = Path(__file__).resolve().parents[1] / "data" / "csv"


def audience(
    stack: Stack, key: str, *args: str, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script with its own environment, as a user would."""
    result = subprocess.run(
        [str(AUDIENCE), "--url", stack.api_url, "--key", key, *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**stack.env, "COLUMNS": "200", **env},
    )
    if check:
        assert result.returncode == 0, f"audience {args} failed:\n{result.stderr}"
    return result


def as_json(stack: Stack, key: str, *args: str) -> Any:
    return json.loads(audience(stack, key, "--json", *args).stdout)


@pytest.fixture
def project_key(stack: Stack) -> str:
    """A fresh project's admin key, made through the CLI with the organization key."""
    project = as_json(stack, stack.admin_key, "projects", "create", "cli")
    key = as_json(stack, stack.admin_key, "keys", "create", "--project", project["id"])
    return str(key["key"])


def wait_for_count(stack: Stack, key: str, audience_id: str, expected: int) -> None:
    deadline = time.monotonic() + 60
    count = None
    while time.monotonic() < deadline:
        shown = as_json(stack, key, "audiences", "show", audience_id)
        count = shown["user_count"]
        if count == expected and not shown["user_count_is_estimate"]:
            return
        time.sleep(0.5)
    raise AssertionError(f"{audience_id} count stayed {count}, expected {expected}")


def test_keys__create_list_revoke__and_a_revoked_key_is_refused(stack: Stack) -> None:
    project = as_json(stack, stack.admin_key, "projects", "create", "keys")
    created = as_json(
        stack, stack.admin_key, "keys", "create", "--project", project["id"], "--name", "ci"
    )
    assert created["key"].startswith("sk_live_")

    listed = as_json(stack, stack.admin_key, "keys", "list")
    assert created["id"] in {key["id"] for key in listed["items"]}
    table = audience(stack, stack.admin_key, "keys", "list").stdout
    assert created["prefix"] in table

    audience(stack, stack.admin_key, "keys", "revoke", created["id"])
    refused = audience(stack, created["key"], "audiences", "list", check=False)

    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: unauthorized: The API key is invalid or revoked"
    revoked = as_json(stack, stack.admin_key, "keys", "list")
    assert next(k for k in revoked["items"] if k["id"] == created["id"])["revoked_at"]


def test_audiences__create_list_show_members(stack: Stack, project_key: str) -> None:
    created = as_json(
        stack,
        project_key,
        "audiences",
        "create",
        "Premium",
        "--criteria",
        "Users with plan=premium",
    )
    users = [("cli-u1", "premium"), ("cli-u2", "premium"), ("cli-u3", "free")]
    batch = [
        {"user_id": user, "traits": {"plan": plan, "email": f"{user}@example.com"}}
        for user, plan in users
    ]
    sent = httpx.post(
        f"{stack.api_url}/v1/identify",
        json={"batch": batch},
        headers={"Authorization": f"Bearer {project_key}"},
        timeout=30,
    )
    assert sent.status_code == 202, sent.text

    wait_for_count(stack, project_key, created["id"], 2)

    members = as_json(stack, project_key, "audiences", "members", created["id"])
    assert [m["user_id"] for m in members["items"]] == ["cli-u1", "cli-u2"]
    assert members["items"][0]["email"] == "cli-u1@example.com"
    searched = as_json(stack, project_key, "audiences", "members", created["id"], "--search", "u2")
    assert [m["user_id"] for m in searched["items"]] == ["cli-u2"]
    listed = audience(stack, project_key, "audiences", "list").stdout
    assert "Premium" in listed
    assert created["id"] in listed
    shown = audience(stack, project_key, "audiences", "show", created["id"]).stdout
    assert "Users with plan=premium" in shown
    assert "refresh: ready" in shown


def test_audiences_create__bad_criteria__one_line_with_the_code(
    stack: Stack, project_key: str
) -> None:
    refused = audience(
        stack, project_key, "audiences", "create", "Bad", "--criteria", "Users with", check=False
    )

    assert refused.returncode == 1
    assert refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: invalid_criteria: ")


def test_import_csv_then_export__round_trips_the_members(
    stack: Stack, project_key: str, tmp_path: Path
) -> None:
    static = as_json(stack, project_key, "audiences", "create", "Uploaded", "--kind", "static")

    imported = as_json(
        stack,
        project_key,
        "import",
        "csv",
        str(DATA / "members_with_bad_rows.csv"),
        "--audience",
        static["id"],
    )

    assert imported["status"] == "completed"
    assert (imported["rows_total"], imported["rows_imported"], imported["rows_failed"]) == (6, 3, 3)
    wait_for_count(stack, project_key, static["id"], 3)

    target = tmp_path / "members.csv"
    exported = as_json(
        stack,
        project_key,
        "audiences",
        "export",
        static["id"],
        "--columns",
        "user_id, email",
        "--output",
        str(target),
    )

    assert exported["status"] == "completed"
    assert exported["file"] == str(target)
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(rows) == exported["row_count"] == 3
    assert {"ann@example.com", "eve@example.com"} <= {row["email"] for row in rows}


def test_import_csv__into_a_dynamic_audience__is_refused_with_its_code(
    stack: Stack, project_key: str
) -> None:
    dynamic = as_json(
        stack, project_key, "audiences", "create", "Dyn", "--criteria", "Users with plan=gold"
    )

    refused = audience(
        stack,
        project_key,
        "import",
        "csv",
        str(DATA / "no_user_id.csv"),
        "--audience",
        dynamic["id"],
        check=False,
    )

    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("error: not_a_static_list: ")


@pytest.fixture(scope="module")
def klaviyo(stack: Stack) -> Iterator[FakeKlaviyo]:
    port = urlparse(stack.env["AUDIENCES_KLAVIYO_BASE_URL"]).port
    with running(FakeKlaviyo(), port=port) as fake:
        yield fake


def test_sync_klaviyo__connects_imports_a_list_and_follows_the_run(
    stack: Stack, project_key: str, klaviyo: FakeKlaviyo
) -> None:
    list_id = klaviyo.add_list("CLI list")
    klaviyo.add_profiles(list_id, [{"email": f"cli{n}@example.com"} for n in range(3)])

    synced = as_json(
        stack,
        project_key,
        "sync",
        "klaviyo",
        "--api-key",
        "pk_test_fake_key_1234",
        "--list",
        list_id,
    )

    (run,) = synced["items"]
    assert (run["name"], run["status"], run["profiles"], run["entered"]) == (
        "CLI list",
        "completed",
        3,
        3,
    )
    wait_for_count(stack, project_key, run["audience_id"], 3)
    again = as_json(stack, project_key, "sync", "klaviyo", "--audience", run["audience_id"])
    assert again["items"][0]["status"] == "completed"
    assert again["items"][0]["run_id"] != run["run_id"]


def test_status__reports_each_running_service_ready(stack: Stack) -> None:
    ports = {
        f"AUDIENCES_{name.upper()}_PORT": str(stack.services[name].port)
        for name in ("evaluator", "sync")
    }

    shown = json.loads(
        audience(stack, stack.admin_key, "--json", "status", check=True, **ports).stdout
    )

    health = {row["component"]: row["health"] for row in shown["items"]}
    assert {health[name] for name in ("api", "evaluator", "sync")} == {"ready"}
