"""Real servers on 127.0.0.1 for the tests: S3 (moto's server mode) and HTTP with Range."""

from __future__ import annotations

import contextlib
import email.utils
import functools
import hashlib
import http.server
import logging
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

STALL_SECONDS = 3.0
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass
class S3Server:
    endpoint_url: str

    @property
    def storage_options(self) -> dict:
        return {
            "endpoint_url": self.endpoint_url,
            "key": CREDENTIALS["aws_access_key_id"],
            "secret": CREDENTIALS["aws_secret_access_key"],
            "client_kwargs": {"region_name": "us-east-1"},
        }

    def client(self):
        """A boto3 S3 client for this server."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1", **CREDENTIALS
        )

    def upload_folder(self, folder: Path, bucket: str, prefix: str = "") -> list[str]:
        """Create `bucket` and upload every file under folder as prefix + its relative path;
        returns the keys."""
        client = self.client()
        client.create_bucket(Bucket=bucket)
        keys = []
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                keys.append(prefix + path.relative_to(folder).as_posix())
                client.upload_file(str(path), bucket, keys[-1])
        return keys


@contextlib.contextmanager
def s3_server():
    """moto's S3 in server mode on 127.0.0.1 (a free port): yields an S3Server."""
    # moto's werkzeug server logs every request to stderr.
    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()
        werkzeug_log.setLevel(level)


@dataclass
class RequestLog:
    """What the HTTP server was asked: (method, path, Range header) per request, in order of
    arrival. Paths are as requested, with their leading "/"."""

    requests: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, path: str, byte_range: str | None) -> None:
        with self.lock:
            self.requests.append((method, path, byte_range))

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    @property
    def total(self) -> int:
        return len(self.requests)

    def per_path(self, method: str | None = None) -> Counter:
        """{path: number of requests}, optionally of one method only ("GET", "HEAD")."""
        return Counter(p for m, p, _ in self.requests if method in (None, m))

    def ranges(self, path_suffix: str = "") -> list[str | None]:
        """The Range headers of the GETs of paths ending with path_suffix (None: no Range)."""
        return [r for m, p, r in self.requests if m == "GET" and p.endswith(path_suffix)]


@dataclass
class Faults:
    """Faults to inject, each once, into the next GETs of paths ending with a given suffix:
    an HTTP status ("500", "503", "429", "403"), "drop" (close without answering),
    "truncate" (promise the whole body, send half), "short" (a consistent 206 with half the
    bytes asked for, as some mirrors do), "ignore_range" (200 with the whole file, as a server
    without Range support does) or "stall" (send the headers, then nothing for
    STALL_SECONDS)."""

    planned: list = field(default_factory=list)  # [(path suffix, fault)]
    injected: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, suffix: str, fault: str, times: int = 1) -> None:
        with self.lock:
            self.planned.extend([(suffix, fault)] * times)

    def take(self, path: str) -> str | None:
        with self.lock:
            for k, (suffix, fault) in enumerate(self.planned):
                if path.endswith(suffix):
                    del self.planned[k]
                    self.injected.append((path, fault))
                    return fault
        return None


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single-range header `bytes=a-b`, `bytes=a-` or `bytes=-n`
    against a file of `size` bytes; None if it cannot be satisfied. Multiple ranges are not
    supported: they get 416 too, so a test notices instead of receiving a silent 200."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # suffix: the last n bytes
        start, end = max(size - int(last), 0), size
    else:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    if start >= size or start >= end:
        return None
    return start, end


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range support (RFC 9110), ETag and Last-Modified."""

    log: RequestLog
    faults: Faults

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool):
        byte_range = self.headers.get("Range")
        self.log.add(self.command, self.path, byte_range)
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        fault = self.faults.take(self.path) if body else None
        if fault and fault.isdigit():
            self.send_error(int(fault))
            return
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        data = path.read_bytes()
        status, start, end = 200, 0, len(data)
        if byte_range and fault != "ignore_range":
            satisfiable = parse_range(byte_range, len(data))
            if satisfiable is None:
                self._unsatisfiable(len(data))
                return
            status, (start, end) = 206, satisfiable
        if fault == "short":  # a consistent answer that is simply shorter than asked
            end = start + (end - start) // 2
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", '"' + hashlib.md5(data).hexdigest() + '"')
        self.send_header(
            "Last-Modified", email.utils.formatdate(os.path.getmtime(path), usegmt=True)
        )
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if not body:
            return
        if fault == "stall":  # headers sent, then silence
            time.sleep(STALL_SECONDS)
        if fault == "truncate":
            self.wfile.write(data[start : start + (end - start) // 2])
            self.close_connection = True
            return
        self.wfile.write(data[start:end])

    def _unsatisfiable(self, size: int) -> None:
        self.send_response(416)
        self.send_header("Content-Range", f"bytes */{size}")
        self.send_header("Content-Length", "0")
        self.end_headers()


@dataclass
class HTTPServer:
    base_url: str
    log: RequestLog
    faults: Faults


class _ThreadingServer(http.server.ThreadingHTTPServer):
    # The default listen backlog (5) drops the SYNs of a client opening 64 connections at once,
    # which then waits seconds to retransmit: real servers accept far more.
    request_queue_size = 256


@contextlib.contextmanager
def http_range_server(folder: Path):
    """Serve folder on 127.0.0.1 (a free port): yields an HTTPServer whose base_url ends with
    "/", whose log records every request and whose faults inject failures."""
    log = RequestLog()
    faults = Faults()
    handler = type("Handler", (RangeHandler,), {"log": log, "faults": faults})
    server = _ThreadingServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HTTPServer(f"http://127.0.0.1:{server.server_address[1]}/", log, faults)
    finally:
        server.shutdown()
        server.server_close()
