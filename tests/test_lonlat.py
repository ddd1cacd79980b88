"""lon/lat of pixel centres (`geo.pixel_lonlat`): PROJ at three points of each 320 m of a
row, the parabola through them between, against GDAL's transform of every pixel
(rasterio.warp.transform) where UTM bends most — 84°N, 80°S, a zone's edges — and for any
points; each pixel's the same bits in whatever batch it comes."""

import math

import numpy as np
import pytest
import rasterio.warp

from aefsql.geometry import geo
from aefsql.geometry.geo import WINDOW, pixel_lonlat


def ground_metres(lon, lat, lon2, lat2) -> np.ndarray:
    """Distance on the ground between two lon/lat arrays (small distances: flat-earth)."""
    north = (lat2 - lat) * 110_574.0
    east = (lon2 - lon) * 111_320.0 * np.cos(np.radians(lat))
    return np.hypot(north, east)


def gdal_lonlat(epsg, x, y):
    lon, lat = rasterio.warp.transform(f"EPSG:{epsg}", "EPSG:4326", x, y)
    return np.asarray(lon), np.asarray(lat)


def rows(x0, y0, width, height, pixel=10.0, south_up=True):
    """Pixel centres of a window, row after row, as an area's pixels come."""
    cols = x0 + pixel * (np.arange(width) + 0.5)
    step = pixel if south_up else -pixel
    lines = y0 + step * (np.arange(height) + 0.5)
    x, y = np.meshgrid(cols, lines)
    return x.ravel(), y.ravel()


@pytest.mark.parametrize(
    ("epsg", "lat"), [(32633, 84.0), (32633, 60.0), (32633, 0.5), (32733, -80.0), (32701, -45.0)]
)
@pytest.mark.parametrize("easting", [166_000.0, 500_000.0, 833_000.0 - 4000.0])
@pytest.mark.parametrize("south_up", [True, False])
def test_pixel_lonlat_is_within_2_micrometres_of_gdal(epsg, lat, easting, south_up):
    centre = (3.0 - 180.0 + 6.0 * ((epsg % 100) - 1)) if epsg % 100 else 15.0
    _, northing = geo.transform_points(geo.WGS84, epsg, np.array([centre]), np.array([lat]))
    x, y = rows(easting, float(northing[0]), 333, 7, south_up=south_up)  # 333: a ragged tail
    lon, lat_ = pixel_lonlat(x, y, epsg)
    want_lon, want_lat = gdal_lonlat(epsg, x, y)
    assert np.isfinite(lon).all() and np.isfinite(lat_).all()
    assert ground_metres(want_lon, want_lat, lon, lat_).max() < 2e-6


def test_only_three_anchors_a_window_of_a_row_go_to_proj(monkeypatch):
    projected = []
    project = geo.lonlat

    def counted(x, y, crs):
        projected.append(np.size(x))
        return project(x, y, crs)

    monkeypatch.setattr(geo, "lonlat", counted)
    x, y = rows(400_000.0, 6_600_000.0, 2048, 64)  # 400 km: a multiple of WINDOW
    pixel_lonlat(x, y, 32633)
    assert projected == [3 * 64 * int(2048 * 10 / WINDOW)]  # a tenth of the pixels


def test_a_pixels_lonlat_is_the_same_in_every_batch():
    """Windows are fixed in space: the same x/y gives the same bits whether it comes in a
    whole area, a piece of it starting anywhere, alone, or among another CRS's points."""
    x, y = rows(401_234.0, 6_600_000.0, 700, 9)
    lon, lat = pixel_lonlat(x, y, 32633)
    rng = np.random.default_rng(5)
    for start, end in [(0, 1), (13, 2000), (699, 701), *rng.integers(0, x.size, (20, 2))]:
        start, end = sorted((start, end))
        piece = slice(start, end)
        got = pixel_lonlat(x[piece], y[piece], 32633)
        assert np.array_equal(got[0], lon[piece]) and np.array_equal(got[1], lat[piece])
    mixed_x, mixed_y = np.concatenate([x, x]), np.concatenate([y, y])
    crs = np.repeat([32634, 32633], x.size)
    got = pixel_lonlat(mixed_x, mixed_y, crs)
    assert np.array_equal(got[0][x.size :], lon) and np.array_equal(got[1][x.size :], lat)


@pytest.mark.parametrize("kind", ["holes", "nan", "scattered", "20 m", "several crs"])
def test_any_points_are_within_2_micrometres(kind):
    """Holes, NaN (NaN out), scattered points, level 1's 20 m pixels, several CRS."""
    rng = np.random.default_rng(3)
    x, y = rows(300_000.0, 5_000_000.0, 512, 8)
    crs = 32633
    if kind == "holes":
        kept = np.delete(np.arange(x.size), np.arange(100, 4000, 37))
        x, y = x[kept], y[kept]
    elif kind == "nan":
        x = np.where(np.arange(x.size) % 97 == 0, np.nan, x)
    elif kind == "scattered":
        x, y = rng.uniform(170_000, 830_000, 5000), rng.uniform(1e5, 9.3e6, 5000)
    elif kind == "20 m":
        x, y = rows(300_000.0, 5_000_000.0, 512, 4, pixel=20.0)
    else:
        crs = np.where(np.arange(x.size) < 2000, 32633, 32634)
    lon, lat = pixel_lonlat(x, y, crs)
    known = np.isfinite(x)
    assert np.isnan(lon[~known]).all() and np.isnan(lat[~known]).all()
    want_lon, want_lat = geo.lonlat(x[known], y[known], np.broadcast_to(crs, x.shape)[known])
    apart = ground_metres(want_lon, want_lat, lon[known], lat[known])
    assert apart.max() < 2e-6


def test_short_and_empty_inputs():
    for n in (0, 1, 2, 31, 32, 33):
        x, y = rows(500_000.0, 4_000_000.0, n, 1)
        lon, lat = pixel_lonlat(x, y, 32633)
        want_lon, want_lat = geo.lonlat(x, y, 32633)
        assert lon.shape == (n,) and np.allclose(lon, want_lon, rtol=0, atol=1e-10)
        assert np.allclose(lat, want_lat, rtol=0, atol=1e-10)


def test_the_error_bound_is_not_vacuous():
    """Straight lines between anchors as far apart (no parabola) are off by millimetres at
    84°N: the parabola is what keeps within 2 µm."""
    x, y = rows(700_000.0, 9_320_000.0, 1025, 1)
    lon, lat = gdal_lonlat(32633, x, y)
    step = int(WINDOW / 10 / 2)
    idx = np.arange(x.size - 1)
    a = (idx // step) * step
    f = (idx - a) / step
    straight_lat = lat[a] * (1 - f) + lat[a + step] * f
    straight_lon = lon[a] * (1 - f) + lon[a + step] * f
    err = ground_metres(lon[:-1], lat[:-1], straight_lon, straight_lat).max()
    assert err > 1e-3 and not math.isnan(err)
