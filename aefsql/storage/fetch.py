"""One attempt at many byte ranges, each checked against the object version it must come from.

fsspec's `cat_ranges` returns bare bytes: it cannot say which version of an object they came
from, nor which range the server really sent. Here each HTTP(S) and S3 request carries the
version its header was read from (`If-Match`, or `If-Unmodified-Since` without an ETag) and
each answer is checked for its version and its `Content-Range`; local files are checked by
size and modification time. Other filesystems (gs://, memory://) are read with their own
`cat_file`, unversioned.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import fsspec
from fsspec.asyn import AsyncFileSystem
from fsspec.implementations.http import HTTPFileSystem
from fsspec.implementations.local import LocalFileSystem

from ..errors import Cancelled, RangeReadError, redact

CANCEL_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Version:
    """Which version of an object some bytes came from: its ETag if the server gives one,
    else its modification time (an HTTP date, or a local file's size and mtime)."""

    etag: str | None = None
    modified: str | None = None

    def __str__(self) -> str:
        return f"etag {self.etag}" if self.etag else f"modified {self.modified}"

    def matches(self, found: Version | None) -> bool:
        """Whether bytes answered with `found` belong to this version (unknown: they may)."""
        if found is None:
            return True
        if self.etag and found.etag:
            return _opaque(self.etag) == _opaque(found.etag)
        if self.modified and found.modified:
            return self.modified == found.modified
        return True

    def http_conditions(self) -> dict[str, str]:
        """Request headers that make a server refuse (412) to answer from another version."""
        if self.etag and not self.etag.startswith("W/"):  # If-Match compares strong ETags only
            return {"If-Match": self.etag}
        if self.modified and not self.etag:
            return {"If-Unmodified-Since": self.modified}
        return {}


def version_from(etag, modified) -> Version | None:
    if not etag and not modified:
        return None
    return Version(str(etag) if etag else None, str(modified) if modified else None)


def _opaque(etag: str) -> str:
    return etag.removeprefix("W/").strip('"')


class ObjectChanged(RangeReadError):
    """An object changed while it was being read: its bytes must not be mixed with those read
    before (the reader starts over from the header)."""

    def __init__(self, url: str, expected: Version | None, found: Version | None = None):
        self.url, self.expected, self.found = url, expected, found
        now = f", now {found}" if found else ""
        super().__init__(f"{redact(url)} changed while being read (was {expected}{now})")


class RedirectRefused(RangeReadError):
    """A server answered with a redirect (3xx), which aefsql does not follow: the origin
    policy checks the URLs a catalog names, and a hop to another host would read its bytes
    (and hand it the request's headers: an API key in storage options) unchecked — another
    origin, a private address, cloud metadata. Not retried: the server means it."""

    def __init__(self, url: str, status: int, location: str | None):
        self.url, self.status_code, self.location = url, status, location
        to = f" to {redact(location)}" if location else ""
        super().__init__(
            f"{redact(url)}: the server answered {status}, a redirect{to}; aefsql does not "
            "follow redirects (name the file's final URL in the catalog)"
        )


async def refuse_redirects(response) -> None:
    """aiohttp's `raise_for_status` hook on the sessions of aefsql's HTTP filesystems, whose
    requests are all sent with `allow_redirects=False`: a 3xx answer (HEAD or GET, by fsspec
    or by aefsql) raises RedirectRefused instead of being read as the file. Other statuses
    are left to the caller."""
    if 300 <= response.status < 400:
        location = response.headers.get("Location")
        response.close()  # its body is not the file: not read
        raise RedirectRefused(str(response.url), response.status, location)


class WrongRange(OSError):
    """The server answered with other bytes than the range asked for (retried)."""


@dataclass(frozen=True)
class Request:
    url: str
    start: int
    end: int  # exclusive
    version: Version | None  # the version the bytes must come from; None: any


@dataclass(frozen=True)
class Piece:
    data: bytes
    version: Version | None  # as the server (or the file system) reported it


def fetch(
    requests: Sequence[Request],
    filesystem_of: Callable[[str], fsspec.AbstractFileSystem],
    *,
    concurrency: int,
    cancelled,
) -> list:
    """One attempt at every request: a Piece, or the exception, for each. Setting `cancelled`
    (a threading.Event) abandons the requests in flight and raises `Cancelled`."""
    answers: list = [None] * len(requests)
    groups: dict[int, list[int]] = defaultdict(list)
    filesystems = {}
    for i, request in enumerate(requests):
        fs = filesystem_of(request.url)
        filesystems[id(fs)] = fs
        groups[id(fs)].append(i)
    for key, indices in groups.items():
        fs = filesystems[key]
        batch = [requests[i] for i in indices]
        if isinstance(fs, AsyncFileSystem):
            results = _run_cancellable(fs, _fetch_async(fs, batch, concurrency), cancelled)
        else:
            results = [_fetch_sync(fs, request, cancelled) for request in batch]
        for i, result in zip(indices, results, strict=True):
            answers[i] = result
    return answers


def _run_cancellable(fs: AsyncFileSystem, coroutine, cancelled) -> list:
    future = asyncio.run_coroutine_threadsafe(coroutine, fs.loop)
    while True:
        try:
            return future.result(timeout=CANCEL_POLL_SECONDS)
        except FutureTimeout:
            if cancelled.is_set():
                future.cancel()  # closes the connections of the requests in flight
                raise Cancelled("cancelled") from None


async def _fetch_async(fs: AsyncFileSystem, requests: list[Request], concurrency: int) -> list:
    limit = asyncio.Semaphore(concurrency)
    read = _http_range if isinstance(fs, HTTPFileSystem) else _s3_range if _is_s3(fs) else None

    async def one(request: Request):
        async with limit:
            try:
                if read is None:
                    data = await fs._cat_file(request.url, start=request.start, end=request.end)
                    return Piece(bytes(data), None)
                return await read(fs, request)
            except Exception as exc:
                return exc

    return await asyncio.gather(*(one(r) for r in requests))


async def _http_range(fs: HTTPFileSystem, request: Request) -> Piece:
    options = fs.kwargs.copy()
    headers = dict(options.pop("headers", None) or {})
    headers["Range"] = f"bytes={request.start}-{request.end - 1}"
    if request.version is not None:
        headers.update(request.version.http_conditions())
    session = await fs.set_session()
    async with session.get(fs.encode_url(request.url), headers=headers, **options) as response:
        if response.status == 412:
            raise ObjectChanged(request.url, request.version)
        if response.status == 404:
            raise FileNotFoundError(request.url)
        response.raise_for_status()
        if response.status == 200 and request.start > 0:
            # The whole object instead of the range (a server that ignores Range): a fault,
            # and its body is not read — it may be gigabytes. Closing drops the connection
            # at once (released, it would go on buffering the body).
            response.close()
            raise WrongRange(
                f"{redact(request.url)}: the server ignored the Range request (200, whole file)"
            )
        data = await _read_at_most(response.content.read, request.end - request.start)
        if len(data) > request.end - request.start:  # the rest is not waited for, nor kept
            response.close()
        found = version_from(response.headers.get("ETag"), response.headers.get("Last-Modified"))
        if response.status == 206:
            _check_content_range(request, response.headers.get("Content-Range"))
    return Piece(data, found)


async def _read_at_most(read, length: int) -> bytes:
    """What `read(n)` (a response body's, returning up to n bytes) gives, but never more than
    `length` + 1 bytes kept: one more tells a body longer than asked, which the caller's
    length check refuses. A server that sends more than the range must not make aefsql
    buffer it."""
    parts, have = [], 0
    while have <= length:
        part = await read(min(1 << 20, length + 1 - have))
        if not part:
            break
        parts.append(part)
        have += len(part)
    return b"".join(parts)


def _is_s3(fs) -> bool:
    return "s3" in fs.protocol if isinstance(fs.protocol, tuple) else fs.protocol == "s3"


async def _s3_range(fs, request: Request) -> Piece:
    bucket, key, version_id = fs.split_path(request.url)
    options = {}
    if request.version is not None and request.version.etag:
        options["IfMatch"] = request.version.etag
    if version_id:
        options["VersionId"] = version_id
    try:
        response = await fs._call_s3(
            "get_object",
            Bucket=bucket,
            Key=key,
            Range=f"bytes={request.start}-{request.end - 1}",
            **options,
        )
    except OSError as exc:
        if _s3_error_code(exc) == "PreconditionFailed":
            raise ObjectChanged(request.url, request.version) from None
        raise
    try:
        # The range is checked before the body is read: a server that ignores Range sends
        # the whole object, which must not be buffered; a body longer than asked is cut.
        _check_content_range(request, response.get("ContentRange"))
        data = await _read_at_most(response["Body"].read, request.end - request.start)
    finally:
        response["Body"].close()
    return Piece(data, version_from(response.get("ETag"), None))


def _s3_error_code(error: BaseException) -> str | None:
    """The S3 error code behind s3fs's translated exception."""
    response = getattr(error.__cause__, "response", None) or {}
    return response.get("Error", {}).get("Code")


def _check_content_range(request: Request, header: str | None) -> None:
    """A 206 answer must start where asked (its length is checked by the caller)."""
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", (header or "").strip())
    if match is None:
        raise WrongRange(
            f"{redact(request.url)}: partial answer without a valid Content-Range: {header}"
        )
    if int(match[1]) != request.start or int(match[2]) > request.end - 1:
        raise WrongRange(
            f"{redact(request.url)}: asked for bytes {request.start}-{request.end - 1}, "
            f"the server sent {match[1]}-{match[2]}"
        )


def _fetch_sync(fs, request: Request, cancelled):
    if cancelled.is_set():
        raise Cancelled("cancelled")
    try:
        if isinstance(fs, LocalFileSystem):
            return _local_range(fs._strip_protocol(request.url), request)
        data = fs.cat_file(request.url, start=request.start, end=request.end)
        return Piece(bytes(data), None)
    except Exception as exc:
        return exc


def _local_range(path: str, request: Request) -> Piece:
    # Unbuffered: a buffered file object costs a copy of every byte, and reads are large.
    with open(path, "rb", buffering=0) as file:
        before = local_version(os.fstat(file.fileno()))
        if request.version is not None and not request.version.matches(before):
            raise ObjectChanged(request.url, request.version, before)
        parts, at = [], request.start
        while at < request.end:  # a read may return less than asked before the end
            part = os.pread(file.fileno(), request.end - at, at)
            if not part:
                break
            parts.append(part)
            at += len(part)
        if local_version(os.fstat(file.fileno())) != before:  # rewritten in place meanwhile
            raise ObjectChanged(request.url, before)
    return Piece(parts[0] if len(parts) == 1 else b"".join(parts), before)


def local_version(stat: os.stat_result) -> Version:
    return Version(modified=f"{stat.st_size} bytes, mtime {stat.st_mtime_ns} ns")
