"""read_area against GDAL: rasterio window reads of the GDAL-written collection (flipped to
north-up where the file is south-up), masked by rasterio.features.geometry_mask; across the
12°E seam, rasterio's value of the source pixel holding each output pixel's centre."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from gdal_fixtures import COLLECTION_TILES, PIXEL, collection_path
from helpers import star
from pyproj import Transformer
from rasterio.features import geometry_mask
from rasterio.windows import Window

import aefsql
from aefsql.aef import BAND_NAMES
from aefsql.demo import write_demo_collection
from aefsql.errors import AefsqlError

xr = pytest.importorskip("xarray")
rioxarray = pytest.importorskip("rioxarray")


def polygon_wkb(ring):
    from aefsql.geometry.geo import polygon_wkb

    return polygon_wkb(ring[:, 0], ring[:, 1])


def tile_file(collection, year, k):
    return collection.folder / collection_path(year, k)


def gdal_window(path, array):
    """What rasterio reads from `path` on the grid of `array` (year/band dims dropped),
    north-up; -128 where the grid lies beyond the file."""
    t = array.rio.transform()
    height, width = array.sizes["y"], array.sizes["x"]
    with rasterio.open(path) as ds:
        # The file rows/cols holding the grid's first and last pixel centres.
        rows, cols = rasterio.transform.rowcol(
            ds.transform,
            [t.c + 0.5 * t.a, t.c + (width - 0.5) * t.a],
            [t.f + 0.5 * t.e, t.f + (height - 0.5) * t.e],
        )
        window = Window(min(cols), min(rows), width, height)
        data = ds.read(window=window, boundless=True, fill_value=-128)
        south_up = ds.transform.e > 0
    return data[:, ::-1, :] if south_up else data


def source_pixels(path, array):
    """(values (bands, rows, cols), file rows, file cols, held) of the source pixel of `path`
    that holds each pixel centre of `array`'s grid (the centres transformed by PROJ)."""
    x, y = np.meshgrid(array.x.values, array.y.values)
    with rasterio.open(path) as ds:
        to_file = Transformer.from_crs(array.rio.crs.to_epsg(), ds.crs.to_epsg(), always_xy=True)
        tx, ty = to_file.transform(x, y)
        rows, cols = rasterio.transform.rowcol(ds.transform, tx.ravel(), ty.ravel())
        rows, cols = np.reshape(rows, x.shape), np.reshape(cols, x.shape)
        held = (rows >= 0) & (rows < ds.height) & (cols >= 0) & (cols < ds.width)
        return ds.read(), rows, cols, held


def inside(ring, array):
    geometry = {"type": "Polygon", "coordinates": [ring.tolist()]}
    shape = (array.sizes["y"], array.sizes["x"])
    return geometry_mask([geometry], shape, array.rio.transform(), invert=True)


def test_one_south_up_tile_equals_gdal(gdal_collection):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    ring = star(x0 + 1200, y0 + 1100, 700, seed=1)
    array = aefsql.read_area(polygon_wkb(ring), 2023, crs=epsg, catalog=gdal_collection.index)
    assert array.dims == ("year", "band", "y", "x") and array.dtype == np.int8
    assert array.sizes["year"] == 1 and list(array.band.values) == list(BAND_NAMES)
    assert array.rio.crs.to_epsg() == epsg
    mask = inside(ring, array)
    assert mask.sum() > 1000
    # the window: every pixel centre within the area's bounds, and no other
    west, south = ring.min(axis=0)
    east, north = ring.max(axis=0)
    x, y = array.x.values, array.y.values
    assert west <= x[0] < west + PIXEL and east - PIXEL < x[-1] <= east
    assert north - PIXEL < y[0] <= north and south <= y[-1] < south + PIXEL
    expected = np.where(mask, gdal_window(tile_file(gdal_collection, 2023, 3), array), -128)
    assert np.array_equal(array.values[0], expected)
    # the tiles' own 10 m grid: pixel centres at multiples of 10 m plus 5 from the tile's origin
    assert np.allclose((array.x.values - x0) % PIXEL, PIXEL / 2)
    assert np.allclose((array.y.values - y0) % PIXEL, PIXEL / 2)
    assert np.all(np.diff(array.y.values) < 0)  # north-up


