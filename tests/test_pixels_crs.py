"""aef_pixels' `crs` column (issue 21): across the 12°E seam an area's pixels come from two
UTM zones, and each row says which CRS its x/y are in — the CRS GDAL reads from the tile."""

import numpy as np
import rasterio
from gdal_fixtures import COLLECTION_TILES, collection_path


def test_each_pixel_says_the_crs_of_its_x_y(con, gdal_collection):
    table = con.sql(
        "SELECT path, row, col, x, y, crs FROM aef_pixels([11.998, 45.003, 12.002, 45.007], "
        "years := 2023, bands := ['A00'])"
    ).to_arrow_table()
    assert set(table["crs"].to_pylist()) == {"EPSG:32632", "EPSG:32633"}
    for path in set(table["path"].to_pylist()):
        with rasterio.open(path) as ds:
            expected, transform = f"EPSG:{ds.crs.to_epsg()}", ds.transform
        rows = [r for r in table.to_pylist() if r["path"] == path]
        assert {r["crs"] for r in rows} == {expected}
        cols = np.array([r["col"] for r in rows]) + 0.5
        lines = np.array([r["row"] for r in rows]) + 0.5
        x, y = transform * (cols, lines)
        assert np.allclose([r["x"] for r in rows], x) and np.allclose([r["y"] for r in rows], y)


def test_the_crs_type_matches_chip_crs(con, gdal_collection):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    types = dict(
        con.sql(
            f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM aef_pixels("
            f"[{x0 + 500}, {y0 + 500}, {x0 + 600}, {y0 + 600}], years := 2023, crs := {epsg}))"
        ).fetchall()
    )
    assert types["crs"] == "VARCHAR"
    rows = con.sql(
        f"SELECT DISTINCT crs, path FROM aef_pixels([{x0 + 500}, {y0 + 500}, {x0 + 600}, "
        f"{y0 + 600}], years := 2023, crs := {epsg})"
    ).fetchall()
    assert rows == [(f"EPSG:{epsg}", str(gdal_collection.folder / collection_path(2023, 3)))]
