"""Headers from a collection Rasteret 0.4.1 wrote itself (tests/fixtures/rasteret, made by
make_fixture.py there): equal to the files' own, and sampling with them reads no COG header
and gives GDAL's values, in Rasteret's export layout and in the published sharded one."""

import contextlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from helpers import (
    HEADER_FIELDS,
    RASTERET_FILES,
    RASTERET_FIXTURE,
    rasteret_gdal,
    rasteret_points,
    rasteret_values,
    with_rasteret_fixture,
)

import aefsql
from aefsql.session import open_session

BUCKET = "rasteret"


@pytest.fixture(scope="module")
def store(s3, s3_proxy, tmp_path_factory):
    """In a bucket: the fixture collection (collection/), a catalog of its two files
    (index.parquet) and the same records as a published collection: published/index.parquet
    naming a shard a year under published/data/."""
    root = with_rasteret_fixture(tmp_path_factory.mktemp("rasteret"))
    (root / "published" / "data").mkdir(parents=True)
    index = []
    for k, year in enumerate(RASTERET_FILES):
        records = pq.read_table(next((RASTERET_FIXTURE / f"year={year}").rglob("*.parquet")))
        absolute = [f"s3://{BUCKET}/collection/{p}" for p in records["path"].to_pylist()]
        records = records.set_column(
            records.schema.get_field_index("path"), "path", pa.array(absolute)
        )
        part = f"data/part-{k:05d}.parquet"
        pq.write_table(records, root / "published" / part)
        index += [
            {"id": i, "path": p, "source_part": part}
            for i, p in zip(records["id"].to_pylist(), absolute, strict=True)
        ]
    pq.write_table(pa.Table.from_pylist(index), root / "published" / "index.parquet")
    s3.upload_folder(root, BUCKET)
    return root


def test_rasteret_headers_are_the_files_own(gdal_collection):
    """Every field, and both block tables in full, as aefsql parses them from the files."""
    session = open_session(gdal_collection.index, headers=str(RASTERET_FIXTURE))
    headers = session.engine.headers.file
    assert len(headers) == 2
    for name in RASTERET_FILES.values():
        path = str(RASTERET_FIXTURE / "tiffs" / name)
        theirs = headers.get(path)
        session.engine.headers.file = None  # now from the file itself
        own = session.engine.headers.complete([path])[path]
        session.engine.headers.file = headers
        for field in HEADER_FIELDS:
            assert getattr(theirs, field) == getattr(own, field), (name, field)
            assert theirs.transform.south_up == (name == RASTERET_FILES[2023])  # as the file is
        for table in ("block_offsets", "block_byte_counts"):
            assert np.array_equal(getattr(theirs, table).values, getattr(own, table).values)


def test_sampling_with_the_export_layout_reads_no_header(store, s3_proxy):
    s3_proxy.log.clear()
    for year in RASTERET_FILES:
        table, x, y = rasteret_points(year)
        got = aefsql.sample_points(
            table,
            years=year,
            catalog=f"s3://{BUCKET}/index.parquet",
            headers=f"s3://{BUCKET}/collection",
            progress=False,
            storage_options=s3_proxy.storage_options,
        )
        assert (rasteret_values(got) == rasteret_gdal(year, x, y)).all()
        assert 0 < pc.count(got["A00"]).as_py() < len(table)  # values and nodata
    tiffs = [r for m, p, r in s3_proxy.log.requests if m == "GET" and p.endswith(".tif")]
    assert tiffs and not [r for r in tiffs if r.startswith("bytes=0-")]


def test_published_layout_reads_only_the_shards_it_needs(store, s3_proxy):
    table, x, y = rasteret_points(2024, seed=3)
    s3_proxy.log.clear()
    got = aefsql.sample_points(
        table,
        years=2024,
        catalog=f"s3://{BUCKET}/index.parquet",
        headers=f"s3://{BUCKET}/published/index.parquet",
        progress=False,
        storage_options=s3_proxy.storage_options,
    )
    assert (rasteret_values(got) == rasteret_gdal(2024, x, y)).all()
    gets = [p for m, p, _ in s3_proxy.log.requests if m == "GET"]
    assert any(p.endswith("published/data/part-00001.parquet") for p in gets)  # 2024's
    assert not any(p.endswith("published/data/part-00000.parquet") for p in gets)  # 2023's
    tiffs = [r for m, p, r in s3_proxy.log.requests if m == "GET" and p.endswith(".tif")]
    assert tiffs and not [r for r in tiffs if r.startswith("bytes=0-")]


def test_untrusted_records_fall_back_to_the_files(store, s3, s3_proxy, tmp_path):
    """A shard outside the collection's folder is not read, and a record missing a band is
    not used: those files' headers are read from the files, and values stay GDAL's."""
    index = pq.read_table(store / "published" / "index.parquet")
    parts = ["../collection/year=2023/month=1/part-0.parquet", "data/part-00001.parquet"]
    hostile = index.set_column(2, "source_part", pa.array(parts))
    shard = pq.read_table(store / "published" / "data" / "part-00001.parquet")
    column = shard.schema.get_field_index("A05_metadata")
    broken = shard.set_column(column, "A05_metadata", pa.nulls(1, shard.schema.field(column).type))
    folder = tmp_path / "hostile"
    (folder / "data").mkdir(parents=True)
    pq.write_table(hostile, folder / "index.parquet")
    pq.write_table(broken, folder / "data" / "part-00001.parquet")
    s3.upload_folder(folder, "rasteret-hostile")
    session = open_session(
        f"s3://{BUCKET}/index.parquet",
        headers="s3://rasteret-hostile/index.parquet",
        storage_options=s3_proxy.storage_options,
    )
    assert len(session.engine.headers.file) == 1  # the shard outside is not even named
    northup = f"s3://{BUCKET}/collection/tiffs/{RASTERET_FILES[2024]}"
    with pytest.warns(UserWarning, match=r"2024-northup\.tif: 63 band structs for 64 planes"):
        assert session.engine.headers.file.get(northup) is None
    for year in RASTERET_FILES:
        table, x, y = rasteret_points(year, seed=5)
        s3_proxy.log.clear()
        broken_record = pytest.warns(UserWarning, match=r"2024-northup\.tif: 63 band structs")
        with broken_record if year == 2024 else contextlib.nullcontext():
            got = aefsql.sample_points(
                table,
                years=year,
                catalog=f"s3://{BUCKET}/index.parquet",
                headers="s3://rasteret-hostile/index.parquet",
                progress=False,
                storage_options=s3_proxy.storage_options,
            )
        assert (rasteret_values(got) == rasteret_gdal(year, x, y)).all()
        heads = [
            r
            for m, p, r in s3_proxy.log.requests
            if m == "GET" and p.endswith(".tif") and r.startswith("bytes=0-")
        ]
        assert heads  # its header was read from the file
