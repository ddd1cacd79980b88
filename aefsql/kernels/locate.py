"""Which tile holds each point: the catalog proposes, the raster decides.

Lon/lat boxes of neighbouring tiles overlap (a UTM square is not a lon/lat rectangle, and the
files of adjacent zones overhang their seam), so the catalog only yields candidates. A point
goes to the first candidate whose raster contains it, candidates of the point's own UTM zone
first. Deciding maps the point to its pixel in that raster: `locate_pixels` keeps the pixel,
so that a whole-table job reads it without projecting the point again (`points.sample_pixels`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..catalog.index import TileTable
from ..errors import AefsqlError
from ..geometry import geo
from ..headers.reader import HeaderSource, point_pixels
from ..options import year_list
from .grouping import group_indices


class Located(NamedTuple):
    """Where points are: the tile (path, None for none) and the point's pixel in it (row
    and column of the file's full-resolution grid; -1 where not known: no tile, or a tile
    whose header cannot be read, which sampling then reports)."""

    path: np.ndarray
    row: np.ndarray
    col: np.ndarray


def locate(
    tiles: TileTable, headers: HeaderSource | None, x, y, year, crs: int = geo.WGS84
) -> np.ndarray:
    """Path of the tile holding each point (see `locate_pixels`)."""
    return locate_pixels(tiles, headers, x, y, year, crs).path


def locate_pixels(
    tiles: TileTable, headers: HeaderSource | None, x, y, year, crs: int = geo.WGS84
) -> Located:
    """The tile holding each point (x/y in EPSG `crs`, default lon/lat) in `year`, None where
    no tile does, and the point's pixel in it (`Located`). The catalog is searched in
    lon/lat; the raster decides with the point as given, so a point in its tile's own CRS is
    never transformed. `headers` gives the tiles' headers (a `Headers`). Without headers, the
    catalog alone decides (the first candidate whose stated UTM footprint, else lon/lat box,
    holds the point): the likely tile, found without a read and the same on every run (Spark
    partitions rows by it; sampling then locates them exactly), and no pixel."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    lon, lat = geo.transform_points(crs, geo.WGS84, x, y)
    year = np.asarray(year, dtype=np.float64)  # NULL years arrive as NaN
    found = np.full(lon.size, None, dtype=object)
    found_row, found_col = np.full(lon.size, -1, np.int64), np.full(lon.size, -1, np.int64)
    usable = geo.valid_coordinates(x, y, crs) & geo.valid_lonlat(lon, lat) & np.isfinite(year)

    # Points of one 1-degree cell share candidates and, since zone borders and the equator
    # lie on whole degrees, their own UTM zone too.
    cell_lon = np.minimum(np.floor(np.where(usable, lon, 0)), 179).astype(np.int64)
    cell_lat = np.minimum(np.floor(np.where(usable, lat, 0)), 89).astype(np.int64)
    cell_key = (np.where(usable, year, 0).astype(np.int64) * 360 + cell_lon + 180) * 180 + (
        cell_lat + 90
    )
    plans = []
    for key, members in group_indices(cell_key, np.flatnonzero(usable)).items():
        rest, cy = divmod(key, 180)
        yr, cx = divmod(rest, 360)
        cx, cy = cx - 180, cy - 90
        candidates = tiles.candidates(yr, cx, cy)
        if candidates.size == 0:
            continue
        own_zone = geo.utm_zone(lon[members[:1]], lat[members[:1]])[0]
        candidates = sorted(candidates, key=lambda t: tiles.utm_zone[t] != own_zone)
        plans.append((members, candidates))

    if headers is None:
        for members, candidates in plans:
            for t in candidates:
                open_ = members[found[members] == None]  # noqa: E711 (elementwise)
                open_ = open_[tiles.box_holds(t, lon[open_], lat[open_])]
                if open_.size:
                    found[open_[tiles.footprint_holds(t, x[open_], y[open_], crs)]] = tiles.path[t]
        return Located(found, found_row, found_col)
    paths = sorted({tiles.path[t] for _, candidates in plans for t in candidates})
    found_headers, unreadable = _readable_headers(headers, paths)
    for members, candidates in plans:
        for t in candidates:
            path = tiles.path[t]
            open_ = members[found[members] == None]  # noqa: E711 (elementwise)
            open_ = open_[tiles.box_holds(t, lon[open_], lat[open_])]
            if open_.size == 0 or path in unreadable:
                continue
            try:
                rows, cols, inside = point_pixels(
                    path, found_headers[path], x[open_], y[open_], crs
                )
            except AefsqlError:  # points cannot be mapped into it (rotated, no EPSG code)
                unreadable.add(path)
                continue
            found[open_[inside]] = path
            found_row[open_[inside]], found_col[open_[inside]] = rows[inside], cols[inside]
        # A file whose header cannot be read or used may hold the points no usable file
        # does: give them to it, so that sampling reports its error for them (per row with
        # on_error := 'null'; the query fails naming it by default).
        for t in candidates:
            if tiles.path[t] in unreadable:
                open_ = members[found[members] == None]  # noqa: E711 (elementwise)
                found[open_[tiles.box_holds(t, lon[open_], lat[open_])]] = tiles.path[t]
    return Located(found, found_row, found_col)


def locate_each(tiles: TileTable, headers: HeaderSource, x, y, year, crs) -> Located:
    """`locate_pixels` of points each in its own EPSG code (`crs`, an array): one pass per
    distinct code (in practice, one). Years are checked first: a year is a whole number (NaN:
    NULL)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    codes, years = np.asarray(crs, dtype=np.int64), np.asarray(year, dtype=np.float64)
    distinct = np.unique(years[np.isfinite(years)])
    if distinct.size:
        year_list(distinct.tolist())  # the rule "a year is an integer", from its one home
    found = Located(
        np.full(x.size, None, dtype=object), np.full(x.size, -1, np.int64), np.full(x.size, -1)
    )
    for code in np.unique(codes):
        mine = codes == code
        part = locate_pixels(tiles, headers, x[mine], y[mine], years[mine], crs=int(code))
        for whole, piece in zip(found, part, strict=True):
            whole[mine] = piece
    return found


def _readable_headers(source: HeaderSource, paths: list[str]):
    """The headers of the files that can be read, and the set of those that cannot."""
    try:
        return source.headers_for(paths), set()
    except AefsqlError:
        pass
    headers, unreadable = {}, set()
    for path in paths:
        try:
            headers.update(source.headers_for([path]))
        except AefsqlError:
            unreadable.add(path)
    return headers, unreadable
