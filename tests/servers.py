"""Real servers on 127.0.0.1 for the tests: S3 (moto's server mode) and HTTP with Range."""

from __future__ import annotations

import contextlib
import email.utils
import functools
import hashlib
import http.server
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

    def upload_folder(self, folder: Path, bucket: str, prefix: str = "") -> None:
        client = boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1", **CREDENTIALS
        )
        client.create_bucket(Bucket=bucket)
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                key = prefix + path.relative_to(folder).as_posix()
                client.upload_file(str(path), bucket, key)


@contextlib.contextmanager
def s3_server():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()


@dataclass
class RequestLog:
    """What the HTTP server was asked: (method, path, Range header) per request."""

    requests: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, path: str, byte_range: str | None) -> None:
        with self.lock:
            self.requests.append((method, path, byte_range))

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    def per_path(self) -> Counter:
        return Counter(path for _, path, _ in self.requests)


@dataclass
class Faults:
    """Faults to inject, each once, into the next GETs of paths ending with a given suffix:
    an HTTP status ("500", "503", "429", "403"), "drop" (close without answering),
    "truncate" (promise the whole body, send half), "short" (a consistent 206 with half the
    bytes asked for, as some mirrors do) or "stall" (send the headers, then nothing for
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
        size = len(data)
        status, start, end = 200, 0, size
        if byte_range:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", byte_range.strip())
            if not match or match.groups() == ("", ""):
                self.send_error(416)
                return
            first, last = match.groups()
            if first == "":
                start, end = max(size - int(last), 0), size
            else:
                start = int(first)
                end = min(int(last) + 1, size) if last else size
            if start >= size or start >= end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        if fault == "short":  # a consistent answer that is simply shorter than asked
            end = start + (end - start) // 2
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", '"' + hashlib.md5(data).hexdigest() + '"')
        self.send_header(
            "Last-Modified", email.utils.formatdate(os.path.getmtime(path), usegmt=True)
        )
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            if fault == "stall":  # headers sent, then silence
                time.sleep(STALL_SECONDS)
            if fault == "truncate":
                self.wfile.write(data[start : start + (end - start) // 2])
                self.close_connection = True
                return
            self.wfile.write(data[start:end])


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
