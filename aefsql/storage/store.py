"""The byte store, the door every stored byte aefsql reads comes through (tile ranges, whole
catalogs and headers files): many ranges at once, each pinned to the object's version, retried,
hosts found down skipped, the disk cache consulted. `fetch` sends one attempt's requests."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import get_protocol

from .. import threads
from ..errors import Cancelled, RangeReadError, redact, redact_text
from .disk import DiskCache
from .fetch import (
    ObjectChanged,
    Piece,
    RedirectRefused,
    Request,
    Version,
    WrongRange,
    fetch,
    local_version,
    refuse_redirects,
    version_from,
)
from .ranges import DEFAULT_MAX_GAP, DEFAULT_MAX_REQUEST, merge_ranges

DEFAULT_CONCURRENCY = 64
# A catalog or a collection is read whole, into memory: past this it is refused, not read.
MAX_WHOLE_FILE_BYTES = 2 * 1024**3
WHOLE_FILE_PART = DEFAULT_MAX_REQUEST  # parts of a whole file, read side by side
CHANGE_RETRIES = 3  # reads of a whole file that changes under them, before giving up
# After every retry of a request failed to reach its host, the host's other requests fail at
# once for this long: with on_error := 'null', 1,000 files of a dead server take one retry
# cycle, not 1,000.
DOWN_HOST_SECONDS = 30.0
# How long a file's version, once asked, is taken as current: what the disk cache keeps under
# a version is served only while it is the file's, so a connection that lives on (a shell, a
# notebook) asks again now and then rather than serving a replaced file's bytes forever.
VERSION_SECONDS = 60.0

# Protocols that name the same filesystem and so share storage options.
PROTOCOL_FAMILIES = {"s3a": "s3", "https": "http", "gcs": "gs", "local": "file"}


def protocol_of(url: str) -> str:
    protocol = get_protocol(url)
    return PROTOCOL_FAMILIES.get(protocol, protocol)


@dataclass
class ByteStore:
    """Reads byte ranges of files named by URL (local path, s3://, http(s)://, gs://, …).

    `options` maps a protocol family ('s3', 'http', 'gs', 'file') to its fsspec storage options.
    Reads can be pinned to an object version (see `fetch.Version`): bytes of another version
    raise `ObjectChanged` rather than being mixed with those read before. With a `disk_cache`,
    every range read is kept on disk under the file's version, so re-running a job reads
    nothing from the network.
    """

    options: dict[str, dict] = field(default_factory=dict)
    concurrency: int = DEFAULT_CONCURRENCY
    disk_cache: DiskCache | None = None
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy())
    # Set to stop: reads in flight are abandoned, and reads not yet started and retry waits
    # end with `Cancelled`.
    cancelled: threading.Event = field(default_factory=threading.Event)
    # {url: (when it was asked, version)}
    _versions: dict[str, tuple[float, Version | None]] = field(default_factory=dict)
    # Hosts that could not be reached after every retry: {host: (until, message)}.
    _down_hosts: dict[str, tuple[float, str]] = field(default_factory=dict)

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled("cancelled")

    def read(
        self,
        requests: Sequence[tuple[str, int, int]],
        *,
        versions: Mapping[str, Version | None] | None = None,
        allow_short: bool = False,
        max_gap: int = DEFAULT_MAX_GAP,
        views: bool = False,
    ) -> list[bytes]:
        """Bytes [start, end) of each (url, start, end): from the disk cache where it has them,
        else fetched concurrently, ranges of a file at most `max_gap` apart merged into one
        request. `versions`: the version each url's bytes must come from. `views`: answers
        may be memoryviews into a merged request's bytes (no copy), not bytes."""
        pieces = self._read(requests, versions, allow_short, max_gap)
        if views:
            return [piece.data for piece in pieces]
        return [bytes(piece.data) for piece in pieces]

    def read_head(
        self, urls: Sequence[str], length: int
    ) -> tuple[list[bytes], dict[str, Version | None]]:
        """The first `length` bytes of each file (less when the file is shorter), and the
        version of each file they came from (None: the server names none)."""
        pieces = self._read([(url, 0, length) for url in urls], None, True, DEFAULT_MAX_GAP)
        return [p.data for p in pieces], {
            url: p.version for url, p in zip(urls, pieces, strict=True)
        }

    def _read(self, requests, versions, allow_short, max_gap) -> list[Piece]:
        expected = dict(versions or {})
        results: list[Piece | None] = [None] * len(requests)
        # Local files are read in place: a copy in the disk cache would save no network.
        cached: set[str] = set()
        if self.disk_cache is not None:
            cached = {url for url, _, _ in requests if protocol_of(url) != "file"}
            current = self.versions(cached)  # asked side by side
            for url in cached:
                expected[url] = (
                    self.confirmed(url, expected[url]) if url in expected else current[url]
                )
            for i, (url, start, end) in enumerate(requests):
                if url in cached and expected[url] is not None:
                    data = self.disk_cache.get(url, str(expected[url]), start, end)
                    results[i] = None if data is None else Piece(data, expected[url])
        missing = [i for i, r in enumerate(results) if r is None]
        by_url: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i in missing:
            url, start, end = requests[i]
            by_url[url].append((start, end))
        merged = [(url, m) for url, ranges in by_url.items() for m in merge_ranges(ranges, max_gap)]
        answers = self.read_ranges(
            [Request(url, m.start, m.end, expected.get(url)) for url, m in merged],
            allow_short=allow_short,
        )
        pieces = {}
        found: dict[str, Version | None] = {}
        for (url, m), answer in zip(merged, answers, strict=True):
            if url in found and found[url] != answer.version:  # changed between two requests
                raise ObjectChanged(url, found[url], answer.version)
            found[url] = answer.version
            for member in m.members:
                piece = Piece(m.slice(answer.data, member), answer.version)
                pieces[(url, member)] = piece
                if url in cached and expected[url] is not None:
                    self.disk_cache.put(url, str(expected[url]), *member, piece.data)
        for i in missing:
            url, start, end = requests[i]
            results[i] = pieces[(url, (start, end))]
        return results

    def read_file(self, url: str, limit: int = MAX_WHOLE_FILE_BYTES) -> bytes:
        """A whole file (a catalog, a collection) through the same requests as any range:
        in parts read side by side, each retried, all pinned to the version the file had
        when asked its size, so that no answer mixes two versions. A file larger than
        `limit` bytes is refused before it is read; one that changes while it is read is
        read again, from its new version (CHANGE_RETRIES times)."""
        for attempt in range(1, CHANGE_RETRIES + 1):
            try:
                return self._read_file(url, limit)
            except ObjectChanged:
                self.forget(url)
                if attempt == CHANGE_RETRIES:
                    raise
        raise AssertionError("unreachable")

    def _read_file(self, url: str, limit: int) -> bytes:
        version = self.versions([url])[url]
        try:
            size = int(self.filesystem(url).size(url))
        except FileNotFoundError as exc:
            raise not_found(url, exc) from None
        except (OSError, TypeError, ValueError) as exc:
            raise RangeReadError(f"{redact(url)}: cannot tell its size: {exc}") from None
        if size > limit:
            raise RangeReadError(
                f"{redact(url)} is {size:,} bytes, over the {limit:,} bytes aefsql reads "
                "of a whole file"
            )
        parts = [
            (url, start, min(size, start + WHOLE_FILE_PART))
            for start in range(0, size, WHOLE_FILE_PART)
        ]
        return b"".join(self.read(parts, versions={url: version}, max_gap=0, views=True))

    def versions(self, urls) -> dict[str, Version | None]:
        """Each file's current version, asked once per store and again after VERSION_SECONDS
        (or at once after `forget`)."""
        now = time.monotonic()
        # A local copy: another thread may `forget` a file meanwhile.
        known = {url: self._versions.get(url) for url in dict.fromkeys(urls)}
        new = [
            url
            for url, asked in known.items()
            if asked is None or now - asked[0] >= VERSION_SECONDS
        ]
        for url, version in zip(new, threads.pool("io").map(self._version, new), strict=True):
            known[url] = self._versions[url] = (now, version)
        return {url: known[url][1] for url in urls}

    def confirmed(self, url: str, version: Version | None) -> Version | None:
        """`version` (a header's: read, cached or from a collection), checked against the
        file's current one (`versions`) before anything kept under it is served: another
        raises ObjectChanged, and the reader starts over from the new header. None (unknown,
        unpinned) stays None: nothing is kept under it."""
        current = self.versions([url])[url]
        if version is not None and not version.matches(current):
            raise ObjectChanged(url, version, current)
        return version

    def forget(self, url: str) -> None:
        """Drop what the store remembers of a file's version (it changed)."""
        self._versions.pop(url, None)

    def _version(self, url: str) -> Version | None:
        fs = self.filesystem(url)
        try:
            if isinstance(fs, LocalFileSystem):
                return local_version(os.stat(fs._strip_protocol(url)))
            info = fs.info(url)
        except FileNotFoundError as exc:
            raise not_found(url, exc) from None
        except OSError as exc:
            raise RangeReadError(f"{redact(url)}: cannot stat: {exc}") from None
        return version_from(
            info.get("ETag") or info.get("etag"),
            info.get("Last-Modified") or info.get("LastModified"),
        )

    def filesystem(self, url: str) -> fsspec.AbstractFileSystem:
        protocol = get_protocol(url)
        options = self.options.get(protocol_of(url), {})
        if protocol_of(url) == "http":
            options = http_options(options)
        return fsspec.filesystem(protocol, **options)

    def read_ranges(self, requests: Sequence[Request], *, allow_short: bool = False) -> list[Piece]:
        """The bytes of each request, fetched concurrently.

        Every answer must be exactly end - start bytes long, from the range asked for and of
        the request's version (servers that ignore Range send the whole file; mirrors send
        short bodies). With `allow_short`, a shorter answer is taken as the end of the file.
        Transient failures (connection errors, timeouts, HTTP 429/5xx, S3 SlowDown, wrong
        lengths or ranges) are retried with exponential backoff and jitter, within `retry`'s
        attempts and deadline; a missing file, a refusal or a changed object is not.
        """
        for request in requests:  # a host known down fails at once, not after retries again
            down = self._down_hosts.get(_host_of(request.url))
            if down is not None and time.monotonic() < down[0]:
                raise RangeReadError(f"{down[1]} (its host failed moments ago: not retried)")
        results: list[Piece | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        started = time.monotonic()
        for attempt in range(1, self.retry.attempts + 1):
            self.check_cancelled()
            answers = fetch(
                [requests[i] for i in pending],
                self.filesystem,
                concurrency=self.concurrency,
                cancelled=self.cancelled,
            )
            failed = []
            for i, answer in zip(pending, answers, strict=True):
                outcome = _checked(requests[i], answer, allow_short)
                if allow_short and isinstance(outcome, Piece):
                    outcome = self._confirm_end(requests[i], outcome)
                if isinstance(outcome, _Transient):
                    failed.append((i, outcome, _is_unreachable(answer)))
                else:
                    results[i] = outcome
            if not failed:
                return results
            delay = self.retry.delay(attempt)
            if attempt == self.retry.attempts or (
                time.monotonic() - started + delay > self.retry.deadline
            ):
                message = f"{failed[0][1]} (gave up after {attempt} attempts)"
                for i, _, unreachable in failed:
                    if unreachable:  # the next files on this host fail at once
                        self._down_hosts[_host_of(requests[i].url)] = (
                            time.monotonic() + DOWN_HOST_SECONDS,
                            message,
                        )
                raise RangeReadError(message)
            if self.cancelled.wait(delay):  # a retry wait ends early on cancel
                self.check_cancelled()
            pending = [i for i, _, _ in failed]
        raise AssertionError("unreachable")

    def _confirm_end(self, request: Request, piece: Piece):
        """A short answer is the end of the file only if the file really ends there: mirrors
        also send short bodies (then: retry)."""
        if len(piece.data) == request.end - request.start:
            return piece
        try:
            size = self.filesystem(request.url).size(request.url)
        except OSError as exc:
            if (refused := _refused_redirect(exc)) is not None:
                raise refused from None
            return _Transient(f"{redact(request.url)}: cannot check the file size: {exc}")
        if size is not None and size > request.start + len(piece.data):
            return _Transient(
                f"{redact(request.url)} bytes {request.start}-{request.end - 1}: got "
                f"{len(piece.data)} bytes, but the file has {size}"
            )
        return piece


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


def _checked(request: Request, answer, allow_short: bool):
    """The piece, a `_Transient` failure to retry, or a `RangeReadError` raised at once."""
    url, start, end = request.url, request.start, request.end
    where = f"{redact(url)} bytes {start}-{end - 1}"
    if isinstance(answer, ObjectChanged | RedirectRefused):
        raise answer
    if isinstance(answer, FileNotFoundError):
        raise not_found(url, answer)
    status = getattr(answer, "status", None)
    if isinstance(answer, PermissionError) or status in (401, 403):
        raise RangeReadError(f"{redact(url)}: access denied ({type(answer).__name__})")
    if isinstance(answer, BaseException):
        described = f"{where}: read failed: {type(answer).__name__}: {redacted_text(answer)}"
        if _is_transient(answer):
            return _Transient(described)
        raise RangeReadError(described)
    if request.version is not None and not request.version.matches(answer.version):
        raise ObjectChanged(url, request.version, answer.version)
    size = len(answer.data)
    if size == end - start or (allow_short and size < end - start):
        return answer
    if protocol_of(url) == "file":  # a local file is as long as it is: no retry changes it
        raise RangeReadError(
            f"{where}: the file ends after {size} of them (shorter than its header says)"
        )
    return _Transient(
        f"{where}: got {size} bytes instead of {end - start} "
        "(file shorter than its header says, or a server that ignores Range)"
    )


# A server that stops sending is a fault to retry, not a reason to wait aiohttp's 5 minutes.
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)


def http_options(options: dict) -> dict:
    """fsspec HTTP storage options as aefsql uses them: its timeouts, and no redirect
    followed by any request (fsspec passes these request options to every GET and HEAD it
    sends, and `refuse_redirects` turns a 3xx into RedirectRefused): aiohttp would follow
    up to 10 hops to any host, with the user's custom headers. Not an option a user can
    turn back on."""
    client_kwargs = dict(options.get("client_kwargs") or {})
    client_kwargs.setdefault("timeout", HTTP_TIMEOUT)
    client_kwargs["raise_for_status"] = refuse_redirects
    return {**options, "client_kwargs": client_kwargs, "allow_redirects": False}


def _refused_redirect(error: BaseException) -> RedirectRefused | None:
    """The RedirectRefused behind an fsspec error (its `info` reports any failure of HEAD
    and GET as FileNotFoundError, the cause chained)."""
    while error is not None:
        if isinstance(error, RedirectRefused):
            return error
        error = error.__cause__
    return None


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, ConnectionError | TimeoutError | asyncio.TimeoutError | WrongRange):
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


def _host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _is_unreachable(answer) -> bool:
    """A failure of the connection itself (refused, reset, timed out): the host, not the
    file, is at fault."""
    return isinstance(
        answer,
        ConnectionError | TimeoutError | asyncio.TimeoutError | aiohttp.ClientConnectionError,
    )


def not_found(url: str, error: FileNotFoundError) -> RangeReadError:
    """The error to raise when reading `url` says "not found", saying what really failed:
    fsspec's HTTP filesystem reports a refused redirect, and a refused or broken connection,
    that way, the cause chained; otherwise the file is not there."""
    if (refused := _refused_redirect(error)) is not None:
        return refused
    cause = error.__cause__
    if isinstance(cause, OSError | TimeoutError) and not isinstance(cause, FileNotFoundError):
        failure = redacted_text(cause) or type(cause).__name__
        return RangeReadError(f"cannot reach {redact(url)}: {failure}")
    return RangeReadError(f"{redact(url)}: file not found")


def redacted_text(error: BaseException) -> str:
    """The first line of the error's text, its URLs redacted (see `errors.redact_text`)."""
    text = str(error)
    return redact_text(text.splitlines()[0] if text else "")
