"""Areas as pixels: which pixel centres of a raster lie inside a polygon, row by row.

Pure functions over coordinates: an area (WKB polygon or multipolygon, or a box) becomes
rings; rings become, for each raster row, the spans of columns whose pixel centres lie inside
(even-odd rule, as GDAL rasterizes without all_touched); spans become chunks that the
sampling kernel reads. Nothing here does I/O.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import AefsqlError
from ..format.tiff import Affine
from ..options import Mention, OptionError
from . import geo

# A straight lon/lat edge is a curve in UTM. Before projecting, edges are cut in halves
# until each piece's projected midpoint lies within DENSIFY_TOLERANCE (target CRS units:
# metres for the UTM zones and metre grids aefsql projects into) of the midpoint of its
# projected chord: 1 cm, 1/1000 of a 10 m pixel, so only a pixel centre closer than that to
# an edge can fall on the other side of it. Pieces start at most DENSIFY_START_DEGREES
# long, short enough that the UTM image of one bends one way (no S-curve hides from the
# midpoint test), so the polyline stays within about DENSIFY_TOLERANCE of the curve
# everywhere. (Vertices grow as 1/sqrt(tolerance): a 1° box at 45°N takes 321.)
DENSIFY_TOLERANCE = 0.01
DENSIFY_START_DEGREES = 1.0
DENSIFY_ROUNDS = 40  # halvings at most: 1 degree / 2^40 is 0.1 micrometre
# Vertices one area may have once densified: at most ~250 MB while densifying (coordinates,
# projections and the copies a round makes). Counted before each round makes them, so an
# area with thousands of edges a continent long is refused with this limit named, never
# expanded until memory runs out. An outline's edges of ~100 m gain no vertex at all.
MAX_AREA_VERTICES = 1 << 21
# Geometry collections nested deeper than this are refused (Python's recursion would give out
# near a thousand; no real area nests more than a few).
MAX_WKB_NESTING = 32
# Pixels in one chunk. DuckDB hands a UDF up to 2,048 chunks at once: 512 keeps a call to
# a million pixels (a 64 MiB int8 result, ~120 MiB in Arrow) and a 1024-px block to 2,048
# chunks, so that one call tends to decode each of its blocks once and whole.
CHUNK_PIXELS = 512


@dataclass(frozen=True)
class Area:
    """Polygons as rings of (x, y) vertices in one CRS; holes are rings too (even-odd within
    a polygon). A multipolygon's polygons are joined: a place inside two overlapping parts
    is inside, as GDAL burns each part of a multipolygon."""

    rings: tuple[np.ndarray, ...]  # each (n, 2), closed or not
    epsg: int
    # The polygon each ring belongs to; None: all rings are one polygon's.
    part: tuple[int, ...] | None = None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        points = np.concatenate(self.rings)
        return (*points.min(axis=0), *points.max(axis=0))

    @property
    def empty(self) -> bool:
        return not self.rings


def area_from(value, epsg: int) -> Area:
    """An Area from WKB bytes (Polygon, MultiPolygon; EWKB or ISO, either byte order), WKT
    text (`wkt_rings`) or a box [west, south, east, north], in EPSG `epsg`. A box with west
    > east crosses the antimeridian and becomes two (lon/lat only); so does a lon/lat ring
    with an edge more than 180° of longitude long (`split_at_antimeridian`). Invalid rings,
    truncated WKB and NULL are refused with what is wrong."""
    if value is None:
        raise AefsqlError(
            "area is NULL: an area is a polygon, a multipolygon or a box [west, south, east, north]"
        )
    if isinstance(value, bytes | bytearray | memoryview | str):
        text = isinstance(value, str)
        rings, owners = wkt_rings(value) if text else _wkb_rings(bytes(value))
        part = _overlapping_parts(rings, owners)
        area = _checked(Area(tuple(rings), epsg, part))
        if epsg != geo.WGS84:
            return area
        pieces = [
            (piece, owner)
            for ring, owner in zip(rings, owners, strict=True)
            for piece in split_at_antimeridian(ring)
        ]
        return Area(tuple(p for p, _ in pieces), epsg, part and tuple(owner for _, owner in pieces))
    try:
        box = [float(v) for v in value]
    except (TypeError, ValueError):
        box = None
    if box is None or len(box) != 4 or not np.isfinite(box).all():
        raise AefsqlError(f"a box is [west, south, east, north] in numbers, not {value!r}")
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
            raise OptionError(
                "area: coordinates outside lon/lat range (-180..180, -90..90); if they are "
                "projected, say so with {} (e.g. {})",
                Mention("crs"),
                Mention("crs", 32633),
            )
    return area


def box_ring(west, south, east, north) -> np.ndarray:
    return np.array([[west, south], [east, south], [east, north], [west, north], [west, south]])


def clipped_to_box(area: Area, west, south, east, north) -> Area:
    """The area cut to the box [west, south, east, north] of its own CRS (Sutherland-Hodgman,
    ring by ring: even-odd fill is kept, rings wholly outside are dropped). Where a concave
    ring leaves the box and comes back, the result runs along the box's edge both ways: a
    zero-width seam on the box's boundary, which encloses nothing."""
    rings, owners = [], []
    for k, ring in enumerate(area.rings):
        if len(ring) and not np.array_equal(ring[0], ring[-1]):
            ring = np.vstack([ring, ring[:1]])
        sides = ((0, west, True), (0, east, False), (1, south, True), (1, north, False))
        for axis, value, above in sides:
            if len(ring) < 4:
                break
            ring = _clipped_half(ring, axis, value, above)
        if len(ring) >= 4:
            rings.append(ring)
            owners.append(k)
    part = area.part and tuple(area.part[k] for k in owners)
    return Area(tuple(rings), area.epsg, part)


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


