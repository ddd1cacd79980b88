"""The Python entry point for whole tables: `sample_points` (Arrow in, Arrow out)."""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from . import geo
from .catalog import quote_literal
from .duck import connect
from .errors import AefsqlError
from .progress import Progress

_LON, _LAT = "__aef_lon", "__aef_lat"


def sample_points(
    points: pa.Table | pa.RecordBatchReader,
    x_column: str = "lon",
    y_column: str = "lat",
    year: int | Iterable[int] | None = None,
    bands: list[str] | None = None,
    geometry_crs: int = 4326,
    catalog: str | None = None,
    progress: bool | None = None,
    on_error: str = "raise",
    **options,
) -> pa.Table:
    """Every row of `points` (all its columns), once per year, with the sampled bands beside it.

    `points`: an Arrow table, or a RecordBatchReader (streamed in, read once).
    `year`: one year or several. `bands`: names such as ['A00', 'A05'] (default all 64).
    `geometry_crs`: EPSG code of x/y (default 4326, lon/lat). `on_error`: 'null' gives the rows
    of unreadable files NULL bands and an `aef_error` message instead of failing. `progress`:
    a progress line on stderr (default: when stderr is a terminal). `options`: cache_dir,
    concurrency and storage options, as for `aefsql.connect`. Bands are NULL where the point
    lies in no tile, its x/y is NULL or invalid, or the pixel is nodata. Rows keep their input
    order.
    """
    if not isinstance(points, pa.Table | pa.RecordBatchReader):
        raise AefsqlError(
            f"points must be a pyarrow.Table or RecordBatchReader, not {type(points).__name__}"
        )
    for name in (x_column, y_column):
        if name not in points.schema.names:
            raise AefsqlError(
                f"points has no column {name!r} (columns: {', '.join(points.schema.names)})"
            )

    def with_lonlat(part):
        """The batch or table with lon/lat columns in EPSG:4326 appended."""
        x = part[x_column].cast(pa.float64()).to_numpy(zero_copy_only=False)
        y = part[y_column].cast(pa.float64()).to_numpy(zero_copy_only=False)
        lon, lat = geo.transform_points(geometry_crs, 4326, x, y)
        return type(part).from_arrays(
            [*part.columns, pa.array(lon), pa.array(lat)],
            names=[*part.schema.names, _LON, _LAT],
        )

    if isinstance(points, pa.Table):
        source, total = with_lonlat(points), points.num_rows
    else:  # streamed in: each batch gets its coordinates as it passes
        schema = points.schema.append(pa.field(_LON, pa.float64())).append(
            pa.field(_LAT, pa.float64())
        )
        source = pa.RecordBatchReader.from_batches(schema, map(with_lonlat, points))
        total = None
    if year is None:
        raise AefsqlError("pass year=2024 or year=[2023, 2024]: AEF has one image per year")
    years = [int(year)] if isinstance(year, int) else [int(y) for y in year]
    if not years:
        raise AefsqlError("year must name at least one year")
    sql = (
        "SELECT * FROM aef_sample_points('__aef_points', "
        f"years := [{', '.join(map(str, years))}], x_column := '{_LON}', y_column := '{_LAT}'"
        + (f", bands := [{', '.join(quote_literal(b) for b in bands)}]" if bands else "")
        + f", on_error := {quote_literal(on_error)})"
    )
    report = Progress(enabled=progress)
    con = connect(catalog=catalog, progress=report, **options)
    try:
        con.register("__aef_points", source)
        report.start(total=None if total is None else total * len(years))
        result = con.sql(sql).to_arrow_table()
    finally:
        report.close()
        con.close()
    return result.drop_columns([_LON, _LAT])


def build_collection(
    output: str,
    catalog: str | None = None,
    years: Iterable[int] | None = None,
    **options,
) -> int:
    """Write a read-ready collection: the parsed headers of the catalog's files (of `years`,
    default all) as one Parquet file at `output` (a path or URL). Returns the number of files.
    Pass it as `connect(collection=output)` and sampling reads no COG header."""
    years_sql = "NULL" if years is None else f"[{', '.join(str(int(y)) for y in years)}]"
    con = connect(catalog=catalog, **options)
    try:
        return con.execute(
            f"SELECT aef_build_collection({quote_literal(str(output))}, years := {years_sql})"
        ).fetchall()[0][0]
    finally:
        con.close()
