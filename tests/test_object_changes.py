"""A file replaced while aefsql reads it, or between two queries: every result comes from one
version of the file, never a mix, and a file that keeps changing fails clearly."""

import contextlib
import dataclasses
import itertools
import os
import uuid

import numpy as np
import pyarrow as pa
import pytest
import rasterio
import tifffile
from gdal_fixtures import collection_layout, collection_path, write_collection, write_layout
from helpers import band_matrix, tile_points
from servers import http_range_server

import aefsql

K = 3  # the tile that changes
TILE = collection_path(2023, K)
HEAD = "bytes=0-65535"  # the header read


@dataclasses.dataclass
class Versions:
    folder: object  # the collection, holding version 1 of TILE
    v1: bytes
    v2: bytes  # same place, other values and another block size and codec
    points: pa.Table
    expected_v1: np.ndarray
    expected_v2: np.ndarray


def gdal_sample(path, x, y) -> np.ndarray:
    with rasterio.open(path) as ds:
        values = np.array(list(ds.sample(zip(x, y, strict=True)))).astype(np.int16)
    return np.where(values == -128, -999, values)


@pytest.fixture
def versions(tmp_path) -> Versions:
    folder = tmp_path / "collection"
    write_collection(folder, years=(2023,))
    layout = dataclasses.replace(collection_layout(K), block=64, compression="deflate")
    v2 = write_layout(tmp_path / "v2", layout, seed=777, name="tile.tiff")
    lon, lat, x, y = tile_points(K, 30, seed=5)
    expected_v1 = gdal_sample(folder / TILE, x, y)
    expected_v2 = gdal_sample(v2, x, y)
    assert not np.array_equal(expected_v1, expected_v2)
    points = pa.table({"id": list(range(30)), "lon": lon, "lat": lat})
    return Versions(
        folder, (folder / TILE).read_bytes(), v2.read_bytes(), points, expected_v1, expected_v2
    )


@dataclasses.dataclass
class Served:
    index: str
    storage_options: dict
    faults: object  # servers.Faults, or None for local files
    log: object
    replace: object  # replace(data): the file is replaced by data


@contextlib.contextmanager
def served(transport: str, versions: Versions, request):
    folder = versions.folder

    def replace_file(data):
        temporary = folder / "replacement.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, folder / TILE)

    if transport == "local":
        yield Served(str(folder / "index.parquet"), {}, None, None, replace_file)
    elif transport.startswith("http"):
        honours = transport == "http"
        with http_range_server(folder, honours_conditions=honours) as server:
            index = f"{server.base_url}index.parquet"
            yield Served(index, {}, server.faults, server.log, replace_file)
    else:
        s3, proxy = request.getfixturevalue("s3"), request.getfixturevalue("s3_proxy")
        bucket = f"changes-{uuid.uuid4().hex[:8]}"
        s3.upload_folder(folder, bucket)
        client = s3.client()
        proxy.log.clear()
        try:
            yield Served(
                f"s3://{bucket}/index.parquet",
                proxy.storage_options,
                proxy.faults,
                proxy.log,
                lambda data: client.put_object(Bucket=bucket, Key=TILE, Body=data),
            )
        finally:
            proxy.faults.planned.clear()


def reads_before_blocks(where: Served, versions: Versions) -> int:
    """How many GETs of the tile a fault-free run makes before its first read of pixel data
    (header and block-table reads), told by the block offsets tifffile finds in the file."""
    with tifffile.TiffFile(versions.folder / TILE) as tiff:
        offsets = np.asarray(tiff.pages[0].dataoffsets)
    where.log.clear()
    sample(where, versions.points)
    for count, byte_range in enumerate(where.log.ranges(TILE)):
        first = int(byte_range.removeprefix("bytes=").split("-")[0])
        if (offsets == first).any():  # header reads may hold blocks, but start elsewhere
            return count
    raise AssertionError("no block read")


def sample(where: Served, points, **options) -> pa.Table:
    return aefsql.sample_points(
        points,
        year=2023,
        catalog=where.index,
        progress=False,
        storage_options=where.storage_options,
        **options,
    )


