"""In-memory caches shared by every thread of a connection: headers per URL, decoded blocks."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

import numpy as np

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_BLOCK_CACHE_BYTES = 256 * 1024 * 1024


class HeaderCache(Generic[K, V]):
    """Parsed headers by URL for the connection's life (they are small: ~100 KB each)."""

    def __init__(self):
        self._items: dict[K, V] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value

    def __len__(self) -> int:
        return len(self._items)


class BlockCache:
    """Decoded blocks, least recently used dropped first, within a byte budget."""

    def __init__(self, max_bytes: int = DEFAULT_BLOCK_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            block = self._items.get(key)
            if block is not None:
                self._items.move_to_end(key)
            return block

    def put(self, key: tuple, block: np.ndarray) -> None:
        if block.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = block
            self._bytes += block.nbytes
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes
