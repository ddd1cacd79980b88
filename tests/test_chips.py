"""aef_chips against GDAL: every chip is compared, pixel for pixel and band for band, with
rasterio reads of the GDAL-written files (boundless windows, flipped where the file is
south-up; across a zone seam, the source pixel under each chip pixel's centre through PROJ).
Nothing expected here is computed with aefsql's own code."""

import tracemalloc

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from gdal_fixtures import (
    COLLECTION_TILES,
    LAYOUTS,
    PIXEL,
    TILE_HEIGHT,
    TILE_WIDTH,
    collection_layout,
    collection_path,
    index_row,
    to_lonlat,
    write_index,
)
from helpers import (
    block_ranges,
    block_reads,
    chip_centres,
    chip_corner,
    gdal_chip,
    opened,
    own_zone_first,
    pixel_points,
    pixel_reads,
    tile_file,
)
from pyproj import Transformer
from rasterio.transform import rowcol

import aefsql

NODATA = -128
ADDED = ["year", "chip", "chip_crs", "chip_bounds", "valid_pixels", "embedding"]


# -- expectations, from rasterio and PROJ only ---------------------------------------------


def dequantized_means(chip):
    """(float64 (bands,) or None, valid pixel count) over the pixels where every band holds
    data."""
    valid = (chip != NODATA).all(axis=0)
    if not valid.any():
        return None, 0
    v = chip[:, valid].astype(np.float64)
    return (np.sign(v) * (np.abs(v) / 127.5) ** 2).mean(axis=1), int(valid.sum())


# -- aef_chips' output as numpy ------------------------------------------------------------


def chips(con, points, size, years=2023, extra=""):
    con.register("pts", points)
    try:
        return con.sql(
            f"SELECT * FROM aef_chips('pts', size := {size}, years := {years}{extra})"
        ).to_arrow_table()
    finally:
        con.unregister("pts")


def chip_values(table, bands=64) -> list:
    """Each row's chip as int8 (bands, size, size), or None."""
    column = table["chip"].combine_chunks()
    out = []
    for value in column:
        if not value.is_valid:
            out.append(None)
            continue
        flat = value.values.flatten().flatten()
        assert flat.null_count == 0
        size = len(value.values[0])
        out.append(flat.to_numpy().reshape(bands, size, size).astype(np.int8))
    return out


def bounds_of(table) -> list:
    return [None if b is None else tuple(b.values()) for b in table["chip_bounds"].to_pylist()]


def points_table(epsg, x, y, **columns):
    lon, lat = to_lonlat(epsg, np.asarray(x, float), np.asarray(y, float))
    return pa.table({"id": np.arange(len(lon)), **columns, "lon": lon, "lat": lat})


# -- 1, 2: one tile, south-up and north-up --------------------------------------------------


