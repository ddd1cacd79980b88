"""Headers files: written once (aef_headers with COPY, write_headers, `aefsql write-headers`),
then sampling reads no COG header; and the deprecated names of 0.1 still work, warning."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import HEADER_FIELDS, tile_points, tile_ranges_of

import aefsql
from aefsql.cli import main
from aefsql.headers.table import header_from_row, headers_to_table
from aefsql.kernels.engine import BlockEngine
from aefsql.storage.store import ByteStore


def test_headers_round_trip_through_a_table(gdal_collection):
    paths = sorted(str(p) for p in gdal_collection.folder.rglob("*.tiff"))
    headers = BlockEngine(ByteStore()).headers.complete(paths)
    back = {row["path"]: header_from_row(row) for row in headers_to_table(headers).to_pylist()}
    assert set(back) == set(paths)
    for path in paths:
        a, b = headers[path], back[path]
        assert a.block_offsets.tolist() == b.block_offsets.tolist()
        assert a.block_byte_counts.tolist() == b.block_byte_counts.tolist()
        for field in HEADER_FIELDS:
            assert getattr(a, field) == getattr(b, field), field


def write_with_copy(catalog: str, target) -> None:
    """The headers file as SQL writes it: COPY (FROM aef_headers(…)) TO '…'."""
    with aefsql.connect(catalog=catalog) as con:
        con.execute(f"COPY (FROM aef_headers(years := [2023])) TO '{target}'")


@pytest.mark.parametrize("how", ["sql", "python"])
def test_sampling_with_a_headers_file_reads_no_header(http_collection, http_server, tmp_path, how):
    built = tmp_path / "headers.parquet"
    if how == "sql":
        write_with_copy(http_collection.index, built)
    else:
        assert aefsql.write_headers(str(built), catalog=http_collection.index, years=[2023]) == 4
    assert pq.read_table(built).num_rows == 4
    lon, lat, _, _ = tile_points(3, 30, seed=6)
    points = pa.table({"lon": lon, "lat": lat})
    plain = aefsql.sample_points(points, year=2023, catalog=http_collection.index)
    http_server.log.clear()
    ready = aefsql.sample_points(
        points, year=2023, catalog=http_collection.index, headers=str(built)
    )
    assert ready.equals(plain)
    ranges = tile_ranges_of(http_server.log, "2023/18S/tile3-0000000000-0000000000.tiff")
    assert ranges and (0, 65536) not in ranges  # blocks only: the header came from the file


def test_aef_headers_rows_are_write_headers_rows(gdal_collection, tmp_path):
    """The table SQL copies holds what the Python call writes, row for row, and each row
    reads back as its file's header."""
    written = tmp_path / "python.parquet"
    aefsql.write_headers(str(written), catalog=gdal_collection.index, years=[2023])
    copied = tmp_path / "sql.parquet"
    write_with_copy(gdal_collection.index, copied)
    a, b = pq.read_table(written), pq.read_table(copied)
    assert a.column_names == b.column_names
    assert a.to_pylist() == b.to_pylist()
    for row in b.to_pylist():
        assert header_from_row(row).block_offsets.size == len(row["block_offsets"])


def test_write_headers_command(gdal_collection, tmp_path, capsys):
    out = tmp_path / "c.parquet"
    assert main(["write-headers", "-o", str(out), "--catalog", gdal_collection.index]) == 0
    assert "headers of 8 files" in capsys.readouterr().out
    rows = pq.read_table(out)
    assert rows.num_rows == 8 and np.all(np.array(rows["samples_per_pixel"]) == 64)
    # a year the catalog lacks is said (it wrote "headers of 4 files" and nothing else)
    args = ["write-headers", "-o", str(out), "--years", "2019,2023"]
    assert main([*args, "--catalog", gdal_collection.index]) == 0
    said = capsys.readouterr()
    assert "headers of 4 files" in said.out
    assert "aefsql: warning: the catalog has no tile of year(s) 2019" in said.err


# -- 0.1's names, deprecated for one release -------------------------------------------------


def test_the_old_names_still_work_and_warn(gdal_collection, tmp_path, monkeypatch, capsys):
    index = gdal_collection.index
    old = tmp_path / "old.parquet"
    with pytest.warns(DeprecationWarning, match="write_headers"):
        assert aefsql.build_collection(str(old), catalog=index, years=[2023]) == 4
    with aefsql.connect(catalog=index) as con:
        with pytest.warns(DeprecationWarning, match="aef_headers"):
            ((files,),) = con.execute(
                f"SELECT aef_build_collection('{tmp_path / 'sql.parquet'}', years := 2023)"
            ).fetchall()
        assert files == 4
        lon, lat, _, _ = tile_points(3, 5, seed=1)
        path = con.execute("SELECT aef_locate(?, ?, 2023)", [lon[0], lat[0]]).fetchall()[0][0]
        new, old_name = (
            con.execute(f"SELECT {f}(?, ?, ?)", [path, lon[0], lat[0]]).fetchall()
            for f in ("aef_file_embedding", "aef_sample")
        )
        assert new == old_name and new[0][0] is not None
    with pytest.warns(DeprecationWarning, match="collection= is deprecated"):
        aefsql.connect(catalog=index, collection=str(old)).close()
    with pytest.raises(aefsql.AefsqlError, match="not both"), pytest.warns(DeprecationWarning):
        aefsql.connect(catalog=index, headers=str(old), collection=str(tmp_path / "x.parquet"))
    monkeypatch.setenv("AEFSQL_COLLECTION", str(old))
    with pytest.warns(DeprecationWarning, match=r"\$AEFSQL_COLLECTION is deprecated"):
        aefsql.connect(catalog=index).close()
    monkeypatch.delenv("AEFSQL_COLLECTION")
    out = tmp_path / "cli.parquet"
    assert main(["build-collection", "-o", str(out), "--catalog", index]) == 0
    assert "build-collection is deprecated" in capsys.readouterr().err
    assert pq.read_table(out).num_rows == 8
