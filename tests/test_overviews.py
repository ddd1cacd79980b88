"""Overviews (level := k): the parser's level-k header, the sampler and aef_pixels/aef_zonal
against GDAL's overview k - 1 (rasterio's overview_level), on files GDAL wrote."""

import numpy as np
import pyarrow as pa
import pytest
import rasterio
import tifffile
from gdal_fixtures import (
    COLLECTION_TILES,
    LAYOUTS,
    OVERVIEW_FACTORS,
    Layout,
    collection_path,
    index_row,
    random_pixel_points,
    write_index,
    write_layout,
)
from helpers import assert_same, by_pixel, star, write
from rasterio.features import geometry_mask
from rasterio.transform import rowcol

import aefsql
from aefsql.errors import AefsqlError, TiffFormatError
from aefsql.format.tiff import MissingBytes, SparseBytes, parse_header
from aefsql.geometry.geo import polygon_wkb
from aefsql.kernels import points
from aefsql.kernels.engine import BlockEngine
from aefsql.storage.store import ByteStore

LEVELS = range(1, len(OVERVIEW_FACTORS) + 1)
# A north-up tile whose size is odd both ways: GDAL's overviews are then not exactly 2x and
# 4x coarser (301 / 151 across, 259 / 130 down), and their transforms say so.
NORTH_UP = Layout(south_up=False, width=301, height=259, block=128, west=300000.0)


def whole(path) -> SparseBytes:
    raw = path.read_bytes()
    data = SparseBytes(file_size=len(raw))
    data.add(0, raw)
    return data


def on_demand(path, level: int):
    """Parse as the I/O layer does: start with nothing, fetch exactly what the parser asks."""
    raw = path.read_bytes()
    data = SparseBytes(file_size=len(raw))
    for _ in range(100):
        try:
            return parse_header(data, level)
        except MissingBytes as missing:
            data.add(missing.offset, raw[missing.offset : missing.offset + missing.length])
    raise AssertionError("the parser kept asking for bytes")


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
def test_level_header_matches_rasterio(gdal_layout_files, layout):
    path = gdal_layout_files[layout]
    data = whole(path)
    full = parse_header(data)
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
    for level in LEVELS:
        header = parse_header(data, level)
        with rasterio.open(path, overview_level=level - 1) as ds:
            assert (header.width, header.height) == (ds.width, ds.height)
            t = header.transform
            assert (t.a, t.b, t.c, t.d, t.e, t.f) == tuple(ds.transform)[:6]
            assert ds.nodata == header.nodata == full.nodata == -128
        assert header.level == level
        assert t.south_up == layout.south_up
        assert header.epsg == full.epsg == layout.epsg
        page = pages[level]
        assert (header.block_width, header.block_height) == (page.tilewidth, page.tilelength)
        assert header.block_offsets.tolist() == list(page.dataoffsets)
        assert header.block_byte_counts.tolist() == list(page.databytecounts)
        assert (header.compression, header.predictor) == (full.compression, full.predictor)
        assert header.planar_separate == full.planar_separate
    with pytest.raises(TiffFormatError, match="no level 3 in the file: it has levels 0 to 2"):
        parse_header(data, 3)


@pytest.mark.parametrize("layout", [LAYOUTS[5], LAYOUTS[6]], ids=lambda layout: layout.name)
def test_level_header_from_bytes_fetched_on_demand(gdal_layout_files, layout):
    """Pure over bytes: MissingBytes for every range a level needs, the same header at the end
    (block tables fetched lazily count as the same table)."""
    path = gdal_layout_files[layout]
    for level in (0, *LEVELS):
        expected = parse_header(whole(path), level)
        got = on_demand(path, level)
        assert (got.width, got.height, got.transform) == (
            expected.width,
            expected.height,
            expected.transform,
        )
        assert got.block_offsets.file_offset == expected.block_offsets.file_offset
        assert got.block_offsets.count == expected.block_offsets.count


