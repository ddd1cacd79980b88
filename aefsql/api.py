"""The Python entry points for whole tables: `sample_points` and `zonal` (Arrow, pandas,
polars or GeoPandas in; Arrow out), `similarity`, `change` and `grid` (an area in, Arrow out), with
the parameters of the SQL table functions under the same names."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .aef import BAND_COUNT, BAND_NAMES, DEQUANTIZATION, MODEL, NODATA, PIXEL_METRES
from .duck.calls import sql_literal, table_call
from .duck.registration import install
from .duck.types import GEOMETRY_ARROW, status_words
from .duck.udfs import SessionUdfs
from .errors import AefsqlError, redact_text, user_stacklevel
from .geometry import geo
from .geometry.footprints import cell_geometries, wkb_bounds
from .geometry.hilbert import hilbert_keys
from .kernels import points
from .kernels.budgets import check_max_bytes
from .kernels.coverage import (
    point_status_codes,
    warn_empty_area,
    warn_missing_years,
    warn_uncovered_points,
)
from .kernels.pictures import check_writable
from .kernels.rasters import area_of
from .kernels.similarity import query_vector
from .options import (
    Mention,
    OptionError,
    Options,
    added_columns,
    arrow_points,
    check_cell,
    check_geometry,
    check_level,
    epsg,
    headers_option,
    resolve,
    speaks,
    year_list,
)
from .progress import Progress
from .session import Session, open_session
from .storage.store import DEFAULT_CONCURRENCY, protocol_of

_POINTS = "__aef_points"
_POLYGONS = "__aef_polygons"
_ROW = "__aef_row"  # the 1-based input row, as the macros number it


@speaks("python")
def sample_points(
    points,
    *,
    years: int | Iterable[int] | None = None,
    year: int | Iterable[int] | None = None,
    x_column: str = "lon",
    y_column: str = "lat",
    geometry_column: str | None = None,
    crs=None,
    geometry_crs=None,
    bands: list[str] | None = None,
    on_error: str = "raise",
    as_vector: bool = False,
    status: bool = False,
    geometry: str | None = None,
    catalog: str | None = None,
    progress: bool | None = None,
    cache_dir: str | None = None,
    headers: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    allowed_hosts: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    collection: str | None = None,
) -> pa.Table:
    """Every row of `points` (all its columns), once per distinct year, with the sampled
    bands beside it: the contract of the SQL `aef_sample_points`.

    `points`: a pyarrow Table or RecordBatchReader (read once, into memory), a pandas,
    polars or GeoPandas DataFrame (its geometry column and CRS are used unless you say
    otherwise). `years` (alias `year`): one year or several. Points are `x_column`/`y_column`
    or a point `geometry_column` (WKB), in `crs` (alias `geometry_crs`, Rasteret's name): an
    EPSG code or 'EPSG:32610', default lon/lat. `bands`: names such as ['A00', 'A05'] (default
    all 64). `as_vector`: one `embedding FLOAT[64]` column (de-quantized; NULL if any band is
    nodata) instead of the bands. `geometry`: 'point' or 'pixel' adds `geom` (GeoArrow WKB
    in lon/lat, OGC:CRS84), the centre or footprint of the pixel sampled (NULL where no tile
    holds the point). `on_error`: 'null' gives the rows of unreadable files NULL
    bands and an `aef_error` message instead of failing. `status`: a `status` column (valid,
    nodata, outside, no_year, error), as aef_sample_points' `status := true`. `progress`: a
    progress line on stderr (default: when stderr is a terminal). `catalog`, `cache_dir`, `headers`,
    `concurrency`, `allowed_hosts`, `storage_options` (one mapping) and `collection`
    (deprecated alias of `headers`): as for `aefsql.connect`. Bands are NULL where the point
    lies in no tile, its coordinates are NULL or invalid, or the pixel is nodata. Rows keep
    their input order, and their columns their Arrow types (they are passed through, not
    read back from DuckDB). A year the catalog lacks gives NULL bands and a warning.
    """
    if crs is not None and geometry_crs is not None and epsg(crs) != epsg(geometry_crs):
        raise AefsqlError("pass crs= or its alias geometry_crs=, not both")
    crs = crs if crs is not None else geometry_crs
    source, total, geometry_column, crs = arrow_points(points, geometry_column, crs)
    chosen = resolve(
        years=years,
        year=year,
        crs=crs,
        bands=bands,
        on_error=on_error,
        as_vector=as_vector,
        status=status,
        geometry=geometry,
        function="sample_points",
        columns=source.schema.names,
        x_column=x_column,
        y_column=y_column,
        geometry_column=geometry_column,
    )
    report = Progress(enabled=progress)
    session = open_session(
        catalog,
        progress=report,
        cache_dir=cache_dir,
        headers=headers_option(headers, collection),
        concurrency=concurrency,
        allowed_hosts=allowed_hosts,
        storage_options=storage_options,
    )
    warn_missing_years(session.catalog.tiles(), chosen.years)
    con = duckdb.connect()
    try:
        install(con, SessionUdfs(session, warn_empty=False))
        report.start(total=None if total is None else total * len(chosen.years))
        try:
            table = source.read_all() if isinstance(source, pa.RecordBatchReader) else source
            groups = _groups(con, table, chosen, x_column, y_column, geometry_column)
            located = _coordinates(table, x_column, y_column, geometry_column)
            if table.num_rows and located is not None:
                warn_uncovered_points(
                    session.catalog.tiles(),
                    *located,
                    chosen.crs,
                    chosen.years,
                    groups["__aef_year"].to_pylist(),
                )
            con.close()  # DuckDB keeps the memory of its last query until then
            result, geom = _assembled(session, table, groups, chosen, geometry)
            result = _with_vectors(session, result) if chosen.as_vector else result
            # (last, as aef_sample_points places it)
            return result if geom is None else result.append_column("geom", geom)
        except duckdb.Error as exc:  # its message may quote a URL as given, secrets too
            raise type(exc)(redact_text(str(exc))) from None
    finally:
        report.close()
        con.close()


def _groups(
    con: duckdb.DuckDBPyConnection,
    table: pa.Table,
    chosen: Options,
    x_column: str,
    y_column: str,
    geometry_column: str | None,
) -> pa.Table:
    """The points located and grouped by file, year and CRS by aef_sample_points' own
    macros (`__aef_groups`), rows numbered from 1 in input order."""
    con.register(_POINTS, table.append_column(_ROW, pa.array(np.arange(1, table.num_rows + 1))))
    columns = (x_column, y_column, geometry_column)  # as sample_sql names them
    options = table_call(
        "__aef_options",
        _POINTS,
        "aef_sample_points",
        chosen.years,
        None,
        chosen.crs,
        *columns,
        chosen.bands,
        chosen.on_error,
        False,
    )
    return con.sql(
        f"""
        WITH options AS MATERIALIZED (FROM {options}),
        -- Materialized, as in aef_sample_points: each point is located once.
        located AS MATERIALIZED (FROM {table_call("__aef_located", _POINTS, "options", *columns)})
        FROM __aef_groups('located')
        """
    ).to_arrow_table()


def _coordinates(table: pa.Table, x_column, y_column, geometry_column):
    """The points' x and y, for `warn_uncovered_points`; None for a geometry column of WKT
    or GEOMETRY, which DuckDB parsed (the warning is then not given)."""
    if geometry_column is None:
        return geo.floats(table[x_column]), geo.floats(table[y_column])
    kind = table.schema.field(geometry_column).type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return geo.points_from_wkb(table[geometry_column].to_pylist())
    return None


def _assembled(
    session: Session, table: pa.Table, groups: pa.Table, chosen: Options, geometry: str | None
) -> tuple[pa.Table, pa.Array | None]:
    """What aef_sample_points returns (bands, not vectors), put together by position, and
    its `geom` column (None without `geometry`).

    The groups (`_groups`) are sampled as aef_sample_points' own UDF samples them (the point
    sampler at the pixels located, `points.sample_pixels_or_errors`), but the result is not
    joined back onto the rows and sorted: row r's year k is output row r * len(years) + k,
    so each sampled value is put in place, and the input columns are passed through as they
    are (repeated once per year). Wide rows are never hashed nor sorted: for 10^6 points x
    64 bands, that join and sort were most of the peak memory."""
    n, years = table.num_rows, np.asarray(chosen.years, dtype=np.int64)
    extra = [name for name in BAND_NAMES if name in chosen.bands]
    if chosen.on_error == "null":
        extra.append("aef_error")
    counts = groups["__aef_rows"].combine_chunks().value_lengths().to_numpy(zero_copy_only=False)
    urls = np.repeat(np.asarray(groups["__aef_path"].to_pylist(), dtype=object), counts)
    at_rows, at_cols = (
        groups[c].combine_chunks().flatten().fill_null(-1).to_numpy()
        for c in ("__aef_pixel_rows", "__aef_pixel_cols")
    )
    wanted = points.band_indices(sorted(chosen.bands))  # as the SQL UDF orders them
    samples, errors = points.sample_pixels_or_errors(
        session.engine,
        urls,
        at_rows,
        at_cols,
        wanted,
        on_error=chosen.on_error,
        keep_blocks=False,
        keep_values=True,
    )
    year_of_item = np.repeat(groups["__aef_year"].to_numpy(), counts)
    rows = groups["__aef_rows"].combine_chunks().flatten().to_numpy()
    sampled_columns = {
        name: pa.array(samples.values[:, k], mask=~samples.band_valid(k))
        for k, name in enumerate(BAND_NAMES[b] for b in wanted)
        if name in extra
    }
    if "aef_error" in extra:
        sampled_columns["aef_error"] = (
            pa.nulls(urls.size, pa.string()) if errors is None else pa.array(errors, pa.string())
        )
    missing = session.missing_years(years) if chosen.status else []
    if chosen.status:  # what each sampled item holds; rows of no item are filled below
        failed = np.zeros(urls.size, dtype=bool)
        if errors is not None:
            failed = np.fromiter((e is not None for e in errors), dtype=bool, count=urls.size)
        codes = point_status_codes(
            samples.covered, samples.complete(), failed, year_of_item, missing
        )
        sampled_columns["status"] = status_words(codes)
    places = None
    if geometry is not None:  # the pixel each value comes from, as aef_sample_points'
        headers = session.engine.headers.headers_for(sorted(set(urls.tolist())))
        places = cell_geometries(geometry, headers, urls, at_rows, at_cols)
    del groups, samples, errors, urls, at_rows, at_cols  # each let go once put in place
    # Output row of each sampled item; -1 (a NULL index: NULL bands) where none was sampled.
    source = np.full(n * years.size, -1, dtype=np.int64)
    source[(rows - 1) * years.size + np.searchsorted(years, year_of_item)] = np.arange(rows.size)
    take = pa.array(source, mask=source < 0)
    del source, rows, year_of_item
    repeat = None if years.size == 1 else pa.array(np.repeat(np.arange(n), years.size))
    columns = {
        name: table[name] if repeat is None else table[name].take(repeat)
        for name in table.column_names
    }
    columns["year"] = pa.array(np.tile(years.astype(np.int32), n))
    for name in extra:
        columns[name] = sampled_columns.pop(name).take(take)
    if chosen.status:  # a row no item was sampled for: in no tile, or of a missing year
        none = np.zeros(n * years.size, dtype=bool)  # covered, complete, failed: none
        unsampled = point_status_codes(none, none, none, np.tile(years, n), missing)
        columns["status"] = pc.coalesce(
            sampled_columns.pop("status").take(take), status_words(unsampled)
        )
    if places is None:
        return pa.table(columns), None
    return pa.table(columns), pa.ExtensionArray.from_storage(GEOMETRY_ARROW, places.take(take))


def _with_vectors(session: Session, result: pa.Table) -> pa.Table:
    """as_vector: the 64 band columns replaced by `embedding`, in their place (as
    aef_sample_points places it: before aef_error and status). The de-quantization is the
    SQL macro aef_vector's, its one home; a one-table SELECT keeps the rows in order."""
    con = duckdb.connect()
    try:
        install(con, SessionUdfs(session, warn_empty=False))
        con.register("__aef_bands", result.select(BAND_NAMES))
        vectors = con.sql("SELECT aef_vector(b) AS embedding FROM __aef_bands b")
        embedding = vectors.to_arrow_table()["embedding"]
    finally:
        con.close()
    at = result.column_names.index(BAND_NAMES[0])
    return result.drop_columns(BAND_NAMES).add_column(at, "embedding", embedding)