def test_box_and_bands_and_years(gdal_collection):
    """A box in the tile's CRS is its whole window; bands and years select."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 1003, y0 + 497, x0 + 1796, y0 + 1304]  # edges inside pixels
    array = aefsql.read_area(
        box, [2024, 2023], bands=["A05", "A00"], crs=epsg, catalog=gdal_collection.index
    )
    assert list(array.year.values) == [2023, 2024] and list(array.band.values) == ["A00", "A05"]
    assert (array.sizes["y"], array.sizes["x"]) == (80, 80)  # centres in [west, east) etc.
    for i, year in enumerate((2023, 2024)):
        expected = gdal_window(tile_file(gdal_collection, year, 3), array)[[0, 5]]
        assert np.array_equal(array.values[i], expected)
    assert not np.array_equal(array.values[0], array.values[1])


def test_box_edges_on_pixel_centres_follow_gdal(gdal_collection):
    """Centres exactly on the box's edges are in the window, and inside or not as GDAL's
    rasterization says."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 1005, y0 + 505, x0 + 1795, y0 + 1295]
    array = aefsql.read_area(box, 2023, bands=["A00"], crs=epsg, catalog=gdal_collection.index)
    assert (array.sizes["y"], array.sizes["x"]) == (80, 80)
    west, south, east, north = box
    ring = np.array([[west, south], [east, south], [east, north], [west, north], [west, south]])
    expected = gdal_window(tile_file(gdal_collection, 2023, 3), array)[:1]
    assert np.array_equal(array.values[0], np.where(inside(ring, array), expected, -128))


def test_several_tiles_of_one_zone_mosaic_equals_gdal(gdal_collection):
    """Around the corner where tiles 1 and 2 (both 33N) meet: one grid, each pixel read
    from the file that holds it. The 33N pixels that neither holds lie in the overhang of
    tile 0 (32N) across the seam: they take its nearest pixel; the rest are -128."""
    _, epsg, x2, y2 = COLLECTION_TILES[2]
    ring = star(x2, y2, 600, n=12, seed=4)
    array = aefsql.read_area(polygon_wkb(ring), 2023, crs=epsg, catalog=gdal_collection.index)
    mask = inside(ring, array)
    expected = np.full(array.shape[1:], -128, dtype=np.int8)
    for k in (1, 2):
        data = gdal_window(tile_file(gdal_collection, 2023, k), array)
        held = source_pixels(tile_file(gdal_collection, 2023, k), array)[3]
        assert (held & mask).sum() > 1000
        expected = np.where(held & mask, data, expected)
    data, rows, cols, held = source_pixels(tile_file(gdal_collection, 2023, 0), array)
    fill = mask & held & (expected == -128).all(axis=0)
    assert fill.sum() > 100
    expected[:, fill] = data[:, rows[fill], cols[fill]]
    assert np.array_equal(array.values[0], expected)
    assert ((array.values[0] == -128).all(axis=0) & mask).sum() > 100  # the gap


