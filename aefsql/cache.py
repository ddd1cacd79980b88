"""Caches shared by every thread of a connection: headers per URL and decoded blocks in memory,
each within a byte budget; byte ranges on disk, in the folder the user names."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_BLOCK_CACHE_BYTES = 64 * 1024 * 1024
DEFAULT_HEADER_CACHE_BYTES = 256 * 1024 * 1024


class LruCache(Generic[K, V]):
    """Values with an `nbytes`, least recently used dropped first, within a byte budget (the
    newest entry always stays)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[K, V] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._pop(key)
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                self._pop(next(iter(self._items)))

    def _pop(self, key: K) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


class HeaderCache(LruCache[tuple, V]):
    """Parsed headers by (URL, level) (a header of a published 8192-px file is ~75 KB: the default
    budget holds a few thousand; a dropped one is read again when needed)."""

    def __init__(self, max_bytes: int = DEFAULT_HEADER_CACHE_BYTES):
        super().__init__(max_bytes)

    def discard(self, key: tuple, version) -> None:
        """Drop the entry if it is still of `version` (another thread may have replaced it)."""
        with self._lock:
            if getattr(self._items.get(key), "version", None) == version:
                self._pop(key)


class BlockCache(LruCache[tuple, np.ndarray]):
    """Decoded blocks by (url, version, block)."""

    def __init__(self, max_bytes: int = DEFAULT_BLOCK_CACHE_BYTES):
        super().__init__(max_bytes)

    def put(self, key: tuple, block: np.ndarray) -> None:
        if block.nbytes <= self.max_bytes:  # a block over the whole budget is not kept
            super().put(key, block)


class DiskCache:
    """Byte ranges of remote files kept in a local folder, keyed by URL, version and range
    (local files are read in place, never copied here).

    A changed file has a new version (ETag, or size and modification time), so its old bytes
    are never served for it. Writes are atomic (write then rename): concurrent jobs sharing a
    folder see whole entries or none.
    """

    def __init__(self, folder):
        self.folder = Path(folder)

    def _path(self, url: str, version: str, start: int, end: int) -> Path:
        key = hashlib.sha256(f"{url}\0{version}".encode()).hexdigest()
        return self.folder / key[:2] / key / f"{start}-{end}"

    def whole_file(self, url: str, version: str, fetch) -> Path:
        """The local copy of a whole file, fetched with `fetch()` the first time."""
        path = self._path(url, version, 0, 0).with_name("whole")
        if not path.exists():
            self._write(path, fetch())
        return path

    def get(self, url: str, version: str, start: int, end: int) -> bytes | None:
        try:
            return self._path(url, version, start, end).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, url: str, version: str, start: int, end: int, data: bytes) -> None:
        self._write(self._path(url, version, start, end), data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
