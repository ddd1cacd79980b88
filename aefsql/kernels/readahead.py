"""Read-ahead of an area's pixels: the next batch of chunks read while the caller consumes
the current one.

A host that hands an area's chunks to `chunk_pixels` in batches it knows up front (DuckDB:
`unit_chunks` plans a unit, then calls `chunk_pixels` one vector of it at a time) says so
with `plan`; `pixels` then reads each batch as `chunk_pixels` would and, as soon as it has,
starts reading the planned next one in a thread: its blocks are fetched and decoded while
the caller (DuckDB's unnest, projection and Arrow export) works on the current batch — over
a slow link the next requests are in flight meanwhile.

Bounded: one batch is read ahead at a time (a batch's pixels, ~100 MB for DuckDB's 2,048
chunks of 512 pixels), and only the plans of the last few units are kept. A read ahead that
is not the next one asked for is dropped, never used: a batch is used only when the call
asks for exactly its chunks, bands and level. Errors behave as before: a read ahead that
failed raises its error when its batch is asked for (a cancelled one is read again: the
session may have resumed since), and nothing is fetched twice when the plan is followed.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import TYPE_CHECKING

import numpy as np

from .. import threads
from ..errors import Cancelled
from .pixels import Chunks, Pixels, chunk_pixels

if TYPE_CHECKING:
    from ..session import Session

PLANNED_UNITS = 4  # units whose plans are kept: more than the queries reading at once


def batch_key(chunks: Chunks) -> bytes:
    """A digest of a batch's chunks (the same chunks in the same order give the same)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update("\0".join(map(str, chunks.path.tolist())).encode())
    for column in (chunks.year, chunks.row, chunks.col0, chunks.col1):
        digest.update(np.ascontiguousarray(column, np.int64).tobytes())
    digest.update(np.ascontiguousarray(chunks.centroid, bool).tobytes())
    return digest.digest()


class ReadAhead:
    """One session's read-ahead of planned batches of chunks; safe to call from several
    threads (a batch asked for by two queries at once is read ahead for one of them)."""

    def __init__(self, session: Session):
        self.session = session
        self._lock = threading.Lock()
        # batch key -> the batch planned after it (units' plans, oldest first)
        self._units: OrderedDict[int, dict[bytes, Chunks]] = OrderedDict()
        self._next_unit = 0
        # The batch being read ahead: ((key, bands, level), future of its Pixels), or None.
        self._ahead: tuple[tuple, Future] | None = None

    def plan(self, batches: list[Chunks]) -> None:
        """The batches of one unit, in the order they will be asked for."""
        if len(batches) < 2:
            return
        keys = [batch_key(b) for b in batches]
        following = dict(zip(keys[:-1], batches[1:], strict=True))
        with self._lock:
            self._units[self._next_unit] = following
            self._next_unit += 1
            while len(self._units) > PLANNED_UNITS:
                self._units.popitem(last=False)

    def pixels(self, chunks: Chunks, bands: list[int], level: int) -> Pixels:
        """`chunk_pixels(session, chunks, bands, level, coordinates=False)`: the read ahead
        when it is this batch, else read now; then the planned next batch is read ahead."""
        key = batch_key(chunks)
        wanted = (key, tuple(bands), level)
        with self._lock:
            ahead, self._ahead = self._ahead, None
            following = None
            for plan in self._units.values():
                following = plan.pop(key, following)
        found = None
        if ahead is not None and ahead[0] == wanted:
            try:
                found = ahead[1].result()
            except Cancelled:  # cancelled then: the session may have resumed since
                found = None
        # (Any other read ahead is dropped: its future ends on its own and is forgotten.)
        if found is None:
            found = self._read(chunks, bands, level)
        if following is not None:
            self._start((batch_key(following), tuple(bands), level), following)
        return found

    def _start(self, wanted: tuple, chunks: Chunks) -> None:
        future = threads.pool("readahead").submit(self._read, chunks, list(wanted[1]), wanted[2])
        with self._lock:
            self._ahead = (wanted, future)

    def _read(self, chunks: Chunks, bands: list[int], level: int) -> Pixels:
        return chunk_pixels(self.session, chunks, bands, level, coordinates=False)
