"""The `aefsql` command: a thin layer over the library."""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import sys
import warnings
from pathlib import Path

import duckdb
import pyarrow as pa

from . import __version__
from .api import EXPORT_ROW_GROUP_ROWS, export, write_headers
from .demo import DEMO_POINTS, write_demo_collection
from .demo import YEARS as DEMO_YEARS
from .duck.calls import sql_literal, table_call
from .duck.registration import connect, install
from .duck.udfs import SessionUdfs
from .errors import AefsqlError
from .kernels import coverage
from .kernels.budgets import RASTER_BYTES
from .kernels.maps import KINDS, write_map
from .kernels.pictures import numbers_from, picture
from .options import MAX_YEARS, ON_ERROR, OptionError
from .session import open_session
from .shell import MODES, Shell, error_text

# The demo's queries: (what it shows, SQL). The first is the canonical join of the README.
# Their years are the demo collection's (demo.YEARS): aefsql itself knows no year.
_LAST, _ALL = DEMO_YEARS[-1], "[" + ", ".join(map(str, DEMO_YEARS)) + "]"
DEMO_QUERIES = [
    (
        "the canonical join: points x catalog -> A00..A63",
        f"""\
SELECT p.name, i.year, i.utm_zone, unnest(aef_file_embedding(i.path, p.lon, p.lat))
FROM demo_points p
JOIN aef_index() i ON i.year = {_LAST} AND i.path = aef_locate(p.lon, p.lat, {_LAST})
ORDER BY p.name""",
    ),
    (
        "every point, every year (NULL bands: outside coverage or nodata)",
        f"""\
SELECT name, year, A00, A01, A02, A63
FROM aef_sample_points('demo_points', years := {_ALL},
                       bands := ['A00', 'A01', 'A02', 'A63'])""",
    ),
    (
        "the most similar pairs of places (cosine of de-quantized embeddings)",
        f"""\
WITH e AS (SELECT name, aef_vector(aef_embedding(lon, lat, {_LAST})) AS v FROM demo_points)
SELECT a.name AS a, b.name AS b, round(array_cosine_similarity(a.v, b.v), 3) AS cosine
FROM e a JOIN e b ON a.name < b.name
WHERE a.v IS NOT NULL AND b.v IS NOT NULL
ORDER BY cosine DESC LIMIT 5""",
    ),
]


def default_demo_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache) / "aefsql" / "demo"


def run_demo(folder: Path, out=None) -> None:
    """Write the demo collection, register it as the catalog and run the canonical join."""
    out = out or sys.stdout
    index = write_demo_collection(folder)
    print(f"demo collection: {index} (synthetic embeddings, for trying aefsql offline)", file=out)
    con = connect(catalog=str(index))
    try:
        names, lons, lats = zip(*DEMO_POINTS, strict=True)
        con.register("demo_points", pa.table({"name": names, "lon": lons, "lat": lats}))
        tiles = con.execute("SELECT count(*), min(year), max(year) FROM aef_index()").fetchall()[0]
        print(f"{tiles[0]} tiles, years {tiles[1]}-{tiles[2]}\n", file=out)
        for title, sql in DEMO_QUERIES:
            print(f"-- {title}\n{sql};", file=out)
            print(con.sql(sql), file=out)
    finally:
        con.close()
    print(
        "The values are synthetic. Open this collection in the shell with:\n"
        f"  aefsql --catalog {shlex.quote(str(index))}",
        file=out,
    )


def parse_years(text: str) -> list[int]:
    """'2023' -> [2023]; '2023,2024' -> [2023, 2024]; '2018-2020' -> [2018, 2019, 2020]."""
    years: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise AefsqlError(f"--years {text!r}: expected 2023, 2023,2024 or 2017-2025") from None
        if high - low >= MAX_YEARS:  # before building the range: 2023-20230000 is a typo
            raise AefsqlError(
                f"--years {text!r} names {high - low + 1:,} years: at most {MAX_YEARS}"
            )
        years.extend(range(low, high + 1))
    if not years:
        raise AefsqlError(f"--years {text!r} names no year")
    return years


