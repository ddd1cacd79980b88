"""Bad input through the SQL surface: each case a clear error or a documented NULL."""

import socket
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyproj
import pytest
import rasterio
import tifffile
from helpers import GOOD_TILE, TO_LONLAT, geotags, pixel_lonlat, write

import aefsql
import aefsql.errors
import aefsql.storage.store


def embedding(con, lon, lat, year=2023):
    return con.execute("SELECT aef_embedding(?, ?, ?)", [lon, lat, year]).fetchone()[0]


def test_nodata_is_null_per_band(broken_catalog):
    con, _ = broken_catalog
    lon, lat = pixel_lonlat(np.array([6, 20]), np.array([6, 20]))
    patch = embedding(con, lon[0], lat[0])
    assert patch is not None and set(patch.values()) == {None}
    single = embedding(con, lon[1], lat[1])
    assert single["A03"] is None
    assert single["A04"] == GOOD_TILE[4, 20, 20]


@pytest.mark.parametrize(
    "lon, lat",
    [
        (None, 45.0),
        (15.0, None),
        (float("nan"), 45.0),
        (float("inf"), 45.0),
        (-float("inf"), 45.0),
        (181.0, 45.0),
        (-180.5, 45.0),
        (15.0, 90.5),
        (15.0, -91.0),
        (0.0, 89.99),
        (150.0, -80.0),
    ],
)
def test_invalid_or_uncovered_points_are_null(broken_catalog, lon, lat):
    con, _ = broken_catalog
    assert embedding(con, lon, lat) is None
    assert con.execute("SELECT aef_locate(?, ?, 2023)", [lon, lat]).fetchone()[0] is None
    row = con.execute(
        "SELECT aef_file_embedding(path, ?, ?) FROM aef_index() WHERE year = 2023", [lon, lat]
    ).fetchone()
    assert row == (None,)


def test_null_year_is_null(broken_catalog):
    con, _ = broken_catalog
    lon, lat = pixel_lonlat(np.array([30]), np.array([30]))
    assert embedding(con, lon[0], lat[0], None) is None


def test_missing_file_fails_naming_it(broken_catalog):
    con, tmp_path = broken_catalog
    lon, lat = pixel_lonlat(np.array([30]), np.array([30]))
    with pytest.raises(Exception, match=r"RangeReadError: .*missing\.tif: file not found"):
        embedding(con, lon[0], lat[0], 2024)
    with pytest.raises(Exception, match="file not found"):
        con.execute(
            "SELECT aef_file_embedding(?, 15.0, 45.0)", [str(tmp_path / "nope.tif")]
        ).fetchall()


def test_non_tiff_fails_naming_it(broken_catalog):
    """Naming the file, never echoing its bytes (a file that is not a TIFF may be a secret:
    its first bytes were in the message)."""
    con, _ = broken_catalog
    lon, lat = pixel_lonlat(np.array([30]), np.array([30]))
    with pytest.raises(
        Exception, match=r"TiffFormatError: .*not_a_tiff\.tif: not a TIFF file"
    ) as e:
        embedding(con, lon[0], lat[0], 2025)
    assert "<htm" not in str(e.value) and "403" not in str(e.value)


def test_truncated_tiff_fails_naming_it(broken_catalog):
    con, _ = broken_catalog
    lon, lat = pixel_lonlat(np.array([39]), np.array([49]))
    with pytest.raises(Exception, match=r"truncated\.tif.*(shorter than|past the end)"):
        embedding(con, lon[0], lat[0], 2026)


@pytest.fixture
def fetch_attempts(monkeypatch) -> list[int]:
    """The store's fetch attempts (each: how many requests), counted around the real fetch."""
    attempts = []
    real_fetch = aefsql.storage.store.fetch

    def counting_fetch(requests, *args, **kwargs):
        attempts.append(len(requests))
        return real_fetch(requests, *args, **kwargs)

    monkeypatch.setattr(aefsql.storage.store, "fetch", counting_fetch)
    return attempts


def test_a_local_file_shorter_than_its_header_says_is_not_retried(broken_catalog, fetch_attempts):
    """A local file is as long as it is: its short read fails at the first attempt (it was
    retried, for seconds, as a network fault)."""
    _, folder = broken_catalog
    url = f"file://{folder / 'truncated.tif'}"
    size = (folder / "truncated.tif").stat().st_size
    store = aefsql.storage.store.ByteStore()
    with pytest.raises(aefsql.errors.RangeReadError, match="shorter than its header says"):
        store.read([(url, size - 10, size + 100)])
    assert fetch_attempts == [1]