def check_single_file(table, path, epsg, x, y, size, level=0):
    """Every row's chip, CRS, bounds and centre pixel against rasterio on `path`."""
    got = chip_values(table)
    assert table["chip_crs"].to_pylist() == [f"EPSG:{epsg}"] * len(x)
    with opened(path, level) as ds:
        centre = np.array(list(ds.sample(zip(x, y, strict=True))))
    for i in range(len(x)):
        west, north = chip_corner(path, x[i], y[i], size, level)
        pixel = PIXEL * 2**level
        expected, held = gdal_chip(path, west, north, size, level)
        assert np.array_equal(got[i], expected), i
        assert bounds_of(table)[i] == pytest.approx(
            (west, north - size * pixel, west + size * pixel, north), abs=1e-6
        )
        assert np.array_equal(got[i][:, size // 2, size // 2], centre[i])
        assert held[size // 2, size // 2]


@pytest.mark.parametrize("size", [1, 5, 32])
def test_chips_in_one_south_up_tile_equal_gdal_windows(con, gdal_collection, size):
    """Tile 3 (18S, alone in its zone): points inside it, at its corners and either side of
    block edges; past the tile's edge a chip is -128."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    rows = [0, 0, TILE_HEIGHT - 1, TILE_HEIGHT - 1, 127, 128, 57, 200, 130]
    cols = [0, TILE_WIDTH - 1, 0, TILE_WIDTH - 1, 128, 127, 33, 251, 150]
    x, y = pixel_points(rows, cols, x0, y0, seed=size)
    table = chips(con, points_table(epsg, x, y), size)
    assert table.column_names == ["id", "lon", "lat", *ADDED]
    check_single_file(table, tile_file(gdal_collection, 2023, 3), epsg, x, y, size)
    if size > 1:  # the corner chips reach past the raster
        assert (chip_values(table)[0] == NODATA).all(axis=0).sum() >= (size // 2) ** 2


def single_file_catalog(folder, layout, path):
    return str(write_index(folder / "index.parquet", [index_row(1, 2023, str(path), layout)]))


@pytest.mark.parametrize(
    "layout", [LAYOUTS[0], LAYOUTS[6], LAYOUTS[7]], ids=["south_up", "north_up", "chunky"]
)
def test_chips_in_one_file_follow_its_row_order(gdal_layout_files, tmp_path, layout):
    """Single GDAL files, south-up, north-up and pixel-interleaved (one-tile catalogs): the
    chip is north-up whatever the file's row order; points 3 m inside its corners too."""
    path = gdal_layout_files[layout]
    west, south, east, north = layout.bounds
    rng = np.random.default_rng(1)
    x = np.r_[rng.uniform(west, east, 6), west + 3, east - 3]
    y = np.r_[rng.uniform(south, north, 6), north - 3, south + 3]
    with aefsql.connect(catalog=single_file_catalog(tmp_path, layout, path)) as con:
        for size in (5, 32):
            table = chips(con, points_table(layout.epsg, x, y), size)
            check_single_file(table, path, layout.epsg, x, y, size)


# -- 3, 4: mosaics and seams ----------------------------------------------------------------


@pytest.mark.parametrize("level", [0, 1])
def test_a_chip_across_a_corner_is_a_mosaic_of_its_zone(con, gdal_collection, level):
    """Around the corner where tiles 1 and 2 (33N) meet: on tile 1's grid, each pixel read
    from the file that holds it; the 33N pixels neither holds take tile 0's (32N) pixel
    under their centre, the rest are -128."""
    _, epsg, x2, y2 = COLLECTION_TILES[2]
    size = 64 // (level + 1)
    x, y = np.array([x2 - 7.0 * (level + 1)]), np.array([y2 - 3.0 * (level + 1)])  # in tile 1
    table = chips(con, points_table(epsg, x, y), size, extra=f", level := {level}")
    (got,) = chip_values(table)
    tile1, tile2 = (tile_file(gdal_collection, 2023, k) for k in (1, 2))
    west, north = chip_corner(tile1, x[0], y[0], size, level)
    pixel = PIXEL * 2**level
    expected = np.full((64, size, size), NODATA, np.int8)
    source = np.full((size, size), -1)
    for k, path in ((1, tile1), (2, tile2)):
        data, held = gdal_chip(path, west, north, size, level)
        expected[:, held] = data[:, held]
        source[held] = k
    cx, cy = chip_centres(west, north, size, pixel)
    values, owner = own_zone_first(gdal_collection, 2023, epsg, cx, cy, level, skip=(1, 2))
    fill = source < 0
    expected[:, fill] = values[:, fill]
    source[fill] = owner[fill]
    assert table["chip_crs"].to_pylist() == [f"EPSG:{epsg}"]
    assert bounds_of(table)[0] == pytest.approx(
        (west, north - size * pixel, west + size * pixel, north), abs=1e-6
    )
    assert {k: int((source == k).sum()) > 0 for k in (-1, 0, 1, 2)} == {
        -1: True,
        0: True,
        1: True,
        2: True,
    }
    assert np.array_equal(got, expected)


def test_a_chip_across_the_seam_stays_on_its_tile_grid(con, gdal_collection):
    """Points of tile 0 (32N, west of 12°E, so tile 0 is theirs): one by its northern edge
    a few pixels from 12°E, one by its south-western corner, where tile 1 (33N) overhangs
    it. Their chips are on tile 0's grid: where tile 0 owns pixels (their centre is its by
    aef_locate's rule, own zone first) they are its own; the others — tile 0's pixels east
    of 12°E that tile 1 holds too among them — are the source pixel under their centre in
    their owner, nearest neighbour; -128 where nothing is."""
    _, epsg, x0, y0 = COLLECTION_TILES[0]
    size = 128
    x, y = pixel_points([TILE_HEIGHT - 3, 3], [135, 4], x0, y0, seed=7)
    assert (to_lonlat(epsg, x, y)[0] < 12).all()
    table = chips(con, points_table(epsg, x, y), size)
    got = chip_values(table)
    tile0 = tile_file(gdal_collection, 2023, 0)
    assert table["chip_crs"].to_pylist() == ["EPSG:32632"] * 2
    to_lon = Transformer.from_crs(epsg, 4326, always_xy=True)
    for i in range(2):
        west, north = chip_corner(tile0, x[i], y[i], size)
        assert (west - x0) % PIXEL == 0 and (north - y0) % PIXEL == 0
        assert bounds_of(table)[i] == pytest.approx(
            (west, north - size * PIXEL, west + size * PIXEL, north), abs=1e-6
        )
        copy, held = gdal_chip(tile0, west, north, size)
        cx, cy = chip_centres(west, north, size)
        expected, source = own_zone_first(gdal_collection, 2023, epsg, cx, cy)
        assert np.array_equal(got[i], expected), i
        assert np.array_equal(expected[:, source == 0], copy[:, source == 0])
        assert all((source == k).sum() > 100 for k in (-1, 0, 1)), i
        if i == 0:  # across 12°E: tile 1's pixels east of it, tile 0's own held by tile 1 too
            lon = to_lon.transform(cx, cy)[0]
            assert lon.min() < 12 < lon.max() and (lon[source == 1] > 12).all()
            assert (held & (source == 1)).sum() > 100


# -- 5: nodata, valid pixels, embeddings ----------------------------------------------------


def check_means(table, chips_expected, bands):
    for i, expected in enumerate(chips_expected):
        means, valid = dequantized_means(expected)
        assert table["valid_pixels"][i].as_py() == valid
        embedding = table["embedding"][i].as_py()
        if means is None:
            assert embedding is None
            continue
        assert len(embedding) == 64
        assert [k for k, v in enumerate(embedding) if v is not None] == list(bands)
        got = np.array([embedding[b] for b in bands])
        assert np.allclose(got, means, rtol=2e-6, atol=1e-7)


def test_valid_pixels_and_embedding_equal_numpy_on_gdal_windows(con, gdal_collection):
    """The fixtures' nodata rectangle (file rows 40..89, cols 100..179, all bands) and their
    single-band -128s: valid pixels hold data in every chosen band; the embedding is the
    mean de-quantized value over them; a chip of nodata has a NULL embedding."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    path = tile_file(gdal_collection, 2023, 3)
    with rasterio.open(path) as ds:
        data = ds.read()
    some = (data == NODATA).any(axis=0) & ~(data == NODATA).all(axis=0)
    # a pixel where one band, neither A00 nor A05, is nodata
    one = np.argwhere(some & (data[[0, 5]] != NODATA).all(axis=0))[0]
    rows, cols = [40, 65, 0, one[0]], [100, 140, 0, one[1]]
    x, y = pixel_points(rows, cols, x0, y0, seed=5)
    size = 32
    expected = [gdal_chip(path, *chip_corner(path, x[i], y[i], size), size)[0] for i in range(4)]
    table = chips(con, points_table(epsg, x, y), size)
    assert all(np.array_equal(a, b) for a, b in zip(chip_values(table), expected, strict=True))
    check_means(table, expected, range(64))
    assert [v.as_py() for v in table["valid_pixels"]][1] == 0  # inside the rectangle
    assert 0 < table["valid_pixels"][0].as_py() < size * size
    # two bands: a pixel is valid when both hold data
    two = chips(con, points_table(epsg, x, y), size, extra=", bands := ['A05', 'A00']")
    expected_two = [e[[0, 5]] for e in expected]
    assert all(np.array_equal(a, b) for a, b in zip(chip_values(two, 2), expected_two, strict=True))
    check_means(two, expected_two, [0, 5])
    assert two["valid_pixels"][3].as_py() > table["valid_pixels"][3].as_py()


# -- 6: rows, years, NULLs, column names ----------------------------------------------------


def test_every_row_once_per_distinct_year_in_order(con, gdal_collection):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    x, y = pixel_points([10, 200, 100], [20, 250, 150], x0, y0, seed=6)
    lon, lat = to_lonlat(epsg, x, y)
    points = pa.table(
        {
            "id": [7, 3, 9, 1, 5],
            "name": ["a", "outside", "b", "null", "c"],
            "lon": pa.array([lon[0], 0.0, lon[1], None, lon[2]], pa.float64()),
            "lat": [lat[0], 0.0, lat[1], lat[0], lat[2]],
        }
    )
    table = chips(con, points, 8, years="[2024, 2023, 2023]")
    assert table.column_names == ["id", "name", "lon", "lat", *ADDED]
    assert table["id"].to_pylist() == [i for i in (7, 3, 9, 1, 5) for _ in range(2)]
    assert table["year"].to_pylist() == [2023, 2024] * 5
    assert table["name"].to_pylist()[::2] == points["name"].to_pylist()
    got = chip_values(table)
    for column in ADDED[1:]:
        nulls = [i for i, v in enumerate(table[column].to_pylist()) if v is None]
        assert nulls == [2, 3, 6, 7], column  # outside coverage; NULL lon
    for row, point in ((0, 0), (4, 1), (8, 2)):
        for year in (2023, 2024):
            path = tile_file(gdal_collection, year, 3)
            expected = gdal_chip(path, *chip_corner(path, x[point], y[point], 8), 8)[0]
            assert np.array_equal(got[row + year - 2023], expected)
    assert not np.array_equal(got[0], got[1])
    with pytest.raises(Exception, match=r"already has column\(s\) chip, which aef_chips adds"):
        chips(con, points.append_column("chip", pa.array([1] * 5)), 8)


def test_geometry_points_and_projected_coordinates(con, gdal_collection):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    x, y = pixel_points([10, 200, 100], [20, 250, 150], x0, y0, seed=8)
    by_lonlat = chips(con, points_table(epsg, x, y), 6)
    con.register("utm", pa.table({"id": np.arange(3), "e": x, "n": y}))
    by_utm = con.sql(
        f"SELECT * EXCLUDE (e, n) FROM aef_chips('utm', size := 6, years := 2023, "
        f"x_column := 'e', y_column := 'n', crs := {epsg})"
    ).to_arrow_table()
    con.register("lonlat", points_table(epsg, x, y))
    by_geometry = con.sql(
        "WITH g AS (SELECT id, CAST('POINT(' || lon || ' ' || lat || ')' AS GEOMETRY) AS geom "
        "FROM lonlat) "
        "SELECT * EXCLUDE (geom) FROM aef_chips('g', size := 6, years := 2023, "
        "geometry_column := 'geom')"
    ).to_arrow_table()
    expected = by_lonlat.drop_columns(["lon", "lat"])
    assert by_utm.equals(expected) and by_geometry.equals(expected)
    path = tile_file(gdal_collection, 2023, 3)
    check_single_file(by_utm, path, epsg, x, y, 6)


# -- 7: the budget --------------------------------------------------------------------------


def test_budget_refuses_before_any_pixel_is_read(http_collection):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    x, y = pixel_points([10, 200, 100], [20, 250, 150], x0, y0, seed=9)
    suffix = "/" + collection_path(2023, 3)
    blocks = block_ranges(http_collection.folder / collection_path(2023, 3))
    log = http_collection.log
    exact = 3 * 64 * 64 * 64
    with aefsql.connect(catalog=http_collection.index) as con:
        points = points_table(epsg, x, y)
        for size, extra, message in [
            (0, "", r"a window of 0 x 0 pixels is refused: size must be 1 to 2048"),
            (2049, "", r"2049 x 2049 pixels is refused: size must be 1 to 2048"),
            (
                64,
                f", max_bytes := {exact - 1}",
                r"3 windows of 64 x 64 pixels x 64 bands are 768.0 KiB of int8, above max_bytes",
            ),
        ]:
            before = log.total
            with pytest.raises(Exception, match=message):
                chips(con, points, size, extra=extra)
            assert block_reads(blocks, pixel_reads(log, before, suffix)).sum() == 0
        before = log.total
        table = chips(con, points, 64, extra=f", max_bytes := {exact}")  # just fits
        assert block_reads(blocks, pixel_reads(log, before, suffix)).sum() > 0
    check_single_file(table, http_collection.folder / collection_path(2023, 3), epsg, x, y, 64)


def test_a_huge_request_is_refused_before_anything_is_allocated(con):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    x, y = pixel_points(np.arange(100), np.arange(100), x0, y0)
    tracemalloc.start()
    try:
        with pytest.raises(Exception, match=r"100 windows of 2048 x 2048 pixels x 64 bands"):
            chips(con, points_table(epsg, x, y), 2048)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20  # the chips would be 25 GiB


@pytest.mark.parametrize("size, amount", [(2049, "256.3 MiB"), (31623, "59.6 GiB")])
def test_window_refusal_says_a_real_amount(size, amount):
    """(From the retired aef_patch's tests.) A size past 2048 says what one window would be."""
    from aefsql.kernels.budgets import check_windows

    with pytest.raises(aefsql.AefsqlError, match=rf"would be {amount} a row"):
        check_windows(1, size, 64)


def test_a_chip_larger_than_its_tile(con, gdal_collection):
    """512 px: the whole of tile 3 and -128 around it, as rasterio's boundless read."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    x, y = pixel_points([100], [120], x0, y0)
    table = chips(con, points_table(epsg, x, y), 512, extra=", bands := ['A00', 'A63']")
    path = tile_file(gdal_collection, 2023, 3)
    west, north = chip_corner(path, x[0], y[0], 512)
    expected, held = gdal_chip(path, west, north, 512, bands=[0, 63])
    (got,) = chip_values(table, 2)
    assert held.sum() == TILE_WIDTH * TILE_HEIGHT
    assert np.array_equal(got, expected)
    check_means(table, [expected], [0, 63])


# -- 8: many chips, blocks read once --------------------------------------------------------


def test_many_chips_read_each_block_once(http_collection):
    """300 chips of one tile in one call: the same chips as one query per chip and as
    rasterio, and no pixel block of the file is fetched twice (the blocks they share are read
    together). One UDF call (one DuckDB vector) here; across calls blocks are not kept."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    rng = np.random.default_rng(10)
    x, y = pixel_points(rng.integers(0, TILE_HEIGHT, 300), rng.integers(0, TILE_WIDTH, 300), x0, y0)
    path = http_collection.folder / collection_path(2023, 3)
    blocks = block_ranges(path)
    log = http_collection.log
    points = points_table(epsg, x, y)
    with aefsql.connect(catalog=http_collection.index) as con:
        before = log.total
        table = chips(con, points, 16)
        reads = block_reads(blocks, pixel_reads(log, before, "/" + collection_path(2023, 3)))
    assert reads.max() == 1 and reads.sum() == len(blocks)  # every block, once
    got = chip_values(table)
    with rasterio.open(path) as ds:  # the whole file once, padded: 300 boundless reads are slow
        rows, cols = rowcol(ds.transform, x, y)
        padded = np.pad(ds.read(), ((0, 0), (8, 8), (8, 8)), constant_values=NODATA)
    for i in range(300):
        r, c = rows[i] + 8, cols[i] + 8  # the point's pixel in `padded`
        expected = padded[:, r - 7 : r + 9, c - 8 : c + 8][:, ::-1]  # south-up: flipped
        assert np.array_equal(got[i], expected), i
    with aefsql.connect(catalog=http_collection.index) as con:
        for i in rng.choice(300, 8, replace=False):
            (one,) = chip_values(chips(con, points.slice(int(i), 1), 16))
            assert np.array_equal(one, got[i])


def test_no_call_holds_more_chips_than_planned(con, gdal_collection, monkeypatch):
    """aef_chips pads its queue so that one UDF call reads at most `per_call` chips (256 MiB
    of int8, CALL_BYTES): with CALL_BYTES cut to 7 chips of 16 x 16 x 64, no call may read
    more than 7."""
    import aefsql.duck.udfs
    import aefsql.kernels.chips

    monkeypatch.setattr(aefsql.kernels.chips, "CALL_BYTES", 7 * 16 * 16 * 64)
    read, seen = aefsql.duck.udfs.read_chips, []

    def counted(session, paths, *args, **kwargs):
        seen.append(len(paths))
        return read(session, paths, *args, **kwargs)

    monkeypatch.setattr(aefsql.duck.udfs, "read_chips", counted)
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    rng = np.random.default_rng(12)
    x, y = pixel_points(rng.integers(0, TILE_HEIGHT, 50), rng.integers(0, TILE_WIDTH, 50), x0, y0)
    table = chips(con, points_table(epsg, x, y), 16)
    assert table.num_rows == 50 and sum(seen) == 50
    assert max(seen) <= 7, seen


# -- 9: files that fail ---------------------------------------------------------------------


def test_on_error_null_gives_the_failed_files_rows_a_message(gdal_collection, tmp_path):
    """Tile 3 is whole, tile 1 cut in half, tile 2's file is missing: with on_error := 'null'
    their rows keep NULL chips and the reason; tile 3's rows are intact."""
    rows = []
    for k in (1, 2, 3):
        relative = collection_path(2023, k)
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        raw = tile_file(gdal_collection, 2023, k).read_bytes()
        if k == 1:
            target.write_bytes(raw[: len(raw) // 2])
        elif k == 3:
            target.write_bytes(raw)
        rows.append(index_row(k, 2023, relative, collection_layout(k)))
    index = write_index(tmp_path / "index.parquet", rows)
    tiles = [1, 3, 2, 3]
    x = np.array([COLLECTION_TILES[k][2] + 1505.0 + 10 * i for i, k in enumerate(tiles)])
    y = np.array([COLLECTION_TILES[k][3] + 1305.0 for k in tiles])
    lon, lat = np.concatenate(
        [
            to_lonlat(COLLECTION_TILES[k][1], x[i : i + 1], y[i : i + 1])
            for i, k in enumerate(tiles)
        ],
        axis=1,
    )
    points = pa.table({"id": np.arange(4), "lon": lon, "lat": lat})
    with aefsql.connect(catalog=str(index)) as con:
        with pytest.raises(Exception, match=r"tile[12]-"):
            chips(con, points, 8)
        table = chips(con, points, 8, extra=", on_error := 'null'")
    assert table.column_names == ["id", "lon", "lat", *ADDED, "aef_error"]
    errors = table["aef_error"].to_pylist()
    assert errors[1] is None and errors[3] is None
    assert "tile1-" in errors[0]
    assert "tile2-" in errors[2] and "file not found" in errors[2]
    got = chip_values(table)
    assert got[0] is None and got[2] is None
    assert table["embedding"][0].as_py() is None and table["chip_crs"][2].as_py() is None
    path = tmp_path / collection_path(2023, 3)
    for i in (1, 3):
        expected = gdal_chip(path, *chip_corner(path, x[i], y[i], 8), 8)[0]
        assert np.array_equal(got[i], expected)


# -- 10: overviews --------------------------------------------------------------------------


def test_level_1_chips_equal_gdal_overview(con, gdal_collection):
    """level := 1 cuts chips from the files' first overview (rasterio overview_level=0)."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    rows = [0, 60, 127, 259, 100]
    cols = [0, 75, 149, 299, 10]
    x, y = pixel_points(rows, cols, x0, y0, seed=11)
    table = chips(con, points_table(epsg, x, y), 12, extra=", level := 1")
    check_single_file(table, tile_file(gdal_collection, 2023, 3), epsg, x, y, 12, level=1)
    box = table["chip_bounds"][0].as_py()
    assert box["xmax"] - box["xmin"] == 12 * 2 * PIXEL


def test_missing_year_in_catalog_is_null(con, gdal_collection):
    """A year the catalog lacks: every row once, NULL chips (no error)."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    x, y = pixel_points([10], [20], x0, y0)
    table = chips(con, points_table(epsg, x, y), 4, years="[2022, 2023]")
    assert table["year"].to_pylist() == [2022, 2023]
    assert chip_values(table)[0] is None and chip_values(table)[1] is not None


@pytest.mark.parametrize("size", ["2.5", "63.9"])
def test_a_size_that_is_not_a_whole_number_is_refused(con, size):
    """size := 2.5 is refused, as years := 2023.5 is: DuckDB's CAST to INTEGER rounded it to 3."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    x, y = pixel_points([10], [20], x0, y0, seed=9)
    with pytest.raises(Exception, match="size is a whole number of pixels, 1 to 2048, not"):
        chips(con, points_table(epsg, x, y), size)


def test_a_whole_size_given_as_a_decimal_is_that_size(con):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    x, y = pixel_points([10], [20], x0, y0, seed=9)
    points = points_table(epsg, x, y)
    assert chip_values(chips(con, points, "8.0"))[0].shape == (64, 8, 8)
