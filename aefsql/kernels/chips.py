"""Chips: square windows of the tiles' own grid centred on points, north-up, for ML.

A chip is `size` x `size` pixels of the grid of the tile that holds its point (that tile's
CRS, pixel size and alignment), north-up, with the point's pixel at row and column
size // 2. Its pixels follow the ownership rule (aefsql/kernels/mosaic.py): the pixels that the
point's tile and the tiles of the same CRS on the same grid (its neighbours in the UTM zone)
own are read block by block, so a chip across a tile edge is an exact mosaic. Every other
pixel (across a zone seam, including another zone's side of a tile's overhang, past the
zone's tiles) takes the value of the source pixel containing its centre in the tile
`aef_locate` gives it (own zone first): nearest neighbour on the chip's grid, never
interpolated. A pixel nothing covers is nodata (-128).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..aef import BAND_NAMES, NODATA, SCALE, signed_squares
from ..catalog.index import TileTable
from ..geometry import geo
from ..headers.reader import point_pixels
from .budgets import check_windows
from .engine import run_layout
from .grouping import group_indices
from .mosaic import centre_values, owned_runs

if TYPE_CHECKING:
    from ..session import Session

CALL_BYTES = 256 * 1024**2  # chips read and handed over at once
READ_PIXELS = 1 << 22  # chip pixels read from one tile at once: 256 MiB at 64 bands
SLICE_PIECES = 16  # mean pixels a piece from which chips are scattered slice by slice
LONLAT_MARGIN = 0.01  # degrees around a chip's projected corners when looking for tiles


@dataclass(frozen=True)
class Chips:
    """Chips of equal size, one per point; a point in no tile has epsg 0 and all nodata."""

    values: np.ndarray  # int8 (chips, bands, size, size), north-up; NODATA where no data
    epsg: np.ndarray  # int64 (chips,)
    transform: np.ndarray  # float64 (chips, 6): GDAL order (a, b, c, d, e, f), e < 0
    bands: tuple[int, ...]  # band numbers (0 for A00) of values' second axis

    @property
    def found(self) -> np.ndarray:
        return self.epsg != 0

    @property
    def size(self) -> int:
        return int(self.values.shape[-1])

    def bounds(self) -> np.ndarray:
        """float64 (chips, 4): west, south, east, north in each chip's CRS."""
        t, (height, width) = self.transform, self.values.shape[-2:]
        return np.column_stack(
            [t[:, 2], t[:, 5] + height * t[:, 4], t[:, 2] + width * t[:, 0], t[:, 5]]
        )

    def mask(self) -> np.ndarray:
        """bool (chips, size, size): True where every band holds data."""
        return (self.values != NODATA).all(axis=1)

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """(float64 (chips, 64), int64 (chips,)): each chip's mean de-quantized embedding
        over its valid pixels (every band holds data) — NaN for bands not read and for chips
        with no valid pixel — and the number of those pixels."""
        valid = self.mask()
        count = valid.sum(axis=(1, 2), dtype=np.int64)
        means = np.full((len(self.epsg), len(BAND_NAMES)), np.nan)
        squares = signed_squares()
        with np.errstate(invalid="ignore", divide="ignore"):
            for k, band in enumerate(self.bands):
                terms = squares[self.values[:, k].view(np.uint8)]
                terms[~valid] = 0
                means[:, band] = terms.sum(axis=(1, 2), dtype=np.int64) / SCALE / count
        means[count == 0] = np.nan
        return means, count