def sample_sql(args, years) -> str:
    """The SELECT a `sample` command runs; every user string is quoted as a literal."""
    call = table_call(
        "aef_plan" if args.dry_run else "aef_sample_points",
        args.points,
        years=years,
        crs=args.crs,
        geometry_column=args.geometry or None,
        x_column=None if args.geometry else args.x,
        y_column=None if args.geometry else args.y,
        bands=None if args.bands == "all" else [b.strip() for b in args.bands.split(",")],
        on_error=None if args.dry_run else args.on_error,
    )
    return f"SELECT * FROM {call}"


def run_sample(args, out=None) -> None:
    out = out or sys.stdout
    years = parse_years(args.years)
    sql = sample_sql(args, years)
    session = open_session(
        args.catalog, cache_dir=args.cache_dir, progress=None, allowed_hosts=args.allowed_hosts
    )
    con = duckdb.connect()
    try:
        # The functions' own warnings (a year the catalog lacks, no point in a tile, swapped
        # coordinates), printed by `main` as "aefsql: warning: …".
        install(con, SessionUdfs(session))
        if args.dry_run:  # (aef_plan says a missing year in its note only: said here too)
            missing = session.missing_years(years)
            if missing:
                note = coverage.missing_years_note(session.catalog.tiles(), missing)
                warnings.warn(f"aef_plan: {note}", UserWarning, stacklevel=1)
            con.sql(sql).show(max_rows=40)
            files, points, blocks, requests, nbytes = con.execute(
                f"SELECT count(path), sum(points), sum(blocks), sum(requests), sum(bytes) "
                f"FROM ({sql})"
            ).fetchall()[0]
            print(
                f"plan: {files} files, {points} point-years, {blocks} blocks, "
                f"{requests} requests, {nbytes / 1e6:,.1f} MB to read",
                file=out,
            )
            return
        if args.on_error == "null":  # kept, to list the rows that could not be read
            con.execute(f"CREATE TEMP TABLE __aef_result AS {sql}")
            sql = "SELECT * FROM __aef_result"
        if args.output is None:
            print(con.sql(sql), file=out)
        else:
            suffix = args.output.suffix.lower()
            formats = {".parquet": "PARQUET", ".csv": "CSV, HEADER", ".json": "JSON"}
            if suffix not in formats:
                raise AefsqlError(f"-o {args.output}: write .parquet, .csv or .json")
            con.execute(
                f"COPY ({sql}) TO {sql_literal(str(args.output))} (FORMAT {formats[suffix]})"
            )
            print(f"wrote {args.output}", file=out)
        if args.on_error == "null":
            report_failed_rows(con, sys.stderr)
    finally:
        con.close()


def run_picture(args, out=None) -> None:
    out = out or sys.stdout
    years = parse_years(args.year)
    several = len(years) > 1
    drawn = picture(
        numbers_from(args.bbox, 4, "--bbox"),
        years if several else years[0],
        str(args.output),
        crs=args.crs,
        reference=args.similar_to and numbers_from(args.similar_to, 2, "--similar-to"),
        bands=None if args.bands == "all" else [b.strip() for b in args.bands.split(",")],
        level=args.level,
        max_bytes=args.max_bytes,
        catalog=args.catalog,
        cache_dir=args.cache_dir,
        allowed_hosts=args.allowed_hosts,
    )
    for one in drawn if several else [drawn]:
        height, width, _ = one.rgba.shape
        written = str(args.output).replace("{year}", str(one.year))
        print(f"wrote {written}: {width} x {height} pixels, EPSG:{one.grid.epsg}", file=out)


def run_export(args, out=None) -> None:
    out = out or sys.stdout
    rows = export(
        numbers_from(args.bbox, 4, "--bbox"),
        str(args.output),
        years=parse_years(args.years),
        crs=args.crs,
        level=args.level,
        geometry=args.geometry,
        max_bytes=args.max_bytes,
        row_group_rows=args.row_group_rows,
        catalog=args.catalog,
        cache_dir=args.cache_dir,
        allowed_hosts=args.allowed_hosts,
    )
    print(f"wrote {args.output}: {rows} rows (pixels x years), GeoParquet 2.0", file=out)


