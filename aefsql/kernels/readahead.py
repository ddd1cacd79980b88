"""Read-ahead of an area's pixels: the next batches of chunks read while the caller
consumes the current one.

A host that hands an area's chunks to `chunk_pixels` in batches it knows up front (DuckDB:
`unit_chunks` plans a unit, then calls `chunk_pixels` one vector of it at a time) says so
with `plan`; `pixels` then reads each batch as `chunk_pixels` would and, as soon as it has,
starts reading the planned next ones in threads: their blocks are fetched and decoded while
the caller (DuckDB's unnest, projection and Arrow export) works on the current batch — over
a slow link the next requests are in flight meanwhile.

Bounded: the batches read ahead hold at most AHEAD_PIXELS pixels, or one batch (~1 M
pixels, ~110 MB, for DuckDB's 2,048 chunks of 512 pixels), and only the plans of the last
few units are kept. A read ahead that is not the next one asked for is dropped, never used,
with those after it: a batch is used only when the call asks for exactly its chunks, bands
and level. Errors behave as before: a read ahead that failed raises its error when its
batch is asked for (a cancelled one is read again: the session may have resumed since), and
nothing is fetched twice when the plan is followed.

lon/lat too (`lonlat`): once a query asks for the lon/lat of the first pixels of the batch
it was last given, the whole batch is projected, and so are the batches read ahead, once read
(PROJ costs more than the read): in pieces of LONLAT_PIECE points, each a task of the thread
pool (PROJ lets go of the GIL, so pieces run on every core), and an ask waits only for the
pieces holding its points. A query that reads neither never projects (unless another query
of the session asks for lon/lat meanwhile). Pixels whose x, y and CRS are not exactly those
projected, where the last ask ended, are projected then. Held: the lon/lat of
PROJECTED_BATCHES batches (16 bytes a pixel).
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
# Pixels read ahead at most (~110 bytes each with 64 bands: values, x, y, row, col,
# location), beyond the one batch always read ahead: DuckDB's batches of one area range
# from ~90 k to ~1 M pixels, and a small one alone ahead of a large one left the reads idle
# while DuckDB consumed it, then DuckDB waiting on the large one (over HTTP).
AHEAD_PIXELS = 3 << 19
PROJECTED_BATCHES = 2  # batches whose lon/lat projected ahead are kept for the asking
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


@dataclass
class _Ahead:
    """A batch being read ahead: what it was read for, its Pixels (a future), its lon/lat
    (a future of its _Projected; None: not asked for), its chunks and their pixel count."""

    wanted: tuple  # (batch key, bands, level)
    read: Future
    projected: Future | None
    chunks: Chunks
    pixels: int


class ReadAhead:
    """One session's read-ahead of planned batches of chunks; safe to call from several
    threads (a batch asked for by two queries at once is read ahead for one of them)."""

    def __init__(self, session: Session):
        self.session = session
        self._lock = threading.Lock()
        # batch key -> the batch planned after it (units' plans, oldest first)
        self._units: OrderedDict[int, dict[bytes, Chunks]] = OrderedDict()
        self._next_unit = 0
        # The batches being read ahead, in the order they will be asked for.
        self._ahead: deque[_Ahead] = deque()
        self._projected: deque[Future] = deque(maxlen=PROJECTED_BATCHES)
        # The batch `pixels` gave last, unless its lon/lat are projected: (x, y, the chunk of
        # each pixel, Chunks, level) — its coordinates only (24 bytes a pixel) — or None.
        self._given: tuple | None = None

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
        when it is this batch, else read now; then the planned next batches are read ahead
        (see AHEAD_PIXELS)."""
        key = batch_key(chunks)
        wanted = (key, tuple(bands), level)
        with self._lock:
            following = None
            for plan in self._units.values():
                following = plan.pop(key, following)
            ahead = self._ahead.popleft() if self._ahead else None
            if ahead is not None and ahead.wanted != wanted:
                # Any other read ahead is dropped: its future ends on its own and is
                # forgotten, and so are those planned after it.
                ahead = None
                self._ahead.clear()
        found = None
        if ahead is not None:
            try:
                found = ahead.read.result()
            except Cancelled:  # cancelled then: the session may have resumed since
                found = None
            if found is not None and ahead.projected is not None:
                with self._lock:
                    self._projected.append(ahead.projected)
        projected = found is not None and ahead.projected is not None
        if found is None:
            found = self._read(chunks, bands, level)
        with self._lock:  # its lon/lat are projected at the first ask, unless they are
            self._given = None if projected else (found.x, found.y, found.chunk, chunks, level)
        self._read_on(following, tuple(bands), level)
        return found

    def _read_on(self, following: Chunks | None, bands: tuple, level: int) -> None:
        """Start reading the planned batches after those already ahead (`following`: the
        one after the batch just asked for), in order, while the pixels ahead stay within
        AHEAD_PIXELS — always at least one batch."""
        while True:
            with self._lock:
                held = sum(a.pixels for a in self._ahead)
                if self._ahead:
                    last = self._ahead[-1].wanted[0]
                    following = next((p[last] for p in self._units.values() if last in p), None)
            if following is None or (held and held + following.pixels > AHEAD_PIXELS):
                return
            self._start((batch_key(following), bands, level), following)

    def lonlat(self, x: np.ndarray, y: np.ndarray, epsg: np.ndarray):
        """`pixels.lonlat(x, y, epsg)`: projected ahead when these are the pixels of a batch
        given or read ahead, in order; else now. Asking starts projecting the batch read
        ahead, and the batch last given when these are its first pixels."""
        with self._lock:
            for ahead in self._ahead:
                if ahead.projected is None:
                    ahead.projected = threads.pool("lonlat-ahead").submit(
                        self._project, ahead.read, ahead.chunks, ahead.wanted[2]
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
            if given is not None:
                batch = self._projection(*given)
                if batch.find(x, y, epsg) == 0:
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
        return self._projection(pixels.x, pixels.y, pixels.chunk, chunks, level)

    def _projection(self, x, y, chunk, chunks: Chunks, level: int) -> _Projected:
        """lon/lat of a batch's pixels (x, y, and `chunk`: the index of each one's chunk),
        each in its file's CRS, projecting from now on."""
        paths = chunks.path.tolist()
        headers = self.session.engine.headers.headers_for(sorted(set(paths)), level)
        codes = np.array([headers[p].epsg for p in paths], np.int64)
        return _Projected(x, y, codes[chunk])

    def _start(self, wanted: tuple, chunks: Chunks) -> None:
        future = threads.pool("readahead").submit(self._read, chunks, list(wanted[1]), wanted[2])
        with self._lock:
            self._ahead.append(_Ahead(wanted, future, None, chunks, chunks.pixels))

    def _read(self, chunks: Chunks, bands: list[int], level: int) -> Pixels:
        return chunk_pixels(self.session, chunks, bands, level, coordinates=False)
