"""aefsql on Apache Spark: `sample_points` over a Spark DataFrame, and `register` for Spark SQL
(`aef_sample_points` as a Python UDTF taking `TABLE(...)`, `aef_locate` as a scalar function).

The plan (docs/scale.md): each point's tile is located against the catalog's tile table,
which the driver reads once and broadcasts; rows are repartitioned by (tile, year) and sorted
by y within a partition, so that a task gets each tile's points together, in block-row order,
and reads each block once; each (tile, year) group is sampled by the very query of
`aefsql.sample_points` in one aefsql session per Python worker, whose header and block caches
live across batches and tasks. A task's output is a function of its input rows alone, so a
task that fails and is rerun yields its partition's rows once.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import duckdb
import numpy as np
import pyarrow as pa

from .api import sample_sql, warn_missing_years
from .catalog import quote_literal
from .collection import CollectionHeaders
from .duck import Session, open_session
from .errors import AefsqlError, redact_text
from .io import protocol_of
from .options import Options, added_columns, resolve

try:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.functions import arrow_udf, udtf
    from pyspark.sql.pandas.types import from_arrow_type, to_arrow_schema
    from pyspark.sql.types import StructField, StructType
    from pyspark.sql.udtf import AnalyzeArgument, AnalyzeResult, OrderingColumn, PartitioningColumn
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "aefsql.spark needs PySpark 4.1 or later: pip install 'aefsql[spark]'"
    ) from exc

# The columns the first stage adds and the second drops: each row's year, its tile (None:
# in none) and its y in the points' CRS (the sort key within a tile).
YEAR, TILE, Y = "__aef_year", "__aef_path", "__aef_y"
HELPER_TYPES = {YEAR: pa.int32(), TILE: pa.string(), Y: pa.float64()}
# The options of the session itself; the others are storage options.
SESSION_OPTIONS = ("cache_dir", "concurrency", "allowed_hosts")
_TABLE = "__aef_points"
# Rows of one (tile, year) sampled in one query: more are split into several queries, which
# may each read the blocks they share (the block cache keeps the latest).
MAX_GROUP_ROWS = 1 << 18
# Sessions a Python worker keeps (one per sample_points call or registration).
MAX_SESSIONS = 4


def sample_points(
    df: DataFrame,
    years: int | Iterable[int] | None = None,
    *,
    year: int | Iterable[int] | None = None,
    x_column: str = "lon",
    y_column: str = "lat",
    crs=None,
    geometry_column: str | None = None,
    bands: list[str] | None = None,
    catalog: str | None = None,
    collection: str | None = None,
    on_error: str = "raise",
    as_vector: bool = False,
    partitions: int | None = None,
    **options,
) -> DataFrame:
    """Every row of `df` (all its columns, unchanged) once per distinct year, with `year` and
    the sampled bands beside it (or `embedding` with `as_vector`, and `aef_error` with
    on_error='null'): the contract of `aefsql.sample_points`, as a lazy Spark DataFrame.

    Parameters are those of `aefsql.sample_points`; `geometry_column` is WKB (BINARY).
    `collection`: a read-ready collection of headers (`aefsql.build_collection`), read once
    here and broadcast, so executors read no COG header. `partitions`: the number of
    (tile, year) partitions (default: Spark's shuffle partitions, which adaptive execution
    coalesces). `options`: cache_dir, concurrency and the storage options, as for
    `aefsql.connect`; every executor must reach the tiles with them. Rows come back in no
    particular order, as Spark's do.
    """
    job = _job(
        SparkSession.active(),
        catalog,
        collection,
        options,
        df.schema,
        years=years,
        year=year,
        crs=crs,
        bands=bands,
        on_error=on_error,
        as_vector=as_vector,
        x_column=x_column,
        y_column=y_column,
        geometry_column=geometry_column,
    )
    located = df.mapInArrow(
        lambda batches: _locate_batches(job, batches),
        StructType([*df.schema.fields, *job.helper_fields()]),
    )
    keys = [TILE, YEAR]
    spread = located.repartition(partitions, *keys) if partitions else located.repartition(*keys)
    return spread.sortWithinPartitions(TILE, YEAR, Y).mapInArrow(
        lambda batches: _sample_batches(job, batches),
        StructType([*df.schema.fields, *job.added_fields()]),
    )


def register(
    spark: SparkSession,
    catalog: str | None = None,
    *,
    collection: str | None = None,
    **options,
) -> None:
    """Register aefsql's Spark SQL functions on `spark`:

    - `aef_sample_points(TABLE(points), years => 2024, ...)`: the contract of the DuckDB table
      function, with its parameters as named arguments (x_column, y_column, geometry_column,
      crs, bands, on_error, as_vector). Rows are partitioned by the tile of the first year and
      sorted by y for you: the call takes no PARTITION BY of its own.
    - `aef_locate(lon, lat, year)`: the path of the tile that holds the point, or NULL.

    `catalog`, `collection` and `options` are read and broadcast as for `sample_points`.
    """
    base = _job(spark, catalog, collection, options, StructType([]), years=2024)
    spark.udtf.register("aef_sample_points", _sample_udtf(base))
    spark.udf.register("aef_locate", _locate_udf(base, "x", "y", None, 4326))
    spark.udf.register("__aef_tile_xy", _tile_udf(base, geometry=False))
    spark.udf.register("__aef_tile_wkb", _tile_udf(base, geometry=True))


@dataclass(frozen=True)
class _Job:
    """What executors need for one call: picklable, the catalog and collection broadcast."""

    key: str  # names the workers' session for this job
    catalog: str
    options: dict
    tiles: object  # Broadcast of the catalog's TileTable
    collection: object | None  # Broadcast of a CollectionHeaders
    chosen: Options
    x_column: str
    y_column: str
    geometry_column: str | None
    some_bands: bool

    @property
    def coordinates(self) -> list[str]:
        """The input columns DuckDB sees."""
        if self.geometry_column is not None:
            return [self.geometry_column]
        return [self.x_column, self.y_column]

    def added(self) -> list[str]:
        return added_columns(
            "aef_sample_points", self.chosen.bands, self.chosen.on_error, self.chosen.as_vector
        )

    def added_fields(self) -> list[StructField]:
        """The Spark fields of the added columns: the types aef_sample_points gives them."""
        types = {"year": pa.int32(), "embedding": pa.list_(pa.float32()), "aef_error": pa.string()}
        return [
            StructField(name, from_arrow_type(types.get(name, pa.int8())), True)
            for name in self.added()
        ]

    @staticmethod
    def helper_fields() -> list[StructField]:
        return [StructField(name, from_arrow_type(t), True) for name, t in HELPER_TYPES.items()]

    def tiles_sql(self, years: tuple[int, ...]) -> str:
        return (
            f"SELECT * FROM __aef_tiles({quote_literal(_TABLE)}, "
            f"[{', '.join(map(str, years))}], {self.chosen.crs}, "
            f"{quote_literal(self.x_column)}, {quote_literal(self.y_column)}, "
            + ("NULL" if self.geometry_column is None else quote_literal(self.geometry_column))
            + ")"
        )


def _job(spark, catalog, collection, options, schema: StructType, **params) -> _Job:
    """Check the call on the driver, read the catalog (and collection) once, broadcast them."""
    names = [f.name for f in schema.fields] or None
    chosen = resolve(function="sample_points", columns=names, **params)
    session = open_session(catalog, collection=collection, **options)
    if names is not None:
        warn_missing_years(session, chosen.years)
    context = spark.sparkContext
    headers = session.sampler.collection
    return _Job(
        key=uuid.uuid4().hex,
        catalog=session.catalog.url,
        options=_executor_options(session, options),
        tiles=context.broadcast(session.catalog.tiles()),
        collection=None if headers is None else context.broadcast(headers),
        chosen=chosen,
        x_column=params["x_column"] if "x_column" in params else "lon",
        y_column=params["y_column"] if "y_column" in params else "lat",
        geometry_column=params.get("geometry_column"),
        some_bands=bool(params.get("bands")),
    )


def _executor_options(session: Session, options: dict) -> dict:
    """The options executors open their sessions with: the session options given, and the
    storage options the driver resolved (from `options`, `$AEFSQL_STORAGE_OPTIONS` or the
    public bucket's defaults), since executors do not share the driver's environment."""
    storage = session.sampler.store.options.get(protocol_of(session.catalog.url), {})
    return {**storage, **{k: v for k, v in options.items() if k in SESSION_OPTIONS}}


class _Worker:
    """One aefsql session and DuckDB connection in a Python worker, for one job."""

    def __init__(self, job: _Job):
        self.session: Session = open_session(job.catalog, tiles=job.tiles.value, **job.options)
        if job.collection is not None:
            headers: CollectionHeaders = job.collection.value
            self.session.sampler.collection = headers
        self.con = duckdb.connect()
        self.session.install(self.con)

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


def _worker(job: _Job) -> _Worker:
    """This process's session for `job`, made on first use (Spark reuses Python workers
    across tasks, so header and block caches outlive a task)."""
    with _WORKERS_LOCK:
        worker = _WORKERS.get(job.key)
        if worker is None:
            while len(_WORKERS) >= MAX_SESSIONS:
                _WORKERS.popitem(last=False)[1].close()
            worker = _WORKERS[job.key] = _Worker(job)
        _WORKERS.move_to_end(job.key)
        return worker


def _locate_batches(job: _Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Stage one: every row once per year, with its tile and y (the helper columns)."""
    worker = _worker(job)
    for batch in batches:
        table = pa.Table.from_batches([batch])
        found = worker.query(table.select(job.coordinates), job.tiles_sql(job.chosen.years))
        rows = pa.array(found["__aef_row"].to_numpy() - 1)
        out = table.take(rows)
        for name, type_ in HELPER_TYPES.items():
            out = out.append_column(name, found[name].cast(type_))
        yield from out.combine_chunks().to_batches()