# Polygons whose boxes are compared pairwise (a million pairs); more are kept apart anyway.
_PAIRWISE_PARTS = 1000


def _overlapping_parts(rings: list[np.ndarray], owners: list[int]) -> tuple[int, ...] | None:
    """Area.part for these rings, or None (even-odd over all rings, the faster rasterizing)
    where that gives the same pixels: one polygon, or polygons whose boxes do not overlap."""
    count = len(set(owners))
    if count < 2:
        return None
    if count <= _PAIRWISE_PARTS:
        boxes = np.full((count, 4), np.nan)
        for ring, k in zip(rings, owners, strict=True):
            if np.isnan(boxes[k, 0]):  # a polygon's first ring, its exterior, bounds it
                boxes[k] = (*ring.min(axis=0), *ring.max(axis=0))
        west, south, east, north = (boxes[:, i] for i in range(4))
        meet = (west[:, None] <= east) & (west <= east[:, None])
        meet &= (south[:, None] <= north) & (south <= north[:, None])
        np.fill_diagonal(meet, False)
        if not meet.any():
            return None
    return tuple(owners)


_WKT_HEAD = re.compile(
    r"\s*(?:SRID=\d+;)?\s*(MULTIPOLYGON|POLYGON)\s*(ZM|Z|M)?\s*(.*)", re.IGNORECASE | re.DOTALL
)
_WKT_TOKEN = re.compile(r"\s*(\(|\)|,|[^\s(),]+)")


def wkt_rings(text: str) -> tuple[list[np.ndarray], list[int]]:
    """The rings of a WKT (or EWKT) POLYGON or MULTIPOLYGON, and the polygon each belongs
    to, as `_wkb_rings` gives them (x, y of each point; Z and M dropped)."""
    head = _WKT_HEAD.fullmatch(text)
    if head is None:
        raise AefsqlError(
            f"area: WKT {text[:40]!r} is not a POLYGON or MULTIPOLYGON: an area is a polygon, "
            "a multipolygon or a box [west, south, east, north]"
        )
    kind, body = head.group(1).upper(), head.group(3).strip()
    if body.upper() == "EMPTY":
        return [], []
    tokens = _WKT_TOKEN.findall(body)
    nested, end = _wkt_list(tokens, 0, text, 2 if kind == "MULTIPOLYGON" else 1)
    if end != len(tokens):
        raise AefsqlError(f"area: WKT has more after its last ')': {' '.join(tokens[end:])[:40]!r}")
    polygons = nested if kind == "MULTIPOLYGON" else [nested]
    rings, owners = [], []
    for k, polygon in enumerate(polygons):
        for j, ring in enumerate(polygon, start=1):
            where = f"polygon {k + 1}, ring {j}"
            if not isinstance(ring, list) or not all(isinstance(p, list) for p in ring):
                raise AefsqlError(f"area: WKT {where} is not a list of points")
            if any(len(p) < 2 for p in ring):
                raise AefsqlError(f"area: WKT {where} has a point with fewer than 2 numbers")
            points = np.array([p[:2] for p in ring], dtype=np.float64).reshape(-1, 2)
            rings.append(_valid_ring(points, where))
            owners.append(k)
    return rings, owners


