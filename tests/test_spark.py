"""aefsql.spark on a real Spark (local[2], task retries on) against the loopback S3 server:
the same rows as aefsql.sample_points, each once, whole tiles per task, retries without
duplicates."""

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from gdal_fixtures import COLLECTION_TILES
from helpers import band_matrix, gdal_values, tile_points

import aefsql
from aefsql.errors import AefsqlError

pytestmark = pytest.mark.spark

pyspark = pytest.importorskip("pyspark", minversion="4.1")
spark_api = pytest.importorskip("aefsql.spark")

YEARS = [2023, 2024]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    # local[2, 4]: two cores, and a failed task is tried up to 4 times, as on a cluster.
    session = (
        SparkSession.builder.master("local[2, 4]")
        .appName("aefsql-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        # small Arrow batches: a partition's tile groups span several batches
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "64")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("FATAL")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def points():
    """Points in each of the four tiles, with rows outside every tile, without coordinates
    and repeated."""
    parts = [tile_points(k, 50, seed=40 + k)[:2] for k in range(len(COLLECTION_TILES))]
    lon = np.concatenate([p[0] for p in parts] + [[0.0, 10.0, None, parts[0][0][0]]])
    lat = np.concatenate([p[1] for p in parts] + [[0.0, None, 45.0, parts[0][1][0]]])
    n = lon.size
    return pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "lon": pa.array(lon.tolist(), pa.float64()),
            "lat": pa.array(lat.tolist(), pa.float64()),
            "label": pa.array([f"p{i}" for i in range(n)]),
        }
    )


@pytest.fixture(scope="module")
def reference(points, s3_collection, s3_proxy):
    return aefsql.sample_points(
        points,
        years=YEARS,
        catalog=s3_collection.index,
        progress=False,
        storage_options=s3_proxy.storage_options,
    )


@pytest.fixture(scope="module")
def headers(s3_collection, s3_proxy, tmp_path_factory):
    """A headers file of the S3 collection's headers (a local file)."""
    path = str(tmp_path_factory.mktemp("spark") / "collection.parquet")
    aefsql.write_headers(
        path, catalog=s3_collection.index, storage_options=s3_proxy.storage_options
    )
    return path


def by_row(table: pa.Table) -> pa.Table:
    return table.sort_by([("id", "ascending"), ("year", "ascending")])


def assert_same_rows(got: pa.Table, expected: pa.Table) -> None:
    """The same columns, in order, and the same values row for row (each row once)."""
    assert got.column_names == expected.column_names
    got, expected = by_row(got), by_row(expected)
    for name in expected.column_names:
        assert got[name].to_pylist() == expected[name].to_pylist(), name


def test_dataframe_rows_equal_sample_points(spark, points, reference, s3_collection, s3_proxy):
    df = spark.createDataFrame(points)
    got = spark_api.sample_points(
        df, years=YEARS, catalog=s3_collection.index, storage_options=s3_proxy.storage_options
    ).toArrow()
    assert got.num_rows == points.num_rows * len(YEARS)
    keys = Counter(zip(got["id"].to_pylist(), got["year"].to_pylist(), strict=True))
    assert max(keys.values()) == 1
    assert_same_rows(got, reference)
    for name in ["year", "A00", "A63"]:  # Spark's types are DuckDB's
        assert got.schema.field(name).type == reference.schema.field(name).type
    # An independent check: GDAL's values at the points of tile 3 (alone in its zone), 2023.
    lon, lat, x, y = tile_points(3, 50, seed=43)
    mine = by_row(got).filter(pa.compute.equal(by_row(got)["year"], 2023)).slice(150, 50)
    assert mine["lon"].to_pylist() == lon.tolist()
    assert (band_matrix(mine) == gdal_values(s3_collection.folder, 2023, 3, x, y)).all()
    assert pa.compute.count(mine["A00"]).as_py() > 40  # most are valid pixels


