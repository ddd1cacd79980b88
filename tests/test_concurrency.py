"""Thread safety: DuckDB's parallel UDF calls, and Python threads sharing one session's caches,
give exactly the single-threaded results."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
from helpers import TILES, points_in_every_tile, tile_points

import aefsql
from aefsql.kernels import points
from aefsql.kernels.engine import BlockEngine
from aefsql.storage.memory import BlockCache, HeaderCache
from aefsql.storage.store import ByteStore


def many_points(n_per_tile: int) -> pa.Table:
    lon, lat = [], []
    for k in range(len(TILES)):
        a, b, _, _ = tile_points(k, n_per_tile, seed=100 + k)
        lon.append(a)
        lat.append(b)
    lon, lat = np.concatenate(lon), np.concatenate(lat)
    order = np.random.default_rng(0).permutation(lon.size)  # files interleaved in every batch
    year = np.where(np.arange(lon.size) % 3 == 0, 2024, 2023)
    return pa.table({"id": np.arange(lon.size), "lon": lon[order], "lat": lat[order], "year": year})


def test_duckdb_parallel_udf_calls_equal_single_threaded(gdal_collection):
    points = many_points(40_000)  # 160,000 rows: DuckDB splits the scan between its threads
    query = "SELECT id, aef_embedding(lon, lat, year) AS e FROM points ORDER BY id"
    results = {}
    for threads in (1, 4):
        con = aefsql.connect(catalog=gdal_collection.index)
        try:
            con.execute(f"SET threads = {threads}")
            con.register("arrow_points", points)
            # A DuckDB table (two row groups): its scan runs on several threads, which call
            # the UDF at the same time (measured: two at once on two cores).
            con.execute("CREATE TABLE points AS SELECT * FROM arrow_points")
            results[threads] = con.sql(query).to_arrow_table()
        finally:
            con.close()
    assert results[4]["id"].to_pylist() == list(range(points.num_rows))
    assert results[4].equals(results[1])
    assert results[1]["e"].null_count == 0  # every point is in a tile of its year


def test_python_threads_sharing_one_sampler_and_small_caches(gdal_collection):
    """Eight threads sample overlapping files at once through one BlockEngine whose block cache
    holds a few blocks and header cache one header: entries are evicted under their feet."""
    urls = np.array([str(gdal_collection.folder / t) for t in TILES], object)
    tile, lon, lat = points_in_every_tile()
    expected = points.sample(BlockEngine(ByteStore()), urls[tile], lon, lat)
    shared = BlockEngine(
        ByteStore(), header_cache=HeaderCache(max_bytes=1), blocks=BlockCache(max_bytes=200_000)
    )

    def run(seed: int):
        order = np.random.default_rng(seed).permutation(lon.size)
        got = points.sample(shared, urls[tile][order], lon[order], lat[order])
        back = np.argsort(order)
        return got.values[back], got.covered[back]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(run, range(32)))
    for values, covered in outcomes:
        assert np.array_equal(values, expected.values)
        assert np.array_equal(covered, expected.covered)


def test_cursors_in_threads_each_get_their_rows(gdal_collection):
    con = aefsql.connect(catalog=gdal_collection.index)
    # Its own `year` column would clash with the one aef_sample_points adds.
    points = many_points(500).drop_columns(["year"])
    con.register("points", points)
    query = "SELECT * FROM aef_sample_points('points', year := 2023, bands := ['A00', 'A63'])"
    expected = con.sql(query).to_arrow_table()

    def run(_):
        cursor = con.cursor()
        try:
            aefsql.register(cursor, catalog=gdal_collection.index)
            cursor.register("points", points)
            return cursor.sql(query).to_arrow_table()
        finally:
            cursor.close()

    try:
        with ThreadPoolExecutor(4) as pool:
            for got in pool.map(run, range(8)):
                assert got["id"].to_pylist() == list(range(points.num_rows))
                assert np.array_equal(band_matrix_of(got), band_matrix_of(expected))
    finally:
        con.close()


def band_matrix_of(table: pa.Table) -> np.ndarray:
    return np.stack([table[b].cast(pa.int16()).fill_null(-999).to_numpy() for b in ("A00", "A63")])
