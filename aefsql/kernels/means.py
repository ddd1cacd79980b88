"""Zonal means: each polygon's pixel count, nodata count and mean de-quantized embedding.

Raster-sequential: the pixels of every polygon are laid out first (row spans, as for
`aef_pixels`), grouped by file and ordered by block, so that each block is decoded once
however many polygons share it. Each band plane is summed as soon as it is decoded, in the
decode threads (`BlockEngine.read_layout`'s `reduce`): v * |v| in integers over each run of
a polygon's pixels in the block, then per polygon with `bincount`, divided by 127.5² once
(the publisher's de-quantization, exact).
A pixel inside several polygons counts in each; a location is counted once per polygon
across tiles and UTM zones (the ownership rule of aefsql/kernels/mosaic.py, applied by
`areas_chunks`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np

from ..aef import BAND_COUNT, SCALE, signed_square
from ..errors import AefsqlError, Cancelled
from ..geometry import geo
from ..geometry.areas import Area, projected_all
from ..geometry.hilbert import hilbert_keys
from .engine import RunLayout, nodata_of, run_layout
from .grouping import group_indices
from .pixels import Chunks, areas_chunks, candidate_tiles, check_area_size, chunk_blocks

if TYPE_CHECKING:
    from ..session import Session

# Pixels read at once: a block's int8 values are kept until its last plane is summed (a
# pixel nodata in one band leaves the others' sums), 128 MiB, ~300 MiB in all.
BATCH_PIXELS = 1 << 21
# Polygons laid out at once: a polygon's plan holds ~4.5 KiB of Python objects (its rings,
# candidate tiles, chunks), so a state's 10^7 fields at once would need ~45 GiB.
ZONAL_BATCH = 1 << 16
BANDS = list(range(BAND_COUNT))


@dataclass(frozen=True)
class ZonalMeans:
    """One entry per (polygon, year), polygon-major: `polygon` indexes the input areas (the
    owners of `chunk_means`)."""

    polygon: np.ndarray  # int64
    year: np.ndarray  # int64
    pixels: np.ndarray  # int64: pixel centres inside
    nodata_pixels: np.ndarray  # int64: of which some band is nodata
    centroid_pixel: np.ndarray  # bool: no centre inside; the pixel under the centroid stands in
    means: np.ndarray  # float64 (entries, 64): NaN where no pixel is valid


def zonal_means(
    session: Session, areas: list[Area], years, level: int = 0, max_bytes=None, lost=None
) -> ZonalMeans:
    """The zonal means of `areas` in each of `years` (at `level`); `max_bytes` (None: the
    streamed budget) bounds each area's pixels x 64 bands x years, every area checked
    before any is read. More than ZONAL_BATCH areas are laid out and summed a batch of
    neighbours at a time (`_neighbourly`). `lost`: see `chunk_means`."""
    years = [int(y) for y in years]
    order = _neighbourly(areas) if len(areas) > ZONAL_BATCH else np.arange(len(areas))
    batches = [order[s : s + ZONAL_BATCH] for s in range(0, len(areas), ZONAL_BATCH)]
    for batch in batches:
        _check_sizes(session, areas, batch, years, level, max_bytes)
    parts = []
    for batch in batches or [order]:
        subset = [areas[i] for i in batch.tolist()]
        chunks, owner = areas_chunks(session, subset, years, level)
        mine = None if lost is None else {}
        found = chunk_means(session, chunks, owner, len(subset), years, level, mine)
        if mine:
            lost.update({(int(batch[k]), year): why for (k, year), why in mine.items()})
        parts.append(replace(found, polygon=batch[found.polygon]))
    if len(parts) == 1:  # (one batch: the areas in their own order)
        return parts[0]
    joined = _joined(parts)
    return entries_of(joined, np.argsort(joined.polygon, kind="stable"))  # polygon-major


def isolated_zonal_means(
    session: Session, areas: list[Area], years, level: int = 0, max_bytes=None
) -> tuple[ZonalMeans, list[tuple[int, int, str]]]:
    """`zonal_means` with each failure (a file that cannot be read, a polygon past its
    budget) kept to the polygon-years it touches: aef_zonal's on_error := 'null'. Returns
    the means of the polygon-years that were read (polygon-major, as `zonal_means`) and
    (polygon, year, message) of the others.

    Blocks that cannot be read fail the polygon-years whose pixels they hold, block by block
    (`chunk_means`' `lost`). A file whose header cannot be read fails the plan: then each
    year is tried alone, the polygons that have that file among their candidate tiles (the
    plan reads their headers) fail with it, and the others are tried again; a failure that
    names no such file (a budget, a neighbour's header) splits the polygons in halves, until
    each is one polygon in one year. A call with no failure costs one try."""
    years = [int(y) for y in years]
    # Budgets first, each area with all its years (as 'raise' counts them): one over budget
    # fails its polygon-years, and the others are read as if it were absent.
    refused = _over_budget(session, areas, years, level, max_bytes)
    over = [(k, year, why) for k, why in refused.items() for year in years]
    areas = [Area((), a.epsg) if k in refused else a for k, a in enumerate(areas)]
    lost: dict = {}
    try:
        found = zonal_means(session, areas, years, level, max_bytes, lost)
    except Cancelled:
        raise
    except AefsqlError:
        pass
    else:
        failed = over + [(p, y, why) for (p, y), why in lost.items()]
        found = entries_of(found, ~np.isin(found.polygon, list(refused)))
        return _without_lost(found, lost), sorted(failed)
    parts, failed = [], over
    tiles = session.catalog.tiles()
    try:
        in_lonlat = projected_all(areas, geo.WGS84)
    except AefsqlError:  # (some cannot be projected: then no file is looked for)
        in_lonlat = None

    def attempt(year: int, members: list[int]) -> None:
        chosen = set(members)  # the others stand empty: the polygon numbering is kept
        subset = [a if k in chosen else Area((), a.epsg) for k, a in enumerate(areas)]
        mine: dict = {}
        try:
            found = zonal_means(session, subset, [year], level, max_bytes, mine)
        except Cancelled:
            raise
        except AefsqlError as exc:
            why = str(exc)
            named = _named_paths(tiles, year, why)
            touched = [
                k
                for k in members
                if named
                and in_lonlat is not None
                and not areas[k].empty
                and named & {tiles.path[t] for t in candidate_tiles(tiles, in_lonlat[k], year)}
            ]
            if touched:
                failed.extend((k, year, why) for k in touched)
                rest = sorted(chosen - set(touched))
                if rest:
                    attempt(year, rest)
                return
            if len(members) == 1:
                failed.append((members[0], year, why))
                return
            half = len(members) // 2
            attempt(year, members[:half])
            attempt(year, members[half:])
            return
        failed.extend((p, y, why) for (p, y), why in mine.items())
        found = _without_lost(found, mine)
        parts.append(entries_of(found, np.isin(found.polygon, members)))

    for year in years:
        attempt(year, [k for k in range(len(areas)) if k not in refused])
    joined = _joined(parts)
    rank = {year: k for k, year in enumerate(years)}
    order = np.lexsort(([rank[y] for y in joined.year.tolist()], joined.polygon))
    return entries_of(joined, order), sorted(failed)


def _over_budget(session: Session, areas, years, level, max_bytes) -> dict[int, str]:
    """The areas whose pixels x 64 bands x years exceed `max_bytes`, and why (`_check_sizes`'
    words), each checked on its own."""
    try:
        _check_sizes(session, areas, np.arange(len(areas)), years, level, max_bytes)
    except AefsqlError:
        pass
    else:
        return {}
    refused = {}
    for k in range(len(areas)):
        try:
            _check_sizes(session, areas, np.array([k]), years, level, max_bytes)
        except AefsqlError as exc:
            refused[k] = str(exc)
    return refused


def _named_paths(tiles, year: int, message: str) -> set[str]:
    """The catalog's files of `year` that `message` names."""
    return {p for p in set(tiles.path[tiles.year == year].tolist()) if p in message}


def _without_lost(found: ZonalMeans, lost: dict) -> ZonalMeans:
    """`found` without the (polygon, year) entries of `lost`."""
    if not lost:
        return found
    pairs = zip(found.polygon.tolist(), found.year.tolist(), strict=True)
    return entries_of(found, np.array([pair not in lost for pair in pairs], bool))


def _joined(parts: list[ZonalMeans]) -> ZonalMeans:
    """The entries of all `parts`, in their order (none: no entry)."""
    if not parts:
        empty = np.zeros(0, np.int64)
        return ZonalMeans(empty, empty, empty, empty, np.zeros(0, bool), np.zeros((0, BAND_COUNT)))
    return ZonalMeans(
        *(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(ZonalMeans))
    )


def entries_of(means: ZonalMeans, index) -> ZonalMeans:
    """The entries `index` (a mask or indices) of `means`."""
    return ZonalMeans(*(getattr(means, f.name)[index] for f in fields(ZonalMeans)))


def chunk_means(
    session: Session,
    chunks: Chunks,
    owner: np.ndarray,
    owners: int,
    years,
    level: int = 0,
    lost: dict | None = None,
) -> ZonalMeans:
    """The means of chunks grouped by `owner` (int64, one per chunk, below `owners`: a
    polygon of aef_zonal, a cell of aef_grid), per owner and year of `years`: every pixel of
    a chunk counted in its owner's entry of its year. The one home of the mean rule.

    `lost` (a dict): a block that cannot be read does not fail the call; the entries whose
    pixels it holds are recorded there, (owner, year) -> why, and their means are not
    whole (the caller drops them). A batch that fails is read again block by block, so
    only the entries of the failing blocks are lost."""
    years = [int(y) for y in years]
    slot = {year: k for k, year in enumerate(years)}
    entries = owners * len(years)
    known = np.array(sorted(slot), np.int64)  # each chunk's year's slot, without a loop
    slots = np.array([slot[year] for year in known.tolist()], np.int64)
    entry = owner * len(years) + slots[np.searchsorted(known, chunks.year)]
    centroid = np.zeros(entries, dtype=bool)
    centroid[entry[chunks.centroid]] = True
    # Every pixel of a chunk is read (chunks hold only owned pixels): counted from the chunks.
    pixels = np.bincount(entry, weights=chunks.col1 - chunks.col0, minlength=entries)
    sums = np.zeros((len(BANDS), entries))  # exact: integers far below 2^53
    valid = np.zeros(entries)
    for batch in _readable(session, chunks, level, entry, years, lost):
        run, segment_sums, segment_valid = batch.summed
        of_entry = entry[batch.runs][run]
        valid += np.bincount(of_entry, weights=segment_valid, minlength=entries)
        for k in range(len(BANDS)):  # (a bincount a band: 4x faster than one over all cells)
            sums[k] += np.bincount(of_entry, weights=segment_sums[k], minlength=entries)
    pixels, valid = pixels.astype(np.int64), valid.astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):  # in place: no entries x 64 copies
        sums /= SCALE
        sums /= valid
    sums[:, valid == 0] = np.nan
    means = sums.T  # (entries, 64): a view
    return ZonalMeans(
        polygon=np.repeat(np.arange(owners), len(years)),
        year=np.tile(np.array(years, np.int64), owners),
        pixels=pixels,
        nodata_pixels=pixels - valid,
        centroid_pixel=centroid,
        means=means,
    )


def _segment_sums(session: Session, chunks: Chunks, level: int):
    """The sums of the chunks' pixels, segment by segment (see `_LayoutSums`): the chunk of
    each segment, int64 (bands, segments) its sums of v * |v| over its valid pixels (no band
    nodata or missing), and int64 (segments,) how many those are. The chunks are of one
    file and year (a batch of `_batches`)."""
    url = chunks.path[0]
    engine = session.engine

    def read():
        header = engine.headers.headers_for([url], level)[url]
        layout = run_layout(url, header, chunks.row, chunks.col0, chunks.col1)
        sums = _LayoutSums(layout, header, nodata_of(url, header))
        engine.read_layout(url, header, layout, BANDS, reduce=sums.block)
        return layout.run[sums.starts], sums.sums, sums.valid

    return engine.headers.restarting_on_change(read)


class _LayoutSums:
    """The sums of a RunLayout's pixels, made block by block in the decode threads as the
    blocks come (no (bands, pixels) values for the whole layout): a *segment* is the
    consecutive pixels of one run in one block, summed as one."""

    def __init__(self, layout: RunLayout, header, nodata: int):
        self.nodata = nodata
        # Bands the file lacks are NULL: then no pixel of the file is valid.
        self.planes = sum(1 for band in BANDS if band < header.samples_per_pixel)
        starts = np.zeros(layout.pixels, dtype=bool)
        starts[layout.bounds[:-1]] = True
        starts[1:] |= layout.run[1:] != layout.run[:-1]
        self.starts = np.flatnonzero(starts)
        self.sums = np.zeros((len(BANDS), self.starts.size), np.int64)
        self.valid = np.zeros(self.starts.size, np.int64)

    def block(self, start: int, end: int, rows, cols, width: int) -> _BlockSums:
        """The reducer of the layout's pixels [start, end), all in one block (the engine's
        `reduce`)."""
        first, stop = np.searchsorted(self.starts, [start, end])
        return _BlockSums(self, start, end, rows, cols, width, slice(first, stop))


class _BlockSums:
    """One block's pixels of a `_LayoutSums`, summed plane by plane as the planes are
    decoded (a plane's pixels, their squares and sums stay in the CPU's cache): v * |v|
    (`signed_square`, int16) summed per segment in int32 — a segment is at most a block's
    width of pixels, < 2^31 / 128² for any block the engine reads. The int8 values are kept
    until the last plane: a pixel found nodata in one band leaves every band's sums."""

    def __init__(self, of: _LayoutSums, start, end, rows, cols, width, segments: slice):
        self.of = of
        self.rows = rows
        self.flat = rows * width + cols
        self.segments = segments
        self.starts = of.starts[segments] - start  # of the segments, in the block's pixels
        self.values: np.ndarray | None = None
        self.null: np.ndarray | None = None  # bool (pixels,): some band nodata
        self.planes_in = 0

    @property
    def rows_needed(self) -> int:
        return int(self.rows[-1]) + 1

    def gather(self, block: np.ndarray, _values, columns, samples) -> None:
        if self.values is None:
            self.values = np.empty((len(BANDS), self.flat.size), np.int8)
        sums = self.of.sums[:, self.segments]  # a view: each block writes its own segments
        for column, sample in zip(columns.tolist(), samples.tolist(), strict=True):
            values = self.values[column]
            np.take(block[..., sample].reshape(-1), self.flat, out=values)
            null = values == self.of.nodata
            if null.any():
                self.null = null if self.null is None else self.null | null
            sums[column] = np.add.reduceat(signed_square(values), self.starts, dtype=np.int32)
        self.planes_in += len(columns)
        if self.planes_in == self.of.planes:
            self._finish()

    def _finish(self) -> None:
        """Each segment's valid pixels, and its sums without the others' values."""
        values, self.values = self.values, None
        counts = np.diff(self.starts, append=self.flat.size)
        sums = self.of.sums[:, self.segments]
        if self.of.planes < len(BANDS):  # a band the file lacks: no pixel is valid
            sums[...] = 0
            self.of.valid[self.segments] = 0
            return
        if self.null is None:
            self.of.valid[self.segments] = counts
            return
        bad = np.flatnonzero(self.null)
        segment = np.searchsorted(self.starts, bad, side="right") - 1
        terms = signed_square(values[:, bad])
        for k in range(len(BANDS)):  # (exact: float64 holds these integers)
            sums[k] -= np.bincount(segment, terms[k], minlength=counts.size).astype(np.int64)
        self.of.valid[self.segments] = counts - np.bincount(segment, minlength=counts.size)


def _check_sizes(session: Session, areas, batch: np.ndarray, years, level, max_bytes=None):
    """Refuse the first area of `batch` (indices into `areas`) whose pixels x 64 bands x
    years exceed `max_bytes` (None: the streamed budget), naming its polygon number, before
    any chunk is laid out or header read (`check_area_size`)."""
    chosen = [areas[i] for i in batch.tolist()]
    try:  # the vertices in lon/lat (`projected_vertices`), in one PROJ call for all
        in_lonlat = projected_all(chosen, geo.WGS84)
    except AefsqlError:  # (each area's own call then says which cannot be)
        in_lonlat = [None] * len(chosen)
    tiles = session.catalog.tiles
    for i, area, lonlat in zip(batch.tolist(), chosen, in_lonlat, strict=True):
        try:
            check_area_size(area, years, len(BANDS), max_bytes, level, tiles, lonlat=lonlat)
        except AefsqlError as exc:
            raise AefsqlError(f"polygon {i + 1}: {exc}") from None


def _neighbourly(areas: list[Area]) -> np.ndarray:
    """The areas' indices, the empty ones first, then along a Hilbert curve through their
    first vertices (scaled to the curve's range): consecutive ones are neighbours, so a
    batch of them shares its blocks, each decoded once for all of it."""
    empty = np.array([a.empty for a in areas], bool)
    first = np.array([a.rings[0][0] for a in areas if not a.empty], float).reshape(-1, 2)
    keys = np.zeros(len(areas), np.uint64)
    if len(first):
        low, high = first.min(axis=0), first.max(axis=0)
        scaled = (first - low) / np.where(high > low, high - low, 1.0)  # [0, 1]
        keys[~empty] = hilbert_keys(scaled[:, 0] * 360 - 180, scaled[:, 1] * 180 - 90) + 1
    return np.argsort(keys, kind="stable")


def _batches(session: Session, chunks: Chunks, level: int):
    """Indices of chunks, file by file and year by year, in block order, cut between blocks
    into batches of about BATCH_PIXELS pixels (a block's chunks stay in one batch, so each
    block is decoded once)."""
    counts = chunks.col1 - chunks.col0
    blocks = chunk_blocks(session, chunks, level)
    for of_path in group_indices(chunks.path, np.arange(counts.size)).values():
        for runs in group_indices(chunks.year, of_path).values():
            block = blocks[runs]
            order = np.lexsort((chunks.col0[runs], chunks.row[runs], block))
            runs, block = runs[order], block[order]
            firsts = np.flatnonzero(np.diff(block, prepend=-1))  # where each block starts
            sizes = np.add.reduceat(counts[runs], firsts)
            start, total = 0, 0
            for k, size in enumerate(sizes.tolist()):
                total += size
                if total >= BATCH_PIXELS or k == len(sizes) - 1:
                    stop = int(firsts[k + 1]) if k + 1 < len(firsts) else runs.size
                    yield runs[start:stop]
                    start, total = stop, 0


@dataclass(frozen=True)
class _Summed:
    runs: np.ndarray  # indices of chunks
    summed: tuple  # their `_segment_sums`


def _readable(session: Session, chunks: Chunks, level: int, entry, years, lost):
    """`_batches` of chunks with their `_segment_sums`. With `lost` a dict, a batch that
    cannot be read is read again block by block, and each block that still cannot be read
    records the (owner, year) of its chunks in `lost` instead of failing the call."""
    for runs in _batches(session, chunks, level):
        try:
            yield _Summed(runs, _segment_sums(session, _subset(chunks, runs), level))
            continue
        except Cancelled:
            raise
        except AefsqlError:
            if lost is None:
                raise
        blocks = chunk_blocks(session, _subset(chunks, runs), level)
        for block in np.unique(blocks).tolist():
            one = runs[blocks == block]
            try:
                yield _Summed(one, _segment_sums(session, _subset(chunks, one), level))
            except Cancelled:
                raise
            except AefsqlError as exc:
                for e in np.unique(entry[one]).tolist():  # (entry: owner x years + slot)
                    lost.setdefault((e // len(years), years[e % len(years)]), str(exc))


def _subset(chunks: Chunks, index: np.ndarray) -> Chunks:
    return Chunks(*(getattr(chunks, name)[index] for name in Chunks.__annotations__))