@pytest.mark.parametrize("transport", ["http", "http_ignoring_conditions", "s3"])
def test_a_file_replaced_mid_query_is_read_again_whole(versions, transport, request):
    """The file changes after its header was read, before its blocks: the blocks' request
    is refused (If-Match) or answered with a new ETag, and sampling starts over from the new
    header: every row holds version 2's values, none a mix."""
    with served(transport, versions, request) as where:
        where.faults.add(TILE, "pass", times=reads_before_blocks(where, versions))
        where.faults.add(TILE, lambda: where.replace(versions.v2))  # at the first block read
        where.log.clear()
        got = sample(where, versions.points)
        assert where.faults.planned == []
        assert np.array_equal(band_matrix(got), versions.expected_v2)
        assert got["id"].to_pylist() == list(range(30))
        header_reads = [r for r in where.log.ranges(TILE) if r == HEAD]
        assert len(header_reads) == 2  # once for version 1, once for version 2


@pytest.mark.parametrize("transport", ["local", "http", "s3"])
def test_a_file_replaced_between_queries_is_not_read_with_its_old_header(
    versions, transport, request, tmp_path
):
    with served(transport, versions, request) as where:
        con = aefsql.connect(catalog=where.index, storage_options=where.storage_options)
        collection = str(tmp_path / "collection.parquet")
        aefsql.write_headers(collection, catalog=where.index, storage_options=where.storage_options)
        with_collection = aefsql.connect(
            catalog=where.index, headers=collection, storage_options=where.storage_options
        )
        try:
            for connection in (con, with_collection):
                connection.register("points", versions.points)
            query = "SELECT * FROM aef_sample_points('points', year := 2023) ORDER BY id"
            first = con.sql(query).to_arrow_table()
            assert np.array_equal(band_matrix(first), versions.expected_v1)
            where.replace(versions.v2)
            for connection in (con, with_collection):  # a cached header; a stale collection
                again = connection.sql(query).to_arrow_table()
                assert np.array_equal(band_matrix(again), versions.expected_v2)
        finally:
            con.close()
            with_collection.close()


@pytest.mark.parametrize("transport", ["http", "s3"])
def test_a_file_that_keeps_changing_fails_clearly(versions, transport, request):
    with served(transport, versions, request) as where:
        # Each read of a block finds a new version (padding at the end keeps the file valid).
        new_versions = (versions.v1 + bytes(k) for k in itertools.count(1))
        header_reads = reads_before_blocks(where, versions)
        where.faults.add(TILE, "pass", times=header_reads)
        where.faults.add(TILE, lambda: where.replace(next(new_versions)), times=100)
        with pytest.raises(Exception, match=r"tile3-.*changed while being read.*3 times in a row"):
            sample(where, versions.points)
        where.faults.planned.clear()
        where.faults.add(TILE, "pass", times=header_reads)
        where.faults.add(TILE, lambda: where.replace(next(new_versions)), times=100)
        got = sample(where, versions.points, on_error="null")
        assert got["id"].to_pylist() == list(range(30))  # every row, once
        assert got["A00"].null_count == 30
        assert all("changed while being read" in e for e in got["aef_error"].to_pylist())


@pytest.mark.parametrize("transport", ["http", "s3"])
@pytest.mark.parametrize("headers_from", ["files", "collection"])
def test_a_file_replaced_between_runs_is_not_served_from_the_disk_cache(
    versions, transport, headers_from, request, tmp_path, monkeypatch
):
    """With cache_dir, byte ranges and sampled values are kept per file version. After the
    file is replaced, a run gets version 2's values, never the kept ones of version 1: on a
    new connection (the version comes from the file, or from a collection written before the
    change) and on the same one once its versions are due to be asked again."""
    from aefsql.storage import store as io

    cache = str(tmp_path / "cache")
    with served(transport, versions, request) as where:
        collection = None
        if headers_from == "collection":
            collection = str(tmp_path / "collection.parquet")
            aefsql.write_headers(
                collection, catalog=where.index, storage_options=where.storage_options
            )

        def connect():
            con = aefsql.connect(
                catalog=where.index,
                headers=collection,
                cache_dir=cache,
                storage_options=where.storage_options,
            )
            con.register("points", versions.points)
            return con

        query = "SELECT * FROM aef_sample_points('points', year := 2023) ORDER BY id"
        lasting = connect()
        try:
            for _ in range(2):  # the second run from the cache
                first = lasting.sql(query).to_arrow_table()
                assert np.array_equal(band_matrix(first), versions.expected_v1)
            where.replace(versions.v2)
            fresh = connect()
            try:
                again = fresh.sql(query).to_arrow_table()
            finally:
                fresh.close()
            assert np.array_equal(band_matrix(again), versions.expected_v2)
            monkeypatch.setattr(io, "VERSION_SECONDS", 0.0)  # the same connection, later on
            again = lasting.sql(query).to_arrow_table()
            assert np.array_equal(band_matrix(again), versions.expected_v2)
        finally:
            lasting.close()