def _wkt_list(tokens: list[str], at: int, text: str, depth: int):
    """The parenthesised list starting at tokens[at], as nested Python lists (a point is a
    list of floats), and the index after it; `depth`: the lists it may hold inside, one in
    another (a polygon's rings: 1 more; a multipolygon's: 2)."""
    if at >= len(tokens) or tokens[at] != "(":
        raise AefsqlError(f"area: WKT {text[:40]!r}...: expected '(' at token {at + 1}")
    items, current, at = [], [], at + 1
    while at < len(tokens):
        token = tokens[at]
        if token == "(":
            if current:
                raise AefsqlError(f"area: WKT: a number before '(' at token {at + 1}")
            if depth == 0:
                raise AefsqlError(f"area: WKT: more '(' than a polygon has, at token {at + 1}")
            inner, at = _wkt_list(tokens, at, text, depth - 1)
            items.append(inner)
            continue
        if token in (",", ")"):
            if current:
                items.append(current)
                current = []
            at += 1
            if token == ")":
                return items, at
            continue
        try:
            current.append(float(token))
        except ValueError:
            raise AefsqlError(f"area: WKT: {token[:20]!r} is not a number") from None
        at += 1
    raise AefsqlError(f"area: WKT {text[:40]!r}...: a '(' is never closed")


def _wkb_rings(blob: bytes) -> tuple[list[np.ndarray], list[int]]:
    """The rings of a WKB polygon or multipolygon, and the polygon each belongs to."""
    rings: list[tuple[np.ndarray, int]] = []
    _read_geometry(blob, 0, rings, [0], 0)
    return [r for r, _ in rings], [k for _, k in rings]


def _read_geometry(blob: bytes, offset: int, rings: list, polygons: list, depth: int) -> int:
    """Appends the rings of the geometry at `offset` to `rings`, each with the number of its
    polygon; returns where it ends. `polygons` counts the polygons read so far."""
    if depth > MAX_WKB_NESTING:
        raise AefsqlError(f"area: geometry collections nested more than {MAX_WKB_NESTING} deep")
    if len(blob) < offset + 5 or blob[offset] not in (0, 1):
        if offset == 0 or len(blob) >= offset + 5:
            raise AefsqlError("area: not WKB")
        raise _truncated(blob, "a geometry's header")
    order = "<" if blob[offset] == 1 else ">"
    (code,) = struct.unpack_from(order + "I", blob, offset + 1)
    offset += 5
    if code & 0x20000000:  # EWKB SRID
        offset += 4
    # Z and M: EWKB's flag bits, or ISO's thousands (1003: Z) of the code without them (an
    # EWKB code's thousands are its flags' digits, not ISO's).
    iso = ((code & 0x0FFFFFFF) % 10000) // 1000
    dims = (
        2
        + (1 if code & 0x80000000 or iso in (1, 3) else 0)
        + (1 if code & 0x40000000 or iso in (2, 3) else 0)
    )
    kind = (code & 0x0FFFFFFF) % 1000
    if kind == 3:  # Polygon
        polygons[0] += 1
        count, offset = _count(blob, offset, order, f"polygon {polygons[0]}'s ring count")
        for k in range(1, count + 1):
            where = f"polygon {polygons[0]}, ring {k}"
            n, offset = _count(blob, offset, order, f"{where}'s point count")
            size = n * dims * 8
            if len(blob) < offset + size:
                raise _truncated(blob, f"{where}'s {n:,} points")
            ring = np.frombuffer(blob, dtype=order + "f8", count=n * dims, offset=offset)
            ring = _valid_ring(ring.reshape(n, dims)[:, :2].astype(np.float64), where)
            rings.append((ring, polygons[0] - 1))
            offset += size
        return offset
    if kind in (6, 7):  # MultiPolygon, GeometryCollection of polygons
        count, offset = _count(blob, offset, order, "a collection's member count")
        for _ in range(count):
            offset = _read_geometry(blob, offset, rings, polygons, depth + 1)
        return offset
    names = {1: "point", 2: "linestring", 4: "multipoint", 5: "multilinestring"}
    raise AefsqlError(
        f"area is a {names.get(kind, f'WKB type {code}')}: an area is a polygon, a "
        "multipolygon or a box [west, south, east, north]"
    )


def _count(blob: bytes, offset: int, order: str, what: str) -> tuple[int, int]:
    if len(blob) < offset + 4:
        raise _truncated(blob, what)
    return struct.unpack_from(order + "I", blob, offset)[0], offset + 4


def _truncated(blob: bytes, what: str) -> AefsqlError:
    return AefsqlError(f"area: WKB truncated: its {len(blob):,} bytes end before {what}")