def test_empty_points_table_gives_empty_result(broken_catalog):
    con, _ = broken_catalog
    con.execute("CREATE TABLE empty_points (id INTEGER, lon DOUBLE, lat DOUBLE)")
    result = con.execute("SELECT * FROM aef_sample_points('empty_points', year := 2023)")
    assert result.fetchall() == []
    assert [d[0] for d in result.description][:4] == ["id", "lon", "lat", "year"]
    assert len(result.description) == 4 + 64
    empty = aefsql.sample_points(
        pa.table({"lon": pa.array([], pa.float64()), "lat": pa.array([], pa.float64())}),
        year=2023,
        catalog=str(broken_catalog[1] / "index.parquet"),
    )
    assert empty.num_rows == 0 and empty.column_names[:3] == ["lon", "lat", "year"]


def test_every_row_comes_back_once_in_order(broken_catalog):
    con, _ = broken_catalog
    rows = np.array([1, 6, 39, 0, 25, 0])
    cols = np.array([1, 6, 49, 0, 25, 0])
    lon, lat = pixel_lonlat(rows, cols)
    lon = np.r_[lon, np.nan, 100.0]
    lat = np.r_[lat, 1.0, 1.0]
    points = pa.table({"key": list("abcdefgh"), "lon": lon, "lat": lat})
    con.register("points", points)
    out = con.execute(
        "SELECT key, year, A00, A63 FROM aef_sample_points('points', years := [2023, 2030])"
    ).fetchall()
    assert [(k, y) for k, y, _, _ in out] == [(k, y) for k in "abcdefgh" for y in (2023, 2030)]
    by_key = {(k, y): (a00, a63) for k, y, a00, a63 in out}
    for key, row, col in zip("abcdef", rows, cols, strict=True):
        expected = tuple(None if v == -128 else int(v) for v in GOOD_TILE[[0, 63], row, col])
        assert by_key[(key, 2023)] == expected
        assert by_key[(key, 2030)] == (None, None)
    assert by_key[("g", 2023)] == by_key[("h", 2023)] == (None, None)


def test_sample_points_needs_a_year(broken_catalog):
    con, _ = broken_catalog
    con.execute("CREATE TABLE p AS SELECT 15.0 AS lon, 45.0 AS lat")
    with pytest.raises(Exception, match="pass years := 2024 or years := "):
        con.execute("SELECT * FROM aef_sample_points('p')").fetchall()


def test_unknown_band_is_a_clear_error(broken_catalog):
    con, _ = broken_catalog
    lon, lat = pixel_lonlat(np.array([30]), np.array([30]))
    con.execute("CREATE TABLE q AS SELECT ? AS lon, ? AS lat", [lon[0], lat[0]])
    with pytest.raises(Exception, match="unknown band name"):
        con.execute(
            "SELECT * FROM aef_sample_points('q', year := 2023, bands := ['A64'])"
        ).fetchall()


def test_python_sample_points_needs_a_year_and_known_columns(broken_catalog):
    _, tmp_path = broken_catalog
    table = pa.table({"lon": [15.0], "lat": [45.0]})
    index = str(tmp_path / "index.parquet")
    with pytest.raises(aefsql.AefsqlError, match=r"pass years=2024 or years=\[2023, 2024\]"):
        aefsql.sample_points(table, catalog=index)
    with pytest.raises(aefsql.AefsqlError, match="points table has no column 'x'"):
        aefsql.sample_points(table, x_column="x", year=2023, catalog=index)
    with pytest.raises(aefsql.AefsqlError, match="pyarrow.Table or RecordBatchReader"):
        aefsql.sample_points({"lon": [1.0]}, year=2023, catalog=index)


def test_on_error_null_keeps_every_row_and_says_why(broken_catalog):
    con, _ = broken_catalog
    lon, lat = pixel_lonlat(np.array([30, 2]), np.array([30, 3]))
    con.register("two", pa.table({"id": [1, 2], "lon": lon, "lat": lat}))
    query = "SELECT * FROM aef_sample_points('two', years := [2023, 2024, 2025, 2026]{})"
    with pytest.raises(Exception, match=r"(file not found|not a TIFF file)"):
        con.execute(query.format("")).fetchall()  # the default fails loudly
    # A63's blocks lie at the end of each file: past the cut of the truncated one.
    rows = con.execute(query.format(", bands := ['A00', 'A63'], on_error := 'null'")).fetchall()
    assert [(r[0], r[3]) for r in rows] == [
        (i, y) for i in (1, 2) for y in (2023, 2024, 2025, 2026)
    ]
    by_year = {(r[0], r[3]): (r[4], r[6]) for r in rows}  # A00, aef_error
    assert by_year[(1, 2023)] == (int(GOOD_TILE[0, 30, 30]), None)
    assert "missing.tif: file not found" in by_year[(1, 2024)][1] and by_year[(1, 2024)][0] is None
    assert "not_a_tiff.tif: not a TIFF file" in by_year[(2, 2025)][1]
    assert "truncated.tif" in by_year[(2, 2026)][1]
    with pytest.raises(Exception, match="on_error must be 'raise' or 'null'"):
        con.execute(query.format(", on_error := 'ignore'")).fetchall()