def test_each_block_is_read_once_and_no_header_with_a_collection(
    spark, points, reference, s3_collection, s3_proxy, headers
):
    """With a collection, executors read no COG header; each (tile, year) is one task's, so
    each block is read once and the requests are those aef_sample_points plans."""
    con = aefsql.connect(catalog=s3_collection.index, storage_options=s3_proxy.storage_options)
    con.register("pts", points)
    planned = con.sql(
        "SELECT sum(requests) FROM aef_plan('pts', years := [2023, 2024])"
    ).fetchall()[0][0]
    s3_proxy.log.clear()
    got = spark_api.sample_points(
        spark.createDataFrame(points),
        years=YEARS,
        catalog=s3_collection.index,
        headers=headers,
        storage_options=s3_proxy.storage_options,
    ).toArrow()
    assert_same_rows(got, reference)
    reads = [(p, r) for m, p, r in s3_proxy.log.requests if m == "GET" and p.endswith(".tiff")]
    assert reads and max(Counter(reads).values()) == 1  # no range asked twice
    assert not [r for _, r in reads if r.startswith("bytes=0-")]  # no header read
    assert len(reads) <= planned


def test_a_failed_task_is_rerun_without_duplicate_rows(
    spark, points, reference, s3_collection, s3_proxy, headers
):
    """One task samples every tile in turn (partitions=1); the first read of the last tile
    is refused, after the task has yielded the rows of the others. Spark reruns the task; its
    partition comes back once. (With a collection no header is read: the refused read is
    the sampling's, not the locating's, which would find the file unreadable and move on.)"""
    last = sorted(
        f"{year}/{zone}/tile{k}-{0:010d}-{0:010d}.tiff"
        for year in YEARS
        for k, (zone, *_) in enumerate(COLLECTION_TILES)
    )[-1]
    context = spark.sparkContext
    context.setJobGroup("aefsql-retry", "a task that fails once")
    s3_proxy.faults.add(last, "403")
    s3_proxy.log.clear()
    try:
        got = spark_api.sample_points(
            spark.createDataFrame(points),
            years=YEARS,
            catalog=s3_collection.index,
            headers=headers,
            partitions=1,
            storage_options=s3_proxy.storage_options,
        ).toArrow()
    finally:
        context.setJobGroup("", "")
        s3_proxy.faults.planned.clear()
    assert [f for p, f in s3_proxy.faults.injected if p.endswith(last)][-1:] == ["403"]
    tracker = context.statusTracker()
    stages = [
        tracker.getStageInfo(s)
        for job in tracker.getJobIdsForGroup("aefsql-retry")
        for s in tracker.getJobInfo(job).stageIds
    ]
    assert sum(s.numFailedTasks for s in stages if s is not None) >= 1  # it did fail
    # The failed attempt had read other tiles before the refusal.
    paths = [p for m, p, _ in s3_proxy.log.requests if m == "GET" and p.endswith(".tiff")]
    refused = next(i for i, p in enumerate(paths) if p.endswith(last))
    assert {p for p in paths[:refused] if not p.endswith(last)}
    assert_same_rows(got, reference)


def test_on_error_null_marks_the_rows_of_an_unreadable_file(
    spark, points, reference, s3_collection, s3_proxy
):
    tile = "2024/33N/tile2-0000000000-0000000000.tiff"
    s3_proxy.faults.add(tile, "403", times=50)
    try:
        got = spark_api.sample_points(
            spark.createDataFrame(points),
            years=YEARS,
            catalog=s3_collection.index,
            on_error="null",
            storage_options=s3_proxy.storage_options,
        ).toArrow()
    finally:
        s3_proxy.faults.planned.clear()
    got = by_row(got)
    failed = pa.compute.is_valid(got["aef_error"]).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(failed)
    assert set(got["year"].take(rows).to_pylist()) == {2024}
    assert set(got["id"].take(rows).to_pylist()) == set(range(100, 150))  # tile 2's points
    assert all("access denied" in e for e in got["aef_error"].take(rows).to_pylist())
    assert got["A00"].take(rows).null_count == rows.size
    kept = got.filter(pa.array(~failed)).drop_columns(["aef_error"])
    expected = by_row(reference).filter(pa.array(~failed))
    assert_same_rows(kept, expected)


