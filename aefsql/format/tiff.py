"""Pure TIFF/BigTIFF header parsing: bytes in, an `ImageHeader` out.

The parser never does I/O. It reads from a `SparseBytes` (the ranges fetched so far) and raises
`MissingBytes` when it needs a range that has not been fetched; the I/O layer fetches that range
and parses again. So a Cloud-Optimized GeoTIFF costs one small read, and more only when its
IFD or tag arrays lie beyond it.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import AefsqlError, TiffFormatError

# Tags aefsql reads.
NEW_SUBFILE_TYPE = 254
IMAGE_WIDTH = 256
IMAGE_LENGTH = 257
BITS_PER_SAMPLE = 258
COMPRESSION = 259
STRIP_OFFSETS = 273
SAMPLES_PER_PIXEL = 277
MAX_SAMPLES = 32767
ROWS_PER_STRIP = 278
STRIP_BYTE_COUNTS = 279
PLANAR_CONFIGURATION = 284
PREDICTOR = 317
TILE_WIDTH = 322
TILE_LENGTH = 323
TILE_OFFSETS = 324
TILE_BYTE_COUNTS = 325
SAMPLE_FORMAT = 339
MODEL_PIXEL_SCALE = 33550
MODEL_TIEPOINT = 33922
MODEL_TRANSFORMATION = 34264
GEO_KEY_DIRECTORY = 34735
GDAL_NODATA = 42113

# GeoKeys.
GT_MODEL_TYPE = 1024
GT_RASTER_TYPE = 1025
GEOGRAPHIC_TYPE = 2048
PROJECTED_CS_TYPE = 3072
RASTER_PIXEL_IS_POINT = 2
USER_DEFINED = 32767

# NewSubfileType bits.
REDUCED_RESOLUTION = 0b001  # an overview
TRANSPARENCY_MASK = 0b100

# TIFF field type -> (numpy dtype code, size in bytes).
FIELD_TYPES = {
    1: ("u1", 1),  # BYTE
    2: ("S1", 1),  # ASCII
    3: ("u2", 2),  # SHORT
    4: ("u4", 4),  # LONG
    5: ("u4", 8),  # RATIONAL: two LONGs
    6: ("i1", 1),  # SBYTE
    7: ("u1", 1),  # UNDEFINED
    8: ("i2", 2),  # SSHORT
    9: ("i4", 4),  # SLONG
    10: ("i4", 8),  # SRATIONAL
    11: ("f4", 4),  # FLOAT
    12: ("f8", 8),  # DOUBLE
    13: ("u4", 4),  # IFD
    16: ("u8", 8),  # LONG8
    17: ("i8", 8),  # SLONG8
    18: ("u8", 8),  # IFD8
}

ASCII = 2

# SampleFormat x BitsPerSample -> numpy kind.
SAMPLE_KINDS = {1: "u", 2: "i", 3: "f"}

MAX_IFDS = 64  # an IFD chain longer than this is a loop or garbage
MAX_TAG_BYTES = 256 * 1024 * 1024  # no header array of a real file comes near this


class MissingBytes(Exception):
    """Signal to the I/O layer: fetch `length` bytes at `offset`, then parse again."""

    def __init__(self, offset: int, length: int):
        super().__init__(offset, length)
        self.offset = offset
        self.length = length


class SparseBytes:
    """The byte ranges of one file fetched so far, and the file size once known."""

    def __init__(self, file_size: int | None = None):
        self._starts: list[int] = []
        self._chunks: list[bytes] = []
        self.file_size = file_size

    def add(self, offset: int, data: bytes) -> None:
        i = bisect.bisect_left(self._starts, offset)
        self._starts.insert(i, offset)
        self._chunks.insert(i, data)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise TiffFormatError(f"negative offset or length in header ({offset}, {length})")
        end = offset + length
        if self.file_size is not None and end > self.file_size:
            raise TiffFormatError(
                f"header points past the end of the file (bytes {offset}-{end}, "
                f"file has {self.file_size}): truncated or corrupt"
            )
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0:
            start, chunk = self._starts[i], self._chunks[i]
            if end <= start + len(chunk):
                return chunk[offset - start : end - start]
        raise MissingBytes(offset, length)


class BlockTable:
    """TileOffsets or TileByteCounts (or the strip equivalents), one entry per block.

    Loaded whole when the header read already holds the array; otherwise entries are fetched
    as sampling needs them (a few bytes each, as GDAL does for big headers), so a file with
    small blocks costs its first read plus the entries of the blocks actually read.
    """

    def __init__(self, count: int, dtype: np.dtype, file_offset: int, values=None):
        self.count = count
        self.dtype = dtype  # with the file's byte order
        self.file_offset = file_offset
        if values is None:
            self.values = np.zeros(count, dtype=np.uint64)
            self.loaded = np.zeros(count, dtype=bool)
        else:
            self.values = np.asarray(values, dtype=np.uint64)
            self.loaded = np.ones(count, dtype=bool)

    @property
    def size(self) -> int:
        return self.count

    def missing_ranges(self, blocks: np.ndarray) -> list[tuple[int, int]]:
        """File byte ranges [start, end) of the entries of `blocks` not loaded yet."""
        blocks = np.unique(np.asarray(blocks, dtype=np.int64))
        missing = blocks[~self.loaded[blocks]]
        starts = self.file_offset + missing * self.dtype.itemsize
        return [(int(a), int(a) + self.dtype.itemsize) for a in starts]

    def fill(self, start: int, data: bytes) -> None:
        """Load the entries wholly inside the bytes `data` found at file offset `start`."""
        size = self.dtype.itemsize
        first = -(-(start - self.file_offset) // size)
        last = min((start + len(data) - self.file_offset) // size, self.count)
        if last <= first:
            return
        skip = self.file_offset + first * size - start
        raw = np.frombuffer(data, dtype=self.dtype, count=last - first, offset=skip)
        self.values[first:last] = raw
        self.loaded[first:last] = True

    def __getitem__(self, block: int) -> int:
        if not self.loaded[block]:
            raise KeyError(f"block {block}'s entry has not been fetched")
        return int(self.values[block])

    def tolist(self) -> list[int]:
        return [self[i] for i in range(self.count)]


@dataclass(frozen=True)
class Affine:
    """GDAL-order geotransform: x = c + a*col + b*row, y = f + d*col + e*row."""

    a: float
    b: float
    c: float
    d: float
    e: float
    f: float

    @property
    def south_up(self) -> bool:
        return self.e > 0


@dataclass(frozen=True, eq=False)
class ImageHeader:
    """What sampling needs to know of one image of a TIFF file: the full-resolution one
    (level 0) or an overview (level k: the k-th reduced-resolution image in file order)."""

    width: int
    height: int
    block_width: int
    block_height: int
    tiled: bool  # False: strips, read as blocks one image wide
    samples_per_pixel: int
    dtype: np.dtype  # with the file's byte order
    planar_separate: bool  # PlanarConfiguration=2: each sample has its own blocks
    compression: int
    predictor: int
    block_offsets: BlockTable  # TIFF order: plane-major when planar-separate
    block_byte_counts: BlockTable
    transform: Affine | None
    epsg: int | None
    nodata: float | None
    # The version of the object the header was read from, as the storage layer states it
    # (its fetch.Version): opaque here, as the format layer parses bytes and reads none.
    version: object | None = None
    level: int = 0

    @property
    def nbytes(self) -> int:
        """Memory held, roughly: the block tables and ~1 KB of fields."""
        tables = (self.block_offsets, self.block_byte_counts)
        return 1024 + sum(t.values.nbytes + t.loaded.nbytes for t in tables)

    @property
    def blocks_across(self) -> int:
        return -(-self.width // self.block_width)

    @property
    def blocks_down(self) -> int:
        return -(-self.height // self.block_height)

    @property
    def blocks_per_plane(self) -> int:
        return self.blocks_across * self.blocks_down

    def block_rows(self, block_row: int) -> int:
        """Rows held by a block: tiles are padded to full size, the last strip is not."""
        if self.tiled:
            return self.block_height
        return min(self.block_height, self.height - block_row * self.block_height)


@dataclass(frozen=True)
class _Entry:
    tag: int
    type: int
    count: int
    value_offset: int  # where the value bytes lie in the file


class _Reader:
    """Typed reads at file offsets, in the file's byte order and offset size."""

    def __init__(self, data: SparseBytes, big_endian: bool, bigtiff: bool):
        self.data = data
        self.order = ">" if big_endian else "<"
        self.bigtiff = bigtiff

    def unpack(self, fmt: str, offset: int) -> tuple:
        return struct.unpack(self.order + fmt, self.data.read(offset, struct.calcsize(fmt)))

    def ifd_entries(self, ifd_offset: int) -> tuple[dict[int, _Entry], int]:
        """The entries of the IFD at `ifd_offset`, and the offset of the next IFD (0: none)."""
        count_fmt, entry_size, value_size = ("Q", 20, 8) if self.bigtiff else ("H", 12, 4)
        (count,) = self.unpack(count_fmt, ifd_offset)
        if count == 0 or count > 4096:
            raise TiffFormatError(f"implausible IFD entry count {count} at offset {ifd_offset}")
        first = ifd_offset + struct.calcsize(count_fmt)
        raw = self.data.read(first, count * entry_size + value_size)
        entry_fmt = self.order + ("HHQ" if self.bigtiff else "HHI")
        entries = {}
        for i in range(count):
            pos = i * entry_size
            tag, type_, n = struct.unpack_from(entry_fmt, raw, pos)
            value_pos = pos + (12 if self.bigtiff else 8)
            if type_ not in FIELD_TYPES:
                continue  # unknown types are allowed by the spec; skip the entry
            size = FIELD_TYPES[type_][1] * n
            if size > MAX_TAG_BYTES:
                raise TiffFormatError(f"tag {tag} claims {size} bytes: corrupt header")
            if size <= value_size:
                value_offset = first + value_pos
            else:
                (value_offset,) = struct.unpack_from(
                    self.order + ("Q" if self.bigtiff else "I"), raw, value_pos
                )
            entries[tag] = _Entry(tag, type_, n, value_offset)
        (next_ifd,) = struct.unpack_from(
            self.order + ("Q" if self.bigtiff else "I"), raw, count * entry_size
        )
        return entries, next_ifd

    def values(self, entry: _Entry) -> np.ndarray:
        code, size = FIELD_TYPES[entry.type]
        raw = self.data.read(entry.value_offset, size * entry.count)
        if code == "S1":
            return np.frombuffer(raw, dtype="S1")
        return np.frombuffer(raw, dtype=np.dtype(code).newbyteorder(self.order)).astype(
            np.dtype(code).newbyteorder("=")
        )