@speaks("python")
def zonal(
    polygons,
    *,
    years: int | Iterable[int] | None = None,
    year: int | Iterable[int] | None = None,
    geometry_column: str | None = None,
    crs=None,
    level: int = 0,
    on_error: str = "raise",
    max_bytes: int | None = None,
    status: bool = False,
    catalog: str | None = None,
    cache_dir: str | None = None,
    headers: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    allowed_hosts: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    collection: str | None = None,
) -> pa.Table:
    """Every row of `polygons` (all its columns) once per distinct year, with `year`,
    `pixels`, `nodata_pixels`, `centroid_pixel` and `embedding` (the mean de-quantized
    embedding of its valid pixels): the contract of the SQL `aef_zonal`, which computes them.

    `polygons`: a pyarrow Table or RecordBatchReader, a pandas, polars or GeoPandas
    DataFrame (its geometry column and CRS are used unless you say otherwise), with polygons
    as WKB in `geometry_column` (default the GeoDataFrame's, else 'geom'), in `crs` (default
    lon/lat). `years` (alias `year`): one year or several. `level`: 0 (full resolution) or k,
    the mean over the files' k-th overview (an approximation: see docs/functions.md).
    `on_error`: 'null' gives a row whose geometry is not a usable area, and the polygon-years
    of a file that cannot be read, NULL results and an `aef_error` message instead of
    failing. `status`: a `status` column (valid, nodata,
    outside, no_year, error), as aef_zonal's `status := true`. `max_bytes`: each polygon's
    pixels x 64 bands x years of int8 (default 16 GiB), refused before anything is read, as
    aef_zonal's. `catalog`, `cache_dir`,
    `headers`, `concurrency`, `allowed_hosts`, `storage_options` and `collection`
    (deprecated alias of `headers`): as for `aefsql.connect`. Rows keep their input order,
    and their columns their Arrow types (a GeoDataFrame's geometry comes back as WKB).
    """
    source, _, geometry_column, crs = arrow_points(polygons, geometry_column, crs)
    geometry_column = geometry_column or "geom"
    table = source.read_all() if isinstance(source, pa.RecordBatchReader) else source
    check_level(level)
    check_max_bytes(max_bytes)
    chosen = resolve(
        years=years,
        year=year,
        crs=crs,
        on_error=on_error,
        status=status,
        function="aef_zonal",
        columns=table.schema.names,
        x_column=None,
        y_column=None,
        geometry_column=geometry_column,
    )
    session = open_session(
        catalog,
        cache_dir=cache_dir,
        headers=headers_option(headers, collection),
        concurrency=concurrency,
        allowed_hosts=allowed_hosts,
        storage_options=storage_options,
    )
    warn_missing_years(session.catalog.tiles(), chosen.years)
    added = added_columns(
        "aef_zonal", chosen.bands, chosen.on_error, chosen.as_vector, chosen.status
    )
    con = duckdb.connect()
    try:
        install(con, SessionUdfs(session, warn_empty=False))
        # The macro sees the geometries only: the other columns are passed through here,
        # with their Arrow types, rather than round-tripped through DuckDB.
        con.register(_POLYGONS, table.select([geometry_column]))
        call = table_call(
            "aef_zonal",
            _POLYGONS,
            years=chosen.years,
            geometry_column=geometry_column,
            crs=chosen.crs,
            level=int(level),
            on_error=chosen.on_error,
            status=chosen.status,
            **({} if max_bytes is None else {"max_bytes": max_bytes}),
        )
        result = con.sql(f"SELECT {', '.join(added)} FROM {call}").to_arrow_table()
    except duckdb.Error as exc:  # its message may quote a URL as given, secrets too
        raise type(exc)(redact_text(str(exc))) from None
    finally:
        con.close()
    # aef_zonal orders its rows by input row, then year.
    out = table.take(pa.array(np.repeat(np.arange(table.num_rows), len(chosen.years))))
    for name in added:
        out = out.append_column(name, result[name])
    return out


