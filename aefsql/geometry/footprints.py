"""Where a pixel, a chip or a grid cell lies, as lon/lat geometry (OGC:CRS84, WKB) for a
`geom` column: its centre (`point`) or its footprint (`pixel`).

Both start from the rectangle in the CRS of its tile (a pixel: its four corners from the
tile's transform; a chip: its bounds) and are projected to lon/lat by PROJ, never by hand.
A UTM rectangle's straight edges are curves in lon/lat, bowing by about (edge / 640 m)^2 x
8 mm (measured with pyproj at 45°N): a footprint gets a vertex every SEGMENT_PIXELS pixels
of an edge, so it stays within 1 cm of the true outline. A pixel of the published files
(10 m) is then its 4 corners; a 256-pixel chip has 4 vertices an edge. An H3 cell starts
from h3's own vertices (`cell_to_boundary`) and centre (`cell_to_latlng`): its edges are
great-circle arcs, which bow away from straight lon/lat lines as a UTM edge does, so they
get a vertex every SEGMENT_PIXELS pixels' length (of the published 10 m) too, on the arc.

A footprint that crosses the antimeridian (its lon/lat corners more than 180° apart) is
split at 180° into a MultiPolygon of its two sides, as GeoJSON (RFC 7946) and GeoParquet
readers expect; a point is always in [-180, 180].
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa

from ..aef import PIXEL_METRES
from ..format.tiff import Affine
from . import geo
from .areas import Area, clipped_to_box

SEGMENT_PIXELS = 64  # most pixels of a footprint's edge between two vertices (see above)
_WKB_POINT, _WKB_POLYGON, _WKB_MULTIPOLYGON = 1, 3, 6
_FAR = 1e9  # a half plane's far side, in degrees
_EARTH_RADIUS = 6371007.18  # metres: H3's sphere (its EARTH_RADIUS_KM)


def segments_for(pixels: int) -> int:
    """Vertices a footprint edge of `pixels` pixels is split into (1: its two corners)."""
    return max(1, -(-int(pixels) // SEGMENT_PIXELS))


def rectangle_geometries(
    kind: str, epsg: np.ndarray, xmin, ymin, xmax, ymax, segments: int = 1
) -> pa.BinaryArray:
    """WKB in lon/lat of rectangles [xmin, xmax] x [ymin, ymax], each in its own projected
    CRS `epsg` (one EPSG code per rectangle): their centres (`kind` 'point') or their
    outlines (`kind` 'pixel'), counter-clockwise with `segments` edges a side."""
    epsg = np.asarray(epsg, np.int64)
    xmin, ymin, xmax, ymax = (np.asarray(v, np.float64) for v in (xmin, ymin, xmax, ymax))
    if kind == "point":
        return points_wkb(*geo.lonlat((xmin + xmax) / 2, (ymin + ymax) / 2, epsg))
    # Counter-clockwise from the south-west corner, `segments` steps a side, closed.
    t = np.arange(segments) / segments
    ones, zeros = np.ones(segments), np.zeros(segments)
    u = np.concatenate([t, ones, 1 - t, zeros, [0.0]])  # 0 at xmin, 1 at xmax
    v = np.concatenate([zeros, t, ones, 1 - t, [0.0]])  # 0 at ymin, 1 at ymax
    x = xmin[:, None] + u[None, :] * (xmax - xmin)[:, None]
    y = ymin[:, None] + v[None, :] * (ymax - ymin)[:, None]
    lon, lat = geo.lonlat(x, y, epsg[:, None])
    return _polygons_wkb(lon, lat)


def h3_geometries(kind: str, cells: list[str]) -> pa.BinaryArray:
    """WKB in lon/lat of H3 cells (indexes as h3 writes them): their centres (`kind` 'point')
    or outlines ('pixel'): h3's vertices, counter-clockwise as h3 gives them, and between two
    a vertex every SEGMENT_PIXELS x 10 m on the great-circle arc joining them."""
    import h3  # (an optional extra: options.check_cell checked it)

    if kind == "point":
        lat, lon = np.array([h3.cell_to_latlng(c) for c in cells], np.float64).reshape(-1, 2).T
        return points_wkb(lon, lat)
    boundaries = [h3.cell_to_boundary(c) for c in cells]
    count = np.array([len(b) for b in boundaries], np.int64)
    corners = np.array([v for b in boundaries for v in b], np.float64).reshape(-1, 2)
    # Each edge from a corner to the next of its cell (the last back to the first).
    first = np.cumsum(count) - count
    owner = np.repeat(np.arange(count.size), count)
    following = first[owner] + (np.arange(owner.size) - first[owner] + 1) % count[owner]
    a = _unit_vectors(corners)
    b = a[following]
    omega = np.arctan2(np.linalg.norm(np.cross(a, b), axis=1), np.einsum("ij,ij->i", a, b))
    segments = np.array(
        [segments_for(m / PIXEL_METRES) for m in (omega * _EARTH_RADIUS).tolist()], np.int64
    )
    # The points of every edge: its corner (t = 0, h3's own) and segments - 1 on the arc.
    edge = np.repeat(np.arange(segments.size), segments)
    t = (np.arange(edge.size) - (np.cumsum(segments) - segments)[edge]) / segments[edge]
    lon, lat = corners[edge, 1].copy(), corners[edge, 0].copy()
    inner = t > 0
    e, u = edge[inner], t[inner][:, None]
    w = omega[e][:, None]
    xyz = (np.sin((1 - u) * w) * a[e] + np.sin(u * w) * b[e]) / np.sin(w)
    lon[inner] = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
    lat[inner] = np.degrees(np.arcsin(np.clip(xyz[:, 2] / np.linalg.norm(xyz, axis=1), -1, 1)))
    points = np.column_stack([lon, lat])
    ends = np.cumsum(np.bincount(owner, weights=segments, minlength=count.size).astype(np.int64))
    rings = np.split(points, ends[:-1])
    return rings_wkb([np.concatenate([ring, ring[:1]]) for ring in rings])


def _unit_vectors(latlng: np.ndarray) -> np.ndarray:
    """(n, 3) points on the unit sphere of (n, 2) (lat, lng) in degrees."""
    lat, lng = np.radians(latlng).T
    return np.column_stack([np.cos(lat) * np.cos(lng), np.cos(lat) * np.sin(lng), np.sin(lat)])


def rings_wkb(rings: list[np.ndarray]) -> pa.BinaryArray:
    """Closed lon/lat rings ((k, 2) arrays, k of each its own) as one-ring polygons, in order;
    a ring across the antimeridian as the MultiPolygon of its two sides."""
    if not rings:
        return pa.array([], pa.binary())
    lengths = np.array([len(r) for r in rings])
    parts, order = [], []
    for k in np.unique(lengths).tolist():
        at = np.flatnonzero(lengths == k)
        xy = np.stack([rings[i] for i in at.tolist()])
        parts.append(_polygons_wkb(xy[..., 0], xy[..., 1]).cast(pa.large_binary()))
        order.append(at)
    found = pa.concat_arrays(parts).take(pa.array(np.argsort(np.concatenate(order))))
    return found.cast(pa.binary())


def pixel_geometries(kind: str, headers: dict, paths, x, y) -> pa.BinaryArray:
    """lon/lat geometry (`kind` as in `rectangle_geometries`) of pixels centred at x/y, each
    of the image `headers[path]` (its CRS, its pixel size: an overview's pixel is larger)."""
    paths = np.asarray(paths, object)
    half_x, half_y = np.empty(paths.size), np.empty(paths.size)
    epsg = np.empty(paths.size, np.int64)
    for path in set(paths.tolist()):
        mine, header = paths == path, headers[path]
        half_x[mine], half_y[mine] = abs(header.transform.a) / 2, abs(header.transform.e) / 2
        epsg[mine] = int(header.epsg)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return rectangle_geometries(kind, epsg, x - half_x, y - half_y, x + half_x, y + half_y)


def cell_geometries(kind: str, headers: dict, paths, rows, cols) -> pa.BinaryArray:
    """lon/lat geometry (`kind` as in `rectangle_geometries`) of pixels (rows, cols), each
    of the image `headers[path]`."""
    paths = np.asarray(paths, object)
    bounds = np.empty((4, paths.size))
    epsg = np.empty(paths.size, np.int64)
    for path in set(paths.tolist()):
        mine, header = paths == path, headers[path]
        bounds[:, mine] = pixel_rectangles(header.transform, rows[mine], cols[mine])
        epsg[mine] = int(header.epsg)
    return rectangle_geometries(kind, epsg, *bounds)


def pixel_rectangles(transform: Affine, rows, cols):
    """xmin, ymin, xmax, ymax of pixels (rows, cols) of an image with this north-aligned
    transform (north-up or south-up), in its CRS."""
    rows, cols = np.asarray(rows, np.float64), np.asarray(cols, np.float64)
    x0, x1 = transform.c + transform.a * cols, transform.c + transform.a * (cols + 1)
    y0, y1 = transform.f + transform.e * rows, transform.f + transform.e * (rows + 1)
    return np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)