def run_map(args, out=None) -> None:
    out = out or sys.stdout
    years = parse_years(args.year)

    def places(given):
        return given and [numbers_from(p, 2, "--similar-to/--unlike") for p in given]

    written = write_map(
        numbers_from(args.bbox, 4, "--bbox"),
        years if len(years) > 1 else years[0],
        str(args.output),
        kind=args.kind,
        reference=places(args.similar_to),
        negatives=places(args.unlike),
        bands=None if args.bands in (None, "all") else [b.strip() for b in args.bands.split(",")],
        crs=args.crs,
        target_crs=args.target_crs,
        level=args.level,
        max_bytes=args.max_bytes,
        compression=args.compression,
        catalog=args.catalog,
        cache_dir=args.cache_dir,
        allowed_hosts=args.allowed_hosts,
    )
    _, height, width = written.values.shape
    print(
        f"wrote {written.path}: {args.kind}, {width} x {height} pixels, EPSG:{written.grid.epsg}",
        file=out,
    )


def report_failed_rows(con, err) -> None:
    """One line per reason why rows could not be read: how many, and the first few of their
    output row numbers."""
    failed = con.execute(
        "SELECT aef_error, count(*), list(rowid ORDER BY rowid)[:5] "
        "FROM __aef_result WHERE aef_error IS NOT NULL GROUP BY aef_error ORDER BY aef_error"
    ).fetchall()
    total = con.execute("SELECT count(*) FROM __aef_result").fetchall()[0][0]
    if not failed:
        print(f"all {total} rows read", file=err)
        return
    print(
        f"{sum(n for _, n, _ in failed)} of {total} rows could not be read (NULL bands; the "
        "aef_error column says why):",
        file=err,
    )
    for reason, count, first in failed:
        rows = ", ".join(str(r + 1) for r in first) + (", …" if count > len(first) else "")
        print(f"  {count} rows (output rows {rows}): {reason}", file=err)


# build-collection: the deprecated name of write-headers (0.1), kept for one release.
VERBS = ("demo", "sample", "write-headers", "build-collection", "picture", "map", "export")


def main(argv: list[str] | None = None) -> int:
    """`aefsql VERB …` runs a batch verb; anything else opens the SQL shell."""
    argv = sys.argv[1:] if argv is None else argv
    argv = _verb_first(argv)
    if argv and argv[0] in VERBS:
        return run_verb(argv)
    return run_shell(argv)


# Options the shell and the verbs share: `aefsql --catalog X picture …` reads as
# `aefsql picture … --catalog X`, as a user who just ran `aefsql --catalog X` writes it.
SHARED_OPTIONS = ("--catalog", "--cache-dir", "--allow-host")


def _verb_first(argv: list[str]) -> list[str]:
    """argv with a verb that follows shared options moved to the front (else unchanged)."""
    k = 0
    while k < len(argv):
        name = argv[k].split("=", 1)[0]
        if name not in SHARED_OPTIONS:
            break
        k += 1 if "=" in argv[k] else 2
    if 0 < k < len(argv) and argv[k] in VERBS:
        return [argv[k], *argv[k + 1 :], *argv[:k]]
    return argv


