"""Change between years: for each location of an area and each pair of consecutive years,
the cosine similarity of the location's embeddings in the two years, from the int8 blocks.

AEF's tiles lie on the same grids every year, so a location is the same pixel of the same
grid in every year (the same `location` key: pixels.location_key). The area is planned once
for all its years, over *tile positions*: the grids (CRS, transform, size) of the area's
tiles, each with its file of every year that has one. Ownership (aefsql/kernels/mosaic.py:
one tile per location, own UTM zone first) is decided once, among the positions, as if every
position held a file every year — so every location gets exactly one row per pair, from one
grid, whatever the years lack. A position's chunk is then read in every year at once (each
block of each year once) and all consecutive pairs computed from the values in hand: no join.

A location a year has no file for — the year lacks that tile, or its file there lies on
another grid (never in AEF's files; it then counts as a position of its own, owning no
location its twin owns) — is compared as nodata: its pairs with that year are NULL, never
dropped.

Cosine is scale-invariant and de-quantization is v·|v| / 127.5² (aef.SCALE), so the cosine of
two de-quantized embeddings is that of their int8 values' v·|v|: no table, no FLOAT[64].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import threads
from ..aef import BAND_COUNT, NODATA, any_nodata, signed_square
from ..catalog.index import TileTable
from ..geometry import geo
from ..geometry.areas import Area, projected_all
from ..headers.reader import check_georeferenced
from .engine import nodata_of, run_layout
from .grouping import group_indices
from .pixels import (
    Chunks,
    candidate_tiles,
    centroid_chunk,
    location_key,
    near_tile,
    owned_chunks,
)

if TYPE_CHECKING:
    from ..session import Session

# The year of the positions' own tile table: ownership is decided once for all years.
EVERY_YEAR = 0
# Pixels compared a task (`compare`): a year's piece is 256 KiB of int8, 1 MiB as float32,
# so that a pair's pieces stay in cache between their squares and their sums (4096 ran
# 1.3-1.5x faster than 16384 on 2 cores).
COMPARE_PIECE = 1 << 12


@dataclass(frozen=True)
class Positions:
    """The tile positions of an area: `tiles` has one row per grid (year EVERY_YEAR, the path
    of its earliest year's file), `paths[i, k]` the file of position i in years[k] (None:
    none that year)."""

    tiles: TileTable
    paths: np.ndarray  # object (positions, years)
    years: tuple[int, ...]


@dataclass(frozen=True)
class ChangeUnit:
    """Part of an area's change plan: the chunks of position `position`, or when `stand_in`
    the pixel under the area's centroid, should no position own a pixel centre of it."""

    position: int
    stand_in: bool = False


def tile_positions(session: Session, area: Area, years, level: int = 0) -> Positions:
    """The positions of the tiles of `years` whose lon/lat box meets the area, grids read
    from their headers at `level`, in the order of their earliest file's path."""
    tiles, reader = session.catalog.tiles(), session.engine.headers
    years = tuple(sorted(set(int(y) for y in years)))
    lonlat = projected_all([area], geo.WGS84)[0]
    found = sorted({t for year in years for t in candidate_tiles(tiles, lonlat, year)})
    headers = reader.headers_for(sorted({tiles.path[t] for t in found}), level) if found else {}
    for path, header in headers.items():
        check_georeferenced(path, header)
    grids: dict[tuple, dict[int, int]] = {}
    for t in sorted(found, key=lambda t: (tiles.year[t], tiles.path[t])):
        h = headers[tiles.path[t]]
        a, b, c, d, e, f = (getattr(h.transform, k) for k in "abcdef")
        grid = (int(h.epsg), a, b, c, d, e, f, h.width, h.height)
        grids.setdefault(grid, {}).setdefault(int(tiles.year[t]), t)
    members = sorted(grids.values(), key=lambda m: tiles.path[m[min(m)]])
    first = np.array([m[min(m)] for m in members], np.int64)
    paths = np.array(
        [[tiles.path[m[y]] if y in m else None for y in years] for m in members], dtype=object
    ).reshape(len(members), len(years))
    positions = TileTable(
        year=np.full(first.size, EVERY_YEAR, np.int64),
        path=tiles.path[first],
        utm_zone=tiles.utm_zone[first],
        west=tiles.west[first],
        south=tiles.south[first],
        east=tiles.east[first],
        north=tiles.north[first],
        utm=None if tiles.utm is None else tiles.utm[first],
    )
    return Positions(positions, paths, years)


def change_units(positions: Positions, area: Area) -> list[ChangeUnit]:
    """The area's plan as units, one position each, then a stand-in unit (see
    `unit_chunks`): rows stream as each unit is planned, and the plan held stays one
    tile's."""
    units = [ChangeUnit(i) for i in range(len(positions.tiles.path))]
    if not area.empty and units:
        units.append(ChangeUnit(0, stand_in=True))
    return units


