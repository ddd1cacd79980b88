"""The SQL surface over a GDAL-written two-year collection, local, over S3 and over HTTP."""

import numpy as np
import pyarrow as pa
import pytest
from gdal_fixtures import COLLECTION_TILES, PIXEL, TILE_HEIGHT, TILE_WIDTH
from helpers import band_matrix, gdal_values, tile_points
from pyproj import Transformer

import aefsql
from aefsql.aef import BAND_NAMES, dequantize

STORES = ["local", "s3", "http"]


@pytest.fixture(scope="module", params=STORES)
def collection(request):
    name = {"local": "gdal_collection", "s3": "s3_collection", "http": "http_collection"}
    return request.getfixturevalue(name[request.param])


@pytest.fixture(scope="module")
def con(collection):
    con = aefsql.connect(catalog=collection.index, storage_options=collection.storage_options)
    yield con
    con.close()


def test_index_is_normalized(con, collection):
    table = con.sql("SELECT * FROM aef_index() ORDER BY fid").to_arrow_table()
    assert table.column_names == [
        "fid",
        "year",
        "path",
        "crs",
        "utm_zone",
        "wgs84_west",
        "wgs84_south",
        "wgs84_east",
        "wgs84_north",
        "utm_west",
        "utm_south",
        "utm_east",
        "utm_north",
        "geom",
    ]
    assert table.num_rows == 2 * len(COLLECTION_TILES)
    base = collection.index.rsplit("/", 1)[0]
    assert all(p.startswith(base + "/20") for p in table["path"].to_pylist())
    assert table["geom"].type == pa.binary()
    assert table["geom"][0].as_py()[:5] == b"\x01\x03\x00\x00\x00"  # WKB polygon
    # DuckDB's own reader reaches the same storage through the registered filesystem.
    count = con.sql(f"SELECT count(*) FROM read_parquet('{collection.index}')").fetchall()
    assert count == [(table.num_rows,)]


def test_sample_points_matches_gdal_in_every_tile(con, collection):
    parts = [tile_points(k, 150, seed=k) for k in range(len(COLLECTION_TILES))]
    lon = np.concatenate([p[0] for p in parts])
    lat = np.concatenate([p[1] for p in parts])
    points = pa.table({"id": np.arange(lon.size), "lon": lon, "lat": lat})
    con.register("points", points)
    out = con.sql(
        "SELECT * FROM aef_sample_points('points', years := [2023, 2024])"
    ).to_arrow_table()
    con.unregister("points")
    assert out.num_rows == 2 * lon.size
    assert out["id"].to_pylist() == [i for i in range(lon.size) for _ in (2023, 2024)]
    assert out.column_names == ["id", "lon", "lat", "year", *BAND_NAMES]
    tiles = reference_tiles(lon, lat)
    assert set(tiles) == set(range(len(COLLECTION_TILES)))
    assert (tiles != np.repeat(np.arange(len(parts)), 150)).any(), "no point in the seam overlap"
    values = band_matrix(out)
    for year_index, year in enumerate((2023, 2024)):
        expected = np.empty((lon.size, 64), dtype=np.int16)
        for k in set(tiles):
            chosen = tiles == k
            x, y = Transformer.from_crs(4326, COLLECTION_TILES[k][1], always_xy=True).transform(
                lon[chosen], lat[chosen]
            )
            expected[chosen] = gdal_values(collection.folder, year, k, x, y)
        assert np.array_equal(values[year_index::2], expected), year


def reference_tiles(lon, lat) -> np.ndarray:
    """The tile each point should be read from, worked out independently: the tiles whose
    raster contains it, its own UTM zone first."""
    chosen = np.full(lon.size, -1)
    own_zone = [
        f"{int((a + 180) // 6) + 1}{'N' if b >= 0 else 'S'}" for a, b in zip(lon, lat, strict=True)
    ]
    for i in range(lon.size):
        containing = []
        for k, (zone, epsg, x0, y0) in enumerate(COLLECTION_TILES):
            x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon[i], lat[i])
            if x0 <= x < x0 + TILE_WIDTH * PIXEL and y0 <= y < y0 + TILE_HEIGHT * PIXEL:
                containing.append((zone != own_zone[i], k))
        chosen[i] = min(containing)[1]
    return chosen