def parse_header(data: SparseBytes, level: int = 0) -> ImageHeader:
    """Parse one image of a TIFF or BigTIFF file: `level` 0 is the full-resolution image,
    level k the k-th reduced-resolution image (NewSubfileType & 1) in file order, as GDAL
    numbers overviews (its overview k - 1). Masks (NewSubfileType & 4) are skipped.

    An overview's block tables, size and codec are its own; its georeferencing, EPSG code
    and nodata are the full image's, the transform scaled by full size / overview size with
    the same origin, as GDAL does (so a south-up file's overviews are south-up too). Raises
    `MissingBytes` when `data` lacks a range, `TiffFormatError` when the file is not a usable
    TIFF or has no such level.
    """
    if level < 0:
        raise AefsqlError(f"level {level}: levels count from 0 (full resolution)")
    try:
        head = data.read(0, 8)
    except TiffFormatError:
        raise TiffFormatError("file is shorter than a TIFF header (8 bytes)") from None
    if head[:2] == b"II":
        big_endian = False
    elif head[:2] == b"MM":
        big_endian = True
    else:
        # Never the bytes themselves: a file that is not a TIFF may be anything (a secret).
        raise TiffFormatError("not a TIFF file (no II or MM byte-order mark)")
    order = ">" if big_endian else "<"
    (magic,) = struct.unpack(order + "H", head[2:4])
    if magic == 42:
        bigtiff = False
        (ifd_offset,) = struct.unpack(order + "I", head[4:8])
    elif magic == 43:
        bigtiff = True
        offset_size, _, ifd_offset = struct.unpack(order + "HHQ", data.read(4, 12))
        if offset_size != 8:
            raise TiffFormatError(f"BigTIFF with offset size {offset_size} (expected 8)")
    else:
        raise TiffFormatError(f"not a TIFF file (magic number {magic})")

    reader = _Reader(data, big_endian, bigtiff)
    seen = set()
    full = overview = None
    overviews = 0
    # Level 0 stops at the full image; level k walks on to the k-th overview (the whole
    # chain when the file has fewer, to say which levels it has).
    while ifd_offset:
        if ifd_offset in seen or len(seen) >= MAX_IFDS:
            raise TiffFormatError("IFD chain loops or is too long: corrupt file")
        seen.add(ifd_offset)
        entries, next_ifd = reader.ifd_entries(ifd_offset)
        subfile_type = _scalar(reader, entries, NEW_SUBFILE_TYPE, 0)
        if subfile_type & TRANSPARENCY_MASK:
            pass  # a mask (of the image or of an overview): no level of its own
        elif subfile_type & REDUCED_RESOLUTION:
            overviews += 1
            if overviews == level:
                overview = entries
        elif full is None:
            full = entries
        if full is not None and (level == 0 or overview is not None):
            break
        ifd_offset = next_ifd
    if full is None:
        raise TiffFormatError("no full-resolution image in the file")
    if level == 0:
        return _image_header(reader, full)
    if overview is None:
        has = f"levels 0 to {overviews}" if overviews else "level 0 only (no overviews)"
        raise TiffFormatError(f"no level {level} in the file: it has {has}")
    return _image_header(reader, overview, full=full, level=level)