def points_wkb(lon: np.ndarray, lat: np.ndarray) -> pa.BinaryArray:
    """Points (lon, lat), already in lon/lat, as WKB."""
    record = np.dtype([("order", "u1"), ("type", "<u4"), ("x", "<f8"), ("y", "<f8")])
    out = np.empty(lon.size, record)  # packed: 21 bytes a point, as WKB lays it out
    out["order"], out["type"], out["x"], out["y"] = 1, _WKB_POINT, lon, lat
    return _binary(out)


def _polygons_wkb(lon: np.ndarray, lat: np.ndarray) -> pa.BinaryArray:
    """One-ring polygons from closed rings (rows of `lon`, `lat`); a ring across the
    antimeridian as the MultiPolygon of its two sides."""
    n, k = lon.shape
    record = np.dtype(
        [
            ("order", "u1"),
            ("type", "<u4"),
            ("rings", "<u4"),
            ("points", "<u4"),
            ("xy", "<f8", (k, 2)),
        ]
    )
    out = np.empty(n, record)
    out["order"], out["type"], out["rings"], out["points"] = 1, _WKB_POLYGON, 1, k
    out["xy"][..., 0], out["xy"][..., 1] = lon, lat
    with np.errstate(invalid="ignore"):
        across = np.flatnonzero(lon.max(axis=1) - lon.min(axis=1) > 180.0)
    if across.size == 0:
        return _binary(out)
    blobs = [row.tobytes() for row in out]
    for i in across.tolist():
        blobs[i] = _split_at_antimeridian(lon[i], lat[i])
    return pa.array(blobs, pa.binary())