def test_canonical_join_and_embedding_agree(con):
    lon, lat, _, _ = tile_points(3, 50, seed=9)
    lon = np.r_[lon, 0.0, np.nan]
    lat = np.r_[lat, 0.0, 10.0]
    con.register("p", pa.table({"id": np.arange(lon.size), "lon": lon, "lat": lat}))
    joined = con.sql(
        "SELECT p.id, i.fid, unnest(aef_file_embedding(i.path, p.lon, p.lat)) FROM p "
        "JOIN aef_index() i ON i.year = 2024 AND i.path = aef_locate(p.lon, p.lat, 2024) "
        "ORDER BY p.id"
    ).to_arrow_table()
    left = con.sql(
        "SELECT p.id, unnest(aef_file_embedding(i.path, p.lon, p.lat)) FROM p "
        "LEFT JOIN aef_index() i ON i.year = 2024 AND i.path = aef_locate(p.lon, p.lat, 2024) "
        "ORDER BY p.id"
    ).to_arrow_table()
    direct = con.sql(
        "SELECT id, unnest(aef_embedding(lon, lat, 2024)) FROM p ORDER BY id"
    ).to_arrow_table()
    con.unregister("p")
    assert joined["id"].to_pylist() == list(range(50))  # outside points drop out of the join
    assert set(joined["fid"].to_pylist()) == {8}  # tile 3 of 2024
    assert left["id"].to_pylist() == list(range(52))  # ... and stay in the LEFT JOIN
    assert np.array_equal(band_matrix(left), band_matrix(direct))
    assert np.array_equal(band_matrix(joined), band_matrix(direct)[:50])
    assert (band_matrix(direct)[50:] == -999).all()


def test_python_sample_points_with_projected_coordinates(collection):
    _, _, x, y = tile_points(3, 40, seed=4)
    points = pa.table({"plot": [f"p{i}" for i in range(x.size)], "e": x, "n": y})
    out = aefsql.sample_points(
        points,
        x_column="e",
        y_column="n",
        year=2023,
        bands=["A00", "A63"],
        geometry_crs=32718,
        catalog=collection.index,
        storage_options=collection.storage_options,
    )
    assert out.column_names == ["plot", "e", "n", "year", "A00", "A63"]
    assert out["plot"].to_pylist() == points["plot"].to_pylist()
    expected = gdal_values(collection.folder, 2023, 3, x, y)[:, [0, 63]]
    got = np.stack([out[b].cast(pa.int16()).fill_null(-999).to_numpy() for b in ("A00", "A63")], 1)
    assert np.array_equal(got, expected)


def test_dequantize_and_vector(con):
    lon, lat, x, y = tile_points(2, 5, seed=1)
    con.register("p", pa.table({"lon": lon, "lat": lat}))
    rows = con.sql(
        "SELECT aef_embedding(lon, lat, 2023).A07 AS q, "
        "aef_dequantize(aef_embedding(lon, lat, 2023).A07) AS f, "
        "aef_vector(aef_embedding(lon, lat, 2023)) AS v FROM p"
    ).fetchall()
    con.unregister("p")
    for q, f, v in rows:
        expected = np.sign(q) * (abs(q) / 127.5) ** 2
        assert f == pytest.approx(expected, rel=1e-6)
        assert len(v) == 64 and v[7] == pytest.approx(expected, rel=1e-6)


def test_sql_and_python_dequantize_every_int8_alike(con):
    """aef_dequantize and aef_vector (SQL, their facts filled in from aef.py) give what
    aef.dequantize gives, for all 256 int8 values: nodata NULL (NaN in Python)."""
    values = np.arange(-128, 128, dtype=np.int8)
    con.register("q", pa.table({"v": values}))
    sql = con.sql("SELECT aef_dequantize(v) FROM q ORDER BY v").fetchnumpy()
    vector = con.sql(
        "SELECT aef_vector({" + ", ".join(f"{b}: v" for b in BAND_NAMES) + "}) FROM q ORDER BY v"
    ).fetchall()
    con.unregister("q")
    python = dequantize(values)
    got = np.ma.filled(next(iter(sql.values())).astype(np.float64), np.nan)
    assert np.allclose(got, python, rtol=1e-6, equal_nan=True)  # FLOAT in SQL
    assert vector[0][0] is None  # -128 in every band: nodata
    assert all(
        row[0] == pytest.approx([python[k + 1]] * 64, rel=1e-6) for k, row in enumerate(vector[1:])
    )


def test_python_sample_points_streams_record_batches(collection):
    lon, lat, _, _ = tile_points(0, 50, seed=12)
    table = pa.table({"id": np.arange(lon.size), "lon": lon, "lat": lat})
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=7))
    options = dict(
        year=[2023], catalog=collection.index, storage_options=collection.storage_options
    )
    streamed = aefsql.sample_points(reader, **options)
    assert streamed.equals(aefsql.sample_points(table, **options))
    assert streamed["id"].to_pylist() == list(range(50))


def test_arguments_of_any_numeric_type(con):
    """pandas gives BIGINT years, CSVs DECIMAL or INTEGER coordinates: all are accepted."""
    lon, lat, _, _ = tile_points(3, 1, seed=4)
    expected = con.sql(
        f"SELECT aef_embedding({lon[0]}::DOUBLE, {lat[0]}::DOUBLE, 2023::INTEGER) AS e"
    ).fetchall()
    assert expected[0][0] is not None
    typed = (
        f"{lon[0]:.6f}::DECIMAL(12, 6)",
        f"{lat[0]:.6f}::FLOAT",
        "2023::BIGINT",
    )
    for function in ("aef_embedding({}, {}, {})", "aef_locate({}, {}, {}) IS NOT NULL"):
        row = con.sql("SELECT " + function.format(*typed)).fetchall()
        assert row[0][0] not in (None, False), function