def _scalar(reader: _Reader, entries: dict[int, _Entry], tag: int, default=None):
    entry = entries.get(tag)
    if entry is None:
        if default is None:
            raise TiffFormatError(f"required TIFF tag {tag} is missing")
        return default
    values = _integers(reader, entries, tag)
    if values.size == 0:
        raise TiffFormatError(f"TIFF tag {tag} is empty")
    return values[0].item()


def _integers(reader: _Reader, entries: dict[int, _Entry], tag: int) -> np.ndarray | None:
    values = _array(reader, entries, tag)
    if values is not None and values.dtype.kind not in "iu":
        raise TiffFormatError(f"TIFF tag {tag} must hold integers, not {values.dtype}")
    return values


def _array(reader: _Reader, entries: dict[int, _Entry], tag: int) -> np.ndarray | None:
    """A tag's values as numbers; a text tag where numbers belong is a format error."""
    entry = entries.get(tag)
    if entry is None:
        return None
    if entry.type == ASCII:
        raise TiffFormatError(f"TIFF tag {tag} holds text where numbers belong")
    return reader.values(entry)


def _image_header(
    reader: _Reader,
    entries: dict[int, _Entry],
    full: dict[int, _Entry] | None = None,
    level: int = 0,
) -> ImageHeader:
    """The header of the image `entries` describes; `full`: the full-resolution image's
    entries, whose georeferencing an overview takes (None: `entries` is that image)."""
    width = _scalar(reader, entries, IMAGE_WIDTH)
    height = _scalar(reader, entries, IMAGE_LENGTH)
    samples = _scalar(reader, entries, SAMPLES_PER_PIXEL, 1)
    _check_sizes(width, height, samples)

    bits = _integers(reader, entries, BITS_PER_SAMPLE)
    formats = _integers(reader, entries, SAMPLE_FORMAT)
    bits = 1 if bits is None else bits
    formats = 1 if formats is None else formats
    if np.unique(bits).size != 1 or np.unique(formats).size != 1:
        raise TiffFormatError("samples of mixed bit depth or format are not supported")
    bits, sample_format = int(np.ravel(bits)[0]), int(np.ravel(formats)[0])
    kind = SAMPLE_KINDS.get(sample_format, "?")
    if not _supported_sample(kind, bits):
        raise TiffFormatError(f"unsupported sample type: format {sample_format}, {bits} bits")
    dtype = np.dtype(f"{kind}{bits // 8}").newbyteorder(reader.order)
    separate = planar_separate(_scalar(reader, entries, PLANAR_CONFIGURATION, 1))

    if TILE_OFFSETS in entries:
        tiled = True
        block_width = _scalar(reader, entries, TILE_WIDTH)
        block_height = _scalar(reader, entries, TILE_LENGTH)
        offsets_tag, counts_tag = TILE_OFFSETS, TILE_BYTE_COUNTS
    elif STRIP_OFFSETS in entries:
        tiled = False
        block_width = width
        block_height = min(_scalar(reader, entries, ROWS_PER_STRIP, 2**32 - 1), height)
        offsets_tag, counts_tag = STRIP_OFFSETS, STRIP_BYTE_COUNTS
    else:
        raise TiffFormatError("image has neither tiles nor strips")

    if counts_tag not in entries:
        raise TiffFormatError(f"required TIFF tag {counts_tag} (byte counts) is missing")
    geo_entries = entries if full is None else full
    transform = _transform(reader, geo_entries)
    if full is not None and transform is not None:
        transform = _scaled(
            transform,
            _scalar(reader, full, IMAGE_WIDTH) / width,
            _scalar(reader, full, IMAGE_LENGTH) / height,
        )
    header = ImageHeader(
        width=width,
        height=height,
        block_width=block_width,
        block_height=block_height,
        tiled=tiled,
        samples_per_pixel=samples,
        dtype=dtype,
        planar_separate=separate,
        compression=_scalar(reader, entries, COMPRESSION, 1),
        predictor=_scalar(reader, entries, PREDICTOR, 1),
        block_offsets=_block_table(reader, entries[offsets_tag]),
        block_byte_counts=_block_table(reader, entries[counts_tag]),
        transform=transform,
        epsg=_epsg(reader, geo_entries),
        nodata=_nodata(reader, geo_entries),
        level=level,
    )
    check_image(header)
    return header