def test_a_file_without_overviews_says_so(tmp_path):
    path = write(tmp_path / "flat.tif", np.zeros((3, 20, 20), np.int8), tile=(16, 16))
    assert parse_header(whole(path)).width == 20
    with pytest.raises(TiffFormatError, match=r"no level 1 in the file: it has level 0 only"):
        parse_header(whole(path), 1)
    with pytest.raises(AefsqlError, match="levels count from 0"):
        parse_header(whole(path), -1)
    with pytest.raises(AefsqlError, match=r"level := -1: a level is 0 \(full resolution\)"):
        BlockEngine(ByteStore()).headers.headers_for([str(path)], level=-1)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
def test_sample_at_level_equals_gdal_overview(gdal_layout_files, layout):
    """Points in the overview's pixels, in the file's CRS; the same sampler reads level 0
    first, so a block of one level must never stand in for the same-numbered block of
    another."""
    path = str(gdal_layout_files[layout])
    engine = BlockEngine(ByteStore())
    for level in LEVELS:
        with rasterio.open(path, overview_level=level - 1) as ds:
            x, y, rows, cols, inside = random_pixel_points(ds, 200, seed=level)
            assert np.array_equal(rowcol(ds.transform, x, y), (rows, cols))  # GDAL's pixels
            expected = ds.read()[:, rows[inside], cols[inside]].T
        urls = [path] * x.size
        points.sample(engine, urls, x, y, crs=layout.epsg)  # level 0's blocks into the cache
        got = points.sample(engine, urls, x, y, crs=layout.epsg, level=level)
        assert np.array_equal(got.covered, inside)
        assert np.array_equal(got.values[inside], expected)


# -- aef_pixels / aef_zonal -------------------------------------------------------------


@pytest.fixture(scope="module")
def north_up_collection(tmp_path_factory):
    """A one-tile collection (2023) of the north-up, odd-sized layout, with its index."""
    folder = tmp_path_factory.mktemp("north_up_collection")
    path = "2023/33N/northup-0000000000-0000000000.tiff"
    write_layout(folder, NORTH_UP, seed=7, name=path)
    return write_index(folder / "index.parquet", [index_row(1, 2023, path, NORTH_UP)]), path


@pytest.fixture(scope="module")
def north_con(north_up_collection):
    con = aefsql.connect(catalog=str(north_up_collection[0]))
    yield con
    con.close()


def gdal_overview_pixels(path, rings, level):
    """{(row, col): int16 values (64,)} of the level's pixels whose centres lie inside `rings`
    (GDAL's rasterization on the overview's transform); -999 for nodata."""
    with rasterio.open(path, overview_level=level - 1) as ds:
        geometry = {"type": "Polygon", "coordinates": [r.tolist() for r in rings]}
        inside = geometry_mask([geometry], (ds.height, ds.width), ds.transform, invert=True)
        data = ds.read().astype(np.int16)
        transform = ds.transform
    data = np.where(data == -128, -999, data)
    rows, cols = np.nonzero(inside)
    pixels = {(r, c): data[:, r, c] for r, c in zip(rows.tolist(), cols.tolist(), strict=True)}
    return pixels, transform


def at_level(con, ring, epsg, level, years=2023):
    wkb = polygon_wkb(ring[:, 0], ring[:, 1])
    return con.sql(
        f"SELECT * FROM aef_pixels(?::BLOB, years := {years}, crs := {epsg}, level := {level})",
        params=[wkb],
    ).to_arrow_table()


def check_against_gdal(table, path, ring, level, minimum):
    expected, transform = gdal_overview_pixels(path, [ring], level)
    assert len(expected) > minimum
    assert_same(by_pixel(table, path), expected)
    assert table.num_rows == len(expected)
    x, y = rasterio.transform.xy(transform, table["row"].to_numpy(), table["col"].to_numpy())
    assert np.allclose(table["x"].to_numpy(), x) and np.allclose(table["y"].to_numpy(), y)


