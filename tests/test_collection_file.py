"""Read-ready collections: built once, then sampling reads no COG header."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from test_collection import tile_points
from test_requests import tile_ranges_of

import aefsql
from aefsql.cli import main
from aefsql.headers.table import headers_from_table, headers_to_table
from aefsql.kernels.engine import BlockEngine
from aefsql.storage.store import ByteStore

# Every field of an ImageHeader but its block tables (compared apart).
HEADER_FIELDS = (
    "width",
    "height",
    "block_width",
    "block_height",
    "samples_per_pixel",
    "dtype",
    "planar_separate",
    "compression",
    "predictor",
    "transform",
    "epsg",
    "nodata",
    "tiled",
)


def test_headers_round_trip_through_a_table(gdal_collection):
    paths = sorted(str(p) for p in gdal_collection.folder.rglob("*.tiff"))
    headers = BlockEngine(ByteStore()).headers.complete(paths)
    back = headers_from_table(headers_to_table(headers))
    assert set(back) == set(paths)
    for path in paths:
        a, b = headers[path], back[path]
        assert a.block_offsets.tolist() == b.block_offsets.tolist()
        assert a.block_byte_counts.tolist() == b.block_byte_counts.tolist()
        for field in HEADER_FIELDS:
            assert getattr(a, field) == getattr(b, field), field


def test_sampling_with_a_collection_reads_no_header(http_collection, http_server, tmp_path):
    built = tmp_path / "collection.parquet"
    assert aefsql.build_collection(str(built), catalog=http_collection.index, years=[2023]) == 4
    lon, lat, _, _ = tile_points(3, 30, seed=6)
    points = pa.table({"lon": lon, "lat": lat})
    plain = aefsql.sample_points(points, year=2023, catalog=http_collection.index)
    http_server.log.clear()
    ready = aefsql.sample_points(
        points, year=2023, catalog=http_collection.index, collection=str(built)
    )
    assert ready.equals(plain)
    ranges = tile_ranges_of(http_server.log, "2023/18S/tile3-0000000000-0000000000.tiff")
    assert ranges and (0, 65536) not in ranges  # blocks only: the header came from the file


def test_build_collection_command(gdal_collection, tmp_path, capsys):
    out = tmp_path / "c.parquet"
    assert main(["build-collection", "-o", str(out), "--catalog", gdal_collection.index]) == 0
    assert "headers of 8 files" in capsys.readouterr().out
    rows = pq.read_table(out)
    assert rows.num_rows == 8 and np.all(np.array(rows["samples_per_pixel"]) == 64)
