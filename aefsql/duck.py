"""DuckDB registration: the aef_* UDFs, the SQL macros from sql/, and fsspec filesystems."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .cache import DiskCache
from .catalog import (
    PUBLIC_CATALOG,
    PUBLIC_COLUMNS,
    Catalog,
    quote_literal,
    storage_options_for,
)
from .collection import CollectionHeaders, headers_to_table
from .errors import AefsqlError, CatalogError
from .io import DEFAULT_CONCURRENCY, ByteStore, duckdb_filesystems, redact
from .locate import locate
from .progress import Progress
from .sampling import BAND_NAMES, Sampler, Samples, band_indices, check_patch_size

EMBEDDING_TYPE = "STRUCT(" + ", ".join(f"{name} TINYINT" for name in BAND_NAMES) + ")"
ROW_EMBEDDING_TYPE = (
    "STRUCT(__aef_row BIGINT, "
    + ", ".join(f"{name} TINYINT" for name in BAND_NAMES)
    + ", aef_error VARCHAR)[]"
)
EMBEDDING_ARROW = pa.struct([(name, pa.int8()) for name in BAND_NAMES])
PATCH_ARROW = pa.list_(EMBEDDING_ARROW)
PLAN_TYPE = "STRUCT(points BIGINT, blocks BIGINT, requests BIGINT, bytes BIGINT)"
PLAN_ARROW = pa.struct([(f, pa.int64()) for f in ("points", "blocks", "requests", "bytes")])

SQL_FILES = ("aef_values.sql", "aef_functions.sql", "aef_index.sql", "aef_sample_points.sql")


@dataclass
class Session:
    """What the UDFs of one registration share: catalog, storage and caches."""

    catalog: Catalog
    sampler: Sampler
    udf_prefix: str | None = None  # the names its Python UDFs were created under

    def cancel(self) -> None:
        """Stop this session's reads: the running aef_* calls end with `Cancelled`."""
        self.sampler.store.cancelled.set()

    def resume(self) -> None:
        self.sampler.store.cancelled.clear()

    def install(self, con: duckdb.DuckDBPyConnection) -> None:
        """Make the aef_* functions callable on `con`: the session's Python UDFs (once per
        database instance: cursors share them) and the TEMP macros (per connection/cursor)."""
        url = self.catalog.url
        for fs in duckdb_filesystems(self.sampler.store, url):
            if con.filesystem_is_registered(fs.protocol[0]):
                con.unregister_filesystem(fs.protocol[0])
            con.register_filesystem(fs)
        if self.udf_prefix is None or not _function_exists(con, f"{self.udf_prefix}_sample"):
            self.udf_prefix = _create_functions(con, self)
        replacements = {
            "{udf}": self.udf_prefix,
            "{index_select}": self.catalog.index_sql(),
            "{catalog_url}": quote_literal(self.catalog.source),
        }
        for name in SQL_FILES:
            sql = _sql_text(name)
            for placeholder, text in replacements.items():
                sql = sql.replace(placeholder, text)
            con.execute(sql)

    def aef_sample(self, path, lon, lat) -> pa.StructArray:
        return _struct(self.sampler.sample(_objects(path), _floats(lon), _floats(lat)))

    def aef_sample_patch(self, path, lon, lat, size) -> pa.ListArray:
        """Per row: the size x size embeddings around (lon, lat) in one COG (see
        `Sampler.sample_patches`); NULL where the point is outside the raster or size is NULL.
        Every size is checked before anything is read or allocated."""
        urls, lon, lat = _objects(path), _floats(lon), _floats(lat)
        present = np.asarray(size.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        sizes = size.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        distinct = [int(s) for s in np.unique(sizes[present])]
        for wanted in distinct:
            check_patch_size(wanted)
        pieces = [pa.nulls(int((~present).sum()), PATCH_ARROW)]
        rows_of_pieces = [np.flatnonzero(~present)]
        for wanted in distinct:
            rows = np.flatnonzero(present & (sizes == wanted))
            pieces.append(self._patches(urls[rows], lon[rows], lat[rows], wanted))
            rows_of_pieces.append(rows)
        position = np.empty(len(urls), dtype=np.int64)
        position[np.concatenate(rows_of_pieces)] = np.arange(len(urls))
        return pa.concat_arrays(pieces).take(pa.array(position))

    def _patches(self, urls, lon, lat, size: int) -> pa.ListArray:
        samples = self.sampler.sample_patches(urls, lon, lat, size)
        area, centre = size * size, (size // 2) * size + size // 2
        own_pixel_covered = samples.covered[np.arange(len(urls)) * area + centre]
        return pa.ListArray.from_arrays(
            pa.array(np.arange(len(urls) + 1) * area, pa.int32()),
            _struct(samples),
            type=PATCH_ARROW,
            mask=pa.array(~own_pixel_covered),
        )

    def aef_locate(self, lon, lat, year) -> pa.StringArray:
        paths = locate(
            self.catalog.tiles(), self.sampler, _floats(lon), _floats(lat), _floats(year)
        )
        return pa.array(paths, type=pa.string())

    def aef_embedding(self, lon, lat, year) -> pa.StructArray:
        lon, lat = _floats(lon), _floats(lat)
        paths = locate(self.catalog.tiles(), self.sampler, lon, lat, _floats(year))
        return _struct(self.sampler.sample(paths, lon, lat))

    def sample_group(self, path, rows, lon, lat, bands, on_error) -> pa.ListArray:
        """One list of (row, bands, error) structs per group of points of one file.

        `on_error` 'null': a file that cannot be read gives its rows NULL bands and the error
        message instead of failing the query; 'raise' (the default) fails it.
        """
        rows, lon, lat = (_contiguous(c) for c in (rows, lon, lat))
        offsets = rows.offsets.to_numpy()
        offsets = offsets - offsets[0]  # a sliced list array's offsets do not start at 0
        counts = np.diff(offsets)
        wanted = band_indices(sorted({n for names in bands.to_pylist() for n in names or ()}))
        modes = set(on_error.to_pylist())
        if not modes <= {"raise", "null"}:
            raise AefsqlError(f"on_error must be 'raise' or 'null', not {sorted(modes)}")
        urls = np.repeat(_objects(path), counts)
        lons, lats = _floats(lon.flatten()), _floats(lat.flatten())
        errors = np.full(urls.size, None, dtype=object)
        try:
            samples = self.sampler.sample(urls, lons, lats, wanted, keep_blocks=False)
        except AefsqlError:
            if modes != {"null"}:
                raise
            samples = self._sample_each_file(urls, lons, lats, wanted, errors)
        embedding = _struct(samples, wanted)
        items = pa.StructArray.from_arrays(
            [rows.flatten().cast(pa.int64()), *embedding.flatten(), pa.array(errors, pa.string())],
            names=["__aef_row", *BAND_NAMES, "aef_error"],
        )
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), items)

    def _sample_each_file(self, urls, lons, lats, bands, errors) -> Samples:
        """Sample file by file, so that one unreadable file fails only its own rows."""
        merged = None
        for url in dict.fromkeys(urls):
            mine = urls == url
            part_urls = np.where(mine, urls, None)
            try:
                part = self.sampler.sample(part_urls, lons, lats, bands, keep_blocks=False)
            except AefsqlError as exc:
                errors[mine] = str(exc)
                continue
            merged = part if merged is None else merged.overlay(part, mine)
        if merged is None:  # every file failed
            merged = self.sampler.sample(np.full(urls.size, None), lons, lats, bands)
        return merged

    def use_collection(self, path: str) -> None:
        """Take every file's header from a read-ready collection instead of its COG."""
        try:
            with self.sampler.store.filesystem(path).open(path, "rb") as f:
                self.sampler.collection = CollectionHeaders(pq.read_table(f))
        except (OSError, pa.ArrowException, KeyError) as exc:
            raise CatalogError(f"collection {redact(path)} cannot be read: {exc}") from None

    def build_collection(self, output, years) -> pa.Int64Array:
        """Write the headers of the catalog's files (of `years`, default all) to `output`."""
        counts = []
        for target, wanted in zip(output.to_pylist(), years.to_pylist(), strict=True):
            if target is None:
                counts.append(None)
                continue
            tiles = self.catalog.tiles()
            chosen = tiles.path if wanted is None else tiles.path[np.isin(tiles.year, wanted)]
            headers = self.sampler.complete_headers(list(dict.fromkeys(chosen)))
            table = headers_to_table(headers)
            with self.sampler.store.filesystem(target).open(target, "wb") as f:
                pq.write_table(table, f)
            counts.append(table.num_rows)
        return pa.array(counts, type=pa.int64())

    def plan_group(self, path, lon, lat, bands) -> pa.StructArray:
        """The read plan of each group of points of one file."""
        lon, lat = _contiguous(lon), _contiguous(lat)
        paths = path.to_pylist()
        self.sampler.headers_for([p for p in paths if p is not None])  # all files at once
        plans = [
            asdict(self.sampler.plan(p, _floats(x.values), _floats(y.values), band_indices(names)))
            for p, x, y, names in zip(paths, lon, lat, bands.to_pylist(), strict=True)
        ]
        return pa.array(plans, type=PLAN_ARROW)


