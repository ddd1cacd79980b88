"""No silent empties (issue 21): swapped lon/lat, a year the catalog lacks, an area outside
coverage, lon/lat numbers with a projected crs, projected numbers as lon/lat. aef_area_plan
says why per year (and what a read would touch, checked against rasterio on the GDAL-written
collection); the Python entry points warn with the same words (aefsql/kernels/coverage.py)."""

import re
import warnings

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from gdal_fixtures import COLLECTION_TILES, collection_path, to_lonlat
from rasterio.features import geometry_mask

import aefsql
from aefsql.geometry.geo import box_wkb

_, EPSG, X0, Y0 = COLLECTION_TILES[3]  # the Peru tile (18S), alone in its zone
BOX = [X0 + 1003.0, Y0 + 497.0, X0 + 1796.0, Y0 + 1304.0]
LON, LAT = (float(v[0]) for v in to_lonlat(EPSG, [X0 + 1400], [Y0 + 900]))
LONLAT_BOX = [LON - 0.003, LAT - 0.003, LON + 0.003, LAT + 0.003]
SWAPPED_BOX = [LAT - 0.003, LON - 0.003, LAT + 0.003, LON + 0.003]

SWAPPED = "coordinates look swapped (lat, lon)?: give longitude first, then latitude"
LONLAT_AS_PROJECTED = f"the coordinates look like lon/lat, but crs := {EPSG} is projected"
OUTSIDE = "outside coverage: the catalog has no tile of year 2023 there"


def plan(con, area, years="[2023, 2024]", extra=""):
    return con.sql(f"SELECT * FROM aef_area_plan({area}, years := {years}{extra})").to_arrow_table()


