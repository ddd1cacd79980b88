"""Budgets: how many bytes of int8 each kind of output may hold, and how they are counted.

One rule for every area and window function, checked before any header or block is read:

    bytes = pixels the output holds x bands x years,   refused above `max_bytes`

with one default per kind of output (below), one message shape (`refuse_over`) and one way
to raise it (`max_bytes :=` in SQL, `max_bytes=` in Python). What "pixels" are depends on the
output, and is always what the output would really hold:

- rows of pixels (`aef_pixels`) and zonal sums (`aef_zonal`): the pixels the area *covers*,
  its intersection with the lon/lat boxes of the catalog's tiles, counted on the ellipsoid
  tile by tile (`covered_pixels`); a whole-world box over a catalog of five tiles is five
  tiles' pixels, not the world's;
- a raster (`read_area`, `picture`): its whole window, which is allocated covered or not
  (at least the area's own size on the ellipsoid, `area_pixels`);
- windows (`aef_chips`, ChipDataset): count x size² (`check_windows`).

Areas are measured from their raw lon/lat vertices on the ellipsoid, never through one UTM
zone (a world box projected into one zone encloses ~0 m²). Pure: nothing here does I/O.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..aef import PIXEL_METRES
from ..errors import AefsqlError
from ..geometry.areas import Area, clipped_to_box

GiB = 1024**3
# Rows streamed out (aef_pixels) and pixels summed in batches (aef_zonal): memory does not
# grow with the area, so the budget guards time and a typo (a continent for a county):
# about 2.7 x 10^8 pixels of 64 bands.
STREAMED_BYTES = 16 * GiB
# One numpy array in memory (read_area, picture): the raster itself.
RASTER_BYTES = 4 * GiB
# Chips, handed to DuckDB as nested lists: DuckDB's peak is many times the
# int8 (benchmarks/README.md, "Chips: peak memory"), so this is the size whose COPY … TO
# parquet peaks well under a 24 GiB machine's memory.
WINDOW_BYTES = 512 * 1024**2
MAX_WINDOW_SIZE = 2048  # pixels on a side of a chip: 256 MiB at 64 bands
# A grid's cells (aef_grid): each cell-year's 64 sums are float64 and held until the end,
# then handed to DuckDB as 64 float32 (~1.3 KiB a cell-year in all, measured): the default,
# a million cell-years, peaks about 1.3 GiB (benchmarks/README.md, "aef_grid's memory").
GRID_BYTES = 512 * 1024**2

# WGS84: the authalic sphere has the ellipsoid's area, so an area on it is exact.
_A = 6378137.0
_F = 1 / 298.257223563
_E2 = _F * (2 - _F)
_E = math.sqrt(_E2)
# Geodetic latitude spans after which an edge is cut before its authalic latitude is taken
# as linear along it: the error is far below a pixel's area per degree of edge.
_PIECE_DEGREES = 0.25


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB': the unit that keeps the number readable, never '0.0 GiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} bytes" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_max_bytes(max_bytes) -> None:
    """max_bytes is a whole number of bytes, or None (the function's default budget): a
    string such as '1GB' is refused here, not met later as a failed comparison."""
    if max_bytes is not None and (
        isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral)
    ):
        raise AefsqlError(f"max_bytes is a number of bytes, not {max_bytes!r}")


def refuse_over(
    subject: str, pixels, bands: int, years, max_bytes: int, advice: str, value_type: str = "int8"
) -> None:
    """Raise, in the one message shape, when pixels x bands (x years) values of `value_type`
    ('int8', 'float32' for de-quantized outputs, 'float64' for sums) exceed max_bytes:
    '<subject> x B bands x Y year(s) are N GiB of int8, above max_bytes (M GiB): ask for
    <advice> (or raise max_bytes)'. `years` None: the pixels already count every year."""
    check_max_bytes(max_bytes)
    size = VALUE_BYTES[value_type]
    total = float(pixels) * bands * (1 if years is None else max(int(years), 1)) * size
    if total <= max_bytes:
        return
    per_year = "" if years is None else f" x {years} year(s)"
    raise AefsqlError(
        f"{subject} x {bands} bands{per_year} are {human_bytes(int(total))} of {value_type}, "
        f"above max_bytes ({human_bytes(int(max_bytes))}): ask for {advice} (or raise max_bytes)"
    )


VALUE_BYTES = {"int8": 1, "float32": 4, "float64": 8}


def check_windows(count: int, size, bands: int, max_bytes=None) -> None:
    """Refuse, before anything is read or allocated, `count` square windows (chips)
    of `size` pixels and `bands` bands that do not fit `max_bytes` of int8 (default
    WINDOW_BYTES), or a size out of 1..MAX_WINDOW_SIZE."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise AefsqlError(f"size is a whole number of pixels, 1 to {MAX_WINDOW_SIZE}, not {size!r}")
    pixels = int(size) ** 2
    if not 1 <= size <= MAX_WINDOW_SIZE:
        raise AefsqlError(
            f"a window of {size} x {size} pixels is refused: size must be 1 to {MAX_WINDOW_SIZE}"
            + (
                f" ({pixels:,} pixels x {bands} bands would be {human_bytes(pixels * bands)} a row)"
                if size > MAX_WINDOW_SIZE
                else ""
            )
        )
    check_max_bytes(max_bytes)
    limit = WINDOW_BYTES if max_bytes is None else int(max_bytes)
    subject = f"{count:,} windows of {size} x {size} pixels"
    advice = "fewer points or bands, or a smaller size"
    refuse_over(subject, count * pixels, bands, None, limit, advice)


def _authalic(lat_degrees: np.ndarray) -> np.ndarray:
    """Authalic latitude (radians) of geodetic latitudes (degrees) on WGS84."""
    s = np.sin(np.radians(np.clip(lat_degrees, -90.0, 90.0)))
    q = (1 - _E2) * (s / (1 - _E2 * s * s) - np.log((1 - _E * s) / (1 + _E * s)) / (2 * _E))
    return np.arcsin(np.clip(q / _Q_POLE, -1.0, 1.0))


_Q_POLE = 1 - (1 - _E2) / (2 * _E) * math.log((1 - _E) / (1 + _E))
_R2 = _A * _A * _Q_POLE / 2  # the authalic radius, squared


def ring_area(ring: np.ndarray) -> float:
    """The area in m² on the WGS84 ellipsoid enclosed by a lon/lat ring whose edges are
    straight in lon/lat (as aefsql reads them: see areas.DENSIFY_DEGREES), either
    orientation. Green's theorem on the authalic sphere: the area is |∮ sin β dλ| · R²,
    exact along an edge where β is linear in λ (edges are cut every _PIECE_DEGREES of
    latitude for that). A ring round a pole (a whole-world box) is measured as it is drawn:
    the world box is the whole ellipsoid."""
    if len(ring) < 3:
        return 0.0
    if not np.array_equal(ring[0], ring[-1]):
        ring = np.vstack([ring, ring[:1]])
    lon, lat = ring[:, 0], ring[:, 1]
    pieces = np.maximum(1, np.ceil(np.abs(np.diff(lat)) / _PIECE_DEGREES)).astype(np.int64)
    if pieces.max() > 1:  # the few long north-south edges, cut; the rest stay as they are
        t = np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        t = t / np.repeat(pieces, pieces)
        start = np.repeat(np.arange(lon.size - 1), pieces)
        lon = np.append(lon[start] + t * (lon[start + 1] - lon[start]), lon[-1])
        lat = np.append(lat[start] + t * (lat[start + 1] - lat[start]), lat[-1])
    beta = _authalic(lat)
    d_lambda = np.radians(np.diff(lon))
    d_beta = np.diff(beta)
    mid = (beta[:-1] + beta[1:]) / 2
    # ∫ sin β dλ along a piece, β linear in λ: Δλ sin(mean β) sinc(Δβ / 2), stable at Δβ = 0.
    integral = (d_lambda * np.sin(mid) * np.sinc(d_beta / (2 * np.pi))).sum()
    return abs(float(integral)) * _R2


def lonlat_area(area: Area) -> float:
    """m² on the ellipsoid of a lon/lat area: the sum of its rings' areas, holes added
    rather than subtracted — a bound never below the even-odd area, whatever the rings'
    orientation (a budget must not be fooled by a hole drawn the wrong way round)."""
    return sum(ring_area(ring) for ring in area.rings)


def area_pixels(lonlat: Area, level: int = 0) -> float:
    """AEF pixels (10 m, a quarter as many each overview level) the area's size is worth,
    without reading anything: a bound on what it can cover."""
    return lonlat_area(lonlat) / PIXEL_METRES**2 / 4**level


def covered_pixels(tiles, lonlat: Area, years, level: int = 0, stop_above=math.inf) -> float:
    """The pixels of `years` that the lon/lat area covers: for each tile of those years
    whose lon/lat box meets the area, the area clipped to that box, measured on the
    ellipsoid (`area_pixels`); summed over tiles and years. Where tiles of neighbouring
    zones overlap, both count (an over-estimate by the overlap strip at most). A polygon's
    sum stops once above `stop_above` (then it is a lower bound: enough to refuse)."""
    if lonlat.empty:
        return 0.0
    bounds = [(*ring.min(axis=0), *ring.max(axis=0)) for ring in lonlat.rings]
    wanted = np.isin(tiles.year, np.asarray(list(years), np.int64))
    found = np.flatnonzero(wanted & _meets_any(tiles, bounds))
    boxes = [_box_of(ring) for ring in lonlat.rings]
    if all(box is not None for box in boxes):  # boxes: every tile at once, in closed form
        return sum(_box_pixels(tiles, found, box, level) for box in boxes)
    total = 0.0
    for t in found.tolist():
        for box in _boxes(tiles.west[t], tiles.south[t], tiles.east[t], tiles.north[t]):
            total += area_pixels(clipped_to_box(lonlat, *box), level)
        if total > stop_above:
            break
    return total


def _box_of(ring: np.ndarray):
    """(west, south, east, north) when the ring is an axis-aligned rectangle, else None."""
    points = ring[:-1] if np.array_equal(ring[0], ring[-1]) else ring
    if len(points) != 4:
        return None
    west, south = points.min(axis=0)
    east, north = points.max(axis=0)
    on_x = np.isin(points[:, 0], (west, east)).all()
    on_y = np.isin(points[:, 1], (south, north)).all()
    corners = {(float(x), float(y)) for x, y in points}
    return (west, south, east, north) if on_x and on_y and len(corners) == 4 else None


def _box_pixels(tiles, found: np.ndarray, box, level: int) -> float:
    """covered_pixels of one lon/lat box over the tiles `found`: the boxes' intersections,
    each R² Δλ (sin β_north - sin β_south) on the authalic sphere."""
    west, south, east, north = box
    total = 0.0
    wraps = tiles.west[found] > tiles.east[found]
    for tile_west, tile_east in (
        (tiles.west[found], np.where(wraps, 180.0, tiles.east[found])),
        (np.where(wraps, -180.0, np.inf), np.where(wraps, tiles.east[found], -np.inf)),
    ):
        d_lon = np.clip(np.minimum(east, tile_east) - np.maximum(west, tile_west), 0, None)
        low = np.maximum(south, tiles.south[found])
        high = np.maximum(low, np.minimum(north, tiles.north[found]))
        band = np.sin(_authalic(high)) - np.sin(_authalic(low))
        total += float((np.radians(d_lon) * band).sum()) * _R2
    return total / PIXEL_METRES**2 / 4**level


def _meets_any(tiles, bounds) -> np.ndarray:
    """bool per tile: its lon/lat box (west > east: across the antimeridian) meets one of
    the boxes `bounds`."""
    found = np.zeros(tiles.year.size, dtype=bool)
    wraps = tiles.west > tiles.east
    for west, south, east, north in bounds:
        meets_lon = np.where(
            wraps,
            (east >= tiles.west) | (west <= tiles.east),
            (east >= tiles.west) & (west <= tiles.east),
        )
        found |= meets_lon & (north >= tiles.south) & (south <= tiles.north)
    return found


def _boxes(west, south, east, north):
    """A tile's lon/lat box as one or two plain boxes (split at the antimeridian)."""
    if west <= east:
        return [(west, south, east, north)]
    return [(west, south, 180.0, north), (-180.0, south, east, north)]
