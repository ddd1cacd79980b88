"""Headers files: the parsed headers of many files in one Parquet table.

With one registered (`connect(headers=…)`), sampling reads no COG header at all: each file
costs only the blocks its points need. Write one with `aefsql write-headers`,
`aefsql.write_headers()` or `COPY (FROM aef_headers()) TO 'headers.parquet'`.

It holds the full-resolution (level 0) headers only: a read of an overview (`level := k`)
takes that level's header from the file itself, which costs a header read per file.

A headers file is untrusted, like the files: each row is checked as the parser checks an IFD
(`header_from_row`) before it is used. A row that fails, and a path with two rows, are not
used, with a warning naming the file and why: that file's header is read from the file, as
for a file the headers file lacks or one that changed since it was written.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa

from ..errors import TiffFormatError, redact
from ..format.codecs import check_supported
from ..format.tiff import Affine, BlockTable, ImageHeader, check_image
from ..geometry.geo import check_north_aligned
from ..storage.fetch import version_from

SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("block_width", pa.int64()),
        ("block_height", pa.int64()),
        ("tiled", pa.bool_()),
        ("samples_per_pixel", pa.int64()),
        ("dtype", pa.string()),  # numpy's spelling with byte order, e.g. '|i1', '>i2'
        ("planar_separate", pa.bool_()),
        ("compression", pa.int64()),
        ("predictor", pa.int64()),
        ("transform", pa.list_(pa.float64(), 6)),  # GDAL order a, b, c, d, e, f
        ("epsg", pa.int64()),
        ("nodata", pa.float64()),
        ("block_offsets", pa.list_(pa.uint64())),
        ("block_byte_counts", pa.list_(pa.uint64())),
        # The version of the file the header describes: reads of any other fail and fall
        # back to reading the file's header anew.
        ("etag", pa.string()),
        ("modified", pa.string()),
    ]
)
# Block offsets and byte counts are file positions: no file system or HTTP range reaches
# 2**63, and an int64 must hold them.
MAX_FILE_POSITION = 2**63 - 1


def headers_to_table(headers: dict[str, ImageHeader]) -> pa.Table:
    """One row per file; every block-table entry must be loaded."""
    rows = []
    for path, h in sorted(headers.items()):
        t = h.transform
        rows.append(
            {
                "path": path,
                "width": h.width,
                "height": h.height,
                "block_width": h.block_width,
                "block_height": h.block_height,
                "tiled": h.tiled,
                "samples_per_pixel": h.samples_per_pixel,
                "dtype": h.dtype.str,
                "planar_separate": h.planar_separate,
                "compression": h.compression,
                "predictor": h.predictor,
                "transform": None if t is None else [t.a, t.b, t.c, t.d, t.e, t.f],
                "epsg": h.epsg,
                "nodata": h.nodata,
                "block_offsets": h.block_offsets.tolist(),
                "block_byte_counts": h.block_byte_counts.tolist(),
                "etag": h.version.etag if h.version else None,
                "modified": h.version.modified if h.version else None,
            }
        )
    return pa.Table.from_pylist(rows, schema=SCHEMA)


class HeadersFile:
    """A headers file's headers (or a Rasteret collection's), each built when its file is
    first asked for: the table is compact, thousands of built headers would not be.
    Thread-safe: it is only read, but for `forget`."""

    def __init__(self, table: pa.Table):
        self._table = table.select(SCHEMA.names)
        self._rows: dict[str, int] = {}
        duplicated: set[str] = set()
        for i, path in enumerate(self._table["path"].to_pylist()):
            if path in self._rows:
                duplicated.add(path)
            self._rows[path] = i
        # Which of two rows describes the file cannot be told, so neither is used. Refusing
        # the whole headers file instead would let one bad row break `connect` for every file,
        # and would fail a query midway when the duplicate lies in a shard of a published
        # Rasteret collection (read when first needed); not using it costs one header read.
        for path in duplicated:
            del self._rows[path]
        if duplicated:
            shown = ", ".join(redact(str(p)) for p in sorted(duplicated, key=str)[:3])
            not_used(f"{len(duplicated)} file(s) with two records or more ({shown})")
        self._changed: set[str] = set()

    def get(self, url: str) -> ImageHeader | None:
        row = self._rows.get(url)
        if row is None or url in self._changed:
            return None
        try:
            return header_from_row(self._table.slice(row, 1).to_pylist()[0])
        except TiffFormatError as exc:
            self.forget(url)  # warned once, then read from the file like a changed one
            not_used(str(exc))
            return None

    def forget(self, url: str) -> None:
        """The file changed since the headers file was written: its header must be read."""
        self._changed.add(url)

    def __len__(self) -> int:
        return len(self._rows)

    def subset(self, paths) -> HeadersFile:
        """The headers of these files only (those it has)."""
        rows = sorted(self._rows[p] for p in set(paths) if p in self._rows)
        return HeadersFile(self._table.take(pa.array(rows, type=pa.int64())))


def not_used(what: str) -> None:
    """Warn that headers-file records are not used (`what`: which and why)."""
    warnings.warn(
        f"headers file: {what}: not used, the file's own header is read instead",
        UserWarning,
        stacklevel=3,
    )


def header_from_row(row: dict) -> ImageHeader:
    """The header a headers-file row (SCHEMA's fields, as Python values) describes, checked as
    the parser checks an IFD, and its codec and transform as sampling would: a row is
    untrusted. Raises `TiffFormatError` naming the file and the field."""
    try:
        return _checked_header(row)
    except TiffFormatError as exc:
        raise type(exc)(f"record of {redact(str(row.get('path')))}: {exc}") from None


def _checked_header(row: dict) -> ImageHeader:
    transform = row["transform"]
    if transform is not None:
        if not isinstance(transform, list | tuple) or len(transform) != 6:
            raise TiffFormatError(f"transform is {shortened(transform)}: expected 6 numbers")
        transform = Affine(*(_number(v, "transform") for v in transform))
        check_north_aligned(transform, "transform")
    header = ImageHeader(
        width=_whole(row, "width"),
        height=_whole(row, "height"),
        block_width=_whole(row, "block_width"),
        block_height=_whole(row, "block_height"),
        tiled=_flag(row, "tiled"),
        samples_per_pixel=_whole(row, "samples_per_pixel"),
        dtype=_dtype(row["dtype"]),
        planar_separate=_flag(row, "planar_separate"),
        compression=_whole(row, "compression"),
        predictor=_whole(row, "predictor"),
        block_offsets=_block_table(row, "block_offsets"),
        block_byte_counts=_block_table(row, "block_byte_counts"),
        transform=transform,
        epsg=None if row["epsg"] is None else _whole(row, "epsg"),
        nodata=None if row["nodata"] is None else _number(row["nodata"], "nodata"),
        version=version_from(_text(row, "etag"), _text(row, "modified")),
    )
    check_image(header)
    check_supported(header.compression, header.predictor)
    return header


def _whole(row: dict, field: str) -> int:
    value = row[field]
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TiffFormatError(f"{field} is {shortened(value)}: expected a whole number")
    if not 0 <= value <= MAX_FILE_POSITION:
        raise TiffFormatError(f"{field} is {value}: expected 0 to {MAX_FILE_POSITION}")
    return int(value)


def _number(value, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TiffFormatError(f"{field} holds {shortened(value)}: expected a number")
    return float(value)


def _flag(row: dict, field: str) -> bool:
    value = row[field]
    if not isinstance(value, bool | np.bool_):
        raise TiffFormatError(f"{field} is {shortened(value)}: expected true or false")
    return bool(value)


def _text(row: dict, field: str) -> str | None:
    value = row[field]
    if value is not None and not isinstance(value, str):
        raise TiffFormatError(f"{field} is {shortened(value)}: expected text")
    return value


def _dtype(value) -> np.dtype:
    """numpy's dtype of its spelling ('|i1', '<i2'); which types are read is check_image's."""
    if not isinstance(value, str):
        raise TiffFormatError(f"dtype is {shortened(value)}: expected numpy's name of a type")
    try:
        return np.dtype(value)
    except (TypeError, ValueError):
        raise TiffFormatError(f"dtype is {shortened(value)}: not a numpy type") from None


def _block_table(row: dict, field: str) -> BlockTable:
    values = row[field]
    if not isinstance(values, list | tuple):
        raise TiffFormatError(f"{field} is {shortened(values)}: expected a list of whole numbers")
    # An empty list would be float64; None, text, or ints past 2**64 make an object array.
    array = np.asarray(values) if values else np.zeros(0, dtype=np.uint64)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise TiffFormatError(f"{field} holds other values than whole numbers")
    if array.size and (array.min() < 0 or array.max() > MAX_FILE_POSITION):
        raise TiffFormatError(
            f"{field} holds {int(array.min())} to {int(array.max())}: "
            f"expected 0 to {MAX_FILE_POSITION}"
        )
    return BlockTable(array.size, np.dtype("<u8"), 0, array.astype(np.uint64))


def shortened(value) -> str:
    """A value of an untrusted row, shortened for a message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
