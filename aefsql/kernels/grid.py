"""Grid summaries: the mean embedding of an area's pixels per grid cell (H3 or square).

The area is laid out once (`areas_chunks`: each location from the one tile that owns it);
each chunk is then cut where its pixels change cell, and every piece is summed into its
cell's entry by the zonal means' own rule (`means.chunk_means`), so each block is read
once for all cells. A pixel belongs to the cell that holds its centre:

- **square** cells of `size` metres on the grid of the pixel's tile (its UTM zone):
  floor(x / size), floor(y / size) of the centre. Cells are keyed with the zone
  ('EPSG:32633:262000:4986000', the lower-left corner in metres): an area across a UTM
  seam has the cells of each zone, each holding the pixels its zone's tiles own.
- **H3** cells: `h3.latlng_to_cell` of the centre's lon/lat. Along each chunk it is asked
  at every H3_STEP-th pixel and the last, then, between two asked pixels of different cells,
  at the middle pixel, until each pixel not asked lies between two asked pixels of the same
  cell: it is in that cell, since an H3 cell is convex (a hexagon of great-circle arcs) and
  a straight run of 16 pixels in UTM bends from a great circle by far less than a
  millimetre. A centre is projected to lon/lat once at most; about 1 pixel in 10 is asked at
  resolution 8. (Where a cell straddles an edge of H3's icosahedron its two faces' parts
  meet at a slight kink, so a pixel there, within 16 pixels of both, could in principle
  differ from asking it; the tests, which ask every pixel, lie on no such edge.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..aef import BAND_COUNT, PIXEL_METRES
from ..geometry import geo
from ..geometry.areas import Area
from ..geometry.footprints import h3_geometries, rectangle_geometries, segments_for
from .budgets import GRID_BYTES, area_pixels, covered_pixels, refuse_over
from .means import ZonalMeans, chunk_means
from .pixels import Chunks, areas_chunks, check_area_size, projected_vertices

if TYPE_CHECKING:
    from ..session import Session

H3_STEP = 16  # pixels between two samples of a chunk's H3 cells
PIECE_PIXELS = 1 << 21  # pixels given cells at once (~100 MiB of index arrays)


@dataclass(frozen=True)
class GridMeans:
    """One entry per (cell, year), cell-major."""

    cell: list[str]  # per entry: the H3 index ('872830828ffffff') or 'EPSG:…:x:y'
    means: ZonalMeans  # its `polygon` indexes the distinct cells


def grid_means(
    session: Session, area: Area, cell: tuple[str, int], years, level: int = 0, max_bytes=None
) -> GridMeans:
    """The means of `area`'s pixels in each cell of `cell` (options.check_cell's: ('h3',
    resolution) or ('square', metres)) and year of `years`, at `level`; only cells holding a
    pixel. `max_bytes` bounds pixels x 64 bands x years of int8 (None: the streamed budget)
    and cells x 64 x years of float64 sums (None: budgets.GRID_BYTES), both checked before
    any header is read."""
    years = [int(y) for y in years]
    check_area_size(area, years, BAND_COUNT, max_bytes, level, session.catalog.tiles)
    check_grid_size(area, cell, years, max_bytes, level, session.catalog.tiles)
    chunks, _ = areas_chunks(session, [area], years, level)
    pieces, keys = _cell_pieces(session, chunks, cell, level)
    # One id per distinct key: (epsg, x, y) of a square, the H3 index as (0, index, 0).
    found, owner = (
        np.unique(keys, axis=0, return_inverse=True) if len(keys) else (keys, np.zeros(0, int))
    )
    means = chunk_means(session, pieces, owner.reshape(-1), len(found), years, level)
    ids = [_cell_id(cell, *key) for key in found.tolist()]
    return GridMeans(cell=[ids[k] for k in means.polygon.tolist()], means=means)


def check_grid_size(area: Area, cell, years, max_bytes=None, level: int = 0, tiles=None):
    """Refuse, before any header is read, a grid whose cells x years x 64 float64 sums would
    exceed `max_bytes` (None: budgets.GRID_BYTES): cells far smaller than the area (10 m
    squares over a county) are held all at once. The cells are estimated as the pixels the
    area covers (`budgets.covered_pixels`, the catalog read only for a large area) over the
    pixels a cell holds (at least one), and as at least a cell a ring (scattered parts of a
    multipolygon each meet cells of their own, however small they are)."""
    limit = GRID_BYTES if max_bytes is None else int(max_bytes)
    per_cell = max(_cell_metres2(cell) / (PIXEL_METRES * 2**level) ** 2, 1.0)
    lonlat = projected_vertices(area)
    scattered = len(area.rings) * max(len(years), 1)
    cells = max(area_pixels(lonlat, level) / per_cell * max(len(years), 1), scattered)
    if cells * BAND_COUNT * 8 <= limit or tiles is None:
        refuse_over(
            _GRID_SUBJECT.format(cells), cells, BAND_COUNT, None, limit, _GRID_ADVICE, "float64"
        )
        return
    stop = limit / BAND_COUNT / 8 * per_cell
    covered = covered_pixels(tiles(), lonlat, years, level, stop_above=stop)
    cells = max(covered / per_cell, min(scattered, covered))  # (no more parts than pixels)
    refuse_over(
        _GRID_SUBJECT.format(cells), cells, BAND_COUNT, None, limit, _GRID_ADVICE, "float64"
    )


_GRID_SUBJECT = "the grid has about {:,.0f} cell-years"
_GRID_ADVICE = "coarser cells, fewer years or a smaller area"


def _cell_metres2(cell: tuple[str, int]) -> float:
    """A cell's area in m²: a square's, or an H3 cell's average at its resolution."""
    if cell[0] == "h3":
        import h3

        return float(h3.average_hexagon_area(cell[1], unit="m^2"))
    return float(cell[1]) ** 2


