"""Areas as rasters: the pixels of an area on one north-up grid, as numpy or xarray.

The grid has square pixels of the tiles' size (10 m) in one projected CRS, aligned with the
tiles of that CRS. Each output pixel follows the ownership rule (aefsql/kernels/mosaic.py): the
pixels a tile on the grid owns are copied block by block, as `aef_pixels` reads them — inside
one UTM zone an exact mosaic of however many tiles the area spans; every other output pixel
centre goes through the point sampler — `locate` picks its tile (own UTM zone first), the
sampler reads the pixel that contains it — so pixels of another zone's tiles are their
nearest source pixel, int8 exact, never interpolated.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyproj

from ..aef import BAND_NAMES, NODATA, PIXEL_METRES, dequantized_table
from ..errors import AefsqlError
from ..format.tiff import Affine
from ..geometry import geo
from ..geometry.areas import Area, area_from, centroid, projected, row_spans, unwrapped
from ..options import (
    band_list,
    check_as_vector,
    check_level,
    epsg,
    headers_option,
    speaks,
    year_list,
)
from ..session import Session, open_session
from ..storage.store import DEFAULT_CONCURRENCY
from .budgets import RASTER_BYTES, area_pixels, refuse_over
from .chips import lattice_offsets
from .coverage import warn_empty_area
from .locate import locate
from .mosaic import centre_values, owned_runs
from .pixels import Chunks, block_chunks, candidate_tiles, chunk_pixels, projected_vertices

# Pixels sampled per call: bounds the per-pixel arrays (coordinates, locate's work) to a few
# hundred MB. A block that straddles two strips is read once for each.
STRIP_PIXELS = 1 << 22
ZONE_SAMPLE = 32  # a 32 x 32 lattice over the area votes for the default target zone


@dataclass(frozen=True)
class AreaGrid:
    """A north-up grid: `transform` maps (col, row) to the pixel's north-west corner."""

    epsg: int
    transform: Affine
    width: int
    height: int


@dataclass(frozen=True)
class AreaRequest:
    """An area checked against the budget, before anything is read."""

    area: Area
    years: tuple[int, ...]
    bands: tuple[str, ...]
    target_epsg: int | None  # None: the zone whose tiles own most of the area's pixels
    estimated_pixels: int
    level: int = 0  # 0: full resolution; k: the files' k-th overview


@dataclass(frozen=True)
class AreaRaster:
    """int8 values (years, bands, height, width) on `grid`; -128 outside the area, outside
    coverage and where the file holds nodata."""

    values: np.ndarray
    grid: AreaGrid
    years: tuple[int, ...]
    bands: tuple[str, ...]
    zones: tuple[int, ...] = ()  # EPSG codes of the tiles owning the area, most-owning first


@speaks("python")
def read_area(
    area,
    years,
    *,
    bands=None,
    crs=4326,
    target_crs=None,
    max_bytes: int = RASTER_BYTES,
    level: int = 0,
    as_vector: bool = False,
    dequantize: bool = False,
    catalog: str | None = None,
    cache_dir: str | None = None,
    headers: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    allowed_hosts: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    collection: str | None = None,
):
    """The pixels of `area` as an xarray.DataArray (year, band, y, x) of int8, north-up.

    `area`: WKB bytes, WKT, a box [west, south, east, north] or a shapely geometry, in `crs`
    (default lon/lat); `bands`: names such as ['A00', 'A05'] (default all 64). The grid holds
    the pixels whose centres lie within the area's bounds;
    those whose centre is outside the area, outside coverage or nodata are -128
    (`_FillValue`): an area outside coverage is all -128, one holding no pixel centre gives
    y and x of size 0. Inside one UTM zone it is the tiles' own grid: an exact mosaic. An
    area across zones gets one CRS — `target_crs`, default the zone whose tiles own most of
    its pixels — and 10 m pixels aligned with that zone's tiles; each pixel takes the value
    of the source pixel (located as `aef_locate` does) that contains its centre: nearest
    neighbour, never interpolated.
    `level`: 0 (full resolution) or k, the files' k-th overview (2^k times coarser pixels,
    as `level :=` in SQL): the grid is then that overview's.
    `dequantize`: float32 values, sign(v) * (|v| / 127.5)^2, NaN where -128. `as_vector`:
    de-quantized too, as (year, y, x, band): each pixel's 64 bands one contiguous vector,
    as aef_pixels(as_vector := true) gives them, NaN over a pixel's whole vector where any
    band is nodata (needs all 64 bands: no `bands`).
    Refused before anything is read when pixels x bands x years exceed `max_bytes` (default
    4 GiB) of int8, or of float32 (4 bytes a value) when de-quantized; the int8 read under
    a de-quantized result is held beside it until converted (a fifth more). CRS and
    transform follow rioxarray's `spatial_ref` convention (`.rio` works when
    rioxarray is installed). `catalog`, `cache_dir`, `headers`, `concurrency`,
    `allowed_hosts`, `storage_options` and `collection` (deprecated alias of `headers`): as
    for `aefsql.connect`.
    """
    xr = _xarray()
    check_as_vector(as_vector, bands)
    if not isinstance(dequantize, bool):
        raise AefsqlError(f"dequantize must be True or False, not {dequantize!r}")
    request = plan_area(
        area,
        years,
        bands=bands,
        crs=crs,
        target_crs=target_crs,
        max_bytes=max_bytes,
        level=level,
        value_type="float32" if as_vector or dequantize else "int8",
    )
    session = open_session(
        catalog,
        cache_dir=cache_dir,
        headers=headers_option(headers, collection),
        concurrency=concurrency,
        allowed_hosts=allowed_hosts,
        storage_options=storage_options,
    )
    raster = read_planned(session, request)
    if as_vector or dequantize:
        return to_dataarray(raster, xr, dequantized(raster.values, as_vector), as_vector)
    return to_dataarray(raster, xr)