def test_a_header_declaring_giant_blocks_is_refused_before_reading_them(tmp_path):
    """Width, height and tile size all patched to 32768 (consistent: still one tile): decoding
    would allocate 1 GiB; the planner refuses first, naming the file."""
    path = write(tmp_path / "giant.tif", np.zeros((64, 64), np.int8), tile=(64, 64))
    raw = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tiff:
        tags = tiff.pages[0].tags
        for name in ("ImageWidth", "ImageLength", "TileWidth", "TileLength"):
            tag = tags[name]
            fmt = {3: "<H", 4: "<I"}[int(tag.dtype)]
            struct.pack_into(fmt, raw, tag.valueoffset, 32768)
    path.write_bytes(bytes(raw))
    con = aefsql.connect()
    lon, lat = pixel_lonlat(np.array([5]), np.array([5]))
    try:
        with pytest.raises(
            Exception,
            match=r"giant\.tif: blocks of 32768 x 32768 pixels x 1 "
            r"samples \(1,024 MiB decoded\) are refused",
        ):
            con.sql(f"SELECT aef_file_embedding('{path}', {lon[0]}, {lat[0]})").fetchall()
    finally:
        con.close()


def one_tile_catalog(tmp_path, data, tags, epsg=32633, origin=(500000.0, 4e6), **layout):
    """A catalog of one tile (50 x 40 pixels of 10 m at `origin`, in EPSG `epsg`) written by
    tifffile with these GeoTIFF tags (year 2023)."""
    write(tmp_path / "tile.tif", data, extratags=tags, **layout)
    to_lonlat = pyproj.Transformer.from_crs(epsg, 4326, always_xy=True)
    x0, y0 = origin
    lon, lat = to_lonlat.transform([x0, x0 + 500, x0, x0 + 500], [y0, y0, y0 + 400, y0 + 400])
    return write_catalog(tmp_path / "index.parquet", [2023], ["tile.tif"], f"EPSG:{epsg}", lon, lat)


def write_catalog(index, years, paths, crs, lon, lat):
    """An index of one row per (year, path), all with the lon/lat box of these corners."""
    n = len(years)
    pq.write_table(
        pa.table(
            {
                "fid": list(range(n)),
                "year": years,
                "path": paths,
                "crs": [crs] * n,
                "wgs84_west": [min(lon)] * n,
                "wgs84_south": [min(lat)] * n,
                "wgs84_east": [max(lon)] * n,
                "wgs84_north": [max(lat)] * n,
            }
        ),
        index,
    )
    return index


def leave_out_first_tile(path, bands: int) -> None:
    """Set the byte count of tile 0 of every band to 0: a tile the file leaves out (GDAL
    reads it as nodata)."""
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags[325]  # TileByteCounts
        per_plane = len(tag.value) // bands
        size = {"SHORT": 2, "LONG": 4, "LONG8": 8}[tag.dtype_name]
        offset = tag.valueoffset
    with open(path, "r+b") as f:
        for band in range(bands):
            f.seek(offset + band * per_plane * size)
            f.write(bytes(size))


@pytest.mark.parametrize("nodata", [None, "-128"])
def test_a_tile_left_out_is_nodata_whatever_the_tag(tmp_path, nodata):
    """Tiles of byte count 0 are nodata: NULL bands, tagged or not (a file without the tag
    is read with AEF's -128; it read as 0 before)."""
    tags = [t for t in geotags() if nodata is not None or t[0] != 42113]
    index = one_tile_catalog(tmp_path, GOOD_TILE, tags, planarconfig="separate", tile=(16, 16))
    leave_out_first_tile(tmp_path / "tile.tif", 64)
    lon, lat = pixel_lonlat(np.array([2, 30]), np.array([3, 40]))
    with aefsql.connect(catalog=str(index)) as con:
        left_out = embedding(con, lon[0], lat[0])
        kept = embedding(con, lon[1], lat[1])
    with aefsql.connect(catalog=str(index)) as con:
        con.register("left_out", pa.table({"lon": lon[:1], "lat": lat[:1]}))
        plan = con.sql("SELECT blocks, bytes FROM aef_plan('left_out', years := 2023)").fetchall()
    assert left_out is not None and set(left_out.values()) == {None}
    assert kept["A00"] == GOOD_TILE[0, 30, 40]
    assert plan == [(64, 0)]  # the plan counts the 64 blocks left out, and no byte to read