def _cell_id(cell: tuple[str, int], epsg: int, a: int, b: int) -> str:
    if cell[0] == "h3":
        import h3

        return h3.int_to_str(a)
    size = cell[1]
    return f"EPSG:{epsg}:{a * size}:{b * size}"


def grid_geometries(kind: str, cell: tuple[str, int], ids: list[str]) -> pa.BinaryArray:
    """lon/lat WKB (aefsql/geometry/footprints.py) of cells `ids` as `grid_means` names them
    in `cell`'s grid: their centres (`kind` 'point') or outlines ('pixel'). A square is its
    4 corners in its zone's CRS, each edge split as a footprint's of that length is."""
    if cell[0] == "h3":
        return h3_geometries(kind, ids)
    size = cell[1]
    # 'EPSG:32633:262000:4986000': the zone and the lower-left corner (`_cell_id`).
    epsg, x, y = np.array([i.split(":")[1:] for i in ids], np.int64).reshape(-1, 3).T
    return rectangle_geometries(
        kind, epsg, x, y, x + size, y + size, segments_for(size / PIXEL_METRES)
    )


def _cell_pieces(session: Session, chunks: Chunks, cell, level: int):
    """The chunks cut where the cell changes (pieces, each in one cell), and int64 (pieces,
    3) each piece's cell key: (epsg, x index, y index) of a square, (0, H3 index, 0)."""
    reader = session.engine.headers
    paths = sorted(set(chunks.path.tolist()))
    headers = reader.headers_for(paths, level) if paths else {}
    # Chunks on the same grid (the same tile position in several years) share their cells:
    # each distinct run of a grid is given cells once.
    grid_of = {p: _grid(h) for p, h in headers.items()}
    grids = sorted(set(grid_of.values()))
    number = {g: k for k, g in enumerate(grids)}
    grid = np.array([number[grid_of[p]] for p in chunks.path.tolist()], np.int64)
    pieces_of = [np.zeros((0, 2), np.int64)]  # (chunk, piece) pairs
    bounds, keys = [np.zeros((0, 2), np.int64)], [np.zeros((0, 3), np.int64)]
    first = 0
    for g, (epsg, a, _, c, _, e, f) in enumerate(grids):
        mine = np.flatnonzero(grid == g)
        runs = np.column_stack([chunks.row[mine], chunks.col0[mine], chunks.col1[mine]])
        distinct, inverse = np.unique(runs, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        run_piece_first = np.zeros(len(distinct) + 1, np.int64)
        for start, stop in _run_batches(distinct[:, 2] - distinct[:, 1]):
            batch = distinct[start:stop]
            run, col0, col1, key = _split_runs(batch, cell, epsg, a, c, e, f)
            run_piece_first[start + 1 : stop + 1] = (
                np.bincount(run, minlength=len(batch)).cumsum() + run_piece_first[start]
            )
            bounds.append(np.column_stack([col0, col1]))
            keys.append(key)
        # Each chunk of this grid: the pieces of its run, at the run's offset.
        count = np.diff(run_piece_first)[inverse]
        chunk = np.repeat(mine, count)
        local = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        piece = first + run_piece_first[:-1][inverse].repeat(count) + local
        pieces_of.append(np.column_stack([chunk, piece]))
        first += int(run_piece_first[-1])
    pairs = np.concatenate(pieces_of)
    bounds, keys = np.concatenate(bounds), np.concatenate(keys)
    chunk, piece = pairs[:, 0], pairs[:, 1]
    pieces = Chunks(
        path=chunks.path[chunk],
        year=chunks.year[chunk],
        row=chunks.row[chunk],
        col0=bounds[piece, 0],
        col1=bounds[piece, 1],
        centroid=chunks.centroid[chunk],
    )
    return pieces, keys[piece]


def _run_batches(lengths: np.ndarray):
    """(start, stop) of consecutive runs of about PIECE_PIXELS pixels in all, or one run."""
    ends = np.cumsum(lengths)
    start = 0
    while start < lengths.size:
        before = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, before + PIECE_PIXELS, side="right"))
        stop = max(stop, start + 1)
        yield start, stop
        start = stop


