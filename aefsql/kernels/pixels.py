"""The pixels of an area: which tiles and rows hold them (chunks), and their values.

An area becomes chunks — (tile, year, row, first column, end column), at most CHUNK_PIXELS
pixels each, inside one block column, in block order — from headers alone; chunks become
pixel values through the block engine's run reads (`BlockEngine.read_layout`: each block fetched and
decoded once, its pixels copied band by band). Where tiles overlap (neighbouring UTM zones'
overhangs, lon/lat boxes), a chunk holds only the pixels its tile owns (aefsql/kernels/mosaic.py:
the tile `locate` gives the pixel's centre, own zone first), decided before anything is read,
so every location comes from exactly one tile — no double counting, no gap — and a block
only another tile owns is never fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from .. import threads
from ..aef import BAND_COUNT, dequantized_table
from ..catalog.index import TileTable
from ..errors import AefsqlError
from ..geometry import geo
from ..geometry.areas import (
    CHUNK_PIXELS,
    Area,
    centroid,
    chunked,
    clipped_to_box,
    projected_all,
    row_spans,
)
from ..headers.reader import check_georeferenced, point_pixels
from .budgets import STREAMED_BYTES, area_pixels, check_max_bytes, covered_pixels, refuse_over
from .engine import BlockEngine, nodata_of, run_layout
from .grouping import group_indices
from .locate import locate
from .mosaic import owned_runs

if TYPE_CHECKING:
    from ..session import Session

# Degrees around a tile's lon/lat box when an area is cut to it (`near_tile`): ~1 km, far
# more than a UTM edge bulges beyond its corners' box, so the cut never reaches a pixel.
TILE_MARGIN_DEGREES = 0.01


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


def area_chunks(session: Session, area: Area, years, level: int = 0) -> Chunks:
    """The chunks of the pixels of `area` each tile of `years` owns (at `level`: 0 full
    resolution, k the k-th overview; see aefsql/kernels/mosaic.py).

    An area none of whose pixel centres a tile owns (one smaller than a pixel) gets the one
    pixel under its centroid, flagged, from the tile `locate` picks for that point. (Callers check
    the area's size first: `check_area_size`.)"""
    return areas_chunks(session, [area], years, level)[0]


def areas_chunks(session: Session, areas: list[Area], years, level: int = 0):
    """`area_chunks` of many areas at once (their vertices projected in one PROJ call per
    CRS): all their chunks, area by area, and the index of the area of each chunk."""
    tiles, reader = session.catalog.tiles(), session.engine.headers
    in_lonlat = projected_all(areas, geo.WGS84)
    wanted = {}  # (area, year) -> candidate tiles
    for i, lonlat in enumerate(in_lonlat):
        for year in years:
            wanted[i, year] = candidate_tiles(tiles, lonlat, year)
    paths = sorted({tiles.path[t] for found in wanted.values() for t in found})
    headers = reader.headers_for(paths, level) if paths else {}
    for path, header in headers.items():
        check_georeferenced(path, header)
    in_crs = {}  # (area, tile) -> the area near the tile (`near_tile`), in the tile's CRS
    for code in {h.epsg for h in headers.values()}:
        needing = sorted(
            {
                (i, t)
                for (i, _), found in wanted.items()
                for t in found
                if headers[tiles.path[t]].epsg == code
            }
        )
        shapes = [near_tile(areas[i], tiles, t) for i, t in needing]
        for key, moved in zip(needing, projected_all(shapes, code), strict=True):
            in_crs[key] = moved
    owned = _owned_by_tile(tiles, reader, headers, wanted, in_crs)
    parts = []  # (area, path, year, chunks, centroid)
    for (i, year), found in wanted.items():
        before = len(parts)
        for t in found:
            path = tiles.path[t]
            chunks = owned[i, year, t]
            if len(chunks):
                parts.append((i, path, year, chunks, False))
        if len(parts) == before:
            one = centroid_chunk(tiles, reader, areas[i], year, level)
            if one is not None:
                parts.insert(before, (i, one[0], year, one[1], True))
    if not parts:
        empty = np.zeros(0, np.int64)
        none = Chunks(np.zeros(0, object), empty, empty, empty, empty, np.zeros(0, bool))
        return none, empty
    parts.sort(key=lambda part: part[0])  # area by area (stable: years, tiles in order)
    chunks = Chunks(
        path=np.concatenate([np.full(len(c), p, dtype=object) for _, p, _, c, _ in parts]),
        year=np.concatenate([np.full(len(c), y, np.int64) for _, _, y, c, _ in parts]),
        row=np.concatenate([c[:, 0] for *_, c, _ in parts]),
        col0=np.concatenate([c[:, 1] for *_, c, _ in parts]),
        col1=np.concatenate([c[:, 2] for *_, c, _ in parts]),
        centroid=np.concatenate([np.full(len(c), f) for *_, c, f in parts]),
    )
    return chunks, np.concatenate([np.full(len(c), i, np.int64) for i, _, _, c, _ in parts])


def _owned_by_tile(tiles: TileTable, reader, headers, wanted, in_crs) -> dict:
    """`owned_chunks` of each (area, year, tile) of `wanted` ({(area, year): tiles}), the
    areas' chunks in a tile tested for ownership together: `owned_runs` finds a tile's
    neighbours once a call, which for many small areas costs more than their chunks."""
    laid: dict = {}  # (tile, year) -> [(area, its chunks in the tile)]
    for (i, year), found in wanted.items():
        for t in found:
            header = headers[tiles.path[t]]
            spans = row_spans(in_crs[i, t], header.transform, header.width, header.height)
            laid.setdefault((t, year), []).append((i, block_chunks(spans, header)))
    owned = {}
    for (t, year), pieces in laid.items():
        path = tiles.path[t]
        every = np.concatenate([chunks for _, chunks in pieces])
        run, *kept = owned_runs(tiles, reader, path, headers[path], year, *every.T)
        kept = np.column_stack(kept) if len(every) else every
        # The parts come in the runs' order: each area's are consecutive.
        cuts = np.searchsorted(run, np.cumsum([0] + [len(c) for _, c in pieces]))
        for (i, _), first, stop in zip(pieces, cuts[:-1], cuts[1:], strict=True):
            owned[i, year, t] = kept[first:stop]
    return owned


def owned_chunks(tiles: TileTable, reader, path, header, year: int, shape: Area) -> np.ndarray:
    """(row, col0, col1) chunks, in block order, of the pixels of `shape` (the area near the
    tile, in its CRS: `near_tile`) that the tile `path` owns in `year`."""
    spans = row_spans(shape, header.transform, header.width, header.height)
    chunks = block_chunks(spans, header)
    # Only the pixels this tile owns: an area whose centres all belong to other
    # tiles (a sub-pixel square in a seam's overlap) is not "found" here.
    _, *owned = owned_runs(tiles, reader, path, header, year, *chunks.T)
    return np.column_stack(owned) if len(chunks) else chunks


def centroid_chunk(tiles: TileTable, reader, area: Area, year: int, level: int):
    """(path, [[row, col, col + 1]]) of the pixel under the area's centroid in the tile
    `locate` picks for it, or None (an empty area, or a centroid in no tile): the stand-in
    for an area holding no pixel centre."""
    if area.empty:
        return None
    x, y = centroid(area)
    path = locate(tiles, reader, [x], [y], [year], crs=area.epsg)[0]
    if path is None:
        return None
    header = reader.headers_for([path], level)[path]
    rows, cols, _ = point_pixels(path, header, [x], [y], area.epsg)
    return path, np.array([[rows[0], cols[0], cols[0] + 1]])


# A planning unit (`area_units`) holds tiles of at most this many chunks in all (~300 bytes
# a chunk as Arrow), or one tile: the plan aef_pixels holds at once, whatever the area.
UNIT_CHUNKS = 1 << 17


@dataclass(frozen=True)
class Unit:
    """Part of an area's plan: the chunks of `tiles` (indices into the TileTable) in `year`
    or, when `stand_in`, the centroid's pixel should none of them own a pixel centre."""

    year: int
    tiles: list[int]
    stand_in: bool = False


def area_units(session: Session, area: Area, years, level: int = 0, most=None) -> list[Unit]:
    """The area's plan as units: tiles of a year whose chunks number at most `most` (None:
    UNIT_CHUNKS) in all, or one tile that alone has more, from the catalog and headers
    only; then per year a stand-in unit (see `unit_chunks`). The units' chunks, one unit
    after another, are `area_chunks`' own, in its order."""
    tiles, reader = session.catalog.tiles(), session.engine.headers
    lonlat = projected_all([area], geo.WGS84)[0]
    wanted = {year: candidate_tiles(tiles, lonlat, year) for year in years}
    paths = sorted({tiles.path[t] for found in wanted.values() for t in found})
    headers = reader.headers_for(paths, level) if paths else {}
    for path, header in headers.items():
        check_georeferenced(path, header)
    most = UNIT_CHUNKS if most is None else most
    units = []
    for year, found in wanted.items():
        group, size = [], 0
        for t in found:
            h = headers[tiles.path[t]]
            # At most a chunk per row, block column and CHUNK_PIXELS of a block's width.
            bound = h.height * h.blocks_across * -(-h.block_width // CHUNK_PIXELS)
            if group and size + bound > most:
                units.append(Unit(year, group))
                group, size = [], 0
            group.append(t)
            size += bound
        if group:
            units.append(Unit(year, group))
        if not area.empty:
            units.append(Unit(year, found, stand_in=True))
    return units


def unit_chunks(session: Session, area: Area, unit: Unit, level: int = 0):
    """The chunks of one unit of `area_units`: those its tiles own; for a stand-in unit, the
    pixel under the area's centroid when none of its tiles owns a pixel centre of the area
    (looked for tile by tile, so at most one tile's chunks are held), else none."""
    tiles, reader = session.catalog.tiles(), session.engine.headers
    if unit.stand_in:
        for t in unit.tiles:
            if unit_chunks(session, area, Unit(unit.year, [t]), level).row.size:
                return _chunks_of([], unit.year)
        one = centroid_chunk(tiles, reader, area, unit.year, level)
        return _chunks_of([] if one is None else [one], unit.year, stand_in=True)
    paths = [tiles.path[t] for t in unit.tiles]
    headers = reader.headers_for(sorted(set(paths)), level) if paths else {}
    in_crs = {}
    for code in {h.epsg for h in headers.values()}:
        needing = [t for t, p in zip(unit.tiles, paths, strict=True) if headers[p].epsg == code]
        shapes = [near_tile(area, tiles, t) for t in needing]
        in_crs.update(zip(needing, projected_all(shapes, code), strict=True))
    parts = []
    for t, path in zip(unit.tiles, paths, strict=True):
        chunks = owned_chunks(tiles, reader, path, headers[path], unit.year, in_crs[t])
        if len(chunks):
            parts.append((path, chunks))
    return _chunks_of(parts, unit.year)


def _chunks_of(parts, year: int, stand_in: bool = False) -> Chunks:
    """Chunks of [(path, (row, col0, col1) rows)], all of `year`."""
    if not parts:
        empty = np.zeros(0, np.int64)
        return Chunks(np.zeros(0, object), empty, empty, empty, empty, np.zeros(0, bool))
    n = sum(len(c) for _, c in parts)
    return Chunks(
        path=np.concatenate([np.full(len(c), p, dtype=object) for p, c in parts]),
        year=np.full(n, year, np.int64),
        row=np.concatenate([c[:, 0] for _, c in parts]),
        col0=np.concatenate([c[:, 1] for _, c in parts]),
        col1=np.concatenate([c[:, 2] for _, c in parts]),
        centroid=np.full(n, stand_in),
    )


def near_tile(area: Area, tiles: TileTable, t: int) -> Area:
    """A lon/lat area cut to tile t's lon/lat box (and TILE_MARGIN_DEGREES around it), which
    holds every pixel centre of the tile: projected whole, an area much wider than a UTM
    zone folds over itself there (a whole-world box encloses ~0 m² in any one zone), while
    each cut piece projects as it should. An area in a projected CRS is left as it is."""
    if area.epsg != geo.WGS84 or area.empty:
        return area
    west, south, east, north = tiles.west[t], tiles.south[t], tiles.east[t], tiles.north[t]
    m = TILE_MARGIN_DEGREES
    lon0, lat0, lon1, lat1 = area.bounds
    inside = west <= east and west - m <= lon0 and lon1 <= east + m
    if inside and south - m <= lat0 and lat1 <= north + m and _closed_rings(area):
        return area  # the cut would give its rings back (each started a few vertices on)
    boxes = (
        [(west - m, south - m, east + m, north + m)]
        if west <= east
        else [(west - m, south - m, 180.0, north + m), (-180.0, south - m, east + m, north + m)]
    )
    cut = [clipped_to_box(area, *box) for box in boxes]
    rings = tuple(ring for piece in cut for ring in piece.rings)
    part = area.part and tuple(k for piece in cut for k in piece.part)
    return Area(rings, area.epsg, part)


def _closed_rings(area: Area) -> bool:
    return all(len(r) >= 4 and np.array_equal(r[0], r[-1]) for r in area.rings)


def block_chunks(spans: np.ndarray, header, size: int = CHUNK_PIXELS) -> np.ndarray:
    """Spans of a raster as chunks of at most `size` pixels inside one block column each,
    ordered by block, then row and column: the order `chunk_pixels` returns pixels in, and
    DuckDB's batches of consecutive chunks cover whole blocks, each decoded once."""
    chunks = chunked(spans, size, block_width=header.block_width)
    block = (chunks[:, 0] // header.block_height) * header.blocks_across + (
        chunks[:, 1] // header.block_width
    )
    return chunks[np.lexsort((chunks[:, 1], chunks[:, 0], block))]


def chunk_blocks(session: Session, chunks: Chunks, level: int = 0) -> np.ndarray:
    """The block (block row x blocks across + block column) of each chunk in its file's
    `level`; a chunk of `block_chunks` lies in one."""
    block = np.zeros(chunks.row.size, np.int64)
    for path, members in group_indices(chunks.path, np.arange(chunks.row.size)).items():
        header = session.engine.headers.headers_for([path], level)[path]
        block[members] = (chunks.row[members] // header.block_height) * header.blocks_across + (
            chunks.col0[members] // header.block_width
        )
    return block


def check_area_size(
    area: Area, years, bands: int, max_bytes: int | None, level: int = 0, tiles=None, lonlat=None
) -> None:
    """Refuse an area whose pixels x `bands` over `years` exceed `max_bytes` (None: the
    streamed budget, budgets.STREAMED_BYTES), before any header or block is read. Counted
    on the ellipsoid from the area's own vertices: first its whole size (no catalog read
    when that fits), then what it covers of the catalog's tiles (`tiles`: a callable that
    gives the TileTable), so a whole-world box over a small catalog passes and one over a
    large catalog is refused with its true size (see aefsql/kernels/budgets.py). `lonlat`:
    `projected_vertices(area)`, when the caller has it."""
    check_max_bytes(max_bytes)
    limit = STREAMED_BYTES if max_bytes is None else int(max_bytes)
    lonlat = projected_vertices(area) if lonlat is None else lonlat
    years = list(years)
    whole = area_pixels(lonlat, level) * max(len(years), 1)
    if whole * bands <= limit:
        return
    if tiles is None:
        subject = f"the area holds about {whole:,.0f} pixels over {len(years)} year(s)"
        refuse_over(subject, whole, bands, None, limit, _AREA_ADVICE)
    covered = covered_pixels(tiles(), lonlat, years, level, stop_above=limit / max(bands, 1))
    subject = (
        f"the area covers about {covered:,.0f} pixels of the catalog's tiles over "
        f"{len(years)} year(s)"
    )
    refuse_over(subject, covered, bands, None, limit, _AREA_ADVICE)


_AREA_ADVICE = "fewer bands or years, a smaller area or a coarser level :="


def projected_vertices(area: Area) -> Area:
    """The area's vertices in lon/lat, not densified (budgets measure lon/lat edges as
    straight lines: see budgets.ring_area)."""
    if area.epsg == geo.WGS84 or area.empty:
        return area
    points = np.concatenate(area.rings)
    lon, lat = geo.transform_points(area.epsg, geo.WGS84, points[:, 0], points[:, 1])
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise AefsqlError(
            f"area: some vertices cannot be projected from EPSG:{area.epsg} to lon/lat "
            "(is the area in the CRS crs := names?)"
        )
    moved = np.split(np.column_stack([lon, lat]), np.cumsum([len(r) for r in area.rings])[:-1])
    return Area(tuple(moved), geo.WGS84, area.part)


# An area box over at most this many 1-degree cells finds its tiles through the catalog's
# cell index (`TileTable.candidates`); a larger one tests every tile of the year.
CELL_LOOKUPS = 64


def candidate_tiles(tiles: TileTable, lonlat: Area, year: int) -> list[int]:
    """Tiles of `year` whose lon/lat box meets the area's (each part's, for an area split
    at the antimeridian). A small area looks only at the tiles its cells list: testing all
    of a catalog's ~34k tiles a year took ~1 ms an area, an hour for 10^6 fields."""
    found = set()
    for ring in lonlat.rings:
        west, south = ring.min(axis=0)
        east, north = ring.max(axis=0)
        # A tile's box meeting the area's shares a point with it, in a cell of both boxes.
        columns = range(int(np.floor(west)), int(np.floor(east)) + 1)
        rows = range(int(np.floor(south)), int(np.floor(north)) + 1)
        if len(columns) * len(rows) <= CELL_LOOKUPS and -180 <= west and east <= 180:
            near = np.unique(
                np.concatenate(
                    [tiles.candidates(year, x, y) for x in columns for y in rows]
                    or [np.zeros(0, np.int64)]
                )
            )
        else:
            near = np.flatnonzero(tiles.year == year)
        tile_west, tile_east = tiles.west[near], tiles.east[near]
        wraps = tile_west > tile_east  # a box crossing the antimeridian
        meets_lon = np.where(
            wraps,
            (east >= tile_west) | (west <= tile_east),
            (east >= tile_west) & (west <= tile_east),
        )
        meets = meets_lon & (north >= tiles.south[near]) & (south <= tiles.north[near])
        found.update(near[meets].tolist())
    return sorted(found)


# Pixels de-quantized a task by `Pixels.vectors`: 1 MiB of int8 in, 4 MiB of float32 out.
VECTOR_PIECE = 1 << 14


@dataclass
class Pixels:
    """Pixel values of chunks, with where each pixel is."""

    chunk: np.ndarray  # index of the chunk each pixel came from, ascending
    row: np.ndarray
    col: np.ndarray
    x: np.ndarray  # pixel centre, in the tile's CRS
    y: np.ndarray
    lon: np.ndarray | None  # None: not asked for (`coordinates`)
    lat: np.ndarray | None
    location: np.ndarray  # int64: the same for the same place in every year
    values: np.ndarray  # int8 (bands, pixels): band-major, the files' own values
    nodata: np.ndarray  # int16 (pixels,): the nodata value of the pixel's file (`nodata_of`)
    band_count: np.ndarray  # int16 (pixels,): how many bands the pixel's file has
    bands: list[int]  # the band (index into A00..A63) of each row of `values`
    # What `chunk_pixels`' `derive` computed from the blocks in place of bands, per pixel.
    derived: np.ndarray | None = None

    def band_null(self, k: int) -> np.ndarray | None:
        """bool (pixels,): where band row k is NULL (nodata, or a band the file lacks);
        None when nowhere. One int8 comparison when every file has the same nodata."""
        if self.common_nodata is not None:
            null = self.values[k] == np.int8(self.common_nodata)
        else:
            null = self.values[k].astype(np.int16) == self.nodata
        if self.fewest_bands <= self.bands[k]:
            null |= self.band_count <= self.bands[k]
        return null if null.any() else None

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 (pixels, 64): each pixel's de-quantized embedding, pixel by pixel (as a
        fixed-size list wants it), and bool (pixels,): where it is NULL — any band nodata or
        missing, as aef_vector says (AEF masks all 64 bands together, and DuckDB's array
        functions refuse NULL elements). Needs all 64 bands, in order."""
        if self.bands != list(range(BAND_COUNT)):
            raise AefsqlError("an embedding vector needs all 64 bands, in order")
        n = self.values.shape[1]
        null = np.zeros(n, bool)
        for k in range(BAND_COUNT):
            band = self.band_null(k)
            if band is not None:
                null |= band
        # One lookup in the 256-entry table (aef.dequantize's) per value, on the values laid
        # out pixel-major first (transposing int8 costs a quarter of transposing float32),
        # piece by piece in the thread pool: numpy lets go of the GIL for both, and a piece's
        # int8 stays in cache between the two.
        table = dequantized_table().astype(np.float32)
        vectors = np.empty((n, BAND_COUNT), np.float32)

        def piece(start: int) -> None:
            part = np.ascontiguousarray(self.values[:, start : start + VECTOR_PIECE].T)
            vectors[start : start + VECTOR_PIECE] = table[part.view(np.uint8)]

        list(threads.pool("vectors").map(piece, range(0, n, VECTOR_PIECE)))
        return vectors, null

    @cached_property
    def common_nodata(self) -> int | None:
        """The nodata value of every pixel's file, when they all have the same one."""
        if self.nodata.size == 0:
            return None
        first = int(self.nodata[0])
        return first if (self.nodata == first).all() else None

    @cached_property
    def fewest_bands(self) -> int:
        return int(self.band_count.min()) if self.band_count.size else 0


def chunk_pixels(
    session: Session,
    chunks: Chunks,
    bands,
    level: int = 0,
    coordinates: bool = True,
    derive=None,
) -> Pixels:
    """The pixels of `chunks` (rows and columns of the tiles' `level`) and their values of
    `bands` (indices into A00..A63). The chunks hold only pixels their tile owns (from
    `area_chunks`, or cut by `mosaic.owned_runs`): nothing is located here.

    Pixels come in block order (see `RunLayout`), which is the chunks' own order when they
    come from `area_chunks`. Without `coordinates`, lon and lat are None (no pixel is
    projected to lon/lat: PROJ costs more than the read; SQL asks for them apart, see
    `lonlat`).

    With `derive` (and no `bands`), nothing is read into `values`: `derive(engine, url,
    header, layout)` gives one number per pixel of each file's `RunLayout`, computed from
    the blocks as they are decoded (similarity.Cosines), in `derived`."""
    if derive is not None and len(bands):
        raise AefsqlError("chunk_pixels: derive reads no bands")
    parts = []
    for url, of_url in group_indices(chunks.path, np.arange(chunks.row.size)).items():
        for runs in group_indices(chunks.year, of_url).values():
            parts.append(
                _file_pixels(session.engine, chunks, url, runs, bands, level, coordinates, derive)
            )
    if not parts:
        empty = np.zeros(0, np.int64)
        return Pixels(
            *([empty] * 3),
            *([np.zeros(0)] * 2),
            *([np.zeros(0) if coordinates else None] * 2),
            empty,
            np.zeros((len(bands), 0), np.int8),
            np.zeros(0, np.int16),
            np.zeros(0, np.int16),
            list(bands),
            None if derive is None else np.zeros(0, np.float32),
        )
    chunk = np.concatenate([p[0] for p in parts])
    order = None if np.all(chunk[1:] >= chunk[:-1]) else np.argsort(chunk, kind="stable")

    def joined(i, axis=0):
        if parts[0][i] is None:
            return None
        whole = parts[0][i] if len(parts) == 1 else np.concatenate([p[i] for p in parts], axis)
        if order is None:
            return whole
        return whole[:, order] if axis else whole[order]

    return Pixels(
        *(joined(i) for i in range(8)),
        joined(8, axis=1),
        joined(9),
        joined(10),
        list(bands),
        joined(11),
    )


def _file_pixels(
    engine: BlockEngine, chunks: Chunks, url, runs, bands, level, coordinates, derive=None
):
    """chunk, row, col, x, y, lon, lat, location, values, nodata, band_count, derived of the
    pixels of one file's chunks (lon and lat None without `coordinates`, derived without
    `derive`)."""
    reader = engine.headers

    def read():
        header = reader.headers_for([url], level)[url]
        check_georeferenced(url, header)
        layout = run_layout(url, header, chunks.row[runs], chunks.col0[runs], chunks.col1[runs])
        t = header.transform
        x = t.c + (layout.col + 0.5) * t.a
        y = t.f + (layout.row + 0.5) * t.e
        # PROJ (which lets go of the GIL) works while the blocks are fetched and decoded.
        lonlat = geo.transform_later(header.epsg, geo.WGS84, x, y) if coordinates else None
        if derive is None:
            values, derived = engine.read_layout(url, header, layout, bands), None
        else:
            values = np.zeros((0, layout.pixels), np.int8)
            derived = derive(engine, url, header, layout)
        return header, layout, x, y, lonlat.result() if lonlat else (None, None), values, derived

    header, layout, x, y, (lon, lat), values, derived = reader.restarting_on_change(read)
    chunk = runs[layout.run]
    epsg = int(header.epsg)
    t = header.transform
    location = location_key(epsg, x, y, abs(t.a), abs(t.e))
    n = x.size
    nodata = nodata_of(url, header)
    found = [
        chunk,
        layout.row,
        layout.col,
        x,
        y,
        lon,
        lat,
        location,
        values,
        np.full(n, nodata, np.int16),
        np.full(n, header.samples_per_pixel, np.int16),
        derived,
    ]
    return found


def location_key(epsg: int, x, y, pixel_x: float, pixel_y: float) -> np.ndarray:
    """A pixel's place as one BIGINT, equal across years for the same pixel of the same grid:
    (epsg * 2^21 + floor(y / pixel)) * 2^21 + floor(x / pixel). UTM coordinates are
    positive and below 2^21 pixels of 10 m (eastings < 10^6 m, northings < 10^7 m)."""
    gx = np.floor(np.asarray(x) / pixel_x).astype(np.int64)
    gy = np.floor(np.asarray(y) / pixel_y).astype(np.int64)
    return (np.int64(epsg) * (1 << 21) + gy) * (1 << 21) + gx
