"""Areas as pixels: which pixel centres of a raster lie inside a polygon, row by row.

Pure functions over coordinates: an area (WKB polygon or multipolygon, or a box) becomes
rings; rings become, for each raster row, the spans of columns whose pixel centres lie inside
(even-odd rule, as GDAL rasterizes without all_touched); spans become chunks that the
sampling kernel reads. Nothing here does I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from . import geo
from .errors import AefsqlError
from .tiff import Affine

# Longest straight edge, in degrees, left between vertices of a lon/lat area before it is
# projected: a straight lon/lat edge is a curve in UTM.
DENSIFY_DEGREES = 0.001  # ~100 m: far below one pixel's deviation for AEF's 82 km tiles
# Pixels in one chunk. DuckDB hands a UDF up to 2,048 chunks at once: 512 keeps a call to
# a million pixels (a 64 MiB int8 result, ~120 MiB in Arrow) and a 1024-px block to 2,048
# chunks, so that one call tends to decode each of its blocks once and whole.
CHUNK_PIXELS = 512


@dataclass(frozen=True)
class Area:
    """Polygons as rings of (x, y) vertices in one CRS; holes are rings too (even-odd)."""

    rings: tuple[np.ndarray, ...]  # each (n, 2), closed or not
    epsg: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        points = np.concatenate(self.rings)
        return (*points.min(axis=0), *points.max(axis=0))

    @property
    def empty(self) -> bool:
        return not self.rings


def area_from(value, epsg: int) -> Area:
    """An Area from WKB bytes (Polygon, MultiPolygon; EWKB or ISO, either byte order) or a
    box [west, south, east, north], in EPSG `epsg`. A box with west > east crosses the
    antimeridian and becomes two (lon/lat only)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return _checked(Area(tuple(_wkb_rings(bytes(value))), epsg))
    box = [float(v) for v in value]
    if len(box) != 4 or not np.isfinite(box).all():
        raise AefsqlError(f"a box is [west, south, east, north], not {value!r}")
    west, south, east, north = box
    if south > north:
        raise AefsqlError(f"box {box}: south is north of north")
    if west > east:
        if epsg != geo.WGS84:
            raise AefsqlError(f"box {box}: west is east of east")
        return _checked(
            Area((box_ring(west, south, 180.0, north), box_ring(-180.0, south, east, north)), epsg)
        )
    return _checked(Area((box_ring(west, south, east, north),), epsg))


def _checked(area: Area) -> Area:
    """Coordinates that cannot be what the CRS says are refused, not read as nothing: UTM
    numbers passed as lon/lat is the usual mistake."""
    for ring in area.rings:
        if not np.isfinite(ring).all():
            raise AefsqlError("area: a vertex is NaN or infinite")
        if area.epsg == geo.WGS84 and not geo.valid_lonlat(ring[:, 0], ring[:, 1]).all():
            raise AefsqlError(
                "area: coordinates outside lon/lat range (-180..180, -90..90); if they are "
                "projected, say so with crs := (e.g. crs := 32633)"
            )
    return area


def box_ring(west, south, east, north) -> np.ndarray:
    return np.array([[west, south], [east, south], [east, north], [west, north], [west, south]])


def clipped_to_box(area: Area, west, south, east, north) -> Area:
    """The area cut to the box [west, south, east, north] of its own CRS (Sutherland-Hodgman,
    ring by ring: even-odd fill is kept, rings wholly outside are dropped). Where a concave
    ring leaves the box and comes back, the result runs along the box's edge both ways: a
    zero-width seam on the box's boundary, which encloses nothing."""
    rings = []
    for ring in area.rings:
        if len(ring) and not np.array_equal(ring[0], ring[-1]):
            ring = np.vstack([ring, ring[:1]])
        sides = ((0, west, True), (0, east, False), (1, south, True), (1, north, False))
        for axis, value, above in sides:
            if len(ring) < 4:
                break
            ring = _clipped_half(ring, axis, value, above)
        if len(ring) >= 4:
            rings.append(ring)
    return Area(tuple(rings), area.epsg)


