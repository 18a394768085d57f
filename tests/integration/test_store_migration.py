"""Our FerretDB build opens a data directory an older build wrote, and keeps every _id rule."""

import json
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError

from tests.integration.conftest import ROOT, free_port

pytestmark = pytest.mark.integration

STORE_SH = ROOT / "deploy" / "local" / "store.sh"
TABLE = "profiles_0badc0de"


def _store_is_ferretdb(mongo_url: str) -> bool:
    """Whether the suite runs on FerretDB (ours, from `make test`, or one given by URL)."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
    try:
        return "ferretdbVersion" in client.admin.command("buildInfo")
    finally:
        client.close()


def _sjson(doc: dict[str, Any]) -> str:
    """A flat document of strings and ints in FerretDB's SQLite format (types beside values)."""
    types = {k: {"t": "string" if isinstance(v, str) else "int"} for k, v in doc.items()}
    return json.dumps({"$s": {"p": types, "$k": list(doc)}, **doc}, separators=(",", ":"))


def _write_legacy_directory(data: Path, docs: list[dict[str, Any]]) -> None:
    """A database as FerretDB 1.24 without our _id column lays it out: the document in one JSON
    column, its _id unique index built on an expression over that column."""
    with sqlite3.connect(data / "legacy.sqlite") as db:
        db.execute(
            "CREATE TABLE _ferretdb_collections (name TEXT NOT NULL UNIQUE CHECK(name != ''), "
            "table_name TEXT NOT NULL UNIQUE CHECK(table_name != ''), "
            "settings TEXT NOT NULL CHECK(settings != '')) STRICT"
        )
        settings = {
            "uuid": "00000000-0000-4000-8000-000000000000",
            "indexes": [
                {"name": "_id_", "key": [{"field": "_id", "descending": False}], "unique": True}
            ],
            "cappedSize": 0,
            "cappedDocuments": 0,
        }
        db.execute(
            "INSERT INTO _ferretdb_collections VALUES (?, ?, ?)",
            ("profiles", TABLE, json.dumps(settings)),
        )
        db.execute(
            f'CREATE TABLE "{TABLE}" (_ferretdb_sjson TEXT NOT NULL '
            "CHECK(_ferretdb_sjson != '')) STRICT"
        )
        db.execute(f'CREATE UNIQUE INDEX "{TABLE}__id_" ON "{TABLE}" (_ferretdb_sjson->\'_id\')')
        db.executemany(f'INSERT INTO "{TABLE}" VALUES (?)', [(_sjson(d),) for d in docs])


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"FerretDB did not listen on {port} within {timeout} s")


@pytest.fixture
def legacy_store(tmp_path: Path, mongo_url: str) -> Iterator[str]:
    # This checks our FerretDB build itself, in a server of its own; on MongoDB there is nothing
    # of ours to migrate (and the build may not be there).
    if not _store_is_ferretdb(mongo_url):
        pytest.skip("the suite runs on MongoDB, not on our FerretDB build")
    binary = subprocess.run(
        [str(STORE_SH), "ferretdb-bin"], capture_output=True, text=True, check=True
    ).stdout.strip()
    data = tmp_path / "data"
    data.mkdir()
    _write_legacy_directory(data, [{"_id": f"p/u{i}", "version": 1} for i in range(3)])
    port = free_port()
    log = (tmp_path / "ferretdb.log").open("wb")
    server = subprocess.Popen(
        [
            binary,
            "--handler=sqlite",
            f"--sqlite-url=file:{data}/",
            f"--listen-addr=127.0.0.1:{port}",
            "--telemetry=disable",
            "--log-level=warn",
            "--debug-addr=-",
            f"--state-dir={tmp_path}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_port(port)
        yield f"mongodb://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    with sqlite3.connect(data / "legacy.sqlite") as db:
        columns = [row[1] for row in db.execute(f"PRAGMA table_info('{TABLE}')")]
        (index_sql,) = db.execute(
            "SELECT sql FROM sqlite_master WHERE name = ?", (f"{TABLE}__id_",)
        ).fetchone()
    assert "_ferretdb_id" in columns
    assert "_ferretdb_id" in index_sql
    assert "->" not in index_sql


def test_legacy_directory__opened__every_id_rule_holds(legacy_store: str) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(legacy_store)
    try:
        profiles = client.legacy.profiles
        assert profiles.find_one({"_id": "p/u1"}) == {"_id": "p/u1", "version": 1}
        found = profiles.find({"_id": {"$in": ["p/u0", "p/u2", "p/none"]}})
        assert sorted(d["_id"] for d in found) == ["p/u0", "p/u2"]
        with pytest.raises(DuplicateKeyError):
            profiles.insert_one({"_id": "p/u1", "version": 9})
        stale = profiles.replace_one({"_id": "p/u1", "version": 2}, {"version": 3})
        assert stale.matched_count == 0
        current = profiles.replace_one({"_id": "p/u1", "version": 1}, {"version": 2})
        assert current.matched_count == 1
        profiles.insert_one({"_id": "p/u3", "version": 1})
        assert profiles.delete_one({"_id": "p/u0"}).deleted_count == 1
        assert sorted((d["_id"], d["version"]) for d in profiles.find({})) == [
            ("p/u1", 2),
            ("p/u2", 1),
            ("p/u3", 1),
        ]
    finally:
        client.close()