def gdal_plan(path, box, block=128):
    """(pixels, blocks) of the pixel centres inside `box` (in the file's CRS), by rasterio."""
    west, south, east, north = box
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    with rasterio.open(path) as ds:
        inside = geometry_mask(
            [{"type": "Polygon", "coordinates": [ring]}],
            (ds.height, ds.width),
            ds.transform,
            invert=True,
        )
        assert ds.block_shapes[0] == (block, block)
    rows, cols = np.nonzero(inside)
    return int(inside.sum()), len(
        set(zip((rows // block).tolist(), (cols // block).tolist(), strict=True))
    )


def test_the_plan_counts_what_gdal_finds(con, gdal_collection):
    table = plan(con, str(BOX), extra=f", crs := {EPSG}, bands := ['A00', 'A05']")
    assert table.column_names == ["year", "tiles", "blocks", "pixels", "value_bytes", "note"]
    for row in table.to_pylist():
        pixels, blocks = gdal_plan(gdal_collection.folder / collection_path(row["year"], 3), BOX)
        assert (row["tiles"], row["blocks"], row["pixels"]) == (1, blocks, pixels)
        assert blocks > 1 and row["value_bytes"] == pixels * 2 and row["note"] is None
    counted = con.sql(
        f"SELECT year, count(*) FROM aef_pixels({BOX}, years := [2023, 2024], crs := {EPSG}) "
        "GROUP BY year ORDER BY year"
    ).fetchall()
    assert counted == [(r["year"], r["pixels"]) for r in table.to_pylist()]


@pytest.mark.parametrize(
    "area, extra, note",
    [
        (str(SWAPPED_BOX), "", SWAPPED),
        (str(LONLAT_BOX), f", crs := {EPSG}", LONLAT_AS_PROJECTED),
        ("[-30.0, 30.0, -29.9, 30.1]", "", OUTSIDE),
        (
            f"'POLYGON(({LAT} {LON}, {LAT + 0.01} {LON}, {LAT} {LON + 0.01}, {LAT} {LON}))'",
            "",
            SWAPPED,
        ),
    ],
)
def test_the_plan_says_why_nothing_comes_back(con, area, extra, note):
    table = plan(con, area, years="2023", extra=extra)
    rows = table.to_pylist()
    assert len(rows) == 1 and rows[0]["pixels"] == 0 and rows[0]["tiles"] == 0
    assert rows[0]["note"].startswith(note)
    # … and aef_pixels does find nothing there
    assert con.sql(f"SELECT count(*) FROM aef_pixels({area}, years := 2023{extra})").fetchall() == [
        (0,)
    ]


def test_a_missing_year_is_named_beside_the_good_ones(con):
    rows = plan(con, str(LONLAT_BOX), years="[2019, 2023]").to_pylist()
    assert rows[0]["year"] == 2019
    assert rows[0]["note"] == "the catalog has no tile of year(s) 2019 (it has 2023, 2024)"
    assert rows[1]["note"] is None and rows[1]["pixels"] > 1000


def test_over_budget_is_said_not_read(con):
    rows = plan(con, str(LONLAT_BOX), years="2023", extra=", max_bytes := 1000").to_pylist()
    assert rows[0]["pixels"] is None
    assert re.match(
        r"the area covers about [\d,]+ pixels of the catalog's tiles over 1 year\(s\) x 64 "
        r"bands are .* of int8, above max_bytes \(1,000 bytes\)",
        rows[0]["note"],
    )


def test_read_area_warns_with_the_reason(gdal_collection):
    with pytest.warns(UserWarning, match=r"area: coordinates look swapped \(lat, lon\)\?"):
        array = aefsql.read_area(SWAPPED_BOX, 2023, catalog=gdal_collection.index)
    assert (array.values == -128).all()
    # In Python's words (SQL's are `crs := …`):
    python_words = (
        rf"area: the coordinates look like lon/lat, but crs={EPSG} is projected: drop crs="
    )
    with pytest.warns(UserWarning, match=python_words):
        aefsql.read_area(LONLAT_BOX, 2023, crs=EPSG, catalog=gdal_collection.index)
    missing = r"area: the catalog has no tile of year\(s\) 2031 \(it has 2023, 2024\)"
    with pytest.warns(UserWarning, match=missing):
        aefsql.read_area(LONLAT_BOX, [2023, 2031], catalog=gdal_collection.index)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aefsql.read_area(LONLAT_BOX, 2023, catalog=gdal_collection.index)


def points(lon, lat):
    return pa.table({"id": [1, 2, 3], "lon": lon, "lat": lat})


def test_sample_points_warns_with_the_reason(gdal_collection):
    lon, lat = to_lonlat(EPSG, [X0 + 700, X0 + 1200, X0 + 2000], [Y0 + 600, Y0 + 900, Y0 + 1500])
    run = dict(years=2023, bands=["A00"], catalog=gdal_collection.index)
    with pytest.warns(UserWarning, match=r"no point lies in a tile: coordinates look swapped"):
        table = aefsql.sample_points(points(lat, lon), **run)
    assert table["A00"].null_count == 3
    with pytest.warns(UserWarning, match=r"no point lies in a tile: the coordinates look like"):
        aefsql.sample_points(points(lon, lat), crs=EPSG, **run)
    utm = points([X0 + 700, X0 + 1200, X0 + 2000], [Y0 + 600, Y0 + 900, Y0 + 1500])
    with pytest.warns(UserWarning, match=r"within lon/lat range .* crs= \(e.g. crs=32633\)"):
        aefsql.sample_points(utm, **run)
    with pytest.warns(UserWarning, match=r"no point lies in a tile: outside coverage"):
        aefsql.sample_points(points([-30.0] * 3, [30.0] * 3), **run)
    with warnings.catch_warnings():  # one point covered: no warning
        warnings.simplefilter("error")
        aefsql.sample_points(points([lon[0], -30.0, -30.0], [lat[0], 30.0, 30.0]), **run)
        aefsql.sample_points(utm, crs=EPSG, **run)


def test_aef_plan_says_why_points_are_in_no_tile(con):
    lon, lat = to_lonlat(EPSG, [X0 + 700, X0 + 1200, X0 + 2000], [Y0 + 600, Y0 + 900, Y0 + 1500])
    utm = points([X0 + 700, X0 + 1200, X0 + 2000], [Y0 + 600, Y0 + 900, Y0 + 1500])
    cases = [
        (points(lat, lon), "", SWAPPED),
        (points(lon, lat), f", crs := {EPSG}", LONLAT_AS_PROJECTED),
        (utm, "", "no point is within lon/lat range"),
        (points([-30.0] * 3, [30.0] * 3), "", OUTSIDE),
        (points(lon, lat), "", None),
    ]
    for table, extra, note in cases:
        con.register("pts", table)
        rows = con.sql(
            f"SELECT path IS NULL, points, note FROM aef_plan('pts', years := 2023{extra})"
        ).fetchall()
        con.unregister("pts")
        if note is None:
            assert rows == [(False, 3, None)]
        else:
            assert len(rows) == 1 and rows[0][:2] == (True, 3) and rows[0][2].startswith(note)


@pytest.mark.parametrize(
    "query",
    [
        f"FROM aef_pixels({LONLAT_BOX}, years := [2023, 2031])",
        f"FROM aef_grid({LONLAT_BOX}, cell := 1000, years := [2023, 2031])",
        "FROM aef_sample_points('one_point', years := [2023, 2031])",
        "FROM aef_zonal('one_area', years := [2023, 2031])",
        "FROM aef_chips('one_point', years := [2023, 2031], size := 4)",
        "FROM aef_headers(years := [2023, 2031])",
    ],
)
def test_sql_warns_of_a_year_the_catalog_lacks(con, query):
    """In SQL too a year the catalog lacks is said, as a Python warning naming the function
    (the shell prints it as `Warning: …`); the good years come back as ever."""
    con.register("one_point", pa.table({"lon": [LON], "lat": [LAT]}))
    con.register("one_area", pa.table({"geom": [aefsql_box_wkt(LONLAT_BOX)]}))
    function = query.split("(")[0].removeprefix("FROM ")
    with pytest.warns(UserWarning) as caught:
        rows = con.sql(query).fetchall()
    said = {str(w.message) for w in caught}
    assert said == {f"{function}: the catalog has no tile of year(s) 2031 (it has 2023, 2024)"}
    assert rows
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        con.sql(query.replace("2031", "2024")).fetchall()


def aefsql_box_wkt(box) -> str:
    west, south, east, north = box
    return (
        f"POLYGON(({west} {south}, {east} {south}, {east} {north}, {west} {north}, {west} {south}))"
    )


def test_the_python_api_says_it_once(gdal_collection):
    """The Python API warns itself, at the caller's line: the SQL under it says nothing more."""
    table = pa.table({"geom": [aefsql_box_wkt(LONLAT_BOX)]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aefsql.zonal(table, years=[2023, 2031], catalog=gdal_collection.index)
        aefsql.grid(LONLAT_BOX, cell=1000, years=[2023, 2031], catalog=gdal_collection.index)
    said = [str(w.message) for w in caught if "2031" in str(w.message)]
    assert len(said) == 2, said
    assert all(w.filename == __file__ for w in caught if "2031" in str(w.message))


REFERENCE = "[" + ", ".join(["0.1"] * 64) + "]"


@pytest.mark.parametrize(
    "call",
    [
        "aef_pixels({area}, years := 2023{crs})",
        "aef_similarity({area}, " + REFERENCE + ", years := 2023{crs})",
        "aef_change({area}, years := [2023, 2024]{crs})",
        "aef_grid({area}, cell := 1000, years := 2023{crs})",
    ],
)
def test_sql_warns_why_an_area_comes_back_empty(con, call):
    """An area SQL finds no tile for says why, as aef_area_plan's note does: swapped lon/lat,
    lon/lat numbers with a projected crs, outside coverage; an area inside says nothing."""
    cases = [
        (SWAPPED_BOX, "", SWAPPED),
        (LONLAT_BOX, f", crs := {EPSG}", LONLAT_AS_PROJECTED),
        (
            [-30.0, 30.0, -29.99, 30.01],
            "",
            "outside coverage: the catalog has no tile of year 2023",
        ),
    ]
    for area, crs, reason in cases:
        query = f"SELECT count(*) FROM {call.format(area=area, crs=crs)}"
        with pytest.warns(UserWarning, match=re.escape(f"area: {reason}")):
            assert con.sql(query).fetchall() == [(0,)], query
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        query = f"SELECT count(*) FROM {call.format(area=LONLAT_BOX, crs='')}"
        assert con.sql(query).fetchall()[0][0] > 0


def test_sql_warns_when_no_point_lies_in_a_tile(con):
    """aef_sample_points in SQL says, once its rows are all read, in which years no point
    lay in a tile (aef_plan's note says why); one covered point is enough to say nothing."""
    lon, lat = to_lonlat(EPSG, [X0 + 700, X0 + 1200], [Y0 + 600, Y0 + 900])
    con.register("swapped", points(list(lat) + [0.0], list(lon) + [0.0]))
    with pytest.warns(
        UserWarning,
        match=r"aef_sample_points: no point lies in a tile of year\(s\) 2023, 2024: their "
        r"bands are NULL; aef_plan's note says why",
    ) as caught:
        rows = con.sql(
            "SELECT count(*), count(A00) FROM aef_sample_points('swapped', years := [2023, 2024])"
        ).fetchall()
    assert rows == [(6, 0)] and len(caught) == 1
    con.register("good", points(list(lon) + [0.0], list(lat) + [0.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = con.sql(
            "SELECT count(*), count(A00) FROM aef_sample_points('good', years := 2023)"
        ).fetchall()
    assert rows == [(3, 2)]


def test_sql_warns_when_no_polygon_gets_a_pixel(con):
    """aef_zonal says in which years no polygon got a pixel, and why from the first one
    (swapped lon/lat, lon/lat with a projected crs); one covered polygon is enough to say
    nothing. (Every row came back outside, pixels 0, in silence.)"""
    for area, crs, reason in [
        (SWAPPED_BOX, "", SWAPPED),
        (LONLAT_BOX, f", crs := {EPSG}", LONLAT_AS_PROJECTED),
    ]:
        con.register("fields", pa.table({"geom": [box_wkb(*area), box_wkb(*area)]}))
        with pytest.warns(
            UserWarning,
            match=r"aef_zonal: no polygon got a pixel in year\(s\) 2023, 2024: their means are "
            r"NULL \(the first polygon: " + re.escape(reason),
        ) as caught:
            rows = con.sql(
                f"SELECT pixels FROM aef_zonal('fields', years := [2023, 2024]{crs})"
            ).fetchall()
        assert rows == [(0,)] * 4 and len(caught) == 1
    con.register("fields", pa.table({"geom": [box_wkb(*SWAPPED_BOX), box_wkb(*LONLAT_BOX)]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = con.sql("SELECT pixels FROM aef_zonal('fields', years := 2023)").fetchall()
    assert rows[0] == (0,) and rows[1][0] > 0


def test_no_polygon_warning_is_not_given_for_polygons_that_were_not_read(con):
    """A polygon in coverage refused by max_bytes (on_error := 'null': its aef_error says
    so) got no pixel, but was not found outside: no "no polygon got a pixel" warning."""
    con.register("fields", pa.table({"geom": [box_wkb(*LONLAT_BOX)]}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = con.sql(
            "SELECT pixels, aef_error FROM aef_zonal('fields', years := 2023, "
            "on_error := 'null', max_bytes := 1000)"
        ).fetchall()
    assert rows[0][0] is None and "the area covers about" in rows[0][1]
    assert not [w for w in caught if "no polygon got a pixel" in str(w.message)]
