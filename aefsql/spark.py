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

import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import duckdb
import numpy as np
import pyarrow as pa

from . import geo
from .api import sample_sql, warn_missing_years
from .collection import CollectionHeaders
from .duck import Session, open_session
from .errors import AefsqlError, redact_text
from .io import protocol_of
from .locate import locate
from .options import Options, added_columns, resolve, year_list

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

# The columns the first stage adds and the second drops: each row's year, its likely tile
# (None: in no catalog box) and its y in the points' CRS (the sort key within a tile).
YEAR, TILE, Y = "__aef_year", "__aef_path", "__aef_y"
HELPER_TYPES = {YEAR: pa.int32(), TILE: pa.string(), Y: pa.float64()}
# The options of the session itself; the others are storage options.
SESSION_OPTIONS = ("cache_dir", "concurrency", "allowed_hosts")
# The named arguments of aef_sample_points in Spark SQL, as in DuckDB.
CALL_PARAMETERS = (
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
_TABLE = "__aef_points"
# Rows of one (tile, year) sampled in one query: more are split into several queries, each
# reading the blocks it needs (a block row on the boundary is read by both).
MAX_GROUP_ROWS = 1 << 18
# Sessions a Python worker keeps (one per sample_points call or registration).
MAX_SESSIONS = 4


def sample_points(
    df: DataFrame,
    years: int | Iterable[int] | None = None,
    x_column: str = "lon",
    y_column: str = "lat",
    crs=None,
    geometry_column: str | None = None,
    bands: list[str] | None = None,
    catalog: str | None = None,
    collection: str | None = None,
    on_error: str = "raise",
    *,
    year: int | Iterable[int] | None = None,
    as_vector: bool = False,
    partitions: int | None = None,
    **options,
) -> DataFrame:
    """Every row of `df` (all its columns, unchanged) once per distinct year, with `year` and
    the sampled bands beside it (or `embedding` with `as_vector`, and `aef_error` with
    on_error='null'): the contract of `aefsql.sample_points`, as a lazy Spark DataFrame.

    Parameters are those of `aefsql.sample_points`; `geometry_column` is WKB (BINARY).
    `collection`: a read-ready collection of headers (`aefsql.build_collection`), read once
    here and broadcast (the files of `years` only), so executors read no COG header.
    `partitions`: the number of (tile, year) partitions (default: Spark's shuffle partitions,
    which adaptive execution coalesces). `options`: cache_dir, concurrency and the storage
    options, as for `aefsql.connect`, resolved here (with the AEFSQL_* variables of the
    driver's environment) and sent to the executors. Rows come back in no particular order,
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
    )
    call = _checked_call(df.columns, params)  # before any read: a bad call fails at once
    shared, session = _shared(df.sparkSession, catalog, collection, options, call.chosen.years)
    warn_missing_years(session, call.chosen.years)
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


def register(
    spark: SparkSession,
    catalog: str | None = None,
    *,
    collection: str | None = None,
    **options,
) -> None:
    """Register aefsql's Spark SQL functions on `spark`:

    - `aef_sample_points(TABLE(points), years => 2024, ...)`: the contract of the DuckDB table
      function, its parameters as named constant arguments (x_column, y_column,
      geometry_column, crs, bands, on_error, as_vector). Rows are partitioned by tile (of the
      first year) and sorted by y for you: the call takes no PARTITION BY of its own.
    - `aef_locate(lon, lat, year)`: the path of the tile that holds the point, or NULL, as
      DuckDB's `aef_locate`.

    `catalog`, `collection` (all of it) and `options` are read and broadcast as for
    `sample_points`.
    """
    shared, _ = _shared(spark, catalog, collection, options, None)
    spark.udtf.register("aef_sample_points", _sample_udtf(shared))
    spark.udf.register("aef_locate", _locate_udf(shared))
    spark.udf.register("__aef_tile_xy", _tile_udf(shared, geometry=False))
    spark.udf.register("__aef_tile_wkb", _tile_udf(shared, geometry=True))


@dataclass(frozen=True)
class _Shared:
    """What every executor needs of one sample_points call or registration: picklable, the
    tile table and collection broadcast."""

    key: str  # names the workers' session for it
    catalog: str
    options: dict = field(repr=False)  # may hold credentials
    tiles: object  # Broadcast of the catalog's TileTable
    collection: object | None  # Broadcast of a CollectionHeaders


@dataclass(frozen=True)
class _Call:
    """One call's checked parameters."""

    chosen: Options
    x_column: str
    y_column: str
    geometry_column: str | None
    some_bands: bool  # bands named, rather than all 64

    @property
    def coordinates(self) -> list[str]:
        """The input columns DuckDB sees."""
        if self.geometry_column is not None:
            return [self.geometry_column]
        return [self.x_column, self.y_column]

    def added(self) -> list[str]:
        chosen = self.chosen
        return added_columns("aef_sample_points", chosen.bands, chosen.on_error, chosen.as_vector)

    def added_fields(self) -> list[StructField]:
        """The Spark fields of the added columns, of the types aef_sample_points gives them
        (tests/test_spark.py compares them)."""
        types = {"year": pa.int32(), "embedding": pa.list_(pa.float32()), "aef_error": pa.string()}
        return _fields({name: types.get(name, pa.int8()) for name in self.added()})


@dataclass(frozen=True)
class _Job:
    shared: _Shared
    call: _Call
    max_group_rows: int = MAX_GROUP_ROWS


def _fields(types: dict) -> list[StructField]:
    return [StructField(name, from_arrow_type(t), True) for name, t in types.items()]


def _checked_call(columns: list[str], params: dict) -> _Call:
    """The call's parameters checked against its table's columns (options.resolve)."""
    given = {k: v for k, v in params.items() if v is not None}
    ours = [c for c in columns if c.startswith("__aef_")]
    if ours:
        raise AefsqlError(
            f"column {ours[0]}: names starting with __aef_ are aefsql's own; rename it"
        )
    chosen = resolve(function="aef_sample_points", columns=columns, **given)
    return _Call(
        chosen=chosen,
        x_column=given.get("x_column", "lon"),
        y_column=given.get("y_column", "lat"),
        geometry_column=given.get("geometry_column"),
        some_bands=bool(given.get("bands")),
    )


def _shared(spark, catalog, collection, options, years) -> tuple[_Shared, Session]:
    """Read the catalog (and collection: of `years` only, if given) once, and broadcast."""
    session = open_session(catalog, collection=collection, **options)
    context = spark.sparkContext
    tiles = session.catalog.tiles()
    headers = session.sampler.collection
    if headers is not None and years is not None:
        headers = headers.subset(tiles.path[np.isin(tiles.year, year_list(years))])
    shared = _Shared(
        key=uuid.uuid4().hex,
        catalog=session.catalog.url,
        options=_executor_options(session, options),
        tiles=context.broadcast(tiles),
        collection=None if headers is None else context.broadcast(headers),
    )
    return shared, session


def _executor_options(session: Session, options: dict) -> dict:
    """The options executors open their sessions with: the session options given, and the
    storage options the driver resolved (from `options`, `$AEFSQL_STORAGE_OPTIONS` or the
    public bucket's defaults), since executors do not share the driver's environment."""
    storage = session.sampler.store.options.get(protocol_of(session.catalog.url), {})
    return {**storage, **{k: v for k, v in options.items() if k in SESSION_OPTIONS}}


class _Worker:
    """One aefsql session and DuckDB connection in a Python worker."""

    def __init__(self, shared: _Shared):
        self.session: Session = open_session(
            shared.catalog, tiles=shared.tiles.value, environment=False, **shared.options
        )
        if shared.collection is not None:
            headers: CollectionHeaders = shared.collection.value
            self.session.sampler.collection = headers
        # One thread: a task has one core, and aefsql reads and decodes on its own threads.
        self.con = duckdb.connect(config={"threads": 1})
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


def _coordinates(call: _Call, table) -> tuple[np.ndarray, np.ndarray]:
    """x and y of each row in the call's CRS; NaN where missing or not a point."""
    if call.geometry_column is not None:
        return geo.points_from_wkb(table.column(call.geometry_column).to_pylist())
    return geo.floats(table.column(call.x_column)), geo.floats(table.column(call.y_column))


def _likely_tiles(shared: _Shared, x, y, years, crs: int) -> pa.Array:
    """The tile whose catalog box holds each point (no header read: the same every run)."""
    return pa.array(locate(shared.tiles.value, None, x, y, years, crs), type=pa.string())


def _locate_batches(job: _Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Stage one: every row once per year, with its likely tile and y (the helper columns)."""
    call = job.call
    for batch in batches:
        x, y = _coordinates(call, batch)
        for year in call.chosen.years:
            tiles = _likely_tiles(job.shared, x, y, np.full(x.size, year), call.chosen.crs)
            columns = [pa.array(np.full(x.size, year), pa.int32()), tiles, pa.array(y)]
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, *columns], names=[*batch.schema.names, YEAR, TILE, Y]
            )


def _sample_batches(job: _Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Stage two: each (tile, year) run of a sorted partition sampled in one query."""
    call = job.call
    worker = _worker(job.shared)
    target = to_arrow_schema(StructType(call.added_fields()))
    for group in _groups(batches, job.max_group_rows):
        year = group[YEAR][0].as_py()
        rows = group.drop_columns([YEAR, TILE, Y])
        chosen = replace(call.chosen, years=(year,))
        sql = sample_sql(
            _TABLE, chosen, call.x_column, call.y_column, call.geometry_column, call.some_bands
        )
        added = worker.query(rows.select(call.coordinates), sql)
        if added.num_rows != rows.num_rows:  # one year: one row per input row, in order
            raise AefsqlError(f"sampled {added.num_rows} rows of {rows.num_rows}")
        added = added.select(call.added()).cast(target)
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


def _locate_udf(shared: _Shared):
    """aef_locate(lon, lat, year) for Spark SQL: the exact rule, as DuckDB's."""

    def aef_locate(lon: pa.Array, lat: pa.Array, year: pa.Array) -> pa.Array:
        wgs84 = pa.array(np.full(len(lon), geo.WGS84), pa.int32())
        return _worker(shared).session.aef_locate(lon, lat, year, wgs84)

    return arrow_udf(aef_locate, "string")


def _tile_udf(shared: _Shared, geometry: bool):
    """The partition key of aef_sample_points: the likely tile of (x, y) or of a WKB point,
    in the constant `crs`."""

    def tile_xy(x: pa.Array, y: pa.Array, year: pa.Array, crs: pa.Array) -> pa.Array:
        code = crs[0].as_py() if len(crs) else geo.WGS84
        return _likely_tiles(shared, geo.floats(x), geo.floats(y), geo.floats(year), code)

    def tile_wkb(wkb: pa.Array, year: pa.Array, crs: pa.Array) -> pa.Array:
        x, y = geo.points_from_wkb(wkb.to_pylist())
        code = crs[0].as_py() if len(crs) else geo.WGS84
        return _likely_tiles(shared, x, y, geo.floats(year), code)

    return arrow_udf(tile_wkb if geometry else tile_xy, "string")


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _partition_key(call: _Call) -> str:
    """The SQL of the likely tile (of the first year) that aef_sample_points partitions by."""
    at = f"{call.chosen.years[0]}, {call.chosen.crs}"
    if call.geometry_column is not None:
        return f"__aef_tile_wkb({_quote(call.geometry_column)}, {at})"
    x, y = (f"CAST({_quote(c)} AS DOUBLE)" for c in (call.x_column, call.y_column))
    return f"__aef_tile_xy({x}, {y}, {at})"


def _sample_udtf(shared: _Shared):
    """aef_sample_points for Spark SQL: a Python UDTF whose `analyze` checks the call, gives
    the output schema and asks Spark to partition the table by tile and sort it by y; it
    buffers a partition's rows and samples them with `_sample_batches`."""

    class AefSamplePoints:
        @staticmethod
        def analyze(points: AnalyzeArgument, **params: AnalyzeArgument) -> AnalyzeResult:
            if not points.isTable:
                raise AefsqlError("aef_sample_points takes TABLE(points) first")
            unknown = sorted(set(params) - set(CALL_PARAMETERS))
            if unknown:
                raise AefsqlError(
                    f"aef_sample_points has no parameter {', '.join(unknown)}; it takes "
                    + ", ".join(CALL_PARAMETERS)
                )
            for name, arg in params.items():
                if not arg.isConstantExpression:
                    raise AefsqlError(f"aef_sample_points: {name} must be a constant")
            schema = points.dataType
            call = _checked_call(schema.names, {k: a.value for k, a in params.items()})
            return AnalyzeResult(
                schema=StructType([*schema.fields, *call.added_fields()]),
                partitionBy=[PartitioningColumn(_partition_key(call))],
                # (Spark SQL has no ST_Y to sort WKB points by without Sedona.)
                orderBy=[] if call.geometry_column else [OrderingColumn(_quote(call.y_column))],
            )

        def __init__(self):
            self.rows: list = []
            self.job: _Job | None = None

        def eval(self, row, **params):
            if self.job is None:
                self.job = _Job(shared, _checked_call(list(row.__fields__), params))
            self.rows.append(row)
            if len(self.rows) >= self.job.max_group_rows:
                yield from self._flush()

        def terminate(self):
            yield from self._flush()

        def _flush(self):
            job, rows = self.job, self.rows
            self.rows = []
            if not rows:
                return
            call = job.call
            table = pa.table({name: [r[name] for r in rows] for name in call.coordinates})
            for year in call.chosen.years:
                group = table.append_column(YEAR, pa.array([year] * len(rows), pa.int32()))
                group = group.append_column(TILE, pa.nulls(len(rows), pa.string()))
                group = group.append_column(Y, pa.nulls(len(rows), pa.float64()))
                offset = 0
                for batch in _sample_batches(job, iter(group.to_batches())):
                    for k, values in enumerate(batch.select(call.added()).to_pylist()):
                        yield (*rows[offset + k], *values.values())
                    offset += batch.num_rows

    return udtf(AefSamplePoints, useArrow=True)
