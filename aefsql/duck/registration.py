"""Registration: making the aef_* functions callable on a DuckDB connection (its session's
Python UDFs, created once per database instance, and the TEMP macros of sql/, per connection
or cursor), and the text of those macros."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ..aef import BAND_COUNT, BAND_NAMES, NODATA, STEP
from ..errors import AefsqlError
from ..headers.table import SCHEMA as HEADERS_SCHEMA
from ..options import headers_option
from ..session import open_session
from ..storage.store import DEFAULT_CONCURRENCY
from .calls import sql_literal
from .filesystems import duckdb_filesystems
from .types import (
    AREA_PLAN_ARROW,
    CHANGE_ARROW,
    CHANGE_CHUNK_ARROW,
    CHANGE_UNIT_ARROW,
    CHIP_ARROW,
    CHIP_PLAN_ARROW,
    CHUNK_ARROW,
    EMBEDDING_ARROW,
    GEOMETRY_ARROW,
    GRID_ARROW,
    LOCATED_ARROW,
    LONLAT_ARROW,
    OPTIONS_ARROW,
    PIXEL_ARROW,
    PIXEL_SIMILARITY_ARROW,
    PIXEL_VECTOR_ARROW,
    PLAN_ARROW,
    POINT_XY_ARROW,
    QUERY_ARROW,
    SAMPLE_VALUES_ARROW,
    UNIT_ARROW,
    ZONAL_ARROW,
    sql_type,
)
from .udfs import SessionUdfs

SQL_FILES = (
    "aef_values.sql",
    "aef_functions.sql",
    "aef_index.sql",
    "aef_sample_points.sql",
    "aef_areas.sql",
    "aef_analyses.sql",
)

# An area argument: WKB, box, the value as text and its type (where it is neither), EPSG
# code, years, bands, max_bytes, level.
AREA_PARAMS = [
    "BLOB",
    "DOUBLE[]",
    "VARCHAR",
    "VARCHAR",
    "INTEGER",
    "INTEGER[]",
    "INTEGER",
    "BIGINT",
    "INTEGER",
]


# The oldest DuckDB aefsql runs on: pyproject.toml's `duckdb>=` says the same
# (tests/test_duckdb_version.py checks they agree). 1.4 cannot register the macros (ST_CRS,
# the GEOMETRY type with a CRS, are not in its core); the test suite runs on 2.0 only.
MIN_DUCKDB = (2, 0)


def check_duckdb_version(version: str) -> None:
    """AefsqlError when `version` (a duckdb.__version__) is older than MIN_DUCKDB, naming the
    fix; nothing for a version it cannot read (a source build)."""
    match = re.match(r"v?(\d+)\.(\d+)", version)
    if match is None or (int(match.group(1)), int(match.group(2))) >= MIN_DUCKDB:
        return
    floor = ".".join(map(str, MIN_DUCKDB))
    raise AefsqlError(
        f"aefsql needs DuckDB {floor} or later (its core GEOMETRY type and ST_ functions); "
        f"this Python has duckdb {version}: pip install --upgrade 'duckdb>={floor}'"
    )


def register(
    con: duckdb.DuckDBPyConnection,
    catalog: str | None = None,
    *,
    allowed_hosts: list[str] | None = None,
    cache_dir: str | None = None,
    headers: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: bool | None = False,
    storage_options: Mapping[str, Any] | None = None,
    collection: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """Register every aef_* function on `con` (TEMP macros: per connection or cursor).

    `catalog`: path or URL of an AEF index parquet; default `$AEFSQL_CATALOG`, else the public
    AEF index. `allowed_hosts`: hosts (or s3/gs buckets) other than its own that a remote
    catalog may name tiles on; default None, its own origin only. A catalog is untrusted
    input: local files, cloud metadata and addresses further into the network than the
    catalog's own host are refused whatever the list says (docs/security.md).
    `cache_dir` keeps every byte read (and the catalog) in this folder, so that re-runs read
    nothing from the network (default `$AEFSQL_CACHE_DIR`, else none); `headers` is a
    headers file (see `write_headers`) whose headers are used instead of reading them from
    the files (default `$AEFSQL_HEADERS`; `collection` is its deprecated alias);
    `concurrency` is the number of requests in flight; `progress` shows a progress line on
    stderr while sampling (None: when stderr is a terminal). `storage_options`: fsspec
    storage options for the catalog's protocol, one mapping (endpoint_url, anon,
    key/secret, …; default `$AEFSQL_STORAGE_OPTIONS`, JSON).
    """
    check_duckdb_version(duckdb.__version__)  # before the catalog: the first thing to fix
    session = open_session(
        catalog,
        allowed_hosts=allowed_hosts,
        cache_dir=cache_dir,
        headers=headers_option(headers, collection),
        concurrency=concurrency,
        progress=progress,
        storage_options=storage_options,
    )
    install(con, SessionUdfs(session))
    return con


def connect(
    database: str = ":memory:",
    catalog: str | None = None,
    *,
    allowed_hosts: list[str] | None = None,
    cache_dir: str | None = None,
    headers: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: bool | None = False,
    storage_options: Mapping[str, Any] | None = None,
    collection: str | None = None,
):
    """A DuckDB connection (`database`: a file, default in memory) with every aef_* function
    registered; the options are `register`'s."""
    con = duckdb.connect(database)
    try:
        return register(
            con,
            catalog,
            allowed_hosts=allowed_hosts,
            cache_dir=cache_dir,
            headers=headers_option(headers, collection),
            concurrency=concurrency,
            progress=progress,
            storage_options=storage_options,
        )
    except BaseException:
        con.close()
        raise


