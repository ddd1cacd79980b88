"""aef_zonal's bad geometries (issue 21): an unparsable WKT or WKB, a LINESTRING… fails the
query naming its row (1-based, in the table's order) and what is wrong, keeping DuckDB's
parse position; with on_error := 'null' the row is kept with NULL results and `aef_error`."""

import shutil

import numpy as np
import pyarrow as pa
import pytest
import rasterio
import shapely
from gdal_fixtures import (
    COLLECTION_TILES,
    TILE_BLOCK,
    TILE_HEIGHT,
    collection_path,
    to_lonlat,
)
from rasterio.features import geometry_mask

import aefsql
from aefsql.geometry.geo import polygon_wkb

_, EPSG, X0, Y0 = COLLECTION_TILES[3]
RING = np.array(
    [[X0 + 600, Y0 + 500], [X0 + 1500, Y0 + 600], [X0 + 1300, Y0 + 1400], [X0 + 600, Y0 + 500]]
)
GOOD = "POLYGON((" + ", ".join(f"{x} {y}" for x, y in RING) + "))"
MALFORMED = f"POLYGON(({X0 + 600} {Y0 + 500}, {X0 + 700} {Y0 + 900}"
LINE = f"LINESTRING({X0 + 600} {Y0 + 500}, {X0 + 700} {Y0 + 900})"


def zonal(con, geoms, extra=""):
    con.register("fields", pa.table({"id": list(range(10, 10 + len(geoms))), "geom": geoms}))
    try:
        return con.sql(
            f"SELECT * FROM aef_zonal('fields', years := [2023, 2024], crs := {EPSG}{extra})"
        ).to_arrow_table()
    finally:
        con.unregister("fields")


def gdal_count(path) -> int:
    """Pixel centres inside RING, by rasterio's geometry_mask."""
    with rasterio.open(path) as ds:
        mask = geometry_mask(
            [{"type": "Polygon", "coordinates": [RING.tolist()]}],
            (ds.height, ds.width),
            ds.transform,
            invert=True,
        )
    return int(mask.sum())


def test_malformed_wkt_names_its_row_and_keeps_the_parse_position(con):
    with pytest.raises(
        Exception, match=r"aef_zonal: row 2: .*Expected '\)' but got end of input at offset \d+"
    ):
        zonal(con, [GOOD, MALFORMED, GOOD])


def test_a_linestring_names_its_row(con):
    with pytest.raises(Exception, match=r"aef_zonal: row 3: area is a linestring"):
        zonal(con, [GOOD, None, LINE])


def test_malformed_wkb_names_its_row(con):
    blob = polygon_wkb(RING[:, 0], RING[:, 1])
    with pytest.raises(
        Exception, match=r"aef_zonal: row 2: .*Could not convert BLOB to GEOMETRY.*position"
    ):
        zonal(con, [blob, blob[:20]])


def test_on_error_null_keeps_the_rows_and_says_why(con, gdal_collection):
    table = zonal(con, [GOOD, MALFORMED, None, LINE, GOOD], ", on_error := 'null'")
    assert table.column_names == [
        "id",
        "geom",
        "year",
        "pixels",
        "nodata_pixels",
        "centroid_pixel",
        "embedding",
        "aef_error",
    ]
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [i for i in range(10, 15) for _ in (0, 1)]
    clean = zonal(con, [GOOD]).to_pylist()
    for k in (0, 1, 8, 9):  # the good rows, both years: as if the bad ones were absent
        expected = {**clean[k % 2], "id": rows[k]["id"]}
        assert rows[k] == {**expected, "aef_error": None}
        path = gdal_collection.folder / collection_path(rows[k]["year"], 3)
        assert rows[k]["pixels"] == gdal_count(path) > 100
    for k in (2, 3):
        assert "Expected ')' but got end of input at offset" in rows[k]["aef_error"]
    for k in (6, 7):
        assert rows[k]["aef_error"].startswith("area is a linestring")
    for k in (2, 3, 6, 7):
        assert rows[k]["pixels"] is None and rows[k]["embedding"] is None
        assert rows[k]["nodata_pixels"] is None and rows[k]["centroid_pixel"] is None
    # A NULL geometry is no error: no pixel.
    assert [(rows[k]["pixels"], rows[k]["aef_error"]) for k in (4, 5)] == [(0, None)] * 2


