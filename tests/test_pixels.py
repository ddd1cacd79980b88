"""aef_pixels and aef_zonal against GDAL: rasterio window reads masked by
rasterio.features.geometry_mask (the pixel-centre rule), on the GDAL-written collection."""

import numpy as np
import pyarrow as pa
import pytest
import rasterio
import rasterio.warp
import shapely
from gdal_fixtures import COLLECTION_TILES, PIXEL, collection_path
from helpers import assert_same, by_pixel, star
from rasterio.features import geometry_mask

import aefsql
from aefsql.aef import BAND_NAMES
from aefsql.geometry.geo import polygon_wkb


def tile_file(folder, year, k):
    return folder / collection_path(year, k)


def gdal_pixels(path, rings):
    """{(row, col): int16 values (64,)} of the pixels whose centres lie inside `rings` (in
    the file's CRS), read with rasterio; -999 for nodata."""
    with rasterio.open(path) as ds:
        geometry = {"type": "Polygon", "coordinates": [r.tolist() for r in rings]}
        inside = geometry_mask([geometry], (ds.height, ds.width), ds.transform, invert=True)
        data = ds.read().astype(np.int16)
    data = np.where(data == -128, -999, data)
    rows, cols = np.nonzero(inside)
    return {(r, c): data[:, r, c] for r, c in zip(rows.tolist(), cols.tolist(), strict=True)}


def ours(con, ring, epsg, years=2023):
    wkb = polygon_wkb(ring[:, 0], ring[:, 1])
    return con.execute(
        f"SELECT * FROM aef_pixels(?::BLOB, years := {years}, crs := {epsg}) "
        "ORDER BY year, path, row, col",
        [wkb],
    ).to_arrow_table()


@pytest.mark.parametrize("seed", range(3))
def test_pixels_inside_one_tile_equal_gdal(con, gdal_collection, seed):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    ring = star(x0 + 1200, y0 + 1100, 700, seed=seed)
    table = ours(con, ring, epsg)
    path = tile_file(gdal_collection.folder, 2023, 3)
    expected = gdal_pixels(path, [ring])
    assert len(expected) > 1000
    assert_same(by_pixel(table, path), expected)
    assert table.num_rows == len(expected)
    # x/y are the pixel centres; lon/lat the same points
    with rasterio.open(path) as ds:
        rows, cols = table["row"].to_numpy(), table["col"].to_numpy()
        x, y = rasterio.transform.xy(ds.transform, rows, cols)
    assert np.allclose(table["x"].to_numpy(), x) and np.allclose(table["y"].to_numpy(), y)


def test_pixels_from_two_tiles_of_one_zone_equal_gdal(con, gdal_collection):
    """Around the corner where tiles 1 and 2 (both 33N) meet: each contributes its own
    pixels, read from its own file."""
    _, epsg, x2, y2 = COLLECTION_TILES[2]
    ring = star(x2, y2, 600, n=12, seed=4)
    table = ours(con, ring, epsg)
    for k in (1, 2):
        path = tile_file(gdal_collection.folder, 2023, k)
        expected = gdal_pixels(path, [ring])
        assert len(expected) > 100
        assert_same(by_pixel(table, path), expected)