@pytest.mark.parametrize("target_crs", [None, 32633])
def test_across_the_seam_each_pixel_is_its_source_pixel(gdal_collection, target_crs):
    """Tiles 0 (32N) and 1 (33N) overlap across 12°E: one target CRS, and each output pixel
    is the value of the source pixel that holds its centre, in the tile of the centre's own
    zone (the other where its own has none)."""
    box = [11.99, 45.0, 12.01, 45.01]
    array = aefsql.read_area(box, 2023, target_crs=target_crs, catalog=gdal_collection.index)
    target = array.rio.crs.to_epsg()
    assert target == (target_crs or 32632)  # 32N owns more of the box's pixels here
    # on the grid of the target zone's tile: its pixels there are copied, not resampled
    origin = {32632: COLLECTION_TILES[0][2], 32633: COLLECTION_TILES[1][2]}[target]
    assert np.allclose((array.x.values - origin) % PIXEL, PIXEL / 2)
    x, y = np.meshgrid(array.x.values, array.y.values)
    lon, lat = Transformer.from_crs(target, 4326, always_xy=True).transform(x, y)
    # Centres within a hair of the box's edges may fall either way of a densified edge.
    margin = 1e-7
    clear = (
        (np.abs(lon - box[0]) > margin)
        & (np.abs(lon - box[2]) > margin)
        & (np.abs(lat - box[1]) > margin)
        & (np.abs(lat - box[3]) > margin)
    )
    in_box = (lon >= box[0]) & (lon < box[2]) & (lat >= box[1]) & (lat < box[3])
    sources = {k: source_pixels(tile_file(gdal_collection, 2023, k), array) for k in (0, 1)}
    own = (lon >= 12).astype(int)  # tile 0 is 32N (west of 12°E), tile 1 is 33N
    own_holds = np.where(own == 0, sources[0][3], sources[1][3])
    other_holds = np.where(own == 0, sources[1][3], sources[0][3])
    owner = np.where(own_holds, own, np.where(other_holds, 1 - own, -1))
    owner[~in_box] = -1
    expected = np.full(array.shape[1:], -128, dtype=np.int8)
    for k in (0, 1):
        data, rows, cols = sources[k][:3]
        take = owner == k
        expected[:, take] = data[:, rows[take], cols[take]]
    assert set(np.unique(owner[in_box])) == {0, 1}
    assert np.array_equal(array.values[0][:, clear], expected[:, clear])
    # rasterio's own sample() agrees on a few of them
    rng = np.random.default_rng(0)
    for k in (0, 1):
        picks = rng.choice(np.flatnonzero((owner == k) & clear), 20, replace=False)
        with rasterio.open(tile_file(gdal_collection, 2023, k)) as ds:
            to_file = Transformer.from_crs(target, ds.crs.to_epsg(), always_xy=True)
            tx, ty = to_file.transform(x.flat[picks], y.flat[picks])
            sampled = np.array(list(ds.sample(zip(tx, ty, strict=True))))
        assert np.array_equal(array.values[0].reshape(64, -1)[:, picks].T, sampled)


def test_rioxarray_round_trip_through_gdal(gdal_collection, tmp_path):
    """rioxarray writes the DataArray as a GeoTIFF: GDAL reads back the same CRS,
    transform, nodata and values."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    array = aefsql.read_area(
        [x0 + 500, y0 + 500, x0 + 900, y0 + 800], 2023, crs=epsg, catalog=gdal_collection.index
    )
    assert array.rio.nodata == -128
    transform = array.rio.transform()
    assert (transform.a, transform.e) == (PIXEL, -PIXEL)
    assert (transform.c, transform.f) == (x0 + 500, y0 + 800)
    out = tmp_path / "area.tif"
    array.isel(year=0).rio.to_raster(out)
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == epsg and ds.transform == transform
        assert ds.nodata == -128
        assert np.array_equal(ds.read(), array.values[0])


def test_shapely_geometry_is_an_area(gdal_collection):
    shapely = pytest.importorskip("shapely")
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    ring = star(x0 + 1200, y0 + 1100, 300, seed=2)
    by_wkb = aefsql.read_area(
        polygon_wkb(ring), 2023, bands=["A00"], crs=epsg, catalog=gdal_collection.index
    )
    by_shape = aefsql.read_area(
        shapely.Polygon(ring), 2023, bands=["A00"], crs=epsg, catalog=gdal_collection.index
    )
    assert by_wkb.identical(by_shape)


def test_outside_coverage_is_all_nodata(gdal_collection):
    outside = r"area: outside coverage: the catalog has no tile of year 2023 there"
    with pytest.warns(UserWarning, match=outside):
        array = aefsql.read_area([0.0, 0.0, 0.01, 0.01], 2023, catalog=gdal_collection.index)
    assert array.sizes["y"] > 100 and array.sizes["x"] > 100
    assert (array.values == -128).all()
    assert array.rio.crs.to_epsg() == 32631  # the area's own zone: no tile votes


def test_an_empty_area_is_zero_size_and_a_sub_pixel_one_its_centroids_pixel(gdal_collection):
    """An empty polygon gives no pixel; a box between pixel centres the pixel under its
    centroid, as aef_pixels gives it (it gave no pixel either)."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    empty = bytes.fromhex("010300000000000000")  # POLYGON EMPTY
    array = aefsql.read_area(empty, 2023, crs=epsg, catalog=gdal_collection.index)
    assert array.shape[2:] == (0, 0) and array.shape[:2] == (1, 64)
    box = [x0 + 101, y0 + 101, x0 + 104, y0 + 104]
    array = aefsql.read_area(box, 2023, crs=epsg, catalog=gdal_collection.index)
    with aefsql.connect(catalog=gdal_collection.index) as con:
        table = con.sql(
            f"SELECT * FROM aef_pixels({box}, years := 2023, crs := {epsg})"
        ).to_arrow_table()
    assert array.shape == (1, 64, 1, 1) and table.num_rows == 1
    assert (float(array.x[0]), float(array.y[0])) == (table["x"][0].as_py(), table["y"][0].as_py())
    expected = [table[b][0].as_py() for b in BAND_NAMES]
    assert [None if v == -128 else int(v) for v in array.values[0, :, 0, 0]] == expected