def check_image(header: ImageHeader) -> None:
    """Raise `TiffFormatError` unless the header is one sampling can use: positive sizes, at
    most MAX_SAMPLES samples, a sample type aefsql reads, and one block-table entry per
    block. The parser applies it to every IFD, and a headers file to every record
    (aefsql/headers/table.py): both are untrusted."""
    _check_sizes(header.width, header.height, header.samples_per_pixel)
    dtype = header.dtype
    if not _supported_sample(dtype.kind, dtype.itemsize * 8):
        raise TiffFormatError(f"unsupported sample type {dtype}")
    if header.block_width <= 0 or header.block_height <= 0:
        raise TiffFormatError(f"invalid block size {header.block_width}x{header.block_height}")
    expected = header.blocks_per_plane * (header.samples_per_pixel if header.planar_separate else 1)
    offsets, counts = header.block_offsets.size, header.block_byte_counts.size
    if offsets != expected or counts != expected:
        raise TiffFormatError(
            f"expected {expected} block offsets and byte counts, found {offsets} and {counts}"
        )


def planar_separate(planar: int) -> bool:
    """True for PlanarConfiguration 2 (each sample has its own blocks), False for 1."""
    if planar not in (1, 2):
        raise TiffFormatError(f"invalid PlanarConfiguration {planar}")
    return planar == 2