def _valid_ring(ring: np.ndarray, where: str) -> np.ndarray:
    """A ring as any GIS requires it (OGC Simple Features): closed, 4 points at least."""
    if len(ring) < 4:
        raise AefsqlError(
            f"area: {where} has {len(ring)} point{'' if len(ring) == 1 else 's'}: a ring "
            "needs at least 4, the last repeating the first"
        )
    if not np.array_equal(ring[0], ring[-1], equal_nan=True):
        raise AefsqlError(
            f"area: {where} is not closed: it ends at ({ring[-1, 0]:g}, {ring[-1, 1]:g}), "
            f"not at its first point ({ring[0, 0]:g}, {ring[0, 1]:g})"
        )
    return ring


def split_at_antimeridian(ring: np.ndarray) -> list[np.ndarray]:
    """A closed lon/lat ring as the parts west and east of 180° (RFC 7946, 3.1.9), when an
    edge spans more than 180° of longitude: such an edge is read the short way, across the
    antimeridian (as a box with west > east is), not around the world. Edges from -180 to
    180 run along the antimeridian and cross nothing (a world box stays whole). A ring
    that then winds around a pole cannot be split into two and is refused.

    Cut with a vertical line in (unwrapped) lon/lat, a concave ring may come back with
    zero-width edges along 180° between its pieces: they enclose nothing (even-odd)."""
    lon = ring[:, 0]
    step = np.diff(lon)
    along = (np.abs(lon[:-1]) == 180.0) & (np.abs(lon[1:]) == 180.0)
    jumps = (np.abs(step) > 180.0) & ~along
    if not jumps.any():
        return [ring]
    if (along & (np.abs(step) > 180.0)).any():
        raise AefsqlError(
            "area: a ring crosses the antimeridian and also runs along it from -180 to 180: "
            "it cannot be split safely; give its parts west and east of 180° as a "
            "MULTIPOLYGON"
        )
    unwrapped = ring.copy()
    unwrapped[1:, 0] -= np.cumsum(np.where(jumps, np.sign(step) * 360.0, 0.0))
    west, east = unwrapped[:, 0].min(), unwrapped[:, 0].max()
    if unwrapped[-1, 0] != unwrapped[0, 0] or east - west >= 360.0:
        raise AefsqlError(
            "area: a ring crosses the antimeridian and goes around a pole (or the world): "
            "it cannot be split safely at 180°; give its parts west and east of 180° as a "
            "MULTIPOLYGON"
        )
    turn = np.ceil((west - 180.0) / 360.0)  # the line 180 + 360 turn crossed, in unwrapped lon
    line = 180.0 + 360.0 * turn
    parts = []
    for keep_west, shift in ((True, 360.0 * turn), (False, 360.0 * (turn + 1))):
        part = _clipped(unwrapped, line, keep_west)
        if part is not None:
            part[:, 0] -= shift
            parts.append(part)
    return parts


