"""The Python entry points' own surface (issue 21): every option named in the signature
(an unknown keyword is a TypeError, storage options are one `storage_options=` mapping),
`level` in read_area and picture, and errors phrased in Python's syntax."""

import inspect

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from gdal_fixtures import COLLECTION_TILES, collection_path
from rasterio.transform import rowcol

import aefsql
from aefsql import api, duck, pictures, rasters
from aefsql.errors import AefsqlError

# -- unknown keywords -------------------------------------------------------------------


def entry_points():
    """(name, a call with a misspelt keyword) of every Python entry point."""
    box = [-77.05, -12.05, -77.04, -12.04]
    points = pa.table({"lon": [-77.04], "lat": [-12.04]})
    return [
        ("connect", lambda **kw: aefsql.connect(**kw)),
        ("register", lambda **kw: aefsql.register(__import__("duckdb").connect(), **kw)),
        ("open_session", lambda **kw: duck.open_session(**kw)),
        ("sample_points", lambda **kw: aefsql.sample_points(points, years=2024, **kw)),
        ("build_collection", lambda **kw: aefsql.build_collection("x.parquet", **kw)),
        ("read_area", lambda **kw: aefsql.read_area(box, 2024, **kw)),
        ("picture", lambda **kw: aefsql.picture(box, 2024, **kw)),
        ("zonal", lambda **kw: aefsql.zonal(points, years=2024, **kw)),
    ]


@pytest.mark.parametrize("name, call", entry_points(), ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("keyword", ["cache_dri", "endpoint_url"])
def test_unknown_keywords_are_refused(gdal_collection, name, call, keyword):
    """A misspelt option, or a storage option passed loose, was silently taken for a storage
    option (and dropped for a local catalog)."""
    with pytest.raises(TypeError, match=keyword):
        call(catalog=gdal_collection.index, **{keyword: "x"})


@pytest.mark.parametrize(
    "function",
    [
        duck.connect,
        duck.register,
        duck.open_session,
        api.sample_points,
        api.build_collection,
        rasters.read_area,
        pictures.picture,
    ],
)
def test_options_are_named_in_signature_and_docstring(function):
    parameters = inspect.signature(function).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    assert "storage_options" in parameters
    for name, parameter in parameters.items():
        if parameter.kind is parameter.KEYWORD_ONLY:
            assert f"`{name}`" in inspect.getdoc(function) or name in _documented_by_reference(
                function
            ), f"{function.__name__}: {name} is not documented"


def _documented_by_reference(function) -> str:
    """A docstring that sends the reader to another function's for its options."""
    doc = inspect.getdoc(function)
    for other in (duck.register, rasters.read_area, api.sample_points):
        if f"`{other.__name__}`" in doc or f"aefsql.{other.__name__}" in doc:
            return inspect.getdoc(other)
    return ""


# -- level ------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [1, 2])
def test_read_area_at_level_equals_gdal_overview(gdal_collection, level):
    """read_area(level=k) is the k-th overview: every output pixel equals the overview pixel
    under its centre (rasterio's overview_level k - 1); it returned full resolution."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 505, y0 + 415, x0 + 2495, y0 + 2185]
    got = aefsql.read_area(box, 2023, crs=epsg, level=level, catalog=gdal_collection.index)
    path = gdal_collection.folder / collection_path(2023, 3)
    with rasterio.open(path, overview_level=level - 1) as ds:
        expected_data, transform = ds.read(), ds.transform
    size = 10.0 * 2**level
    assert got.x.values[1] - got.x.values[0] == size
    xs, ys = np.meshgrid(got.x.values, got.y.values)
    rows, cols = rowcol(transform, xs.ravel(), ys.ravel())
    expected = expected_data[:, np.asarray(rows), np.asarray(cols)]
    values = got.values[0].reshape(64, -1)
    assert values.shape[1] > 100 // 4 ** (level - 1)
    assert np.array_equal(values, expected)


def test_picture_at_level_is_the_overview_picture(gdal_collection, tmp_path):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 505, y0 + 415, x0 + 2495, y0 + 2185]
    full = aefsql.picture(box, 2023, crs=epsg, catalog=gdal_collection.index)
    coarse = aefsql.picture(box, 2023, crs=epsg, level=1, catalog=gdal_collection.index)
    assert coarse.grid.transform.a == 2 * full.grid.transform.a == 20.0
    assert coarse.rgba.shape[0] * 2 in (full.rgba.shape[0], full.rgba.shape[0] + 1)
