"""The GDAL-written fixtures are what they claim: checked with tifffile (the bytes' structure),
rasterio (the pixels and georeferencing) and pyarrow (the index)."""

import json
import math
import re
import struct

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import tifffile
from gdal_fixtures import (
    COLLECTION_TILES,
    GAP_LONLAT,
    LAYOUTS,
    TILE_HEIGHT,
    TILE_WIDTH,
    Layout,
    layout_data,
    random_pixel_points,
    raster_bounds,
    to_lonlat,
)
from pyproj import Transformer
from rasterio.transform import rowcol

COMPRESSION_CODES = {"zstd": 50000, "deflate": 8}
INDEX_COLUMNS = [
    ("fid", "int64"),
    ("geom", "binary"),
    ("year", "int32"),
    ("path", "string"),
    ("crs", "string"),
    ("utm_zone", "string"),
    ("utm_west", "double"),
    ("utm_south", "double"),
    ("utm_east", "double"),
    ("utm_north", "double"),
    ("wgs84_west", "double"),
    ("wgs84_south", "double"),
    ("wgs84_east", "double"),
    ("wgs84_north", "double"),
]


def by_name(layout: Layout) -> str:
    return layout.name


def test_layouts_cover_the_variants():
    names = [layout.name for layout in LAYOUTS]
    assert len(set(names)) == len(names)
    assert "int8_64band_planar_zstd_pred1_block256_southup_tiff_32633.tif" in names  # AEF, N
    assert "int8_64band_planar_zstd_pred1_block256_southup_tiff_32733.tif" in names  # AEF, S
    assert {(lay.compression, lay.predictor) for lay in LAYOUTS} == {
        ("zstd", 1),
        ("zstd", 2),
        ("deflate", 1),
        ("deflate", 2),
    }
    assert {lay.bigtiff for lay in LAYOUTS} == {True, False}
    assert {lay.south_up for lay in LAYOUTS} == {True, False}
    assert {lay.interleave for lay in LAYOUTS} == {"band", "pixel"}
    assert {lay.block for lay in LAYOUTS} == {128, 256}
    assert all(lay.width % lay.block and lay.height % lay.block for lay in LAYOUTS)


@pytest.mark.parametrize("layout", LAYOUTS, ids=by_name)
def test_tiff_structure_is_the_layout(gdal_layout_files, layout):
    with tifffile.TiffFile(gdal_layout_files[layout]) as tif:
        assert tif.is_bigtiff == layout.bigtiff
        page = tif.pages[0]
        assert page.planarconfig == (2 if layout.interleave == "band" else 1)
        assert page.compression == COMPRESSION_CODES[layout.compression]
        assert page.predictor == layout.predictor
        assert (page.tilewidth, page.tilelength) == (layout.block, layout.block)
        assert (page.samplesperpixel, page.bitspersample, page.sampleformat) == (64, 8, 2)
        assert (page.imagelength, page.imagewidth) == (layout.height, layout.width)
        assert page.tags["GDAL_NODATA"].value == "-128"
        assert page.geotiff_tags["ProjectedCSTypeGeoKey"] == layout.epsg
        # Overviews are further pages, each half the size (rounded up) of the last.
        assert len(tif.pages) == 3
        for factor, overview in zip((2, 4), tif.pages[1:], strict=True):
            assert overview.is_reduced
            expected = (math.ceil(layout.height / factor), math.ceil(layout.width / factor))
            assert (overview.imagelength, overview.imagewidth) == expected
            assert overview.planarconfig == page.planarconfig
            assert overview.compression == page.compression


@pytest.mark.parametrize("layout", LAYOUTS, ids=by_name)
def test_georeferencing_tags(gdal_layout_files, layout):
    west, south, _, north = layout.bounds
    with tifffile.TiffFile(gdal_layout_files[layout]) as tif:
        tags = tif.pages[0].tags
        if layout.south_up:
            assert tags[34264].value == (
                *(10.0, 0.0, 0.0, west),
                *(0.0, 10.0, 0.0, south),  # positive Y scale from the southern edge
                *(0.0, 0.0, 0.0, 0.0),
                *(0.0, 0.0, 0.0, 1.0),
            )
            assert 33550 not in tags and 33922 not in tags
        else:
            assert tags[33550].value == (10.0, 10.0, 0.0)
            assert tags[33922].value == (0.0, 0.0, 0.0, west, north, 0.0)
            assert 34264 not in tags


