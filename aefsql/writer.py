"""aefsql's own writer of AEF-format Cloud-Optimized GeoTIFFs and index catalogs.

It writes what the published files are: int8 x 64 bands, planar-separate, tiled, ZSTD (or
DEFLATE), nodata -128, georeferenced by a ModelTransformationTag (south-up by default), with
overviews as further IFDs; all IFDs first and block data after, so a reader's first range
holds the header. Used by `aefsql demo` and by anyone who wants a local AEF-format collection.
The same writer writes maps (`encode_map_cog`: float32 with NaN, int8 with -128, or RGBA
uint8), their block data in the COG order GDAL and validators expect: the smallest
overview's first, full resolution last.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from pyproj import Transformer

from .aef import NODATA, band_name
from .catalog.schema import PUBLISHED_SCHEMA
from .geometry.geo import WGS84, polygon_wkb, utm_label

COMPRESSION_CODES = {"zstd": 50000, "deflate": 8}

# TIFF field types.
ASCII, SHORT, LONG, DOUBLE, LONG8 = 2, 3, 4, 12, 16
TYPE_FORMATS = {ASCII: "s", SHORT: "H", LONG: "I", DOUBLE: "d", LONG8: "Q"}
TYPE_SIZES = {ASCII: 1, SHORT: 2, LONG: 4, DOUBLE: 8, LONG8: 8}


@dataclass(frozen=True)
class _Image:
    """One IFD's worth: its tags (with placeholder block offsets) and compressed blocks."""

    tags: dict[int, tuple[int, list]]  # tag -> (field type, values)
    blocks: list[bytes]


def encode_aef_cog(data: np.ndarray, **options) -> bytes:
    """The bytes of an AEF-layout COG (`aef_cog_parts`)."""
    return b"".join(aef_cog_parts(data, **options))


def write_aef_cog(path, data: np.ndarray, **options) -> None:
    """Write an AEF-layout COG (`aef_cog_parts`) to `path`."""
    _write_parts(path, aef_cog_parts(data, **options))


def aef_cog_parts(
    data: np.ndarray,
    *,
    epsg: int,
    transform: tuple[float, float, float, float, float, float],
    block_size: int = 256,
    compression: str = "zstd",
    predictor: int = 1,
    bigtiff: bool | None = None,
    overview_levels: tuple[int, ...] = (2, 4),
    band_names: list[str] | None = None,
) -> list[bytes]:
    """The bytes, in parts, of an AEF-layout COG holding `data` (int8, shaped bands x rows x cols).

    `transform` is GDAL-ordered (a, b, c, d, e, f): x = c + a*col + b*row, y = f + d*col + e*row;
    e > 0 makes the file south-up (row 0 at the southern edge), like the published files.
    """
    data = np.asarray(data)
    if data.dtype != np.int8 or data.ndim != 3:
        raise ValueError(
            f"data must be int8 shaped (bands, rows, cols), not {data.dtype} {data.shape}"
        )
    return _encode(
        data,
        epsg=epsg,
        transform=transform,
        nodata=NODATA,
        alpha=False,
        block_size=block_size,
        compression=compression,
        predictor=predictor,
        bigtiff=bigtiff,
        overview_levels=overview_levels,
        band_names=band_names or [band_name(i) for i in range(data.shape[0])],
        overviews_first=False,
    )


# A map's sample types: (TIFF SampleFormat, bits).
MAP_TYPES = {np.dtype(np.int8): (2, 8), np.dtype(np.uint8): (1, 8), np.dtype(np.float32): (3, 32)}
# A classic TIFF's offsets are 32 bits: a file larger than this is written as BigTIFF.
CLASSIC_HEADER, CLASSIC_LAST_OFFSET = 8, (1 << 32) - 1


def encode_map_cog(data: np.ndarray, **options) -> bytes:
    """The bytes of a map as a COG (`map_cog_parts`)."""
    return b"".join(map_cog_parts(data, **options))


def write_map_cog(path, data: np.ndarray, **options) -> None:
    """Write a map as a COG (`map_cog_parts`) to `path`."""
    _write_parts(path, map_cog_parts(data, **options))