def _xarray():
    try:
        import xarray
    except ImportError:
        raise AefsqlError(
            "read_area returns an xarray.DataArray: pip install 'aefsql[xarray]'"
        ) from None
    return xarray


def plan_area(
    area,
    years,
    *,
    bands=None,
    crs=4326,
    target_crs=None,
    max_bytes: int = RASTER_BYTES,
    level: int = 0,
    value_type: str = "int8",
) -> AreaRequest:
    """Check the parameters and the size of an area's raster; read nothing. The estimate is
    the window's pixels on a 10 m grid (2^level x 10 m at an overview) in the target CRS (or
    the zone holding most of the area, as the catalog is not read yet), and never less than
    the area's size on the ellipsoid (budgets.area_pixels)."""
    chosen_years, names = year_list(years), band_list(bands)
    check_level(level)
    shape = area_of(area, epsg(crs))
    target = None if target_crs is None else _projected_epsg(epsg(target_crs))
    advice = "fewer bands (bands=['A00', ...]) or years, or a smaller area or a coarser level"
    # The grid's window holds the area, covered or not: never fewer pixels than the area's
    # own size on the ellipsoid, checked first (an area much wider than a zone folds when
    # projected into one, and its projected window says nothing).
    pixels = int(area_pixels(projected_vertices(shape), level))
    subject = f"the area's window is at least {pixels:,} pixels (its size)"
    refuse_over(subject, pixels, len(names), len(chosen_years), max_bytes, advice, value_type)
    size = PIXEL_METRES * 2**level
    grid = grid_for(projected(shape, target or _zone_of_most(shape)), size, size)
    window = grid.width * grid.height
    subject = f"the area's window is {grid.width:,} x {grid.height:,} = {window:,} pixels"
    refuse_over(subject, window, len(names), len(chosen_years), max_bytes, advice, value_type)
    pixels = max(pixels, window)
    return AreaRequest(shape, chosen_years, names, target, pixels, int(level))


def area_of(area, crs: int) -> Area:
    """An Area from WKB bytes, WKT, a shapely geometry (anything with `.wkb`) or a box."""
    if hasattr(area, "wkb") and not isinstance(area, bytes | bytearray | memoryview):
        return area_from(area.wkb, crs)
    return area_from(area, crs)


def _projected_epsg(code: int) -> int:
    """The grid has 10 m pixels: its CRS must count in metres."""
    found = pyproj.CRS.from_epsg(code)
    units = {axis.unit_name for axis in found.axis_info[:2]}
    if not found.is_projected or units != {"metre"}:
        raise AefsqlError(
            f"target_crs EPSG:{code} is not a projected CRS in metres (the grid has 10 m "
            "pixels): pass a UTM zone such as 32633"
        )
    return code