# The format's facts in the macros' text (sql/aef_values.sql), from their one home (aef.py).
AEF_FACTS = {
    "{nodata}": str(NODATA),
    "{step}": repr(STEP),
    "{band_count}": str(BAND_COUNT),
    "{band_names}": sql_literal(BAND_NAMES),
    "{dequantized_bands}": "["
    + ", ".join(f"aef_dequantize(embedding.{name})" for name in BAND_NAMES)
    + "]",
}


def install(con: duckdb.DuckDBPyConnection, udfs: SessionUdfs) -> None:
    """Make the aef_* functions callable on `con`: the Python UDFs of `udfs` (once per
    database instance: cursors share them) and the TEMP macros (per connection/cursor)."""
    check_duckdb_version(duckdb.__version__)  # every host registers here (dbt, Spark, the API)
    url = udfs.session.catalog.url
    for fs in duckdb_filesystems(udfs.session.engine.store, url):
        # Once per database instance: unregistering a filesystem while another cursor
        # reads through it crashes DuckDB (dbt registers every cursor from its threads).
        # The first session's storage options serve DuckDB's own readers of that protocol.
        if not con.filesystem_is_registered(fs.protocol[0]):
            con.register_filesystem(fs)
    if udfs.udf_prefix is None or not _function_exists(con, f"{udfs.udf_prefix}_file_embedding"):
        udfs.udf_prefix = _create_functions(con, udfs)
    replacements = {
        "{udf}": udfs.udf_prefix,
        **AEF_FACTS,
    }
    udfs._install_state.creating = True
    try:
        for name in SQL_FILES:
            sql = _sql_text(name)
            for placeholder, text in replacements.items():
                sql = sql.replace(placeholder, text)
            con.execute(sql)
    finally:
        udfs._install_state.creating = False


def _function_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    rows = con.execute(
        "SELECT count(*) FROM duckdb_functions() WHERE function_name = ?", [name]
    ).fetchall()
    return rows[0][0] > 0


# UDFs that write aef_sample_points' per-query store (duck/sampled.py) or read it back once:
# volatile, so that DuckDB calls each once per row, never once more for a pushed-down filter.
_WRITING = {"sample_store", "sample_group", "sampled_values", "sampled_geometry"}


