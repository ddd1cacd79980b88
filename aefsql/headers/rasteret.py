"""Read-ready headers from a Rasteret collection (Rasteret's Parquet of parsed COG headers).

A Rasteret record is one file: its `path` (or asset `href`) and, per band, an `Axx_metadata`
struct with the image and tile sizes, dtype, a 4-value transform (scale_x, translate_x,
scale_y, translate_y: positive scale_y for south-up files), codec, predictor, nodata, and that
band's own `tile_offsets` and `tile_byte_counts`. `records_to_collection` turns records into
rows of aefsql's collection table (aefsql/headers/table.py), the 64 bands' tile tables laid end
to end in band order, as a planar-separate TIFF lays them out.

Two layouts are read (`open_rasteret`): what `rasteret.build_from_table`/`Collection.export`
write (Parquet files under a folder, e.g. hive-partitioned year=/month=), read whole; and the
published one (an `index.parquet` naming each record's Parquet shard in `source_part`), whose
shards are read when one of their files is first asked for.

Rasteret records carry no file version (no ETag or Last-Modified), so reads of a file whose
header came from one are not pinned to the version the header describes: a file replaced
after the collection was built would be read at stale offsets. The published AEF files are
not replaced; for others, write an aefsql headers file (`aefsql.write_headers`), which pins.
Relative paths resolve against the collection's folder. Records that are not a complete,
consistent planar-separate or single-band header (a band missing, sizes that disagree), or
whose values `collection.header_from_row` refuses, are skipped with a warning: those files'
headers are read from the files themselves.
"""

from __future__ import annotations

import re
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..catalog.index import catalog_base, resolve_path
from ..errors import CatalogError, TiffFormatError
from ..format.tiff import planar_separate
from ..storage.store import ByteStore, redact
from .table import SCHEMA, HeadersFile, header_from_row, not_used, shortened

METADATA_SUFFIX = "_metadata"
# The per-file fields every band's struct repeats: they must agree across bands.
SHARED_FIELDS = (
    "image_width",
    "image_height",
    "tile_width",
    "tile_height",
    "dtype",
    "transform",
    "predictor",
    "compression",
    "nodata",
    "samples_per_pixel",
    "planar_configuration",
)
# Shards of a published collection kept parsed at once.
MAX_SHARDS = 8
# A segment of a shard's path below the collection's folder (see _inside).
_SHARD_SEGMENT = re.compile(r"[A-Za-z0-9._+=-]+")


def is_rasteret(schema: pa.Schema) -> bool:
    return any(name.endswith(METADATA_SUFFIX) for name in schema.names)


def records_to_collection(records: pa.Table, base: str) -> pa.Table:
    """aefsql collection rows (collection.SCHEMA) of Rasteret records; `base` is the folder
    that relative paths resolve against. A record that is not a complete header, or not
    one `header_from_row` accepts, is left out with a warning: its file's header is read
    from the file."""
    bands = sorted(n for n in records.schema.names if n.endswith(METADATA_SUFFIX))
    rows, refused = [], []
    for record in records.to_pylist():
        path = None
        try:
            path = record.get("path") or _first_href(record)
            if not isinstance(path, str):
                raise TiffFormatError("it names no file")
            row = {"path": resolve_path(path, base), **_row(record, bands)}
        except (TiffFormatError, TypeError, ValueError, KeyError, AttributeError) as exc:
            why = str(exc) if isinstance(exc, TiffFormatError) else type(exc).__name__
            refused.append(f"record of {redact(str(path))}: {why}")
            continue
        try:
            header_from_row(row)  # before Arrow sees the values (a negative uint64 fails)
        except TiffFormatError as exc:
            refused.append(str(exc))
            continue
        rows.append(row)
    if refused:  # one warning a record file: a collection may hold thousands
        not_used(f"{len(refused)} Rasteret record(s) (the first: {refused[0]})")
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def folder_of(url: str) -> str:
    """A collection folder's URL (absolute, for a local one) with a trailing slash."""
    return catalog_base(url.rstrip("/") + "/index.parquet")