def grid_for(area: Area, pixel_x: float, pixel_y: float, origin=(0.0, 0.0)) -> AreaGrid:
    """The north-up grid of pixels (of a lattice through `origin`) whose centres lie in the
    area's bounds, edges included: a superset of the centres row_spans finds inside, however
    it breaks ties on an edge."""
    if area.empty:
        return AreaGrid(area.epsg, Affine(pixel_x, 0.0, 0.0, 0.0, -pixel_y, 0.0), 0, 0)
    west, south, east, north = area.bounds
    ox, oy = origin
    i0, i1 = _centres_within(west, east, ox, pixel_x)
    j0, j1 = _centres_within(south, north, oy, pixel_y)
    transform = Affine(pixel_x, 0.0, ox + i0 * pixel_x, 0.0, -pixel_y, oy + j1 * pixel_y)
    return AreaGrid(area.epsg, transform, i1 - i0, j1 - j0)


def _pixel_at(point, epsg: int, pixel_x: float, pixel_y: float, origin) -> AreaGrid:
    """The one-pixel north-up grid (of the lattice through `origin`) holding `point`."""
    i = int(np.floor((point[0] - origin[0]) / pixel_x))
    j = int(np.floor((point[1] - origin[1]) / pixel_y))
    north = origin[1] + (j + 1) * pixel_y
    return AreaGrid(epsg, Affine(pixel_x, 0.0, origin[0] + i * pixel_x, 0.0, -pixel_y, north), 1, 1)


def _centres_within(low: float, high: float, origin: float, size: float) -> tuple[int, int]:
    """[first, end) of the lattice indices k whose centre origin + (k + 0.5) * size lies
    in [low, high]."""
    first = int(np.ceil((low - origin) / size - 0.5))
    return first, max(first, int(np.floor((high - origin) / size - 0.5)) + 1)