def _contiguous(column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _floats(column) -> np.ndarray:
    """A numeric Arrow column as float64, NULL as NaN."""
    return np.asarray(column.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False))


def _objects(column) -> np.ndarray:
    return np.asarray(column.to_pylist(), dtype=object)


def _struct(samples: Samples, bands: list[int] | None = None) -> pa.StructArray:
    """Arrow STRUCT(A00..A63) of samples of `bands` (default all): other bands, nodata and
    uncovered points are NULL."""
    n = samples.covered.size
    bands = range(len(BAND_NAMES)) if bands is None else bands
    columns = {band: k for k, band in enumerate(bands)}
    children = []
    for band in range(len(BAND_NAMES)):
        k = columns.get(band)
        if k is None:
            children.append(pa.nulls(n, pa.int8()))
        else:
            children.append(pa.array(samples.values[:, k], mask=~samples.band_valid(k)))
    return pa.StructArray.from_arrays(
        children, fields=list(EMBEDDING_ARROW), mask=pa.array(~samples.covered)
    )


def register(
    con: duckdb.DuckDBPyConnection, catalog: str | None = None, **options
) -> duckdb.DuckDBPyConnection:
    """Register every aef_* function on `con` (TEMP macros: per connection or cursor).

    `catalog`: path or URL of an AEF index parquet; default `$AEFSQL_CATALOG`, else the public
    AEF index. Options: `cache_dir` keeps every byte read (and the catalog) in this folder, so
    that re-runs read nothing from the network (default `$AEFSQL_CACHE_DIR`, else none);
    `collection` is a read-ready collection (see `build_collection`) whose headers are used
    instead of reading them (default `$AEFSQL_COLLECTION`); `concurrency` is the number of
    requests in flight; `progress` shows a progress line on stderr while sampling (None: when
    stderr is a terminal). The other options are fsspec storage options for the catalog's
    protocol (endpoint_url, anon, key/secret, …; default `$AEFSQL_STORAGE_OPTIONS`, JSON).
    """
    open_session(catalog, **options).install(con)
    return con