def _first_href(record: dict) -> str | None:
    for asset in (record.get("assets") or {}).values():
        if asset and asset.get("href"):
            return asset["href"]
    return None


def _row(record: dict, bands: list[str]) -> dict:
    """The collection row of a record; which values are usable is `header_from_row`'s to
    say, what makes the record's structs one header is said here."""
    metas = {name: record[name] for name in bands if record.get(name)}
    if not metas:
        raise TiffFormatError("no band's metadata")
    first = next(iter(metas.values()))
    for field in SHARED_FIELDS:
        if any(m.get(field) != first.get(field) for m in metas.values()):
            raise TiffFormatError(f"bands disagree on {field}")
    samples = first["samples_per_pixel"] or 1
    separate = planar_separate(first["planar_configuration"] or 1)
    # The band each struct describes: the asset's band_index, else its place among the structs.
    assets = record.get("assets") or {}
    planes: dict[int, dict] = {}
    for k, (name, meta) in enumerate(metas.items()):
        asset = assets.get(name.removesuffix(METADATA_SUFFIX)) or {}
        planes[asset.get("band_index", k)] = meta
    # Its length first: `samples` is untrusted, and may be any size.
    want = samples if separate else 1
    if len(planes) != want or sorted(planes) != list(range(want)):
        raise TiffFormatError(f"{len(planes)} band structs for {want} planes")
    offsets = [planes[p]["tile_offsets"] or [] for p in sorted(planes)]
    counts = [planes[p]["tile_byte_counts"] or [] for p in sorted(planes)]
    # Equal lengths, and their total checked against the block count: each band's own.
    if len({len(t) for t in offsets + counts}) != 1:
        raise TiffFormatError("bands' tile_offsets or tile_byte_counts differ in length")
    transform = first["transform"]
    if not isinstance(transform, list) or len(transform) != 4:
        raise TiffFormatError(f"transform is {shortened(transform)}: expected 4 numbers")
    if not isinstance(first["dtype"], str):
        raise TiffFormatError(f"dtype is {shortened(first['dtype'])}")
    scale_x, translate_x, scale_y, translate_y = transform
    return {
        "width": first["image_width"],
        "height": first["image_height"],
        "block_width": first["tile_width"],
        "block_height": first["tile_height"],
        "tiled": True,
        "samples_per_pixel": samples,
        "dtype": np.dtype(first["dtype"]).newbyteorder("<").str,
        "planar_separate": separate,
        "compression": first["compression"],
        "predictor": first["predictor"] or 1,
        "transform": [scale_x, 0.0, translate_x, 0.0, scale_y, translate_y],  # Affine a..f
        "epsg": record.get("proj:epsg"),
        "nodata": first["nodata"],
        "block_offsets": [o for table in offsets for o in table],
        "block_byte_counts": [c for table in counts for c in table],
        "etag": None,
        "modified": None,
    }


def open_rasteret(url: str, store: ByteStore, first: pa.Table | None = None):
    """The headers of a Rasteret collection at `url`: a Parquet file of records, a published
    collection's `index.parquet` (or its folder), or a folder of record files. `first`: the
    table already read from `url`, when it is a file."""
    if first is not None:
        folder = catalog_base(url)
        if "source_part" in first.schema.names:
            return ShardedHeaders(folder, first, store)
        return HeadersFile(records_to_collection(first, folder))
    folder = folder_of(url)
    fs = store.filesystem(folder)
    index = folder + "index.parquet"
    if fs.exists(index):
        return ShardedHeaders(folder, _parquet(store, index), store)
    # fsspec lists remote paths without their scheme ("bucket/key"), local ones as they are.
    scheme = folder.split("://", 1)[0] + "://" if "://" in folder else ""
    files = sorted(scheme + p for p in fs.find(folder) if p.endswith(".parquet"))
    tables = [_parquet(store, p) for p in files]
    tables = [records_to_collection(t, folder) for t in tables if is_rasteret(t.schema)]
    if not tables:
        raise CatalogError(f"collection {redact(url)}: no Rasteret record file in it")
    return HeadersFile(pa.concat_tables(tables))


