"""Real servers on 127.0.0.1 for the tests: S3 (moto's server mode) and HTTP with Range."""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import http.client
import http.server
import logging
import os
import re
import socket
import threading
import time
import urllib.parse
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
    headers: list = field(default_factory=list)  # each request's headers, {lowercase name: value}
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, path: str, byte_range: str | None, headers=None) -> None:
        with self.lock:
            self.requests.append((method, path, byte_range))
            self.headers.append({k.lower(): v for k, v in (headers or {}).items()})

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()
            self.headers.clear()

    @property
    def total(self) -> int:
        return len(self.requests)

    def per_path(self, method: str | None = None) -> Counter:
        """{path: number of requests}, optionally of one method only ("GET", "HEAD")."""
        return Counter(p for m, p, _ in self.requests if method in (None, m))

    def ranges(self, path_suffix: str = "") -> list[str | None]:
        """The Range headers of the GETs of paths ending with path_suffix (None: no Range)."""
        return [r for m, p, r in self.requests if m == "GET" and p.endswith(path_suffix)]


EVERY_FAULTS: list = []  # every Faults made in this process


def injected_counts() -> Counter:
    """{fault kind: how many were injected} over every server of the test run."""
    kinds = Counter()
    for faults in EVERY_FAULTS:
        for _, fault in faults.injected:
            kind = "change the file" if callable(fault) else fault.split()[0]
            if kind != "pass":
                kinds[kind] += 1
    return kinds


@dataclass
class Faults:
    """Faults to inject, each once, into the next GETs of paths ending with a given suffix:
    an HTTP status ("500", "503", "429", "403"), "drop" (close without answering),
    "truncate" (promise the whole body, send half), "short" (a consistent 206 with half the
    bytes asked for, as some mirrors do), "ignore_range" (200 with the whole file, as a server
    without Range support does), "wrong_range" (a consistent 206 for the range one byte
    later), "stall" (send the headers, then nothing for STALL_SECONDS; "stall 20": for 20 s),
    "pass" (answer normally: lets a later fault hit a later request) or a callable (run, e.g.
    to change the file, before the request is answered normally)."""

    planned: list = field(default_factory=list)  # [(path suffix, fault)]
    injected: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        EVERY_FAULTS.append(self)  # for the count at the end of the test run

    def add(self, suffix: str, fault, times: int = 1) -> None:
        with self.lock:
            self.planned.extend([(suffix, fault)] * times)

    def take(self, path: str):
        """The fault for this GET, if any; a callable one has been run."""
        with self.lock:
            for k, (suffix, fault) in enumerate(self.planned):
                if path.endswith(suffix):
                    del self.planned[k]
                    self.injected.append((path, fault))
                    break
            else:
                return None
        if callable(fault):
            fault()
            return None
        return fault


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


class FaultyHandler(http.server.BaseHTTPRequestHandler):
    """Sends answers, with a fault injected where one is planned."""

    protocol_version = "HTTP/1.1"  # keep-alive, as real servers
    faults: Faults

    def log_message(self, *args):  # quiet
        pass

    def send_answer(
        self, status: int, headers: dict, body: bytes, fault, send_body=True, whole_file=None
    ):
        """Send status, headers and body; `fault` (see Faults) spoils them (`whole_file()`:
        the file's bytes, for the faults that send another range)."""
        if fault and fault.isdigit():
            status, headers, body = self.error_answer(int(fault))
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if status == 206 and fault in ("short", "wrong_range"):
            start, last, size = map(int, re.findall(r"\d+", headers["Content-Range"]))
            if fault == "short":  # a consistent answer that is simply shorter than asked
                last = start + len(body) // 2 - 1
            else:  # a consistent answer for the wrong bytes
                start, last = start + 1, min(last + 1, size - 1)
            body = whole_file()[start : last + 1]
            headers["Content-Range"] = f"bytes {start}-{last}/{size}"
        self.send_response(status)
        if send_body or "Content-Length" not in headers:  # a HEAD answer keeps the file's
            headers["Content-Length"] = str(len(body))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not send_body:
            return
        if fault and fault.startswith("stall"):  # headers sent, then silence
            time.sleep(float(fault.split()[1]) if " " in fault else STALL_SECONDS)
        if fault == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def error_answer(self, status: int) -> tuple[int, dict, bytes]:
        return status, {"Content-Type": "text/plain"}, f"injected {status}\n".encode()


class RangeHandler(FaultyHandler):
    """Static files with single-range support (RFC 9110), ETag and Last-Modified, and the
    If-Match / If-Unmodified-Since preconditions (unless `honours_conditions` is False, as
    on some servers)."""

    log: RequestLog
    folder: Path
    honours_conditions = True
    # {path suffix: URL}: requests (HEAD and GET) of such paths are answered with a redirect
    # there (`redirect_status`), the path appended.
    redirects: dict
    redirect_status = 302

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool):
        byte_range = self.headers.get("Range")
        self.log.add(self.command, self.path, byte_range, self.headers)
        target = next((u for s, u in self.redirects.items() if self.path.endswith(s)), None)
        if target is not None:
            answer = f"see {target}".encode()
            headers = {"Location": target + self.path.lstrip("/"), "Content-Type": "text/plain"}
            self.send_answer(self.redirect_status, headers, answer, None, send_body=body)
            return
        fault = self.faults.take(self.path) if body else None
        path = self.folder / urllib.parse.unquote(self.path.split("?")[0]).lstrip("/")
        if not path.is_file():
            self.send_answer(*self.error_answer(404), None)
            return
        data = path.read_bytes()
        validators = {
            "ETag": '"' + hashlib.md5(data).hexdigest() + '"',
            "Last-Modified": email.utils.formatdate(os.path.getmtime(path), usegmt=True),
        }
        if self.honours_conditions and self._precondition_fails(validators):
            self.send_answer(*self.error_answer(412), None)
            return
        status, start, end = 200, 0, len(data)
        if byte_range and fault != "ignore_range":
            satisfiable = parse_range(byte_range, len(data))
            if satisfiable is None:
                headers = {"Content-Range": f"bytes */{len(data)}"}
                self.send_answer(416, headers, b"", None)
                return
            status, (start, end) = 206, satisfiable
        headers = {"Accept-Ranges": "bytes", **validators}
        headers["Content-Type"] = "application/octet-stream"
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        self.send_answer(
            status, headers, data[start:end], fault, send_body=body, whole_file=lambda: data
        )

    def _precondition_fails(self, validators: dict) -> bool:
        if_match = self.headers.get("If-Match")
        if if_match is not None:
            return if_match.strip() not in ("*", validators["ETag"])
        since = self.headers.get("If-Unmodified-Since")
        if since is not None:
            modified = email.utils.parsedate_to_datetime(validators["Last-Modified"])
            return modified > email.utils.parsedate_to_datetime(since)
        return False


