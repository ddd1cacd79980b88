"""Which tile owns each location: the one rule every gridded output follows.

Tiles overlap: the lon/lat boxes of neighbouring tiles do, and the files of adjacent UTM
zones overhang their seam (the 33N tiles reach west of 12°E, over the 32N ones). A location
belongs to the tile `aef_locate` gives it (aefsql/kernels/locate.py: the tile whose raster holds
it, tiles of the location's own UTM zone first), and every output takes it from there:

- an output pixel — of `read_area`, `picture`, `aef_chips`, `ChipDataset`, TorchGeo's
  `AEF` — takes the value of the source pixel under its centre in the tile that locates
  that centre;
- where the output's grid is a tile's own grid, that is the tile's pixel itself, so the
  pixels the tile *owns* (its centre locates to it) are copied block by block
  (`owned_runs`), and only those; the rest take their owner's pixel under their centre
  (`centre_values`);
- `aef_pixels` and `aef_zonal` give each tile's owned pixels (`owned_runs` again), so a
  location comes once, from the tile the gridded outputs take it from.

Ownership is decided from headers before any block is read, so a block no owned pixel lies
in is not fetched. Where two grids meet, a gridded output pixel whose centre is just on one
side of the seam can lie in a source pixel whose own centre is on the other: it takes that
pixel (the one under its centre), which `aef_pixels` gives from the other side's tile: only
output pixels whose centre lies within half a pixel's diagonal (7.1 m) of the seam.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from ..aef import NODATA
from ..catalog.index import TileTable
from ..errors import AefsqlError
from ..geometry import geo
from ..geometry.areas import Area, box_ring, densified, projected
from ..headers.reader import HeaderSource
from . import points
from .locate import locate

if TYPE_CHECKING:
    from ..session import Session

EXTENT_STEP = 1000.0  # metres between vertices of a pixel extent's edges, projected to lon/lat
BOX_MARGIN = 1.0  # metres around a projected lon/lat box: far above its densifying error
LOCATE_PIXELS = 1 << 20  # pixel centres located at once: bounds the per-pixel arrays


def owned_runs(
    tiles: TileTable, headers: HeaderSource, url: str, header, year: int, row, col0, col1
):
    """The parts of runs — columns [col0, col1) of `row` of `url`'s raster as `header`
    describes it (any level) — whose pixels `url` owns in `year`: (run, row, col0, col1),
    the index of each part's run and the part, in the runs' order. A pixel is owned when
    `locate` gives its centre to `url`; only a pixel that another tile's lon/lat box may
    hold is located (none, inside a tile away from its edges)."""
    row, col0, col1 = (np.asarray(a, np.int64) for a in (row, col0, col1))
    run = np.flatnonzero(col1 > col0)
    row, col0, col1 = row[run], col0[run], col1[run]
    if run.size == 0:
        return run, row, col0, col1
    t = header.transform
    epsg = int(header.epsg)
    xa, xb = t.c + (col0 + 0.5) * t.a, t.c + (col1 - 0.5) * t.a
    x_low, x_high = np.minimum(xa, xb), np.maximum(xa, xb)
    y = t.f + (row + 0.5) * t.e
    boxes, in_lonlat = _other_boxes(tiles, url, year, epsg, x_low, x_high, y)
    doubtful = np.zeros(run.size, dtype=bool)
    if in_lonlat:  # a box not testable in `epsg`: its pixels are tested one by one
        doubtful[:] = True
    for x0, y0, x1, y1 in boxes:
        doubtful |= (x_high >= x0) & (x_low <= x1) & (y >= y0) & (y <= y1)
    if not doubtful.any():
        return run, row, col0, col1
    parts = [np.flatnonzero(~doubtful)]  # indices into the runs, whole
    pieces = []  # (run position, row, col0, col1) of the doubtful runs' owned parts
    lengths = col1 - col0
    doubtful_runs = np.flatnonzero(doubtful)
    ends = np.cumsum(lengths[doubtful_runs])
    start = 0
    while start < doubtful_runs.size:
        before = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, before + LOCATE_PIXELS, side="right")))
        group = doubtful_runs[start:stop]
        start = stop
        n = lengths[group]
        which = np.repeat(group, n)
        col = np.repeat(col0[group], n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        x = t.c + (col + 0.5) * t.a
        py = t.f + (row[which] + 0.5) * t.e
        maybe = np.zeros(x.size, dtype=bool)
        for x0, y0, x1, y1 in boxes:
            maybe |= (x >= x0) & (x <= x1) & (py >= y0) & (py <= y1)
        if in_lonlat:
            lon, lat = geo.transform_points(epsg, geo.WGS84, x, py)
            for k in in_lonlat:
                maybe |= tiles.box_holds(k, lon, lat)
        mine = np.ones(x.size, dtype=bool)
        located = np.flatnonzero(maybe)
        if located.size:
            owner = locate(
                tiles, headers, x[located], py[located], np.full(located.size, year), epsg
            )
            mine[located] = owner == url
        # Owned pixels as runs: a new part where a run starts or ownership resumes.
        kept = np.flatnonzero(mine)
        if kept.size == 0:
            continue
        breaks = np.flatnonzero((np.diff(kept) != 1) | (np.diff(which[kept]) != 0)) + 1
        firsts = kept[np.concatenate([[0], breaks])]
        lasts = kept[np.concatenate([breaks - 1, [kept.size - 1]])]
        pieces.append((which[firsts], row[which[firsts]], col[firsts], col[lasts] + 1))
    whole = parts[0]
    position = np.concatenate([whole] + [p[0] for p in pieces])
    out_row = np.concatenate([row[whole]] + [p[1] for p in pieces])
    out_col0 = np.concatenate([col0[whole]] + [p[2] for p in pieces])
    out_col1 = np.concatenate([col1[whole]] + [p[3] for p in pieces])
    order = np.lexsort((out_col0, position))  # the runs' order, a run's parts west to east
    position, out_row, out_col0, out_col1 = (
        a[order] for a in (position, out_row, out_col0, out_col1)
    )
    return run[position], out_row, out_col0, out_col1


def _other_boxes(tiles: TileTable, url: str, year: int, epsg: int, x_low, x_high, y):
    """The lon/lat boxes of the tiles of `year` other than `url` that may hold pixel centres
    within the extent, each as bounds (west, south, east, north) in EPSG `epsg` with a
    margin (a box projected densified), and the tiles whose box cannot be projected there
    (across the antimeridian, or far outside `epsg`'s zone), to be tested in lon/lat."""
    x0, x1, y0, y1 = x_low.min(), x_high.max(), y.min(), y.max()
    extent = Area((densified(box_ring(x0, y0, x1, y1), EXTENT_STEP),), epsg)
    found = set()  # the catalog's 1-degree cells the extent meets propose the tiles
    for ring in projected(extent, geo.WGS84).rings:  # a part each side of the antimeridian
        (west, south), (east, north) = ring.min(axis=0), ring.max(axis=0)
        for cell_lon in range(int(np.floor(west)), min(int(np.floor(east)), 179) + 1):
            for cell_lat in range(int(np.floor(south)), min(int(np.floor(north)), 89) + 1):
                found.update(tiles.candidates(year, cell_lon, cell_lat).tolist())
    boxes, in_lonlat = [], []
    m = BOX_MARGIN
    for k in sorted(found):
        if tiles.path[k] == url:
            continue
        west, south, east, north = tiles.west[k], tiles.south[k], tiles.east[k], tiles.north[k]
        bounds = _box_bounds(float(west), float(south), float(east), float(north), epsg)
        if bounds is None:
            in_lonlat.append(k)
            continue
        bx0, by0, bx1, by1 = bounds
        boxes.append((bx0 - m, by0 - m, bx1 + m, by1 + m))
    return boxes, in_lonlat


@lru_cache(maxsize=4096)
def _box_bounds(west: float, south: float, east: float, north: float, epsg: int):
    """The bounds in EPSG `epsg` of a lon/lat box (its edges densified: they bend there);
    None when it crosses the antimeridian or cannot be projected there. Cached: every read of
    chips or pixels near a tile's edge asks again for its neighbours' boxes."""
    if west > east:  # a box across the antimeridian: no bounds to test in `epsg`
        return None
    try:
        return projected(Area((box_ring(west, south, east, north),), geo.WGS84), epsg).bounds
    except AefsqlError:
        return None


def centre_values(
    session: Session,
    x,
    y,
    crs: int,
    year: int,
    bands,
    level: int = 0,
    keep_blocks: bool = False,
) -> np.ndarray:
    """int8 (points, bands): the value of the source pixel under each point (x/y in EPSG
    `crs`) in the tile `locate` gives it in `year`; NODATA where no tile holds the point,
    the file holds nodata or lacks the band."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    engine = session.engine
    paths = locate(session.catalog.tiles(), engine.headers, x, y, np.full(x.size, year), crs=crs)
    if all(p is None for p in paths):
        return np.full((x.size, len(bands)), NODATA, np.int8)
    samples = points.sample(
        engine, paths, x, y, list(bands), crs=crs, keep_blocks=keep_blocks, level=level
    )
    found = np.array(samples.values, dtype=np.int8, copy=True)  # (points, bands)
    for k in range(len(bands)):
        found[~samples.band_valid(k), k] = NODATA
    return found