def test_seam_overlap_counts_every_location_once(con, gdal_collection):
    """Tiles 0 (32N) and 1 (33N) overlap across 12°E: each pixel centre is kept in the
    tile `aef_locate` gives it, so no place is counted twice and none is lost."""
    area = [11.99, 45.0, 12.01, 45.01]
    table = con.sql(f"SELECT * FROM aef_pixels({area}, years := 2023)").to_arrow_table()
    assert len(set(table["path"].to_pylist())) == 2
    con.register("px", table.select(["path", "lon", "lat"]))
    located = con.sql(
        "SELECT count(*) FILTER (WHERE aef_locate(lon, lat, 2023) = path) FROM px"
    ).fetchall()[0][0]
    con.unregister("px")
    assert located == table.num_rows
    # No gap: every pixel centre of either tile inside the box (the box's straight lon/lat
    # edges, tested on the centres' lon/lat) that aef_locate gives that tile is there.
    for k in (0, 1):
        path = tile_file(gdal_collection.folder, 2023, k)
        with rasterio.open(path) as ds:
            rows, cols = np.mgrid[0 : ds.height, 0 : ds.width]
            x, y = rasterio.transform.xy(ds.transform, rows.ravel(), cols.ravel())
            lon, lat = rasterio.warp.transform(ds.crs, "EPSG:4326", x, y)
        lon, lat = np.array(lon), np.array(lat)
        inside = (lon >= area[0]) & (lon < area[2]) & (lat >= area[1]) & (lat < area[3])
        con.register(
            "centres",
            pa.table(
                {
                    "lon": lon[inside],
                    "lat": lat[inside],
                    "row": rows.ravel()[inside],
                    "col": cols.ravel()[inside],
                }
            ),
        )
        owned = con.sql(
            f"SELECT row, col FROM centres WHERE aef_locate(lon, lat, 2023) = '{path}'"
        ).fetchall()
        con.unregister("centres")
        assert set(by_pixel(table, path)) == set(owned) and len(owned) > 100
    # values are GDAL's
    for k in (0, 1):
        path = tile_file(gdal_collection.folder, 2023, k)
        got = by_pixel(table, path)
        with rasterio.open(path) as ds:
            data = np.where((d := ds.read().astype(np.int16)) == -128, -999, d)
        for (r, c), values in got.items():
            assert np.array_equal(values, data[:, r, c])


def test_two_years_join_on_location(con):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    ring = star(x0 + 800, y0 + 800, 300, seed=9)
    wkb = polygon_wkb(ring[:, 0], ring[:, 1])
    rows = con.execute(
        f"WITH p AS (FROM aef_pixels(?::BLOB, years := [2023, 2024], crs := {epsg})) "
        "SELECT count(*), count(DISTINCT a.location) FROM p a JOIN p b "
        "ON a.location = b.location AND a.year = 2023 AND b.year = 2024 "
        "AND a.row = b.row AND a.col = b.col",
        [wkb],
    ).fetchall()[0]
    single = con.execute(
        f"SELECT count(*) FROM aef_pixels(?::BLOB, years := 2023, crs := {epsg})", [wkb]
    ).fetchall()[0][0]
    assert rows == (single, single) and single > 100


def test_areas_that_hold_nothing(con):
    empty = con.sql("SELECT count(*) FROM aef_pixels([-30.0, 30.0, -29.9, 30.1], years := 2023)")
    assert empty.fetchall() == [(0,)]
    with pytest.raises(Exception, match="an area is a GEOMETRY"):
        con.sql("SELECT * FROM aef_pixels('not a geometry', years := 2023)").fetchall()
    # Malformed WKT: DuckDB's own message, with where the parse failed (try_cast loses it).
    bad = "POLYGON((10 40, 11 40, 11 41 10 40))"
    for function in ("aef_pixels", "aef_area_plan"):
        with pytest.raises(Exception, match=r"an area is a GEOMETRY.*Expected .* at offset 29"):
            con.sql(f"SELECT * FROM {function}('{bad}', years := 2023)").fetchall()
    with pytest.raises(Exception, match="outside lon/lat range"):
        # UTM numbers given as lon/lat
        con.sql(
            "SELECT * FROM aef_pixels([262000, 4986000, 263000, 4987000], years := 2023)"
        ).fetchall()


