"""The parameters every home shares (SQL table functions, the Python API, the CLI): years,
crs, bands, on_error, level, the coordinate columns and the columns a function adds, and the
points or polygons table itself (`arrow_points`: Arrow, pandas, polars or GeoPandas in).

They are resolved here once, in Python: the SQL macros hand their parameters over as JSON
(`to_json` keeps numbers, strings and booleans apart) and raise the message this module
gives, so `year := '2023'` in SQL, `year="2023"` in Python and `--years 2023.5` on the
command line fail with the same words. Where a message names a parameter, each host says it
in its own syntax (`years := 2024`, `years=2024`, `--years 2024`, Spark SQL's
`years => 2024`): the message holds the
mention (`Mention`), and `OptionError.phrased` writes it for the host (SQL by default).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import numbers
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from .aef import BAND_NAMES
from .errors import AefsqlError, user_stacklevel
from .geometry import geo

ON_ERROR = ("raise", "null")
GEOMETRY_KINDS = ("point", "pixel")  # geometry := …: aefsql/geometry/footprints.py
CHIP_COLUMNS = ("chip", "chip_crs", "chip_bounds", "valid_pixels", "embedding")
MAX_YEARS = 1000  # more distinct years than AEF will ever have: a typo like 2023-20230000
# aefsql's own column names begin so (the macros number rows as __aef_row, …): a user's
# column so named would be renamed by DuckDB (__aef_row_1) or taken for aefsql's.
RESERVED_PREFIX = "__aef_"


HOSTS = ("sql", "python", "cli", "spark_sql")
# The command line's flags where they are not --name with dashes for underscores.
CLI_FLAGS = {
    "x_column": "--x",
    "y_column": "--y",
    "geometry_column": "--geometry",
    "reference": "--similar-to",
    "negatives": "--unlike",
}
_NO_VALUE = object()
ANY_VALUE = ...  # a mention's value shown as "…": the parameter, whatever its value


@dataclass(frozen=True)
class Mention:
    """A parameter named in a message, with a value (or none: the bare name)."""

    name: str
    value: object = _NO_VALUE

    def phrased(self, host: str) -> str:
        if host == "cli":
            flag = CLI_FLAGS.get(self.name, "--" + self.name.replace("_", "-"))
            return flag if self.value is _NO_VALUE else f"{flag} {_cli_value(self.value)}"
        if host == "python":
            return (
                f"{self.name}="
                if self.value is _NO_VALUE
                else f"{self.name}={_python_value(self.value)}"
            )
        spark = host == "spark_sql"  # named arguments `name => value`, lists `array(…)`
        arrow = "=>" if spark else ":="
        return (
            f"{self.name} {arrow}"
            if self.value is _NO_VALUE
            else f"{self.name} {arrow} {_sql_value(self.value, spark)}"
        )


def _sql_value(value, spark: bool = False) -> str:
    if value is ANY_VALUE:
        return "…"
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, list | tuple):
        items = ", ".join(_sql_value(v, spark) for v in value)
        return f"array({items})" if spark else f"[{items}]"
    return str(value)


def _python_value(value) -> str:
    if value is ANY_VALUE:
        return "…"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_python_value(v) for v in value) + "]"
    return repr(value)


def _cli_value(value) -> str:
    if value is ANY_VALUE:
        return "…"
    if isinstance(value, list | tuple):
        return ",".join(_cli_value(v) for v in value) or "''"
    return str(value).lower() if isinstance(value, bool) else str(value)


class OptionError(AefsqlError):
    """A parameter is wrong. `template` is the message with a `{}` for each of `mentions`;
    str() is the SQL wording, `phrased(host)` another host's."""

    def __init__(self, template: str, *mentions: Mention, host: str = "sql"):
        self.template, self.mentions, self.host = template, mentions, host
        super().__init__(template.format(*(m.phrased(host) for m in mentions)))

    def phrased(self, host: str) -> OptionError:
        return OptionError(self.template, *self.mentions, host=host)