def test_budget_refuses_before_reading(http_collection):
    before = len(http_collection.log.requests)
    with pytest.raises(AefsqlError) as refused:
        aefsql.read_area(
            [11.9, 44.9, 12.1, 45.1],
            [2023, 2024],
            catalog=http_collection.index,
            max_bytes=10**8,
        )
    message = str(refused.value)
    assert "pixels" in message and "fewer bands" in message and "smaller area" in message
    assert "max_bytes" in message
    assert len(http_collection.log.requests) == before  # not even the catalog
    # the same area with one band and one year fits
    array = aefsql.read_area(
        [11.99, 45.0, 12.0, 45.005],
        2023,
        bands=["A00"],
        catalog=http_collection.index,
        max_bytes=10**8,
    )
    assert array.sizes["band"] == 1 and len(http_collection.log.requests) > before


def test_default_budget_refuses_a_huge_area(gdal_collection):
    with pytest.raises(AefsqlError, match=r"GiB of int8, above max_bytes \(4.0 GiB\)"):
        aefsql.read_area([10.0, 44.0, 12.0, 46.0], 2023, catalog=gdal_collection.index)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bands": ["B01"]}, "unknown band"),
        ({"target_crs": 4326}, "not a projected CRS in metres"),
        ({"crs": "EPSG:nope"}, "EPSG code"),
    ],
)
def test_parameters_are_checked(gdal_collection, kwargs, message):
    with pytest.raises(AefsqlError, match=message):
        aefsql.read_area([11.99, 45.0, 12.0, 45.005], 2023, catalog=gdal_collection.index, **kwargs)


def test_without_xarray_the_error_names_the_extra(gdal_collection, monkeypatch):
    monkeypatch.setitem(sys.modules, "xarray", None)  # import xarray raises ImportError
    with pytest.raises(AefsqlError, match=r"pip install 'aefsql\[xarray\]'"):
        aefsql.read_area([11.99, 45.0, 12.0, 45.005], 2023, catalog=gdal_collection.index)