def unit_chunks(
    session: Session, positions: Positions, area: Area, unit: ChangeUnit, level: int = 0
) -> tuple[Chunks, np.ndarray]:
    """The chunks of one unit — those of its position's grid (path: the position's first
    file) that the position owns, in block order; for a stand-in unit, the pixel under the
    area's centroid when no position owns a pixel centre of the area — and the file of each
    chunk in each year (object (chunks, years), None where the year has none)."""
    tiles, reader = positions.tiles, session.engine.headers
    if unit.stand_in:
        for i in range(len(tiles.path)):
            if unit_chunks(session, positions, area, ChangeUnit(i), level)[0].row.size:
                return _nothing(len(positions.years))
        one = centroid_chunk(tiles, reader, area, EVERY_YEAR, level)
        if one is None:
            return _nothing(len(positions.years))
        path, runs = one
        i = int(np.flatnonzero(tiles.path == path)[0])
        return _chunks_of(path, runs, True), positions.paths[[i] * len(runs)]
    i = unit.position
    path = tiles.path[i]
    header = reader.headers_for([path], level)[path]
    shape = projected_all([near_tile(area, tiles, i)], header.epsg)[0]
    runs = owned_chunks(tiles, reader, path, header, EVERY_YEAR, shape)
    return _chunks_of(path, runs, False), positions.paths[np.full(len(runs), i)]


def _chunks_of(path: str, runs: np.ndarray, stand_in: bool) -> Chunks:
    n = len(runs)
    runs = np.asarray(runs, np.int64).reshape(n, 3)
    return Chunks(
        path=np.full(n, path, dtype=object),
        year=np.full(n, EVERY_YEAR, np.int64),
        row=runs[:, 0],
        col0=runs[:, 1],
        col1=runs[:, 2],
        centroid=np.full(n, stand_in),
    )


def _nothing(years: int) -> tuple[Chunks, np.ndarray]:
    return _chunks_of("", np.zeros((0, 3), np.int64), False), np.zeros((0, years), object)


@dataclass(frozen=True)
class Changes:
    """Per pixel of chunks (in the chunks' order, west to east within each): where it is,
    and per pair of consecutive years its similarity (float32 (pixels, pairs), NaN where
    NULL: nodata or no file in either year, or a zero vector)."""

    chunk: np.ndarray
    location: np.ndarray
    x: np.ndarray
    y: np.ndarray
    epsg: np.ndarray  # int64, of x/y, per chunk
    similarity: np.ndarray


def chunk_changes(
    session: Session, chunks: Chunks, paths: np.ndarray, years, level: int = 0
) -> Changes:
    """The changes of the pixels of `chunks` (their path: any file of their grid, which
    gives where each pixel is) between consecutive `years`, reading each chunk from
    `paths[c, k]` in years[k] (None: no file that year, its pixels compared as nodata).
    Each year's blocks are read once, through the engine's run reads (`_year_values`)."""
    years = list(years)
    n = chunks.row.size
    lengths = chunks.col1 - chunks.col0
    chunk = np.repeat(np.arange(n), lengths)
    starts = np.cumsum(lengths) - lengths
    col = np.repeat(chunks.col0, lengths) + (np.arange(chunk.size) - starts[chunk])
    # Where each pixel is, from its grid's header, as aef_pixels computes it (the same x, y
    # and location keys: pixels.location_key). A row is one y and a chunk one row, so y and
    # the key's y part are worked out per chunk; a call's chunks mostly share one grid.
    reader = session.engine.headers
    named = sorted({p for p in chunks.path.tolist() if p})
    headers = reader.headers_for(named, level) if named else {}
    grid = np.zeros((n, 5))  # a, c, e, f, epsg per chunk
    for path, header in headers.items():
        t = header.transform
        grid[chunks.path == path] = (t.a, t.c, t.e, t.f, header.epsg)
    a, c, e, f, epsg = grid.T
    row_y = f + (chunks.row + 0.5) * e
    row_key = location_key(epsg.astype(np.int64), 0.0, row_y, 1.0, np.abs(e))
    if n and (grid == grid[0]).all(axis=0)[[0, 1]].all():  # one a and c: scalars
        x = c[0] + (col + 0.5) * a[0]
        x_key = np.floor(x / abs(a[0])).astype(np.int64)
    else:
        pixel_a = a[chunk]
        x = c[chunk] + (col + 0.5) * pixel_a
        x_key = np.floor(x / np.abs(pixel_a)).astype(np.int64)
    y = row_y[chunk]
    location = row_key[chunk] + x_key
    bounds = np.append(starts, chunk.size)
    # The years are read side by side: one's blocks decode while another's Python runs.
    read = threads.pool("change-years").map(
        lambda k: _year_values(session, chunks, paths[:, k], level, bounds), range(len(years))
    )
    values, absent = (list(v) for v in zip(*read, strict=True)) if years else ([], [])
    return Changes(
        chunk=chunk,
        location=location,
        x=x,
        y=y,
        epsg=grid[:, 4].astype(np.int64),
        similarity=compare(values, absent),
    )