@pytest.mark.parametrize("level", LEVELS)
def test_pixels_at_level_equal_gdal_overview_south_up(con, gdal_collection, level):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    ring = star(x0 + 1500, y0 + 1300, 1100, seed=level)
    table = at_level(con, ring, epsg, level)
    path = gdal_collection.folder / collection_path(2023, 3)
    check_against_gdal(table, path, ring, level, minimum=400 // 4 ** (level - 1))


@pytest.mark.parametrize("level", LEVELS)
def test_pixels_at_level_equal_gdal_overview_north_up(north_con, north_up_collection, level):
    index, relative = north_up_collection
    west, south, east, north = NORTH_UP.bounds
    ring = star((west + east) / 2, (south + north) / 2, 1200, n=11, seed=level)
    table = at_level(north_con, ring, NORTH_UP.epsg, level)
    check_against_gdal(table, index.parent / relative, ring, level, minimum=300 // 4 ** (level - 1))


def test_locations_at_a_level_join_two_years(con):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    ring = star(x0 + 1400, y0 + 1200, 900, seed=5)
    wkb = polygon_wkb(ring[:, 0], ring[:, 1])
    joined, single = con.execute(
        f"WITH p AS (FROM aef_pixels(?::BLOB, years := [2023, 2024], crs := {epsg}, "
        "level := 1)) SELECT (SELECT count(*) FROM p a JOIN p b ON a.location = b.location "
        "AND a.year = 2023 AND b.year = 2024 AND a.row = b.row AND a.col = b.col), "
        "(SELECT count(*) FROM p WHERE year = 2023)",
        [wkb],
    ).fetchall()[0]
    assert joined == single > 100


def test_zonal_at_level_equals_numpy_over_gdal_overview(con, gdal_collection):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    rings = [star(x0 + 900 + 600 * i, y0 + 900 + 300 * i, 500, seed=20 + i) for i in range(3)]
    con.register(
        "zones",
        pa.table({"zone": ["a", "b", "c"], "geom": [polygon_wkb(*r.T) for r in rings]}),
    )
    table = con.sql(
        f"SELECT * FROM aef_zonal('zones', years := 2023, crs := {epsg}, level := 1)"
    ).to_arrow_table()
    con.unregister("zones")
    path = gdal_collection.folder / collection_path(2023, 3)
    for ring, row in zip(rings, table.to_pylist(), strict=True):
        pixels, _ = gdal_overview_pixels(path, [ring], 1)
        values = np.array(list(pixels.values()))
        valid = values[(values != -999).all(axis=1)]
        assert row["pixels"] == len(pixels) > 50 and not row["centroid_pixel"]
        assert row["nodata_pixels"] == len(values) - len(valid)
        expected = (np.sign(valid) * (np.abs(valid) / 127.5) ** 2).mean(axis=0)
        assert np.allclose(row["embedding"], expected, atol=1e-6)


def test_read_ready_collection_serves_level_0_only(gdal_collection, tmp_path):
    """The collection holds full-resolution headers: a level > 0 reads the file's own."""
    built = tmp_path / "headers.parquet"
    aefsql.write_headers(str(built), catalog=gdal_collection.index, years=[2023])
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    ring = star(x0 + 1200, y0 + 1000, 700, seed=3)
    path = gdal_collection.folder / collection_path(2023, 3)
    con = aefsql.connect(catalog=gdal_collection.index, headers=str(built))
    try:
        check_against_gdal(at_level(con, ring, epsg, 1), path, ring, 1, minimum=100)
    finally:
        con.close()


def test_level_errors_and_budget(con):
    box = "[12.0, 45.0, 12.01, 45.01]"  # about 8,700 pixels at 10 m
    with pytest.raises(Exception, match=r"no level 3 in the file: it has levels 0 to 2"):
        con.sql(f"SELECT count(*) FROM aef_pixels({box}, years := 2023, level := 3)").fetchall()
    with pytest.raises(Exception, match=r"level := -1: a level is 0"):
        con.sql(f"SELECT count(*) FROM aef_pixels({box}, years := 2023, level := -1)").fetchall()
    # The budget counts the level's pixels: 4x fewer per level.
    query = (
        f"SELECT count(*) FROM aef_pixels({box}, years := 2023, bands := ['A00'], "
        "max_bytes := 5000, level := {level})"
    )
    with pytest.raises(Exception, match="coarser level :="):
        con.sql(query.format(level=0)).fetchall()
    assert con.sql(query.format(level=1)).fetchall()[0][0] > 1000
