"""Bad input through the SQL surface: each case a clear error or a documented NULL."""

import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tifffile
from test_sampling import TO_LONLAT, pixel_lonlat
from test_tiff import write

import aefsql

DATA = np.random.default_rng(11).integers(-127, 128, (64, 40, 50), dtype=np.int8)
DATA[:, 5:9, 5:9] = -128  # a nodata patch, all bands together
DATA[3, 20, 20] = -128  # one nodata pixel in one band


@pytest.fixture
def catalog(tmp_path):
    """One good tile, one missing file, one non-TIFF and one truncated TIFF, as catalog rows
    of different years so each query picks the one it tests."""
    good = write(
        tmp_path / "good.tif", DATA, planarconfig="separate", tile=(16, 16), compression="zstd"
    )
    (tmp_path / "not_a_tiff.tif").write_bytes(b"<html>403 Forbidden</html>")
    raw = good.read_bytes()
    (tmp_path / "truncated.tif").write_bytes(raw[: len(raw) // 2])
    # The raster's corners: x 500000..500500, y 4000000..4000400 (south-up, 10 m pixels).
    lon, lat = np.asarray(
        TO_LONLAT.transform([500000, 500500, 500000, 500500], [4e6, 4e6, 4000400, 4000400])
    )
    rows = [
        (2023, "good.tif"),
        (2024, "missing.tif"),
        (2025, "not_a_tiff.tif"),
        (2026, "truncated.tif"),
    ]
    index = tmp_path / "index.parquet"
    pq.write_table(
        pa.table(
            {
                "fid": list(range(len(rows))),
                "year": [year for year, _ in rows],
                "path": [path for _, path in rows],
                "crs": ["EPSG:32633"] * len(rows),
                "wgs84_west": [lon.min()] * len(rows),
                "wgs84_south": [lat.min()] * len(rows),
                "wgs84_east": [lon.max()] * len(rows),
                "wgs84_north": [lat.max()] * len(rows),
            }
        ),
        index,
    )
    con = aefsql.connect(catalog=str(index))
    yield con, tmp_path
    con.close()


def embedding(con, lon, lat, year=2023):
    return con.execute("SELECT aef_embedding(?, ?, ?)", [lon, lat, year]).fetchone()[0]


def test_nodata_is_null_per_band(catalog):
    con, _ = catalog
    lon, lat = pixel_lonlat(np.array([6, 20]), np.array([6, 20]))
    patch = embedding(con, lon[0], lat[0])
    assert patch is not None and set(patch.values()) == {None}
    single = embedding(con, lon[1], lat[1])
    assert single["A03"] is None
    assert single["A04"] == DATA[4, 20, 20]


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
def test_invalid_or_uncovered_points_are_null(catalog, lon, lat):
    con, _ = catalog
    assert embedding(con, lon, lat) is None
    assert con.execute("SELECT aef_locate(?, ?, 2023)", [lon, lat]).fetchone()[0] is None
    row = con.execute(
        "SELECT aef_sample(path, ?, ?) FROM aef_index() WHERE year = 2023", [lon, lat]
    ).fetchone()
    assert row == (None,)


def test_null_year_is_null(catalog):
    con, _ = catalog
    lon, lat = pixel_lonlat(np.array([30]), np.array([30]))
    assert embedding(con, lon[0], lat[0], None) is None


def test_missing_file_fails_naming_it(catalog):
    con, tmp_path = catalog
    lon, lat = pixel_lonlat(np.array([30]), np.array([30]))
    with pytest.raises(Exception, match=r"RangeReadError: .*missing\.tif: file not found"):
        embedding(con, lon[0], lat[0], 2024)
    with pytest.raises(Exception, match="file not found"):
        con.execute("SELECT aef_sample(?, 15.0, 45.0)", [str(tmp_path / "nope.tif")]).fetchall()


def test_non_tiff_fails_naming_it(catalog):
    con, _ = catalog
    lon, lat = pixel_lonlat(np.array([30]), np.array([30]))
    with pytest.raises(Exception, match=r"TiffFormatError: .*not_a_tiff\.tif: not a TIFF file"):
        embedding(con, lon[0], lat[0], 2025)


def test_truncated_tiff_fails_naming_it(catalog):
    con, _ = catalog
    lon, lat = pixel_lonlat(np.array([39]), np.array([49]))
    with pytest.raises(Exception, match=r"truncated\.tif.*(shorter than|past the end)"):
        embedding(con, lon[0], lat[0], 2026)


def test_empty_points_table_gives_empty_result(catalog):
    con, _ = catalog
    con.execute("CREATE TABLE empty_points (id INTEGER, lon DOUBLE, lat DOUBLE)")
    result = con.execute("SELECT * FROM aef_sample_points('empty_points', year := 2023)")
    assert result.fetchall() == []
    assert [d[0] for d in result.description][:4] == ["id", "lon", "lat", "year"]
    assert len(result.description) == 4 + 64
    empty = aefsql.sample_points(
        pa.table({"lon": pa.array([], pa.float64()), "lat": pa.array([], pa.float64())}),
        year=2023,
        catalog=str(catalog[1] / "index.parquet"),
    )
    assert empty.num_rows == 0 and empty.column_names[:3] == ["lon", "lat", "year"]


def test_every_row_comes_back_once_in_order(catalog):
    con, _ = catalog
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
        expected = tuple(None if v == -128 else int(v) for v in DATA[[0, 63], row, col])
        assert by_key[(key, 2023)] == expected
        assert by_key[(key, 2030)] == (None, None)
    assert by_key[("g", 2023)] == by_key[("h", 2023)] == (None, None)


def test_sample_points_needs_a_year(catalog):
    con, _ = catalog
    con.execute("CREATE TABLE p AS SELECT 15.0 AS lon, 45.0 AS lat")
    with pytest.raises(Exception, match="pass years := 2024 or years := "):
        con.execute("SELECT * FROM aef_sample_points('p')").fetchall()


def test_unknown_band_is_a_clear_error(catalog):
    con, _ = catalog
    lon, lat = pixel_lonlat(np.array([30]), np.array([30]))
    con.execute("CREATE TABLE q AS SELECT ? AS lon, ? AS lat", [lon[0], lat[0]])
    with pytest.raises(Exception, match="unknown band name"):
        con.execute(
            "SELECT * FROM aef_sample_points('q', year := 2023, bands := ['A64'])"
        ).fetchall()


def test_python_sample_points_needs_a_year_and_known_columns(catalog):
    _, tmp_path = catalog
    table = pa.table({"lon": [15.0], "lat": [45.0]})
    index = str(tmp_path / "index.parquet")
    with pytest.raises(aefsql.AefsqlError, match="pass years := 2024"):
        aefsql.sample_points(table, catalog=index)
    with pytest.raises(aefsql.AefsqlError, match="points table has no column 'x'"):
        aefsql.sample_points(table, x_column="x", year=2023, catalog=index)
    with pytest.raises(aefsql.AefsqlError, match="pyarrow.Table or RecordBatchReader"):
        aefsql.sample_points({"lon": [1.0]}, year=2023, catalog=index)


def test_on_error_null_keeps_every_row_and_says_why(catalog):
    con, _ = catalog
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
    assert by_year[(1, 2023)] == (int(DATA[0, 30, 30]), None)
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
            con.sql(f"SELECT aef_sample('{path}', {lon[0]}, {lat[0]})").fetchall()
    finally:
        con.close()
