"""Read-ready collections: the parsed headers of many files in one Parquet table.

With one registered (`connect(collection=…)`), sampling reads no COG header at all: each file
costs only the blocks its points need. Build one with `aefsql build-collection`,
`aefsql.build_collection()` or `SELECT aef_build_collection('collection.parquet')`.

It holds the full-resolution (level 0) headers only: a read of an overview (`level := k`)
takes that level's header from the file itself, which costs a header read per file.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .fetch import version_from
from .tiff import Affine, BlockTable, ImageHeader

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


class CollectionHeaders:
    """A read-ready collection's headers, each built when its file is first asked for: the
    table is compact, thousands of built headers would not be. Thread-safe: it is only read,
    but for `forget`."""

    def __init__(self, table: pa.Table):
        self._table = table.select(SCHEMA.names)
        self._rows = {path: i for i, path in enumerate(self._table["path"].to_pylist())}
        self._changed: set[str] = set()

    def get(self, url: str) -> ImageHeader | None:
        row = self._rows.get(url)
        if row is None or url in self._changed:
            return None
        return _header_from_row(self._table.slice(row, 1).to_pylist()[0])

    def forget(self, url: str) -> None:
        """The file changed since the collection was built: its header must be read."""
        self._changed.add(url)

    def __len__(self) -> int:
        return len(self._rows)

    def subset(self, paths) -> CollectionHeaders:
        """The headers of these files only (those it has)."""
        rows = sorted(self._rows[p] for p in set(paths) if p in self._rows)
        return CollectionHeaders(self._table.take(pa.array(rows, type=pa.int64())))


def headers_from_table(table: pa.Table) -> dict[str, ImageHeader]:
    return {row["path"]: _header_from_row(row) for row in table.select(SCHEMA.names).to_pylist()}


def _header_from_row(row: dict) -> ImageHeader:
    offsets = np.asarray(row["block_offsets"], dtype=np.uint64)
    counts = np.asarray(row["block_byte_counts"], dtype=np.uint64)
    transform = row["transform"]
    return ImageHeader(
        width=row["width"],
        height=row["height"],
        block_width=row["block_width"],
        block_height=row["block_height"],
        tiled=row["tiled"],
        samples_per_pixel=row["samples_per_pixel"],
        dtype=np.dtype(row["dtype"]),
        planar_separate=row["planar_separate"],
        compression=row["compression"],
        predictor=row["predictor"],
        block_offsets=BlockTable(offsets.size, np.dtype("<u8"), 0, offsets),
        block_byte_counts=BlockTable(counts.size, np.dtype("<u8"), 0, counts),
        transform=None if transform is None else Affine(*transform),
        epsg=row["epsg"],
        nodata=row["nodata"],
        version=version_from(row["etag"], row["modified"]),
    )
