"""Read-ahead of an area's pixels: the next batch of chunks read while the caller consumes
the current one.

A host that hands an area's chunks to `chunk_pixels` in batches it knows up front (DuckDB:
`unit_chunks` plans a unit, then calls `chunk_pixels` one vector of it at a time) says so
with `plan`; `pixels` then reads each batch as `chunk_pixels` would and, as soon as it has,
starts reading the planned next one in a thread: its blocks are fetched and decoded while
the caller (DuckDB's unnest, projection and Arrow export) works on the current batch — over
a slow link the next requests are in flight meanwhile.

Bounded: one batch of values is read ahead at a time (a batch's pixels, ~100 MB for
DuckDB's 2,048 chunks of 512 pixels), or of a computation from the blocks (`computed`:
aef_similarity's cosines, computed as the blocks decode, and aef_change's pairs), whose
first batch's follower starts before the first is read. Only the plans of
the last few units are kept. A read ahead that is not the next one asked for is dropped,
never used: a batch is used only when the call asks for exactly its chunks (and, for
aef_change, files), bands, level and computation. Errors behave as before: a read ahead that
failed raises its error when its batch is asked for (a cancelled one is read again: the
session may have resumed since), and nothing is fetched twice when the plan is followed.

lon/lat too (`lonlat`): once a query has asked for the lon/lat of a batch's pixels, those of
the batch read ahead are projected ahead as well (PROJ, in its own threads, costs more than
the read); a query that reads neither never projects (unless another query of the session
asks for lon/lat meanwhile). Pixels whose x, y and CRS are not exactly those projected ahead,
where the last ask ended, are projected then.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import threads
from ..errors import Cancelled
from .pixels import Chunks, Pixels, chunk_pixels, lonlat

if TYPE_CHECKING:
    from ..session import Session

PLANNED_UNITS = 4  # units whose plans are kept: more than the queries reading at once
PROJECTED_BATCHES = 2  # batches whose lon/lat projected ahead are kept for the asking
# Batches read ahead at once: one of values (a batch's 64 bands are ~100 MB); of results
# computed from the blocks (`computed`: a number or two a pixel) one too — two made the
# decode threads hold two batches' blocks besides the one DuckDB waits for, and a whole-tile
# aef_similarity scan's peak RSS rose past 1 GiB (benchmarks/README.md, issue 24).
AHEAD_VALUES = 1
AHEAD_DERIVED = 1


@dataclass
class _Projected:
    """lon/lat of a batch's pixels (x, y in their CRS `epsg`), and where the next ask
    should start (DuckDB asks for them a vector at a time, in order)."""

    x: np.ndarray
    y: np.ndarray
    epsg: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    cursor: int = 0

    def find(self, x: np.ndarray, y: np.ndarray, epsg: np.ndarray) -> int | None:
        """Where these points start among this batch's (only where the last ask ended is
        looked at), or None."""
        start, end = self.cursor, self.cursor + x.size
        if (
            end <= self.x.size
            and np.array_equal(self.x[start:end], x)
            and np.array_equal(self.y[start:end], y)
            and np.array_equal(self.epsg[start:end], epsg)
        ):
            return start
        return None


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
        # (batch key -> the batch planned after it, the key function) of units' plans,
        # oldest first
        self._units: OrderedDict[int, tuple[dict, object]] = OrderedDict()
        self._next_unit = 0
        # The batches being read ahead, next first: [(key, *how), future of its result
        # (Pixels for `pixels`), future of its _Projected (None: not asked for), the batch].
        self._ahead: list[list] = []
        self._projected: deque[Future] = deque(maxlen=PROJECTED_BATCHES)

    def plan(self, batches: list, key=batch_key) -> None:
        """The batches of one unit, in the order they will be asked for (Chunks, or what
        `computed`'s callers read a batch from, told apart by `key`)."""
        if len(batches) < 2:
            return
        keys = [key(b) for b in batches]
        following = dict(zip(keys[:-1], batches[1:], strict=True))
        with self._lock:
            self._units[self._next_unit] = (following, key)
            self._next_unit += 1
            while len(self._units) > PLANNED_UNITS:
                self._units.popitem(last=False)

    def pixels(self, chunks: Chunks, bands: list[int], level: int, derive=None) -> Pixels:
        """`chunk_pixels(session, chunks, bands, level, coordinates=False, derive=derive)`:
        the read ahead when it is this batch, else read now; then the planned next batch is
        read ahead. (`derive`, compared by equality, computes per pixel as the blocks are
        decoded: aef_similarity's cosines, so that they are computed ahead too.)"""

        def read(batch: Chunks) -> Pixels:
            return self._read(batch, list(bands), level, derive=derive)

        how = (tuple(bands), level, derive)
        return self.computed(chunks, how, read, derived=derive is not None)

    def computed(self, batch, how: tuple, compute, derived: bool = True, key=batch_key):
        """`compute(batch)`: computed ahead when it is this batch with the same `how` (what
        `compute` does, compared by equality), else now; then the planned next batches are
        computed ahead (AHEAD_DERIVED of them when `derived` — a small result a pixel —,
        else AHEAD_VALUES). `key` tells batches apart, as given to `plan`."""
        wanted = (key(batch), *how)
        with self._lock:
            at = next((i for i, a in enumerate(self._ahead) if a[0] == wanted), None)
            ahead = None if at is None else self._ahead[at]
            self._ahead = [] if at is None else self._ahead[at + 1 :]
            chain, step = None, None
            for plan, planned_key in self._units.values():
                if planned_key is not key:
                    continue
                after = plan.pop(wanted[0], None)
                if after is not None:
                    chain, step = plan, after
            following = []  # the next batches planned, as many as are read ahead
            while step is not None and len(following) < (
                AHEAD_DERIVED if derived else AHEAD_VALUES
            ):
                following.append(step)
                step = chain.get(key(step))
        found = None
        if ahead is not None:
            try:
                found = ahead[1].result()
            except Cancelled:  # cancelled then: the session may have resumed since
                found = None
            if found is not None and ahead[2] is not None:
                with self._lock:
                    self._projected.append(ahead[2])
        # (Any other read ahead is dropped: its future ends on its own and is forgotten.)
        # Derived reads (a number a pixel out) start the next batches before reading this
        # one when it was not ahead (the first): their blocks decode side by side with its.
        if derived:
            self._start_following(following, how, compute, key)
        if found is None:
            found = compute(batch)
        if not derived:
            self._start_following(following, how, compute, key)
        return found

    def _start_following(self, following: list, how: tuple, compute, key) -> None:
        """Compute ahead the planned next batches not computed ahead yet."""
        for batch in following:
            upcoming = (key(batch), *how)
            with self._lock:
                started = any(a[0] == upcoming for a in self._ahead)
            if not started:
                self._start(upcoming, batch, compute)

    def lonlat(self, x: np.ndarray, y: np.ndarray, epsg: np.ndarray):
        """`pixels.lonlat(x, y, epsg)`: projected ahead when these are the pixels of a batch
        read ahead, in order; else now. Asking starts projecting the batch read ahead."""
        with self._lock:
            if self._ahead and self._ahead[0][2] is None and isinstance(self._ahead[0][3], Chunks):
                wanted, read, _, chunks = self._ahead[0]
                self._ahead[0][2] = threads.pool("lonlat-ahead").submit(
                    self._project, read, chunks, wanted[2]
                )
            projected = list(self._projected)
        if x.size:
            for future in reversed(projected):
                try:
                    batch = future.result()
                except Exception:  # noqa: BLE001 (its read failed: projected now instead)
                    continue
                start = batch.find(x, y, epsg)
                if start is not None:
                    batch.cursor = start + x.size
                    end = batch.cursor
                    return batch.lon[start:end], batch.lat[start:end]
        return lonlat(x, y, epsg)

    def _project(self, read: Future, chunks: Chunks, level: int) -> _Projected:
        """lon/lat of the pixels of a batch read ahead (once read), each in its file's CRS."""
        pixels = read.result()
        paths = chunks.path.tolist()
        headers = self.session.engine.headers.headers_for(sorted(set(paths)), level)
        codes = np.array([headers[p].epsg for p in paths], np.int64)
        epsg = codes[pixels.chunk]
        lon, lat = lonlat(pixels.x, pixels.y, epsg)
        return _Projected(pixels.x, pixels.y, epsg, lon, lat)

    def _start(self, wanted: tuple, batch, compute) -> None:
        future = threads.pool("readahead").submit(compute, batch)
        with self._lock:
            self._ahead.append([wanted, future, None, batch])

    def _read(self, chunks: Chunks, bands: list[int], level: int, derive=None) -> Pixels:
        return chunk_pixels(self.session, chunks, bands, level, coordinates=False, derive=derive)