@pytest.mark.parametrize("layout", LAYOUTS, ids=by_name)
def test_pixels_and_georeferencing_read_back(gdal_layout_files, layout):
    seed = LAYOUTS.index(layout)  # as gdal_layout_files wrote it
    with rasterio.open(gdal_layout_files[layout]) as ds:
        data = ds.read()
        assert ds.nodata == -128 and ds.dtypes == ("int8",) * 64
        assert ds.crs.to_epsg() == layout.epsg
        assert raster_bounds(ds) == layout.bounds
        # rasterio's own bounds put a south-up file's northern edge at "bottom".
        assert ds.bounds.bottom == layout.bounds[3 if layout.south_up else 1]
        assert ds.transform == layout.transform
        assert ds.transform.e == (10.0 if layout.south_up else -10.0)
        assert ds.block_shapes[0] == (layout.block, layout.block)
        assert ds.overviews(1) == [2, 4]
        assert ds.descriptions == tuple(f"A{i:02d}" for i in range(64))
    assert np.array_equal(data, layout_data(layout, seed))
    masked = (data == -128).all(axis=0)
    assert masked[40:90, 100:180].all()
    assert 50 * 80 < masked.sum() <= 50 * 80 + 20  # the rectangle and isolated pixels
    some_bands = (data == -128).any(axis=0) & ~masked
    assert 0 < some_bands.sum() <= 20
    assert data.min() == -128 and data.max() == 127


@pytest.mark.parametrize("layout", [LAYOUTS[0], LAYOUTS[6], LAYOUTS[-1]], ids=by_name)
def test_random_pixel_points(gdal_layout_files, layout):
    path = gdal_layout_files[layout]
    x, y, rows, cols, inside = random_pixel_points(path, 400, seed=3)
    assert x.size == 400 + 2 * 100 + 4  # random, edge rows, edge columns, outside
    assert sorted(zip(rows[~inside], cols[~inside], strict=True)) == [
        (-1, 3),
        (3, -1),
        (3, layout.width),
        (layout.height, 3),
    ]
    with rasterio.open(path) as ds:
        assert np.array_equal(rowcol(ds.transform, x, y), (rows, cols))
        again = random_pixel_points(ds, 400, seed=3)  # a dataset works as well as a path
    assert all(np.array_equal(a, b) for a, b in zip(again, (x, y, rows, cols, inside), strict=True))
    # Every point is 5% or more of a pixel away from the pixel's boundaries.
    west, south, _, north = layout.bounds
    fx = (x - west) / 10 - cols
    fy = (y - south) / 10 - rows if layout.south_up else (north - y) / 10 - rows
    assert ((fx >= 0.05) & (fx <= 0.95) & (fy >= 0.05) & (fy <= 0.95)).all()
    # The edges are there: first/last row and column, either side of each block boundary.
    for size, taken in ((layout.height, rows[inside]), (layout.width, cols[inside])):
        for index in (0, size - 1, layout.block - 1, layout.block):
            assert index in taken
    plain = random_pixel_points(path, 400, seed=3, include_edges=False)
    assert plain[0].size == 404


def test_to_lonlat():
    lon, lat = to_lonlat(32633, [500000.0, 500000.0], [0.0, 5000000.0])
    assert np.allclose(lon, [15.0, 15.0], atol=1e-12) and abs(lat[0]) < 1e-12
    assert 45.1 < lat[1] < 45.2
    lon, lat = to_lonlat(32733, 500000.0, 10000000.0)  # the false northing of the south
    assert abs(lon - 15.0) < 1e-12 and abs(lat) < 1e-9