def chips_per_call(count: int, size, bands: int, max_bytes=None) -> int:
    """How many chips to read and hand over at once, after refusing (`check_windows`)
    `count` chips that cannot fit `max_bytes`; nothing is read before."""
    check_windows(count, size, bands, max_bytes)
    return max(1, CALL_BYTES // (int(size) ** 2 * max(bands, 1)))  # 0 bands: no point at all


def chip_grids(session: Session, paths, x, y, crs: int, size: int, level: int = 0):
    """(epsg int64 (n,), transform float64 (n, 6)) of the chip of each point, on the grid of
    the tile (`paths`, at `level`) that holds it; epsg 0 where the path is None or the point
    lies outside that raster."""
    n = len(paths)
    epsg = np.zeros(n, np.int64)
    transform = np.full((n, 6), np.nan)
    paths = np.asarray(paths, dtype=object)
    held = np.flatnonzero(paths != None)  # noqa: E711 (elementwise)
    half = size // 2
    for path, members in group_indices(paths, held).items():
        header = session.engine.headers.headers_for([path], level)[path]
        rows, cols, inside = point_pixels(path, header, x[members], y[members], crs)
        members, rows, cols = members[inside], rows[inside], cols[inside]
        t = header.transform
        pixel_x, pixel_y = t.a, abs(t.e)
        # The north edge of the point's pixel: a south-up tile counts rows northward.
        top = t.f + (rows + (0 if t.e < 0 else 1)) * t.e
        transform[members] = np.column_stack(
            [
                np.full(members.size, pixel_x),
                np.zeros(members.size),
                t.c + (cols - half) * pixel_x,
                np.zeros(members.size),
                np.full(members.size, -pixel_y),
                top + half * pixel_y,
            ]
        )
        epsg[members] = header.epsg
    return epsg, transform


def read_chips(
    session: Session,
    paths,
    x,
    y,
    crs: int,
    year: int,
    size: int,
    bands,
    level: int = 0,
    keep_blocks: bool = False,
) -> Chips:
    """The chips centred on points (x/y in EPSG `crs`) of one year, each on the grid of the
    tile `paths` names for it (from `locate`; None: no chip). Size-checked by the caller.
    `keep_blocks`: keep decoded blocks in the session's block cache, for later batches."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    epsg, transform = chip_grids(session, paths, x, y, crs, size, level)
    return read_windows(session, epsg, transform, year, (size, size), bands, level, keep_blocks)


def read_windows(
    session: Session,
    epsg,
    transform,
    year: int,
    shape,
    bands,
    level: int = 0,
    keep_blocks: bool = False,
) -> Chips:
    """Windows of `shape` (height, width) pixels, each on its own north-up grid (EPSG code,
    GDAL transform; epsg 0: none), filled by the rule of chips: the pixels tiles on that grid
    own, block by block, then the source pixel under each remaining centre in its owner."""
    bands = tuple(int(b) for b in bands)
    epsg = np.asarray(epsg, np.int64)
    transform = np.asarray(transform, np.float64).reshape(-1, 6)
    height, width = shape
    values = np.full((len(epsg), len(bands), height, width), NODATA, dtype=np.int8)
    filled = np.zeros((len(epsg), height, width), dtype=bool)
    found = np.flatnonzero(epsg != 0)
    # Chips on one grid (CRS, pixel size) can share tiles: read them together.
    keys = np.array(
        [f"{e} {t[0]!r} {t[4]!r}" for e, t in zip(epsg, transform, strict=True)], dtype=object
    )
    for members in group_indices(keys, found).values():
        _read_own_grid(
            session,
            members,
            epsg,
            transform,
            year,
            bands,
            level,
            values,
            filled,
            keep_blocks,
        )
    _sample_rest(session, found, epsg, transform, year, bands, level, values, filled, keep_blocks)
    return Chips(values, epsg, transform, bands)


def _read_own_grid(
    session, members, epsg, transform, year, bands, level, values, filled, keep_blocks
):
    """Fill the chips `members` (of one grid) with the pixels the tiles lying on that grid
    own, block by block."""
    height, width = values.shape[-2:]
    code = int(epsg[members[0]])
    t = transform[members]
    west, north = t[:, 2], t[:, 5]
    east, south = west + width * t[:, 0], north + height * t[:, 4]
    lon, lat = geo.transform_points(
        code,
        geo.WGS84,
        np.concatenate([west, west, east, east]),
        np.concatenate([south, north, south, north]),
    )
    m = members.size
    lon, lat = lon.reshape(4, m), lat.reshape(4, m)
    tiles, reader = session.catalog.tiles(), session.engine.headers
    for k in _candidates(tiles, year, lon.min(0), lat.min(0), lon.max(0), lat.max(0)):
        path = tiles.path[k]
        header = reader.headers_for([path], level)[path]
        offsets = lattice_offsets(header, code, t[0, 0], -t[0, 4], west, north)
        if offsets is None:
            continue
        shift, start, step = offsets
        col0 = np.clip(shift, 0, header.width)
        col1 = np.clip(shift + width, 0, header.width)
        first_row = np.minimum(start, start + step * (height - 1))
        meets = (col1 > col0) & (first_row < header.height) & (first_row + height > 0)
        chosen = np.flatnonzero(meets)
        if chosen.size == 0:
            continue
        per_read = max(1, READ_PIXELS // (height * width))
        for part in np.array_split(chosen, -(-chosen.size // per_read)):
            _read_tile_part(
                session,
                year,
                path,
                header,
                level,
                members[part],
                shift[part],
                start[part],
                step,
                col0[part],
                col1[part],
                bands,
                values,
                filled,
                keep_blocks,
            )


def _read_tile_part(
    session,
    year,
    path,
    header,
    level,
    chips,
    shift,
    start,
    step,
    col0,
    col1,
    bands,
    values,
    filled,
    keep_blocks,
):
    """Read the runs of `chips` (one per chip row) that lie in one tile, the parts it owns,
    and scatter them."""
    height = values.shape[-2]
    r = np.tile(np.arange(height), chips.size)
    rows = np.repeat(start, height) + step * r
    keep = (rows >= 0) & (rows < header.height)
    run_chip, run_r, rows = np.repeat(chips, height)[keep], r[keep], rows[keep]
    run_shift = np.repeat(shift, height)[keep]
    run_col0, run_col1 = np.repeat(col0, height)[keep], np.repeat(col1, height)[keep]
    engine = session.engine
    part, rows, run_col0, run_col1 = owned_runs(
        session.catalog.tiles(), engine.headers, path, header, year, rows, run_col0, run_col1
    )
    if part.size == 0:  # the tile owns none of them: another zone's side of its overhang
        return
    run_chip, run_r, run_shift = run_chip[part], run_r[part], run_shift[part]

    def read():
        current = engine.headers.headers_for([path], level)[path]
        layout = run_layout(path, current, rows, run_col0, run_col1)
        return layout, engine.read_layout(path, current, layout, list(bands), keep_blocks)

    layout, found = engine.headers.restarting_on_change(read)
    # Pieces: consecutive pixels of one run, one row of one chip each.
    cuts = np.flatnonzero((np.diff(layout.run) != 0) | (np.diff(layout.col) != 1)) + 1
    if layout.pixels >= SLICE_PIECES * (cuts.size + 1):
        _scatter_pieces(layout, found, cuts, run_chip, run_r, run_shift, values, filled)
        return
    chip = run_chip[layout.run]
    chip_row = run_r[layout.run]
    chip_col = layout.col - run_shift[layout.run]
    new = ~filled[chip, chip_row, chip_col]
    if not new.all():
        chip, chip_row, chip_col, found = chip[new], chip_row[new], chip_col[new], found[:, new]
    values[chip, :, chip_row, chip_col] = found.T
    filled[chip, chip_row, chip_col] = True


def _scatter_pieces(layout, found, cuts, run_chip, run_r, run_shift, values, filled) -> None:
    """Copy long pieces as slices, band rows at a time: scattering pixel by pixel through
    the band axis costs several times more once pieces are tens of pixels long."""
    starts = np.concatenate([[0], cuts]).tolist()
    ends = np.concatenate([cuts, [layout.pixels]]).tolist()
    runs = layout.run[starts].tolist()
    firsts = layout.col[starts].tolist()
    for s, e, run, first in zip(starts, ends, runs, firsts, strict=True):
        i, r = run_chip[run], run_r[run]
        c0 = first - run_shift[run]
        done = filled[i, r, c0 : c0 + e - s]
        if done.any():
            fresh = ~done
            values[i, :, r, c0 : c0 + e - s][:, fresh] = found[:, s:e][:, fresh]
        else:
            values[i, :, r, c0 : c0 + e - s] = found[:, s:e]
        done[:] = True


def _sample_rest(session, found, epsg, transform, year, bands, level, values, filled, keep_blocks):
    """Pixels of found chips that no tile of their grid owns: the source pixel under each
    centre in its owner, chip grid by chip grid (one CRS a call)."""
    for code in np.unique(epsg[found]).tolist():
        chips = found[epsg[found] == code]
        chip, r, c = np.nonzero(~filled[chips])
        if chip.size == 0:
            continue
        chip = chips[chip]
        for part in np.array_split(np.arange(chip.size), -(-chip.size // READ_PIXELS)):
            i, rr, cc = chip[part], r[part], c[part]
            t = transform[i]
            px = t[:, 2] + (cc + 0.5) * t[:, 0]
            py = t[:, 5] + (rr + 0.5) * t[:, 4]
            got = centre_values(session, px, py, int(code), year, bands, level, keep_blocks)
            values[i, :, rr, cc] = got


def _candidates(tiles: TileTable, year: int, west, south, east, north) -> list[int]:
    """Tiles of `year` whose lon/lat box meets any of the boxes (with a margin)."""
    of_year = np.flatnonzero(tiles.year == year)
    if of_year.size == 0:
        return []
    w, s = west.min() - LONLAT_MARGIN, south.min() - LONLAT_MARGIN
    e, n = east.max() + LONLAT_MARGIN, north.max() + LONLAT_MARGIN
    tw, te = tiles.west[of_year], tiles.east[of_year]
    wraps = tw > te  # a box crossing the antimeridian
    meets_lon = np.where(wraps, (e >= tw) | (w <= te), (e >= tw) & (w <= te))
    meets = meets_lon & (n >= tiles.south[of_year]) & (s <= tiles.north[of_year])
    return of_year[meets].tolist()


def lattice_offsets(header, code: int, pixel_x: float, pixel_y: float, west, north):
    """(column shift, row start, row step) mapping windows of a north-up grid — each with
    its west and north edges, on one lattice of `pixel_x` x `pixel_y` pixels in EPSG `code` —
    onto the tile's pixels: tile column = window column + shift, tile row = start + step *
    window row. None when the tile is not on that lattice (another CRS, pixel size or
    alignment)."""
    t = header.transform
    if header.epsg != code or t.a != pixel_x or abs(t.e) != pixel_y or t.b or t.d:
        return None
    west, north = np.atleast_1d(west), np.atleast_1d(north)
    shift = (west - t.c) / t.a
    start = (north - t.f) / t.e  # the window's top edge, in tile rows
    if np.abs(shift - np.rint(shift)).max() > 1e-6 or np.abs(start - np.rint(start)).max() > 1e-6:
        return None
    step = 1 if t.e < 0 else -1  # a south-up tile counts rows the other way
    start = np.rint(start).astype(np.int64) - (1 if step < 0 else 0)
    return np.rint(shift).astype(np.int64), start, step