def test_zonal_means_equal_numpy_over_gdal_masks(con, gdal_collection):
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    rings = [star(x0 + 500 + 350 * i, y0 + 600 + 170 * i, 150 + 40 * i, seed=i) for i in range(5)]
    # a polygon smaller than a pixel, holding no pixel centre: the pixel under its centroid
    tiny = np.array(
        [
            [x0 + 1002.0, y0 + 1002.0],
            [x0 + 1004.0, y0 + 1002.0],
            [x0 + 1004.0, y0 + 1004.0],
            [x0 + 1002.0, y0 + 1002.0],
        ]
    )
    rings.append(tiny)
    polygons = pa.table(
        {
            "parcel": [f"f{i}" for i in range(len(rings))],
            "geom": [polygon_wkb(r[:, 0], r[:, 1]) for r in rings],
        }
    )
    con.register("parcels", polygons)
    table = con.sql(
        f"SELECT * FROM aef_zonal('parcels', years := [2023, 2024], crs := {epsg})"
    ).to_arrow_table()
    con.unregister("parcels")
    assert table["parcel"].to_pylist() == [
        p for p in polygons["parcel"].to_pylist() for _ in (0, 1)
    ]
    for i, row in enumerate(table.to_pylist()):
        k = i // 2
        path = tile_file(gdal_collection.folder, row["year"], 3)
        if k == len(rings) - 1:  # the tiny one
            assert row["centroid_pixel"] and row["pixels"] == 1
            continue
        pixels = gdal_pixels(path, [rings[k]])
        values = np.array(list(pixels.values()))
        valid = values[(values != -999).all(axis=1)]
        assert row["pixels"] == len(pixels) and not row["centroid_pixel"]
        assert row["nodata_pixels"] == len(values) - len(valid)
        expected = (np.sign(valid) * (np.abs(valid) / 127.5) ** 2).mean(axis=0)
        assert np.allclose(row["embedding"], expected, atol=1e-6)


def test_zonal_without_coverage_and_bad_columns(con):
    con.execute(
        "CREATE OR REPLACE TEMP TABLE sea AS "
        "SELECT 'sea' AS name, 'POLYGON((-30 30, -29 30, -29 31, -30 30))'::GEOMETRY AS geom"
    )
    rows = con.sql(
        "SELECT name, year, pixels, embedding FROM aef_zonal('sea', years := 2023)"
    ).fetchall()
    assert rows == [("sea", 2023, 0, None)]
    with pytest.raises(Exception, match=r"no column 'shape' \(geometry_column\)"):
        con.sql(
            "SELECT * FROM aef_zonal('sea', years := 2023, geometry_column := 'shape')"
        ).fetchall()


def test_band_selection(con):
    table = con.sql(
        "SELECT * FROM aef_pixels([12.0, 45.0, 12.002, 45.002], years := 2023, bands := ['A05'])"
    ).to_arrow_table()
    assert table.column_names == [
        "year",
        "location",
        "path",
        "row",
        "col",
        "x",
        "y",
        "crs",  # of x/y (issue 21): an area across a seam has two
        "lon",
        "lat",
        "A05",
    ]
    assert "A00" in BAND_NAMES and table.num_rows > 0
    assert PIXEL == 10.0


def test_a_huge_area_is_refused_before_anything_is_read(http_collection):
    """An area is counted by what it covers of the catalog's tiles: a continent over three
    small tiles is their pixels; past max_bytes it is refused with its estimate, the catalog
    read but no header or block."""
    con = aefsql.connect(catalog=http_collection.index)
    try:
        http_collection.log.clear()
        covers = r"the area covers about [\d,]+ pixels of the catalog's tiles.*max_bytes"
        with pytest.raises(Exception, match=covers):
            con.sql(
                "SELECT count(*) FROM aef_pixels([0.0, 40.0, 20.0, 50.0], years := 2023, "
                "max_bytes := 1000000)"
            ).fetchall()
        assert not [p for _, p, _ in http_collection.log.requests if p.endswith(".tiff")]
        small = con.sql(
            "SELECT count(*) FROM aef_pixels([12.0, 45.0, 12.001, 45.001], "
            "years := 2023, bands := ['A00'], max_bytes := 100000)"
        ).fetchall()
        assert small[0][0] > 0
        with pytest.raises(Exception, match="max_bytes"):
            con.sql(
                "SELECT count(*) FROM aef_pixels([12.0, 45.0, 12.01, 45.01], "
                "years := 2023, max_bytes := 1000)"
            ).fetchall()
    finally:
        con.close()