def run_shell(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="aefsql",
        description="A DuckDB shell with every aef_* function registered. Batch verbs: "
        + ", ".join(VERBS)
        + " (aefsql VERB --help).",
    )
    parser.add_argument(
        "database", nargs="?", default=":memory:", help="DuckDB database file (default: in memory)"
    )
    parser.add_argument("-c", dest="sql", help="run this SQL and exit")
    parser.add_argument("-f", dest="file", help="run this SQL file and exit")
    for mode in MODES:  # DuckDB's CLI flags: -csv, -json, …
        parser.add_argument(
            f"-{mode}", dest="mode", action="store_const", const=mode, help=f"{mode} output"
        )
    parser.add_argument(
        "--catalog",
        help="index parquet path/URL (default: $AEFSQL_CATALOG, else the public AEF index)",
    )
    parser.add_argument("--cache-dir", help="keep every byte read here")
    parser.add_argument(
        "--allow-host",
        action="append",
        dest="allowed_hosts",
        metavar="HOST",
        help="a host or bucket a remote catalog may name besides its own (repeatable; "
        "see docs/security.md)",
    )
    parser.add_argument(
        "--readonly", "-readonly", action="store_true", help="open DATABASE read-only"
    )
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks")
    parser.add_argument(
        "--version",
        "-version",
        action="version",
        version=f"aefsql {__version__} (duckdb {duckdb.__version__})",
    )
    # argparse reads an unknown "-foo" as "-f oo" (and once ran "-csv" as the SQL "sv"):
    # a single-dash word must be one of the flags above.
    word_flags = {f"-{mode}" for mode in MODES} | {"-readonly", "-version"}
    words = iter(argv)
    for word in words:
        if word == "--":
            break
        if word in ("-c", "-f", "--catalog", "--cache-dir", "--allow-host"):
            next(words, None)  # its value, which may start with "-"
        elif len(word) > 2 and word[0] == "-" and word[1:].isidentifier():
            if word not in word_flags:
                parser.error(f"unknown option {word}")
    args = parser.parse_args(argv)
    options = dict(cache_dir=args.cache_dir, progress=None, allowed_hosts=args.allowed_hosts)
    try:
        con = duckdb.connect(args.database, read_only=args.readonly)
    except duckdb.Error as exc:
        print(f"aefsql: error: {error_text(exc)}", file=sys.stderr)
        return 1
    try:
        session = open_session(args.catalog, **options)
        install(con, SessionUdfs(session))
    except Exception as exc:
        con.close()
        if args.debug:
            raise
        print(f"aefsql: error: {error_text(exc)}", file=sys.stderr)
        return 1

    def reconnect(url: str):
        new = open_session(url, **options)
        install(con, SessionUdfs(new))
        return new

    # A script (-c, -f, piped) stops at its first error; a person at the prompt goes on.
    interactive = args.sql is None and args.file is None and sys.stdin.isatty()
    shell = Shell(con, session=session, reconnect=reconnect, debug=args.debug, bail=not interactive)
    shell.mode = args.mode or shell.mode
    try:
        if args.sql is not None:
            shell.run_script(args.sql)
        elif args.file is not None:
            shell.read_file(args.file)
        elif interactive:
            shell.interact()
            return 0
        else:
            try:
                script = sys.stdin.read()
            except UnicodeDecodeError:
                print("Error: cannot read standard input: not text (not UTF-8)", file=sys.stderr)
                return 1
            shell.run_script(script)
        return 1 if shell.failed else 0
    except KeyboardInterrupt:  # between statements; one inside a query is handled by the shell
        print("Interrupted", file=sys.stderr)
        return 130
    finally:
        shell.close()
        con.close()