def open_session(
    catalog: str | None = None,
    *,
    cache_dir: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: bool | Progress | None = False,
    collection: str | None = None,
    **storage_options,
) -> Session:
    """The catalog, storage and caches that UDFs share (see `register` for the options)."""
    url = catalog or os.environ.get("AEFSQL_CATALOG") or PUBLIC_CATALOG
    if not storage_options and os.environ.get("AEFSQL_STORAGE_OPTIONS"):
        try:
            storage_options = json.loads(os.environ["AEFSQL_STORAGE_OPTIONS"])
        except json.JSONDecodeError as exc:
            raise CatalogError(f"AEFSQL_STORAGE_OPTIONS is not valid JSON: {exc}") from None
    cache_dir = cache_dir or os.environ.get("AEFSQL_CACHE_DIR")
    store = ByteStore(
        storage_options_for(url, storage_options),
        concurrency=concurrency,
        disk_cache=DiskCache(cache_dir) if cache_dir else None,
    )
    session = Session(
        catalog=Catalog(url, store, PUBLIC_COLUMNS if url == PUBLIC_CATALOG else None),
        sampler=Sampler(
            store,
            progress=progress if isinstance(progress, Progress) else Progress(enabled=progress),
        ),
    )
    collection = collection or os.environ.get("AEFSQL_COLLECTION")
    if collection:
        session.use_collection(collection)
    session.catalog.check()
    return session