def test_geometry_points_in_a_projected_crs(spark, s3_collection, s3_proxy):
    _, epsg, *_ = COLLECTION_TILES[3]
    _, _, x, y = tile_points(3, 40, seed=7)
    wkb = [b"\x01\x01\x00\x00\x00" + np.array([a, b]).tobytes() for a, b in zip(x, y, strict=True)]
    points = pa.table({"id": pa.array(range(40), pa.int64()), "geom": pa.array(wkb)})
    options = dict(years=2023, geometry_column="geom", crs=epsg, bands=["A00", "A63"])
    expected = aefsql.sample_points(
        points,
        catalog=s3_collection.index,
        progress=False,
        **options,
        storage_options=s3_proxy.storage_options,
    )
    got = spark_api.sample_points(
        spark.createDataFrame(points),
        catalog=s3_collection.index,
        **options,
        storage_options=s3_proxy.storage_options,
    ).toArrow()
    assert got.column_names == ["id", "geom", "year", "A00", "A63"]
    assert_same_rows(got, expected)
    assert expected["A00"].null_count < 40
    spark_api.register(spark, s3_collection.index, storage_options=s3_proxy.storage_options)
    spark.createDataFrame(points).createOrReplaceTempView("aef_geoms")
    got = spark.sql(
        "SELECT * FROM aef_sample_points(TABLE(aef_geoms), years => 2023, "
        f"geometry_column => 'geom', crs => {epsg}, bands => array('A00', 'A63'))"
    ).toArrow()
    assert_same_rows(got, expected)


def test_spark_sql_functions(spark, points, reference, s3_collection, s3_proxy):
    spark_api.register(spark, s3_collection.index, storage_options=s3_proxy.storage_options)
    spark.createDataFrame(points).createOrReplaceTempView("aef_points")
    got = spark.sql(
        "SELECT * FROM aef_sample_points(TABLE(aef_points), years => array(2023, 2024), "
        "x_column => 'lon', y_column => 'lat')"
    ).toArrow()
    assert_same_rows(got, reference)
    located = (
        spark.sql("SELECT id, aef_locate(lon, lat, 2024) AS path FROM aef_points")
        .toArrow()
        .sort_by("id")
    )
    con = aefsql.connect(catalog=s3_collection.index, storage_options=s3_proxy.storage_options)
    con.register("pts", points)
    expected = con.sql("SELECT aef_locate(lon, lat, 2024) AS path FROM pts ORDER BY id")
    assert located["path"].to_pylist() == expected.to_arrow_table()["path"].to_pylist()
    vector = spark.sql(
        "SELECT id, year, embedding FROM aef_sample_points(TABLE(aef_points), years => 2024, "
        "as_vector => true) WHERE id < 5"
    ).toArrow()
    assert vector.num_rows == 5 and len(vector["embedding"][0]) == 64
    with pytest.raises(Exception, match="a year is an integer"):  # DuckDB's rule and message
        spark.sql("SELECT aef_locate(lon, lat, 2024.5) FROM aef_points").collect()


def test_bad_calls_fail_before_any_job(spark, points, s3_collection, s3_proxy):
    clash = spark.createDataFrame(points.append_column("year", pa.array([1] * len(points))))
    with pytest.raises(AefsqlError, match="year"):
        spark_api.sample_points(
            clash, years=2024, catalog=s3_collection.index, storage_options=s3_proxy.storage_options
        )
    ours = spark.createDataFrame(points.append_column("__aef_path", points["label"]))
    with pytest.raises(AefsqlError, match="__aef_path: names starting with __aef_"):
        spark_api.sample_points(
            ours, years=2024, catalog=s3_collection.index, storage_options=s3_proxy.storage_options
        )
    with pytest.raises(AefsqlError, match="on_error"):
        spark_api.sample_points(
            spark.createDataFrame(points),
            years=2024,
            on_error="skip",
            catalog=s3_collection.index,
            storage_options=s3_proxy.storage_options,
        )
    spark_api.register(spark, s3_collection.index, storage_options=s3_proxy.storage_options)
    spark.createDataFrame(points).createOrReplaceTempView("aef_points")
    with pytest.raises(Exception, match="no parameter colour"):
        spark.sql(
            "SELECT * FROM aef_sample_points(TABLE(aef_points), years => 2024, colour => 'red')"
        ).collect()
    # In Spark SQL's own syntax (it said `years := 2024`, DuckDB's)
    with pytest.raises(Exception, match=r"pass years => 2024 or years => array\(2023, 2024\)"):
        spark.sql("SELECT * FROM aef_sample_points(TABLE(aef_points))").collect()