def _clipped(ring: np.ndarray, line: float, keep_west: bool) -> np.ndarray | None:
    """The closed ring cut by the meridian `line`, the side kept (Sutherland-Hodgman on one
    half-plane); None when nothing of it is left with an area."""
    inside = ring[:, 0] <= line if keep_west else ring[:, 0] >= line
    start, stop = ring[:-1], ring[1:]
    crosses = inside[:-1] != inside[1:]
    # From the western end of each edge, so that an edge gone over twice (there and back)
    # meets the line at the very same point.
    a = np.where((start[:, 0] <= stop[:, 0])[:, None], start, stop)
    b = np.where((start[:, 0] <= stop[:, 0])[:, None], stop, start)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = a[:, 1] + (line - a[:, 0]) / (b[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    meets = np.column_stack([np.full(len(y), line), y])
    points = np.stack([meets, stop], axis=1)[np.column_stack([crosses, inside[1:]])]
    if len(points) < 3 or (points[:, 0] == line).all():
        return None
    return np.vstack([points, points[:1]])


def projected(area: Area, epsg: int) -> Area:
    """The area in another CRS; lon/lat edges are densified first (`densified_lonlat`), so
    that they bend as they do in the target CRS. Vertices PROJ cannot map are an error (not
    silently lost)."""
    return projected_all([area], epsg)[0]


def projected_all(areas: list[Area], epsg: int) -> list[Area]:
    """`projected` for many areas, with one PROJ call per source CRS (per round of
    densifying, from lon/lat)."""
    out: list[Area | None] = [a if a.epsg == epsg or a.empty else None for a in areas]
    for source in {a.epsg for a, o in zip(areas, out, strict=True) if o is None}:
        members = [k for k, a in enumerate(areas) if out[k] is None and a.epsg == source]
        rings = [ring for k in members for ring in areas[k].rings]
        if source == geo.WGS84:
            owner = np.repeat(np.arange(len(members)), [len(areas[k].rings) for k in members])
            moved = densified_lonlat(rings, owner, epsg)
        else:
            points = np.concatenate(rings)
            x, y = _projected_points(source, epsg, points)
            moved = np.split(np.column_stack([x, y]), np.cumsum([len(r) for r in rings])[:-1])
        at = 0
        for k in members:
            count = len(areas[k].rings)
            out[k] = Area(tuple(moved[at : at + count]), epsg, areas[k].part)
            at += count
    return out


def _projected_points(source: int, epsg: int, points: np.ndarray):
    x, y = geo.transform_points(source, epsg, points[:, 0], points[:, 1])
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise AefsqlError(
            f"area: some vertices cannot be projected from EPSG:{source} to "
            f"EPSG:{epsg} (is the area in the CRS crs := names?)"
        )
    return x, y


def densified_lonlat(rings: list[np.ndarray], owner, epsg: int) -> list[np.ndarray]:
    """Lon/lat rings projected into EPSG `epsg`, their edges cut (straight in lon/lat) until
    each piece's projected midpoint is within DENSIFY_TOLERANCE of its projected chord's: as
    many vertices as the curve needs, no more. `owner[i]` is the area ring i belongs to; an
    area that would pass MAX_AREA_VERTICES is refused before its vertices are made."""
    sizes = [len(r) for r in rings]
    lonlat = np.concatenate(rings)
    owner = np.repeat(np.asarray(owner, np.int64), sizes)
    last = np.zeros(len(lonlat), dtype=bool)  # a ring's last vertex: no edge starts there
    last[np.cumsum(sizes) - 1] = True
    following = np.minimum(np.arange(len(lonlat)) + 1, len(lonlat) - 1)
    step = np.abs(lonlat[following] - lonlat).max(axis=1)
    pieces = np.where(last, 1, np.maximum(1, np.ceil(step / DENSIFY_START_DEGREES)))
    _check_vertex_count(owner, pieces, epsg)
    pieces = pieces.astype(np.int64)
    start = np.repeat(np.arange(len(lonlat)), pieces)
    t = (np.arange(start.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)) / pieces[start]
    lonlat = lonlat[start] + t[:, None] * (lonlat[following[start]] - lonlat[start])
    owner, last = owner[start], last[start]
    xy = np.column_stack(_projected_points(geo.WGS84, epsg, lonlat))
    pending = ~last  # edges (from vertex i to i + 1) that may still need cutting
    for _ in range(DENSIFY_ROUNDS):
        edge = np.flatnonzero(pending)
        if edge.size == 0:
            break
        middle = (lonlat[edge] + lonlat[edge + 1]) / 2
        moved = np.column_stack(_projected_points(geo.WGS84, epsg, middle))
        off = np.hypot(*(moved - (xy[edge] + xy[edge + 1]) / 2).T)
        cut = off > DENSIFY_TOLERANCE
        edge = edge[cut]
        if edge.size == 0:
            break
        _check_vertex_count(owner, 1 + np.bincount(edge, minlength=len(owner)), epsg)
        lonlat = np.insert(lonlat, edge + 1, middle[cut], axis=0)
        xy = np.insert(xy, edge + 1, moved[cut], axis=0)
        owner = np.insert(owner, edge + 1, owner[edge])
        last = np.insert(last, edge + 1, False)
        pending = np.zeros(len(lonlat), dtype=bool)
        halves = edge + np.arange(edge.size)  # where each cut edge's first half starts now
        pending[halves] = pending[halves + 1] = True
    return np.split(xy, np.flatnonzero(last)[:-1] + 1)


def _check_vertex_count(owner: np.ndarray, weights, epsg: int) -> None:
    counts = np.bincount(owner, weights=weights)
    if counts.size and counts.max() > MAX_AREA_VERTICES:
        raise AefsqlError(
            f"area: following its lon/lat edges as they bend in EPSG:{epsg} takes over "
            f"{MAX_AREA_VERTICES:,} vertices (the limit; its edges are too long or too "
            "many): split the area, or give it in the projected CRS (crs :=)"
        )


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
    the area has holes or parts). Rows and spans in ascending order, none overlapping.

    Worked in pixel space, as GDAL rasterizes (all_touched off; its llrasterize.cpp): a
    row's centre line r + 0.5 meets an edge when it lies in [lower end, upper end) of the
    edge's rows, and a span from a to b takes the columns c with floor(a + 0.5) <= c <
    floor(b + 0.5). An edge lying along a row's centre line adds its own span when, its
    ring turned clockwise (in the CRS, as GDAL turns every ring), it runs towards lower
    columns: [floor(end + 0.5), floor(start + 0.5)). So north-up and south-up rasters, and
    centres exactly on edges and vertices, agree with GDAL.

    A scanline sweep over an active-edge list: edges sorted by their first row enter the
    list as the sweep reaches them and leave after their last, and the crossings of a band
    of rows (at most SWEEP_CROSSINGS; all rows at once when they fit) are made, sorted and
    paired at once. Time is O(edges log edges + crossings), memory O(edges + spans +
    SWEEP_CROSSINGS) whatever the vertex count (a rows x edges matrix took 3 GB for 10^5
    vertices on 2,048 rows)."""
    if area.empty:
        return _NO_SPANS
    rings = list(_closed(area.rings))
    col = np.concatenate([(r[:, 0] - transform.c) / transform.a for r in rings])
    row = np.concatenate([(r[:, 1] - transform.f) / transform.e for r in rings])
    edge = np.ones(len(col) - 1, dtype=bool)  # from vertex i to i + 1: not across rings
    edge[np.cumsum([len(r) for r in rings])[:-1] - 1] = False
    c0, r0, c1, r1 = col[:-1][edge], row[:-1][edge], col[1:][edge], row[1:][edge]
    # Each edge's polygon, where the area has several: crossings pair within a polygon.
    part = None
    if area.part is not None and len(set(area.part)) > 1:
        owner = np.repeat(np.asarray(area.part, np.int64), [len(r) for r in rings])
        part = owner[:-1][edge]
    flat = _flat_spans(rings, c0, r0, c1, r1, width, height)
    # Each edge from its lower end (row) to its upper: GDAL's terms, in its order.
    lower = r0 <= r1
    cl, rl = np.where(lower, c0, c1), np.where(lower, r0, r1)
    cu, ru = np.where(lower, c1, c0), np.where(lower, r1, r0)
    # The rows r with rl <= r + 0.5 < ru, clipped: [first, end).
    first, end = _rows_from(np.concatenate([rl, ru]), height).reshape(2, -1)
    crossing = end > first  # flat edges, and edges between two centre lines, cross none
    if not crossing.any():
        return flat
    if not crossing.all():
        cl, rl, cu, ru, first, end = (a[crossing] for a in (cl, rl, cu, ru, first, end))
        part = None if part is None else part[crossing]
    counts = end - first
    if counts.sum() <= SWEEP_CROSSINGS:  # one band holds every crossing: no sweep needed
        edges = (cl, rl, cu - cl, ru - rl, first, end, part)
        active = np.arange(first.size)
        spans = _band_spans(edges, active, int(first.min()), int(end.max()), width)
    else:
        spans = _swept_spans(cl, rl, cu, ru, first, end, part, width)
    return spans if flat.size == 0 else _merged(np.concatenate([spans, flat]), width)


def _swept_spans(cl, rl, cu, ru, first, end, part, width: int) -> np.ndarray:
    """The spans of crossing edges, band by band of rows (`row_spans`)."""
    by_start = np.argsort(first, kind="stable")
    across, up = (cu - cl)[by_start], (ru - rl)[by_start]
    cl, rl, first, end = (a[by_start] for a in (cl, rl, first, end))
    part = None if part is None else part[by_start]
    origin, stop_row = int(first[0]), int(end.max())
    # Crossings on each row from `origin`: edges started minus edges ended.
    per_row = np.cumsum(np.bincount(first - origin, minlength=stop_row - origin + 1))
    per_row -= np.cumsum(np.bincount(end - origin, minlength=stop_row - origin + 1))
    spans = []
    active = np.zeros(0, np.int64)  # indices of the edges the sweep is inside
    entered = 0
    top = origin
    while top < stop_row:
        bottom = origin + _band_end(per_row, top - origin, stop_row - origin)
        joining = int(np.searchsorted(first, bottom, side="left"))
        active = np.concatenate([active[end[active] > top], np.arange(entered, joining)])
        entered = joining
        edges = (cl, rl, across, up, first, end, part)
        spans.append(_band_spans(edges, active, top, bottom, width))
        top = bottom
    return np.concatenate(spans)


# Crossings made and sorted at once by `row_spans`: ~40 bytes each, so a band of rows costs
# at most ~20 MB of scratch however many vertices the area has.
SWEEP_CROSSINGS = 1 << 19
_NO_SPANS = np.zeros((0, 3), dtype=np.int64)
_BAND_ROWS = (1 << 15) - 1  # rows of a band: offsets in one fit int16 (numpy radix-sorts them)


def _clockwise(ring: np.ndarray) -> bool:
    """Whether a closed ring runs clockwise, decided as OGR decides it: by the turn at its
    lowest (then rightmost) vertex, which lies on its convex hull, or by the sign of its
    area where that vertex is repeated or its neighbour coincides with it."""
    points = ring[:-1]
    n = len(points)
    if n < 3:
        return True
    lowest = points[:, 1] == points[:, 1].min()
    v = int(np.flatnonzero(lowest)[np.argmax(points[lowest, 0])])
    before, after = points[v - 1], points[(v + 1) % n]
    tie = lowest & (points[:, 0] == points[v, 0])
    if tie.sum() == 1 and not (before == points[v]).all() and not (after == points[v]).all():
        cross = (after[0] - points[v, 0]) * (before[1] - points[v, 1]) - (
            before[0] - points[v, 0]
        ) * (after[1] - points[v, 1])
        if cross != 0:
            return bool(cross < 0)
    x, y = points[:, 0], points[:, 1]
    return bool((x * (np.roll(y, -1) - np.roll(y, 1))).sum() < 0)


def _flat_spans(rings, c0, r0, c1, r1, width: int, height: int) -> np.ndarray:
    """The spans GDAL adds for edges lying along a row's centre line that run towards lower
    columns once their ring is turned clockwise (its "bottom horizontal segments")."""
    on_line = (r0 == r1) & (c0 != c1) & (np.floor(r0) + 0.5 == r0) & (r0 > 0) & (r0 < height)
    if not on_line.any():
        return _NO_SPANS
    ring = np.repeat(np.arange(len(rings)), [len(r) - 1 for r in rings])[on_line]
    clockwise = np.array([_clockwise(rings[k]) for k in range(len(rings))])[ring]
    c0, c1, r0 = c0[on_line], c1[on_line], r0[on_line]
    start, end = np.where(clockwise, c0, c1), np.where(clockwise, c1, c0)
    towards_lower = start > end
    row = np.floor(r0[towards_lower]).astype(np.int64)
    first = np.clip(np.floor(end[towards_lower] + 0.5), 0, width).astype(np.int64)
    stop = np.clip(np.floor(start[towards_lower] + 0.5), 0, width).astype(np.int64)
    kept = stop > first
    return np.column_stack([row[kept], first[kept], stop[kept]])


def _merged(spans: np.ndarray, width: int) -> np.ndarray:
    """Spans in order, those of a row that overlap or touch joined into one."""
    spans = spans[np.lexsort((spans[:, 1], spans[:, 0]))]
    stride = width + 1  # (row, column) as one ascending number
    start = spans[:, 0] * stride + spans[:, 1]
    reach = np.maximum.accumulate(spans[:, 0] * stride + spans[:, 2])
    new = np.ones(len(spans), dtype=bool)
    new[1:] = start[1:] > reach[:-1]
    last = np.append(np.flatnonzero(new)[1:], len(spans)) - 1
    return np.column_stack([spans[new, 0], spans[new, 1], reach[last] - spans[new, 0] * stride])


def _rows_from(level: np.ndarray, height: int) -> np.ndarray:
    """The first row r (in [0, height]) whose centre line r + 0.5 is at or past `level`."""
    rows = np.ceil(level - 0.5)
    # Correct a rounding of `level - 0.5` by the very test the rule states.
    rows += rows + 0.5 < level
    rows -= rows - 0.5 >= level
    return np.minimum(np.maximum(rows, 0), height).astype(np.int64)


def _band_end(per_row: np.ndarray, top: int, stop_row: int) -> int:
    """The end of the band of rows from `top` whose crossings fit SWEEP_CROSSINGS (one row
    at least, however many it has)."""
    limit = min(stop_row, top + _BAND_ROWS)
    within = np.cumsum(per_row[top:limit])
    return top + max(1, int(np.searchsorted(within, SWEEP_CROSSINGS, side="right")))


def _band_spans(edges, active, top: int, bottom: int, width: int):
    """The spans of rows [top, bottom) from the crossings of the `active` edges."""
    cl, rl, across, up, first, end, part = edges
    start = np.maximum(first[active], top)
    counts = np.minimum(end[active], bottom) - start
    edge = np.repeat(active, counts)
    within = np.arange(edge.size) - np.repeat(np.cumsum(counts) - counts, counts)
    row = np.repeat(start, counts) + within
    del within
    # GDAL's expression, term for term: (dy - dy1) * (dx2 - dx1) / (dy2 - dy1) + dx1.
    at = ((row + 0.5) - rl[edge]) * across[edge] / up[edge] + cl[edge]
    if part is not None:
        return _parts_spans(row, at, part[edge], width)
    del edge
    # Sorted by x, then (stably: a radix sort, on int16) by row: rows ascending, x within.
    offset = (row - top).astype(np.int16 if bottom - top <= _BAND_ROWS else np.int64)
    order = np.argsort(at)
    order = order[np.argsort(offset[order], kind="stable")]
    del offset
    row, at = row[order], at[order]
    del order
    # Each row's crossings, taken two by two (an odd last one, which closed rings cannot
    # make, is dropped, as GDAL drops it).
    count = np.bincount(row - top, minlength=bottom - top)
    if (count % 2).any():
        rank = np.arange(row.size) - np.repeat(np.cumsum(count) - count, count)
        paired = rank < np.repeat(count - count % 2, count)
        row, at = row[paired], at[paired]
    row, at = row[::2], at.reshape(-1, 2)
    columns = np.minimum(np.maximum(np.floor(at + 0.5), 0), width).astype(np.int64)
    starts, ends = columns[:, 0], columns[:, 1]
    kept = ends > starts
    spans = np.empty((int(kept.sum()), 3), dtype=np.int64)
    spans[:, 0], spans[:, 1], spans[:, 2] = row[kept], starts[kept], ends[kept]
    return spans


def _parts_spans(row, at, part, width: int) -> np.ndarray:
    """`_band_spans` for an area of several polygons: each row's crossings taken two by two
    within each polygon (even-odd, holes and all), and the polygons' spans joined."""
    order = np.lexsort((at, part, row))
    row, at, part = row[order], at[order], part[order]
    group = np.ones(row.size, bool)  # where a (row, polygon) run of crossings starts
    group[1:] = (row[1:] != row[:-1]) | (part[1:] != part[:-1])
    starts = np.flatnonzero(group)
    count = np.diff(np.append(starts, row.size))
    rank = np.arange(row.size) - np.repeat(starts, count)
    paired = rank < np.repeat(count - count % 2, count)  # an odd last one is dropped
    row, at = row[paired][::2], at[paired].reshape(-1, 2)
    columns = np.minimum(np.maximum(np.floor(at + 0.5), 0), width).astype(np.int64)
    kept = columns[:, 1] > columns[:, 0]
    spans = np.column_stack([row[kept], columns[kept, 0], columns[kept, 1]])
    return _merged(spans, width) if len(spans) else _NO_SPANS


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
    origin = _origin(area)
    for ring in _closed(area.rings):
        x, y = ring[:, 0] - origin[0], ring[:, 1] - origin[1]
        total += float((x[:-1] * y[1:] - x[1:] * y[:-1]).sum() / 2)
    return abs(total)


def unwrapped(area: Area) -> Area:
    """A lon/lat area across the antimeridian in one piece, when that makes it narrower:
    its rings wholly west of 0° (the parts east of 180°, as area_from splits them) and the
    western vertices of a ring with vertices near both +180 and -180 (one projected from
    a UTM zone there) moved by 360°; any other area as it is. Its bounds and centroid are
    then where it lies, not in the 360° between its parts (a longitude past 180 means
    lon - 360)."""
    if area.epsg != geo.WGS84 or area.empty:
        return area
    moved = []
    for ring in area.rings:
        lon = ring[:, 0]
        if (lon <= 0.0).all() or (lon.min() < -90.0 and lon.max() > 90.0):
            ring = np.column_stack([np.where(lon <= 0.0, lon + 360.0, lon), ring[:, 1]])
        moved.append(ring)
    whole = Area(tuple(moved), area.epsg, area.part)
    narrower = whole.bounds[2] - whole.bounds[0] < area.bounds[2] - area.bounds[0]
    return whole if narrower else area


def centroid(area: Area) -> tuple[float, float]:
    """The area-weighted centroid of the rings (shoelace; holes subtract as even-odd); of a
    lon/lat area across the antimeridian, taken in one piece (`unwrapped`), in -180..180."""
    if area.epsg == geo.WGS84 and area is not (whole := unwrapped(area)):
        lon, lat = centroid(whole)
        return (lon + 180.0) % 360.0 - 180.0, lat
    total, cx, cy = 0.0, 0.0, 0.0
    origin = _origin(area)
    for ring in _closed(area.rings):
        ring = ring - origin
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
    return float(origin[0] + cx / total), float(origin[1] + cy / total)


def _origin(area: Area) -> np.ndarray:
    """A vertex of the area: the shoelace sums products of coordinates, so an area far
    smaller than its distance from (0, 0) (a sub-pixel box at 45°N: 10⁻⁴ degrees at 45)
    loses every significant digit unless measured from nearby."""
    for ring in area.rings:
        if len(ring):
            return np.asarray(ring[0], np.float64)
    return np.zeros(2)
