"""Caches in memory, shared by every thread of a connection: parsed headers per URL and
decoded blocks, each a least-recently-used cache within a byte budget."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

import numpy as np

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_BLOCK_CACHE_BYTES = 64 * 1024 * 1024
DEFAULT_HEADER_CACHE_BYTES = 256 * 1024 * 1024
HEADER_FIELDS_BYTES = 1024  # a header's fields but its block tables, roughly
# A block smaller than this share of the memory it views is kept as a copy: a few rows of a
# decoded tile would otherwise keep the whole tile alive.
COMPACT_BELOW = 0.5


def retained_nbytes(*arrays: np.ndarray) -> int:
    """Bytes that `arrays` keep alive: those of the objects owning their memory (a view keeps
    its whole base), each owner counted once."""
    owners = dict(_owner(array) for array in arrays)
    return sum(owners.values())


def _owner(array: np.ndarray) -> tuple[int, int]:
    """(id, size in bytes) of the object owning the memory `array` views."""
    obj = array
    while True:  # views of views of …: numpy bases, then the exporters memoryviews wrap
        if isinstance(obj, np.ndarray) and obj.base is not None:
            obj = obj.base
        elif isinstance(obj, memoryview) and not _released(obj):
            obj = obj.obj
        else:
            break
    if isinstance(obj, np.ndarray):
        return id(obj), obj.nbytes
    try:
        with memoryview(obj) as whole:
            return id(obj), whole.nbytes
    except (TypeError, ValueError):  # no buffer to measure: count what the array shows
        return id(obj), array.nbytes


def _released(view: memoryview) -> bool:
    try:
        view.obj  # noqa: B018 (raises once released)
    except ValueError:
        return True
    return False


class LruCache(Generic[K, V]):
    """Values sized by `size_of` (their `nbytes`), least recently used dropped first, within a
    byte budget (the newest entry always stays, unless `keeps_oversized` is False)."""

    keeps_oversized = True

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        # Each value with the size it was counted at, so that a drop takes off what was added.
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def size_of(self, value: V) -> int:
        return value.nbytes

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: K, value: V) -> None:
        size = self.size_of(value)  # outside the lock: it may walk buffers
        if size > self.max_bytes and not self.keeps_oversized:
            return
        with self._lock:
            self._pop(key)
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._items) > 1:
                self._pop(next(iter(self._items)))

    def _pop(self, key: K) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[1]

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

    def size_of(self, header) -> int:
        """The memory its block tables keep alive (tables fetched entry by entry are allocated
        whole), plus its fields. `ImageHeader.nbytes` counts the tables' own nbytes, which is
        less when they view a larger buffer."""
        tables = [getattr(header, name, None) for name in ("block_offsets", "block_byte_counts")]
        arrays = [array for t in tables if t is not None for array in (t.values, t.loaded)]
        if not arrays:
            return header.nbytes
        return HEADER_FIELDS_BYTES + retained_nbytes(*arrays)

    def discard(self, key: tuple, version) -> None:
        """Drop the entry if it is still of `version` (another thread may have replaced it)."""
        with self._lock:
            item = self._items.get(key)
            if item is not None and getattr(item[0], "version", None) == version:
                self._pop(key)


class BlockCache(LruCache[tuple, np.ndarray]):
    """Decoded blocks by (url, version, level, block), counted by the memory they keep alive;
    a block over the whole budget is not kept."""

    keeps_oversized = False

    def __init__(self, max_bytes: int = DEFAULT_BLOCK_CACHE_BYTES):
        super().__init__(max_bytes)

    def size_of(self, block: np.ndarray) -> int:
        return retained_nbytes(block)

    def put(self, key: tuple, block: np.ndarray) -> None:
        super().put(key, _compact(block))


def _compact(block: np.ndarray) -> np.ndarray:
    """`block` alone in memory when it is a small part of what it views (the rows sampling
    needs of a decoded tile): the copy is small, the tile it would keep alive is not."""
    if block.nbytes < COMPACT_BELOW * retained_nbytes(block):
        return block.copy()
    return block