def batch(tiles, years):
    return pa.RecordBatch.from_arrays(
        [pa.array(range(len(tiles))), pa.array(tiles, pa.string()), pa.array(years, pa.int32())],
        names=["i", spark_api.TILE, spark_api.YEAR],
    )


@pytest.fixture(scope="module")
def polygons():
    """Boxes inside each tile, one across tiles 1 and 2, one outside every tile, and none."""
    from aefsql.geometry.geo import box_wkb

    boxes = []
    for k in range(len(COLLECTION_TILES)):
        lon, lat, _, _ = tile_points(k, 3, seed=60 + k)
        boxes += [
            (a - 0.002, b - 0.001, a + 0.002, b + 0.001) for a, b in zip(lon, lat, strict=True)
        ]
    boxes.append((12.0, 45.0, 12.08, 45.01))  # tiles 1 and 2, and the gap between them
    boxes.append((0.0, 0.0, 0.01, 0.01))
    wkb = [box_wkb(*b) for b in boxes] + [None]
    return pa.table(
        {"pid": pa.array(range(len(wkb)), pa.int64()), "geom": pa.array(wkb, pa.binary())}
    )


def test_zonal_rows_equal_aef_zonal(spark, polygons, s3_collection, s3_proxy):
    con = aefsql.connect(catalog=s3_collection.index, storage_options=s3_proxy.storage_options)
    con.register("polys", polygons)
    expected = con.sql("SELECT * FROM aef_zonal('polys', years := [2023, 2024])").to_arrow_table()
    assert pa.compute.sum(expected["pixels"]).as_py() > 1000
    key = [("pid", "ascending"), ("year", "ascending")]
    got = spark_api.zonal(
        spark.createDataFrame(polygons),
        years=YEARS,
        catalog=s3_collection.index,
        partitions=3,
        storage_options=s3_proxy.storage_options,
    ).toArrow()
    assert got.column_names == expected.column_names
    got, expected = got.sort_by(key), expected.sort_by(key)
    for name in expected.column_names:
        assert got[name].to_pylist() == expected[name].to_pylist(), name
    spark_api.register(spark, s3_collection.index, storage_options=s3_proxy.storage_options)
    spark.createDataFrame(polygons).createOrReplaceTempView("aef_polygons")
    sql = (
        spark.sql("SELECT * FROM aef_zonal(TABLE(aef_polygons), years => array(2023, 2024))")
        .toArrow()
        .sort_by(key)
    )
    for name in expected.column_names:
        assert sql[name].to_pylist() == expected[name].to_pylist(), name


def test_groups_are_the_runs_of_one_tile_and_year_each_row_once():
    batches = [
        batch([None, None, "a"], [2023, 2024, 2024]),
        batch([], []),
        batch(["a", "a", "a", "b"], [2024, 2024, 2024, 2024]),
        batch(["b"], [2024]),
    ]
    groups = list(spark_api._groups(iter(batches), most=2))
    keys = [
        [
            (t, y)
            for t, y in zip(
                g[spark_api.TILE].to_pylist(), g[spark_api.YEAR].to_pylist(), strict=True
            )
        ]
        for g in groups
    ]
    assert keys == [
        [(None, 2023)],
        [(None, 2024)],
        [("a", 2024), ("a", 2024)],  # "a" spans three batches: split at most=2 rows
        [("a", 2024), ("a", 2024)],
        [("b", 2024), ("b", 2024)],
    ]
    rows = [i for g in groups for i in g["i"].to_pylist()]
    assert rows == [0, 1, 2, 0, 1, 2, 3, 0]  # every row once, in order


