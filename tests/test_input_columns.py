"""Input columns against the columns a table function adds and aefsql's own (issues 21, 22):
a clash is refused while the query binds (DESCRIBE too, never a renamed `year_1`), and a
user's column named `__aef_row` is refused rather than silently renamed `__aef_row_1`."""

import pyarrow as pa
import pytest
from gdal_fixtures import COLLECTION_TILES, to_lonlat

import aefsql
from aefsql.errors import AefsqlError

_, EPSG, X0, Y0 = COLLECTION_TILES[3]
SQUARE = (
    f"POLYGON(({X0 + 600} {Y0 + 500}, {X0 + 900} {Y0 + 500}, {X0 + 900} {Y0 + 800}, "
    f"{X0 + 600} {Y0 + 800}, {X0 + 600} {Y0 + 500}))"
)
CALLS = {
    "aef_plan": "aef_plan('t', years := 2023)",
    "aef_sample_points": "aef_sample_points('t', years := 2023)",
    "aef_zonal": f"aef_zonal('t', years := 2023, crs := {EPSG})",
    "aef_chips": "aef_chips('t', years := 2023, size := 4)",
}


def table(extra: dict) -> pa.Table:
    lon, lat = to_lonlat(EPSG, [X0 + 700, X0 + 1200, X0 + 2000], [Y0 + 600, Y0 + 900, Y0 + 1500])
    return pa.table({"lon": lon, "lat": lat, "geom": [SQUARE] * 3, **extra})


@pytest.mark.parametrize("function", sorted(CALLS))
def test_describe_refuses_a_colliding_year(con, function):
    con.register("t", table({"year": [1, 2, 3]}))
    try:
        with pytest.raises(Exception, match=rf"{function}: .* already has column\(s\) year"):
            con.sql(f"DESCRIBE SELECT * FROM {CALLS[function]}").fetchall()
        with pytest.raises(Exception, match=r"already has column\(s\) year"):
            con.sql(f"SELECT * FROM {CALLS[function]}").fetchall()
    finally:
        con.unregister("t")


@pytest.mark.parametrize("function", sorted(CALLS))
def test_a_column_differing_only_in_case_collides(con, function):
    con.register("t", table({"Year": [1, 2, 3]}))
    try:
        with pytest.raises(Exception, match=r"already has column\(s\) Year"):
            con.sql(f"DESCRIBE SELECT * FROM {CALLS[function]}").fetchall()
    finally:
        con.unregister("t")


@pytest.mark.parametrize("name", ["__aef_row", "__aef_no_g", "__AEF_year"])
@pytest.mark.parametrize("function", sorted(CALLS))
def test_aefsql_own_names_are_refused(con, function, name):
    con.register("t", table({name: [7, 8, 9]}))
    try:
        with pytest.raises(Exception, match=rf"has column {name}: names starting with __aef_"):
            con.sql(f"SELECT * FROM {CALLS[function]}").fetchall()
        with pytest.raises(Exception, match=rf"has column {name}: names starting with __aef_"):
            con.sql(f"DESCRIBE SELECT * FROM {CALLS[function]}").fetchall()
    finally:
        con.unregister("t")


def test_python_refuses_aefsql_own_names(gdal_collection):
    with pytest.raises(AefsqlError, match=r"has column __aef_row: names starting with __aef_"):
        aefsql.sample_points(
            table({"__aef_row": [7, 8, 9]}).drop_columns(["geom"]),
            years=2023,
            catalog=gdal_collection.index,
        )


@pytest.mark.parametrize("function", ["aef_chips", "aef_sample_points", "aef_zonal"])
def test_other_columns_pass_through_unchanged(con, function):
    con.register("t", table({"row": [7, 8, 9], "aef_row": ["a", "b", "c"]}))
    try:
        names = [r[0] for r in con.sql(f"DESCRIBE SELECT * FROM {CALLS[function]}").fetchall()]
        got = con.sql(f"SELECT row, aef_row FROM {CALLS[function]}").fetchall()
    finally:
        con.unregister("t")
    assert names[:5] == ["lon", "lat", "geom", "row", "aef_row"] and names[5] == "year"
    assert got == [(7, "a"), (8, "b"), (9, "c")]
