"""The aef_* UDFs' SQL types are derived from their Arrow types (aefsql/duck/types.py): each
must be the type the UDF was declared with when both were written by hand."""

import duckdb

from aefsql.duck.registration import install
from aefsql.duck.udfs import SessionUdfs
from aefsql.session import open_session

BANDS = ", ".join(f"A{i:02d} TINYINT" for i in range(64))
EMBEDDING = f"STRUCT({BANDS})"
UNIT = (
    "STRUCT(year INTEGER, tiles BIGINT[], stand_in BOOLEAN, wkb BLOB, box DOUBLE[], "
    "crs INTEGER, level INTEGER)"
)
# The SQL types the UDFs were declared with before the derivation, written out by hand.
RETURNS = {
    "file_embedding": EMBEDDING,
    "embedding": EMBEDDING,
    "locate": "VARCHAR",
    "locate_pixel": "STRUCT(path VARCHAR, pixel_row INTEGER, pixel_col INTEGER)",
    "sample_store": "BIGINT",
    "sample_group": "BIGINT",
    "sampled_values": f"STRUCT({BANDS}, aef_error VARCHAR, status VARCHAR)",
    "build_collection": "BIGINT",
    "plan_group": "STRUCT(points BIGINT, blocks BIGINT, requests BIGINT, bytes BIGINT)",
    "options": "STRUCT(error VARCHAR, years INTEGER[], crs INTEGER, bands VARCHAR[])",
    "point_xy": "STRUCT(x DOUBLE, y DOUBLE)",
    "input_column": "BOOLEAN",
    "index_file": "VARCHAR",
    "chip_plan": "STRUCT(error VARCHAR, per_call INTEGER, period INTEGER)",
    "chip": (
        "STRUCT(chip TINYINT[][][], chip_crs VARCHAR, chip_bounds STRUCT(xmin DOUBLE, "
        "ymin DOUBLE, xmax DOUBLE, ymax DOUBLE), valid_pixels BIGINT, embedding FLOAT[64], "
        "aef_error VARCHAR)"
    ),
    "points_note": "VARCHAR",
    "area_units": f"{UNIT}[]",
    "unit_chunks": (
        "STRUCT(path VARCHAR, year INTEGER, row INTEGER, col0 INTEGER, col1 INTEGER, "
        "centroid BOOLEAN)[]"
    ),
    "area_plan": (
        "STRUCT(plan_year INTEGER, tiles BIGINT, blocks BIGINT, pixels BIGINT, "
        "value_bytes BIGINT, note VARCHAR)[]"
    ),
    "pixel_lonlat": "STRUCT(lon DOUBLE, lat DOUBLE)",
    "chunk_pixels": (
        "STRUCT(location BIGINT, row INTEGER, col INTEGER, x DOUBLE, y DOUBLE, xy_crs VARCHAR, "
        f"{BANDS})[]"
    ),
    "chunk_vectors": (
        "STRUCT(location BIGINT, row INTEGER, col INTEGER, x DOUBLE, y DOUBLE, xy_crs VARCHAR, "
        "embedding FLOAT[64])[]"
    ),
    "similarity_query": "STRUCT(error VARCHAR, query FLOAT[64])",
    "chunk_similarity": (  # (no row/col: aef_similarity does not give them)
        "STRUCT(location BIGINT, x DOUBLE, y DOUBLE, xy_crs VARCHAR, similarity FLOAT)[]"
    ),
    "zonal": (
        "STRUCT(row BIGINT, year INTEGER, pixels BIGINT, nodata_pixels BIGINT, "
        "centroid_pixel BOOLEAN, embedding FLOAT[64], aef_error VARCHAR)[]"
    ),
    "grid": (
        "STRUCT(cell VARCHAR, year INTEGER, pixels BIGINT, nodata_pixels BIGINT, "
        "embedding FLOAT[64])[]"
    ),
    "change_units": (
        "STRUCT(position INTEGER, stand_in BOOLEAN, wkb BLOB, box DOUBLE[], crs INTEGER, "
        "years INTEGER[], level INTEGER)[]"
    ),
    "change_chunks": (
        "STRUCT(paths VARCHAR[], row INTEGER, col0 INTEGER, col1 INTEGER, centroid BOOLEAN)[]"
    ),
    "change_pixels": (
        "STRUCT(location BIGINT, x DOUBLE, y DOUBLE, xy_crs VARCHAR, year_from INTEGER, "
        "year_to INTEGER, similarity FLOAT)[]"
    ),
    # (geometry := …: these came with the derivation, from a GeoArrow WKB type with its CRS.)
    "geometry_wanted": "BOOLEAN",
    "lonlat_point": "GEOMETRY('OGC:CRS84')",
    "pixel_geometry": "GEOMETRY('OGC:CRS84')",
    "chip_geometry": "GEOMETRY('OGC:CRS84')",
    "grid_geometry": "GEOMETRY('OGC:CRS84')",
    "sampled_geometry": "GEOMETRY('OGC:CRS84')",
    # (status := … of aef_zonal and aef_chips: coverage.STATUSES words)
    "zonal_status": "VARCHAR",
    "chip_status": "VARCHAR",
    # (the bands or embedding a call gives, checked while the query binds)
    "value_columns": "VARCHAR[]",
}


def test_derived_sql_types_equal_the_hand_written_ones(gdal_collection):
    session = SessionUdfs(open_session(gdal_collection.index))
    with duckdb.connect() as con:
        install(con, session)
        rows = con.execute(
            "SELECT function_name, return_type, parameter_types FROM duckdb_functions() "
            "WHERE starts_with(function_name, ?)",
            [session.udf_prefix + "_"],
        ).fetchall()
    declared = {name.removeprefix(session.udf_prefix + "_"): row for name, *row in rows}
    # (aef_headers' UDF came after the derivation: its type is the headers file's schema.)
    assert declared.keys() - {"headers"} == RETURNS.keys()
    for name in RETURNS:
        returns = declared[name][0]
        # DuckDB quotes the field names that are keywords ("year"): compare types, not text.
        assert duckdb.sqltype(returns) == duckdb.sqltype(RETURNS[name]), name
    # A parameter derived from an Arrow type too: unit_chunks takes area_units' units.
    (unit,) = declared["unit_chunks"][1]
    assert duckdb.sqltype(unit) == duckdb.sqltype(UNIT)
