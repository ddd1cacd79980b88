"""aef_pixels reads the next vector's chunks while DuckDB consumes the current one
(aefsql/kernels/readahead.py), over the real Range server: values as GDAL's, each block
fetched once, one batch ahead at most, and a server error met ahead fails the query as it
would have without read-ahead."""

import numpy as np
import pytest
import rasterio
import rasterio.warp
from gdal_fixtures import PIXEL, Layout, index_row, write_index, write_layout
from helpers import block_ranges, tile_ranges_of

import aefsql
from aefsql.geometry import geo
from aefsql.geometry.areas import area_from
from aefsql.kernels import readahead
from aefsql.kernels.pixels import Chunks, area_chunks, chunk_pixels
from aefsql.kernels.readahead import ReadAhead
from aefsql.session import open_session

# 900 rows x 5 block columns of 128 px: 4,500 chunks, three of DuckDB's vectors.
LAYOUT = Layout(width=640, height=900, block=128)
NAME = "2024/33N/readahead.tiff"


@pytest.fixture(scope="module")
def wide(http_server, tmp_path_factory):
    """(local path, HTTP index URL) of a one-tile collection whose tile takes three UDF calls."""
    folder = tmp_path_factory.mktemp("readahead")
    path = write_layout(folder, LAYOUT, seed=11, name=NAME)
    write_index(folder / "index.parquet", [index_row(1, 2024, NAME, LAYOUT)])
    return path, f"{http_server.base_url}{folder.name}/index.parquet"


def whole_tile_box() -> list[float]:
    west, south, east, north = LAYOUT.bounds
    inset = PIXEL / 4
    return [west + inset, south + inset, east - inset, north - inset]


def query(index: str) -> np.ndarray:
    """Every pixel of the tile through aef_pixels, as a (64, rows, cols) array."""
    con = aefsql.connect(catalog=index)
    try:
        table = con.sql(
            f"SELECT * EXCLUDE (lon, lat) FROM aef_pixels({whole_tile_box()}, years := 2024, "
            "crs := 32633)"
        ).to_arrow_table()
    finally:
        con.close()
    out = np.full((64, LAYOUT.height, LAYOUT.width), -99, np.int16)
    rows, cols = table["row"].to_numpy(), table["col"].to_numpy()
    assert table.num_rows == LAYOUT.width * LAYOUT.height
    for band in range(64):
        out[band, rows, cols] = table[f"A{band:02d}"].fill_null(-128).to_numpy()
    return out


@pytest.fixture
def started(monkeypatch):
    """The batches read ahead, as (number of chunks) in order of starting."""
    seen = []
    start = ReadAhead._start

    def spy(self, wanted, chunks, compute):
        seen.append(chunks.row.size)
        start(self, wanted, chunks, compute)

    monkeypatch.setattr(ReadAhead, "_start", spy)
    return seen


def test_each_block_once_and_values_as_gdal(wide, http_server, started):
    path, index = wide
    http_server.log.clear()
    got = query(index)
    with rasterio.open(path) as ds:
        assert np.array_equal(got, ds.read().astype(np.int16))
    assert len(started) == 2  # the second and third vectors were read ahead
    # Every byte of every block fetched once (after the header's first read, which the
    # first blocks' bytes may share; block tables are read apart).
    ranges = tile_ranges_of(http_server.log, NAME)
    assert ranges[0] == (0, 65536)
    cover = np.zeros(path.stat().st_size + 1, np.int32)
    for start, end in ranges[1:]:
        cover[start] += 1
        cover[end] -= 1
    cover = np.cumsum(cover)
    for first, last in block_ranges(path):
        assert (cover[first : last + 1] == 1).all()


def test_a_server_error_met_ahead_fails_the_query(wide, http_server, monkeypatch):
    path, index = wide
    before = []  # GETs of the tile when the first read ahead starts: header, first vector
    start = ReadAhead._start

    def spy(self, wanted, chunks, compute):
        before.append(len(tile_ranges_of(http_server.log, NAME)))
        start(self, wanted, chunks, compute)

    monkeypatch.setattr(ReadAhead, "_start", spy)
    http_server.log.clear()
    query(index)
    # The same query again, with the file forbidden from the read ahead's first request on.
    http_server.faults.add(NAME, "pass", times=before[0])
    http_server.faults.add(NAME, "403", times=10)
    failed = []
    read = ReadAhead._read

    def ahead(self, chunks, bands, level, **derive):
        try:
            return read(self, chunks, bands, level, **derive)
        except aefsql.AefsqlError as exc:
            failed.append(exc)
            raise

    monkeypatch.setattr(ReadAhead, "_read", ahead)
    try:
        with pytest.raises(Exception, match=r"readahead\.tiff: access denied"):
            query(index)
    finally:
        http_server.faults.planned.clear()
    assert len(failed) == 1  # met ahead, raised once: the batch was not read again
    with rasterio.open(path) as ds:  # and the file reads again once the fault is gone
        assert np.array_equal(query(index), ds.read().astype(np.int16))


