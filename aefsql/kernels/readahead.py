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

lon/lat too (`lonlat`): once a query asks for the lon/lat of the first pixels of the batch
`pixels` gave it last, that whole batch is projected, and so are the batches read ahead, once
read (PROJ costs more than the read): in pieces of LONLAT_PIECE points, each a task of the
thread pool (PROJ lets go of the GIL, so pieces run on every core beside DuckDB's thread),
and an ask waits only for the pieces holding its points. A query that reads neither never
projects (unless another query of the session asks for lon/lat meanwhile). Pixels whose x,
y and CRS are not exactly those projected, where the last ask ended, are projected then.
Held: the lon/lat of PROJECTED_BATCHES batches (16 bytes a pixel).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict, deque
from concurrent.futures import Future
from typing import TYPE_CHECKING

import numpy as np

from .. import threads
from ..errors import Cancelled
from ..geometry.geo import lonlat
from .pixels import Chunks, Pixels, chunk_pixels

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


# Points a PROJ task projects (~25 ms): DuckDB's first ask of a batch (2,048 points) waits
# for one piece, not for the batch, and the pieces keep both cores busy.
LONLAT_PIECE = 1 << 16


class _Projected:
    """lon/lat of a batch's pixels (x, y in their CRS `epsg`), projected in pieces by the
    thread pool from creation on, and where the next ask should start (DuckDB asks for them
    a vector at a time, in order)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, epsg: np.ndarray):
        self.x, self.y, self.epsg = x, y, epsg
        self.cursor = 0
        pool = threads.pool("lonlat")
        # (`lonlat` looked up in this module each time: tests count the points projected.)
        self._pieces = [
            pool.submit(lambda s: lonlat(*(a[s : s + LONLAT_PIECE] for a in (x, y, epsg))), start)
            for start in range(0, x.size, LONLAT_PIECE)
        ]

    def take(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """lon, lat of points [start, end), once the pieces holding them are projected."""
        first, last = start // LONLAT_PIECE, (end - 1) // LONLAT_PIECE
        parts = [self._pieces[k].result() for k in range(first, last + 1)]
        offset = first * LONLAT_PIECE
        lon = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        lat = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        return lon[start - offset : end - offset], lat[start - offset : end - offset]

    def find(self, x: np.ndarray, y: np.ndarray, epsg: np.ndarray) -> int | None:
        """Where these points start among this batch's (only where the last ask ended is
        looked at), or None."""
        mine = (self.x, self.y, self.epsg)
        return self.cursor if _points_at(mine, self.cursor, x, y, epsg) else None


def _points_at(batch: tuple, start: int, x: np.ndarray, y: np.ndarray, epsg: np.ndarray) -> bool:
    """True when points (x, y, epsg) are those of `batch` (its x, y, epsg) from `start` on."""
    end = start + x.size
    return end <= batch[0].size and all(
        np.array_equal(column[start:end], points)
        for column, points in zip(batch, (x, y, epsg), strict=True)
    )


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
        # The batch `pixels` gave last, for its lon/lat at the first ask: (x, y, the chunk of
        # each pixel, Chunks, level) — its coordinates only (24 bytes a pixel) — or None.
        self._given: tuple | None = None

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
        found = self.computed(chunks, how, read, derived=derive is not None)
        with self._lock:  # (a batch whose lon/lat were projected ahead is found there first)
            self._given = (found.x, found.y, found.chunk, chunks, level)
        return found

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
        """`lonlat(x, y, epsg)` (geometry/geo.py): projected ahead when these are the pixels
        of a batch given or read ahead, in order; else now. Asking starts projecting the
        batches read ahead, and the batch `pixels` gave last when these are its first
        pixels."""
        with self._lock:
            for ahead in self._ahead:
                if ahead[2] is None and isinstance(ahead[3], Chunks):
                    wanted, read, _, chunks = ahead
                    ahead[2] = threads.pool("lonlat-ahead").submit(
                        self._project, read, chunks, wanted[2]
                    )
            given, self._given = self._given, None
            projected = list(self._projected)
        if x.size:
            for future in reversed(projected):
                try:
                    batch = future.result()
                except Exception:  # noqa: BLE001 (its read failed: projected now instead)
                    continue
                found = self._taken(batch, x, y, epsg)
                if found is not None:
                    return found
            # (Compared before projecting: a query that calls no `pixels` — aef_change —
            # may find another query's batch here.)
            points = None if given is None else self._points(*given)
            if points is not None and _points_at(points, 0, x, y, epsg):
                batch = _Projected(*points)
                done: Future = Future()
                done.set_result(batch)
                with self._lock:
                    self._projected.append(done)
                return self._taken(batch, x, y, epsg)
        return lonlat(x, y, epsg)

    @staticmethod
    def _taken(batch: _Projected, x, y, epsg):
        """lon, lat of these points from `batch` when they are its next ones, else None."""
        start = batch.find(x, y, epsg)
        if start is None:
            return None
        batch.cursor = start + x.size
        return batch.take(start, batch.cursor)

    def _project(self, read: Future, chunks: Chunks, level: int) -> _Projected:
        """lon/lat of the pixels of a batch read ahead, projecting once it is read."""
        pixels = read.result()
        return _Projected(*self._points(pixels.x, pixels.y, pixels.chunk, chunks, level))

    def _points(self, x, y, chunk, chunks: Chunks, level: int) -> tuple:
        """(x, y, EPSG code) of a batch's pixels (`chunk`: the index of each one's chunk),
        each in its file's CRS."""
        paths = chunks.path.tolist()
        headers = self.session.engine.headers.headers_for(sorted(set(paths)), level)
        codes = np.array([headers[p].epsg for p in paths], np.int64)
        return x, y, codes[chunk]

    def _start(self, wanted: tuple, batch, compute) -> None:
        future = threads.pool("readahead").submit(compute, batch)
        with self._lock:
            self._ahead.append([wanted, future, None, batch])

    def _read(self, chunks: Chunks, bands: list[int], level: int, derive=None) -> Pixels:
        return chunk_pixels(self.session, chunks, bands, level, coordinates=False, derive=derive)