def _sample_batches(job: _Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Stage two: each (tile, year) group of a sorted partition sampled in one query."""
    worker = _worker(job)
    target = to_arrow_schema(StructType(job.added_fields()))
    for group in _groups(batches, MAX_GROUP_ROWS):
        year = group[YEAR][0].as_py()
        rows = group.drop_columns([YEAR, TILE, Y])
        sql = sample_sql(
            _TABLE,
            replace(job.chosen, years=(year,)),
            job.x_column,
            job.y_column,
            job.geometry_column,
            job.some_bands,
        )
        added = worker.query(rows.select(job.coordinates), sql)
        if added.num_rows != rows.num_rows:  # one year: one row per input row, in order
            raise AefsqlError(f"sampled {added.num_rows} rows of {rows.num_rows}")
        added = added.select(job.added()).cast(target)
        for name, column in zip(added.column_names, added.columns, strict=True):
            rows = rows.append_column(name, column)
        yield from rows.combine_chunks().to_batches()


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


def _tile_paths(job: _Job, table: pa.Table, years: np.ndarray) -> pa.Array:
    """The tile of each row of `table` (job.coordinates) in its own year, or None."""
    paths = np.full(table.num_rows, None, dtype=object)
    worker = _worker(job)
    for year in np.unique(years[~np.isnan(years)]):
        mine = np.flatnonzero(years == year)
        found = worker.query(table.take(pa.array(mine)), job.tiles_sql((int(year),)))
        paths[mine] = found[TILE].to_numpy(zero_copy_only=False)
    return pa.array(paths, type=pa.string())


def _floats(array: pa.Array) -> np.ndarray:
    return array.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _locate_udf(base: _Job, x: str, y: str, geometry: str | None, crs: int):
    """aef_locate(lon, lat, year) for Spark SQL."""
    job = replace(
        base, x_column=x, y_column=y, geometry_column=geometry, chosen=replace(base.chosen, crs=crs)
    )

    def aef_locate(lon: pa.Array, lat: pa.Array, year: pa.Array) -> pa.Array:
        table = pa.table({x: lon.cast(pa.float64()), y: lat.cast(pa.float64())})
        return _tile_paths(job, table, _floats(year))

    return arrow_udf(aef_locate, "string")


def _tile_udf(base: _Job, geometry: bool):
    """The partition key of aef_sample_points: the tile of (x, y) or a WKB point in `crs`."""

    def tile_xy(x: pa.Array, y: pa.Array, year: pa.Array, crs: pa.Array) -> pa.Array:
        return _tile_paths(_keyed(base, crs, None), pa.table({"x": x, "y": y}), _floats(year))

    def tile_wkb(wkb: pa.Array, year: pa.Array, crs: pa.Array) -> pa.Array:
        return _tile_paths(_keyed(base, crs, "g"), pa.table({"g": wkb}), _floats(year))

    return arrow_udf(tile_wkb if geometry else tile_xy, "string")


def _keyed(base: _Job, crs: pa.Array, geometry: str | None) -> _Job:
    code = int(crs[0].as_py()) if len(crs) else 4326
    return replace(
        base,
        x_column="x",
        y_column="y",
        geometry_column=geometry,
        chosen=replace(base.chosen, crs=code),
    )


# The named arguments of aef_sample_points in Spark SQL, as in DuckDB.
UDTF_PARAMETERS = (
    "years",
    "year",
    "x_column",
    "y_column",
    "geometry_column",
    "crs",
    "bands",
    "on_error",
    "as_vector",
)


def _call_job(base: _Job, columns: list[str], params: dict) -> _Job:
    """The job of one aef_sample_points call: its parameters checked against its table's
    columns."""
    given = {k: v for k, v in params.items() if v is not None}
    chosen = resolve(function="aef_sample_points", columns=columns, **given)
    return replace(
        base,
        chosen=chosen,
        x_column=given.get("x_column", "lon"),
        y_column=given.get("y_column", "lat"),
        geometry_column=given.get("geometry_column"),
        some_bands=bool(given.get("bands")),
    )


def _sample_udtf(base: _Job):
    """aef_sample_points for Spark SQL: a Python UDTF that asks Spark to partition its table
    by tile (of the first year) and sort it by y, buffers a partition's rows and samples them
    with `_sample_batches`."""

    class AefSamplePoints:
        @staticmethod
        def analyze(points: AnalyzeArgument, **params: AnalyzeArgument) -> AnalyzeResult:
            if not points.isTable:
                raise AefsqlError("aef_sample_points takes TABLE(points) first")
            unknown = sorted(set(params) - set(UDTF_PARAMETERS))
            if unknown:
                raise AefsqlError(
                    f"aef_sample_points has no parameter {', '.join(unknown)}; it takes "
                    + ", ".join(UDTF_PARAMETERS)
                )
            for name, arg in params.items():
                if not arg.isConstantExpression:
                    raise AefsqlError(f"aef_sample_points: {name} must be a constant")
            schema = points.dataType
            job = _call_job(base, schema.names, {k: a.value for k, a in params.items()})
            return AnalyzeResult(
                schema=StructType([*schema.fields, *job.added_fields()]),
                partitionBy=[PartitioningColumn(_partition_key(job))],
                # (Spark SQL has no ST_Y to sort WKB points by without Sedona.)
                orderBy=[] if job.geometry_column else [OrderingColumn(_quote(job.y_column))],
            )

        def __init__(self):
            self.rows: list = []
            self.job: _Job | None = None

        def eval(self, row, **params):
            if self.job is None:
                self.job = _call_job(base, list(row.__fields__), params)
            self.rows.append(row)
            if len(self.rows) >= MAX_GROUP_ROWS:
                yield from self._flush()

        def terminate(self):
            yield from self._flush()

        def _flush(self):
            job, rows = self.job, self.rows
            self.rows = []
            if not rows:
                return
            table = pa.table({name: [getattr(r, name) for r in rows] for name in job.coordinates})
            for year in job.chosen.years:
                group = table.append_column(YEAR, pa.array([year] * len(rows), pa.int32()))
                group = group.append_column(TILE, pa.nulls(len(rows), pa.string()))
                group = group.append_column(Y, pa.nulls(len(rows), pa.float64()))
                offset = 0
                for batch in _sample_batches(job, iter(group.to_batches())):
                    for k, values in enumerate(batch.select(job.added()).to_pylist()):
                        yield (*rows[offset + k], *values.values())
                    offset += batch.num_rows

    return udtf(AefSamplePoints, useArrow=True)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _partition_key(job: _Job) -> str:
    """The SQL of the tile (of the first year) that aef_sample_points partitions rows by."""
    at = f"{job.chosen.years[0]}, {job.chosen.crs}"
    if job.geometry_column is not None:
        return f"__aef_tile_wkb({_quote(job.geometry_column)}, {at})"
    x, y = (f"CAST({_quote(c)} AS DOUBLE)" for c in (job.x_column, job.y_column))
    return f"__aef_tile_xy({x}, {y}, {at})"
