"""A Hilbert curve key of lon/lat points: rows sorted by it keep neighbours together, so a
reader filtering a Parquet file by place skips most of its row groups."""

from __future__ import annotations

import numpy as np

ORDER = 31  # bits a side: a cell of 360° / 2^31 is ~2 cm of longitude at the equator


def hilbert_keys(lon, lat, order: int = ORDER) -> np.ndarray:
    """uint64 position of each (lon, lat) along a Hilbert curve over the whole lon/lat range
    ([-180, 180] x [-90, 90], 2^order cells a side); NaN counts as (-180, -90), the first
    cell."""
    side = np.uint64(1) << np.uint64(order)
    lon, lat = (
        np.nan_to_num(np.asarray(lon, np.float64), nan=-180.0),
        np.nan_to_num(np.asarray(lat, np.float64), nan=-90.0),
    )
    x = np.clip((lon + 180.0) / 360.0 * float(side), 0, float(side) - 1).astype(np.uint64)
    y = np.clip((lat + 90.0) / 180.0 * float(side), 0, float(side) - 1).astype(np.uint64)
    key = np.zeros(x.shape, np.uint64)
    s = side >> np.uint64(1)
    one = np.uint64(1)
    while s > 0:  # the classic xy -> d walk (Wikipedia's xy2d), every point at once
        rx = ((x & s) > 0).astype(np.uint64)
        ry = ((y & s) > 0).astype(np.uint64)
        key += s * s * ((np.uint64(3) * rx) ^ ry)
        flip = ry == 0
        mirror = flip & (rx == one)
        x = np.where(mirror, (side - one) - x, x)
        y = np.where(mirror, (side - one) - y, y)
        x, y = np.where(flip, y, x), np.where(flip, x, y)
        s >>= one
    return key