def test_partition_keys_need_no_read(gdal_collection, points):
    """Stage one locates by the catalog alone: no header is read (a transient failure
    could not change a row's key between attempts), here with storage that cannot be
    reached at all."""
    from types import SimpleNamespace

    session = aefsql.session.open_session(gdal_collection.index)
    tiles = session.catalog.tiles()
    shared = spark_api._Shared(
        "k",
        "s3://nowhere/index.parquet",
        {"endpoint_url": "http://127.0.0.1:9"},
        SimpleNamespace(value=tiles),
        None,
    )
    call = spark_api._checked_call("aef_sample_points", points.column_names, {"years": YEARS})
    out = pa.Table.from_batches(
        spark_api._locate_batches(spark_api._Job(shared, call), iter(points.to_batches()))
    )
    assert out.num_rows == points.num_rows * len(YEARS)
    exact = aefsql.duck.udfs.SessionUdfs(session).aef_locate(
        points["lon"], points["lat"], pa.array([2024] * len(points)), pa.array([4326] * len(points))
    )
    likely = out.filter(pa.compute.equal(out[spark_api.YEAR], 2024))[spark_api.TILE]
    # The catalog's UTM footprints decide as the rasters do: the likely tile is the tile.
    assert likely.to_pylist() == exact.to_pylist()
    assert likely.null_count < len(likely) / 2


def with_a_linestring(polygons: pa.Table) -> pa.Table:
    """Three of the polygons, then a LINESTRING (pid 1000): a geometry that is no area."""
    line = bytes.fromhex("010200000002000000") + bytes(32)
    bad = pa.table({"pid": pa.array([1000], pa.int64()), "geom": pa.array([line], pa.binary())})
    return pa.concat_tables([polygons.slice(0, 3), bad])


def test_zonal_on_error_null_as_aef_zonal(spark, polygons, s3_collection, s3_proxy):
    """aef_zonal's on_error in Spark too: a LINESTRING keeps its row, with its reason."""
    table = with_a_linestring(polygons)
    con = aefsql.connect(catalog=s3_collection.index, storage_options=s3_proxy.storage_options)
    con.register("polys", table)
    expected = con.sql(
        "SELECT * FROM aef_zonal('polys', years := 2024, on_error := 'null') ORDER BY pid"
    ).to_arrow_table()
    got = spark_api.zonal(
        spark.createDataFrame(table),
        years=2024,
        on_error="null",
        catalog=s3_collection.index,
        storage_options=s3_proxy.storage_options,
    ).toArrow()
    got = got.sort_by([("pid", "ascending")])
    assert got.column_names == expected.column_names and got.column_names[-1] == "aef_error"
    for name in expected.column_names:
        assert got[name].to_pylist() == expected[name].to_pylist(), name
    assert got["aef_error"].to_pylist()[-1]


def test_status_as_the_python_api_and_aef_zonal(spark, points, polygons, s3_collection, s3_proxy):
    """status=True in Spark gives each row-year the word the Python API and aef_zonal give:
    a year the catalog lacks, points in no tile, nodata, valid; a polygon that is no area."""
    run = dict(catalog=s3_collection.index, storage_options=s3_proxy.storage_options)
    table = points  # (with rows outside every tile and without coordinates)
    got = spark_api.sample_points(
        spark.createDataFrame(table), years=[2019, 2024], status=True, bands=["A00"], **run
    ).toArrow()
    expected = aefsql.sample_points(
        table, years=[2019, 2024], status=True, bands=["A00"], progress=False, **run
    )
    assert_same_rows(got, expected)
    assert set(got["status"].to_pylist()) >= {"no_year", "outside", "valid"}
    polys = with_a_linestring(polygons)
    con = aefsql.connect(catalog=s3_collection.index, storage_options=s3_proxy.storage_options)
    con.register("polys", polys)
    want = con.sql(
        "SELECT pid, year, status FROM aef_zonal('polys', years := [2019, 2024], "
        "on_error := 'null', status := true) ORDER BY pid, year"
    ).fetchall()
    zonal = spark_api.zonal(
        spark.createDataFrame(polys), years=[2019, 2024], on_error="null", status=True, **run
    ).toArrow()
    assert zonal.column_names[-1] == "status"
    rows = sorted(zip(*(zonal[c].to_pylist() for c in ("pid", "year", "status")), strict=True))
    assert rows == want and ("error" in {s for *_, s in want})