def test_every_row_bad_with_on_error_null(con):
    table = zonal(con, [LINE, MALFORMED], ", on_error := 'null'")
    assert table["pixels"].to_pylist() == [None] * 4
    assert table["aef_error"].null_count == 0


def test_aef_error_only_with_on_error_null(con):
    assert "aef_error" not in zonal(con, [GOOD]).column_names
    with pytest.raises(Exception, match=r"already has column\(s\) aef_error"):
        con.register("clash", pa.table({"geom": [GOOD], "aef_error": ["x"]}))
        con.sql("SELECT * FROM aef_zonal('clash', years := 2023, on_error := 'null')").fetchall()
    # A user's aef_error column is no clash when aef_zonal adds none.
    rows = con.sql(
        f"SELECT aef_error, pixels FROM aef_zonal('clash', years := 2023, crs := {EPSG})"
    ).fetchall()
    con.unregister("clash")
    assert rows[0][0] == "x" and rows[0][1] > 100


def test_on_error_is_checked(con):
    with pytest.raises(Exception, match=r"on_error must be 'raise' or 'null', not 'skip'"):
        zonal(con, [GOOD], ", on_error := 'skip'")


def test_vertices_the_crs_cannot_map_name_their_row(con):
    far = "POLYGON((1e30 0, 2e30 0, 2e30 1e30, 1e30 0))"
    with pytest.raises(Exception, match=r"aef_zonal: row 2: area: some vertices cannot be"):
        zonal(con, [GOOD, far])
    rows = zonal(con, [GOOD, far], ", on_error := 'null'").to_pylist()
    assert rows[0]["pixels"] > 100 and rows[0]["aef_error"] is None
    assert rows[2]["pixels"] is None and "cannot be projected" in rows[2]["aef_error"]


def lonlat_polygon(epsg: int, west: float, south: float, east: float, north: float) -> str:
    """The box west..east, south..north in EPSG `epsg`, as lon/lat WKT."""
    xs, ys = [west, east, east, west, west], [south, south, north, north, south]
    lon, lat = to_lonlat(epsg, xs, ys)
    pairs = zip(lon.tolist(), lat.tolist(), strict=True)
    return "POLYGON((" + ", ".join(f"{a!r} {b!r}" for a, b in pairs) + "))"


def lonlat_square(k: int) -> str:
    """A 400 m square inside tile k of the collection, as lon/lat WKT."""
    _, epsg, x0, y0 = COLLECTION_TILES[k]
    return lonlat_polygon(epsg, x0 + 700, y0 + 700, x0 + 1100, y0 + 1100)


def rows_of(catalog: str, table: pa.Table, query: str) -> list[dict]:
    """`query`'s rows over `table`, registered as 'fields', on a connection to `catalog`."""
    with aefsql.connect(catalog=catalog) as con:
        con.register("fields", table)
        return con.sql(query).to_arrow_table().to_pylist()