@speaks("python")
def similarity(
    area,
    reference,
    *,
    years: int | Iterable[int] | None = None,
    year: int | Iterable[int] | None = None,
    crs=4326,
    level: int = 0,
    negatives=None,
    max_bytes: int | None = None,
    geometry: str | None = None,
    catalog: str | None = None,
    cache_dir: str | None = None,
    headers: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    allowed_hosts: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    collection: str | None = None,
) -> pa.Table:
    """Every pixel whose centre lies inside `area`, per year, with its cosine similarity to a
    query vector: the contract of the SQL `aef_similarity` (`year`, `location`, `crs`, `x`,
    `y`, `lon`, `lat`, `similarity`), over the same kernel.

    `area`: WKB bytes, WKT, a box [west, south, east, north] or a shapely geometry, in `crs`
    (default lon/lat). `reference`: one de-quantized embedding (64 numbers) or a list of
    them; `negatives`: a list of them (or one) to rank away from; the query is
    2·mean(reference) − mean(negatives) (mean(reference) without negatives; see
    docs/functions.md). `years` (alias `year`): one year or several. `level`: 0 (full
    resolution) or k, the files' k-th overview. `max_bytes`: refuse before anything is read
    when pixels x 64 bands x years of int8 exceed it (default: aef_pixels' budget).
    `similarity` is float32, NULL where any band is nodata. `geometry`: 'point' or 'pixel'
    adds `geom` (GeoArrow WKB in lon/lat, OGC:CRS84), each pixel's centre or footprint, as
    the SQL gives it. `catalog`, `cache_dir`,
    `headers`, `concurrency`, `allowed_hosts`, `storage_options` and `collection`
    (deprecated alias of `headers`): as for `aefsql.connect`.
    """
    chosen = resolve(years=years, year=year, crs=crs, function="aef_similarity", geometry=geometry)
    check_level(level)
    check_max_bytes(max_bytes)
    query_vector(reference, negatives)  # checked here, so that a bad one is worded for Python
    argument, value = _area_parameter(area)
    session = open_session(
        catalog,
        cache_dir=cache_dir,
        headers=headers_option(headers, collection),
        concurrency=concurrency,
        allowed_hosts=allowed_hosts,
        storage_options=storage_options,
    )
    _warn_area(session, area, chosen, "no pixel of it comes back")
    given = _area_options(chosen, level, max_bytes, geometry)
    # The embeddings as DOUBLE lists, exactly as given (the macro reads them as JSON).
    vectors = [_embedding_lists(reference)]
    if negatives is not None:
        given += ", negatives := ?"
        vectors.append(_embedding_lists(negatives))
    query = f"FROM aef_similarity({argument}, ?, {given})"
    return _sql_table(session, query, [value, *vectors])


