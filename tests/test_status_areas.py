"""aef_zonal(status := true) and aef_chips(status := true): each polygon-year and chip says
why it holds what it holds — valid, nodata, outside, no_year, error — checked against the
pixels GDAL reads (rasterio's geometry_mask and windows) on the GDAL-written collection."""

import functools

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from gdal_fixtures import COLLECTION_TILES, collection_path, to_lonlat
from helpers import TO_LONLAT, chip_corner, gdal_chip
from rasterio.features import geometry_mask

import aefsql
from aefsql.duck.udfs import SessionUdfs

_, EPSG, X0, Y0 = COLLECTION_TILES[2]  # tile 2 has a nodata rectangle (see test_status.py)


def square(x0, y0, width):
    ring = [(x0, y0), (x0 + width, y0), (x0 + width, y0 + width), (x0, y0 + width), (x0, y0)]
    return ring, "POLYGON((" + ", ".join(f"{x} {y}" for x, y in ring) + "))"


# Mostly valid pixels; inside the nodata rectangle; straddling it; no tile anywhere; NULL.
SQUARES = [
    square(X0 + 500, Y0 + 500, 300),
    square(X0 + 1100, Y0 + 500, 300),
    square(X0 + 900, Y0 + 300, 400),
    square(0, 0, 100),
]


def gdal_zonal_status(folder, ring) -> str:
    """valid / nodata / outside of a polygon in tile 2's 2024 file, by GDAL's pixel mask."""
    with rasterio.open(folder / collection_path(2024, 2)) as ds:
        inside = geometry_mask(
            [{"type": "Polygon", "coordinates": [ring]}],
            (ds.height, ds.width),
            ds.transform,
            invert=True,
        )
        valid = ds.read_masks(1) > 0
    if not inside.any():
        return "outside"
    return "valid" if (inside & valid).any() else "nodata"


@pytest.fixture
def fields(con):
    con.register(
        "status_fields",
        pa.table({"id": [1, 2, 3, 4, 5], "geom": [w for _, w in SQUARES] + [None]}),
    )
    yield con.sql("FROM status_fields").to_arrow_table()
    con.unregister("status_fields")


def test_zonal_statuses_are_what_gdal_reads(con, gdal_collection, fields):
    rows = con.sql(
        "SELECT id, year, status FROM aef_zonal('status_fields', years := [2019, 2024], "
        f"crs := {EPSG}, status := true)"
    ).fetchall()
    expected = [gdal_zonal_status(gdal_collection.folder, ring) for ring, _ in SQUARES]
    assert expected == ["valid", "nodata", "valid", "outside"]  # the fixture tests each word
    assert [s for _, y, s in rows if y == 2024] == [*expected, "outside"]  # NULL geometry
    assert [s for _, y, s in rows if y == 2019] == ["no_year"] * 5
    # valid exactly where the embedding is not NULL
    table = con.sql(
        f"SELECT status, embedding FROM aef_zonal('status_fields', years := 2024, crs := {EPSG}, "
        "status := true)"
    ).fetchall()
    assert all((embedding is not None) == (status == "valid") for status, embedding in table)


def test_zonal_python_equals_sql(con, gdal_collection, fields):
    sql = con.sql(
        f"FROM aef_zonal('status_fields', years := [2019, 2024], crs := {EPSG}, status := true)"
    ).to_arrow_table()
    python = aefsql.zonal(
        fields,
        years=[2019, 2024],
        crs=EPSG,
        status=True,
        catalog=gdal_collection.index,
    )
    assert python.column_names[-1] == "status"
    assert python["status"].to_pylist() == sql["status"].to_pylist()
    assert python.column_names == sql.column_names
    with pytest.raises(aefsql.AefsqlError, match="status must be true or false, not 'yes'"):
        aefsql.zonal(fields, years=2024, status="yes", catalog=gdal_collection.index)


def test_zonal_unusable_geometry_is_error(con):
    con.register("bad", pa.table({"geom": [SQUARES[0][1], "LINESTRING(0 0, 1 1)"]}))
    rows = con.sql(
        f"SELECT status, aef_error IS NOT NULL FROM aef_zonal('bad', years := 2024, "
        f"crs := {EPSG}, on_error := 'null', status := true)"
    ).fetchall()
    con.unregister("bad")
    assert rows == [("valid", False), ("error", True)]


def test_zonal_status_only_when_asked_and_may_not_clash(con, fields):
    names = [
        d[0]
        for d in con.sql(
            f"FROM aef_zonal('status_fields', years := 2024, crs := {EPSG}, on_error := 'null', "
            "status := true)"
        ).description
    ]
    assert names[-2:] == ["aef_error", "status"]
    plain = con.sql(f"FROM aef_zonal('status_fields', years := 2024, crs := {EPSG})")
    assert "status" not in plain.columns
    con.register("own", pa.table({"geom": [SQUARES[0][1]], "status": ["mine"]}))
    try:
        rows = con.sql(f"SELECT status FROM aef_zonal('own', years := 2024, crs := {EPSG})")
        assert rows.fetchall() == [("mine",)]
        with pytest.raises(Exception, match=r"already has column.*status"):
            con.sql(f"FROM aef_zonal('own', years := 2024, crs := {EPSG}, status := true)")
    finally:
        con.unregister("own")
    with pytest.raises(Exception, match="status must be true or false, not 'yes'"):
        con.sql("FROM aef_zonal('status_fields', years := 2024, status := 'yes')").fetchall()


