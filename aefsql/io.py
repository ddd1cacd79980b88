"""The only module that touches storage: byte-range reads through fsspec, many at once."""

from __future__ import annotations

import asyncio
import datetime
import random
import re
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import fsspec
from fsspec.asyn import AsyncFileSystem
from fsspec.implementations.http import HTTPFileSystem
from fsspec.utils import get_protocol

from . import threads
from .cache import DiskCache
from .errors import Cancelled, RangeReadError
from .ranges import DEFAULT_MAX_GAP, merge_ranges

DEFAULT_CONCURRENCY = 64

# Protocols that name the same filesystem and so share storage options.
PROTOCOL_FAMILIES = {"s3a": "s3", "https": "http", "gcs": "gs", "local": "file"}


def protocol_of(url: str) -> str:
    protocol = get_protocol(url)
    return PROTOCOL_FAMILIES.get(protocol, protocol)


def redact(url: str) -> str:
    """The URL without credentials or query string (signed URLs carry secrets there)."""
    parts = urlsplit(url)
    if not parts.scheme or parts.scheme == "file":
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass
class ByteStore:
    """Reads byte ranges of files named by URL (local path, s3://, http(s)://, gs://, …).

    `options` maps a protocol family ('s3', 'http', 'gs', 'file') to its fsspec storage options.
    With a `disk_cache`, every range read is kept on disk under the file's version (ETag, or
    size and modification time), so re-running a job reads nothing from the network.
    """

    options: dict[str, dict] = field(default_factory=dict)
    concurrency: int = DEFAULT_CONCURRENCY
    disk_cache: DiskCache | None = None
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy())
    # Set to stop: reads not yet started, and retry waits, end with `Cancelled`.
    cancelled: threading.Event = field(default_factory=threading.Event)

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled("cancelled")

    _versions: dict[str, str] = field(default_factory=dict)

    def read(
        self,
        requests: Sequence[tuple[str, int, int]],
        *,
        allow_short: bool = False,
        max_gap: int = DEFAULT_MAX_GAP,
    ) -> list[bytes]:
        """Bytes [start, end) of each (url, start, end): from the disk cache where it has them,
        else fetched concurrently, ranges of a file at most `max_gap` apart merged into one
        request."""
        results: list[bytes | None] = [None] * len(requests)
        if self.disk_cache is not None:
            versions = self.versions([url for url, _, _ in requests])
            for i, (url, start, end) in enumerate(requests):
                results[i] = self.disk_cache.get(url, versions[url], start, end)
        missing = [i for i, r in enumerate(results) if r is None]
        by_url: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i in missing:
            url, start, end = requests[i]
            by_url[url].append((start, end))
        merged = [(url, m) for url, ranges in by_url.items() for m in merge_ranges(ranges, max_gap)]
        answers = self.read_ranges(
            [(url, m.start, m.end) for url, m in merged], allow_short=allow_short
        )
        pieces = {}
        for (url, m), data in zip(merged, answers, strict=True):
            for member in m.members:
                piece = m.slice(data, member)
                pieces[(url, member)] = piece
                if self.disk_cache is not None:
                    self.disk_cache.put(url, self._versions[url], *member, piece)
        for i in missing:
            url, start, end = requests[i]
            results[i] = pieces[(url, (start, end))]
        return results

    def versions(self, urls) -> dict[str, str]:
        """Each file's version (ETag, else size and mtime), asked once per store."""
        new = [url for url in dict.fromkeys(urls) if url not in self._versions]
        for url, version in zip(new, threads.pool("io").map(self._version, new), strict=True):
            self._versions[url] = version
        return {url: self._versions[url] for url in urls}

    def _version(self, url: str) -> str:
        try:
            info = self.filesystem(url).info(url)
        except FileNotFoundError:
            raise RangeReadError(f"{redact(url)}: file not found") from None
        except OSError as exc:
            raise RangeReadError(f"{redact(url)}: cannot stat: {exc}") from None
        etag = info.get("ETag") or info.get("etag")
        return (
            str(etag)
            if etag
            else f"{info.get('size')}-{info.get('mtime') or info.get('LastModified')}"
        )

    def filesystem(self, url: str) -> fsspec.AbstractFileSystem:
        protocol = get_protocol(url)
        options = self.options.get(protocol_of(url), {})
        if protocol_of(url) == "http":
            options = _with_http_timeouts(options)
        return fsspec.filesystem(protocol, **options)

    def read_ranges(
        self, requests: Sequence[tuple[str, int, int]], *, allow_short: bool = False
    ) -> list[bytes]:
        """Bytes [start, end) of each (url, start, end), fetched concurrently.

        Every answer must be exactly end - start bytes long (servers that ignore Range send
        the whole file; mirrors send short bodies). With `allow_short`, a shorter answer is
        taken as the end of the file. Transient failures (connection errors, timeouts, HTTP
        429/5xx, S3 SlowDown, wrong lengths) are retried with exponential backoff and jitter,
        within `retry`'s attempts and deadline; a missing file or a refusal is not.
        """
        results: list[bytes | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        started = time.monotonic()
        for attempt in range(1, self.retry.attempts + 1):
            self.check_cancelled()
            answers = self._fetch([requests[i] for i in pending])
            failed = []
            for i, answer in zip(pending, answers, strict=True):
                outcome = _checked(requests[i], answer, allow_short)
                if allow_short and isinstance(outcome, bytes):
                    outcome = self._confirm_end(requests[i], outcome)
                if isinstance(outcome, _Transient):
                    failed.append((i, outcome))
                else:
                    results[i] = outcome
            if not failed:
                return results
            delay = self.retry.delay(attempt)
            if attempt == self.retry.attempts or (
                time.monotonic() - started + delay > self.retry.deadline
            ):
                raise RangeReadError(f"{failed[0][1]} (gave up after {attempt} attempts)")
            if self.cancelled.wait(delay):  # a retry wait ends early on cancel
                self.check_cancelled()
            pending = [i for i, _ in failed]
        raise AssertionError("unreachable")

    def _confirm_end(self, request: tuple[str, int, int], data: bytes):
        """A short answer is the end of the file only if the file really ends there: mirrors
        also send short bodies (then: retry)."""
        url, start, end = request
        if len(data) == end - start:
            return data
        try:
            size = self.filesystem(url).size(url)
        except OSError as exc:
            return _Transient(f"{redact(url)}: cannot check the file size: {exc}")
        if size is not None and size > start + len(data):
            return _Transient(
                f"{redact(url)} bytes {start}-{end - 1}: got {len(data)} bytes, but the file "
                f"has {size}"
            )
        return data

    def _fetch(self, requests: Sequence[tuple[str, int, int]]) -> list:
        """One concurrent attempt: bytes, or the exception, for each request."""
        answers: list = [None] * len(requests)
        by_filesystem: dict[int, list[int]] = defaultdict(list)
        filesystems = {}
        for i, (url, _, _) in enumerate(requests):
            fs = self.filesystem(url)
            filesystems[id(fs)] = fs
            by_filesystem[id(fs)].append(i)
        for key, indices in by_filesystem.items():
            fs = filesystems[key]
            urls = [requests[i][0] for i in indices]
            starts = [requests[i][1] for i in indices]
            ends = [requests[i][2] for i in indices]
            extra = {"batch_size": self.concurrency} if isinstance(fs, AsyncFileSystem) else {}
            for i, answer in zip(
                indices, fs.cat_ranges(urls, starts, ends, on_error="return", **extra), strict=True
            ):
                answers[i] = answer
        return answers

    def read_head(self, urls: Sequence[str], length: int) -> list[bytes]:
        """The first `length` bytes of each file (less when the file is shorter)."""
        return self.read([(url, 0, length) for url in urls], allow_short=True)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: `attempts` tries in all, exponential backoff with full jitter, and no
    retry that would end past `deadline` seconds."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0
    deadline: float = 120.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


class _Transient(str):
    """A failure worth retrying, described for the error raised if retries run out."""


# HTTP statuses and S3 codes that say "try again".
TRANSIENT_STATUSES = {408, 429, 500, 502, 503, 504}
TRANSIENT_WORDS = (
    "SlowDown",
    "Throttl",
    "RequestTimeout",
    "ServiceUnavailable",
    "InternalError",
    "Reduce your request rate",
)


def _checked(request: tuple[str, int, int], answer, allow_short: bool):
    """The bytes, a `_Transient` failure to retry, or a `RangeReadError` raised at once."""
    url, start, end = request
    where = f"{redact(url)} bytes {start}-{end - 1}"
    if isinstance(answer, FileNotFoundError):
        raise RangeReadError(f"{redact(url)}: file not found")
    status = getattr(answer, "status", None)
    if isinstance(answer, PermissionError) or status in (401, 403):
        raise RangeReadError(f"{redact(url)}: access denied ({type(answer).__name__})")
    if isinstance(answer, BaseException):
        described = f"{where}: read failed: {type(answer).__name__}: {_redacted_text(answer)}"
        if _is_transient(answer):
            return _Transient(described)
        raise RangeReadError(described)
    size = len(answer)
    if size == end - start or (allow_short and size < end - start):
        return bytes(answer)
    return _Transient(
        f"{where}: got {size} bytes instead of {end - start} "
        "(file shorter than its header says, or a server that ignores Range)"
    )


# A server that stops sending is a fault to retry, not a reason to wait aiohttp's 5 minutes.
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)