def test_empty_self_intersecting_and_antimeridian_areas(con, gdal_collection):
    assert con.sql(
        "SELECT count(*) FROM aef_pixels('POLYGON EMPTY', years := 2023)"
    ).fetchall() == [(0,)]
    assert con.sql(
        "SELECT count(*) FROM aef_pixels([179.9, -1.0, -179.9, 1.0], years := 2023)"
    ).fetchall() == [(0,)]
    # A bow tie: the even-odd rule, as GDAL rasterizes it.
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    bowtie = np.array(
        [
            [x0 + 200, y0 + 200],
            [x0 + 900, y0 + 900],
            [x0 + 900, y0 + 200],
            [x0 + 200, y0 + 900],
            [x0 + 200, y0 + 200],
        ]
    )
    table = ours(con, bowtie, epsg)
    path = tile_file(gdal_collection.folder, 2023, 3)
    assert_same(by_pixel(table, path), gdal_pixels(path, [bowtie]))


def test_zonal_overlaps_seams_and_missing_geometries(con, gdal_collection):
    """Polygons that overlap count their shared pixels in each; one across the 12°E seam
    counts every location once (as aef_pixels, checked against GDAL above, gives them); a
    NULL geometry keeps its row with no pixel."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    box = np.array([[0, 0], [300, 0], [300, 200], [0, 200], [0, 0]], float)
    square = box + [x0 + 400, y0 + 400]
    seam = star(12.0, 45.005, 0.003, n=10, seed=7)  # lon/lat, across zones 32 and 33
    polygons = pa.table(
        {
            "parcel": ["a", "a again", "b", "none"],
            "geom": [
                polygon_wkb(square[:, 0], square[:, 1]),
                polygon_wkb(square[:, 0], square[:, 1]),
                polygon_wkb(square[:, 0] + 150, square[:, 1] + 100),  # overlaps a
                None,
            ],
        }
    )
    con.register("parcels", polygons)
    table = con.sql(
        f"SELECT * FROM aef_zonal('parcels', years := 2023, crs := {epsg})"
    ).to_arrow_table()
    con.unregister("parcels")
    rows = {r["parcel"]: r for r in table.to_pylist()}
    assert table.num_rows == 4
    path = tile_file(gdal_collection.folder, 2023, 3)
    for name, ring in (("a", square), ("a again", square), ("b", square + [150, 100])):
        pixels = gdal_pixels(path, [ring])
        values = np.array(list(pixels.values()))
        assert rows[name]["pixels"] == len(pixels) == 30 * 20
        valid = values[(values != -999).all(axis=1)]
        assert rows[name]["nodata_pixels"] == len(values) - len(valid)
        expected = (np.sign(valid) * (np.abs(valid) / 127.5) ** 2).mean(axis=0)
        assert np.allclose(rows[name]["embedding"], expected, atol=1e-6)
    assert rows["none"]["pixels"] == 0 and rows["none"]["embedding"] is None

    # The seam polygon, in lon/lat: its zonal mean is the mean of aef_pixels' rows.
    seam_wkb = polygon_wkb(seam[:, 0], seam[:, 1])
    con.register("seam", pa.table({"geom": [seam_wkb]}))
    zonal = con.sql("SELECT * FROM aef_zonal('seam', years := 2023)").to_arrow_table()
    con.unregister("seam")
    pixels = ours(con, seam, 4326)
    assert len(set(pixels["path"].to_pylist())) == 2  # both zones' tiles contribute
    values = np.array(
        [pixels[f"A{b:02d}"].cast(pa.int16()).fill_null(-999).to_numpy() for b in range(64)]
    ).T
    valid = values[(values != -999).all(axis=1)]
    assert zonal["pixels"][0].as_py() == pixels.num_rows
    assert zonal["nodata_pixels"][0].as_py() == len(values) - len(valid)
    expected = (np.sign(valid) * (np.abs(valid) / 127.5) ** 2).mean(axis=0)
    assert np.allclose(zonal["embedding"][0].as_py(), expected, atol=1e-6)


def test_a_lonlat_area_smaller_than_a_pixel_gets_the_pixel_under_its_centre(con, gdal_collection):
    """A box of 10⁻⁵ degrees (about a metre) in lon/lat holds no pixel centre: it gets the one
    pixel its centre lies in, as GDAL indexes it. (The centroid used to be summed from
    coordinates of ~45 and lost every digit: the pixel a kilometre away, or none.)"""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    path = tile_file(gdal_collection.folder, 2023, 3)
    rng = np.random.default_rng(11)
    with rasterio.open(path) as ds:
        data = ds.read()
        for _ in range(8):
            col, row = rng.integers(20, 180, 2)
            x, y = ds.xy(row, col)  # the pixel's centre
            x, y = x + rng.uniform(-3, 3), y + rng.uniform(-3, 3)  # a metre-box inside it
            (lon,), (lat,) = rasterio.warp.transform(f"EPSG:{epsg}", "EPSG:4326", [x], [y])
            box = [lon - 5e-6, lat - 5e-6, lon + 5e-6, lat + 5e-6]
            got = con.sql(f"SELECT * FROM aef_pixels({box}, years := 2023)").fetchall()
            names = con.sql(f"SELECT * FROM aef_pixels({box}, years := 2023)").columns
            assert len(got) == 1
            values = [got[0][names.index(b)] for b in BAND_NAMES]
            want = data[:, row, col]
            assert values == [None if v == -128 else int(v) for v in want]


def test_overlapping_multipolygon_parts_are_joined_in_pixels_and_zonal(con, gdal_collection):
    """aef_pixels and aef_zonal take a multipolygon's overlapping parts together, as GDAL
    burns them (the overlap is inside, not a hole)."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    a, b = star(x0 + 900, y0 + 900, 500, seed=1), star(x0 + 1300, y0 + 1200, 500, seed=2)
    path = tile_file(gdal_collection.folder, 2023, 3)
    geometry = {"type": "MultiPolygon", "coordinates": [[a.tolist()], [b.tolist()]]}
    with rasterio.open(path) as ds:
        inside = geometry_mask([geometry], (ds.height, ds.width), ds.transform, invert=True)
        one = geometry_mask(
            [{"type": "Polygon", "coordinates": [a.tolist()]}],
            (ds.height, ds.width),
            ds.transform,
            invert=True,
        )
        data = ds.read()
    assert (one & ~inside).sum() == 0 and one.sum() < inside.sum()
    wkb = shapely.MultiPolygon([shapely.Polygon(a), shapely.Polygon(b)]).wkb
    table = con.execute(
        f"SELECT row, col, A05 FROM aef_pixels(?::BLOB, years := 2023, crs := {epsg})", [wkb]
    ).to_arrow_table()
    got = set(zip(table["row"].to_pylist(), table["col"].to_pylist(), strict=True))
    assert got == set(zip(*np.nonzero(inside), strict=True))
    con.register("shapes", pa.table({"geom": [wkb]}))
    ((pixels,),) = con.sql(
        f"SELECT pixels FROM aef_zonal('shapes', years := 2023, crs := {epsg})"
    ).fetchall()
    con.unregister("shapes")
    assert pixels == inside.sum()
    assert sorted(table["A05"].to_pylist(), key=lambda v: (v is None, v)) == sorted(
        (None if v == -128 else int(v) for v in data[5][inside]), key=lambda v: (v is None, v)
    )