# Chips of 8 x 8 inside tile 2: all valid; all in the nodata rectangle; across its edge;
# then the point (0, 0), in no tile.
CHIP_XY = [
    (X0 + 505, Y0 + 505),
    (X0 + 1405, Y0 + 655),
    (X0 + 1005, Y0 + 405),
]


def gdal_chip_valid(folder, x, y, size=8) -> int:
    """The pixels of the chip where every band holds data, by rasterio's window read."""
    path = folder / collection_path(2024, 2)
    west, north = chip_corner(path, x, y, size)
    chip, held = gdal_chip(path, west, north, size)  # -128 where GDAL has no data
    assert held.all()
    return int((chip != -128).all(axis=0).sum())


@pytest.fixture
def chip_points(con):
    x, y = np.array(CHIP_XY).T
    lon, lat = to_lonlat(EPSG, x, y)
    con.register(
        "status_chips",
        pa.table({"id": [1, 2, 3, 4], "lon": [*lon, 0.0], "lat": [*lat, 0.0]}),
    )
    yield
    con.unregister("status_chips")


def test_chip_statuses_are_what_gdal_reads(con, gdal_collection, chip_points):
    rows = con.sql(
        "SELECT year, status, valid_pixels FROM aef_chips('status_chips', size := 8, "
        "years := [2019, 2024], status := true)"
    ).fetchall()
    valid = [gdal_chip_valid(gdal_collection.folder, x, y) for x, y in CHIP_XY]
    assert [v for y, _, v in rows if y == 2024] == [*valid, None]
    expected = ["valid" if v == 64 else "nodata" for v in valid]
    assert valid[0] == 64 and valid[1] == 0 and 0 < valid[2] < 64  # each case is tested
    # 'nodata' when any pixel is, not only when all are
    assert [s for y, s, _ in rows if y == 2024] == [*expected, "outside"]
    assert [s for y, s, _ in rows if y == 2019] == ["no_year"] * 4


def test_chip_status_comes_before_geom_and_only_when_asked(con, chip_points):
    call = "aef_chips('status_chips', size := 8, years := 2024, on_error := 'null'{})"
    names = con.sql("FROM " + call.format(", status := true, geometry := 'pixel'")).columns
    assert names[-3:] == ["aef_error", "status", "geom"]
    assert "status" not in con.sql("FROM " + call.format("")).columns
    with pytest.raises(Exception, match="status must be true or false, not 1"):
        con.sql("FROM " + call.format(", status := 1")).fetchall()
    con.execute(
        "CREATE OR REPLACE TEMP TABLE own_chips AS SELECT *, 'x' AS status FROM status_chips"
    )
    assert con.sql("SELECT count(*) FROM aef_chips('own_chips', size := 8, years := 2024)")
    with pytest.raises(Exception, match=r"already has column.*status"):
        con.sql("FROM aef_chips('own_chips', size := 8, years := 2024, status := true)")


def test_an_unreadable_file_is_an_error_chip(broken_catalog):
    con, _ = broken_catalog
    lon, lat = TO_LONLAT.transform([500105.0, 500255.0], [4000105.0, 4000205.0])
    con.register("two", pa.table({"lon": list(lon), "lat": list(lat)}))
    rows = con.sql(
        "SELECT year, status, aef_error IS NOT NULL FROM aef_chips('two', size := 4, "
        "years := [2023, 2024], on_error := 'null', status := true)"
    ).fetchall()
    assert rows == [(2023, "valid", False), (2024, "error", True)] * 2


@pytest.mark.parametrize("function", ["zonal_status", "chip_status"])
def test_status_costs_nothing_when_not_asked(gdal_collection, monkeypatch, function):
    """The status UDF is not called by a query that does not ask for the column."""
    calls = []
    original = getattr(SessionUdfs, function)

    @functools.wraps(original)  # (DuckDB counts the UDF's parameters by its signature)
    def counted(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(SessionUdfs, function, counted)
    con = aefsql.connect(catalog=gdal_collection.index)
    try:
        con.register("one", pa.table({"geom": [SQUARES[0][1]], "lon": [0.0], "lat": [0.0]}))
        call = {
            "zonal_status": f"aef_zonal('one', years := 2024, crs := {EPSG}{{}})",
            "chip_status": "aef_chips('one', size := 4, years := 2024{})",
        }[function]
        con.sql("FROM " + call.format("")).fetchall()
        assert calls == []
        con.sql("FROM " + call.format(", status := true")).fetchall()
        assert calls
    finally:
        con.close()


@pytest.mark.parametrize(
    "call",
    [
        "aef_sample_points('status_chips', years := 2024, status := {})",
        "aef_chips('status_chips', size := 4, years := 2024, status := {})",
        "aef_zonal('status_fields', years := 2024, status := {})",
    ],
)
@pytest.mark.parametrize("value, shown", [("'yes'", "'yes'"), ("1", "1"), ("NULL", "None")])
def test_a_status_that_is_not_a_boolean_is_refused(con, fields, chip_points, call, value, shown):
    with pytest.raises(Exception, match=f"status must be true or false, not {shown}"):
        con.sql("FROM " + call.format(value)).fetchall()