@pytest.mark.parametrize("nodata", ["nan", "1000", "2.5", "-inf"])
def test_a_nodata_no_int8_can_hold_is_refused(tmp_path, nodata):
    """A nodata tag that no int8 equals would let nodata pixels read as data: refused,
    naming it."""
    tags = geotags(nodata=nodata)
    index = one_tile_catalog(tmp_path, GOOD_TILE, tags, planarconfig="separate", tile=(16, 16))
    leave_out_first_tile(tmp_path / "tile.tif", 64)
    lon, lat = pixel_lonlat(np.array([2]), np.array([3]))
    with aefsql.connect(catalog=str(index)) as con:
        with pytest.raises(Exception, match="cannot be an int8 value"):
            embedding(con, lon[0], lat[0])


@pytest.mark.parametrize(
    "matrix",
    [
        (float("nan"), 0, 0, 500000.0, 0, 10.0, 0, 4e6, 0, 0, 0, 0, 0, 0, 0, 1),
        (float("inf"), 0, 0, 500000.0, 0, 10.0, 0, 4e6, 0, 0, 0, 0, 0, 0, 0, 1),
        (10.0, 0, 0, 500000.0, 0, float("-inf"), 0, 4e6, 0, 0, 0, 0, 0, 0, 0, 1),
        (10.0, 0, 0, float("nan"), 0, 10.0, 0, 4e6, 0, 0, 0, 0, 0, 0, 0, 1),
        (0.0, 0, 0, 500000.0, 0, 10.0, 0, 4e6, 0, 0, 0, 0, 0, 0, 0, 1),
    ],
    ids=["nan-size", "inf-size", "-inf-size", "nan-origin", "zero-size"],
)
def test_a_transform_no_point_maps_through_is_refused(tmp_path, matrix):
    """A NaN, infinite or zero pixel size (or origin) is refused, naming the file: before,
    every point landed in pixel (0, 0) or nowhere without a word."""
    tags = geotags(matrix=matrix)
    index = one_tile_catalog(tmp_path, GOOD_TILE, tags, planarconfig="separate", tile=(16, 16))
    lon, lat = pixel_lonlat(np.array([20]), np.array([20]))
    with aefsql.connect(catalog=str(index)) as con:
        with pytest.raises(Exception, match=r"tile\.tif: geotransform (is not finite|has a zero)"):
            embedding(con, lon[0], lat[0])


def test_more_samples_than_a_count_can_hold_is_a_clean_refusal(tmp_path):
    """40,000 samples per pixel (a 1 x 2 image, chunky): refused by name, where the
    sampler's int16 band counts overflowed before."""
    data = np.zeros((1, 2, 40000), np.int8)
    index = one_tile_catalog(tmp_path, data, geotags(), planarconfig="contig")
    lon, lat = pixel_lonlat(np.array([0]), np.array([0]))
    with aefsql.connect(catalog=str(index)) as con:
        with pytest.raises(Exception, match="40000 samples per pixel: more than 32767"):
            embedding(con, lon[0], lat[0])


@pytest.mark.parametrize(
    "tags, why",
    [
        (
            geotags(matrix=(10.0, 1.0, 0, 500000.0, 0, 10.0, 0, 4e6, 0, 0, 0, 0, 0, 0, 0, 1)),
            "rotated or sheared",
        ),
        (geotags(geokeys=(1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32767)), "EPSG"),
    ],
    ids=["rotated", "unknown-epsg"],
)
def test_on_error_null_covers_files_that_fail_while_locating(tmp_path, tags, why):
    """A file points cannot be mapped into (rotated, a CRS that is no EPSG code) failed the
    whole query while locating, even with on_error := 'null': now its rows come back with
    NULL bands and the reason, and the default still fails naming the file."""
    index = one_tile_catalog(tmp_path, GOOD_TILE, tags, planarconfig="separate", tile=(16, 16))
    lon, lat = pixel_lonlat(np.array([20, 30]), np.array([20, 30]))
    with aefsql.connect(catalog=str(index)) as con:
        con.register("pts", pa.table({"id": [1, 2], "lon": lon, "lat": lat}))
        query = "SELECT id, A00{} FROM aef_sample_points('pts', years := 2023{})"
        with pytest.raises(Exception, match=rf"tile\.tif.*{why}"):
            con.execute(query.format("", "")).fetchall()
        rows = con.execute(query.format(", aef_error", ", on_error := 'null'")).fetchall()
    assert [r[0] for r in rows] == [1, 2]
    assert all(r[1] is None and "tile.tif" in r[2] and why in r[2] for r in rows)


