"""Pure geometry: lon/lat validity, UTM zones, lon/lat -> projected CRS (pyproj), projected
-> pixel."""

from __future__ import annotations

import struct
import threading
from concurrent.futures import Future
from functools import lru_cache

import numpy as np
import pyarrow as pa
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from .. import threads
from ..errors import AefsqlError, TiffFormatError
from ..format.tiff import Affine

WGS84 = 4326
_local = threading.local()


def _transformer(source_epsg: int, target_epsg: int) -> Transformer:
    # pyproj transformers must not be shared between threads: one cache per thread.
    cache = getattr(_local, "transformers", None)
    if cache is None:
        cache = _local.transformers = lru_cache(maxsize=256)(_make_transformer)
    return cache(source_epsg, target_epsg)


def _make_transformer(source_epsg: int, target_epsg: int) -> Transformer:
    return Transformer.from_crs(source_epsg, target_epsg, always_xy=True)


def known_epsg(code: int) -> bool:
    """True when PROJ knows EPSG:`code` (asked on the PROJ thread: see transform_points)."""
    return threads.pool("proj").submit(_known_epsg, code).result()


@lru_cache(maxsize=1024)
def _known_epsg(code: int) -> bool:
    try:
        CRS.from_epsg(code)
    except CRSError:
        return False
    return True


def is_projected(code: int) -> bool:
    """True when EPSG:`code` is a projected CRS (asked on the PROJ thread, as known_epsg)."""
    return threads.pool("proj").submit(_is_projected, code).result()


@lru_cache(maxsize=1024)
def _is_projected(code: int) -> bool:
    return CRS.from_epsg(code).is_projected


def valid_coordinates(x: np.ndarray, y: np.ndarray, epsg: int) -> np.ndarray:
    """True where (x, y) can be a point of `epsg`: finite, and in range for lon/lat."""
    if epsg == WGS84:
        return valid_lonlat(x, y)
    return np.isfinite(x) & np.isfinite(y)