def test_an_unreadable_file_fails_only_its_polygons_years(gdal_collection, tmp_path):
    """on_error := 'null' keeps a file that cannot be read to the polygon-years it holds:
    tile 2's 2024 file is not a TIFF (its header fails), tile 3's blocks are zeros (they
    fail to decode); every other polygon-year is what the intact collection gives."""
    folder = tmp_path / "collection"
    shutil.copytree(gdal_collection.folder, folder)
    (folder / collection_path(2024, 2)).write_bytes(b"<html>503 Slow Down</html>")
    cut = folder / collection_path(2024, 3)
    raw = bytearray(cut.read_bytes())
    raw[len(raw) // 4 : 3 * len(raw) // 4] = bytes(len(raw) // 2)  # zeros for its blocks
    cut.write_bytes(raw)
    table = pa.table({"id": [1, 2, 3, 4], "geom": [lonlat_square(k) for k in (0, 3, 2, 1)]})
    query = "FROM aef_zonal('fields', years := [2023, 2024]{})"
    broken = str(folder / "index.parquet")
    with pytest.raises(Exception, match=r"not a TIFF"):
        rows_of(broken, table, query.format(""))
    kept = query.format(", on_error := 'null', status := true")
    got, want = rows_of(broken, table, kept), rows_of(gdal_collection.index, table, kept)
    assert [(r["id"], r["year"]) for r in got] == [
        (i, y) for i in (1, 2, 3, 4) for y in (2023, 2024)
    ]
    failed = {(r["id"], r["year"]): r for r in got if r["status"] == "error"}
    assert sorted(failed) == [(2, 2024), (3, 2024)]
    assert collection_path(2024, 3) in failed[2, 2024]["aef_error"]
    assert collection_path(2024, 2) in failed[3, 2024]["aef_error"]
    for row in failed.values():
        assert row["pixels"] is None and row["embedding"] is None
    for row, clean in zip(got, want, strict=True):
        if (row["id"], row["year"]) not in failed:
            assert row == clean and row["status"] == "valid" and row["pixels"] > 1000


def tile_outline(k: int) -> str:
    """Tile k's whole extent, as lon/lat WKT."""
    _, epsg, x0, y0 = COLLECTION_TILES[k]
    return lonlat_polygon(epsg, x0, y0, x0 + 3000, y0 + 2600)


TILE_1 = tile_outline(1)


def test_polygons_in_batches_give_the_same_rows(gdal_collection, monkeypatch):
    """Past ZONAL_BATCH polygons aef_zonal lays them out a batch of neighbours at a time
    (memory: a state's fields at once would not fit): every row the same, in its order, as
    in one batch, with a polygon spanning tiles, a NULL geometry and a bad one among them;
    a polygon over budget is still refused before any read, under its own number."""
    from aefsql.kernels import means

    geoms = [lonlat_square(k) for k in (0, 3, 2, 1)] + [None, LINE, GOOD]
    geoms += [lonlat_square(k) for k in (1, 0)]
    table = pa.table({"id": list(range(len(geoms))), "geom": geoms})
    query = "FROM aef_zonal('fields', years := [2023, 2024], on_error := 'null') ORDER BY id, year"
    with aefsql.connect(catalog=gdal_collection.index) as con:
        con.register("fields", table)
        whole = con.sql(query).to_arrow_table()
        monkeypatch.setattr(means, "ZONAL_BATCH", 2)
        batched = con.sql(query).to_arrow_table()
        con.register("huge", pa.table({"geom": [lonlat_square(0), lonlat_square(3), TILE_1]}))
        with pytest.raises(Exception, match=r"polygon 3: the area covers about"):
            con.sql("FROM aef_zonal('huge', years := 2023, max_bytes := 200000)").fetchall()
    assert batched.equals(whole)
    # LINE, and GOOD's UTM numbers taken as lon/lat, both years: NULL with their reason
    failed = whole["aef_error"].is_valid().to_pylist()
    assert sum(failed) == 4 and whole["pixels"].is_null().to_pylist() == failed
    assert whole.num_rows == 2 * table.num_rows


def test_a_block_that_cannot_be_read_fails_only_the_polygons_it_holds(gdal_collection, tmp_path):
    """A file whose header reads but one of whose blocks does not (its bytes zeroed in every
    band, found by tifffile) fails the polygon-years holding pixels of that block, and no
    other: a polygon in another block of the same file is what the intact file gives."""
    import tifffile

    folder = tmp_path / "collection"
    shutil.copytree(gdal_collection.folder, folder)
    path = folder / collection_path(2024, 3)
    raw = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        across = -(-page.imagewidth // page.tilewidth)
        per_band = across * -(-page.imagelength // page.tilelength)
        offsets, counts = page.dataoffsets, page.databytecounts
        # the block of the second block row and column, in every band (planar: band-major)
        for band in range(page.samplesperpixel):
            k = band * per_band + 1 * across + 1
            raw[offsets[k] : offsets[k] + counts[k]] = bytes(counts[k])
        south_up = page.tags["ModelTransformationTag"].value[5] > 0
    path.write_bytes(raw)
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    block_m = TILE_BLOCK * 10.0

    def square(col: float, row: float) -> str:
        """A 200 m square centred in block (row, col) of tile 3 (rows from the file's top)."""
        x = x0 + col * block_m + block_m / 2
        y = y0 + (row if south_up else (TILE_HEIGHT / TILE_BLOCK - row)) * block_m
        y += block_m / 2 if south_up else -block_m / 2
        return lonlat_polygon(epsg, x - 100, y - 100, x + 100, y + 100)

    table = pa.table({"id": [1, 2, 3], "geom": [square(0, 0), square(1, 1), square(0, 1)]})
    query = "FROM aef_zonal('fields', years := 2024, on_error := 'null', status := true)"
    broken = str(folder / "index.parquet")
    got = rows_of(broken, table, query + " ORDER BY id")
    want = rows_of(gdal_collection.index, table, query + " ORDER BY id")
    with pytest.raises(Exception, match="corrupt|ZSTD|zstd"):
        rows_of(broken, table, "FROM aef_zonal('fields', years := 2024)")
    assert [r["status"] for r in got] == ["valid", "error", "valid"]
    assert collection_path(2024, 3) in got[1]["aef_error"]
    assert got[0] == want[0] and got[2] == want[2] and want[1]["status"] == "valid"


def test_the_budget_counts_every_year_with_on_error_null(gdal_collection):
    """max_bytes counts a polygon's pixels x 64 bands x all its years whether on_error is
    'raise' or 'null': a square of ~1,600 pixels over two years (~200 KiB) is refused at
    200,000 bytes either way, with 'null' as both its polygon-years' aef_error, and the
    other polygons are read as if it were absent."""
    table = pa.table(
        {
            "id": [1, 2],
            "geom": [
                lonlat_square(0),
                lonlat_polygon(
                    COLLECTION_TILES[3][1],
                    COLLECTION_TILES[3][2] + 700,
                    COLLECTION_TILES[3][3] + 700,
                    COLLECTION_TILES[3][2] + 800,
                    COLLECTION_TILES[3][3] + 800,
                ),
            ],
        }
    )
    query = (
        "FROM aef_zonal('fields', years := [2023, 2024], max_bytes := 200000{}) ORDER BY id, year"
    )
    with pytest.raises(
        Exception, match=r"polygon 1: the area covers about [\d,]+ pixels .* 2 year"
    ):
        rows_of(gdal_collection.index, table, query.format(""))
    rows = rows_of(gdal_collection.index, table, query.format(", on_error := 'null'"))
    assert [r["aef_error"] is not None for r in rows] == [True, True, False, False]
    assert "polygon 1: the area covers about" in rows[0]["aef_error"]
    alone = rows_of(gdal_collection.index, table.slice(1), query.format(""))
    assert [r["embedding"] for r in rows[2:]] == [r["embedding"] for r in alone]


def test_a_cancelled_call_ends_with_cancelled_under_on_error_null(gdal_collection):
    """on_error := 'null' keeps failures to their polygon-years, but a cancelled session
    (Ctrl-C in the shell) ends the call: no row 'cancelled', no retries."""
    from aefsql.errors import Cancelled
    from aefsql.geometry.areas import area_from
    from aefsql.kernels.means import isolated_zonal_means
    from aefsql.session import open_session

    session = open_session(gdal_collection.index)
    areas = [area_from(shapely.from_wkt(lonlat_square(k)).wkb, 4326) for k in (0, 1, 2, 3)]
    session.cancel()
    try:
        with pytest.raises(Cancelled):
            isolated_zonal_means(session, areas, [2023, 2024])
    finally:
        session.resume()
    found, failed = isolated_zonal_means(session, areas, [2023, 2024])
    assert failed == [] and len(found.polygon) == 8