def _clipped_half(ring: np.ndarray, axis: int, value: float, above: bool) -> np.ndarray:
    """A closed ring cut to the half plane coordinate[axis] >= value (<= when not `above`):
    one Sutherland-Hodgman pass, every edge at once."""
    start, end = ring[:-1], ring[1:]
    start_in = start[:, axis] >= value if above else start[:, axis] <= value
    end_in = end[:, axis] >= value if above else end[:, axis] <= value
    crossing = start_in != end_in
    with np.errstate(invalid="ignore", divide="ignore"):  # edges along the line: unused
        t = (value - start[:, axis]) / (end[:, axis] - start[:, axis])
        meet = start + t[:, None] * (end - start)
    meet[:, axis] = value  # exactly on the line, whatever the rounding
    # Per edge: where it crosses the line, then its end if that is inside.
    points = np.stack([meet, end], axis=1)[np.column_stack([crossing, end_in])]
    if len(points) == 0:
        return points
    return np.vstack([points, points[:1]])


def _wkb_rings(blob: bytes) -> list[np.ndarray]:
    rings: list[np.ndarray] = []
    _read_geometry(blob, 0, rings)
    return rings


def _read_geometry(blob: bytes, offset: int, rings: list) -> int:
    if len(blob) < offset + 5 or blob[offset] not in (0, 1):
        raise AefsqlError("area: not WKB")
    order = "<" if blob[offset] == 1 else ">"
    (code,) = struct.unpack_from(order + "I", blob, offset + 1)
    offset += 5
    if code & 0x20000000:  # EWKB SRID
        offset += 4
    dims = (
        2
        + (1 if code & 0x80000000 or (code % 10000) // 1000 in (1, 3) else 0)
        + (1 if code & 0x40000000 or (code % 10000) // 1000 in (2, 3) else 0)
    )
    kind = (code & 0x0FFFFFFF) % 1000
    if kind == 3:  # Polygon
        (count,) = struct.unpack_from(order + "I", blob, offset)
        offset += 4
        for _ in range(count):
            (n,) = struct.unpack_from(order + "I", blob, offset)
            offset += 4
            size = n * dims * 8
            if len(blob) < offset + size:
                raise AefsqlError("area: WKB shorter than its rings")
            ring = np.frombuffer(blob, dtype=order + "f8", count=n * dims, offset=offset)
            rings.append(ring.reshape(n, dims)[:, :2].astype(np.float64))
            offset += size
        return offset
    if kind in (6, 7):  # MultiPolygon, GeometryCollection of polygons
        (count,) = struct.unpack_from(order + "I", blob, offset)
        offset += 4
        for _ in range(count):
            offset = _read_geometry(blob, offset, rings)
        return offset
    names = {1: "point", 2: "linestring", 4: "multipoint", 5: "multilinestring"}
    raise AefsqlError(
        f"area is a {names.get(kind, f'WKB type {code}')}: an area is a polygon, a "
        "multipolygon or a box [west, south, east, north]"
    )


def projected(area: Area, epsg: int) -> Area:
    """The area in another CRS; lon/lat edges are densified first, so that they bend as
    they do in the target CRS. Vertices PROJ cannot map are an error (not silently lost)."""
    return projected_all([area], epsg)[0]


def projected_all(areas: list[Area], epsg: int) -> list[Area]:
    """`projected` for many areas, with one PROJ call per source CRS."""
    out: list[Area | None] = [a if a.epsg == epsg or a.empty else None for a in areas]
    for source in {a.epsg for a, o in zip(areas, out, strict=True) if o is None}:
        members = [k for k, a in enumerate(areas) if out[k] is None and a.epsg == source]
        rings = [
            densified(ring, DENSIFY_DEGREES) if source == geo.WGS84 else ring
            for k in members
            for ring in areas[k].rings
        ]
        points = np.concatenate(rings)
        x, y = geo.transform_points(source, epsg, points[:, 0], points[:, 1])
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise AefsqlError(
                f"area: some vertices cannot be projected from EPSG:{source} to "
                f"EPSG:{epsg} (is the area in the CRS crs := names?)"
            )
        moved = np.split(np.column_stack([x, y]), np.cumsum([len(r) for r in rings])[:-1])
        at = 0
        for k in members:
            count = len(areas[k].rings)
            out[k] = Area(tuple(moved[at : at + count]), epsg)
            at += count
    return out


def densified(ring: np.ndarray, step: float) -> np.ndarray:
    """The ring with vertices added so that no edge is longer than `step` in x or y."""
    pieces = []
    for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:], strict=True):
        n = max(1, int(np.ceil(max(abs(x1 - x0), abs(y1 - y0)) / step)))
        t = np.arange(n) / n
        pieces.append(np.column_stack([x0 + t * (x1 - x0), y0 + t * (y1 - y0)]))
    pieces.append(ring[-1:])
    return np.concatenate(pieces)