def run_verb(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="aefsql", description="AlphaEarth Foundations embeddings, queryable from SQL."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="write a small AEF-format collection and run the canonical join on it"
    )
    demo.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"where to write the collection (default {default_demo_dir()})",
    )
    sample = commands.add_parser(
        "sample", help="sample every row of a points file (csv, parquet, json, a glob)"
    )
    sample.add_argument("points", help="any file DuckDB reads: points.csv, plots/*.parquet, …")
    sample.add_argument("-o", "--output", type=Path, help="write .parquet, .csv or .json")
    sample.add_argument(
        "--years", "--year", dest="years", required=True, help="2023, 2023,2024 or 2017-2025"
    )
    sample.add_argument("--x", default="lon", help="x (longitude) column (default lon)")
    sample.add_argument("--y", default="lat", help="y (latitude) column (default lat)")
    sample.add_argument(
        "--geometry", help="a point geometry column (GEOMETRY or WKB) instead of --x/--y"
    )
    sample.add_argument(
        "--crs", default="EPSG:4326", help="CRS of the points: 4326 (default) or EPSG:32610"
    )
    sample.add_argument("--bands", default="all", help="A00,A01,… or all (default)")
    _session_options(sample)
    sample.add_argument(
        "--on-error",
        choices=ON_ERROR,
        default="raise",
        help="null: rows of unreadable files get NULL bands and an aef_error column, "
        "instead of failing the job (default raise)",
    )
    sample.add_argument(
        "--dry-run",
        action="store_true",
        help="print the files, blocks, requests and bytes the job needs; read no pixel",
    )
    build = commands.add_parser(
        "write-headers",
        aliases=["build-collection"],
        help="write the headers of the catalog's files to one Parquet (the headers file)",
    )
    build.add_argument("-o", "--output", required=True, help="headers.parquet path or URL")
    build.add_argument(
        "--years", "--year", dest="years", help="only these years: 2023, 2023,2024 or 2017-2025"
    )
    _session_options(build)
    draw = commands.add_parser(
        "picture",
        help="a PNG of an area: three principal components as RGB, or a similarity map",
    )
    draw.add_argument(
        "--bbox", required=True, help="west,south,east,north in --crs (--bbox=-122.5,… if negative)"
    )
    draw.add_argument(
        "--year",
        "--years",
        dest="year",
        required=True,
        help="a year, e.g. 2024; or several (2023,2024) with {year} in -o: one PNG a year, "
        "coloured alike, so that a change shows",
    )
    draw.add_argument("--crs", default="EPSG:4326", help="CRS of --bbox (default EPSG:4326)")
    draw.add_argument(
        "--similar-to", help="lon,lat: grey map of the cosine similarity to this place"
    )
    draw.add_argument(
        "--bands", default="all", help="A00,A01,… the bands the picture is made of (default all)"
    )
    draw.add_argument(
        "--level",
        type=int,
        default=0,
        help="0: full resolution (default); k: the files' k-th overview (2^k x coarser)",
    )
    draw.add_argument(
        "--max-bytes",
        type=int,
        default=RASTER_BYTES,
        help=f"refuse an area whose pixels take more (default {RASTER_BYTES})",
    )
    draw.add_argument("-o", "--output", required=True, type=Path, help="the .png to write")
    _session_options(draw)
    mapped = commands.add_parser(
        "map",
        help="a Cloud-Optimized GeoTIFF of an area: similarity, change, PCA colours or bands",
    )
    mapped.add_argument(
        "--kind",
        required=True,
        choices=KINDS,
        help="similarity (to --similar-to), change (between --years), pca (RGB and alpha) "
        "or bands (int8)",
    )
    mapped.add_argument(
        "--bbox", required=True, help="west,south,east,north in --crs (--bbox=-122.5,… if negative)"
    )
    mapped.add_argument(
        "--year", "--years", dest="year", required=True, help="a year; change: 2023,2024"
    )
    mapped.add_argument("--crs", default="EPSG:4326", help="CRS of --bbox (default EPSG:4326)")
    mapped.add_argument(
        "--target-crs",
        help="the map's CRS (a UTM zone) for an area across zones (default: the zone whose "
        "tiles own most of it)",
    )
    mapped.add_argument(
        "--similar-to",
        action="append",
        metavar="LON,LAT",
        help="similarity: a place whose embedding is the query (repeatable: their mean)",
    )
    mapped.add_argument(
        "--unlike",
        action="append",
        metavar="LON,LAT",
        help="similarity: a place to rank away from (repeatable)",
    )
    mapped.add_argument(
        "--bands", help="A00,A01,… or all: the bands of a bands or pca map (default all)"
    )
    mapped.add_argument(
        "--level",
        type=int,
        default=0,
        help="0: full resolution (default); k: the files' k-th overview (2^k x coarser)",
    )
    mapped.add_argument(
        "--max-bytes",
        type=int,
        default=RASTER_BYTES,
        help=f"refuse an area whose pixels take more (default {RASTER_BYTES})",
    )
    mapped.add_argument(
        "--compression", choices=("deflate", "zstd"), default="deflate", help="default deflate"
    )
    mapped.add_argument("-o", "--output", required=True, type=Path, help="the .tif to write")
    _session_options(mapped)
    dump = commands.add_parser(
        "export",
        help="every pixel of an area as an embedding table: GeoParquet 2.0, Hilbert-sorted",
    )
    dump.add_argument(
        "--bbox", required=True, help="west,south,east,north in --crs (--bbox=-122.5,… if negative)"
    )
    dump.add_argument(
        "--years", "--year", dest="years", required=True, help="2023, 2023,2024 or 2017-2025"
    )
    dump.add_argument("--crs", default="EPSG:4326", help="CRS of --bbox (default EPSG:4326)")
    dump.add_argument(
        "--geometry",
        choices=("point", "pixel"),
        default="point",
        help="point: each pixel's centre (default); pixel: its footprint polygon",
    )
    dump.add_argument(
        "--level",
        type=int,
        default=0,
        help="0: full resolution (default); k: the files' k-th overview (2^k x coarser)",
    )
    dump.add_argument(
        "--max-bytes",
        type=int,
        default=None,
        help="refuse an area whose pixels x 64 bands x years take more (default 16 GiB)",
    )
    dump.add_argument(
        "--row-group-rows",
        type=int,
        default=EXPORT_ROW_GROUP_ROWS,
        help=f"rows per Parquet row group (default {EXPORT_ROW_GROUP_ROWS})",
    )
    dump.add_argument("-o", "--output", required=True, type=Path, help="the .parquet to write")
    _session_options(dump)
    _refuse_unknown_options(commands.choices.get(argv[0]) if argv else None, argv[1:])
    args = parser.parse_args(argv)
    # Python's warnings, as one line each ("aefsql: warning: …"); none after an error, which
    # says what went wrong.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        code = _run_verb(args)
    if code == 0:
        for message in dict.fromkeys(str(w.message) for w in caught):
            print(f"aefsql: warning: {message}", file=sys.stderr)
    return code