def speaks(host: str):
    """Decorate a host's entry point: the OptionErrors it raises are worded for `host`."""

    def decorate(function):
        @functools.wraps(function)
        def call(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except OptionError as exc:
                if exc.host == host:
                    raise
                raise exc.phrased(host) from None

        return call

    return decorate


@dataclass(frozen=True)
class Options:
    """Resolved parameters: distinct sorted years, the EPSG code of x/y, band names."""

    years: tuple[int, ...]
    crs: int
    bands: tuple[str, ...]
    on_error: str = "raise"
    as_vector: bool = False
    status: bool = False  # the status column of aef_sample_points, aef_zonal, aef_chips


def check_as_vector(as_vector, bands=None) -> None:
    """as_vector is true or false, and takes all 64 bands (one vector of them)."""
    if not isinstance(as_vector, bool):
        raise AefsqlError(f"as_vector must be true or false, not {as_vector!r}")
    if as_vector and bands is not None:
        raise OptionError(
            "{} returns all 64 bands as one vector: drop {}",
            Mention("as_vector", True),
            Mention("bands"),
        )


def resolve(
    *,
    years=None,
    year=None,
    crs=None,
    bands=None,
    on_error="raise",
    as_vector=False,
    status=False,
    function: str = "aef_sample_points",
    columns: Iterable[str] | None = None,
    x_column: str | None = "lon",
    y_column: str | None = "lat",
    geometry_column: str | None = None,
    geometry: str | None = None,
    level=0,
) -> Options:
    """Check and normalise a call's parameters; AefsqlError says what is wrong and the fix.

    `columns`, when given, are the points table's: the coordinate columns must be among
    them and none may collide with a column the function adds.
    """
    chosen = year_list(years, year)
    if function == "aef_change":
        check_pairs(chosen)
    band_names = band_list(bands)
    check_on_error(on_error)
    check_as_vector(as_vector, bands)
    check_status(status)
    check_geometry(geometry)
    check_level(level)
    if columns is not None:
        _check_columns(
            function,
            list(columns),
            x_column,
            y_column,
            geometry_column,
            added_columns(function, band_names, on_error, as_vector, status, geometry),
        )
    return Options(chosen, epsg(crs), band_names, on_error, as_vector, status)


def check_status(status) -> None:
    """`status` (aef_sample_points, aef_zonal, aef_chips) is true or false."""
    if not isinstance(status, bool):
        raise AefsqlError(f"status must be true or false, not {status!r}")


def check_geometry(geometry) -> None:
    """`geometry` is None (no `geom` column), 'point' (each pixel's centre) or 'pixel' (its
    footprint polygon; a chip's, for aef_chips; a cell's, for aef_grid)."""
    if geometry is not None and geometry not in GEOMETRY_KINDS:
        raise OptionError(
            "{}: geometry is 'point' (the pixel centre) or 'pixel' (the pixel's footprint; "
            "aef_chips: the chip's; aef_grid: the cell's), or left out for no geom column",
            Mention("geometry", geometry),
        )


def check_on_error(on_error) -> None:
    """`on_error` is 'raise' (a failure fails the call) or 'null' (it gives NULL and the
    error message)."""
    if on_error not in ON_ERROR:
        raise AefsqlError(f"on_error must be 'raise' or 'null', not {on_error!r}")


def check_level(level) -> None:
    """A level is 0 (full resolution) or the number of an overview (1: the first)."""
    if isinstance(level, bool) or not isinstance(level, numbers.Integral) or level < 0:
        raise OptionError(
            "{}: a level is 0 (full resolution) or 1, 2, … (the files' overviews, coarser "
            "and coarser)",
            Mention("level", level),
        )


H3_RESOLUTIONS = range(16)
MAX_CELL_METRES = 10_000_000  # a zone's northings span 0..10,000 km: one cell holds any area


def check_cell(cell) -> tuple[str, int]:
    """aef_grid's `cell`: ('h3', resolution) for 'h3:7' (the h3 package installed), or
    ('square', metres) for a whole number of metres such as 1000."""
    example = "{} (H3 cells of resolution 0-15) or {} (squares of 1000 m)"
    h3, square = Mention("cell", "h3:7"), Mention("cell", 1000)
    if cell is None:
        raise OptionError("pass " + example, h3, square)
    if isinstance(cell, str):
        kind, _, resolution = cell.strip().lower().partition(":")
        if kind == "h3" and resolution.isdigit() and int(resolution) in H3_RESOLUTIONS:
            if importlib.util.find_spec("h3") is None:
                raise OptionError(
                    "{} needs the h3 package: pip install 'aefsql[h3]' (or pip install h3)",
                    Mention("cell", cell),
                )
            return "h3", int(resolution)
        if kind == "h3":
            raise OptionError("{}: an H3 resolution is 0 to 15, as {}", Mention("cell", cell), h3)
        number = _number(cell)
        if number is not None:
            whole = int(number) if number.is_integer() else number
            raise OptionError(
                "{}: a size in metres is a number, as {}",
                Mention("cell", cell),
                Mention("cell", whole),
            )
        raise OptionError("{} is neither: pass " + example, Mention("cell", cell), h3, square)
    if (
        not isinstance(cell, bool)
        and isinstance(cell, numbers.Real)
        and math.isfinite(cell)
        and float(cell).is_integer()
        and 1 <= cell <= MAX_CELL_METRES
    ):
        return "square", int(cell)
    raise OptionError(
        "{}: a square cell is a whole number of metres, 1 to 10,000,000 (a UTM zone's "
        "height); pass " + example,
        Mention("cell", cell),
        h3,
        square,
    )


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def headers_option(headers, collection, name: str = "collection=") -> str | None:
    """The headers file named by `headers`, or by its deprecated alias `collection` (0.1's
    name, which also meant the COGs plus their index): warned about, kept for one release."""
    if collection is None:
        return headers
    warnings.warn(
        f"{name} is deprecated: name the headers file with headers= ($AEFSQL_HEADERS)",
        DeprecationWarning,
        stacklevel=user_stacklevel(),
    )
    if headers is not None and headers != collection:
        raise AefsqlError("pass headers= or its deprecated alias collection=, not both")
    return collection


def year_list(years=None, year=None) -> tuple[int, ...]:
    """The distinct years named by `years` (or its alias `year`): one year or a list."""
    one, several = Mention("years", 2024), Mention("years", [2023, 2024])
    if years is not None and year is not None:
        raise OptionError(
            "pass {} or its alias {}, not both",
            Mention("years", ANY_VALUE),
            Mention("year", ANY_VALUE),
        )
    value = years if years is not None else year
    if value is None:
        raise OptionError("pass {} or {}: AEF has one image a year", one, several)
    items = list(value) if _is_sequence(value) else [value]
    if not items:
        raise OptionError("years names no year: pass {} or {}", one, several)
    distinct = sorted({_one_year(v) for v in items})
    if len(distinct) > MAX_YEARS:
        raise AefsqlError(f"years names {len(distinct):,} years: at most {MAX_YEARS} at once")
    return tuple(distinct)


def check_pairs(years: tuple[int, ...]) -> None:
    """A change compares consecutive years: it needs two or more."""
    if len(years) < 2:
        raise OptionError(
            "a change compares consecutive years: pass two or more, as {} (got {})",
            Mention("years", [2023, 2024]),
            Mention("years", list(years)),
        )


def _one_year(value) -> int:
    # bool is an int in Python and numpy; a year it is not.
    if value is None:
        raise AefsqlError("a year is an integer such as 2024, not NULL")
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        raise AefsqlError(f"a year is an integer such as 2024, not the boolean {value}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return int(value)
    kind = (
        "the string"
        if isinstance(value, str)
        else "the number"
        if isinstance(value, numbers.Number)
        else type(value).__name__
    )
    raise AefsqlError(f"a year is an integer such as 2024, not {kind} {value!r}")


def band_list(bands) -> tuple[str, ...]:
    """Band names in A00..A63 order; None means all 64."""
    if bands is None:
        return BAND_NAMES
    if isinstance(bands, str) or not _is_sequence(bands):
        raise AefsqlError(f"bands is a list of names such as ['A00', 'A05'], not {bands!r}")
    names = list(bands)
    if not names:
        raise OptionError(
            "{} selects no band: name some ({}) or omit it",
            Mention("bands", []),
            Mention("bands", ["A00", "A05"]),
        )
    if any(n is None for n in names):
        raise AefsqlError("bands holds a NULL: name bands A00..A63")
    unknown = [n for n in names if n not in BAND_NAMES]
    if unknown:
        raise AefsqlError(f"unknown band name(s) {unknown}: bands are named A00..A63")
    return tuple(b for b in BAND_NAMES if b in set(names))


def epsg(crs) -> int:
    """The EPSG code of `crs`: None (lon/lat), 32610, 'EPSG:32610', 'OGC:CRS84', a pyproj CRS
    or anything with `to_epsg()`."""
    if crs is None:
        return geo.WGS84
    if hasattr(crs, "to_epsg"):  # pyproj.CRS, as GeoPandas carries it
        code = crs.to_epsg()
        if code is None:
            raise AefsqlError(f"crs {crs} has no EPSG code: reproject the points first")
        return int(code)
    if isinstance(crs, bool):
        raise AefsqlError(f"crs is an EPSG code such as 4326 or 'EPSG:32610', not {crs!r}")
    if isinstance(crs, numbers.Integral):
        code = int(crs)
    elif isinstance(crs, str):
        text = crs.strip().upper()
        if text in ("OGC:CRS84", "CRS84"):
            return geo.WGS84
        digits = text.removeprefix("EPSG:")
        if not digits.isdigit():
            raise AefsqlError(f"crs {crs!r}: expected an EPSG code such as 4326 or 'EPSG:32610'")
        code = int(digits)
    else:
        raise AefsqlError(f"crs is an EPSG code such as 4326 or 'EPSG:32610', not {crs!r}")
    if not geo.known_epsg(code):
        raise AefsqlError(f"crs EPSG:{code} is not a coordinate system PROJ knows")
    return code


def value_columns(bands, as_vector) -> list[str]:
    """The value columns a call gives, checked: `embedding` (as_vector) or its bands (all
    64 when None), in A00..A63 order."""
    check_as_vector(as_vector, bands)
    return _values(band_list(bands), as_vector)


def _values(bands: tuple[str, ...], as_vector: bool) -> list[str]:
    """The value columns of checked bands: one `embedding` in their place with as_vector."""
    return ["embedding"] if as_vector else list(bands)


def added_columns(
    function: str,
    bands: tuple[str, ...],
    on_error: str,
    as_vector: bool,
    status: bool = False,
    geometry: str | None = None,
):
    """The columns a function appends to its input table's own."""
    if geometry is not None:
        return [*added_columns(function, bands, on_error, as_vector, status), "geom"]
    if function == "aef_zonal":
        return [
            "year",
            "pixels",
            "nodata_pixels",
            "centroid_pixel",
            "embedding",
            *(["aef_error"] if on_error == "null" else []),
            *(["status"] if status else []),
        ]
    if function == "aef_chips":
        return [
            "year",
            *CHIP_COLUMNS,
            *(["aef_error"] if on_error == "null" else []),
            *(["status"] if status else []),
        ]
    return [
        "year",
        *_values(bands, as_vector),
        *(["aef_error"] if on_error == "null" else []),
        *(["status"] if status else []),
    ]


def _check_columns(function, columns, x_column, y_column, geometry_column, added) -> None:
    listing = ", ".join(columns) or "none"
    table = _table_kind(function)
    wanted = [geometry_column] if geometry_column is not None else [x_column, y_column]
    kind = "geometry_column" if geometry_column is not None else "x_column/y_column"
    if table == "polygons" and geometry_column is None:
        raise OptionError(
            "{} names no column: " + function + " reads its polygons from one (default {})",
            Mention("geometry_column", None),
            Mention("geometry_column", "geom"),
        )
    for given, name in ((x_column, "x_column"), (y_column, "y_column")):
        if geometry_column is None and given is None:
            raise OptionError(
                "{} names no column: name a column of the " + table + " table, or give {}",
                Mention(name, None),
                Mention("geometry_column", ANY_VALUE),
            )
    for name in wanted:
        if name not in columns:
            raise AefsqlError(
                f"{function}: the {table} table has no column {name!r} ({kind}); "
                f"its columns: {listing}"
            )
    _refuse_clashes(function, columns, added)


def check_input_columns(columns: list[str], params: dict) -> None:
    """Refuse input columns named as a column the call adds, or as aefsql's own: what the
    SQL table functions check while binding (so that DESCRIBE refuses too, rather than
    showing a renamed `year_1`). `params`: function, bands, on_error, as_vector, status,
    geometry."""
    function = params.get("function", "aef_sample_points")
    on_error = params.get("on_error") or "raise"
    as_vector = bool(params.get("as_vector"))
    status = params.get("status", False)
    check_status(status)
    geometry = params.get("geometry")
    check_geometry(geometry)
    added = added_columns(
        function, band_list(params.get("bands")), on_error, as_vector, status, geometry
    )
    _refuse_clashes(function, columns, added)


def _refuse_clashes(function, columns, added) -> None:
    """DuckDB's names are case-insensitive: `Year` clashes with `year` as much as `year`."""
    table = _table_kind(function)
    ours = [c for c in columns if c.lower().startswith(RESERVED_PREFIX)]
    if ours:
        raise AefsqlError(
            f"{function}: the {table} table has column {ours[0]}: names starting with "
            f"{RESERVED_PREFIX} are aefsql's own; rename it"
        )
    taken = {name.lower() for name in added}
    clash = [c for c in columns if c.lower() in taken]
    if clash:
        raise AefsqlError(
            f"{function}: the {table} table already has column(s) {', '.join(clash)}, which "
            f"{function} adds; rename yours first, e.g. WITH p AS (SELECT * RENAME "
            f"({clash[0]} AS my_{clash[0]}) FROM points) SELECT * FROM {function}('p', …)"
        )


def _table_kind(function: str) -> str:
    return "polygons" if function == "aef_zonal" else "points"


def _is_sequence(value) -> bool:
    return not isinstance(value, str | bytes) and isinstance(value, Iterable)


def resolve_json(text: str) -> Options:
    """`resolve` for the SQL macros, which send their parameters as one JSON object."""
    params = json.loads(text)
    return resolve(**params)


def arrow_points(points, geometry_column, crs):
    """(Arrow table or reader, row count or None, geometry column, crs) of any points input.

    GeoPandas gives its geometry column (as WKB) and its CRS unless the caller names others;
    the libraries are recognised by their methods, so none of them is imported here.
    """
    if isinstance(points, pa.Table):
        return points, points.num_rows, geometry_column, crs
    if isinstance(points, pa.RecordBatchReader):
        return points, None, geometry_column, crs
    if hasattr(points, "geometry") and hasattr(points, "to_wkb") and hasattr(points, "crs"):
        geometry_column = geometry_column or points.geometry.name
        if crs is None:
            crs = points.crs
        elif points.crs is not None and epsg(crs) != epsg(points.crs):
            raise AefsqlError(
                f"crs={crs!r} but the GeoDataFrame's CRS is {points.crs}: reproject it "
                "(to_crs) or drop crs="
            )
        table = pa.Table.from_pandas(points.to_wkb(), preserve_index=False)
        return table, table.num_rows, geometry_column, crs
    if hasattr(points, "to_arrow") and hasattr(points, "schema"):  # polars
        table = points.to_arrow()
        return table, table.num_rows, geometry_column, crs
    if hasattr(points, "to_numpy") and hasattr(points, "columns") and hasattr(points, "iloc"):
        table = pa.Table.from_pandas(points, preserve_index=False)
        return table, table.num_rows, geometry_column, crs
    raise AefsqlError(
        "points must be a pyarrow Table or RecordBatchReader, or a pandas, polars or GeoPandas "
        f"DataFrame, not {type(points).__name__}"
    )