def test_readme_example_runs(tmp_path, monkeypatch):
    """The README's "Areas in Python" block, on the demo collection (its seam tiles)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = next(
        b for b in re.findall(r"```python\n(.*?)\n```", readme, re.DOTALL) if "read_area(" in b
    )
    monkeypatch.setenv("AEFSQL_CATALOG", str(write_demo_collection(tmp_path, tile_px=256)))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(code, namespace)
    cube, a00 = namespace["cube"], namespace["a00"]
    assert cube.shape[:2] == (2, 3) and a00.shape == cube.shape[2:]
    assert (a00 != -128).mean() > 0.9
    for name in ("area.png", "similar.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")


def test_dequantize_and_as_vector_equal_gdal_dequantized(gdal_collection):
    """dequantize: float32 of the publisher's formula over GDAL's int8, NaN where -128;
    as_vector: the same pixel-major, (year, y, x, band), NaN over the whole vector where any
    band is -128 — each pixel's vector equal to aef_pixels(as_vector := true)'s embedding."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    ring = star(x0 + 1200, y0 + 1100, 700, seed=1)
    area, options = polygon_wkb(ring), {"crs": epsg, "catalog": gdal_collection.index}
    floats = aefsql.read_area(area, [2023, 2024], dequantize=True, **options)
    vectors = aefsql.read_area(area, [2023, 2024], as_vector=True, **options)
    assert floats.dims == ("year", "band", "y", "x") and floats.dtype == np.float32
    assert vectors.dims == ("year", "y", "x", "band") and vectors.dtype == np.float32
    assert list(vectors.band.values) == list(BAND_NAMES)
    assert np.isnan(floats.attrs["_FillValue"]) and np.isnan(vectors.attrs["nodata"])
    for i, year in enumerate((2023, 2024)):
        raw = gdal_window(tile_file(gdal_collection, year, 3), floats)
        raw = np.where(inside(ring, floats), raw, -128).astype(np.float64)
        expected = np.where(raw == -128, np.nan, np.sign(raw) * (np.abs(raw) / 127.5) ** 2)
        assert np.isnan(expected).any() and not np.isnan(expected).all()
        assert np.allclose(floats.values[i], expected, rtol=1e-6, atol=0, equal_nan=True)
        any_nodata = np.isnan(expected).any(axis=0)
        moved = np.moveaxis(expected, 0, -1)
        moved[any_nodata] = np.nan
        assert np.allclose(vectors.values[i], moved, rtol=1e-6, atol=0, equal_nan=True)
    with aefsql.connect(catalog=gdal_collection.index) as con:
        rows = con.sql(
            f"SELECT x, y, embedding FROM aef_pixels(ST_GeomFromWKB(?), years := 2024, "
            f"crs := {epsg}, as_vector := true) WHERE embedding IS NOT NULL",
            params=[area],
        ).to_arrow_table()
    t = vectors.rio.transform()
    cols = np.rint((rows["x"].to_numpy() - t.c) / t.a - 0.5).astype(int)
    lines = np.rint((rows["y"].to_numpy() - t.f) / t.e - 0.5).astype(int)
    sql = np.array(rows["embedding"].to_pylist(), np.float32)
    assert len(sql) > 1000
    assert np.array_equal(vectors.values[1][lines, cols], sql)
    valid = ~np.isnan(vectors.values[1]).any(axis=-1)
    assert valid.sum() == len(sql)


def test_a_vector_with_any_band_nodata_is_all_nan():
    """(The GDAL fixtures mask all 64 bands together, as AEF does: here one band alone.)"""
    from aefsql.kernels.rasters import dequantized

    rng = np.random.default_rng(5)
    values = rng.integers(-128, 128, (2, 64, 70, 9), dtype=np.int8)  # 70 rows: two pieces
    values[values == -128] = 0
    values[1, 17, 3, 4] = values[0, :, 69, 8] = -128
    vectors = dequantized(values, as_vector=True)
    floats = dequantized(values, as_vector=False)
    expected = np.sign(values) * (np.abs(values.astype(np.float64)) / 127.5) ** 2
    expected[values == -128] = np.nan
    assert np.allclose(floats, expected, rtol=1e-6, atol=0, equal_nan=True)
    assert np.isnan(floats).sum() == 65
    assert np.isnan(vectors[1, 3, 4]).all() and np.isnan(vectors[0, 69, 8]).all()
    assert np.isnan(vectors).sum() == 128
    keep = ~np.isnan(vectors).any(axis=-1)
    assert np.array_equal(vectors[keep], np.moveaxis(floats, 1, -1)[keep])


def test_dequantized_budget_counts_float32(gdal_collection):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 1000, y0 + 500, x0 + 1800, y0 + 1300]  # 80 x 80 pixels
    options = {"crs": epsg, "catalog": gdal_collection.index, "max_bytes": 80 * 80 * 64 * 2}
    assert aefsql.read_area(box, 2023, **options).dtype == np.int8
    for flag in ("dequantize", "as_vector"):
        with pytest.raises(AefsqlError, match=r"of float32, above max_bytes"):
            aefsql.read_area(box, 2023, **{flag: True}, **options)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"as_vector": True, "bands": ["A00"]}, "as_vector=True returns all 64 bands"),
        ({"as_vector": 1}, "as_vector must be true or false"),
        ({"dequantize": "yes"}, "dequantize must be True or False"),
    ],
)
def test_vector_options_are_checked(gdal_collection, kwargs, message):
    with pytest.raises(AefsqlError, match=message):
        aefsql.read_area([12.5, 45.0, 12.6, 45.1], 2023, catalog=gdal_collection.index, **kwargs)
