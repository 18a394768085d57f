"""Adapters behind the sync endpoints: their store records, command publishing, upload and unload
files, Klaviyo's list directory and the encryption of integration keys."""

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka.errors import KafkaError
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from faststream.kafka import KafkaBroker
from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from audience_api.adapters.mongo import MongoStore
from audience_api.errors import InvalidRequest, Unavailable
from audience_shared.commands import AnySyncCommand
from audience_shared.topics import Topic

Document = dict[str, Any]

# Must match audience_sync.adapters.secrets: the sync service decrypts what we encrypt.
KDF_INFO = b"audiences/integration-keys/v1"


class FernetKeyCipher:
    """Integration API keys encrypted at rest with a key derived from AUDIENCES_SECRET_KEY."""

    def __init__(self, secret: str) -> None:
        material = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KDF_INFO).derive(
            secret.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(material))

    def encrypt(self, plain: str) -> bytes:
        return self._fernet.encrypt(plain.encode())

    def decrypt(self, token: bytes) -> str | None:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            return None


class MongoSyncRecords:
    """Integrations, sync runs and locks, imports and exports: the records the sync service
    works from and reports progress in."""

    def __init__(self, store: MongoStore) -> None:
        self._db = store.db

    async def project_organization(self, project_id: str) -> str | None:
        doc = await self._db.projects.find_one({"_id": project_id}, {"organization_id": 1})
        return doc.get("organization_id") if doc else None

    async def audience(self, project_id: str, audience_id: str) -> Document | None:
        return await self._db.audiences.find_one(
            {"_id": audience_id, "project_id": project_id, "archived": False}
        )

    async def synced_audience_for(self, project_id: str, list_id: str) -> Document | None:
        return await self._db.audiences.find_one(
            {
                "project_id": project_id,
                "archived": False,
                "kind": "synced",
                "sync_source.list_id": list_id,
            }
        )

    async def insert_audience(self, audience: Document) -> None:
        await self._db.audiences.insert_one(audience)

    async def integration(self, project_id: str, kind: str) -> Document | None:
        return await self._db.integrations.find_one({"_id": f"{project_id}/{kind}"})

    async def save_integration(self, doc: Document) -> Document:
        fields = {k: v for k, v in doc.items() if k not in ("_id", "created_at")}
        await self._db.integrations.update_one(
            {"_id": doc["_id"]},
            {"$set": fields, "$setOnInsert": {"created_at": doc["created_at"]}},
            upsert=True,
        )
        return await self._db.integrations.find_one({"_id": doc["_id"]}) or doc

    async def delete_integration(self, project_id: str, kind: str) -> bool:
        result = await self._db.integrations.delete_one({"_id": f"{project_id}/{kind}"})
        return result.deleted_count == 1

    async def take_sync_lock(self, audience_id: str, run_id: str, now: datetime) -> str | None:
        """Make `run_id` the audience's one active sync; the holder's run id if another holds it.

        The same single-document guarded upsert the sync service's scheduler uses; a lock whose
        run already finished, or was never recorded, is taken over.
        """
        holder: str | None = None
        for _ in range(3):
            try:
                await self._db.sync_states.update_one(
                    {
                        "_id": audience_id,
                        "$or": [{"active_run_id": None}, {"active_run_id": run_id}],
                    },
                    {"$set": {"active_run_id": run_id, "locked_at": now}},
                    upsert=True,
                )
                return None
            except DuplicateKeyError:
                state = await self._db.sync_states.find_one({"_id": audience_id}) or {}
            holder = state.get("active_run_id")
            if holder is None:
                continue
            run = await self._db.sync_runs.find_one({"_id": holder}, {"status": 1})
            orphaned = run is None and state.get("locked_at", now) < now - timedelta(seconds=60)
            if orphaned or (run is not None and run.get("status") in ("completed", "failed")):
                await self._db.sync_states.update_one(
                    {"_id": audience_id, "active_run_id": holder},
                    {"$set": {"active_run_id": run_id, "locked_at": now}},
                )
                continue
            return str(holder)
        return holder or "unknown"

    async def release_sync_lock(self, audience_id: str, run_id: str) -> None:
        await self._db.sync_states.update_one(
            {"_id": audience_id, "active_run_id": run_id}, {"$set": {"active_run_id": None}}
        )

    async def sync_state(self, audience_id: str) -> Document | None:
        return await self._db.sync_states.find_one({"_id": audience_id})

    async def next_refresh_at(self, audience_id: str) -> datetime | None:
        doc = await self._db.schedules.find_one({"_id": audience_id})
        return doc.get("next_refresh_at") if doc else None

    async def insert(self, collection: str, record: Document) -> None:
        await self._db[collection].insert_one(record)

    async def record(self, collection: str, record_id: str) -> Document | None:
        return await self._db[collection].find_one({"_id": record_id})

    async def latest(self, collection: str, audience_id: str) -> Document | None:
        cursor = (
            self._db[collection]
            .find({"audience_id": audience_id})
            .sort("created_at", DESCENDING)
            .limit(1)
        )
        return next(iter([doc async for doc in cursor]), None)

    async def mark_failed(self, collection: str, record_id: str, error: Document) -> None:
        await self._db[collection].update_one(
            {"_id": record_id, "status": "queued"}, {"$set": {"status": "failed", "error": error}}
        )


