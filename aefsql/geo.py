"""Pure geometry: lon/lat validity, lon/lat -> projected CRS (pyproj), projected -> pixel."""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np
from pyproj import Transformer

from . import threads
from .errors import TiffFormatError
from .tiff import Affine

_local = threading.local()


def _transformer(source_epsg: int, target_epsg: int) -> Transformer:
    # pyproj transformers must not be shared between threads: one cache per thread.
    cache = getattr(_local, "transformers", None)
    if cache is None:
        cache = _local.transformers = lru_cache(maxsize=256)(_make_transformer)
    return cache(source_epsg, target_epsg)


def _make_transformer(source_epsg: int, target_epsg: int) -> Transformer:
    return Transformer.from_crs(source_epsg, target_epsg, always_xy=True)


def valid_lonlat(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """True where (lon, lat) is a finite WGS84 coordinate; NULLs arrive here as NaN."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180.0) & (np.abs(lat) <= 90.0)


def transform_points(
    source_epsg: int, target_epsg: int, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Transform coordinates (x=lon/easting first); points PROJ cannot map come back as inf/NaN."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if source_epsg == target_epsg:
        return x, y
    # PROJ segfaults when called from DuckDB's own worker threads (seen here with pyproj 3.7
    # and duckdb 2.0, intermittently), never from Python's threads: run it on these.
    return threads.pool("proj").submit(_transform, source_epsg, target_epsg, x, y).result()


def _transform(source_epsg: int, target_epsg: int, x: np.ndarray, y: np.ndarray):
    tx, ty = _transformer(source_epsg, target_epsg).transform(x, y, errcheck=False)
    return np.asarray(tx, dtype=np.float64), np.asarray(ty, dtype=np.float64)


def check_north_aligned(transform: Affine, source: str) -> None:
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
        out[i] = f"{number[i]}{'N' if lat[i] >= 0 else 'S'}" if ok[i] else None
    return out


def epsg_of_crs_label(label: str | None) -> int | None:
    """'EPSG:32633' -> 32633; None for anything else."""
    if not label or not isinstance(label, str):
        return None
    prefix, _, code = label.partition(":")
    if prefix.upper() != "EPSG" or not code.isdigit():
        return None
    return int(code)
