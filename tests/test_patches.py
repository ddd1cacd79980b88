"""aef_sample_patch and aef_patch: the pixels around a point, compared with GDAL's sample() of
each pixel's centre in map coordinates (north is +y whatever the file's row order), on files
GDAL wrote; a huge patch is refused before anything is read or allocated."""

import tracemalloc

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from gdal_fixtures import LAYOUTS, PIXEL, lonlat, random_pixel_points, raster_bounds
from test_collection import tile_points

import aefsql
from aefsql.kernels import points
from aefsql.kernels.budgets import MAX_WINDOW_SIZE
from aefsql.options import BAND_NAMES

OUTSIDE, NODATA = -1000, -999


@pytest.fixture(scope="module")
def con():
    con = aefsql.connect()
    yield con
    con.close()


def gdal_patches(path, x, y, size: int) -> np.ndarray:
    """int16 (points, size * size, 64): GDAL's values at the centres of the pixels around
    each point, north to south and west to east; OUTSIDE beyond the raster."""
    with rasterio.open(path) as ds:
        west, south, east, north = raster_bounds(ds)
        centre_x = west + (np.floor((x - west) / PIXEL) + 0.5) * PIXEL
        centre_y = south + (np.floor((y - south) / PIXEL) + 0.5) * PIXEL
        down, across = np.divmod(np.arange(size * size), size)
        px = centre_x[:, None] + ((across - size // 2) * PIXEL)[None, :]
        py = centre_y[:, None] + ((size // 2 - down) * PIXEL)[None, :]
        inside = (px > west) & (px < east) & (py > south) & (py < north)
        out = np.full((*px.shape, ds.count), OUTSIDE, dtype=np.int16)
        sampled = np.array(list(ds.sample(zip(px[inside], py[inside], strict=True))), np.int16)
        out[inside] = np.where(sampled == -128, NODATA, sampled)
    return out


def our_patches(con, path, lon, lat, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(int16 (points, size * size, 64) like gdal_patches, patch is NULL (points,))."""
    con.register("pts", pa.table({"i": np.arange(lon.size), "lon": lon, "lat": lat}))
    quoted = str(path).replace("'", "''")
    table = con.sql(
        f"SELECT i, aef_sample_patch('{quoted}', lon, lat, {size}) AS patch FROM pts ORDER BY i"
    ).to_arrow_table()
    con.unregister("pts")
    patches = table["patch"].to_pylist()
    out = np.full((lon.size, size * size, 64), OUTSIDE, dtype=np.int16)
    for i, patch in enumerate(patches):
        for k, pixel in enumerate(patch or []):
            if pixel is not None:
                out[i, k] = [NODATA if pixel[b] is None else pixel[b] for b in BAND_NAMES]
    return out, np.array([p is None for p in patches])


@pytest.mark.parametrize("size", [1, 2, 5])
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
def test_patches_match_gdal(con, gdal_layout_files, layout, size):
    path = gdal_layout_files[layout]
    x, y, _, _, inside = random_pixel_points(path, 60, seed=size)
    lon, lat = lonlat(layout.epsg, x, y)
    got, missing = our_patches(con, path, lon, lat, size)
    expected = gdal_patches(path, x, y, size)
    assert np.array_equal(missing, ~inside)  # a point outside the raster: a NULL patch
    assert np.array_equal(got[inside], expected[inside])
    if size > 1:  # edge points: patches cross the raster's edge, and meet nodata
        assert (expected[inside] == OUTSIDE).any() and (expected[inside] == NODATA).any()


@pytest.mark.parametrize("layout", [LAYOUTS[0], LAYOUTS[6]], ids=["south_up", "north_up"])
def test_a_patch_starts_at_its_northwest_pixel(con, gdal_layout_files, layout):
    """Whichever way the file's rows run, item 0 of a 3 x 3 patch is the pixel one north and
    one west of the point's, item 1 one north, item 5 one east, item 7 one south."""
    path = gdal_layout_files[layout]
    x, y, _, _, inside = random_pixel_points(path, 30, seed=9, include_edges=False)
    x, y = x[inside], y[inside]
    got, _ = our_patches(con, path, *lonlat(layout.epsg, x, y), 3)
    for item, (dx, dy) in {0: (-1, 1), 1: (0, 1), 5: (1, 0), 7: (0, -1)}.items():
        neighbour = gdal_patches(path, x + dx * PIXEL, y + dy * PIXEL, 1)[:, 0]
        assert np.array_equal(got[:, item], neighbour), item


def test_aef_patch_locates_the_tile_and_keeps_every_row(gdal_collection):
    con = aefsql.connect(catalog=gdal_collection.index)
    try:
        lon, lat, x, y = tile_points(3, 20, seed=2)
        points = pa.table(
            {
                "id": np.arange(24),
                "lon": np.r_[lon, 0.0, np.nan, lon[:2]],
                "lat": np.r_[lat, 0.0, 0.0, lat[:2]],
                "size": pa.array([3] * 22 + [None, 4], pa.int32()),
            }
        )
        con.register("points", points)
        rows = con.sql(
            "SELECT id, aef_patch(lon, lat, 2023, size) AS patch FROM points ORDER BY id"
        ).to_arrow_table()
        patches = rows["patch"].to_pylist()
        assert rows["id"].to_pylist() == list(range(24))
        assert patches[20] is None and patches[21] is None  # nowhere; NaN
        assert patches[22] is None and len(patches[23]) == 16  # a NULL size; another size
        tile = gdal_collection.folder / "2023/18S/tile3-0000000000-0000000000.tiff"
        got, _ = our_patches(con, tile, lon, lat, 3)
        assert np.array_equal(got, gdal_patches(tile, x, y, 3))
        first = [[NODATA if p is None else p[b] for b in BAND_NAMES] for p in patches[0]]
        assert np.array_equal(np.array(first), got[0])
        default = con.sql("SELECT aef_patch(lon, lat, 2023) AS p FROM points LIMIT 1").fetchall()
        assert len(default[0][0]) == 9  # size defaults to 3
    finally:
        con.close()


def test_a_huge_patch_is_refused_before_anything_is_allocated(con, gdal_layout_files):
    path = str(gdal_layout_files[LAYOUTS[0]])
    tracemalloc.start()
    try:
        with pytest.raises(Exception, match=r"31623 x 31623 pixels is refused: size must be 1"):
            con.sql(f"SELECT aef_sample_patch('{path}', 15.0, 46.0, 31623)").fetchall()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20  # a 10^9-pixel patch would be 64 GB
    with pytest.raises(Exception, match=r"size must be 1 to 2048"):
        con.sql(f"SELECT aef_sample_patch('{path}', 15.0, 46.0, 0)").fetchall()
    with pytest.raises(Exception, match="refused"):
        points.sample_patches(None, [path], [15.0], [46.0], MAX_WINDOW_SIZE + 1)


@pytest.mark.parametrize("size, amount", [(2049, "256.3 MiB"), (31623, "59.6 GiB")])
def test_patch_refusal_says_a_real_amount(size, amount):
    from aefsql.kernels.budgets import check_windows

    with pytest.raises(aefsql.AefsqlError, match=rf"would be {amount} a row"):
        check_windows(1, size, 64)


def test_patches_share_the_chips_budget(con, gdal_layout_files):
    """aef_patch's old 64-px cap is the window budget now: a 512-px patch is read, and a
    call whose patches exceed 4 GiB of int8 is refused before anything is read."""
    path = str(gdal_layout_files[LAYOUTS[0]])
    with rasterio.open(path) as ds:
        west, south, east, north = raster_bounds(ds)
        lon, lat = lonlat(ds.crs.to_epsg(), [(west + east) / 2], [(south + north) / 2])
    lon, lat = float(lon[0]), float(lat[0])
    ((patch,),) = con.sql(f"SELECT aef_sample_patch('{path}', {lon}, {lat}, 100)").fetchall()
    assert len(patch) == 100 * 100 and patch[50 * 100 + 50] is not None
    with pytest.raises(Exception, match=r"windows of 2048 x 2048 pixels x 64 bands are 4.2 GiB"):
        con.sql(
            f"SELECT aef_sample_patch('{path}', {lon} + i * 1e-9, {lat}, 2048) FROM range(17) t(i)"
        ).fetchall()
