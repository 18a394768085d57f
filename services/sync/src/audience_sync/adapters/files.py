"""Files of the sync service: uploaded CSVs read as streams, unload files written in place."""

import asyncio
import csv
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import IO

# A field larger than this is a malformed file (an unclosed quote swallowing the rest).
MAX_FIELD_BYTES = 1_000_000
csv.field_size_limit(MAX_FIELD_BYTES)


def _safe(directory: Path, name: str) -> Path:
    path = (directory / name).resolve()
    if path.parent != directory.resolve():
        raise ValueError(f"{name!r} is not a plain file name")
    return path


class CsvFiles:
    """Reads uploads from the imports directory row by row; never the whole file at once."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def path(self, name: str) -> Path:
        return _safe(self._directory, name)

    async def header(self, path: Path) -> list[str] | None:
        def read() -> list[str] | None:
            with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
                return next(csv.reader(handle), None)

        return await asyncio.to_thread(read)

    async def count_rows(self, path: Path) -> int:
        def count() -> int:
            with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
                return max(0, sum(1 for row in csv.reader(handle) if row) - 1)

        return await asyncio.to_thread(count)

    async def chunks(
        self, path: Path, skip: int, size: int
    ) -> AsyncIterator[list[tuple[int, list[str]]]]:
        """Rows after the header in chunks of `size`, as (row number, fields); header is row 1."""
        handle = path.open(newline="", encoding="utf-8-sig", errors="replace")
        try:
            rows = self._numbered(handle, skip)
            while chunk := await asyncio.to_thread(self._take, rows, size):
                yield chunk
        finally:
            handle.close()

    @staticmethod
    def _numbered(handle: IO[str], skip: int) -> Iterator[tuple[int, list[str]]]:
        reader = csv.reader(handle)
        next(reader, None)
        passed = 0
        for number, row in enumerate(reader, start=2):
            if not row:
                continue  # blank lines carry nothing; csv yields them as []
            passed += 1
            if passed > skip:
                yield number, row

    @staticmethod
    def _take(rows: Iterator[tuple[int, list[str]]], size: int) -> list[tuple[int, list[str]]]:
        chunk = []
        try:
            for _ in range(size):
                chunk.append(next(rows))
        except StopIteration:
            pass
        except csv.Error as exc:
            raise ValueError(f"unreadable CSV: {exc}") from exc
        return chunk


class ExportFile:
    """An unload file: written as `<name>.part`, truncated to a checkpoint on resume, renamed
    when complete so a reader never sees half a file under the final name."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._handle: IO[bytes] | None = None
        self._final: Path | None = None

    async def open(self, name: str, resume_at: int | None) -> None:
        def open_file() -> None:
            self._directory.mkdir(parents=True, exist_ok=True)
            self._final = _safe(self._directory, name)
            part = self._final.with_name(self._final.name + ".part")
            self._handle = part.open("r+b" if resume_at is not None and part.exists() else "wb")
            self._handle.truncate(resume_at or 0)
            self._handle.seek(resume_at or 0)

        await asyncio.to_thread(open_file)

    async def write(self, lines: Sequence[str]) -> int:
        def append() -> int:
            assert self._handle is not None
            self._handle.write("".join(lines).encode())
            self._handle.flush()
            # The checkpoint records this size; it must be on disk before it is recorded.
            os.fsync(self._handle.fileno())
            return self._handle.tell()

        return await asyncio.to_thread(append)

    async def complete(self) -> int:
        def close() -> int:
            assert self._handle is not None
            assert self._final is not None
            size = self._handle.tell()
            self._handle.close()
            Path(self._handle.name).replace(self._final)
            return size

        return await asyncio.to_thread(close)
