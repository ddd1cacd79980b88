"""What goes over the wire: one header read per file, each byte once, nothing unranged."""

import re

import numpy as np
import pyarrow as pa
import rasterio
from gdal_fixtures import Layout, lonlat, random_pixel_points, write_layout
from helpers import tile_points, tile_ranges_of

import aefsql

TILE = "2023/18S/tile3-0000000000-0000000000.tiff"


def tile_ranges(log) -> list[tuple[int, int]]:
    return tile_ranges_of(log, TILE)


def test_header_once_bytes_once_and_always_ranged(http_collection, http_server):
    size = (http_collection.folder / TILE).stat().st_size
    con = aefsql.connect(catalog=http_collection.index)
    try:
        lon, lat, _, _ = tile_points(3, 200, seed=2)
        con.register("p", pa.table({"lon": lon, "lat": lat}))
        con.register("one", pa.table({"lon": lon[:1], "lat": lat[:1]}))

        http_server.log.clear()
        con.sql("SELECT A00 FROM aef_sample_points('one', year := 2023)").fetchall()
        ranges = tile_ranges(http_server.log)
        assert ranges[0] == (0, 65536)  # the whole header in one read
        # 64 blocks (one per band), fewer requests where near neighbours were merged.
        assert 1 <= len(ranges) - 1 <= 64 and all(end <= size for _, end in ranges)

        http_server.log.clear()
        first = con.sql("SELECT A00, A63 FROM aef_sample_points('p', year := 2023)").fetchall()
        ranges = sorted(tile_ranges(http_server.log))
        assert all(
            end <= nxt for (_, end), (nxt, _) in zip(ranges, ranges[1:], strict=False)
        )  # disjoint
        assert (0, 65536) not in ranges  # the header stays cached for the connection

        http_server.log.clear()
        again = con.sql("SELECT A00, A63 FROM aef_sample_points('p', year := 2023)").fetchall()
        assert again == first
        # Whole-table jobs keep no decoded blocks (each is read once per job: the memory is
        # better left free); the header is not read again.
        assert (0, 65536) not in tile_ranges(http_server.log)

        # Row-level calls keep decoded blocks in the LRU cache: repeating one reads nothing.
        row_level = "SELECT aef_embedding(lon, lat, 2023).A05 FROM p"
        first_rows = con.sql(row_level).fetchall()
        http_server.log.clear()
        assert con.sql(row_level).fetchall() == first_rows
        assert tile_ranges(http_server.log) == []
    finally:
        con.close()


def test_plan_predicts_the_reads(http_collection, http_server):
    """aef_plan's requests and bytes are what sampling then fetches (headers aside)."""
    parts = [tile_points(k, 60, seed=k) for k in (0, 3)]
    lon = np.concatenate([p[0] for p in parts] + [[0.0]])
    lat = np.concatenate([p[1] for p in parts] + [[0.0]])
    con = aefsql.connect(catalog=http_collection.index)
    try:
        con.register("p", pa.table({"lon": lon, "lat": lat}))
        plan = con.sql(
            "SELECT * FROM aef_plan('p', years := [2023, 2024], bands := ['A00', 'A05'])"
        ).fetchall()
        planned = {(path.rsplit("/", 1)[1], year): row for path, year, *row in plan if path}
        assert [row for row in plan if row[0] is None] == [
            (
                None,
                year,
                1,
                0,
                0,
                0,
                f"outside coverage: the catalog has no tile of year {year} there",
            )
            for year in (2023, 2024)
        ]
        assert sum(points for points, *_ in planned.values()) == 2 * 120

        http_server.log.clear()  # headers are cached by the plan: only blocks are read now
        con.sql(
            "SELECT * FROM aef_sample_points('p', years := [2023, 2024], bands := ['A00', 'A05'])"
        ).fetchall()
        served = {}
        for _, path, byte_range in http_server.log.requests:
            if path.endswith(".tiff"):
                start, end = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", byte_range).groups())
                key = (path.rsplit("/", 1)[1], int(path.split("/")[-3]))
                requests, nbytes = served.get(key, (0, 0))
                served[key] = (requests + 1, nbytes + end + 1 - start)
        assert served == {key: (row[2], row[3]) for key, row in planned.items()}
    finally:
        con.close()


def test_big_block_tables_are_read_entry_by_entry(http_server, tmp_path_factory):
    """16-px blocks make TileOffsets/TileByteCounts 256 KiB each: only the entries of the
    blocks read are fetched, a few bytes each, as GDAL does."""
    folder = tmp_path_factory.mktemp("bigheader")
    layout = Layout(bands=16, width=1024, height=1024, block=16)
    path = write_layout(folder, layout, seed=5)
    url = f"{http_server.base_url}{folder.name}/{path.name}"
    x, y, *_ = random_pixel_points(path, 5, seed=1)
    x, y = x[:5], y[:5]
    lon, lat = lonlat(layout.epsg, x, y)
    with rasterio.open(path) as ds:
        expected = np.array(list(ds.sample(zip(x, y, strict=True))))

    con = aefsql.connect()
    try:
        http_server.log.clear()
        con.register("p", pa.table({"lon": lon, "lat": lat}))
        got = con.sql(f"SELECT unnest(aef_file_embedding('{url}', lon, lat)) FROM p").fetchall()
    finally:
        con.close()
    got = np.array([[-128 if v is None else v for v in row[:16]] for row in got])
    assert np.array_equal(got, expected)
    ranges = tile_ranges_of(http_server.log, path.name)
    assert ranges[0] == (0, 65536)
    table_bytes = 2 * 256 * 1024
    small = [(a, b) for a, b in ranges[1:] if b - a <= 4096 + 8]  # block-table entries
    assert small and sum(b - a for a, b in small) < table_bytes / 10
    needed_blocks = 5 * 16  # 5 points x 16 bands
    assert len(ranges) - 1 - len(small) <= needed_blocks
