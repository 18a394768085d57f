"""A TCP proxy that injects network faults between a service and the store: delay, stall, cut."""

import asyncio
from dataclasses import dataclass, field


@dataclass
class FaultProxy:
    """Forwards 127.0.0.1:<port> to the upstream; faults apply to every connection at once.

    `delay_s` holds back each chunk; `stalled` stops forwarding (packets dropped and retried by
    TCP, as on a lossy link: the bytes arrive late, none is lost); `refusing` closes new
    connections at once; `cut()` resets every open connection.
    """

    upstream_host: str
    upstream_port: int
    delay_s: float = 0.0
    stalled: bool = False
    refusing: bool = False
    cuts: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def stall(self, on: bool) -> None:
        self.stalled = on
        if on:
            self._flowing.clear()
        else:
            self._flowing.set()

    def cut(self) -> None:
        self.cuts += 1
        for writer in list(self._writers):
            transport = writer.transport
            # abort() sends no FIN and drops buffered bytes: the peer sees a reset connection.
            transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
