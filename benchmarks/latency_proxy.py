"""A TCP proxy on 127.0.0.1 that delays every request by a fixed latency, and counts them.

`tc netem` is not available on these kernels, so latency is injected here: each chunk the
client sends (an HTTP request, on a keep-alive connection) waits `latency` seconds before it
is forwarded. Responses flow back undelayed; their bytes are counted.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass


@dataclass
class Counts:
    requests: int = 0
    bytes_down: int = 0


class LatencyProxy:
    def __init__(self, upstream_port: int, latency: float):
        self.upstream_port = upstream_port
        self.latency = latency
        self.counts = Counts()
        self.port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._cancel_connections(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _cancel_connections(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def reset(self) -> None:
        self.counts = Counts()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, client_reader, client_writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            self._pipe(client_reader, up_writer, upstream=True),
            self._pipe(up_reader, client_writer, upstream=False),
            return_exceptions=True,
        )

    async def _pipe(self, reader, writer, upstream: bool) -> None:
        try:
            while data := await reader.read(1 << 16):
                if upstream:
                    if data[:4] in (b"GET ", b"HEAD", b"PUT ", b"POST"):
                        self.counts.requests += 1
                        await asyncio.sleep(self.latency)
                else:
                    self.counts.bytes_down += len(data)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
