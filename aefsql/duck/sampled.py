"""Sampled values held for one aef_sample_points query, in output order, until read back.

DuckDB keeps no row order through a join, and sorting the joined wide rows back into input
order cost ~100 MiB for 10^6 points (benchmarks/README.md, "Issue 24: aef_sample_points
memory"). So the sampling writes each value at its output position — (row - 1) x years +
the year's index — into a store opened for the query, and the query's last projection,
which runs over the points in input order (projections keep it), reads them back by
position: no join, no sort, and no value held twice by DuckDB.

A store is let go once every position has been read back, and its values region by region
before that (the rows are read back roughly in order, while DuckDB writes them out). One
whose query stopped early (a LIMIT, a filter on the input columns, an error) is let go when
another store is opened and it has not been used for `IDLE_SECONDS`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import mmap
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import AefsqlError
from ..kernels.points import Samples

IDLE_SECONDS = 600.0
# Positions per region of the values handed back to the OS once read: whole pages (16,384
# positions x k bands is a multiple of 4 KiB), 1 MiB at 64 bands.
REGION_POSITIONS = 2**14


@dataclass
class _Store:
    samples: Samples  # one per output position
    years: np.ndarray  # int64, sorted: a year's index is its output position within a row
    values: mmap.mmap  # the memory of samples.values (anonymous: pages on first write)
    unread_regions: np.ndarray  # int64: positions of each region not yet read back
    files: list[str] = field(default_factory=list)  # every file the query samples
    errors: np.ndarray | None = None  # object: the message of each position, once one has one
    # geometry := …: each position's file (index in `files`; -1: none) and pixel row and
    # column there, read back once more (`read_places`) for its `geom`.
    places: np.ndarray | None = None
    unread: int = 0  # positions not yet read back
    filling: int = 0  # sample calls under way (a long read must not look idle)
    used: float = field(default_factory=time.monotonic)

    @staticmethod
    def empty(positions: int, years: np.ndarray, bands: list[int]) -> _Store:
        memory = mmap.mmap(-1, max(positions * len(bands), 1))
        values = np.frombuffer(memory, np.int8, positions * len(bands))
        samples = Samples(
            values=values.reshape(positions, len(bands)),
            covered=np.zeros(positions, dtype=bool),
            nodata=np.full(positions, np.nan),
            band_count=np.zeros(positions, dtype=np.int16),
            bands=bands,
        )
        regions = np.full(-(-positions // REGION_POSITIONS), REGION_POSITIONS, np.int64)
        if positions % REGION_POSITIONS:
            regions[-1] = positions % REGION_POSITIONS
        return _Store(samples, years, memory, regions, unread=positions)

    def empty_years(self) -> list[int]:
        """The years none of whose positions lies in a tile (a position whose file could not
        be read lies in one: its message says why it is NULL)."""
        hit = self.samples.covered.copy()
        if self.errors is not None:
            hit |= np.not_equal(self.errors, None)
        hit = hit.reshape(-1, self.years.size)
        return [int(y) for y in self.years[~hit.any(axis=0)].tolist()]

    def release_read(self, at: np.ndarray) -> None:
        """Count positions `at` read; hand each region read in full back to the OS (its
        values read again would be zeros: a second read of a region is refused)."""
        if self.unread_regions.size == 0:
            return
        done = np.bincount(at // REGION_POSITIONS, minlength=self.unread_regions.size)
        self.unread_regions -= done
        if (self.unread_regions < 0).any():
            raise AefsqlError("aef_sample_points read a row's sampled values twice")
        width = self.samples.values.shape[1]
        for region in np.flatnonzero((self.unread_regions == 0) & (done > 0)).tolist():
            start = region * REGION_POSITIONS * width
            length = min(REGION_POSITIONS * width, len(self.values) - start)
            if hasattr(mmap, "MADV_DONTNEED") and length > 0:
                self.values.madvise(mmap.MADV_DONTNEED, start, length)


class SampledStores:
    """The stores of one session's aef_sample_points queries, by number."""

    def __init__(self) -> None:
        self._stores: dict[int, _Store] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._empty_years: dict[int, list[int]] = {}  # of stores read in full, until taken

    def open(
        self, rows: int, years, bands: list[int], files: list[str], places: bool = False
    ) -> int:
        """A store for `rows` input rows x `years` (sorted) of `bands`, sampled from
        `files`; its number. `places`: keep where each value was sampled too, to be read
        back (`read_places`) as well as the values."""
        years = np.asarray(years, dtype=np.int64)
        store = _Store.empty(rows * years.size, years, bands)
        store.files = sorted(files)
        if places:
            store.places = np.full((store.unread, 3), -1, np.int32)
            store.unread *= 2  # each position read twice: its values, its place
        with self._lock:
            now = time.monotonic()
            for number, old in list(self._stores.items()):
                if not old.filling and now - old.used > IDLE_SECONDS:
                    del self._stores[number]
            number = next(self._numbers)
            if store.unread:  # (no row: nothing will be read, nothing to keep)
                self._stores[number] = store
        return number

    def files(self, number: int) -> list[str]:
        return self._store(number).files

    def positions(self, number: int, rows: np.ndarray, years: np.ndarray, counts=None):
        """The output positions (int64) of (row, year) pairs, rows numbered from 1; with
        `counts`, `years` is the year of each run of `counts` rows."""
        store = self._store(number)
        at = rows.astype(np.int64) - 1
        if store.years.size > 1:  # (one year: the row says it; no other 10^6-long array)
            at *= store.years.size
            index = np.searchsorted(store.years, years)
            at += index if counts is None else np.repeat(index, counts)
        return at

    def fill(self, number: int, fill) -> None:
        """Run `fill(samples, errors)` into the store, where `errors` gives the store's
        message array (made on first use)."""
        store = self._store(number)
        with self._lock:
            store.filling += 1
        try:

            def errors() -> np.ndarray:
                if store.errors is None:
                    store.errors = np.full(store.samples.covered.size, None, dtype=object)
                return store.errors

            fill(store.samples, errors)
        finally:
            with self._lock:
                store.filling -= 1
                store.used = time.monotonic()
            _return_free_heap()

    def place(self, number: int, at: np.ndarray, paths, rows, cols) -> None:
        """Record where positions `at` are sampled from (files, pixel rows and columns),
        when the store keeps places."""
        store = self._store(number)
        if store.places is not None:
            files = np.asarray(store.files, dtype=object)
            store.places[at, 0] = np.searchsorted(files, np.asarray(paths, dtype=object))
            store.places[at, 1], store.places[at, 2] = rows, cols

    def read_places(self, number: int, at: np.ndarray):
        """The file (None: no tile holds it), pixel row and column of positions `at`; or
        None when the store keeps no places. Counted as read, as `read`'s are."""
        store = self._store(number)
        if store.places is None:
            return None
        file, rows, cols = store.places[at].T
        paths = np.where(file >= 0, np.asarray(store.files + [None], dtype=object)[file], None)
        with self._lock:
            store.unread -= at.size
            store.used = time.monotonic()
            if store.unread <= 0:
                self._finished(number, store)
        return paths, rows, cols

    def read(self, number: int, at: np.ndarray) -> tuple[Samples, np.ndarray | None]:
        """The samples (and messages, None when there are none) of positions `at`; the
        store is let go once every position has been read."""
        store = self._store(number)
        s = store.samples
        part = Samples(s.values[at], s.covered[at], s.nodata[at], s.band_count[at], s.bands)
        messages = None if store.errors is None else store.errors[at]
        with self._lock:
            store.release_read(at)
            store.unread -= at.size
            store.used = time.monotonic()
            if store.unread <= 0:
                self._finished(number, store)
        return part, messages

    def _finished(self, number: int, store: _Store) -> None:
        """Let go of a store read in full (under the lock), keeping its `empty_years`."""
        self._stores.pop(number, None)
        self._empty_years[number] = store.empty_years()

    def take_empty_years(self, number: int) -> list[int]:
        """The years of store `number` in which no point lay in a tile, once it has been
        read in full (then once only); else nothing."""
        with self._lock:
            return self._empty_years.pop(number, [])

    def _store(self, number: int) -> _Store:
        with self._lock:
            store = self._stores.get(number)
        if store is None:
            raise AefsqlError(
                f"aef_sample_points: the sampled values of this query (store {number}) are no "
                f"longer held: it was idle for over {IDLE_SECONDS:.0f} s; run it again"
            )
        return store


def _return_free_heap() -> None:
    """Hand the heap the sampling freed back to the OS (glibc keeps it otherwise: ~70-140
    MiB for 10^6 points, on top of which DuckDB then writes the rows out). Elsewhere, or
    without glibc, nothing."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        name = ctypes.util.find_library("c")
        try:
            _MALLOC_TRIM = ctypes.CDLL(name).malloc_trim if name else False
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None  # libc's malloc_trim, False where there is none (looked up once)