def _parquet(store: ByteStore, url: str) -> pa.Table:
    return pq.read_table(pa.BufferReader(store.read_file(url)))


class ShardedHeaders:
    """A published Rasteret collection: `index` names each file's shard (`source_part`,
    relative to `base` or absolute); a shard is read, converted and kept (the last
    MAX_SHARDS) when one of its files is first asked for."""

    def __init__(self, base: str, index: pa.Table, store: ByteStore):
        self.base = base
        self.store = store
        if "path" not in index.schema.names:
            raise CatalogError(f"collection {redact(base)}: its index has no path column")
        paths, parts = index["path"].to_pylist(), index["source_part"].to_pylist()
        # A shard is read from the collection's own folder only: an index is untrusted, and
        # may not send reads elsewhere.
        self._shard_of: dict[str, str] = {}
        named_twice = set()
        for path, part in zip(paths, parts, strict=True):
            if not (isinstance(path, str) and isinstance(part, str) and _inside(part, base)):
                continue
            path = resolve_path(path, base)
            if path in self._shard_of:
                named_twice.add(path)
            self._shard_of[path] = resolve_path(part, base)
        # As HeadersFile does with two records of a file: neither is used.
        for path in named_twice:
            del self._shard_of[path]
        if named_twice:
            shown = ", ".join(redact(p) for p in sorted(named_twice)[:3])
            not_used(f"{len(named_twice)} file(s) the index names twice ({shown})")
        self._shards: dict[str, HeadersFile] = {}
        self._changed: set[str] = set()
        self._lock = threading.Lock()

    def get(self, url: str):
        shard = self._shard_of.get(url)
        if shard is None or url in self._changed:
            return None
        return self._shard(shard).get(url)

    def _shard(self, part: str) -> HeadersFile:
        with self._lock:
            headers = self._shards.get(part)
            if headers is None:
                try:
                    records = _parquet(self.store, part)
                except pa.ArrowException as exc:
                    # Like a record that is not a header: its files' headers are read from
                    # the files (kept, so that it is not read again for each of them).
                    not_used(f"shard {redact(part)}, not Parquet ({shortened(str(exc))})")
                    records = pa.table({})
                headers = HeadersFile(records_to_collection(records, self.base))
                while len(self._shards) >= MAX_SHARDS:
                    self._shards.pop(next(iter(self._shards)))
                self._shards[part] = headers
            return headers

    def forget(self, url: str) -> None:
        self._changed.add(url)

    def subset(self, paths) -> HeadersFile:
        """The headers of these files (those it has) as one in-memory collection."""
        wanted = [p for p in set(paths) if p in self._shard_of and p not in self._changed]
        tables = []
        for part in sorted({self._shard_of[p] for p in wanted}):
            tables.append(self._shard(part)._table)
        if not tables:
            return HeadersFile(SCHEMA.empty_table())
        return HeadersFile(pa.concat_tables(tables)).subset(wanted)

    def __len__(self) -> int:
        return len(self._shard_of)


def _inside(part: str, base: str) -> bool:
    """True for a shard path under the collection's folder: relative, or a URL below it,
    and below the folder a plain path (segments of letters, digits, '.', '_', '-', '+'
    and '=', no '.' or '..'). Anything else may read elsewhere once a client decodes it:
    yarl turns '%2e%2e/' into '../' and normalises it away, Windows paths take '\\'."""
    resolved = resolve_path(part, base)
    if not resolved.startswith(base):
        return False
    return all(
        _SHARD_SEGMENT.fullmatch(segment) and segment not in (".", "..")
        for segment in resolved[len(base) :].split("/")
    )