def test_a_dead_server_is_given_up_on_once_per_host(tmp_path, fetch_attempts):
    """A local catalog of 12 files (years 2001-2012) on a server that refuses connections,
    sampled with on_error := 'null': every row comes back with the reason, and the host is
    retried once — its other files fail at once. Before, each file went through the retry
    loop again (while locating and again while sampling): 2.6 s and 20 requests a file."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lon, lat = TO_LONLAT.transform([500000, 500500, 500000, 500500], [4e6, 4e6, 4000400, 4000400])
    years = list(range(2001, 2013))
    paths = [f"http://127.0.0.1:{port}/{y}/tile.tif" for y in years]
    index = write_catalog(tmp_path / "index.parquet", years, paths, "EPSG:32633", lon, lat)
    x, y = pixel_lonlat(np.array([5, 30]), np.array([5, 30]))
    with aefsql.connect(catalog=str(index)) as con:
        con.register("pts", pa.table({"id": [1, 2], "lon": x, "lat": y}))
        rows = con.execute(
            f"SELECT id, year, A00, aef_error FROM aef_sample_points('pts', years := {years}, "
            "on_error := 'null') ORDER BY id, year"
        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [(i, y) for i in (1, 2) for y in years]
    assert all(r[2] is None and f"127.0.0.1:{port}" in r[3] for r in rows)
    assert (
        len(fetch_attempts) <= aefsql.storage.store.RetryPolicy().attempts
    )  # one retry cycle in all


@pytest.mark.parametrize("bands", [1, 63])
def test_files_with_other_band_counts_sample_what_they_hold(tmp_path, bands):
    """The policy for files not shaped like AEF (docs/security.md): sampled as they are —
    the bands a file holds, each equal to rasterio's read; the bands it lacks NULL."""
    layout = dict(planarconfig="separate") if bands > 1 else {}
    data = GOOD_TILE[:bands] if bands > 1 else GOOD_TILE[0]
    index = one_tile_catalog(tmp_path, data, geotags(), tile=(16, 16), **layout)
    lon, lat = pixel_lonlat(np.array([7, 33]), np.array([9, 41]))
    with aefsql.connect(catalog=str(index)) as con:
        got = [embedding(con, x, y) for x, y in zip(lon, lat, strict=True)]
    with rasterio.open(tmp_path / "tile.tif") as ds:
        xs, ys = pyproj.Transformer.from_crs(4326, 32633, always_xy=True).transform(lon, lat)
        expected = [list(v) for v in ds.sample(zip(xs, ys, strict=True))]
    for values, want in zip(got, expected, strict=True):
        assert [values[f"A{b:02d}"] for b in range(bands)] == [
            None if v == -128 else int(v) for v in want
        ]
        assert all(values[f"A{b:02d}"] is None for b in range(bands, 64))


def test_a_file_in_a_crs_that_is_not_utm_is_sampled_in_its_own_crs(tmp_path):
    """Web Mercator (EPSG:3857) instead of UTM: points go to the file's own CRS, as for any
    EPSG code, and equal rasterio's read of the same pixels."""
    x0, y0 = 1335833.9, 5621521.5  # about 12°E, 45°N
    matrix = (10.0, 0, 0, x0, 0, 10.0, 0, y0, 0, 0, 0, 0, 0, 0, 0, 1)
    geokeys = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 3857)
    index = one_tile_catalog(
        tmp_path,
        GOOD_TILE,
        geotags(matrix, geokeys),
        3857,
        (x0, y0),
        planarconfig="separate",
        tile=(16, 16),
    )
    to_lonlat = pyproj.Transformer.from_crs(3857, 4326, always_xy=True)
    rng = np.random.default_rng(9)
    xs, ys = x0 + rng.uniform(5, 495, 6), y0 + rng.uniform(5, 395, 6)
    plon, plat = to_lonlat.transform(xs, ys)
    with aefsql.connect(catalog=str(index)) as con:
        got = [embedding(con, a, b) for a, b in zip(plon, plat, strict=True)]
    with rasterio.open(tmp_path / "tile.tif") as ds:
        expected = [list(v) for v in ds.sample(zip(xs, ys, strict=True))]
    for values, want in zip(got, expected, strict=True):
        assert [values[f"A{b:02d}"] for b in range(64)] == [
            None if v == -128 else int(v) for v in want
        ]