def _check_sizes(width: int, height: int, samples: int) -> None:
    # Before anything divides by them or sizes a table by them.
    if width <= 0 or height <= 0 or samples <= 0:
        raise TiffFormatError(f"empty image ({width}x{height}, {samples} samples)")
    if samples > MAX_SAMPLES:  # AEF has 64; counts are kept as int16
        raise TiffFormatError(f"{samples} samples per pixel: more than {MAX_SAMPLES} is refused")


def _supported_sample(kind: str, bits: int) -> bool:
    """Samples of numpy kind 'u', 'i' or 'f' and 8 to 64 bits: what the codecs decode."""
    return kind in SAMPLE_KINDS.values() and bits in (8, 16, 32, 64)


def _scaled(t: Affine, x_ratio: float, y_ratio: float) -> Affine:
    """The transform of an overview whose pixels are x_ratio x y_ratio full-resolution
    pixels: column terms times x_ratio, row terms times y_ratio, the origin unchanged
    (GDALOverviewDataset::GetGeoTransform)."""
    return Affine(t.a * x_ratio, t.b * y_ratio, t.c, t.d * x_ratio, t.e * y_ratio, t.f)


def _block_table(reader: _Reader, entry: _Entry) -> BlockTable:
    if entry.type not in (3, 4, 16):  # SHORT, LONG, LONG8
        raise TiffFormatError(f"block offsets/byte counts of field type {entry.type}")
    code, size = FIELD_TYPES[entry.type]
    dtype = np.dtype(code).newbyteorder(reader.order)
    if reader.data.file_size is not None and entry.value_offset + size * entry.count > (
        reader.data.file_size
    ):
        raise TiffFormatError("block table lies past the end of the file: truncated or corrupt")
    try:
        values = reader.values(entry)
    except MissingBytes:
        return BlockTable(entry.count, dtype, entry.value_offset)  # fetched entry by entry
    return BlockTable(entry.count, dtype, entry.value_offset, values)


