"""aef_pixels' `crs` column (issue 21): across the 12°E seam an area's pixels come from two
UTM zones, and each row says which CRS its x/y are in — the CRS GDAL reads from the tile."""

import numpy as np
import rasterio
import rasterio.warp
from gdal_fixtures import COLLECTION_TILES, collection_path

from aefsql.geometry.geo import lonlat
from aefsql.kernels import readahead


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


def test_lon_lat_are_each_pixels_centre_projected_and_only_when_asked_for(
    con, gdal_collection, monkeypatch
):
    """lon/lat across the seam are PROJ's of each row's x/y in its own CRS; a query that reads
    neither never projects (PROJ costs more than the read)."""
    projected = []

    def counted(x, y, crs):
        projected.append(len(x))
        return lonlat(x, y, crs)

    monkeypatch.setattr(readahead, "lonlat", counted)
    area = "[11.998, 45.003, 12.002, 45.007], years := 2023, bands := ['A00']"
    table = con.sql(f"SELECT x, y, crs, lon, lat FROM aef_pixels({area})").to_arrow_table()
    assert set(table["crs"].to_pylist()) == {"EPSG:32632", "EPSG:32633"}
    for crs in ("EPSG:32632", "EPSG:32633"):
        rows = [r for r in table.to_pylist() if r["crs"] == crs]
        lon, lat = rasterio.warp.transform(
            crs, "EPSG:4326", [r["x"] for r in rows], [r["y"] for r in rows]
        )
        assert np.allclose([r["lon"] for r in rows], lon, rtol=0, atol=1e-9)
        assert np.allclose([r["lat"] for r in rows], lat, rtol=0, atol=1e-9)
    assert sum(projected) == table.num_rows
    projected.clear()
    columns = con.sql(f"SELECT row, col, A00 FROM aef_pixels({area}) WHERE A00 > -128").fetchall()
    assert len(columns) > 0 and projected == []