def _lattice(area: Area, n: int = ZONE_SAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat of up to n x n points spread over the area (its centroid if none is inside)."""
    lonlat = unwrapped(projected(area, geo.WGS84))
    if lonlat.empty:
        return np.zeros(0), np.zeros(0)
    west, south, east, north = lonlat.bounds
    step_x, step_y = max(east - west, 1e-9) / n, max(north - south, 1e-9) / n
    spans = row_spans(lonlat, Affine(step_x, 0.0, west, 0.0, step_y, south), n, n)
    counts = spans[:, 2] - spans[:, 1]
    rows = np.repeat(spans[:, 0], counts)
    cols = np.concatenate([np.arange(a, b) for _, a, b in spans]) if len(spans) else rows
    if rows.size == 0:
        lon, lat = (np.array([v]) for v in centroid(lonlat))
    else:
        lon, lat = west + (cols + 0.5) * step_x, south + (rows + 0.5) * step_y
    return (lon + 180.0) % 360.0 - 180.0, lat


def _zone_of_most(area: Area) -> int:
    """The EPSG code of the standard UTM zone holding most of the area (geometry only)."""
    lon, lat = _lattice(area)
    if lon.size == 0:
        return area.epsg
    labels = Counter(geo.utm_zone(lon, lat).tolist())
    label = labels.most_common(1)[0][0]
    return geo.utm_epsg_of_label(label)


def read_planned(session: Session, request: AreaRequest) -> AreaRaster:
    """Read a planned area: pick the target CRS and grid, then sample every pixel centre."""
    warn_empty_area(session.catalog.tiles(), request.area, request.years)
    tiles, reader = session.catalog.tiles(), session.engine.headers
    # Which tiles own a lattice of points over the area: they vote for the target zone and
    # give its grid's pixel size and alignment.
    lon, lat = _lattice(request.area)
    owners = []
    for year in request.years:
        owners += [p for p in locate(tiles, reader, lon, lat, np.full(lon.size, year)) if p]
    level = request.level
    headers = reader.headers_for(sorted(set(owners)), level)
    votes = Counter(headers[p].epsg for p in owners)
    target = request.target_epsg or (
        votes.most_common(1)[0][0] if votes else _zone_of_most(request.area)
    )
    aligned = sorted(p for p in headers if headers[p].epsg == target)
    if aligned:
        t = headers[aligned[0]].transform
        pixel_x, pixel_y = abs(t.a), abs(t.e)
        origin = (t.c % pixel_x, t.f % pixel_y)
    else:
        pixel_x = pixel_y = PIXEL_METRES * 2**level
        origin = (0.0, 0.0)
    shape = projected(request.area, target)
    grid = grid_for(shape, pixel_x, pixel_y, origin)
    spans = row_spans(shape, grid.transform, grid.width, grid.height)
    if len(spans) == 0 and not shape.empty:
        # No pixel centre inside (an area smaller than a pixel): the pixel under its
        # centroid stands in, as in aef_pixels.
        grid = _pixel_at(centroid(shape), shape.epsg, pixel_x, pixel_y, origin)
        spans = np.array([[0, 0, 1]], dtype=np.int64)
    bands = [BAND_NAMES.index(b) for b in request.bands]
    values = np.full(
        (len(request.years), len(bands), grid.height, grid.width), NODATA, dtype=np.int8
    )
    lonlat = projected(request.area, geo.WGS84)
    t = grid.transform
    for i, year in enumerate(request.years):
        # Tiles on the grid itself are read as blocks, exactly; what they leave (pixels of
        # other zones' tiles, outside coverage) is sampled pixel centre by pixel centre.
        filled = _read_aligned(session, grid, spans, lonlat, year, bands, values[i], level)
        for rows, cols in _strips(spans, STRIP_PIXELS):
            rest = ~filled[rows * grid.width + cols]
            rows, cols = rows[rest], cols[rest]
            if rows.size == 0:
                continue
            x, y = t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e
            found = centre_values(session, x, y, target, year, bands, level)
            # One scatter for all bands from the transposed view: numpy walks it in memory
            # order, several times faster than a band-by-band or a copied transpose.
            values[i].reshape(len(bands), -1)[:, rows * grid.width + cols] = found.T
    zones = tuple(code for code, _ in votes.most_common())
    return AreaRaster(values, grid, request.years, request.bands, zones)


def _read_aligned(
    session: Session, grid: AreaGrid, spans, lonlat: Area, year, bands, out, level: int = 0
):
    """Write into `out` (bands, height, width) the pixels of `spans` that tiles on `grid`'s
    own lattice (same CRS and pixel size, aligned) own (`mosaic.owned_runs`), read block by
    block as `aef_pixels` reads them; return where it wrote (bool, height * width)."""
    tiles = session.catalog.tiles()
    filled = np.zeros(grid.height * grid.width, dtype=bool)
    for k in candidate_tiles(tiles, lonlat, year):
        path = tiles.path[k]
        header = session.engine.headers.headers_for([path], level)[path]
        offset = _grid_offset(header, grid)
        if offset is None:
            continue
        for part in _span_groups(spans, STRIP_PIXELS):
            _read_part(session, grid, path, header, year, part, offset, bands, out, filled, level)
    return filled


def _read_part(session, grid, path, header, year, spans, offset, bands, out, filled, level=0):
    """`_read_aligned` for some spans of one tile."""
    col_shift, row_start, row_step = offset
    g = grid.transform
    rows = row_start + row_step * spans[:, 0]
    col0 = np.clip(spans[:, 1] + col_shift, 0, header.width)
    col1 = np.clip(spans[:, 2] + col_shift, 0, header.width)
    inside = (rows >= 0) & (rows < header.height) & (col1 > col0)
    runs = block_chunks(np.column_stack([rows, col0, col1])[inside], header, size=header.width)
    tiles = session.catalog.tiles()
    _, *owned = owned_runs(tiles, session.engine.headers, path, header, year, *runs.T)
    runs = np.column_stack(owned)
    count = len(runs)
    if count == 0:  # the tile owns none of them (all another zone's, across a seam)
        return
    chunks = Chunks(
        path=np.full(count, path, dtype=object),
        year=np.full(count, year, np.int64),
        row=runs[:, 0],
        col0=runs[:, 1],
        col1=runs[:, 2],
        centroid=np.zeros(count, dtype=bool),
    )
    pixels = chunk_pixels(session, chunks, bands, level, coordinates=False)
    for b in range(len(bands)):
        null = pixels.band_null(b)
        if null is not None:
            pixels.values[b][null] = NODATA
    g = grid.transform
    grid_rows = np.rint((pixels.y - g.f) / g.e - 0.5).astype(np.int64)
    grid_cols = np.rint((pixels.x - g.c) / g.a - 0.5).astype(np.int64)
    _scatter(out, grid_rows, grid_cols, pixels, header)
    filled.reshape(grid.height, grid.width)[grid_rows, grid_cols] = True


def _scatter(out, grid_rows, grid_cols, pixels, header) -> None:
    """out[:, grid_rows, grid_cols] = pixels.values, where each block's pixels that fill a
    rectangle (all of them, for a box) go as one slice: pixels come block by block, rows of
    the tile in ascending order."""
    tile = (pixels.row // header.block_height) * header.blocks_across + (
        pixels.col // header.block_width
    )
    bounds = np.concatenate([[0], np.flatnonzero(tile[1:] != tile[:-1]) + 1, [tile.size]])
    scattered = []
    for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        r, c = grid_rows[start:end], grid_cols[start:end]
        top, bottom, left, right = int(r.min()), int(r.max()), int(c.min()), int(c.max())
        height, width = bottom - top + 1, right - left + 1
        if height * width != end - start or c[0] != left or r[0] not in (top, bottom):
            scattered.append(np.arange(start, end))
            continue
        block = pixels.values[:, start:end].reshape(len(pixels.bands), height, width)
        out[:, top : bottom + 1, left : right + 1] = block if r[0] == top else block[:, ::-1]
    if scattered:
        rest = np.concatenate(scattered)
        out[:, grid_rows[rest], grid_cols[rest]] = pixels.values[:, rest]


def _grid_offset(header, grid: AreaGrid):
    """(column shift, row start, row step) mapping grid pixels onto the tile's (see
    `lattice_offsets`); None when the tile is not on the grid's lattice."""
    g = grid.transform
    found = lattice_offsets(header, grid.epsg, g.a, abs(g.e), g.c, g.f)
    if found is None or g.b or g.d:
        return None
    shift, start, step = found
    return int(shift[0]), int(start[0]), step


