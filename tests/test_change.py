"""aef_change against GDAL: each row's similarity is numpy's cosine of the de-quantized values
rasterio reads from the two years' files at the row's pixel; each location once per pair
(across a UTM seam, and when a year lacks a tile); each block of each year read once."""

from dataclasses import fields, replace

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from gdal_fixtures import (
    COLLECTION_TILES,
    Layout,
    collection_path,
    footprint_lonlat,
    index_row,
    write_index,
    write_layout,
)
from helpers import block_ranges, block_reads, pixel_reads, star
from pyproj import Transformer

import aefsql
from aefsql.aef import NODATA, dequantize
from aefsql.errors import AefsqlError
from aefsql.geometry.areas import area_from
from aefsql.geometry.geo import polygon_wkb
from aefsql.kernels import change
from aefsql.kernels.pixels import Chunks
from aefsql.session import open_session

COLUMNS = ["location", "crs", "x", "y", "lon", "lat", "year_from", "year_to", "similarity"]
NORTH_UP = Layout(south_up=False, width=301, height=259, block=128, west=300000.0)
# 240 rows x 10 block columns: 2,400 chunks, which DuckDB hands over in two calls. (With
# blocks this small a request spans the next call's blocks too: counted per block, aef_pixels
# "reads" most blocks twice.)
SMALL_BLOCKS = Layout(south_up=False, width=160, height=240, block=16, west=300000.0)
NORTH_YEARS = (2023, 2024, 2025)
SEAM = "[11.99, 45.0, 12.01, 45.01]"
YEARS = [2023, 2024]


def three_years(folder, layout: Layout):
    """A one-tile, three-year collection of `layout`: {year: path} and the index."""
    files, rows = {}, []
    for year in NORTH_YEARS:
        name = f"{year}/33N/northup-0000000000-0000000000.tiff"
        files[year] = write_layout(folder, layout, seed=year, name=name)
        rows.append(index_row(len(rows) + 1, year, name, layout))
    return files, write_index(folder / "index.parquet", rows)


@pytest.fixture(scope="module")
def north(tmp_path_factory):
    """Three years of a north-up, odd-sized layout."""
    return three_years(tmp_path_factory.mktemp("north_up_change"), NORTH_UP)


@pytest.fixture(scope="module")
def small_blocks(tmp_path_factory):
    """Three years of a north-up layout of 16-px blocks (its folder beside the other
    fixtures', so the HTTP server serves it too)."""
    return three_years(tmp_path_factory.mktemp("small_blocks_change"), SMALL_BLOCKS)


def changes(con, area: str, params=(), extra: str = "") -> pa.Table:
    return con.sql(
        f"SELECT * FROM aef_change({area}{extra}) ORDER BY location, year_from",
        params=list(params),
    ).to_arrow_table()