def _session_options(verb: argparse.ArgumentParser) -> None:
    """The options every verb that reads the collection takes (SHARED_OPTIONS)."""
    verb.add_argument(
        "--catalog",
        help="index parquet path/URL (default: $AEFSQL_CATALOG, else the public AEF index)",
    )
    verb.add_argument("--cache-dir", help="keep every byte read here (default $AEFSQL_CACHE_DIR)")
    verb.add_argument(
        "--allow-host",
        action="append",
        dest="allowed_hosts",
        metavar="HOST",
        help="a host or bucket a remote catalog may name besides its own (repeatable)",
    )


def _refuse_unknown_options(verb: argparse.ArgumentParser | None, argv: list[str]) -> None:
    """A misspelt option said as such, with the nearest one, before argparse's own checks:
    it reports a missing required option first, so `--yeers 2024` read as "--years is
    required"."""
    if verb is None:
        return
    known = [name for name in verb._option_string_actions if name.startswith("--")]
    for token in argv:
        if token == "--":
            break
        name = token.split("=", 1)[0]
        if not name.startswith("--") or any(option.startswith(name) for option in known):
            continue  # (argparse takes an unambiguous prefix of an option)
        near = difflib.get_close_matches(name, known, n=1)
        verb.error(f"unknown option {name}" + (f" (did you mean {near[0]}?)" if near else ""))


def _run_verb(args) -> int:
    try:
        if args.command == "demo":
            run_demo(args.dir or default_demo_dir())
        elif args.command == "sample":
            run_sample(args)
        elif args.command in ("write-headers", "build-collection"):
            if args.command == "build-collection":
                warnings.warn(
                    "aefsql build-collection is deprecated: use aefsql write-headers",
                    DeprecationWarning,
                    stacklevel=1,  # caught and printed as one line: no frame to name
                )
            years = parse_years(args.years) if args.years else None
            files = write_headers(
                args.output,
                catalog=args.catalog,
                years=years,
                cache_dir=args.cache_dir,
                allowed_hosts=args.allowed_hosts,
            )
            print(f"wrote {args.output}: headers of {files} files")
        elif args.command == "picture":
            run_picture(args)
        elif args.command == "map":
            run_map(args)
        elif args.command == "export":
            run_export(args)
    except (AefsqlError, duckdb.Error, OSError) as exc:
        if isinstance(exc, OptionError):
            exc = exc.phrased("cli")
        print(f"aefsql: error: {error_text(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