def _split_runs(runs: np.ndarray, cell, epsg: int, a: float, c: float, e: float, f: float):
    """(run, col0, col1, key) of the pieces of `runs` ((row, col0, col1) rows of one grid,
    transform x = c + a·col, y = f + e·row), each piece the consecutive pixels of a run in
    one cell, in run order; key int64 (pieces, 3) as `_cell_pieces` gives it."""
    lengths = runs[:, 2] - runs[:, 1]
    run = np.repeat(np.arange(len(runs)), lengths)
    run_first = np.cumsum(lengths) - lengths
    offset = np.arange(run.size) - run_first[run]
    col = runs[run, 1] + offset
    x = c + (col + 0.5) * a
    y = f + (runs[run, 0] + 0.5) * e
    if cell[0] == "square":
        first_key = np.floor(x / cell[1]).astype(np.int64)
        second_key = np.floor(y / cell[1]).astype(np.int64)
        changes = (first_key[1:] != first_key[:-1]) | (second_key[1:] != second_key[:-1])
    else:
        first_key = _h3_cells(x, y, epsg, cell[1], offset, lengths[run])
        second_key = np.zeros_like(first_key)
        changes = first_key[1:] != first_key[:-1]
    starts = np.flatnonzero(np.concatenate([[True], changes | (run[1:] != run[:-1])]))
    ends = np.append(starts[1:], run.size)
    key = np.column_stack(
        [
            np.full(starts.size, epsg if cell[0] == "square" else 0, np.int64),
            first_key[starts],
            second_key[starts],
        ]
    )
    return run[starts], col[starts], col[ends - 1] + 1, key


def _h3_cells(x, y, epsg: int, resolution: int, offset, length) -> np.ndarray:
    """int64: the H3 cell of each pixel centre (x, y in EPSG `epsg`; `offset` its place in
    its run of `length` pixels): asked at every H3_STEP-th pixel and each run's last, then
    between two asked pixels of different cells at the middle one, until every pixel lies
    between two asked pixels of the same cell, or beside one (see the module's docstring)."""
    n = x.size
    asked = (offset % H3_STEP == 0) | (offset == length - 1)
    cells = np.zeros(n, np.int64)
    cells[asked] = _latlng_cells(x[asked], y[asked], epsg, resolution)
    lo = np.flatnonzero(asked)
    hi = lo[1:]
    lo = lo[:-1]
    while lo.size:
        # (Runs end on an asked pixel: an interval never spans two runs' pixels of
        # different cells unless it is a run's last and the next run's first, adjacent.)
        open_ = (cells[lo] != cells[hi]) & (hi - lo > 1)
        lo, hi = lo[open_], hi[open_]
        if not lo.size:
            break
        mid = (lo + hi) // 2
        cells[mid] = _latlng_cells(x[mid], y[mid], epsg, resolution)
        asked[mid] = True
        lo, hi = np.concatenate([lo, mid]), np.concatenate([mid, hi])
    # Every pixel not asked lies between two asked pixels of the same cell.
    return cells[np.maximum.accumulate(np.where(asked, np.arange(n), 0))]


def _latlng_cells(x, y, epsg: int, resolution: int) -> np.ndarray:
    import h3.api.basic_int as h3  # (an optional extra: options.check_cell checked it)

    lon, lat = geo.transform_points(epsg, geo.WGS84, x, y)
    found = list(map(h3.latlng_to_cell, lat.tolist(), lon.tolist(), [resolution] * x.size))
    return np.array(found, np.int64)


def _grid(header) -> tuple:
    """(epsg, a, b, c, d, e, f): a file's grid, the same for the same tile position in every
    year."""
    t = header.transform
    return (int(header.epsg), t.a, t.b, t.c, t.d, t.e, t.f)