def valid_lonlat(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """True where (lon, lat) is a finite WGS84 coordinate; NULLs arrive here as NaN."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180.0) & (np.abs(lat) <= 90.0)


def transform_points(
    source_epsg: int, target_epsg: int, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Transform coordinates (x=lon/easting first); points PROJ cannot map come back as inf/NaN."""
    return transform_later(source_epsg, target_epsg, x, y).result()


def lonlat(x, y, crs) -> tuple[np.ndarray, np.ndarray]:
    """lon, lat of points (x, y; any shape) each in its own CRS `crs` (EPSG codes, one per
    point, or one for all): one PROJ call per CRS."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    crs = np.broadcast_to(np.asarray(crs), x.shape)
    lon, lat = np.full(x.shape, np.nan), np.full(x.shape, np.nan)
    for code in np.unique(crs).tolist():
        mine = crs == code
        lon[mine], lat[mine] = transform_points(int(code), WGS84, x[mine], y[mine])
    return lon, lat


def transform_later(source_epsg: int, target_epsg: int, x, y) -> Future:
    """`transform_points` started now, its (x, y) in the future's result: PROJ lets go of
    the GIL, so the caller can fetch and decode meanwhile."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if source_epsg == target_epsg:
        done: Future = Future()
        done.set_result((x, y))
        return done
    # PROJ segfaults when called from DuckDB's own worker threads (seen here with pyproj 3.7
    # and duckdb 2.0, intermittently), never from Python's threads: run it on these.
    return threads.pool("proj").submit(_transform, source_epsg, target_epsg, x, y)


def _transform(source_epsg: int, target_epsg: int, x: np.ndarray, y: np.ndarray):
    tx, ty = _transformer(source_epsg, target_epsg).transform(x, y, errcheck=False)
    return np.asarray(tx, dtype=np.float64), np.asarray(ty, dtype=np.float64)


def check_north_aligned(transform: Affine, source: str) -> None:
    """A transform points can be mapped through: finite, not rotated, no zero pixel size
    (NaN, inf or 0 would put every point in pixel (0, 0), or none anywhere)."""
    t = transform
    if not np.isfinite([t.a, t.b, t.c, t.d, t.e, t.f]).all():
        raise TiffFormatError(f"{source}: geotransform is not finite ({transform})")
    if transform.b != 0.0 or transform.d != 0.0:
        raise TiffFormatError(
            f"{source}: rotated or sheared geotransform ({transform}) is not supported"
        )
    if transform.a == 0.0 or transform.e == 0.0:
        raise TiffFormatError(f"{source}: geotransform has a zero pixel size ({transform})")


def pixel_of(
    transform: Affine, width: int, height: int, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column of the pixel holding each projected point, and whether it is inside.

    Works for north-up (e < 0) and south-up (e > 0, row 0 at the southern edge) alike: the
    row is the floor of the inverse transform, as GDAL computes it.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        col_f = np.floor((x - transform.c) / transform.a)
        row_f = np.floor((y - transform.f) / transform.e)
        inside = (
            np.isfinite(col_f)
            & np.isfinite(row_f)
            & (col_f >= 0)
            & (col_f < width)
            & (row_f >= 0)
            & (row_f < height)
        )
    rows = np.where(inside, row_f, 0).astype(np.int64)
    cols = np.where(inside, col_f, 0).astype(np.int64)
    return rows, cols, inside


def utm_zone(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """The standard UTM zone label of each point ('33N', '19S'); None where invalid."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    ok = valid_lonlat(lon, lat)
    number = np.clip(np.floor((np.where(ok, lon, 0.0) + 180.0) / 6.0).astype(np.int64) + 1, 1, 60)
    out = np.empty(lon.shape, dtype=object)
    for i in range(lon.size):
        out[i] = utm_label(utm_epsg(int(number[i]), lat[i] >= 0)) if ok[i] else None
    return out


# WGS 84 / UTM zone n is EPSG 32600 + n in the north, 32700 + n in the south (n: 1 to 60).
UTM_NORTH, UTM_SOUTH = 32600, 32700


def utm_epsg(number: int, north: bool) -> int:
    """The EPSG code of UTM zone `number` (1 to 60) of a hemisphere: 33, north -> 32633."""
    return (UTM_NORTH if north else UTM_SOUTH) + number


def utm_epsg_of_label(label: str) -> int:
    """The EPSG code of a UTM zone label: '33N' -> 32633, '19S' -> 32719."""
    return utm_epsg(int(label[:-1]), label.endswith("N"))


def utm_label(epsg: int) -> str | None:
    """The UTM zone label of an EPSG code: 32633 -> '33N', 32719 -> '19S'; None for a code
    of no UTM zone (WGS 84's 32601-32660 and 32701-32760)."""
    number = epsg % 100
    if epsg - number not in (UTM_NORTH, UTM_SOUTH) or not 1 <= number <= 60:
        return None
    return f"{number}{'N' if epsg - number == UTM_NORTH else 'S'}"


_WKB_TYPES = {
    1: "POINT",
    2: "LINESTRING",
    3: "POLYGON",
    4: "MULTIPOINT",
    5: "MULTILINESTRING",
    6: "MULTIPOLYGON",
    7: "GEOMETRYCOLLECTION",
}


def floats(column) -> np.ndarray:
    """A numeric Arrow column (coordinates, years) as float64, NULL as NaN."""
    return np.asarray(column.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False))


def points_from_wkb(blobs) -> tuple[np.ndarray, np.ndarray]:
    """x and y of WKB points (ISO or EWKB, either byte order, Z/M ignored); NaN for NULL and
    POINT EMPTY. Any other geometry is refused: a point is sampled, not an area."""
    x = np.full(len(blobs), np.nan)
    y = np.full(len(blobs), np.nan)
    for i, blob in enumerate(blobs):
        if blob is None:
            continue
        if len(blob) < 5 or blob[0] not in (0, 1):
            raise AefsqlError(f"geometry {bytes(blob[:16])!r}… is not WKB")
        order = "<" if blob[0] == 1 else ">"
        (code,) = struct.unpack_from(order + "I", blob, 1)
        has_srid = bool(code & 0x20000000)
        kind = (code & 0x0FFFFFFF) % 1000
        if kind != 1:
            name = _WKB_TYPES.get(kind, f"WKB type {code}")
            raise AefsqlError(f"geometry is a {name}: only points can be sampled")
        offset = 5 + (4 if has_srid else 0)
        if len(blob) < offset + 16:
            raise TiffFormatError("geometry: a WKB point shorter than its two coordinates")
        x[i], y[i] = struct.unpack_from(order + "dd", blob, offset)
    return x, y


def polygon_wkb(lon: np.ndarray, lat: np.ndarray) -> bytes:
    """A one-ring polygon as little-endian WKB."""
    ring = np.column_stack([lon, lat]).astype("<f8").tobytes()
    return struct.pack("<BIII", 1, 3, 1, len(lon)) + ring


def box_wkb(west: float, south: float, east: float, north: float) -> bytes:
    """A lon/lat box as a WKB polygon (the footprint of a catalog row without one)."""
    return polygon_wkb(
        np.array([west, east, east, west, west]), np.array([south, south, north, north, south])
    )


def boxes_wkb(west, south, east, north) -> np.ndarray:
    """`box_wkb` of many boxes at once: [n, 93] bytes, row i the WKB polygon of box i (a
    catalog's footprints, without a Python loop over its rows)."""
    west, south, east, north = (np.asarray(a, dtype="<f8") for a in (west, south, east, north))
    header = np.frombuffer(struct.pack("<BIII", 1, 3, 1, 5), dtype=np.uint8)
    ring = np.stack([west, south, east, south, east, north, west, north, west, south], axis=1)
    out = np.empty((west.size, header.size + ring.shape[1] * 8), dtype=np.uint8)
    out[:, : header.size] = header
    out[:, header.size :] = np.ascontiguousarray(ring, dtype="<f8").view(np.uint8)
    return out
