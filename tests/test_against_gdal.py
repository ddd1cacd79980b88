"""aefsql against GDAL's own sample(), pixel for pixel, on files GDAL wrote."""

import numpy as np
import pyarrow as pa
import pytest
import rasterio
import tifffile
from gdal_fixtures import LAYOUTS, lonlat, random_pixel_points
from rasterio.transform import rowcol

import aefsql
from aefsql.options import BAND_NAMES

POINTS_PER_FILE = 1000


@pytest.fixture(scope="module")
def con():
    con = aefsql.connect()
    yield con
    con.close()


def ours(con, path, lon, lat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values int16 (n, 64) with -999 for NULL bands, struct is NULL (n,)) via SQL."""
    con.register("pts", pa.table({"i": np.arange(lon.size), "lon": lon, "lat": lat}))
    quoted = str(path).replace("'", "''")
    table = con.sql(
        f"SELECT i, aef_sample('{quoted}', lon, lat) IS NULL AS missing, "
        f"unnest(aef_sample('{quoted}', lon, lat)) FROM pts ORDER BY i"
    ).to_arrow_table()
    con.unregister("pts")
    values = np.stack(
        [table[b].cast(pa.int16()).fill_null(-999).to_numpy() for b in BAND_NAMES], axis=1
    )
    return values, table["missing"].to_numpy(zero_copy_only=False)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
def test_layout_matches_gdal_sample(con, layout_files, layout):
    path = layout_files[layout]
    x, y, rows, cols, inside = random_pixel_points(path, POINTS_PER_FILE, seed=layout.width)
    assert inside.sum() >= POINTS_PER_FILE and (~inside).sum() == 4
    lon, lat = lonlat(layout.epsg, x, y)
    values, missing = ours(con, path, lon, lat)

    with rasterio.open(path) as ds:
        expected = np.array(list(ds.sample(zip(x[inside], y[inside], strict=True))))
        gdal_rows, gdal_cols = rowcol(ds.transform, x[inside], y[inside])
    assert np.array_equal(gdal_rows, rows[inside]) and np.array_equal(gdal_cols, cols[inside])
    expected = np.where(expected == -128, -999, expected.astype(np.int16))
    assert np.array_equal(missing, ~inside)
    assert np.array_equal(values[inside], expected)
    assert (values[inside] == -999).any(), "the points should hit some nodata pixels"
    assert (values[~inside] == -999).all()


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
def test_fixture_has_the_layout_it_claims(layout_files, layout):
    with tifffile.TiffFile(layout_files[layout]) as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff == layout.bigtiff
        assert page.planarconfig == (2 if layout.interleave == "band" else 1)
        assert page.compression == {"zstd": 50000, "deflate": 8}[layout.compression]
        assert page.predictor == layout.predictor
        assert (page.tilewidth, page.tilelength) == (layout.block, layout.block)
        assert page.tags["GDAL_NODATA"].value == "-128"
        assert len(tif.pages) == 3  # full resolution + two overviews
        if layout.south_up:
            matrix = page.tags["ModelTransformationTag"].value
            assert matrix[5] > 0  # positive Y scale: row 0 is the southern edge
            assert "ModelPixelScaleTag" not in page.tags
            assert "ModelTiepointTag" not in page.tags