# -- the collection ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def index(gdal_collection):
    return pq.read_table(gdal_collection.index)


def ring_of(wkb: bytes) -> np.ndarray:
    order, kind, rings, points = struct.unpack_from("<BIII", wkb)
    assert (order, kind, rings) == (1, 3, 1) and len(wkb) == 13 + 16 * points
    return np.frombuffer(wkb, "<f8", offset=13).reshape(points, 2)


def test_index_schema(index):
    assert [(f.name, str(f.type)) for f in index.schema] == INDEX_COLUMNS
    geo = json.loads(index.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geom"
    assert geo["columns"]["geom"]["encoding"] == "WKB"
    assert "crs" not in geo["columns"]["geom"]  # absent: OGC:CRS84, lon/lat
    assert index["fid"].to_pylist() == list(range(1, 9))
    assert index["year"].to_pylist() == [2023] * 4 + [2024] * 4


def test_index_rows_describe_their_rasters(index, gdal_collection):
    folder = gdal_collection.folder
    for row in index.to_pylist():
        assert re.fullmatch(r"20\d\d/\d\d[NS]/tile\d-\d{10}-\d{10}\.tiff", row["path"])
        assert row["path"].startswith(f"{row['year']}/{row['utm_zone']}/")
        epsg = int(row["crs"].removeprefix("EPSG:"))
        assert row["utm_zone"] == f"{epsg % 100}{'N' if epsg < 32700 else 'S'}"
        with rasterio.open(folder / row["path"]) as ds:
            assert ds.crs.to_epsg() == epsg
            utm = (row["utm_west"], row["utm_south"], row["utm_east"], row["utm_north"])
            assert utm == raster_bounds(ds)
            assert (ds.width, ds.height, ds.count) == (TILE_WIDTH, TILE_HEIGHT, 64)
        ring = ring_of(row["geom"])
        assert len(ring) == 41 and (ring[0] == ring[-1]).all()
        wgs84 = (row["wgs84_west"], row["wgs84_south"], row["wgs84_east"], row["wgs84_north"])
        assert wgs84 == (*ring.min(axis=0), *ring.max(axis=0))
        corners = to_lonlat(
            epsg, [utm[0], utm[2], utm[2], utm[0]], [utm[1], utm[1], utm[3], utm[3]]
        )
        assert np.array_equal(ring[[0, 10, 20, 30]], np.column_stack(corners))


def test_collection_files_are_the_published_layout(index, gdal_collection):
    for path in index["path"].to_pylist():
        with tifffile.TiffFile(gdal_collection.folder / path) as tif:
            page = tif.pages[0]
            assert (page.planarconfig, page.compression, page.predictor) == (2, 50000, 1)
            assert page.tags[34264].value[5] == 10.0  # south-up
            assert not tif.is_bigtiff and len(tif.pages) == 3


def containing_tiles(lon: float, lat: float) -> list[int]:
    """The tiles whose raster contains the point, by their UTM bounds."""
    found = []
    for k, (_, epsg, west, south) in enumerate(COLLECTION_TILES):
        x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
        if west <= x < west + TILE_WIDTH * 10 and south <= y < south + TILE_HEIGHT * 10:
            found.append(k)
    return found


def test_collection_zones_seam_and_gap(index):
    zones = set(index["utm_zone"].to_pylist())
    assert zones == {"32N", "33N", "18S"}
    # Tiles 0 (32N) and 1 (33N) overlap across the 12°E seam: a point there is in both.
    assert containing_tiles(12.0, 45.0) == [0, 1]
    # GAP_LONLAT lies in tile 2's lon/lat box but in no raster.
    rows = index.to_pylist()[:4]
    boxes = [
        k
        for k, r in enumerate(rows)
        if r["wgs84_west"] <= GAP_LONLAT[0] <= r["wgs84_east"]
        and r["wgs84_south"] <= GAP_LONLAT[1] <= r["wgs84_north"]
    ]
    assert boxes == [2] and containing_tiles(*GAP_LONLAT) == []
    assert containing_tiles(0.0, 0.0) == []
