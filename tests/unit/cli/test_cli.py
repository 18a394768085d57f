"""The `audience` CLI against a scripted API (httpx MockTransport): requests, output, errors."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from audience_cli.main import app
from audience_cli.session import Session

Handler = Callable[[httpx.Request], httpx.Response]


class FakeApi:
    """Answers per (method, path) with a queue of responses; records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[httpx.Response]] = {}
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    def on(self, method: str, path: str, *responses: httpx.Response) -> None:
        self.routes[(method, path)] = list(responses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(request.read())
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            return error(404, "not_found", f"no route {request.method} {request.url.path}")
        # The last answer repeats, so a finished job stays finished however often it is polled.
        return queue.pop(0) if len(queue) > 1 else queue[0]


def ok(body: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


def error(status: int, code: str, message: str, details: Any = None) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": code, "message": message, "details": details}}
    )


def cli(api: Handler, *args: str, key: str | None = "sk_test", transport: Any = None) -> Any:
    session = Session(transport=transport or httpx.MockTransport(api), poll_interval_s=0)
    options = ["--key", key] if key else []
    return CliRunner().invoke(app, [*options, *args], obj=session)


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


def test_keys_list__renders_a_table__with_the_bearer_key(api: FakeApi) -> None:
    api.on(
        "GET",
        "/v1/keys",
        ok({"items": [{"id": "key_1", "prefix": "sk_live_abcd", "scope": "admin", "name": "ci"}]}),
    )

    result = cli(api, "keys", "list")

    assert result.exit_code == 0, result.output
    assert "API keys" in result.stdout
    assert "key_1" in result.stdout
    assert "sk_live_abcd" in result.stdout
    assert api.requests[0].headers["authorization"] == "Bearer sk_test"


def test_json__prints_one_document__and_pages_through_cursors(api: FakeApi) -> None:
    first = {"items": [{"id": "aud_1"}], "page_info": {"has_next_page": True, "end_cursor": "c1"}}
    second = {"items": [{"id": "aud_2"}], "page_info": {"has_next_page": False, "end_cursor": "c2"}}
    api.on("GET", "/v1/audiences", ok(first), ok(second))

    result = cli(api, "--json", "--project", "prj_1", "audiences", "list")

    assert result.exit_code == 0, result.output
    assert [item["id"] for item in json.loads(result.stdout)["items"]] == ["aud_1", "aud_2"]
    assert api.requests[1].url.params["after"] == "c1"
    assert all(r.url.params["project_id"] == "prj_1" for r in api.requests)


def test_api_error__is_one_line_with_its_code__and_exit_1(api: FakeApi) -> None:
    api.on("GET", "/v1/audiences/aud_x", error(404, "not_found", "Audience aud_x not found"))

    result = cli(api, "audiences", "show", "aud_x")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "error: not_found: Audience aud_x not found"


def test_api_error_under_json__is_the_error_shape_on_stderr(api: FakeApi) -> None:
    api.on(
        "POST",
        "/v1/audiences",
        error(400, "invalid_criteria", "Expected AND or OR [at 12]", {"position": 12}),
    )

    result = cli(api, "--json", "audiences", "create", "Bad", "--criteria", "Users with x")

    assert result.exit_code == 1
    assert json.loads(result.stderr)["error"] == {
        "code": "invalid_criteria",
        "message": "Expected AND or OR [at 12]",
        "details": {"position": 12},
    }


def test_error_without_the_shape__names_the_status(api: FakeApi) -> None:
    api.on("GET", "/v1/keys", httpx.Response(502, text="Bad gateway\n<html>"))

    result = cli(api, "keys", "list")

    assert result.exit_code == 1
    assert result.stderr.strip() == "error: http_502: Bad gateway"


def test_unreachable_api__says_so_in_one_line() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    result = cli(refuse, "keys", "list")

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: unreachable: cannot reach")


def test_no_key__is_refused_before_any_request(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUDIENCES_API_KEY", raising=False)
    monkeypatch.setenv("AUDIENCES_LOCAL_DIR", str(tmp_path))  # no demo key to fall back on

    result = cli(api, "keys", "list", key=None)

    assert result.exit_code == 1
    assert result.stderr.startswith("error: no_api_key:")
    assert api.requests == []


def test_demo_key__is_the_fallback_when_no_key_is_given(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUDIENCES_API_KEY", raising=False)
    monkeypatch.setenv("AUDIENCES_LOCAL_DIR", str(tmp_path))
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "demo.json").write_text(json.dumps({"key": "sk_live_demo"}))
    api.on("GET", "/v1/keys", ok({"items": []}))

    result = cli(api, "keys", "list", key=None)

    assert result.exit_code == 0, result.output
    assert api.requests[0].headers["authorization"] == "Bearer sk_live_demo"


def test_keys_create_and_revoke__send_what_was_asked(api: FakeApi) -> None:
    api.on("POST", "/v1/keys", ok({"id": "key_9", "key": "sk_read_secret", "scope": "read"}, 201))
    api.on("DELETE", "/v1/keys/key_9", httpx.Response(204))

    created = cli(api, "--json", "keys", "create", "--scope", "read", "--project", "prj_2")
    revoked = cli(api, "keys", "revoke", "key_9")

    assert created.exit_code == 0, created.output
    assert revoked.exit_code == 0, revoked.output
    assert json.loads(created.stdout)["key"] == "sk_read_secret"
    assert json.loads(api.bodies[0]) == {"project_id": "prj_2", "scope": "read", "name": None}
    assert "Revoked key_9" in revoked.stdout


def test_import_csv__streams_the_file__then_follows_rows_to_the_end(
    api: FakeApi, tmp_path: Path
) -> None:
    csv_file = tmp_path / "members.csv"
    csv_file.write_text("user_id,email\nu1,a@example.com\nu2,bad\nu3,c@example.com\n")
    api.on("POST", "/v1/audiences/aud_s/import", ok({"import_id": "imp_1"}, 202))
    status = {"import_id": "imp_1", "rows_total": 3, "rows_failed": 0, "errors": []}
    api.on(
        "GET",
        "/v1/audiences/aud_s/imports/imp_1",
        ok({**status, "status": "queued", "rows_total": None, "rows_imported": 0}),
        ok({**status, "status": "running", "rows_imported": 1}),
        ok(
            {
                **status,
                "status": "completed",
                "rows_imported": 2,
                "rows_failed": 1,
                "errors": [{"row": 3, "message": "invalid email"}],
            }
        ),
    )

    result = cli(api, "import", "csv", str(csv_file), "--audience", "aud_s")

    assert result.exit_code == 0, result.output
    upload = api.requests[0]
    assert upload.headers["content-type"] == "text/csv"
    assert api.bodies[0] == csv_file.read_bytes()
    assert "Imported 2 of 3 rows into aud_s; 1 rejected." in result.stdout
    assert "invalid email" in result.stdout
    assert len(api.requests) == 4  # upload, then polls until completed


def test_import_csv__failed_import__exits_with_its_code(api: FakeApi, tmp_path: Path) -> None:
    csv_file = tmp_path / "members.csv"
    csv_file.write_text("user_id\nu1\n")
    api.on("POST", "/v1/audiences/aud_s/import", ok({"import_id": "imp_2"}, 202))
    api.on(
        "GET",
        "/v1/audiences/aud_s/imports/imp_2",
        ok(
            {
                "status": "failed",
                "rows_total": None,
                "rows_imported": 0,
                "rows_failed": 0,
                "error": {"code": "source_unavailable", "message": "store down"},
            }
        ),
    )

    result = cli(api, "import", "csv", str(csv_file), "--audience", "aud_s")

    assert result.exit_code == 1
    # Progress bars draw above on stderr; the error is the last line.
    assert result.stderr.strip().splitlines()[-1] == (
        "error: source_unavailable: import imp_2 failed: store down"
    )


def test_import_csv__refused_upload__shows_the_api_code(api: FakeApi, tmp_path: Path) -> None:
    csv_file = tmp_path / "members.csv"
    csv_file.write_text("name\nann\n")
    api.on(
        "POST",
        "/v1/audiences/aud_s/import",
        error(400, "header_required", "The first row must be a header"),
    )

    result = cli(api, "import", "csv", str(csv_file), "--audience", "aud_s")

    assert result.exit_code == 1
    assert "error: header_required: The first row must be a header" in result.stderr


def test_export__follows_then_downloads_to_the_file(api: FakeApi, tmp_path: Path) -> None:
    content = b"user_id,email\nu1,a@example.com\n"
    api.on("POST", "/v1/audiences/aud_1/export", ok({"export_id": "exp_1", "status": "queued"}))
    api.on(
        "GET",
        "/v1/exports/exp_1",
        ok({"status": "running", "row_count": 0, "rows_total": 1}),
        ok({"status": "completed", "row_count": 1, "rows_total": 1, "bytes": len(content)}),
    )
    api.on("GET", "/v1/exports/exp_1/download", httpx.Response(200, content=content))
    target = tmp_path / "out.csv"

    result = cli(
        api,
        "--json",
        "audiences",
        "export",
        "aud_1",
        "--columns",
        "user_id, email",
        "-o",
        str(target),
    )

    assert result.exit_code == 0, result.output
    assert target.read_bytes() == content
    assert not (tmp_path / "out.csv.part").exists()
    assert json.loads(api.bodies[0]) == {
        "format": "csv",
        "include_traits": False,
        "columns": "user_id, email",
    }
    assert json.loads(result.stdout)["file"] == str(target)


def test_export__download_refused__leaves_no_file(api: FakeApi, tmp_path: Path) -> None:
    api.on("POST", "/v1/audiences/aud_1/export", ok({"export_id": "exp_2"}))
    api.on("GET", "/v1/exports/exp_2", ok({"status": "completed", "row_count": 0}))
    api.on(
        "GET",
        "/v1/exports/exp_2/download",
        error(409, "export_not_ready", "The export has not completed"),
    )
    target = tmp_path / "out.csv"

    result = cli(api, "audiences", "export", "aud_1", "-o", str(target))

    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: export_not_ready: The export has not completed"
    )
    assert list(tmp_path.iterdir()) == []


def test_sync_klaviyo__resyncs_an_audience_and_shows_the_run(api: FakeApi) -> None:
    api.on("POST", "/v1/audiences/aud_k/sync", ok({"run_id": "run_1"}, 202))
    api.on("GET", "/v1/audiences/aud_k", ok({"id": "aud_k", "name": "VIP"}))
    run = {"run_id": "run_1", "pages": 3, "profiles": 250, "entered": 250, "exited": 0}
    api.on(
        "GET",
        "/v1/audiences/aud_k/syncs/run_1",
        ok({"run": {**run, "status": "running", "profiles": 100}}),
        ok({"run": {**run, "status": "completed"}}),
    )

    result = cli(api, "--json", "sync", "klaviyo", "--audience", "aud_k", "--incremental")

    assert result.exit_code == 0, result.output
    assert json.loads(api.bodies[0]) == {"mode": "incremental"}
    (shown,) = json.loads(result.stdout)["items"]
    assert (shown["name"], shown["status"], shown["profiles"]) == ("VIP", "completed", 250)


def test_sync_klaviyo__imports_lists_and_follows_each(api: FakeApi) -> None:
    api.on(
        "POST",
        "/v1/audiences/import/klaviyo",
        ok({"items": [{"id": "aud_a", "name": "A"}, {"id": "aud_b", "name": "B"}]}, 201),
    )
    for audience in ("aud_a", "aud_b"):
        api.on(
            "GET",
            f"/v1/audiences/{audience}/sync",
            ok({"run": {"status": "completed", "profiles": 5, "pages": 1}}),
        )

    result = cli(api, "sync", "klaviyo", "--list", "L1", "--list", "L2")

    assert result.exit_code == 0, result.output
    assert json.loads(api.bodies[0]) == {"list_ids": ["L1", "L2"]}
    assert "aud_a" in result.stdout
    assert "aud_b" in result.stdout


def test_up_down_bench__run_the_checkout_scripts__and_pass_their_exit_codes(
    monkeypatch: pytest.MonkeyPatch, api: FakeApi
) -> None:
    calls: list[tuple[list[str], Any]] = []

    def call(command: list[str], cwd: Any = None) -> int:
        calls.append((command, cwd))
        return 3 if command[-1] == "bench.bench_evaluator" else 0

    monkeypatch.setattr("audience_cli.commands.local.subprocess.call", call)

    up = cli(api, "up")
    down = cli(api, "down")
    bench = cli(api, "bench")

    assert up.exit_code == 0
    assert down.exit_code == 0
    assert [Path(c[0][0]).name for c in calls[:2]] == ["up.sh", "down.sh"]
    assert all(Path(c[0][0]).parent.name == "local" for c in calls[:2])
    assert [c[0][-1] for c in calls[2:]] == ["bench.bench_rules", "bench.bench_evaluator"]
    assert (Path(calls[2][1]) / "bench" / "bench_rules.py").is_file()
    assert bench.exit_code == 1
    assert bench.stderr.strip() == "error: bench_failed: evaluator benchmark exited with 3"