@dataclass
class HTTPServer:
    base_url: str
    log: RequestLog
    faults: Faults
    # {path suffix: base URL}: the requests of those paths are redirected there (see
    # RangeHandler); change it while the server runs.
    redirects: dict = field(default_factory=dict)
    handler: type | None = None  # its handler class (e.g. to set its redirect_status)


class _ThreadingServer(http.server.ThreadingHTTPServer):
    # The default listen backlog (5) drops the SYNs of a client opening 64 connections at once,
    # which then waits seconds to retransmit: real servers accept far more.
    request_queue_size = 256


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


@contextlib.contextmanager
def _serving(handler, host: str = "127.0.0.1", port: int = 0):
    """Run `handler` on host (a free port) in a thread: yields the port."""
    server = (_ThreadingServer6 if ":" in host else _ThreadingServer)((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def http_range_server(
    folder: Path, honours_conditions: bool = True, host: str = "127.0.0.1", port: int = 0
):
    """Serve folder on host (127.0.0.1; ::1 and, in a network namespace, other addresses for
    the tests of redirects), a free port unless given: yields an HTTPServer whose base_url
    ends with "/", whose log records every request, whose faults inject failures and whose
    redirects send requests elsewhere."""
    log, faults, redirects = RequestLog(), Faults(), {}
    handler = type(
        "Handler",
        (RangeHandler,),
        {
            "log": log,
            "faults": faults,
            "folder": Path(folder),
            "honours_conditions": honours_conditions,
            "redirects": redirects,
        },
    )
    with _serving(handler, host, port) as bound:
        shown = f"[{host}]" if ":" in host else host
        yield HTTPServer(f"http://{shown}:{bound}/", log, faults, redirects, handler)


class S3ProxyHandler(FaultyHandler):
    """Forwards requests to an S3 server, spoiling the answers to GETs as `faults` plan, with
    errors in S3's XML form (a 503 is S3's SlowDown)."""

    upstream: str  # host:port
    log: RequestLog

    def do_GET(self):
        self._forward(body=True)

    def do_HEAD(self):
        self._forward(body=False)

    def _forward(self, body: bool):
        self.log.add(self.command, self.path, self.headers.get("Range"), self.headers)
        fault = self.faults.take(self.path.split("?")[0]) if body else None
        status, headers, data = self._upstream(self.command, dict(self.headers.items()))
        if fault == "ignore_range" and status == 206:  # as a server without Range support
            status, data = 200, self._whole_file()
            headers = {k: v for k, v in headers.items() if k.lower() != "content-range"}
        self.send_answer(status, headers, data, fault, send_body=body, whole_file=self._whole_file)

    def _upstream(self, method: str, headers: dict) -> tuple[int, dict, bytes]:
        connection = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            connection.request(method, self.path, headers=headers)
            reply = connection.getresponse()
            data = reply.read()
        finally:
            connection.close()
        hop_by_hop = {"transfer-encoding", "connection", "keep-alive"}
        kept = {k: v for k, v in reply.getheaders() if k.lower() not in hop_by_hop}
        if method != "HEAD":
            kept = {k: v for k, v in kept.items() if k.lower() != "content-length"}
        return reply.status, kept, data

    def _whole_file(self) -> bytes:
        headers = {k: v for k, v in self.headers.items() if k.lower() != "range"}
        return self._upstream("GET", headers)[2]

    def error_answer(self, status: int) -> tuple[int, dict, bytes]:
        code = {
            403: "AccessDenied",
            404: "NoSuchKey",
            412: "PreconditionFailed",
            500: "InternalError",
            503: "SlowDown",
        }.get(status, f"Status{status}")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f"<Error><Code>{code}</Code><Message>injected</Message>"
            "<RequestId>injected</RequestId></Error>"
        )
        return status, {"Content-Type": "application/xml"}, body.encode()


@dataclass
class S3Proxy:
    endpoint_url: str
    log: RequestLog
    faults: Faults
    storage_options: dict


@contextlib.contextmanager
def s3_fault_proxy(s3: S3Server):
    """A proxy on 127.0.0.1 in front of `s3` that injects faults: yields an S3Proxy whose
    storage_options reach the same buckets through it."""
    log, faults = RequestLog(), Faults()
    upstream = s3.endpoint_url.removeprefix("http://")
    handler = type(
        "Handler", (S3ProxyHandler,), {"log": log, "faults": faults, "upstream": upstream}
    )
    with _serving(handler) as port:
        endpoint = f"http://127.0.0.1:{port}"
        yield S3Proxy(endpoint, log, faults, {**s3.storage_options, "endpoint_url": endpoint})