def _embedding_lists(value) -> list[list[float]]:
    """One embedding or a list of them (checked by `query_vector`) as a list of lists."""
    array = np.asarray(value, dtype=np.float64)
    return (array[None] if array.ndim == 1 else array).tolist()


def _warn_area(session: Session, area, chosen, outcome: str) -> None:
    """Say why an SQL-computed area result may come back empty: a year the catalog lacks, an
    area outside coverage or swapped lon/lat (`outcome`: what the user then gets). A WKT area
    is parsed by DuckDB, in the query: only its years are looked at here."""
    if isinstance(area, str):
        warn_missing_years(session.catalog.tiles(), chosen.years)
    else:
        warn_empty_area(session.catalog.tiles(), area_of(area, chosen.crs), chosen.years, outcome)


@speaks("python")
def change(
    area,
    *,
    years: Iterable[int],
    crs=4326,
    level: int = 0,
    max_bytes: int | None = None,
    geometry: str | None = None,
    catalog: str | None = None,
    cache_dir: str | None = None,
    headers: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    allowed_hosts: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    collection: str | None = None,
) -> pa.Table:
    """One row per location of `area` and pair of consecutive `years` (two or more) with the
    cosine `similarity` of its embeddings in `year_from` and `year_to`: the rows of the SQL
    `aef_change`, which computes them (NULL where either year is nodata or has no file).

    `area`: WKB bytes, WKT, a shapely geometry or a box [west, south, east, north], in `crs`
    (default lon/lat). `level`: 0 (full resolution) or k, the files' k-th overview.
    `max_bytes`: refused before anything is read when pixels x 64 bands x years exceed it
    (default 16 GiB). `geometry`: 'point' or 'pixel' adds `geom` as `similarity` gives it.
    `catalog`, `cache_dir`, `headers`, `concurrency`, `allowed_hosts`,
    `storage_options` and `collection` (deprecated alias of `headers`): as for
    `aefsql.connect`. Rows come in no set order."""
    chosen = resolve(years=years, crs=crs, function="aef_change", geometry=geometry)
    check_level(level)
    check_max_bytes(max_bytes)
    argument, value = _area_parameter(area)
    session = open_session(
        catalog,
        cache_dir=cache_dir,
        headers=headers_option(headers, collection),
        concurrency=concurrency,
        allowed_hosts=allowed_hosts,
        storage_options=storage_options,
    )
    _warn_area(
        session,
        area,
        chosen,
        "its pairs come back with NULL similarity, or not at all where no year has it",
    )
    given = _area_options(chosen, level, max_bytes, geometry)
    return _sql_table(session, f"FROM aef_change({argument}, {given})", [value])