class KafkaCommandPublisher:
    """Commands to the sync service, acknowledged by the broker before the request answers."""

    def __init__(self, broker: KafkaBroker, timeout_s: float = 10.0) -> None:
        self._broker = broker
        self._timeout_s = timeout_s

    async def publish_command(self, command: AnySyncCommand) -> None:
        try:
            await asyncio.wait_for(
                self._broker.publish(
                    command.model_dump(mode="json"), topic=Topic.SYNC_REQUESTS, key=command.key
                ),
                timeout=self._timeout_s,
            )
        except (TimeoutError, KafkaError) as exc:
            raise Unavailable("The event broker is not reachable; retry shortly") from exc


class TransferFiles:
    """Uploads land in the imports directory, unloads are read from the exports directory;
    the sync service is configured with the same two directories."""

    def __init__(self, imports_dir: Path, exports_dir: Path, max_upload_bytes: int) -> None:
        self._imports_dir = imports_dir
        self._exports_dir = exports_dir
        self._max_upload_bytes = max_upload_bytes

    async def save_upload(self, name: str, chunks: AsyncIterator[bytes]) -> int:
        """Stream the upload to disk chunk by chunk; never the whole body in memory."""
        self._imports_dir.mkdir(parents=True, exist_ok=True)
        final = self._imports_dir / name
        part = final.with_name(final.name + ".part")
        size = 0
        handle = await asyncio.to_thread(part.open, "wb")
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > self._max_upload_bytes:
                    raise InvalidRequest(
                        "file_too_large",
                        f"Uploads are limited to {self._max_upload_bytes} bytes",
                    )
                await asyncio.to_thread(handle.write, chunk)
        except BaseException:
            handle.close()
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise
        handle.close()
        await asyncio.to_thread(part.replace, final)
        return size

    async def first_line(self, name: str) -> str:
        def read() -> str:
            with (self._imports_dir / name).open(encoding="utf-8-sig", errors="replace") as f:
                return f.readline(64_000)

        return await asyncio.to_thread(read)

    async def discard_upload(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread((self._imports_dir / name).unlink)

    def export_path(self, name: str) -> Path | None:
        path = self._exports_dir / name
        return path if path.is_file() else None


class HttpKlaviyoLists:
    """Klaviyo's list directory (`GET /api/lists`, paged by 10), for naming imported lists."""

    def __init__(self, base_url: str, revision: str, timeout_s: float = 15.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._revision = revision
        self._timeout_s = timeout_s

    async def lists(self, api_key: str) -> list[Document]:
        found: list[Document] = []
        url: str | None = f"{self._base_url}/api/lists/"
        async with httpx.AsyncClient(timeout=self._timeout_s) as http:
            while url is not None:
                if not url.startswith(self._base_url + "/"):
                    raise Unavailable("Klaviyo answered with an unexpected link")
                document = await self._get(http, api_key, url)
                for resource in document.get("data", []):
                    attributes = resource.get("attributes") or {}
                    found.append({"id": str(resource["id"]), "name": attributes.get("name") or ""})
                url = (document.get("links") or {}).get("next")
        return found

    async def _get(self, http: httpx.AsyncClient, api_key: str, url: str) -> Document:
        headers = {
            "Authorization": f"Klaviyo-API-Key {api_key}",
            "revision": self._revision,
            "accept": "application/vnd.api+json",
        }
        for _ in range(3):
            try:
                response = await http.get(url, headers=headers)
            except httpx.HTTPError as exc:
                raise Unavailable("Klaviyo is not reachable; retry shortly") from exc
            if response.status_code == 429:
                # A short wait is fine inside a request; a long one is the caller's to retry.
                wait_s = float(response.headers.get("retry-after", "1") or 1)
                if wait_s > 5:
                    raise Unavailable("Klaviyo is throttling; retry shortly", int(wait_s) + 1)
                await asyncio.sleep(wait_s)
                continue
            if response.status_code in (401, 403):
                raise InvalidRequest(
                    "klaviyo_auth_failed", "Klaviyo refused the API key", {"status": 401}
                )
            if response.status_code >= 400:
                raise Unavailable(f"Klaviyo answered {response.status_code}; retry shortly")
            body: Document = response.json()
            return body
        raise Unavailable("Klaviyo is throttling; retry shortly")
