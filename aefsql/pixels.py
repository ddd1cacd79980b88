"""The pixels of an area: which tiles and rows hold them (chunks), and their values.

An area becomes chunks — (tile, year, row, first column, end column), at most CHUNK_PIXELS
pixels each — from headers alone; a chunk becomes pixel values through the point sampler,
which reads each block once however many pixels it serves. Where tiles of neighbouring UTM
zones overlap, a pixel is kept only in the tile `locate` gives its centre (the point's own
zone wins), so every location comes from exactly one tile: no double counting, no gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import geo
from .areas import Area, centroid, chunked, projected, row_spans, surface
from .catalog import TileTable
from .errors import AefsqlError
from .headers import check_georeferenced, point_pixels
from .locate import locate
from .sampling import Sampler, Samples, human_bytes

AEF_PIXEL_METRES = 10.0
# 10^8 pixels of 64 bands stream out (COPY … TO) in bounded memory; past this budget a
# typo in an area (a continent instead of a county) is refused before it starts.
DEFAULT_MAX_BYTES = 16 * 2**30


@dataclass(frozen=True)
class Chunks:
    """Runs of pixels, one row of one tile each: columns [col0, col1) of `row`."""

    path: np.ndarray  # object
    year: np.ndarray  # int64
    row: np.ndarray
    col0: np.ndarray
    col1: np.ndarray
    centroid: np.ndarray  # bool: the pixel under the centroid of an area holding no centre

    @property
    def pixels(self) -> int:
        return int((self.col1 - self.col0).sum())


def area_chunks(tiles: TileTable, sampler: Sampler, area: Area, years, level: int = 0) -> Chunks:
    """The chunks of every tile of `years` whose raster (at `level`: 0 full resolution, k
    the k-th overview) holds pixel centres of `area`.

    An area that holds no pixel centre at all (smaller than a pixel) gets the one pixel
    under its centroid, flagged, from the tile `locate` picks for that point. (Callers check
    the area's size first: `check_area_size`.)"""
    parts = []
    headers = sampler.header_reader
    lonlat = projected(area, geo.WGS84)
    for year in years:
        found = []
        for t in _candidates(tiles, lonlat, year):
            path = tiles.path[t]
            header = headers.headers_for([path], level)[path]
            check_georeferenced(path, header)
            spans = row_spans(
                projected(area, header.epsg), header.transform, header.width, header.height
            )
            chunks = chunked(spans)
            if len(chunks):
                found.append((path, chunks))
        if not found and not area.empty:
            x, y = centroid(area)
            path = locate(tiles, headers, [x], [y], [year], crs=area.epsg)[0]
            if path is not None:
                header = headers.headers_for([path], level)[path]
                rows, cols, _ = point_pixels(path, header, [x], [y], area.epsg)
                parts.append((path, year, np.array([[rows[0], cols[0], cols[0] + 1]]), True))
        parts.extend((path, year, chunks, False) for path, chunks in found)
    if not parts:
        empty = np.zeros(0, np.int64)
        return Chunks(np.zeros(0, object), empty, empty, empty, empty, np.zeros(0, bool))
    return Chunks(
        path=np.concatenate([np.full(len(c), p, dtype=object) for p, _, c, _ in parts]),
        year=np.concatenate([np.full(len(c), y, np.int64) for _, y, c, _ in parts]),
        row=np.concatenate([c[:, 0] for *_, c, _ in parts]),
        col0=np.concatenate([c[:, 1] for *_, c, _ in parts]),
        col1=np.concatenate([c[:, 2] for *_, c, _ in parts]),
        centroid=np.concatenate([np.full(len(c), f) for *_, c, f in parts]),
    )


def check_area_size(area: Area, years: int, bands: int, max_bytes: int, level: int = 0) -> None:
    """Refuse an area too large to be worth starting, from its size alone (AEF's 10 m pixels,
    in the UTM zone of its centre; a quarter as many at each overview level): no catalog or
    header is read for this."""
    pixels = 0.0
    for ring in projected(area, geo.WGS84).rings:  # each in its own zone (holes count too)
        part = Area((ring,), geo.WGS84)
        lon, lat = centroid(part)
        zone = int(np.clip(np.floor((lon + 180.0) / 6.0) + 1, 1, 60))
        metric = projected(part, (32600 if lat >= 0 else 32700) + zone)
        pixels += surface(metric) / (AEF_PIXEL_METRES**2) / 4**level
    needed = pixels * bands * max(years, 1)
    if needed > max_bytes:
        raise AefsqlError(
            f"the area holds about {pixels:,.0f} pixels: x {bands} bands x {years} year(s) "
            f"is {human_bytes(int(needed))}, over the {human_bytes(max_bytes)} budget "
            "(max_bytes :=); ask for fewer bands or years, a smaller area or a coarser "
            "level :="
        )


def _candidates(tiles: TileTable, lonlat: Area, year: int) -> list[int]:
    """Tiles of `year` whose lon/lat box meets the area's (each part's, for an area split
    at the antimeridian)."""
    found = set()
    for ring in lonlat.rings:
        west, south = ring.min(axis=0)
        east, north = ring.max(axis=0)
        of_year = tiles.year == year
        wraps = tiles.west > tiles.east  # a box crossing the antimeridian
        meets_lon = np.where(
            wraps,
            (east >= tiles.west) | (west <= tiles.east),
            (east >= tiles.west) & (west <= tiles.east),
        )
        meets = of_year & meets_lon & (north >= tiles.south) & (south <= tiles.north)
        found.update(np.flatnonzero(meets).tolist())
    return sorted(found)


@dataclass(frozen=True)
class Pixels:
    """Pixel values of chunks, with where each pixel is."""

    chunk: np.ndarray  # index of the chunk each pixel came from
    row: np.ndarray
    col: np.ndarray
    x: np.ndarray  # pixel centre, in the tile's CRS
    y: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    location: np.ndarray  # int64: the same for the same place in every year
    samples: Samples


def chunk_pixels(
    tiles: TileTable, sampler: Sampler, chunks: Chunks, bands, level: int = 0
) -> Pixels:
    """The pixels of `chunks` (rows and columns of the tiles' `level`) that belong to their
    tile (see the module's docstring), and their values of `bands` (indices into A00..A63).
    An overview pixel belongs to the tile `locate` gives its centre, as a full one does."""
    counts = chunks.col1 - chunks.col0
    chunk = np.repeat(np.arange(counts.size), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    col = np.repeat(chunks.col0, counts) + (np.arange(chunk.size) - starts)
    row = np.repeat(chunks.row, counts)
    path = np.repeat(chunks.path, counts)
    x, y = np.empty(chunk.size), np.empty(chunk.size)
    lon, lat = np.empty(chunk.size), np.empty(chunk.size)
    location = np.zeros(chunk.size, dtype=np.int64)
    keep = np.zeros(chunk.size, dtype=bool)
    epsg = np.zeros(chunk.size, dtype=np.int64)
    headers = sampler.header_reader.headers_for(list(dict.fromkeys(chunks.path)), level)
    for url in headers:
        mine = path == url
        header = headers[url]
        t = header.transform
        x[mine] = t.c + (col[mine] + 0.5) * t.a
        y[mine] = t.f + (row[mine] + 0.5) * t.e
        epsg[mine] = header.epsg
        lon[mine], lat[mine] = geo.transform_points(header.epsg, geo.WGS84, x[mine], y[mine])
        location[mine] = location_key(header.epsg, x[mine], y[mine], abs(t.a), abs(t.e))
        pixel_year = np.repeat(chunks.year, counts)
        for year in np.unique(pixel_year[mine]):
            these = np.flatnonzero(mine & (pixel_year == year))
            # Only a pixel that another tile's box also holds can belong elsewhere: ask
            # `locate` for those alone (none, inside a tile away from its edges).
            doubtful = these[_in_other_boxes(tiles, url, year, lon[these], lat[these])]
            keep[these] = True
            if doubtful.size:
                owner = locate(
                    tiles,
                    sampler.header_reader,
                    x[doubtful],
                    y[doubtful],
                    np.full(doubtful.size, year),
                    crs=int(header.epsg),
                )
                keep[doubtful] = owner == url
    keep |= np.repeat(chunks.centroid, counts)  # located already, through the centroid
    chosen = np.flatnonzero(keep)
    samples = sampler.sample(np.full(chosen.size, None), x[chosen], y[chosen], bands)
    for code in np.unique(epsg[chosen]):  # one pass per CRS (tiles of one area: one or two)
        mine = epsg[chosen] == code
        part = sampler.sample(
            np.where(mine, path[chosen], None),
            x[chosen],
            y[chosen],
            bands,
            crs=int(code),
            keep_blocks=False,
            level=level,
        )
        samples = samples.overlay(part, mine)
    return Pixels(
        chunk[chosen],
        row[chosen],
        col[chosen],
        x[chosen],
        y[chosen],
        lon[chosen],
        lat[chosen],
        location[chosen],
        samples,
    )


def _in_other_boxes(tiles: TileTable, url: str, year: int, lon, lat) -> np.ndarray:
    """True where (lon, lat) lies in the lon/lat box of a tile of `year` other than `url`."""
    if lon.size == 0:
        return np.zeros(0, dtype=bool)
    near = _candidates(
        tiles, Area((np.array([[lon.min(), lat.min()], [lon.max(), lat.max()]]),), geo.WGS84), year
    )
    found = np.zeros(lon.size, dtype=bool)
    for t in near:
        if tiles.path[t] != url:
            found |= tiles.box_holds(t, lon, lat)
    return found


def location_key(epsg: int, x, y, pixel_x: float, pixel_y: float) -> np.ndarray:
    """A pixel's place as one BIGINT, equal across years for the same pixel of the same grid:
    (epsg * 2^21 + floor(y / pixel)) * 2^21 + floor(x / pixel). UTM coordinates are
    positive and below 2^21 pixels of 10 m (eastings < 10^6 m, northings < 10^7 m)."""
    gx = np.floor(np.asarray(x) / pixel_x).astype(np.int64)
    gy = np.floor(np.asarray(y) / pixel_y).astype(np.int64)
    return (np.int64(epsg) * (1 << 21) + gy) * (1 << 21) + gx