def test_only_the_planned_batch_with_its_bands_is_taken(wide, monkeypatch):
    """A read ahead is used only for exactly its chunks, bands and level; anything else is
    read then, and the read ahead is dropped."""
    path, index = wide
    session = open_session(index)
    chunks = area_chunks(session, area_from(whole_tile_box(), 32633), [2024])
    batches = [
        Chunks(*(a[k : k + 1000] for a in vars(chunks).values())) for k in range(0, 3000, 1000)
    ]
    reads = []
    read = ReadAhead._read

    def counted(self, chunks, bands, level, **derive):
        reads.append(chunks.row[0])
        return read(self, chunks, bands, level, **derive)

    monkeypatch.setattr(ReadAhead, "_read", counted)
    ahead = ReadAhead(session)
    ahead.plan(batches)
    bands = [0, 5, 63]
    first = ahead.pixels(batches[0], bands, 0)
    assert len(ahead._ahead) == 1 and ahead._ahead[0][0][1] == tuple(bands)
    second = ahead.pixels(batches[1], [0, 5], 0)  # other bands: read now, not taken
    expected = chunk_pixels(session, batches[1], [0, 5], 0, coordinates=False)
    assert np.array_equal(second.values, expected.values)
    third = ahead.pixels(batches[2], [0, 5], 0)  # read ahead after the second call
    assert reads == [batches[k].row[0] for k in (0, 1, 1, 2)]
    assert not ahead._ahead  # nothing planned after the last batch
    for got, batch in ((first, batches[0]), (third, batches[2])):
        expected = chunk_pixels(session, batch, list(got.bands), 0, coordinates=False)
        assert np.array_equal(got.values, expected.values)
        assert np.array_equal(got.location, expected.location)


def test_lon_lat_projected_ahead_are_projs_and_only_when_asked_for(wide, monkeypatch):
    """Over three vectors, lon/lat are PROJ's of each pixel's x/y (projected ahead from the
    second vector on, each pixel once); a query that reads neither projects nothing, even
    right after one that did."""
    path, index = wide
    projected = []
    project = readahead.lonlat

    def counted(x, y, crs):
        projected.append(len(x))
        return project(x, y, crs)

    monkeypatch.setattr(readahead, "lonlat", counted)
    con = aefsql.connect(catalog=index)
    area = f"aef_pixels({whole_tile_box()}, years := 2024, crs := 32633, bands := ['A00'])"
    try:
        table = con.sql(f"SELECT x, y, lon, lat FROM {area}").to_arrow_table()
        assert max(projected) > 2048  # a batch projected ahead, whole
        assert sum(projected) == table.num_rows == LAYOUT.width * LAYOUT.height
        x, y = table["x"].to_numpy(), table["y"].to_numpy()
        lon, lat = rasterio.warp.transform("EPSG:32633", "EPSG:4326", x, y)
        assert np.allclose(table["lon"].to_numpy(), lon, rtol=0, atol=1e-9)
        assert np.allclose(table["lat"].to_numpy(), lat, rtol=0, atol=1e-9)
        projected.clear()
        assert con.sql(f"SELECT count(x), sum(A00) FROM {area}").fetchall()[0][0] == table.num_rows
        assert projected == []
    finally:
        con.close()


def test_lon_lat_projected_in_pieces_are_one_proj_calls_bit_for_bit(wide, monkeypatch):
    """A batch's lon/lat are projected in pieces (LONLAT_PIECE points, each a task of the
    thread pool), the batch DuckDB is consuming too, whole at its first ask: each pixel once,
    and every value exactly what one PROJ call over all the pixels gives — PROJ maps each
    point alone, so pieces cannot change a bit."""
    path, index = wide
    monkeypatch.setattr(readahead, "LONLAT_PIECE", 5000)
    projected = []
    project = readahead.lonlat

    def counted(x, y, crs):
        projected.append(len(x))
        return project(x, y, crs)

    monkeypatch.setattr(readahead, "lonlat", counted)
    con = aefsql.connect(catalog=index)
    area = f"aef_pixels({whole_tile_box()}, years := 2024, crs := 32633, bands := ['A00'])"
    try:
        table = con.sql(f"SELECT x, y, lon, lat FROM {area}").to_arrow_table()
    finally:
        con.close()
    assert sum(projected) == table.num_rows == LAYOUT.width * LAYOUT.height
    # Pieces from the first vector on: only each of the three batches' last piece is short
    # (the first batch asked for 2,048 points at a time would give ~128 short calls).
    assert max(projected) == 5000 and len([n for n in projected if n != 5000]) <= 3
    x, y = table["x"].to_numpy(), table["y"].to_numpy()
    lon, lat = geo.transform_points(32633, geo.WGS84, x, y)
    assert np.array_equal(table["lon"].to_numpy(), lon)
    assert np.array_equal(table["lat"].to_numpy(), lat)


def test_another_querys_batch_is_not_projected(gdal_collection, monkeypatch):
    """aef_change gives its pixels through no `pixels` call: the batch an earlier aef_pixels
    query (without lon/lat) was given is left alone, and only aef_change's pixels are
    projected, once each."""
    projected = []
    project = readahead.lonlat

    def counted(x, y, crs):
        projected.append(len(x))
        return project(x, y, crs)

    monkeypatch.setattr(readahead, "lonlat", counted)
    with aefsql.connect(catalog=gdal_collection.index) as con:
        pixels = "aef_pixels([498500, 8506500, 499500, 8507500], year := 2023, crs := 32718)"
        assert len(con.sql(f"SELECT x FROM {pixels}").fetchall()) == 10_000
        change = (
            "aef_change([266000, 4989000, 267000, 4990000], years := [2023, 2024], crs := 32633)"
        )
        table = con.sql(f"SELECT x, y, crs, lon, lat FROM {change}").to_arrow_table()
    assert sum(projected) == table.num_rows == 10_000
    assert set(table["crs"].to_pylist()) == {"EPSG:32633"}
    lon, lat = geo.transform_points(32633, geo.WGS84, table["x"].to_numpy(), table["y"].to_numpy())
    assert np.array_equal(table["lon"].to_numpy(), lon)
    assert np.array_equal(table["lat"].to_numpy(), lat)
