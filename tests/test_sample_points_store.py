"""aef_sample_points samples into a per-query store and reads it back in input order
(aefsql/duck/sampled.py): many rows over several DuckDB threads come back in input order,
year by year, with GDAL's values; each value is read once whatever the outer query filters;
a store is let go once read, or, when its query stopped early, once idle."""

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import band_matrix, gdal_values, tile_points

from aefsql.duck import sampled
from aefsql.duck.registration import install
from aefsql.duck.udfs import SessionUdfs
from aefsql.errors import AefsqlError
from aefsql.session import open_session

TILES = (2, 3)  # tiles whose points have no other owner (no overlap, own zone)


@pytest.fixture
def connection(gdal_collection):
    """A connection with 12,000 shuffled points (many DuckDB vectors, four threads) as
    `points`, and the session UDFs whose stores the tests look at."""
    udfs = SessionUdfs(open_session(gdal_collection.index))
    con = duckdb.connect()
    install(con, udfs)
    con.execute("SET threads = 4")
    parts = [tile_points(k, 6000, seed=10 + k) for k in TILES]
    tile = np.repeat(np.arange(len(TILES)), 6000)
    lon, lat, x, y = (np.concatenate([p[i] for p in parts]) for i in range(4))
    order = np.random.default_rng(7).permutation(tile.size)
    lon[order[:3]] = np.nan  # invalid: NULL bands
    points = pa.table({"id": np.arange(tile.size), "lon": lon[order], "lat": lat[order]})
    con.register("points", points)
    yield con, udfs, tile[order], x[order], y[order]
    con.close()


def expected_bands(folder, tile, x, y, year) -> np.ndarray:
    """GDAL's values of each point (-999: NULL), in input order."""
    values = np.full((tile.size, 64), -999, dtype=np.int16)
    for i, k in enumerate(TILES):
        at = np.flatnonzero(tile == i)
        values[at] = gdal_values(folder, year, k, x[at], y[at])
    return values


def test_many_rows_come_back_in_input_order_with_gdals_values(
    connection, gdal_collection, tmp_path
):
    con, udfs, tile, x, y = connection
    query = "FROM aef_sample_points('points', years := [2024, 2023])"
    path = tmp_path / "points.parquet"
    con.execute(f"COPY ({query}) TO '{path}' (FORMAT parquet)")
    for got in (pq.read_table(path), con.sql(query).to_arrow_table()):
        n = tile.size
        assert got["id"].to_pylist() == np.repeat(np.arange(n), 2).tolist()
        assert got["year"].to_pylist() == [2023, 2024] * n
        for k, year in enumerate((2023, 2024)):
            expected = expected_bands(gdal_collection.folder, tile, x, y, year)
            expected[:3] = -999  # the NaN coordinates
            rows = got.take(np.arange(k, 2 * n, 2))
            np.testing.assert_array_equal(band_matrix(rows), expected)
    assert udfs.sampled._stores == {}  # each store let go once read


def test_a_filter_on_a_band_reads_each_value_once(connection):
    con, udfs, *_ = connection
    everything = con.sql("FROM aef_sample_points('points', years := 2023)").to_arrow_table()
    kept = con.sql(
        "FROM aef_sample_points('points', years := 2023) WHERE A00 > 0 AND A63 < 0"
    ).to_arrow_table()
    a00, a63 = everything["A00"].to_numpy(zero_copy_only=False), everything["A63"]
    wanted = np.flatnonzero((a00 > 0) & (a63.to_numpy(zero_copy_only=False) < 0))
    assert 0 < wanted.size < everything.num_rows
    assert kept.equals(everything.take(wanted))
    assert udfs.sampled._stores == {}


def test_a_query_stopped_early_leaves_its_store_until_it_is_idle(connection, monkeypatch):
    con, udfs, *_ = connection
    query = "SELECT id, A00 FROM aef_sample_points('points', years := 2023) LIMIT 5"
    first = con.sql(query).fetchall()
    assert [row[0] for row in first] == [0, 1, 2, 3, 4]
    assert len(udfs.sampled._stores) == 1  # read in part: kept
    monkeypatch.setattr(sampled, "IDLE_SECONDS", 0.0)
    again = con.sql(query).fetchall()
    assert again == first
    assert len(udfs.sampled._stores) == 1  # the idle one dropped, the new one kept


def test_a_store_let_go_says_so():
    stores = sampled.SampledStores()
    number = stores.open(2, [2023], [0], [])
    stores.read(number, np.array([0, 1]))
    with pytest.raises(AefsqlError, match="no longer held.*run it again"):
        stores.read(number, np.array([0]))


def test_a_region_handed_back_is_never_read_as_zeros():
    stores = sampled.SampledStores()
    number = stores.open(sampled.REGION_POSITIONS + 10, [2023], [0, 1], [])
    stores.read(number, np.arange(sampled.REGION_POSITIONS))  # the first region, in full
    with pytest.raises(AefsqlError, match="read a row's sampled values twice"):
        stores.read(number, np.array([0]))