def _strips(spans: np.ndarray, limit: int):
    """(rows, cols) of the pixels of consecutive spans, at most about `limit` at a time."""
    for part in _span_groups(spans, limit):
        n = part[:, 2] - part[:, 1]
        offsets = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        yield np.repeat(part[:, 0], n), np.repeat(part[:, 1], n) + offsets


def _span_groups(spans: np.ndarray, limit: int):
    """Consecutive spans, at most about `limit` pixels at a time."""
    ends = np.cumsum(spans[:, 2] - spans[:, 1])
    start = 0
    while start < len(spans):
        before = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, before + limit, side="right")))
        yield spans[start:stop]
        start = stop


# Rows of a year turned into vectors at once (`dequantized`): their int8 moved pixel-major
# and its float32 stay a few MB whatever the area.
VECTOR_ROWS = 64


def dequantized(values: np.ndarray, as_vector: bool) -> np.ndarray:
    """float32 of int8 `values` (years, bands, height, width): de-quantized (the 256-entry
    table, aef.dequantized_table), NaN where -128; `as_vector`: (years, height, width,
    bands), NaN over a pixel's whole vector where any band is -128 (AEF masks its 64 bands
    together; as aef_pixels' embedding is NULL). Year by year, piece by piece: no float64
    or whole-size temporary."""
    table = dequantized_table().astype(np.float32)
    years, bands, height, width = values.shape
    if not as_vector:
        out = np.empty(values.shape, np.float32)
        for i in range(years):
            np.take(table, values[i].view(np.uint8), out=out[i])
        return out
    out = np.empty((years, height, width, bands), np.float32)
    for i in range(years):
        for top in range(0, height, VECTOR_ROWS):
            part = np.ascontiguousarray(np.moveaxis(values[i, :, top : top + VECTOR_ROWS], 0, -1))
            vectors = out[i, top : top + VECTOR_ROWS]
            np.take(table, part.view(np.uint8), out=vectors)
            vectors[(part == NODATA).any(axis=-1)] = np.nan
    return out


def to_dataarray(raster: AreaRaster, xr=None, values=None, as_vector: bool = False):
    """An AreaRaster as xarray, with rioxarray's CF `spatial_ref` grid mapping; `values` in
    place of its int8 (float32 from `dequantized`, (year, y, x, band) when `as_vector`)."""
    xr = xr or _xarray()
    grid, t = raster.grid, raster.grid.transform
    wkt = pyproj.CRS.from_epsg(grid.epsg).to_wkt()
    spatial_ref = xr.Variable(
        (),
        0,
        {
            "crs_wkt": wkt,
            "spatial_ref": wkt,  # GDAL's name for the same
            "GeoTransform": " ".join(str(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e)),
        },
    )
    floats = values is not None
    fill = np.float32(np.nan) if floats else NODATA
    return xr.DataArray(
        values if floats else raster.values,
        dims=("year", "y", "x", "band") if as_vector else ("year", "band", "y", "x"),
        coords={
            "year": list(raster.years),
            "band": list(raster.bands),
            "y": ("y", t.f + (np.arange(grid.height) + 0.5) * t.e, {"axis": "Y", "units": "m"}),
            "x": ("x", t.c + (np.arange(grid.width) + 0.5) * t.a, {"axis": "X", "units": "m"}),
            "spatial_ref": spatial_ref,
        },
        attrs={"_FillValue": fill, "nodata": fill, "grid_mapping": "spatial_ref"},
        name="aef",
    )