def _year_values(session: Session, chunks: Chunks, paths, level, starts):
    """int8 (64, pixels) of one year, in the chunks' pixel order (`starts`: each chunk's
    first), read from `paths` (each chunk's file that year, None: none), and bool (pixels,)
    where a pixel is NULL beyond holding -128 (no file, a file whose nodata is another value
    or that lacks bands; None: nowhere).

    The engine's run reads (`read_layout`), file by file: each block once, and no place or
    lon/lat worked out again for every year (`chunk_changes` has them once)."""
    engine = session.engine
    reader = engine.headers
    total = int(starts[-1]) if starts.size else 0
    values, missing = None, None
    files = group_indices(paths, np.flatnonzero(paths != None))  # noqa: E711 (elementwise)
    for url, runs in files.items():

        def read(url=url, runs=runs):
            header = reader.headers_for([url], level)[url]
            check_georeferenced(url, header)
            layout = run_layout(url, header, chunks.row[runs], chunks.col0[runs], chunks.col1[runs])
            return header, layout, engine.read_layout(url, header, layout, list(range(BAND_COUNT)))

        header, layout, found = reader.restarting_on_change(read)
        at = runs[layout.run]
        place = starts[at] + (layout.col - chunks.col0[at])
        whole = found.shape[1] == total and np.array_equal(place, np.arange(total))
        odd = nodata_of(url, header) != NODATA or header.samples_per_pixel < BAND_COUNT
        if whole and len(files) == 1:  # the usual call: one file, the chunks in block order
            return found, (_odd_nulls(found, url, header) if odd else None)
        if values is None:
            values = np.full((BAND_COUNT, total), NODATA, np.int8)
            missing = np.ones(total, bool)
        values[:, place] = found
        missing[place] = _odd_nulls(found, url, header) if odd else False
    if values is None:
        return np.full((BAND_COUNT, total), NODATA, np.int8), np.ones(total, bool)
    return values, missing


def _odd_nulls(values: np.ndarray, url, header) -> np.ndarray:
    """bool (pixels,): any band the file's own nodata, or one it lacks."""
    null = (values == np.int8(nodata_of(url, header))).any(axis=0)
    if header.samples_per_pixel < BAND_COUNT:
        null[:] = True  # a vector needs all 64 bands
    return null


def compare(values: list[np.ndarray], absent: list[np.ndarray | None]) -> np.ndarray:
    """float32 (pixels, years - 1): the cosine similarity of each pixel's de-quantized
    embeddings in consecutive years, from their int8 `values` (64, pixels) a year; NaN where
    either is nodata (any band -128) or `absent`, or either vector is zero.

    cos(deq(a), deq(b)) = cos(a·|a|, b·|b|): each year's int8 piece becomes a·|a| in
    float32 once (exact: |a·|a|| ≤ 16384), its squared norm and its dot product with the
    next year's are sums over the bands (einsum), piece by piece in the thread pool (numpy
    lets go of the GIL)."""
    years = len(values)
    n = values[0].shape[1] if years else 0
    out = np.empty((n, max(years - 1, 0)), np.float32)

    def piece(start: int) -> None:
        end = min(start + COMPARE_PIECE, n)
        squares, norms, null = [], [], []
        for v, gone in zip(values, absent, strict=True):
            part = v[:, start:end]
            s = signed_square(part, out=np.empty(part.shape, np.float32))  # nodata: masked
            squares.append(s)
            norms.append(np.einsum("ij,ij->j", s, s))
            bad = any_nodata(part)
            null.append(bad if gone is None else bad | gone[start:end])
        for k in range(years - 1):
            dot = np.einsum("ij,ij->j", squares[k], squares[k + 1])
            scale = np.sqrt(norms[k].astype(np.float64) * norms[k + 1])
            with np.errstate(divide="ignore", invalid="ignore"):
                cosine = np.clip(dot / scale, -1.0, 1.0).astype(np.float32)
            cosine[null[k] | null[k + 1] | (scale == 0)] = np.nan
            out[start:end, k] = cosine

    list(threads.pool("compare").map(piece, range(0, n, COMPARE_PIECE)))
    return out