def _create_functions(con: duckdb.DuckDBPyConnection, session: SessionUdfs) -> str:
    """Create the session's Python UDFs under fresh names; return their common prefix.

    UDFs belong to the database instance, so a second connection (or cursor) with another
    catalog cannot reuse the names; the public aef_* names are TEMP macros of each connection
    that call its own session's UDFs.
    """
    prefix = f"__aef_{secrets.token_hex(4)}"
    functions = [
        (
            "file_embedding",
            session.aef_file_embedding,
            ["VARCHAR", "DOUBLE", "DOUBLE"],
            EMBEDDING_ARROW,
        ),
        (
            "embedding",
            session.aef_embedding,
            ["DOUBLE", "DOUBLE", "DOUBLE", "INTEGER"],
            EMBEDDING_ARROW,
        ),
        ("locate", session.aef_locate, ["DOUBLE", "DOUBLE", "DOUBLE", "INTEGER"], pa.string()),
        (
            "locate_pixel",
            session.locate_pixel,
            ["DOUBLE", "DOUBLE", "DOUBLE", "INTEGER"],
            LOCATED_ARROW,
        ),
        (
            "sample_store",
            session.sample_store,
            ["BIGINT", "INTEGER[]", "VARCHAR[]", "VARCHAR[]", "VARCHAR"],
            pa.int64(),
        ),
        (
            "sample_group",
            session.sample_group,
            ["BIGINT", "VARCHAR", "INTEGER", "BIGINT[]", "INTEGER[]", "INTEGER[]", "VARCHAR"],
            pa.int64(),
        ),
        (
            "sampled_values",
            session.sampled_values,
            ["BIGINT", "BIGINT", "INTEGER", "BIGINT"],
            SAMPLE_VALUES_ARROW,
        ),
        (
            "sampled_geometry",
            session.sampled_geometry,
            ["BIGINT", "BIGINT", "INTEGER", "VARCHAR", "BIGINT"],
            GEOMETRY_ARROW,
        ),
        ("build_collection", session.build_collection, ["VARCHAR", "VARCHAR"], pa.int64()),
        ("headers", session.headers, ["VARCHAR"], pa.list_(pa.struct(list(HEADERS_SCHEMA)))),
        (
            "plan_group",
            session.plan_group,
            ["VARCHAR", "DOUBLE[]", "DOUBLE[]", "INTEGER", "VARCHAR[]"],
            PLAN_ARROW,
        ),
        ("options", session.options, ["VARCHAR"], OPTIONS_ARROW),
        ("point_xy", session.point_xy, ["BLOB"], POINT_XY_ARROW),
        ("input_column", session.input_column, ["VARCHAR", "VARCHAR"], pa.bool_()),
        ("value_columns", session.value_columns, ["VARCHAR"], pa.list_(pa.string())),
        ("index_file", session.index_file, ["INTEGER"], pa.string()),
        (
            "chip_plan",
            session.chip_plan,
            # size as DOUBLE: a CAST to INTEGER in SQL would round 2.5 to 3 unseen.
            ["BIGINT", "DOUBLE", "INTEGER", "BIGINT"],
            CHIP_PLAN_ARROW,
        ),
        (
            "chip",
            session.chip,
            [
                "VARCHAR",
                "INTEGER",
                "DOUBLE",
                "DOUBLE",
                "INTEGER",
                "VARCHAR[]",
                "INTEGER",
                "INTEGER",
                "VARCHAR",
            ],
            CHIP_ARROW,
        ),
        (
            "points_note",
            session.points_note,
            ["DOUBLE[]", "DOUBLE[]", "INTEGER", "INTEGER"],
            pa.string(),
        ),
        ("area_units", session.area_units, AREA_PARAMS, pa.list_(UNIT_ARROW)),
        ("unit_chunks", session.unit_chunks, [UNIT_ARROW], pa.list_(CHUNK_ARROW)),
        ("area_plan", session.area_plan, AREA_PARAMS, pa.list_(AREA_PLAN_ARROW)),
        (
            "chunk_pixels",
            session.chunk_pixels,
            [
                "VARCHAR",
                "INTEGER",
                "INTEGER",
                "INTEGER",
                "INTEGER",
                "BOOLEAN",
                "VARCHAR[]",
                "INTEGER",
            ],
            pa.list_(PIXEL_ARROW),
        ),
        ("pixel_lonlat", session.pixel_lonlat, ["DOUBLE", "DOUBLE", "VARCHAR"], LONLAT_ARROW),
        ("geometry_wanted", session.geometry_wanted, ["VARCHAR"], pa.bool_()),
        ("lonlat_point", session.lonlat_point, [LONLAT_ARROW], GEOMETRY_ARROW),
        (
            "pixel_geometry",
            session.pixel_geometry,
            ["VARCHAR", "INTEGER", "DOUBLE", "DOUBLE", "VARCHAR"],
            GEOMETRY_ARROW,
        ),
        (
            "zonal_status",
            session.zonal_status,
            ["BIGINT", "BIGINT", "VARCHAR", "INTEGER"],
            pa.string(),
        ),
        (
            "chip_status",
            session.chip_status,
            ["VARCHAR", "BIGINT", "INTEGER", "VARCHAR", "INTEGER"],
            pa.string(),
        ),
        (
            "chip_geometry",
            session.chip_geometry,
            ["VARCHAR", CHIP_ARROW.field("chip_bounds").type, "INTEGER", "VARCHAR"],
            GEOMETRY_ARROW,
        ),
        (
            "chunk_vectors",
            session.chunk_vectors,
            ["VARCHAR", "INTEGER", "INTEGER", "INTEGER", "INTEGER", "BOOLEAN", "INTEGER"],
            pa.list_(PIXEL_VECTOR_ARROW),
        ),
        ("similarity_query", session.similarity_query, ["VARCHAR", "VARCHAR"], QUERY_ARROW),
        (
            "chunk_similarity",
            session.chunk_similarity,
            [
                "VARCHAR",
                "INTEGER",
                "INTEGER",
                "INTEGER",
                "INTEGER",
                "BOOLEAN",
                "INTEGER",
                pa.list_(pa.float32(), BAND_COUNT),
            ],
            pa.list_(PIXEL_SIMILARITY_ARROW),
        ),
        (
            "zonal",
            session.zonal,
            [
                "BIGINT[]",
                "BLOB[]",
                "VARCHAR[]",
                "VARCHAR[]",
                "INTEGER",
                "INTEGER[]",
                "INTEGER",
                "VARCHAR",
                "BIGINT",
            ],
            pa.list_(ZONAL_ARROW),
        ),
        ("grid", session.grid, [*AREA_PARAMS, "VARCHAR"], pa.list_(GRID_ARROW)),
        (
            "grid_geometry",
            session.grid_geometry,
            ["VARCHAR", "VARCHAR", "VARCHAR"],
            GEOMETRY_ARROW,
        ),
        ("change_units", session.change_units, AREA_PARAMS, pa.list_(CHANGE_UNIT_ARROW)),
        ("change_chunks", session.change_chunks, [CHANGE_UNIT_ARROW], pa.list_(CHANGE_CHUNK_ARROW)),
        (
            "change_pixels",
            session.change_pixels,
            ["VARCHAR[]", "INTEGER[]", "INTEGER", "INTEGER", "INTEGER", "BOOLEAN", "INTEGER"],
            pa.list_(CHANGE_ARROW),
        ),
    ]
    for name, fn, params, returns in functions:
        # "special": NULL inputs reach the function, which answers NULL for them itself.
        con.create_function(
            f"{prefix}_{name}",
            fn,
            [p if isinstance(p, str) else sql_type(con, p) for p in params],
            sql_type(con, returns),
            type="arrow",
            null_handling="special",
            side_effects=name in _WRITING,
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
    return (Path(__file__).resolve().parents[2] / "sql" / name).read_text()