def map_cog_parts(
    data: np.ndarray,
    *,
    epsg: int,
    transform: tuple[float, float, float, float, float, float],
    nodata: float | None,
    alpha: bool = False,
    band_names: list[str] | None = None,
    block_size: int = 256,
    compression: str = "deflate",
) -> list[bytes]:
    """The bytes, in parts, of a map as a COG: `data` float32, int8 or uint8 (bands, rows,
    cols), with `nodata` (NaN for float32; None when `alpha`: then data is RGBA uint8, its
    4th band the alpha). Overviews (2, 4, … until the smallest fits one block) average each
    cell's valid pixels; block data smallest overview first, as a COG has it; BigTIFF when
    a classic TIFF cannot hold it."""
    data = np.asarray(data)
    if data.dtype not in MAP_TYPES or data.ndim != 3:
        raise ValueError(
            f"a map is float32, int8 or uint8 shaped (bands, rows, cols), not {data.dtype} "
            f"{data.shape}"
        )
    if alpha and (data.dtype != np.uint8 or data.shape[0] != 4 or nodata is not None):
        raise ValueError("an alpha map is RGBA uint8 (4 bands) with no nodata value")
    _, rows, cols = data.shape
    levels, factor = [], 2
    while max(-(-rows // (factor // 2)), -(-cols // (factor // 2))) > block_size:
        levels.append(factor)
        factor *= 2
    return _encode(
        data,
        epsg=epsg,
        transform=transform,
        nodata=nodata,
        alpha=alpha,
        block_size=block_size,
        compression=compression,
        predictor=1,
        bigtiff=None,
        overview_levels=tuple(levels),
        band_names=band_names,
        overviews_first=True,
    )


def _encode(
    data,
    *,
    epsg,
    transform,
    nodata,
    alpha,
    block_size,
    compression,
    predictor,
    bigtiff,
    overview_levels,
    band_names,
    overviews_first,
) -> list[bytes]:
    if compression not in COMPRESSION_CODES:
        raise ValueError(
            f"compression must be one of {sorted(COMPRESSION_CODES)}, not {compression!r}"
        )
    if predictor not in (1, 2):
        raise ValueError(f"predictor must be 1 or 2, not {predictor}")
    if block_size <= 0 or block_size % 16:
        raise ValueError(f"block_size must be a positive multiple of 16 (TIFF), not {block_size}")
    bands = data.shape[0]
    if band_names is not None and len(band_names) != bands:
        raise ValueError(f"{len(band_names)} band names for {bands} bands")
    fill = _fill_value(data.dtype, nodata)
    valid = _validity(data, nodata, alpha)
    levels = [data, *_overviews(data, valid, overview_levels, fill)]
    blocks = [
        [_compress(block, compression, predictor) for block in _cut_blocks(image, block_size, fill)]
        for image in levels
    ]

    def images(bigtiff: bool) -> list[_Image]:
        found = []
        for level, image in enumerate(levels):
            tags = _image_tags(
                image, block_size, compression, predictor, bigtiff, level > 0, nodata, alpha
            )
            if level == 0:
                a, b, c, d, e, f = transform
                tags[34264] = (DOUBLE, [a, b, 0.0, c, d, e, 0.0, f, 0, 0, 0, 0, 0, 0, 0, 1.0])
                tags[34735] = (SHORT, [1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, epsg])
                if band_names:
                    tags[42112] = (ASCII, [_gdal_metadata(band_names)])
            found.append(_Image(tags, blocks[level]))
        return found

    if bigtiff is None:  # BigTIFF only when a classic TIFF's 32-bit offsets cannot hold it
        classic = images(False)
        size = sum(_ifd_size(i, False) + sum(len(b) for b in i.blocks) for i in classic)
        bigtiff = CLASSIC_HEADER + size > CLASSIC_LAST_OFFSET
    return _serialize(images(bigtiff), bigtiff, overviews_first)


def _fill_value(dtype: np.dtype, nodata):
    """What pads edge blocks and fills an overview cell with no valid pixel."""
    if nodata is None:
        return 0  # alpha 0: transparent
    return np.float32(np.nan) if dtype.kind == "f" else nodata


def _validity(data: np.ndarray, nodata, alpha: bool) -> np.ndarray:
    """bool, broadcastable to data: where a value counts in an overview's mean."""
    if alpha:
        return data[3:4] > 0  # a pixel is there in every band or none
    if data.dtype.kind == "f":
        return ~np.isnan(data)
    return data != nodata


def _image_tags(
    image, block_size, compression, predictor, bigtiff, overview, nodata=NODATA, alpha=False
) -> dict:
    bands, rows, cols = image.shape
    sample_format, bits = MAP_TYPES[image.dtype]
    blocks = bands * -(-rows // block_size) * -(-cols // block_size)
    offset_type = LONG8 if bigtiff else LONG
    tags = {
        254: (LONG, [1 if overview else 0]),
        256: (LONG, [cols]),
        257: (LONG, [rows]),
        258: (SHORT, [bits] * bands),
        259: (SHORT, [COMPRESSION_CODES[compression]]),
        262: (SHORT, [2 if alpha else 1]),  # RGB, or min-is-black
        277: (SHORT, [bands]),
        284: (SHORT, [2]),  # planar-separate
        317: (SHORT, [predictor]),
        322: (SHORT, [block_size]),
        323: (SHORT, [block_size]),
        324: (offset_type, [0] * blocks),  # filled in by _serialize
        325: (offset_type, [0] * blocks),
        339: (SHORT, [sample_format] * bands),
    }
    if nodata is not None:
        tags[42113] = (ASCII, ["nan" if np.isnan(nodata) else str(nodata)])
    if alpha:
        tags[338] = (SHORT, [2])  # the 4th band: unassociated alpha
    elif bands > 1:
        tags[338] = (SHORT, [0] * (bands - 1))  # unspecified extra samples, as GDAL writes
    return tags


def _gdal_metadata(names: list[str]) -> str:
    items = "".join(
        f'<Item name="DESCRIPTION" sample="{i}" role="description">{name}</Item>'
        for i, name in enumerate(names)
    )
    return f"<GDALMetadata>{items}</GDALMetadata>"


def _cut_blocks(image: np.ndarray, block_size: int, fill=NODATA):
    """Blocks in TIFF order: band by band, then row-major; edge blocks padded with `fill`
    (only they are copied)."""
    bands, rows, cols = image.shape
    for band in range(bands):
        for r in range(0, rows, block_size):
            for c in range(0, cols, block_size):
                block = image[band, r : r + block_size, c : c + block_size]
                if block.shape != (block_size, block_size):
                    edge = np.full((block_size, block_size), fill, dtype=image.dtype)
                    edge[: block.shape[0], : block.shape[1]] = block
                    block = edge
                yield block


def _compress(block: np.ndarray, compression: str, predictor: int) -> bytes:
    if predictor == 2:
        # Horizontal differencing; integer subtraction wraps, as the decoder's addition does.
        block = np.concatenate([block[:, :1], np.diff(block, axis=1)], axis=1).astype(block.dtype)
    raw = np.ascontiguousarray(block).tobytes()
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(raw)
    return zlib.compress(raw, 6)


def _overviews(data: np.ndarray, valid: np.ndarray, factors, fill):
    """Each overview level of `factors`: the mean of the valid pixels of each factor x factor
    cell (`fill` where none is); integers rounded, int8 kept off its nodata -128. A level
    whose factor is a multiple of the last one's is pooled from that level's sums and
    counts (the same sums, exact for integers): the full-size data is read once for the
    ladder 2, 4, 8…, and no full-size temporary is made."""
    exact = np.float64 if data.dtype.kind == "f" else np.int64
    last = None  # (factor, sums, counts) of the last level
    for factor in factors:
        if last is not None and factor % last[0] == 0:
            sums, counts = _pooled(last[1], factor // last[0]), _pooled(last[2], factor // last[0])
        else:
            sums = _pooled(data, factor, exact, where=valid)
            counts = _pooled(valid, factor, np.int64)
        last = (factor, sums, counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / counts
        if data.dtype.kind != "f":
            low = -127 if data.dtype == np.int8 else np.iinfo(data.dtype).min
            mean = np.clip(np.rint(mean), low, np.iinfo(data.dtype).max)
        yield np.where(counts > 0, mean, fill).astype(data.dtype)


def _pooled(values: np.ndarray, k: int, dtype=None, where=None) -> np.ndarray:
    """The sums of each k x k cell of `values` (bands, rows, cols; the last cells partial),
    counting only where `where` (broadcastable) holds: one strided view per position inside
    the cell, each a 1/k² temporary."""
    bands, rows, cols = values.shape
    out = np.zeros((bands, -(-rows // k), -(-cols // k)), dtype or values.dtype)
    for i in range(k):
        for j in range(k):
            part = values[:, i::k, j::k]
            if where is not None:
                part = np.where(where[:, i::k, j::k], part, 0)
            out[:, : part.shape[1], : part.shape[2]] += part
    return out


def _ifd_size(image: _Image, bigtiff: bool) -> int:
    """The bytes of an image's IFD: its entries and the values too long to hold inline."""
    entry_size, count_size, inline = (20, 8, 8) if bigtiff else (12, 2, 4)
    size = count_size + entry_size * len(image.tags) + inline
    for type_, values in image.tags.values():
        nbytes = _value_size(type_, values)
        if nbytes > inline:
            size += nbytes + nbytes % 2
    return size


def _write_parts(path, parts: list[bytes]) -> None:
    """Write a file's parts in order (no copy of the whole file is made)."""
    with open(path, "wb") as out:
        for part in parts:
            out.write(part)


def _serialize(images: list[_Image], bigtiff: bool, overviews_first: bool = False) -> list[bytes]:
    """The file: its header and IFDs, then the blocks, as parts (the blocks as they are)."""
    entry_size, count_format, offset_format = (20, "Q", "Q") if bigtiff else (12, "H", "I")
    inline = 8 if bigtiff else 4
    header_size = 16 if bigtiff else CLASSIC_HEADER

    ifd_offsets, position = [], header_size
    for image in images:
        ifd_offsets.append(position)
        position += _ifd_size(image, bigtiff)
    # Block data after every IFD: a reader's first range holds them all. A COG's go smallest
    # overview first, full resolution last (a viewer reads the coarse levels first).
    data_order = images[::-1] if overviews_first else images
    for image in data_order:
        offsets, counts = [], []
        for block in image.blocks:
            offsets.append(position)
            counts.append(len(block))
            position += len(block)
        image.tags[324] = (image.tags[324][0], offsets)
        image.tags[325] = (image.tags[325][0], counts)

    out = bytearray(
        b"II"
        + (
            struct.pack("<HHHQ", 43, 8, 0, header_size)
            if bigtiff
            else struct.pack("<HI", 42, header_size)
        )
    )
    for i, image in enumerate(images):
        next_ifd = ifd_offsets[i + 1] if i + 1 < len(images) else 0
        values_at = ifd_offsets[i] + struct.calcsize(count_format) + entry_size * len(image.tags)
        values_at += inline
        entries, values_blob = [], bytearray()
        for tag in sorted(image.tags):
            type_, values = image.tags[tag]
            packed = _pack_values(type_, values)
            count = len(packed) if type_ == ASCII else len(values)
            if len(packed) <= inline:
                field = packed.ljust(inline, b"\0")
            else:
                field = struct.pack("<" + offset_format, values_at + len(values_blob))
                values_blob += packed + b"\0" * (len(packed) % 2)
            entries.append(struct.pack("<HH" + offset_format, tag, type_, count) + field)
        out += struct.pack("<" + count_format, len(entries)) + b"".join(entries)
        out += struct.pack("<" + offset_format, next_ifd) + values_blob
    return [bytes(out), *(block for image in data_order for block in image.blocks)]


def _pack_values(type_: int, values: list) -> bytes:
    if type_ == ASCII:
        return values[0].encode("ascii") + b"\0"
    return struct.pack(f"<{len(values)}{TYPE_FORMATS[type_]}", *values)


def _value_size(type_: int, values: list) -> int:
    return len(_pack_values(type_, values)) if type_ == ASCII else TYPE_SIZES[type_] * len(values)


# -- the index catalog ---------------------------------------------------------------------


@dataclass(frozen=True)
class TileEntry:
    """One catalog row: a written file and where it lies."""

    year: int
    path: str  # relative to the index's folder
    epsg: int
    west: float  # raster bounds in its UTM CRS
    south: float
    east: float
    north: float


def footprint_lonlat(tile: TileEntry, steps: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The raster's outline in lon/lat: a closed ring, densified (a UTM square is curved in
    lon/lat)."""
    t = np.linspace(0.0, 1.0, steps, endpoint=False)
    w, s, e, n = tile.west, tile.south, tile.east, tile.north
    xs = np.r_[w + t * (e - w), np.full(steps, e), e - t * (e - w), np.full(steps, w), w]
    ys = np.r_[np.full(steps, s), s + t * (n - s), np.full(steps, n), n - t * (n - s), s]
    lon, lat = Transformer.from_crs(tile.epsg, WGS84, always_xy=True).transform(xs, ys)
    return np.asarray(lon), np.asarray(lat)


GEOPARQUET = {
    "version": "1.0.0",
    "primary_column": "geom",
    # No "crs" key: GeoParquet reads that as OGC:CRS84 (lon/lat); null would mean unknown.
    "columns": {"geom": {"encoding": "WKB", "geometry_types": ["Polygon"]}},
}


def write_index(path, tiles: list[TileEntry]) -> Path:
    """Write an index.parquet in the published narrow schema (GeoParquet) for `tiles`."""
    rows = []
    for fid, tile in enumerate(tiles, start=1):
        lon, lat = footprint_lonlat(tile)
        west, east = float(lon.min()), float(lon.max())
        if east - west > 180.0:  # across the antimeridian: west > east, as the catalog reads it
            west, east = float(lon[lon > 0].min()), float(lon[lon < 0].max())
        rows.append(
            {
                "fid": fid,
                "geom": polygon_wkb(lon, lat),
                "year": tile.year,
                "path": tile.path,
                "crs": f"EPSG:{tile.epsg}",
                "utm_zone": utm_label(tile.epsg),
                "utm_west": tile.west,
                "utm_south": tile.south,
                "utm_east": tile.east,
                "utm_north": tile.north,
                "wgs84_west": west,
                "wgs84_south": float(lat.min()),
                "wgs84_east": east,
                "wgs84_north": float(lat.max()),
            }
        )
    table = pa.Table.from_pylist(rows, schema=PUBLISHED_SCHEMA)
    table = table.replace_schema_metadata({"geo": json.dumps(GEOPARQUET)})
    path = Path(path)
    pq.write_table(table, path)
    return path