def _geo_keys(reader: _Reader, entries: dict[int, _Entry]) -> dict[int, int]:
    """GeoKeys whose value is stored inline (the ones aefsql needs all are)."""
    directory = _integers(reader, entries, GEO_KEY_DIRECTORY)
    if directory is None or directory.size < 4:
        return {}
    n = int(directory[3])
    keys = {}
    for i in range(min(n, (directory.size - 4) // 4)):
        key, location, _count, value = (int(v) for v in directory[4 + 4 * i : 8 + 4 * i])
        if location == 0:
            keys[key] = value
    return keys


def _epsg(reader: _Reader, entries: dict[int, _Entry]) -> int | None:
    keys = _geo_keys(reader, entries)
    for key in (PROJECTED_CS_TYPE, GEOGRAPHIC_TYPE):
        code = keys.get(key)
        if code and code != USER_DEFINED:
            return code
    return None


def _transform(reader: _Reader, entries: dict[int, _Entry]) -> Affine | None:
    matrix = _array(reader, entries, MODEL_TRANSFORMATION)
    if matrix is not None:
        if matrix.size != 16:
            raise TiffFormatError(f"ModelTransformationTag has {matrix.size} values (expected 16)")
        m = [float(v) for v in matrix]
        transform = Affine(m[0], m[1], m[3], m[4], m[5], m[7])
    else:
        scale = _array(reader, entries, MODEL_PIXEL_SCALE)
        tiepoints = _array(reader, entries, MODEL_TIEPOINT)
        if scale is None or tiepoints is None or scale.size < 2 or tiepoints.size < 6:
            return None
        sx, sy = float(scale[0]), float(scale[1])
        i, j, x, y = (float(tiepoints[k]) for k in (0, 1, 3, 4))
        # PixelScale's Y is positive for north-up images: y decreases down the rows.
        transform = Affine(sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy)
    if _geo_keys(reader, entries).get(GT_RASTER_TYPE) == RASTER_PIXEL_IS_POINT:
        # Like GDAL: the georeferenced point is the pixel's centre, so the corner is half a
        # pixel back.
        t = transform
        transform = Affine(t.a, t.b, t.c - 0.5 * (t.a + t.b), t.d, t.e, t.f - 0.5 * (t.d + t.e))
    return transform


def _nodata(reader: _Reader, entries: dict[int, _Entry]) -> float | None:
    entry = entries.get(GDAL_NODATA)
    if entry is None:
        return None
    if entry.type != ASCII:
        raise TiffFormatError("GDAL_NODATA tag is not text")
    text = b"".join(reader.values(entry).tolist()).split(b"\0")[0].strip()
    try:
        return float(text)
    except ValueError:
        raise TiffFormatError(
            f"GDAL_NODATA tag holds {len(text)} bytes of text, not a number"
        ) from None
