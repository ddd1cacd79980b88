"""A TCP proxy on 127.0.0.1 that delays every request by a fixed latency, and counts them.

`tc netem` is not available on these kernels, so latency is injected here: each chunk the
client sends (an HTTP request, on a keep-alive connection) waits `latency` seconds before it
is forwarded. Responses flow back undelayed; their bytes are counted. The proxy runs in a
process of its own, so that its work does not compete for the measured process's GIL.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from dataclasses import dataclass


@dataclass
class Counts:
    requests: int
    bytes_down: int


class LatencyProxy:
    def __init__(self, upstream_port: int, latency: float):
        self.upstream_port = upstream_port
        self.latency = latency
        context = multiprocessing.get_context("spawn")
        self._requests = context.Value("q", 0)
        self._bytes = context.Value("q", 0)
        self._port = context.Value("i", 0)
        self._ready = context.Event()
        self._process = context.Process(
            target=_serve,
            args=(upstream_port, latency, self._requests, self._bytes, self._port, self._ready),
            daemon=True,
        )

    def __enter__(self) -> LatencyProxy:
        self._process.start()
        if not self._ready.wait(10):
            raise RuntimeError("latency proxy did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._process.terminate()
        self._process.join(5)

    @property
    def port(self) -> int:
        return self._port.value

    @property
    def counts(self) -> Counts:
        return Counts(self._requests.value, self._bytes.value)

    def reset(self) -> None:
        with self._requests.get_lock():
            self._requests.value = 0
        with self._bytes.get_lock():
            self._bytes.value = 0


def _serve(upstream_port, latency, requests, nbytes, port, ready) -> None:
    async def pipe(reader, writer, upstream: bool) -> None:
        try:
            while data := await reader.read(1 << 16):
                if upstream:
                    if data[:4] in (b"GET ", b"HEAD", b"PUT ", b"POST"):
                        with requests.get_lock():
                            requests.value += 1
                        await asyncio.sleep(latency)
                else:
                    with nbytes.get_lock():
                        nbytes.value += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(client_reader, client_writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pipe(client_reader, up_writer, upstream=True),
            pipe(up_reader, client_writer, upstream=False),
        )

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port.value = server.sockets[0].getsockname()[1]
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())
