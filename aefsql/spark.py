"""aefsql on Apache Spark: `sample_points` over a Spark DataFrame, and `register` for Spark SQL
(`aef_sample_points` as a Python UDTF taking `TABLE(...)`, `aef_locate` as a scalar function).

The plan (docs/scale.md): the driver reads the catalog's tile table once and broadcasts it;
each row, once per year, gets the tile whose catalog box holds it (no read: the same key on
every run, as Spark requires of a shuffle's input); rows are repartitioned by (tile, year)
and sorted by y within a partition, so a task gets each tile's points together, in block-row
order; each (tile, year) run is sampled by the very query of `aefsql.sample_points`, which
locates every point exactly, in one aefsql session per Python worker (its header cache lives
across batches and tasks). A task's output is a function of its input rows alone, so a task
that fails and is rerun yields its partition's rows once.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from .duck.calls import table_call
from .duck.registration import install
from .duck.udfs import SessionUdfs
from .errors import AefsqlError, redact_text
from .geometry import geo
from .geometry.areas import area_from, centroid
from .headers.table import HeadersFile
from .kernels.coverage import warn_missing_years
from .kernels.locate import locate, locate_each
from .options import (
    OptionError,
    Options,
    added_columns,
    check_level,
    headers_option,
    resolve,
    speaks,
)
from .session import Session, open_session
from .storage.store import DEFAULT_CONCURRENCY, protocol_of

# PySpark 4.1 warns that it "does not yet fully support pandas >= 3.0.0" each time it checks
# the pandas version (on import, and on making each Arrow UDF): aefsql's Spark code runs on
# Arrow, and its users should not see that warning for calls they did not write.
PANDAS_3_WARNING = "PySpark does not yet fully support pandas"


@contextmanager
def _without_pandas_3_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PANDAS_3_WARNING, category=FutureWarning)
        yield


try:
    with _without_pandas_3_warning():
        from pyspark.sql import DataFrame, SparkSession
        from pyspark.sql.functions import arrow_udf, udtf
        from pyspark.sql.pandas.types import from_arrow_type, to_arrow_schema
        from pyspark.sql.types import StructField, StructType
        from pyspark.sql.udtf import (
            AnalyzeArgument,
            AnalyzeResult,
            OrderingColumn,
            PartitioningColumn,
        )
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "aefsql.spark needs PySpark 4.1 or later: pip install 'aefsql[spark]'"
    ) from exc

# The columns the first stage adds and the second drops: each row's year, its likely tile
# (None: in no catalog box) and its y in the points' CRS (the sort key within a tile).
YEAR, TILE, Y = "__aef_year", "__aef_path", "__aef_y"
HELPER_TYPES = {YEAR: pa.int32(), TILE: pa.string(), Y: pa.float64()}
# The options of the session itself, besides its storage options.
SESSION_OPTIONS = ("cache_dir", "concurrency", "allowed_hosts")
# The named arguments of each table function in Spark SQL, as in DuckDB.
CALL_PARAMETERS = {
    "aef_sample_points": (
        "years",
        "year",
        "x_column",
        "y_column",
        "geometry_column",
        "crs",
        "bands",
        "on_error",
        "as_vector",
        "status",
    ),
    "aef_zonal": ("years", "year", "geometry_column", "crs", "level", "on_error", "status"),
}
# The Arrow types of the columns the functions add, but for the bands (int8).
ADDED_TYPES = {
    "year": pa.int32(),
    "embedding": pa.list_(pa.float32()),
    "aef_error": pa.string(),
    "pixels": pa.int64(),
    "nodata_pixels": pa.int64(),
    "centroid_pixel": pa.bool_(),
    "status": pa.string(),
}
_TABLE = "__aef_points"
# Rows of one (tile, year) sampled in one query: more are split into several queries, each
# reading the blocks it needs (a block row on the boundary is read by both).
MAX_GROUP_ROWS = 1 << 18
# Sessions a Python worker keeps (one per sample_points call or registration).
MAX_SESSIONS = 4


@speaks("python")
@_without_pandas_3_warning()
def sample_points(
    df: DataFrame,
    *,
    years: int | Iterable[int] | None = None,
    year: int | Iterable[int] | None = None,
    x_column: str = "lon",
    y_column: str = "lat",
    geometry_column: str | None = None,
    crs=None,
    bands: list[str] | None = None,
    on_error: str = "raise",
    as_vector: bool = False,
    status: bool = False,
    partitions: int | None = None,
    catalog: str | None = None,
    cache_dir: str | None = None,
    headers: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    allowed_hosts: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    collection: str | None = None,
) -> DataFrame:
    """Every row of `df` (all its columns, unchanged) once per distinct year, with `year` and
    the sampled bands beside it (or `embedding` with `as_vector`, `aef_error` with
    on_error='null', and `status` with status=True): the contract of `aefsql.sample_points`,
    as a lazy Spark DataFrame.

    Parameters are those of `aefsql.sample_points`; `geometry_column` is WKB (BINARY).
    `headers`: a headers file (`aefsql.write_headers`; `collection` is its deprecated alias),
    read once here and broadcast (the files of `years` only), so executors read no COG header.
    `partitions`: the number of (tile, year) partitions (default: Spark's shuffle partitions,
    which adaptive execution coalesces). `cache_dir`, `concurrency`, `allowed_hosts` and
    `storage_options`: as for `aefsql.connect`, resolved here (with the AEFSQL_* variables of
    the driver's environment) and sent to the executors. Rows come back in no particular order,
    as Spark's do. Needs a classic SparkContext (broadcasts): not Spark Connect.
    """
    params = dict(
        years=years,
        year=year,
        x_column=x_column,
        y_column=y_column,
        crs=crs,
        geometry_column=geometry_column,
        bands=bands,
        on_error=on_error,
        as_vector=as_vector,
        status=status,
    )
    options = _options(cache_dir, concurrency, allowed_hosts, storage_options)
    headers = headers_option(headers, collection)
    return _run(df, "aef_sample_points", params, catalog, headers, partitions, options)


@speaks("python")
@_without_pandas_3_warning()
def zonal(
    df: DataFrame,
    *,
    years: int | Iterable[int] | None = None,
    year: int | Iterable[int] | None = None,
    geometry_column: str = "geom",
    crs=None,
    level: int = 0,
    on_error: str = "raise",
    status: bool = False,
    partitions: int | None = None,
    catalog: str | None = None,
    cache_dir: str | None = None,
    headers: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    allowed_hosts: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    collection: str | None = None,
) -> DataFrame:
    """Every row of a DataFrame of polygons (WKB in `geometry_column`, in `crs`) once per
    distinct year, its columns unchanged, with `year`, `pixels`, `nodata_pixels`,
    `centroid_pixel` and `embedding`: the contract of DuckDB's `aef_zonal`. Rows are
    partitioned by the tile of their centroid, so a task reads its tiles' blocks once for
    all its polygons (a polygon across tiles reads from its neighbours too). `on_error`:
    'null' keeps a row whose geometry is no usable area, and the polygon-years of a file that
    cannot be read, with NULL results and `aef_error`. `status`: a `status` column (valid,
    nodata, outside, no_year, error), as aef_zonal's `status := true`. Options as for
    `sample_points`.
    """
    params = dict(
        years=years,
        year=year,
        geometry_column=geometry_column,
        crs=crs,
        level=level,
        on_error=on_error,
        status=status,
    )
    options = _options(cache_dir, concurrency, allowed_hosts, storage_options)
    headers = headers_option(headers, collection)
    return _run(df, "aef_zonal", params, catalog, headers, partitions, options)


def _run(df, function, params, catalog, headers, partitions, options) -> DataFrame:
    """The two stages of a call, as the module's docstring says."""
    call = _checked_call(function, df.columns, params)  # before any read: fails at once
    shared, session = _shared(df.sparkSession, catalog, headers, options, call.chosen.years)
    warn_missing_years(session.catalog.tiles(), call.chosen.years)
    job = _Job(shared, call)
    located = df.mapInArrow(
        lambda batches: _locate_batches(job, batches),
        StructType([*df.schema.fields, *_fields(HELPER_TYPES)]),
    )
    keys = [TILE, YEAR]
    spread = located.repartition(partitions, *keys) if partitions else located.repartition(*keys)
    return spread.sortWithinPartitions(TILE, YEAR, Y).mapInArrow(
        lambda batches: _sample_batches(job, batches),
        StructType([*df.schema.fields, *call.added_fields()]),
    )


@speaks("python")
@_without_pandas_3_warning()
def register(
    spark: SparkSession,
    catalog: str | None = None,
    *,
    cache_dir: str | None = None,
    headers: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    allowed_hosts: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    collection: str | None = None,
) -> None:
    """Register aefsql's Spark SQL functions on `spark`:

    - `aef_sample_points(TABLE(points), years => 2024, ...)`: the contract of the DuckDB table
      function, its parameters as named constant arguments (x_column, y_column,
      geometry_column, crs, bands, on_error, as_vector, status). Rows are partitioned by
      tile (of the first year) and sorted by y for you: the call takes no PARTITION BY of
      its own.
    - `aef_zonal(TABLE(polygons), years => 2024, ...)`: the contract of DuckDB's `aef_zonal`
      (geometry_column, crs, level, on_error, status), partitioned by the tile of each
      polygon's centroid.
    - `aef_locate(lon, lat, year)`: the path of the tile that holds the point, or NULL, as
      DuckDB's `aef_locate`.

    `catalog`, `cache_dir`, `headers` (all of it; `collection` is its deprecated alias),
    `concurrency`, `allowed_hosts` and `storage_options` are read and broadcast as for
    `sample_points`.
    """
    options = _options(cache_dir, concurrency, allowed_hosts, storage_options)
    shared, _ = _shared(spark, catalog, headers_option(headers, collection), options, None)
    for function in CALL_PARAMETERS:
        spark.udtf.register(function, _table_udtf(shared, function))
    spark.udf.register("aef_locate", _locate_udf(shared))
    for kind in ("xy", "wkb", "area"):
        spark.udf.register(f"__aef_tile_{kind}", _tile_udf(shared, kind))


@dataclass(frozen=True)
class _Shared:
    """What every executor needs of one sample_points call or registration: picklable, the
    tile table and headers file broadcast."""

    key: str  # names the workers' session for it
    catalog: str
    options: dict = field(repr=False)  # may hold credentials
    tiles: object  # Broadcast of the catalog's TileTable
    headers: object | None  # Broadcast of a HeadersFile


@dataclass(frozen=True)
class _Call:
    """One call's checked parameters."""

    function: str  # aef_sample_points or aef_zonal
    chosen: Options
    x_column: str | None
    y_column: str | None
    geometry_column: str | None
    some_bands: bool  # bands named, rather than all 64
    level: int = 0

    @property
    def by_year(self) -> bool:
        """Points are sampled one year a query (stage one repeats them per year); polygons
        all years at once, each block of a year's tile decoded once for all of them."""
        return self.function == "aef_sample_points"

    @property
    def coordinates(self) -> list[str]:
        """The input columns DuckDB sees."""
        if self.geometry_column is not None:
            return [self.geometry_column]
        return [self.x_column, self.y_column]

    def added(self) -> list[str]:
        chosen = self.chosen
        return added_columns(
            self.function, chosen.bands, chosen.on_error, chosen.as_vector, chosen.status
        )

    def added_fields(self) -> list[StructField]:
        """The Spark fields of the added columns, of the types DuckDB gives them
        (tests/test_spark.py compares them)."""
        return _fields({name: ADDED_TYPES.get(name, pa.int8()) for name in self.added()})

    def sql(self, years: tuple[int, ...]) -> str:
        """The DuckDB query of this call over `_TABLE`, for `years`."""
        chosen = replace(self.chosen, years=years)
        if self.function == "aef_zonal":
            call = table_call(
                "aef_zonal",
                _TABLE,
                years=years,
                geometry_column=self.geometry_column,
                crs=chosen.crs,
                level=int(self.level),
                on_error=chosen.on_error,
                status=chosen.status,
            )
            return f"SELECT * FROM {call}"
        return _sample_sql(
            _TABLE, chosen, self.x_column, self.y_column, self.geometry_column, self.some_bands
        )


def _sample_sql(
    table: str,
    chosen: Options,
    x_column: str,
    y_column: str,
    geometry_column: str | None,
    some_bands: bool,
) -> str:
    """The aef_sample_points call over `table` with resolved parameters (`some_bands`: the
    caller named bands, rather than all 64)."""
    by_xy = geometry_column is None
    call = table_call(
        "aef_sample_points",
        table,
        years=chosen.years,
        crs=chosen.crs,
        geometry_column=geometry_column,
        x_column=x_column if by_xy else None,
        y_column=y_column if by_xy else None,
        bands=chosen.bands if some_bands else None,
        on_error=chosen.on_error,
        as_vector=chosen.as_vector,
        status=chosen.status,
    )
    return f"SELECT * FROM {call}"


@dataclass(frozen=True)
class _Job:
    shared: _Shared
    call: _Call
    max_group_rows: int = MAX_GROUP_ROWS


def _fields(types: dict) -> list[StructField]:
    return [StructField(name, from_arrow_type(t), True) for name, t in types.items()]


def _checked_call(function: str, columns: list[str], params: dict) -> _Call:
    """A call's parameters checked against its table's columns (options.resolve)."""
    given = {k: v for k, v in params.items() if v is not None}
    ours = [c for c in columns if c.startswith("__aef_")]
    if ours:
        raise AefsqlError(
            f"column {ours[0]}: names starting with __aef_ are aefsql's own; rename it"
        )
    level = given.pop("level", 0)
    if function == "aef_zonal":
        check_level(level)
        given.setdefault("geometry_column", "geom")
        given.update(x_column=None, y_column=None)
    chosen = resolve(function=function, columns=columns, **given)
    return _Call(
        function=function,
        chosen=chosen,
        x_column=given.get("x_column", "lon"),
        y_column=given.get("y_column", "lat"),
        geometry_column=given.get("geometry_column"),
        some_bands=bool(given.get("bands")),
        level=level,
    )


def _shared(spark, catalog, headers_file, options, years) -> tuple[_Shared, Session]:
    """Read the catalog (and headers file: of `years` only, if given) once, and broadcast."""
    context = spark.sparkContext
    check_workers(context)
    session = open_session(catalog, headers=headers_file, **options)
    tiles = session.catalog.tiles()
    headers = session.engine.headers.file
    if headers is not None and (years is not None or not isinstance(headers, HeadersFile)):
        # The files of these years only; a sharded (Rasteret) collection is read here whole
        # for a registration, whose calls may ask for any year.
        wanted = np.ones(tiles.year.size, bool) if years is None else np.isin(tiles.year, years)
        headers = headers.subset(tiles.path[wanted])
    shared = _Shared(
        key=uuid.uuid4().hex,
        catalog=session.catalog.url,
        options=_executor_options(session, options),
        tiles=context.broadcast(tiles),
        headers=None if headers is None else context.broadcast(headers),
    )
    return shared, session


# Evaluated by an executor's Python (eval, a builtin, pickles without aefsql): imports what
# aefsql's tasks import, and says which Python that is.
_WORKER_PROBE = "(__import__('aefsql.duck.udfs'), __import__('sys').executable)[1]"
_CHECKED_CONTEXTS: set[str] = set()  # the applicationIds whose executors import aefsql


def check_workers(context) -> None:
    """Make sure the executors' Python can import aefsql, once per SparkContext.

    In local mode the workers are started from `context.pythonExec`, which PySpark takes from
    $PYSPARK_PYTHON or else `python3` on PATH: not this Python when its venv is not
    activated. There they run the driver's Python (`sys.executable`), or the
    `spark.pyspark.python` the user configured, unless $PYSPARK_PYTHON says otherwise. On a
    cluster the executors' Python is the cluster's: a one-task job checks that it imports
    aefsql, and otherwise the error says so in one line, with the fix."""
    if context.master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        context.pythonExec = context.getConf().get("spark.pyspark.python") or sys.executable
    key = context.applicationId
    if key in _CHECKED_CONTEXTS:
        return
    try:
        context.parallelize([_WORKER_PROBE], 1).map(eval).collect()
    except Exception as exc:
        raise AefsqlError(
            f"the Spark executors' Python ({context.pythonExec}) cannot import aefsql "
            f"({_last_error_line(str(exc))}): install aefsql there, or set "
            "spark.pyspark.python (or $PYSPARK_PYTHON) to a Python that has it"
        ) from None
    _CHECKED_CONTEXTS.add(key)


def _last_error_line(text: str) -> str:
    """The exception line of a Python traceback quoted in a Spark error (its last
    `SomeError: why`), else the first line."""
    found = re.findall(r"^(\w+(?:Error|Exception): .*)$", text, flags=re.MULTILINE)
    return found[-1].strip() if found else text.strip().splitlines()[0]


def _options(cache_dir, concurrency, allowed_hosts, storage_options) -> dict:
    """The session options of a call, as `open_session` takes them."""
    return dict(
        cache_dir=cache_dir,
        concurrency=concurrency,
        allowed_hosts=allowed_hosts,
        storage_options=storage_options,
    )


def _executor_options(session: Session, options: dict) -> dict:
    """The options executors open their sessions with: the session options given, and the
    storage options the driver resolved (from `storage_options`, `$AEFSQL_STORAGE_OPTIONS`
    or the public bucket's defaults), since executors do not share the driver's
    environment."""
    storage = session.engine.store.options.get(protocol_of(session.catalog.url), {})
    return {**{k: options[k] for k in SESSION_OPTIONS}, "storage_options": storage}


class _Worker:
    """One aefsql session and DuckDB connection in a Python worker."""

    def __init__(self, shared: _Shared):
        self.session: Session = open_session(
            shared.catalog, tiles=shared.tiles.value, environment=False, **shared.options
        )
        if shared.headers is not None:
            headers: HeadersFile = shared.headers.value
            self.session.engine.headers.file = headers
        # One thread: a task has one core, and aefsql reads and decodes on its own threads.
        self.con = duckdb.connect(config={"threads": 1})
        # (the driver says what comes back empty, and why: see `_run`)
        install(self.con, SessionUdfs(self.session, warn_empty=False))

    def query(self, table: pa.Table, sql: str) -> pa.Table:
        self.con.register(_TABLE, table)
        try:
            return self.con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:  # its message may quote a URL as given, secrets too
            raise AefsqlError(redact_text(str(exc))) from None
        finally:
            self.con.unregister(_TABLE)

    def close(self) -> None:
        self.con.close()


_WORKERS: OrderedDict[str, _Worker] = OrderedDict()
_WORKERS_LOCK = threading.Lock()


def _worker(shared: _Shared) -> _Worker:
    """This process's session for `shared`, made on first use (Spark reuses Python workers
    across tasks, so the header cache outlives a task)."""
    with _WORKERS_LOCK:
        worker = _WORKERS.get(shared.key)
        if worker is None:
            while len(_WORKERS) >= MAX_SESSIONS:
                _WORKERS.popitem(last=False)[1].close()
            worker = _WORKERS[shared.key] = _Worker(shared)
        _WORKERS.move_to_end(shared.key)
        return worker


def _keys(call: _Call, table) -> tuple[np.ndarray, np.ndarray]:
    """The x and y each row is partitioned by, in the call's CRS: the point, or a polygon's
    centroid; NaN where missing or unusable (the query then says what is wrong with it)."""
    if call.function == "aef_zonal":
        return _centroids(table.column(call.geometry_column).to_pylist(), call.chosen.crs)
    if call.geometry_column is not None:
        return geo.points_from_wkb(table.column(call.geometry_column).to_pylist())
    return geo.floats(table.column(call.x_column)), geo.floats(table.column(call.y_column))


def _centroids(blobs: list, crs: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.full(len(blobs), np.nan), np.full(len(blobs), np.nan)
    for i, blob in enumerate(blobs):
        try:
            x[i], y[i] = centroid(area_from(blob, crs))
        except (AefsqlError, TypeError, ValueError):  # NULL, not a polygon: no key
            continue
    return x, y


def _likely_tiles(shared: _Shared, x, y, years, crs: int) -> pa.Array:
    """The tile whose catalog footprint holds each point (no read: the same every run)."""
    return pa.array(locate(shared.tiles.value, None, x, y, years, crs), type=pa.string())


def _locate_batches(job: _Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Stage one: every row with its likely tile and y (the helper columns): once per year
    for points, once (keyed by the first year) for polygons."""
    call = job.call
    years = call.chosen.years if call.by_year else call.chosen.years[:1]
    for batch in batches:
        x, y = _keys(call, batch)
        for year in years:
            tiles = _likely_tiles(job.shared, x, y, np.full(x.size, year), call.chosen.crs)
            columns = [pa.array(np.full(x.size, year), pa.int32()), tiles, pa.array(y)]
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, *columns], names=[*batch.schema.names, YEAR, TILE, Y]
            )


def _sample_batches(job: _Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Stage two: each (tile, year) run of a sorted partition sampled in one query."""
    call = job.call
    worker = _worker(job.shared)
    for group in _groups(batches, job.max_group_rows):
        rows = group.drop_columns([YEAR, TILE, Y])
        index, added = _sampled(worker, call, rows, group[YEAR][0].as_py())
        if index.size != rows.num_rows:  # polygons, once per year
            rows = rows.take(pa.array(index))
        for name, column in zip(added.column_names, added.columns, strict=True):
            rows = rows.append_column(name, column)
        yield from rows.combine_chunks().to_batches()


def _sampled(
    worker: _Worker, call: _Call, rows: pa.Table, year: int
) -> tuple[np.ndarray, pa.Table]:
    """The added columns of a group's rows in `year` (points) or every year (polygons), in
    the call's Spark types, and the row of `rows` each line belongs to."""
    years = (year,) if call.by_year else call.chosen.years
    added = worker.query(rows.select(call.coordinates), call.sql(years))
    if added.num_rows != rows.num_rows * len(years):  # rows in order, then years
        raise AefsqlError(f"{call.function} gave {added.num_rows} rows for {rows.num_rows}")
    target = to_arrow_schema(StructType(call.added_fields()))
    index = np.repeat(np.arange(rows.num_rows), len(years))
    return index, added.select(call.added()).cast(target)


def _groups(batches: Iterable[pa.RecordBatch], most: int) -> Iterator[pa.Table]:
    """The runs of equal (tile, year) in sorted batches, as tables of at most `most` rows."""
    pending: list[pa.RecordBatch] = []
    held, key = 0, None
    for batch in batches:
        tiles = batch.column(TILE).to_numpy(zero_copy_only=False)
        years = batch.column(YEAR).to_numpy(zero_copy_only=False)
        changes = np.flatnonzero((tiles[1:] != tiles[:-1]) | (years[1:] != years[:-1])) + 1
        starts = [0, *changes.tolist()]
        ends = [*changes.tolist(), batch.num_rows]
        for start, end in zip(starts, ends, strict=True):
            if start == end:
                continue
            run_key = (tiles[start], years[start])
            if pending and run_key != key:
                yield pa.Table.from_batches(pending)
                pending, held = [], 0
            key = run_key
            while start < end:
                take = min(end - start, most - held)
                pending.append(batch.slice(start, take))
                held += take
                start += take
                if held == most:
                    yield pa.Table.from_batches(pending)
                    pending, held = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


def _locate_udf(shared: _Shared):
    """aef_locate(lon, lat, year) for Spark SQL: the exact rule, as DuckDB's."""

    def aef_locate(lon: pa.Array, lat: pa.Array, year: pa.Array) -> pa.Array:
        session = _worker(shared).session
        x, y, years = geo.floats(lon), geo.floats(lat), geo.floats(year)
        codes = np.full(x.size, geo.WGS84)
        tiles = session.catalog.tiles()
        paths = locate_each(tiles, session.engine.headers, x, y, years, codes).path
        return pa.array(paths, type=pa.string())

    return arrow_udf(aef_locate, "string")


def _tile_udf(shared: _Shared, kind: str):
    """The partition key of the table functions: the likely tile of (x, y), of a WKB point
    or of a WKB polygon's centroid, in the constant `crs`."""

    def tile_xy(x: pa.Array, y: pa.Array, year: pa.Array, crs: pa.Array) -> pa.Array:
        return _key_tiles(shared, geo.floats(x), geo.floats(y), year, crs)

    def tile_wkb(wkb: pa.Array, year: pa.Array, crs: pa.Array) -> pa.Array:
        return _key_tiles(shared, *geo.points_from_wkb(wkb.to_pylist()), year, crs)

    def tile_area(wkb: pa.Array, year: pa.Array, crs: pa.Array) -> pa.Array:
        code = crs[0].as_py() if len(crs) else geo.WGS84
        return _key_tiles(shared, *_centroids(wkb.to_pylist(), code), year, crs)

    function = {"xy": tile_xy, "wkb": tile_wkb, "area": tile_area}[kind]
    return arrow_udf(function, "string")


def _key_tiles(shared: _Shared, x, y, year: pa.Array, crs: pa.Array) -> pa.Array:
    code = crs[0].as_py() if len(crs) else geo.WGS84
    return _likely_tiles(shared, x, y, geo.floats(year), code)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _partition_key(call: _Call) -> str:
    """The SQL of the likely tile (of the first year) that a table function partitions by."""
    at = f"{call.chosen.years[0]}, {call.chosen.crs}"
    if call.function == "aef_zonal":
        return f"__aef_tile_area({_quote(call.geometry_column)}, {at})"
    if call.geometry_column is not None:
        return f"__aef_tile_wkb({_quote(call.geometry_column)}, {at})"
    x, y = (f"CAST({_quote(c)} AS DOUBLE)" for c in (call.x_column, call.y_column))
    return f"__aef_tile_xy({x}, {y}, {at})"


def _table_udtf(shared: _Shared, function: str):
    """`function` (aef_sample_points, aef_zonal) for Spark SQL: a Python UDTF whose
    `analyze` checks the call, gives the output schema and asks Spark to partition the table
    by tile and sort it by y; it buffers a partition's rows and samples them as
    `_sample_batches` does."""
    parameters = CALL_PARAMETERS[function]

    class AefTableFunction:
        @staticmethod
        def analyze(table: AnalyzeArgument, **params: AnalyzeArgument) -> AnalyzeResult:
            if not table.isTable:
                raise AefsqlError(f"{function} takes TABLE(...) first")
            unknown = sorted(set(params) - set(parameters))
            if unknown:
                raise AefsqlError(
                    f"{function} has no parameter {', '.join(unknown)}; it takes "
                    + ", ".join(parameters)
                )
            for name, arg in params.items():
                if not arg.isConstantExpression:
                    raise AefsqlError(f"{function}: {name} must be a constant")
            schema = table.dataType
            try:
                call = _checked_call(
                    function, schema.names, {k: a.value for k, a in params.items()}
                )
            except OptionError as exc:
                raise exc.phrased("spark_sql") from None
            # (Spark SQL has no ST_Y to sort WKB by without Sedona.)
            order = [] if call.geometry_column else [OrderingColumn(_quote(call.y_column))]
            return AnalyzeResult(
                schema=StructType([*schema.fields, *call.added_fields()]),
                partitionBy=[PartitioningColumn(_partition_key(call))],
                orderBy=order,
            )

        def __init__(self):
            self.rows: list = []
            self.call: _Call | None = None

        def eval(self, row, **params):
            if self.call is None:
                self.call = _checked_call(function, list(row.__fields__), params)
            self.rows.append(row)
            if len(self.rows) >= MAX_GROUP_ROWS:
                yield from self._flush()

        def terminate(self):
            yield from self._flush()

        def _flush(self):
            call, rows = self.call, self.rows
            self.rows = []
            if not rows:
                return
            table = pa.table({name: [r[name] for r in rows] for name in call.coordinates})
            worker = _worker(shared)
            for year in call.chosen.years if call.by_year else call.chosen.years[:1]:
                index, added = _sampled(worker, call, table, year)
                for i, values in zip(index, added.to_pylist(), strict=True):
                    yield (*rows[i], *values.values())

    AefTableFunction.__name__ = function
    return udtf(AefTableFunction, useArrow=True)