def _with_http_timeouts(options: dict) -> dict:
    client_kwargs = dict(options.get("client_kwargs") or {})
    client_kwargs.setdefault("timeout", HTTP_TIMEOUT)
    return {**options, "client_kwargs": client_kwargs}


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, ConnectionError | TimeoutError | asyncio.TimeoutError):
        return True
    status = getattr(error, "status", None) or getattr(error, "code", None)
    if status in TRANSIENT_STATUSES:
        return True
    if type(error).__module__.startswith("aiohttp") and not isinstance(status, int):
        return True  # payload and connection errors: the body did not arrive whole
    text = str(error)
    return any(word in text for word in TRANSIENT_WORDS) or any(
        f" {code}" in text for code in TRANSIENT_STATUSES
    )


def _redacted_text(error: BaseException) -> str:
    """The error's text without query strings (signed URLs carry secrets there)."""
    return re.sub(r"\?[^\s'\"]*", "", str(error).splitlines()[0] if str(error) else "")


class _HTTPForDuckDB(HTTPFileSystem):
    """fsspec's HTTP filesystem as DuckDB wants it: `modified()` (DuckDB asks, fsspec's HTTP
    filesystem does not answer) and one protocol per instance (DuckDB registers only the
    first)."""

    protocol = ("http",)

    def modified(self, path):
        return datetime.datetime.fromtimestamp(0, tz=datetime.UTC)


class _HTTPSForDuckDB(_HTTPForDuckDB):
    protocol = ("https",)


def duckdb_filesystems(store: ByteStore, url: str) -> list[fsspec.AbstractFileSystem]:
    """Filesystems to register on a DuckDB connection so that its own readers (read_parquet
    of the catalog, of points files) reach `url`'s storage with the store's options."""
    family = protocol_of(url)
    options = store.options.get(family, {})
    if family == "http":
        return [_HTTPForDuckDB(**options), _HTTPSForDuckDB(**options)]
    if family == "file":
        return []
    return [store.filesystem(url)]