def _split_at_antimeridian(lon: np.ndarray, lat: np.ndarray) -> bytes:
    """A closed ring whose vertices lie on both sides of 180°, as the WKB MultiPolygon of
    its parts west and east of it (each in [-180, 180])."""
    ring = np.column_stack([np.where(lon < 0, lon + 360.0, lon), lat])  # one continuous side
    west = clipped_to_box(Area((ring,), geo.WGS84), -_FAR, -90.0, 180.0, 90.0).rings
    east = clipped_to_box(Area((ring,), geo.WGS84), 180.0, -90.0, _FAR, 90.0).rings
    parts = [*west, *(part - [360.0, 0.0] for part in east)]
    blob = struct.pack("<BII", 1, _WKB_MULTIPOLYGON, len(parts))
    for part in parts:
        blob += struct.pack("<BIII", 1, _WKB_POLYGON, 1, len(part))
        blob += np.ascontiguousarray(part, "<f8").tobytes()
    return blob


def _binary(records: np.ndarray) -> pa.BinaryArray:
    """Fixed-size records as an Arrow binary array, one value each, without a copy a row."""
    kind, offset_type = (
        (pa.binary(), np.int32) if records.nbytes < 2**31 else (pa.large_binary(), np.int64)
    )
    offsets = np.arange(records.size + 1, dtype=offset_type) * records.dtype.itemsize
    return pa.Array.from_buffers(
        kind, records.size, [None, pa.py_buffer(offsets), pa.py_buffer(records.tobytes())]
    )


def wkb_bounds(values: pa.BinaryArray) -> tuple[np.ndarray, ...]:
    """xmin, ymin, xmax, ymax of each WKB value these functions write (points, one-ring
    polygons, the MultiPolygons of a footprint split at 180°); NaN for NULL. Values of one
    length (all but the split ones) are read as one array, the others one by one."""
    n = len(values)
    bounds = np.full((4, n), np.nan)
    width = np.int64 if pa.types.is_large_binary(values.type) else np.int32
    offsets = np.frombuffer(values.buffers()[1], width)[values.offset : values.offset + n + 1]
    sizes = np.diff(offsets)
    data = np.frombuffer(values.buffers()[2] or b"", np.uint8) if n else np.empty(0, np.uint8)
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    for size in np.unique(sizes[valid]).tolist():
        rows = np.flatnonzero(valid & (sizes == size))
        blobs = data[offsets[rows][:, None] + np.arange(size)]
        kind = blobs[0, 1:5].view("<u4")[0]
        if kind == _WKB_POINT or kind == _WKB_POLYGON:
            start = 5 if kind == _WKB_POINT else 13
            xy = np.ascontiguousarray(blobs[:, start:]).view("<f8").reshape(rows.size, -1, 2)
            bounds[:, rows] = [*xy.min(axis=1).T, *xy.max(axis=1).T]
            continue
        for i, blob in zip(rows.tolist(), blobs, strict=True):  # split footprints: few
            xy = np.concatenate([part for part in _multipolygon_rings(blob.tobytes())])
            bounds[:, i] = [*xy.min(axis=0), *xy.max(axis=0)]
    return tuple(bounds)


def _multipolygon_rings(blob: bytes):
    """The rings of a WKB MultiPolygon of one-ring polygons, as `_split_at_antimeridian`
    writes it."""
    (parts,) = struct.unpack_from("<I", blob, 5)
    at = 9
    for _ in range(parts):
        (points,) = struct.unpack_from("<I", blob, at + 9)
        at += 13
        yield np.frombuffer(blob, "<f8", points * 2, at).reshape(-1, 2)
        at += points * 16