@speaks("python")
def grid(
    area,
    *,
    cell,
    years: int | Iterable[int] | None = None,
    year: int | Iterable[int] | None = None,
    crs=4326,
    level: int = 0,
    max_bytes: int | None = None,
    geometry: str | None = None,
    catalog: str | None = None,
    cache_dir: str | None = None,
    headers: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    allowed_hosts: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.Table:
    """The mean embedding of `area`'s pixels per grid cell and year: the rows of the SQL
    `aef_grid` (`cell`, `year`, `pixels`, `nodata_pixels`, `embedding`; `geom` with
    `geometry` 'pixel', the cell's outline in lon/lat, or 'point', its centre), which
    computes them.

    `cell`: 'h3:7' (H3 cells of that resolution; needs `pip install 'aefsql[h3]'`) or a whole
    number of metres (square cells on the UTM grid of each pixel's tile). `area`: WKB bytes,
    WKT, a shapely geometry or a box [west, south, east, north], in `crs` (default lon/lat).
    `years` (alias `year`): one year or several. `level`: 0 (full resolution) or k, the
    files' k-th overview. `max_bytes`: refused before anything is read when pixels x 64
    bands x years of int8 (default: aef_pixels' budget), or cells x 64 x years of float64
    sums (default 512 MiB, about a million cell-years), exceed it. `catalog`, `cache_dir`,
    `headers`, `concurrency`, `allowed_hosts` and `storage_options`: as for
    `aefsql.connect`."""
    chosen = resolve(years=years, year=year, crs=crs, function="aef_grid")
    check_level(level)
    kind, size = check_cell(cell)
    check_geometry(geometry)
    check_max_bytes(max_bytes)
    argument, value = _area_parameter(area)
    session = open_session(
        catalog,
        cache_dir=cache_dir,
        headers=headers,
        concurrency=concurrency,
        allowed_hosts=allowed_hosts,
        storage_options=storage_options,
    )
    _warn_area(session, area, chosen, "no cell comes back")
    cell = f"h3:{size}" if kind == "h3" else size  # (1000.0 as 1000)
    given = _area_options(chosen, level, max_bytes, geometry, cell=cell)
    return _sql_table(session, f"FROM aef_grid({argument}, {given})", [value])


def _area_options(chosen, level: int, max_bytes, geometry, **first) -> str:
    """The named arguments of an area function's SQL call, as literals: `first`, then the
    resolved years and crs, the level, and max_bytes and geometry when given."""
    options = {**first, "years": list(chosen.years), "crs": chosen.crs, "level": int(level)}
    if max_bytes is not None:
        options["max_bytes"] = max_bytes
    if geometry is not None:
        options["geometry"] = geometry
    return ", ".join(f"{name} := {sql_literal(v)}" for name, v in options.items())


def _sql_table(session: Session, query: str, params: list) -> pa.Table:
    """`query`'s result as Arrow, on a connection of its own with the session's functions.
    The caller has said why a result may come back empty: the UDFs do not say it again."""
    con = duckdb.connect()
    try:
        install(con, SessionUdfs(session, warn_empty=False))
        return con.sql(query, params=params).to_arrow_table()
    except duckdb.Error as exc:  # its message may quote a URL as given, secrets too
        raise type(exc)(redact_text(str(exc))) from None
    finally:
        con.close()


def _area_parameter(area) -> tuple[str, object]:
    """An area argument as a typed SQL parameter and its value: WKB bytes, WKT text, a
    shapely geometry (its WKB) or a box [west, south, east, north]."""
    if isinstance(area, bytes | bytearray | memoryview):
        return "?::BLOB", bytes(area)
    if isinstance(area, str):
        return "?::VARCHAR", area
    if hasattr(area, "wkb"):
        return "?::BLOB", area.wkb
    try:
        return "?::DOUBLE[]", [float(v) for v in area]
    except (TypeError, ValueError):
        raise AefsqlError(
            "area is WKB bytes, WKT, a shapely geometry or a box [west, south, east, north], "
            f"not {type(area).__name__}"
        ) from None


@speaks("python")
def write_headers(
    output: str,
    *,
    years: int | Iterable[int] | None = None,
    year: int | Iterable[int] | None = None,
    catalog: str | None = None,
    cache_dir: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    allowed_hosts: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Write the headers file: the parsed headers of the catalog's files (of `years`, alias
    `year`, one or several; default all) as one Parquet file at `output` (a path or URL), the
    rows of SQL's `aef_headers`. Returns the number of files. Pass it as
    `connect(headers=output)` and sampling reads no COG header. `catalog`, `cache_dir`,
    `concurrency`, `allowed_hosts` and `storage_options`: as for `aefsql.connect`."""
    chosen = None if years is None and year is None else year_list(years, year)
    if protocol_of(str(output)) == "file":
        check_writable(output)  # before every file's header is read
    session = open_session(
        catalog,
        cache_dir=cache_dir,
        concurrency=concurrency,
        allowed_hosts=allowed_hosts,
        storage_options=storage_options,
    )
    if chosen is not None:
        warn_missing_years(session.catalog.tiles(), chosen, "no file of theirs is written")
    return session.write_headers(str(output), chosen)


@speaks("python")
def build_collection(
    output: str,
    *,
    years: int | Iterable[int] | None = None,
    year: int | Iterable[int] | None = None,
    catalog: str | None = None,
    cache_dir: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    allowed_hosts: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Deprecated (removed in 0.2): `write_headers`, under its 0.1 name. `output`, `years`,
    `year`, `catalog`, `cache_dir`, `concurrency`, `allowed_hosts` and `storage_options`: as
    for `write_headers`."""
    warnings.warn(
        "aefsql.build_collection is deprecated: call aefsql.write_headers",
        DeprecationWarning,
        stacklevel=user_stacklevel(),
    )
    return write_headers(
        output,
        years=years,
        year=year,
        catalog=catalog,
        cache_dir=cache_dir,
        concurrency=concurrency,
        allowed_hosts=allowed_hosts,
        storage_options=storage_options,
    )


# export's rows per Parquet row group: ~30-50 MB before compression (64 int8 values, the
# place, a bbox and a geometry a row), so a spatial filter skips most of a big file's groups
# while each group stays worth a request.
EXPORT_ROW_GROUP_ROWS = 1 << 18
_EXPORT_BATCH = 1 << 16  # rows handed from the pixel query to the writer at a time
_EXPORTED = "__aef_export"


@speaks("python")
def export(
    area,
    output: str,
    *,
    years: int | Iterable[int] | None = None,
    year: int | Iterable[int] | None = None,
    crs=4326,
    max_bytes: int | None = None,
    level: int = 0,
    geometry: str = "point",
    row_group_rows: int = EXPORT_ROW_GROUP_ROWS,
    catalog: str | None = None,
    cache_dir: str | None = None,
    headers: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    allowed_hosts: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Write every pixel of `area`, per year, as an embedding table in GeoParquet 2.0 at
    `output` (a local path), as geoembeddings.org's best practices describe; returns the
    rows written.

    Columns: `year`, `location`, `crs`, `x`, `y` (as aef_pixels gives them), `embedding`
    (the 64 int8 values as published, -128 nodata: lossless), `bbox` (the geometry's
    xmin/ymin/xmax/ymax, declared as its covering) and `geometry` (`geometry` 'point': the
    pixel centre, or 'pixel': its footprint, in OGC:CRS84). Rows are in Hilbert order of
    the pixel centres (then year), in row groups of `row_group_rows`, ZSTD-compressed; the
    file metadata key `embedding` says the model, 64 dimensions, int8, nodata and the
    de-quantization sign(v)·(|v|/127.5)². `area`, `years` (alias `year`), `crs`, `level`
    and `max_bytes` as for `similarity`; `catalog`, `cache_dir`, `headers`, `concurrency`,
    `allowed_hosts` and `storage_options` as for `aefsql.connect`."""
    if geometry is None:
        raise OptionError(
            "{}: an export is GeoParquet: geometry is 'point' or 'pixel'", Mention("geometry", None)
        )
    chosen = resolve(years=years, year=year, crs=crs, function="aef_pixels", geometry=geometry)
    check_level(level)
    if (
        isinstance(row_group_rows, bool)
        or not isinstance(row_group_rows, int)
        or row_group_rows < 1
    ):
        raise AefsqlError(f"row_group_rows is a number of rows (1 or more), not {row_group_rows!r}")
    check_max_bytes(max_bytes)
    check_writable(output)
    argument, value = _area_parameter(area)
    session = open_session(
        catalog,
        cache_dir=cache_dir,
        headers=headers_option(headers, None),
        concurrency=concurrency,
        allowed_hosts=allowed_hosts,
        storage_options=storage_options,
    )
    _warn_area(session, area, chosen, "the file is written with no rows")
    given = _area_options(chosen, level, max_bytes, geometry)
    metadata = _export_metadata(geometry, chosen.years, int(level))
    source, sink = duckdb.connect(), duckdb.connect()
    try:
        install(source, SessionUdfs(session, warn_empty=False))
        pixels = source.sql(
            f"SELECT year, location, crs, x, y, lon, lat, {', '.join(BAND_NAMES)}, geom "
            f"FROM aef_pixels({argument}, {given})",
            params=[value],
        ).to_arrow_reader(_EXPORT_BATCH)
        rows = pa.RecordBatchReader.from_batches(
            _EXPORT_SCHEMA, (_export_batch(batch) for batch in pixels)
        )
        sink.register(_EXPORTED, rows)
        # DuckDB sorts (spilling to disk past its memory limit) and writes the native
        # GEOMETRY type with its CRS and statistics; the `geo` metadata is ours, to declare
        # the bbox covering (DuckDB's own names none).
        copy = (
            f"COPY (SELECT * EXCLUDE (__aef_hilbert) FROM {_EXPORTED} "
            f"ORDER BY __aef_hilbert, year) TO {sql_literal(str(output))} "
            f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {row_group_rows}, "
            "GEOPARQUET_VERSION 'NONE', KV_METADATA {"
            + ", ".join(f"{k}: {sql_literal(v)}" for k, v in metadata.items())
            + "})"
        )
        return int(sink.execute(copy).fetchall()[0][0])
    except duckdb.Error as exc:  # its message may quote a URL as given, secrets too
        raise type(exc)(redact_text(str(exc))) from None
    finally:
        sink.close()
        source.close()


_EXPORT_SCHEMA = pa.schema(
    [
        ("year", pa.int32()),
        ("location", pa.int64()),
        ("crs", pa.string()),
        ("x", pa.float64()),
        ("y", pa.float64()),
        ("embedding", pa.list_(pa.int8(), BAND_COUNT)),
        ("bbox", pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])),
        ("geometry", GEOMETRY_ARROW),
        ("__aef_hilbert", pa.uint64()),
    ]
)


def _export_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """aef_pixels' rows as export writes them: the bands as one int8 vector (nodata's NULL
    back to -128, as published), the geometry's bbox, and the Hilbert key to sort by."""
    bands = np.empty((batch.num_rows, BAND_COUNT), np.int8)
    for k, name in enumerate(BAND_NAMES):
        bands[:, k] = batch.column(name).fill_null(NODATA).to_numpy()
    wkb = batch.column("geom")
    wkb = wkb.storage if isinstance(wkb, pa.ExtensionArray) else wkb.cast(pa.binary())
    bounds = wkb_bounds(wkb)
    keys = hilbert_keys(geo.floats(batch.column("lon")), geo.floats(batch.column("lat")))
    return pa.RecordBatch.from_arrays(
        [
            batch.column("year").cast(pa.int32()),
            batch.column("location"),
            batch.column("crs"),
            batch.column("x"),
            batch.column("y"),
            pa.FixedSizeListArray.from_arrays(pa.array(bands.ravel()), BAND_COUNT),
            pa.StructArray.from_arrays(
                [pa.array(b) for b in bounds], names=["xmin", "ymin", "xmax", "ymax"]
            ),
            pa.ExtensionArray.from_storage(GEOMETRY_ARROW, wkb),
            pa.array(keys),
        ],
        schema=_EXPORT_SCHEMA,
    )


def _export_metadata(geometry: str, years, level: int) -> dict[str, str]:
    """The file metadata of an export: GeoParquet 2.0's `geo` (the covering declared; the
    CRS, OGC:CRS84, is the GEOMETRY type's) and `embedding`, what the vectors are."""
    from . import __version__ as aefsql_version  # (the package's: it imports this module)

    covering = {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}
    kinds = ["Point"] if geometry == "point" else ["Polygon", "MultiPolygon"]
    geo_metadata = {
        "version": "2.0.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": kinds,
                "covering": {"bbox": covering},
            }
        },
    }
    embedding = {
        "column": "embedding",
        "model": MODEL,
        "dimensions": BAND_COUNT,
        "data_type": "int8",
        "nodata": NODATA,
        "band_names": list(BAND_NAMES),
        "dequantization": DEQUANTIZATION,
        "years": list(years),
        "pixel_size_m": PIXEL_METRES * 2**level,
        "level": level,
        "geometry": "pixel centre" if geometry == "point" else "pixel footprint",
        "order": "Hilbert curve of the pixel centres (lon/lat), then year",
        "written_by": f"aefsql {aefsql_version}",
    }
    return {"geo": json.dumps(geo_metadata), "embedding": json.dumps(embedding)}