def connect(database: str = ":memory:", catalog: str | None = None, **options):
    """A DuckDB connection with every aef_* function registered (see `register` for the
    options: cache_dir, concurrency and storage options)."""
    con = duckdb.connect(database)
    try:
        return register(con, catalog, **options)
    except BaseException:
        con.close()
        raise


def _function_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    rows = con.execute(
        "SELECT count(*) FROM duckdb_functions() WHERE function_name = ?", [name]
    ).fetchall()
    return rows[0][0] > 0


def _create_functions(con: duckdb.DuckDBPyConnection, session: Session) -> str:
    """Create the session's Python UDFs under fresh names; return their common prefix.

    UDFs belong to the database instance, so a second connection (or cursor) with another
    catalog cannot reuse the names; the public aef_* names are TEMP macros of each connection
    that call its own session's UDFs.
    """
    prefix = f"__aef_{secrets.token_hex(4)}"
    functions = [
        ("sample", session.aef_sample, ["VARCHAR", "DOUBLE", "DOUBLE"], EMBEDDING_TYPE),
        ("embedding", session.aef_embedding, ["DOUBLE", "DOUBLE", "INTEGER"], EMBEDDING_TYPE),
        ("locate", session.aef_locate, ["DOUBLE", "DOUBLE", "INTEGER"], "VARCHAR"),
        (
            "sample_patch",
            session.aef_sample_patch,
            ["VARCHAR", "DOUBLE", "DOUBLE", "INTEGER"],
            f"{EMBEDDING_TYPE}[]",
        ),
        (
            "sample_group",
            session.sample_group,
            ["VARCHAR", "BIGINT[]", "DOUBLE[]", "DOUBLE[]", "VARCHAR[]", "VARCHAR"],
            ROW_EMBEDDING_TYPE,
        ),
        ("build_collection", session.build_collection, ["VARCHAR", "INTEGER[]"], "BIGINT"),
        (
            "plan_group",
            session.plan_group,
            ["VARCHAR", "DOUBLE[]", "DOUBLE[]", "VARCHAR[]"],
            PLAN_TYPE,
        ),
    ]
    for name, fn, params, returns in functions:
        # "special": NULL inputs reach the function, which answers NULL for them itself.
        con.create_function(
            f"{prefix}_{name}", fn, params, returns, type="arrow", null_handling="special"
        )
    return prefix


def function_docs() -> dict[str, str]:
    """{macro name: the first sentence of the comment above it in sql/}: one source of truth."""
    docs = {}
    for file in SQL_FILES:
        comment: list[str] = []
        for line in _sql_text(file).splitlines():
            stripped = line.strip()
            if stripped.startswith("--"):
                comment.append(stripped.lstrip("- ").strip())
            elif stripped.startswith("CREATE OR REPLACE TEMP MACRO"):
                name = stripped.split("MACRO", 1)[1].split("(", 1)[0].strip()
                text = " ".join(c for c in comment if c)
                docs[name] = text.split(". ")[0].rstrip(".") + "." if text else ""
                comment = []
            else:  # a blank line or SQL: the comment above belongs to nothing
                comment = []
    return docs


def _sql_text(name: str) -> str:
    packaged = resources.files("aefsql") / "sql" / name
    if packaged.is_file():
        return packaged.read_text()
    # An editable install sees the repository, where sql/ sits beside the package.
    return (Path(__file__).resolve().parent.parent / "sql" / name).read_text()
