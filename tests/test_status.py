"""aef_sample_points(status := true): each row says why it holds what it holds — valid,
nodata, outside, no_year, error — checked against the pixels GDAL reads."""

import numpy as np
import pyarrow as pa
import pytest
from gdal_fixtures import COLLECTION_TILES, PIXEL, TILE_HEIGHT, TILE_WIDTH, to_lonlat
from helpers import TO_LONLAT, gdal_values, tile_points

import aefsql


def tile_2_points():
    """(lon, lat, x, y): random pixels of tile 2, and pixels of its nodata rectangle (rows
    40..89, columns 100..179 in the file's row order: south-up, row 0 is the south edge)."""
    lon, lat, x, y = tile_points(2, 40, seed=21)
    _, epsg, x0, y0 = COLLECTION_TILES[2]
    rows, cols = np.array([40, 60, 89]), np.array([100, 150, 179])
    nx, ny = x0 + (cols + 0.5) * PIXEL, y0 + (rows + 0.5) * PIXEL
    nlon, nlat = to_lonlat(epsg, nx, ny)
    assert (rows < TILE_HEIGHT).all() and (cols < TILE_WIDTH).all()
    return (
        np.concatenate([lon, nlon]),
        np.concatenate([lat, nlat]),
        np.concatenate([x, nx]),
        np.concatenate([y, ny]),
    )


@pytest.fixture
def places(con):
    lon, lat, x, y = tile_2_points()
    table = pa.table(
        {
            "id": np.arange(lon.size + 2),
            "lon": pa.array(list(lon) + [0.0, None], pa.float64()),
            "lat": pa.array(list(lat) + [0.0, 45.0], pa.float64()),
        }
    )
    con.register("status_arrow", table)
    con.execute("CREATE OR REPLACE TEMP TABLE status_places AS FROM status_arrow")
    return x, y


def test_valid_and_nodata_are_what_gdal_reads(con, gdal_collection, places):
    x, y = places
    rows = con.sql(
        "SELECT id, year, status, A00 FROM aef_sample_points('status_places', "
        "years := [2019, 2024], status := true) ORDER BY year, id"
    ).fetchall()
    values = gdal_values(gdal_collection.folder, 2024, 2, x, y)
    expected = ["nodata" if (v == -999).any() else "valid" for v in values]
    by_year = {year: [status for _, y_, status, _ in rows if y_ == year] for year in (2019, 2024)}
    assert by_year[2024] == [*expected, "outside", "outside"]  # (0, 0) and a NULL lon
    assert by_year[2019] == ["no_year"] * len(by_year[2019])  # the catalog has no 2019
    assert {"valid", "nodata"} <= set(expected)
    # A00 is NULL exactly where the row is not valid (the pixel's nodata is in all bands).
    assert all((a00 is None) == (status != "valid") for _, y_, status, a00 in rows if y_ == 2024)


def test_a_band_subset_is_valid_where_its_bands_are(con, gdal_collection, places):
    """One band asked for: nodata only where that band is."""
    x, y = places
    rows = con.sql(
        "SELECT status FROM aef_sample_points('status_places', years := 2024, "
        "bands := ['A07'], status := true) ORDER BY id"
    ).fetchall()
    values = gdal_values(gdal_collection.folder, 2024, 2, x, y)[:, 7]
    expected = ["nodata" if v == -999 else "valid" for v in values]
    assert [s for (s,) in rows] == [*expected, "outside", "outside"]


def test_an_unreadable_file_is_error(broken_catalog):
    con, _ = broken_catalog
    lon, lat = TO_LONLAT.transform([500105.0, 500255.0], [4000105.0, 4000205.0])
    con.register("two", pa.table({"lon": list(lon), "lat": list(lat)}))
    rows = con.sql(
        "SELECT year, status, aef_error IS NOT NULL FROM aef_sample_points('two', "
        "years := [2023, 2024], on_error := 'null', status := true, bands := ['A00']) "
        "ORDER BY year"
    ).fetchall()
    assert rows == [
        (2023, "valid", False),
        (2023, "valid", False),
        (2024, "error", True),
        (2024, "error", True),
    ]


def test_status_is_added_only_when_asked_and_may_not_clash(con, places):
    names = [
        d[0] for d in con.sql("FROM aef_sample_points('status_places', years := 2024)").description
    ]
    assert "status" not in names
    con.execute(
        "CREATE OR REPLACE TEMP TABLE with_status AS SELECT *, 'x' AS status FROM status_places"
    )
    assert con.sql(
        "SELECT count(*) FROM aef_sample_points('with_status', years := 2024)"
    ).fetchall()
    with pytest.raises(Exception, match="already has column.*status"):
        con.sql("FROM aef_sample_points('with_status', years := 2024, status := true)").fetchall()


def test_python_gives_the_same_statuses(con, gdal_collection, places):
    table = con.sql("FROM status_places").to_arrow_table()
    sql = con.sql(
        "SELECT status FROM aef_sample_points('status_places', years := [2019, 2024], "
        "bands := ['A00', 'A07'], status := true)"
    ).fetchall()
    python = aefsql.sample_points(
        table, years=[2019, 2024], bands=["A00", "A07"], status=True, catalog=gdal_collection.index
    )
    assert python["status"].to_pylist() == [s for (s,) in sql]
    assert python.column_names[-1] == "status"
    with pytest.raises(aefsql.AefsqlError, match="status must be true or false"):
        aefsql.sample_points(table, years=2024, status="yes", catalog=gdal_collection.index)


def test_an_unreadable_file_is_no_point_outside_coverage(broken_catalog, recwarn):
    """Points whose file cannot be read lie in a tile: on_error := 'null' gives them an
    error, and SQL does not also say that no point lies in a tile."""
    con, _ = broken_catalog
    lon, lat = TO_LONLAT.transform([500105.0], [4000105.0])
    con.register("one", pa.table({"lon": list(lon), "lat": list(lat)}))
    rows = con.sql(
        "SELECT status FROM aef_sample_points('one', years := 2025, on_error := 'null', "
        "status := true, bands := ['A00'])"
    ).fetchall()
    assert rows == [("error",)]
    assert not [w for w in recwarn if "no point lies in a tile" in str(w.message)]