def cosine(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """numpy's cosine of int8 (bands, pixels) values de-quantized, in float64, and where it
    is NULL (any band nodata in either)."""
    da, db = dequantize(a.T), dequantize(b.T)
    null = (a == NODATA).any(axis=0) | (b == NODATA).any(axis=0)
    with np.errstate(invalid="ignore"):
        value = (da * db).sum(1) / np.sqrt((da * da).sum(1) * (db * db).sum(1))
    return value, null


def check_against_gdal(table: pa.Table, files: dict, level: int = 0) -> int:
    """Every row's similarity is numpy's over rasterio's reads of its pixel in its grid's
    files (`files`: {(epsg, year): [paths]}; the grid is the one whose raster holds x/y;
    a year without a file there: NULL). Returns how many rows were NULL."""
    assert table.column_names == COLUMNS
    x, y = table["x"].to_numpy(), table["y"].to_numpy()
    crs = np.array(table["crs"].to_pylist())
    year_from, year_to = table["year_from"].to_numpy(), table["year_to"].to_numpy()
    got = table["similarity"].to_numpy(zero_copy_only=False).astype(np.float64)
    got_null = table["similarity"].is_null().to_numpy(zero_copy_only=False)
    checked = np.zeros(table.num_rows, bool)
    overview = {"overview_level": level - 1} if level else {}
    for (epsg, year), paths in files.items():
        for path in paths:
            with rasterio.open(path, **overview) as ds:
                rows, cols = rasterio.transform.rowcol(ds.transform, x, y)
                rows, cols = np.asarray(rows), np.asarray(cols)
                inside = (
                    (crs == f"EPSG:{epsg}")
                    & (rows >= 0)
                    & (rows < ds.height)
                    & (cols >= 0)
                    & (cols < ds.width)
                )
                if not inside.any():
                    continue
                data = ds.read()
            for later in (y_ for (e, y_) in files if e == epsg and y_ > year):
                pair = inside & (year_from == year) & (year_to == later)
                if not pair.any():
                    continue
                other = _pixels_of(files[epsg, later], x[pair], y[pair], overview)
                mine = data[:, rows[pair], cols[pair]]
                expected, null = cosine(mine, other)
                null |= (other == NODATA - 1).all(axis=0)  # no file there that year
                assert np.array_equal(got_null[pair], null), path
                assert np.allclose(got[pair][~null], expected[~null], rtol=1e-5, atol=1e-6)
                checked |= pair
    assert checked[~got_null].all()  # every non-NULL row had its files
    return int(got_null.sum())


def _pixels_of(paths, x, y, overview) -> np.ndarray:
    """int16 (bands, points): the values of the pixels holding x/y in whichever of `paths`
    holds each; NODATA - 1 where none does."""
    found = None
    for path in paths:
        with rasterio.open(path, **overview) as ds:
            rows, cols = (np.asarray(a) for a in rasterio.transform.rowcol(ds.transform, x, y))
            inside = (rows >= 0) & (rows < ds.height) & (cols >= 0) & (cols < ds.width)
            if found is None:
                found = np.full((ds.count, x.size), NODATA - 1, np.int16)
            found[:, inside] = ds.read()[:, rows[inside], cols[inside]]
    return found


def collection_files(folder, years=(2023, 2024), tiles=None):
    """{(epsg, year): [paths]} of the two-year collection's files (`tiles`: default all)."""
    files = {}
    for year in years:
        for k in range(len(COLLECTION_TILES)) if tiles is None else tiles:
            epsg = COLLECTION_TILES[k][1]
            files.setdefault((epsg, year), []).append(folder / collection_path(year, k))
    return files


def test_a_star_in_a_south_up_tile_equals_numpy(con, gdal_collection):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    ring = star(x0 + 1200, y0 + 1100, 700, seed=2)
    params = [polygon_wkb(ring[:, 0], ring[:, 1])]
    table = changes(con, "?::BLOB", params, f", years := [2024, 2023], crs := {epsg}")
    assert table.num_rows > 1000
    nulls = check_against_gdal(table, collection_files(gdal_collection.folder))
    assert 0 < nulls < table.num_rows // 2
    # The rows are aef_pixels' locations, where aef_pixels puts them.
    pixels = con.sql(
        "SELECT location, crs, x, y, lon, lat FROM aef_pixels(?::BLOB, years := 2023, "
        f"crs := {epsg}) ORDER BY location",
        params=params,
    ).to_arrow_table()
    assert table.select(["location", "crs", "x", "y", "lon", "lat"]).equals(pixels)
    # The typed columns are aef_pixels'.
    assert table.schema.field("similarity").type == pa.float32()
    assert table.schema.field("year_from").type == pa.int32()


def test_nodata_in_one_year_is_null(con, gdal_collection):
    """The whole tile 3: pixels nodata in one year only (a single band, or all) give NULL,
    as do the nodata rectangle both years share; the rest numpy's cosine."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = [x0 + 1, y0 + 1, x0 + 2999, y0 + 2599]
    table = changes(con, str(box), extra=f", years := [2023, 2024], crs := {epsg}")
    assert table.num_rows == 300 * 260
    nulls = check_against_gdal(table, collection_files(gdal_collection.folder))
    assert nulls > 50 * 80 + 40  # the rectangle, and pixels nodata in one year


def test_north_up_three_years_give_two_pairs(north):
    files, index = north
    with aefsql.connect(catalog=str(index)) as con:
        west, south, east, north_ = NORTH_UP.bounds
        ring = star((west + east) / 2, (south + north_) / 2, 1200, n=11, seed=3)
        params = [polygon_wkb(ring[:, 0], ring[:, 1])]
        table = changes(
            con, "?::BLOB", params, f", years := [2025, 2023, 2024], crs := {NORTH_UP.epsg}"
        )
        single = con.sql(
            f"SELECT count(*) FROM aef_pixels(?::BLOB, years := 2023, crs := {NORTH_UP.epsg})",
            params=params,
        ).fetchall()[0][0]
    pairs = list(zip(table["year_from"].to_pylist(), table["year_to"].to_pylist(), strict=True))
    assert sorted(set(pairs)) == [(2023, 2024), (2024, 2025)]
    assert table.num_rows == 2 * single and single > 1000
    assert con_free_unique(table)
    check_against_gdal(table, {(NORTH_UP.epsg, y): [p] for y, p in files.items()})


def con_free_unique(table: pa.Table) -> bool:
    """Each location once per pair."""
    keys = list(
        zip(
            table["location"].to_pylist(),
            table["year_from"].to_pylist(),
            table["year_to"].to_pylist(),
            strict=True,
        )
    )
    return len(keys) == len(set(keys))


def test_level_one(north):
    level = 1
    files, index = north
    with aefsql.connect(catalog=str(index)) as con:
        west, south, east, north_ = NORTH_UP.bounds
        ring = star((west + east) / 2, (south + north_) / 2, 1200, n=11, seed=3)
        params = [polygon_wkb(ring[:, 0], ring[:, 1])]
        extra = f", years := [2023, 2024], crs := {NORTH_UP.epsg}, level := {level}"
        table = changes(con, "?::BLOB", params, extra)
    assert table.num_rows > 300 // 4**level
    check_against_gdal(table, {(NORTH_UP.epsg, y): [files[y]] for y in (2023, 2024)}, level)


def test_across_the_12e_seam_each_location_once(con, gdal_collection):
    """Tiles 0 (32N) and 1 (33N) overlap across 12°E: each location once per pair, from the
    tile aef_pixels takes it from, with that tile's two years."""
    table = changes(con, SEAM, extra=", years := [2023, 2024]")
    assert len(set(table["crs"].to_pylist())) == 2
    assert con_free_unique(table)
    pixels = con.sql(
        f"SELECT location, crs, x, y FROM aef_pixels({SEAM}, years := 2024) ORDER BY location"
    ).to_arrow_table()
    assert table.select(["location", "crs", "x", "y"]).equals(pixels)
    check_against_gdal(table, collection_files(gdal_collection.folder))


def test_a_year_that_lacks_a_tile(gdal_collection, tmp_path):
    """2024 lacks tile 0 (32N): the seam's locations are still planned once for both years
    — those of 32N's grid (as 2023 has them) get NULL, never dropped nor duplicated with
    33N's pixels at the same place — and the rest compare as usual."""
    rows = []
    for year, tiles in ((2023, (0, 1)), (2024, (1,))):
        for k in tiles:
            _, epsg, west, south = COLLECTION_TILES[k]
            layout = Layout(epsg=epsg, width=300, height=260, block=128, west=west, south=south)
            path = str(gdal_collection.folder / collection_path(year, k))
            rows.append(index_row(len(rows) + 1, year, path, layout))
    index = write_index(tmp_path / "index.parquet", rows)
    with aefsql.connect(catalog=str(index)) as con:
        table = changes(con, SEAM, extra=", years := [2023, 2024]")
        pixels = con.sql(
            f"SELECT location FROM aef_pixels({SEAM}, years := 2023) ORDER BY location"
        ).to_arrow_table()
    assert table["location"].equals(pixels["location"])
    crs = np.array(table["crs"].to_pylist())
    null = table["similarity"].is_null().to_numpy(zero_copy_only=False)
    assert (crs == "EPSG:32632").sum() > 100 and null[crs == "EPSG:32632"].all()
    assert not null[crs == "EPSG:32633"].all()
    files = collection_files(gdal_collection.folder, (2023,), (0, 1))
    files[32633, 2024] = [gdal_collection.folder / collection_path(2024, 1)]
    check_against_gdal(table, files)


@pytest.fixture(scope="module")
def antimeridian(tmp_path_factory):
    """Two tiles meeting at 180° near Fiji (UTM 60S west of it, 1S east, each overhanging
    it, as test_areas.py's), in 2023 and 2024: {(epsg, year): [path]} and the index."""
    folder = tmp_path_factory.mktemp("antimeridian_change")
    files, rows = {}, []
    for year in (2023, 2024):
        for k, (epsg, lon) in enumerate([(32760, 179.99), (32701, -179.99)]):
            x, y = (
                v[0]
                for v in Transformer.from_crs(4326, epsg, always_xy=True).transform([lon], [-16.0])
            )
            west, south = float(np.round(x / 10) * 10 - 1500), float(np.round(y / 10) * 10 - 1300)
            layout = Layout(epsg=epsg, width=300, height=260, block=128, west=west, south=south)
            path = f"{year}/{epsg % 100}S/tile{k}.tiff"
            files[epsg, year] = [write_layout(folder, layout, seed=year + k, name=path)]
            row = index_row(len(rows) + 1, year, path, layout)
            lon_edge, _ = footprint_lonlat(epsg, layout.bounds)
            row["wgs84_west"] = float(lon_edge[lon_edge > 0].min())  # west > east: across 180°
            row["wgs84_east"] = float(lon_edge[lon_edge < 0].max())
            rows.append(row)
    return files, write_index(folder / "index.parquet", rows)


def test_across_the_antimeridian(antimeridian):
    """A box across 180° (west > east): both sides' tiles, each location once per pair, as
    aef_pixels gives them, and numpy's cosines."""
    files, index = antimeridian
    box = "[179.99, -16.001, -179.99, -15.999]"
    with aefsql.connect(catalog=str(index)) as con:
        table = changes(con, box, extra=", years := [2023, 2024]")
        pixels = con.sql(
            f"SELECT location, crs, x, y FROM aef_pixels({box}, years := 2023) ORDER BY location"
        ).to_arrow_table()
    assert len(set(table["crs"].to_pylist())) == 2 and table.num_rows > 1000
    assert table.select(["location", "crs", "x", "y"]).equals(pixels)
    check_against_gdal(table, files)


def year_reads(log, since: int, index, year: int) -> list:
    """The pixel reads (byte ranges) of `year`'s file of a three-year collection."""
    name = f"/{index.parent.name}/{year}/33N/northup-0000000000-0000000000.tiff"
    return sorted(pixel_reads(log, since, name))


def test_a_year_on_another_grid(tmp_path):
    """2024's file lies half a pixel east of 2023's (never in AEF): two tile positions, and
    each location of the area still once, from the one that owns it, NULL (the other year
    has no file on its grid) — never a pixel of one grid compared with one of the other."""
    rows = []
    for year, west in ((2023, NORTH_UP.west), (2024, NORTH_UP.west + 5.0)):
        layout = replace(NORTH_UP, west=west)
        name = f"{year}/33N/northup-0000000000-0000000000.tiff"
        write_layout(tmp_path, layout, seed=year, name=name)
        rows.append(index_row(len(rows) + 1, year, name, layout))
    index = write_index(tmp_path / "index.parquet", rows)
    west, south, east, north_ = NORTH_UP.bounds
    box = [west + 500, south + 500, east - 500, north_ - 500]
    with aefsql.connect(catalog=str(index)) as con:
        table = changes(con, str(box), extra=", years := [2023, 2024], crs := 32633")
        years = [
            con.sql(
                f"SELECT location FROM aef_pixels({box}, years := {y}, crs := 32633) "
                "ORDER BY location"
            ).to_arrow_table()["location"]
            for y in (2023, 2024)
        ]
    assert table.num_rows > 1000 and con_free_unique(table)
    assert table["location"] in years  # one grid's locations, whole
    assert table["similarity"].null_count == table.num_rows


def test_each_block_of_each_year_is_read_once(north, http_server):
    """The whole tile over HTTP in three years: every pixel block of each year's file is
    fetched once (the server's request log), and the rows are numpy's."""
    files, index = north
    url = f"{http_server.base_url}{index.parent.name}/index.parquet"
    log = http_server.log
    west, south, east, north_ = NORTH_UP.bounds
    box = [west + 1, south + 1, east - 1, north_ - 1]
    with aefsql.connect(catalog=url) as con:
        before = log.total
        table = changes(con, str(box), extra=", years := [2023, 2024, 2025], crs := 32633")
    assert table.num_rows == 2 * NORTH_UP.width * NORTH_UP.height
    for year, path in files.items():
        reads = block_reads(block_ranges(path), year_reads(log, before, index, year))
        assert reads.max() == 1 and reads.sum() == len(block_ranges(path)), year
    check_against_gdal(table, {(NORTH_UP.epsg, y): [p] for y, p in files.items()})


def test_over_several_calls_each_year_is_read_as_aef_pixels_reads_it(small_blocks, http_server):
    """2,400 chunks come in two DuckDB calls: each year's file gets exactly the requests
    aef_pixels makes for the same area and years (whose chunks, like aef_change's, never
    split a block between calls), though every pair is compared."""
    files, index = small_blocks
    url = f"{http_server.base_url}{index.parent.name}/index.parquet"
    log = http_server.log
    west, south, east, north_ = SMALL_BLOCKS.bounds
    box = [west + 1, south + 1, east - 1, north_ - 1]
    reads = []
    for function in ("aef_pixels", "aef_change"):
        with aefsql.connect(catalog=url) as con:
            before = log.total
            con.sql(
                f"SELECT count(*) FROM {function}({box}, years := [2023, 2024, 2025], crs := 32633)"
            ).fetchall()
        reads.append([year_reads(log, before, index, year) for year in files])
    assert reads[0] == reads[1] and all(reads[0])


def test_one_year_is_refused(con):
    with pytest.raises(Exception, match=r"years := \[2023, 2024\]") as error:
        con.sql(f"FROM aef_change({SEAM}, years := [2023])").fetchall()
    assert "\n" not in str(error.value).split("Error: ", 1)[1]
    with pytest.raises(Exception, match=r"years := "):
        con.sql(f"FROM aef_change({SEAM}, years := 2023)").fetchall()
    with pytest.raises(Exception, match=r"max_bytes"):
        con.sql(f"FROM aef_change({SEAM}, years := [2023, 2024], max_bytes := 1000)").fetchall()


def test_python_equals_sql(con, gdal_collection):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    ring = star(x0 + 1200, y0 + 1100, 500, seed=5)
    wkb = polygon_wkb(ring[:, 0], ring[:, 1])
    expected = changes(con, "?::BLOB", [wkb], f", years := [2023, 2024], crs := {epsg}")
    got = aefsql.change(wkb, years=[2024, 2023], crs=epsg, catalog=gdal_collection.index)
    assert got.sort_by([("location", "ascending"), ("year_from", "ascending")]).equals(expected)
    with pytest.raises(AefsqlError, match=r"years=\[2023, 2024\]"):
        aefsql.change(wkb, years=2023, crs=epsg, catalog=gdal_collection.index)


def test_areas_that_hold_nothing_or_no_pixel_centre(con, gdal_collection):
    """aef_pixels' areas, aef_pixels' locations: none outside coverage, for an empty area or
    across the antimeridian here; the pixel under the centroid for a sub-pixel square (once
    per pair), and a refusal naming the fix for what is not an area."""
    for area in (
        "[-30.0, 30.0, -29.9, 30.1]",
        "'POLYGON EMPTY'",
        "[179.9, -1.0, -179.9, 1.0]",
    ):
        found = con.sql(f"SELECT count(*) FROM aef_change({area}, years := [2023, 2024])")
        assert found.fetchall() == [(0,)], area
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    tiny = [x0 + 1001, y0 + 1001, x0 + 1003, y0 + 1003]  # inside one pixel, off its centre
    table = changes(con, str(tiny), extra=f", years := [2023, 2024], crs := {epsg}")
    pixels = con.sql(
        f"SELECT location, x, y FROM aef_pixels({tiny}, years := 2023, crs := {epsg})"
    ).to_arrow_table()
    assert table.num_rows == 1 and pixels.num_rows == 1
    assert table.select(["location", "x", "y"]).equals(pixels)
    check_against_gdal(table, collection_files(gdal_collection.folder))
    with pytest.raises(Exception, match="an area is a GEOMETRY"):
        con.sql("FROM aef_change('not a geometry', years := [2023, 2024])").fetchall()


def test_a_call_of_chunks_of_two_grids(gdal_collection):
    """DuckDB may hand one call chunks of several grids (the seam's two zones): each keeps
    its own grid's places and values, as in calls of their own."""
    session = open_session(gdal_collection.index)
    area = area_from([11.99, 45.0, 12.01, 45.01], 4326)
    positions = change.tile_positions(session, area, YEARS)
    units = [u for u in change.change_units(positions, area) if not u.stand_in]
    parts = [change.unit_chunks(session, positions, area, u) for u in units]
    assert len(parts) == 2 and all(c.row.size for c, _ in parts)
    apart = [change.chunk_changes(session, c, p, YEARS) for c, p in parts]
    merged = Chunks(
        *(np.concatenate([getattr(c, f.name) for c, _ in parts]) for f in fields(Chunks))
    )
    together = change.chunk_changes(session, merged, np.vstack([p for _, p in parts]), YEARS)
    for name in ("location", "x", "y", "similarity"):
        expected = np.concatenate([getattr(a, name) for a in apart])
        assert np.array_equal(getattr(together, name), expected, equal_nan=True), name


def test_python_says_why_nothing_came_back(gdal_collection):
    """Outside coverage: no row and a warning that says why; a year the catalog lacks: NULL
    similarities and a warning naming it."""
    index = gdal_collection.index
    with pytest.warns(UserWarning, match="outside coverage"):
        table = aefsql.change([-60.0, -10.0, -59.99, -9.99], years=[2023, 2024], catalog=index)
    assert table.num_rows == 0
    with pytest.warns(UserWarning, match="no tile of year"):
        table = aefsql.change([12.0, 44.995, 12.01, 45.005], years=[1999, 2024], catalog=index)
    assert table.num_rows > 0 and table["similarity"].null_count == table.num_rows


def test_the_next_vectors_changes_are_computed_ahead(small_blocks, monkeypatch):
    """2,400 chunks in two DuckDB calls: the second call's changes are computed while
    DuckDB consumes the first's (`ReadAhead.computed`, planned by change_chunks), taken by
    the second call (not computed again), and every row is numpy's."""
    from aefsql.kernels.readahead import ReadAhead

    files, index = small_blocks
    started, computed = [], []
    start, chunk_changes = ReadAhead._start, change.chunk_changes

    def spy(self, wanted, batch, compute):
        started.append(wanted[1])
        start(self, wanted, batch, compute)

    def counted(session, chunks, *args):
        computed.append(chunks.row.size)
        return chunk_changes(session, chunks, *args)

    monkeypatch.setattr(ReadAhead, "_start", spy)
    monkeypatch.setattr(change, "chunk_changes", counted)
    west, south, east, north_ = SMALL_BLOCKS.bounds
    box = [west + 1, south + 1, east - 1, north_ - 1]
    with aefsql.connect(catalog=str(index)) as con:
        table = changes(con, str(box), extra=", years := [2023, 2024, 2025], crs := 32633")
    assert started == ["change"] and len(computed) == 2  # each vector once, the second ahead
    assert table.num_rows == 2 * SMALL_BLOCKS.width * SMALL_BLOCKS.height
    check_against_gdal(table, {(SMALL_BLOCKS.epsg, y): [p] for y, p in files.items()})