def row_spans(area: Area, transform: Affine, width: int, height: int):
    """For each raster row whose centre line crosses the area: (row, col0, col1), the
    columns [col0, col1) whose pixel centres lie inside (even-odd; several spans a row where
    the area has holes or parts). Rows and spans in ascending order.

    Worked in pixel space, as GDAL rasterizes (all_touched off): a row's centre line
    r + 0.5 meets an edge when it lies in [lower end, upper end) of the edge's rows, and a
    span from a to b takes the columns c with floor(a + 0.5) <= c < floor(b + 0.5). So
    north-up and south-up rasters, and centres exactly on an edge, agree with GDAL."""
    if area.empty:
        return np.zeros((0, 3), dtype=np.int64)
    rings = [
        np.column_stack(
            [(r[:, 0] - transform.c) / transform.a, (r[:, 1] - transform.f) / transform.e]
        )
        for r in _closed(area.rings)
    ]
    edges = np.concatenate([np.column_stack([r[:-1], r[1:]]) for r in rings])
    c0, r0, c1, r1 = edges.T
    low, high = np.minimum(r0, r1), np.maximum(r0, r1)
    first = max(0, int(np.floor(low.min() - 0.5)))
    last = min(height, int(np.ceil(high.max() + 0.5)))
    if first >= last:
        return np.zeros((0, 3), dtype=np.int64)
    rows = np.arange(first, last)
    centre = rows + 0.5
    crosses = (centre[:, None] >= low[None, :]) & (centre[:, None] < high[None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        at = c0[None, :] + (centre[:, None] - r0[None, :]) * ((c1 - c0) / (r1 - r0))[None, :]
    at = np.where(crosses, at, np.inf)
    at.sort(axis=1)
    count = crosses.sum(axis=1)
    paired = count - count % 2  # crossings of each row, sorted, taken two by two
    pairs = at[np.arange(at.shape[1])[None, :] < paired[:, None]].reshape(-1, 2)
    starts = np.clip(np.floor(pairs[:, 0] + 0.5), 0, width).astype(np.int64)
    ends = np.clip(np.floor(pairs[:, 1] + 0.5), 0, width).astype(np.int64)
    spans = np.column_stack([np.repeat(rows, paired // 2), starts, ends])
    return spans[ends > starts]


def _closed(rings):
    for ring in rings:
        yield ring if np.array_equal(ring[0], ring[-1]) else np.vstack([ring, ring[:1]])


def chunked(spans: np.ndarray, size: int = CHUNK_PIXELS, block_width: int | None = None):
    """Spans cut to at most `size` pixels each and, given `block_width`, at the edges of
    block columns too (so that each chunk lies in one block): (row, col0, col1) rows."""
    out = []
    for row, col0, col1 in spans.tolist():
        start = col0
        while start < col1:
            stop = min(col1, start + size)
            if block_width:
                stop = min(stop, (start // block_width + 1) * block_width)
            out.append((row, start, stop))
            start = stop
    return np.array(out, dtype=np.int64).reshape(-1, 3)


def surface(area: Area) -> float:
    """The area's size in its CRS's units squared (shoelace; holes, oriented against their
    exterior as OGC asks, subtract)."""
    total = 0.0
    for ring in _closed(area.rings):
        x, y = ring[:, 0], ring[:, 1]
        total += float((x[:-1] * y[1:] - x[1:] * y[:-1]).sum() / 2)
    return abs(total)


def centroid(area: Area) -> tuple[float, float]:
    """The area-weighted centroid of the rings (shoelace; holes subtract as even-odd)."""
    total, cx, cy = 0.0, 0.0, 0.0
    for ring in _closed(area.rings):
        x, y = ring[:-1, 0], ring[:-1, 1]
        xn, yn = ring[1:, 0], ring[1:, 1]
        cross = x * yn - xn * y
        a = cross.sum() / 2
        total += a
        cx += ((x + xn) * cross).sum() / 6
        cy += ((y + yn) * cross).sum() / 6
    if total == 0:
        points = np.concatenate(area.rings)
        return float(points[:, 0].mean()), float(points[:, 1].mean())
    return cx / total, cy / total
