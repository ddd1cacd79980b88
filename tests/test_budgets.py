"""One budget rule (aefsql/kernels/budgets.py): areas measured on the ellipsoid from their own
vertices, counted by what they cover of the catalog's tiles, one message shape, checked
before anything is read; the whole-world box returns every covered pixel once.

Independent references: pyproj.Geod for areas on the ellipsoid, the closed-form surface of
the WGS84 ellipsoid, shapely for polygon clipping, rasterio + pyproj for the pixels each
demo tile owns."""

import inspect
import math
import re

import numpy as np
import pyarrow as pa
import pyproj
import pytest
import rasterio
import shapely
from gdal_fixtures import COLLECTION_TILES, PIXEL

import aefsql
from aefsql.demo import write_demo_collection
from aefsql.errors import AefsqlError
from aefsql.geometry.areas import Area, box_ring, clipped_to_box, densified, surface
from aefsql.kernels.budgets import (
    RASTER_BYTES,
    STREAMED_BYTES,
    WINDOW_BYTES,
    area_pixels,
    ring_area,
)
from aefsql.kernels.chips import chips_per_call

WORLD = [-180.0, -90.0, 180.0, 90.0]
WORLD_WKT = "POLYGON((-180 -90, 180 -90, 180 90, -180 90, -180 -90))"
# The one message shape: '<what> x B bands [x Y year(s)] are N <unit> of int8, above
# max_bytes (M <unit>): ask for … (or raise max_bytes)'.
SHAPE = (
    r"x \d+ bands( x \d+ year\(s\))? are [\d.,]+ (bytes|KiB|MiB|GiB) of int8, "
    r"above max_bytes \("
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    return folder, str(write_demo_collection(folder, tile_px=256))


@pytest.fixture(scope="module")
def demo_con(demo):
    con = aefsql.connect(catalog=demo[1])
    yield con
    con.close()


# -- areas on the ellipsoid, and clipping ---------------------------------------------------


@pytest.mark.parametrize(
    "box",
    [
        (12.0, 45.0, 12.1, 45.1),
        (-10.0, -60.0, 10.0, -59.0),
        (30.0, 0.0, 31.0, 1.0),
        (100.0, 70.0, 101.0, 89.0),
        (-75.0, -33.0, -70.0, -20.0),
    ],
)
def test_ring_area_equals_pyproj_geod(box):
    """Edges straight in lon/lat, densified for Geod (whose edges are geodesics)."""
    ring = densified(box_ring(*box), 0.001)
    expected, _ = pyproj.Geod(ellps="WGS84").polygon_area_perimeter(ring[:, 0], ring[:, 1])
    assert ring_area(box_ring(*box)) == pytest.approx(abs(expected), rel=1e-6)


def test_ring_area_of_a_star_equals_pyproj_geod():
    rng = np.random.default_rng(4)
    for _ in range(20):
        lon0, lat0 = rng.uniform(-170, 170), rng.uniform(-70, 70)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
        radius = rng.uniform(0.05, 0.5, 12)
        ring = np.column_stack([lon0 + radius * np.cos(angles), lat0 + radius * np.sin(angles)])
        ring = np.vstack([ring, ring[:1]])
        fine = densified(ring, 0.0005)
        expected, _ = pyproj.Geod(ellps="WGS84").polygon_area_perimeter(fine[:, 0], fine[:, 1])
        assert ring_area(ring) == pytest.approx(abs(expected), rel=1e-5)


def test_the_world_box_is_the_whole_ellipsoid():
    a, f = 6378137.0, 1 / 298.257223563
    e = math.sqrt(f * (2 - f))
    ellipsoid = 2 * math.pi * a * a * (1 + (1 - e * e) / e * math.atanh(e))
    assert ring_area(box_ring(*WORLD)) == pytest.approx(ellipsoid, rel=1e-9)
    # Two half-world boxes, as a box across the antimeridian becomes, add up to it too.
    halves = Area((box_ring(0.0, -90.0, 180.0, 90.0), box_ring(-180.0, -90.0, 0.0, 90.0)), 4326)
    assert area_pixels(halves) == pytest.approx(ellipsoid / PIXEL**2, rel=1e-9)


def random_polygon(rng):
    """A valid star-shaped ring around the origin, with a star-shaped hole when it fits."""
    while True:
        n = int(rng.integers(3, 30))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(0.5, 2.0, n)
        outer = np.column_stack([np.cos(angles) * radius, np.sin(angles) * radius])
        hole = np.column_stack([np.cos(angles) * 0.2, np.sin(angles) * 0.2])[::-1]
        rings = [np.vstack([outer, outer[:1]]), np.vstack([hole, hole[:1]])]
        for chosen in (rings, rings[:1]):
            if shapely.Polygon(chosen[0], chosen[1:]).is_valid:
                return chosen


def test_clipped_to_box_equals_shapely():
    rng = np.random.default_rng(11)
    for _ in range(300):
        rings = random_polygon(rng)
        west, south = rng.uniform(-2.5, 1.0, 2)
        east, north = west + rng.uniform(0.01, 3.0), south + rng.uniform(0.01, 3.0)
        clipped = clipped_to_box(Area(tuple(rings), 4326), west, south, east, north)
        expected = shapely.Polygon(rings[0], rings[1:]).intersection(
            shapely.box(west, south, east, north)
        )
        assert surface(clipped) == pytest.approx(expected.area, abs=1e-12)
        for ring in clipped.rings:  # inside the box, closed
            assert np.array_equal(ring[0], ring[-1])
            assert (ring[:, 0] >= west).all() and (ring[:, 0] <= east).all()
            assert (ring[:, 1] >= south).all() and (ring[:, 1] <= north).all()
    ring = box_ring(0.0, 0.0, 1.0, 1.0)
    assert clipped_to_box(Area((ring,), 4326), 2.0, 2.0, 3.0, 3.0).empty
    assert surface(clipped_to_box(Area((ring,), 4326), -1.0, -1.0, 2.0, 2.0)) == 1.0


# -- the whole-world box --------------------------------------------------------------------


def owned_pixels(folder, index, year) -> int:
    """The pixels of `year` whose centre belongs to their own tile (rasterio and pyproj):
    where two zones' tiles overlap, a centre belongs to the tile of its own UTM zone."""
    import pyarrow.parquet as pq

    rows = [r for r in pq.read_table(index).to_pylist() if r["year"] == year]
    rasters = []
    for row in rows:
        with rasterio.open(folder / row["path"]) as ds:
            rasters.append((ds.crs.to_epsg(), ds.transform, ds.width, ds.height))
    total = 0
    for epsg, transform, width, height in rasters:
        cols, rows_ = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
        x, y = transform @ (cols.ravel(), rows_.ravel())
        lon, lat = pyproj.Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
        zone = np.floor((np.asarray(lon) + 180) / 6).astype(int) + 1
        taken = np.zeros(zone.size, dtype=bool)  # held by a tile of the centre's own zone
        for other, t2, w2, h2 in rasters:
            if other == epsg:
                continue
            ox, oy = pyproj.Transformer.from_crs(4326, other, always_xy=True).transform(lon, lat)
            c, r = ~t2 @ (np.asarray(ox), np.asarray(oy))
            inside = (c >= 0) & (c < w2) & (r >= 0) & (r < h2)
            taken |= inside & (zone == other % 100)
        total += int(((zone == epsg % 100) | ~taken).sum())
    return total


@pytest.mark.parametrize("area", [WORLD, [-130.0, -20.0, 40.0, 50.0]])
def test_a_world_box_returns_every_covered_pixel_once(demo, demo_con, area):
    """Before: the box projected into one UTM zone folded (the world box: ~0 m², 0 rows
    after minutes; a 170° box: 'vertices cannot be projected')."""
    folder, index = demo
    table = demo_con.sql(
        f"SELECT year, count(*) AS n, count(DISTINCT (path, row, col)) AS once "
        f"FROM aef_pixels({area}, years := [2023, 2024], bands := ['A00']) "
        "GROUP BY year ORDER BY year"
    ).fetchall()
    expected = [(year, owned_pixels(folder, index, year)) for year in (2023, 2024)]
    assert [(y, n) for y, n, _ in table] == expected
    assert [(y, once) for y, _, once in table] == expected
    assert expected[0][1] > 4 * 256 * 256  # every tile is in it


def test_zonal_of_a_world_polygon(demo, demo_con):
    folder, index = demo
    demo_con.execute(
        f"CREATE OR REPLACE TEMP TABLE world AS SELECT '{WORLD_WKT}'::GEOMETRY AS geom"
    )
    zonal = demo_con.sql(
        "SELECT year, pixels, embedding[1] FROM aef_zonal('world', years := [2023, 2024]) "
        "ORDER BY year"
    ).fetchall()
    means = demo_con.sql(
        f"SELECT year, count(*), avg(sign(A00) * (A00 / 127.5)^2) FROM aef_pixels({WORLD}, "
        "years := [2023, 2024]) WHERE COLUMNS('A[0-9][0-9]') IS NOT NULL "
        "GROUP BY year ORDER BY year"
    ).fetchall()
    assert [(y, p) for y, p, _ in zonal] == [
        (y, owned_pixels(folder, index, y)) for y in (2023, 2024)
    ]
    for (_, _, mean), (_, _, expected) in zip(zonal, means, strict=True):
        assert mean == pytest.approx(expected, rel=1e-5)


# -- estimates: true, and before anything is read -------------------------------------------


def estimate(message: str) -> float:
    return float(re.search(r"about ([\d,]+) pixels", message).group(1).replace(",", ""))


def test_the_covered_estimate_is_close_to_the_truth(demo, demo_con):
    folder, index = demo
    truth = owned_pixels(folder, index, 2024)
    with pytest.raises(Exception, match=SHAPE) as refused:
        demo_con.sql(
            f"SELECT count(*) FROM aef_pixels({WORLD}, years := 2024, max_bytes := 1000)"
        ).fetchall()
    found = estimate(str(refused.value))
    # An upper bound: tiles' lon/lat boxes hold more than their rasters, overlaps count twice.
    assert truth <= found <= 1.5 * truth


def test_read_area_estimates_a_world_box_by_its_size():
    """Before: the window of the box projected into one zone, 75x too few pixels."""
    for box in (WORLD, [-60.0, -30.0, 0.0, 30.0]):
        with pytest.raises(AefsqlError, match=SHAPE) as refused:
            aefsql.read_area(box, 2024, catalog="/nonexistent/index.parquet")
        found = float(re.search(r"([\d,]+) pixels", str(refused.value)).group(1).replace(",", ""))
        truth = area_pixels(Area((box_ring(*box),), 4326))
        assert 0.999 * truth <= found <= 2 * truth


def test_zonal_is_refused_before_its_chunks_are_laid_out(http_collection):
    """aef_zonal has max_bytes := and checks each polygon before any header or block read
    (before: no such argument, and the check came after laying out every chunk)."""
    _, epsg, x0, y0 = COLLECTION_TILES[1]
    with aefsql.connect(catalog=http_collection.index) as con:
        con.execute(
            "CREATE TEMP TABLE fields AS SELECT * FROM (VALUES (1, 'POLYGON((11.9 44.9, 12.2 "
            "44.9, 12.2 45.2, 11.9 45.2, 11.9 44.9))'::GEOMETRY)) t(id, geom)"
        )
        http_collection.log.clear()
        with pytest.raises(Exception, match="polygon 1: the area covers about .*" + SHAPE):
            con.sql("FROM aef_zonal('fields', years := 2023, max_bytes := 100000)").fetchall()
        assert not [p for _, p, _ in http_collection.log.requests if p.endswith(".tiff")]
        # on_error := 'null': the polygon keeps its row, with the refusal as its aef_error.
        kept = con.sql(
            "SELECT pixels, aef_error FROM aef_zonal('fields', years := 2023, "
            "max_bytes := 100000, on_error := 'null')"
        ).fetchall()
        assert kept[0][0] is None and re.search("the area covers about .*" + SHAPE, kept[0][1])
        assert not [p for _, p, _ in http_collection.log.requests if p.endswith(".tiff")]
        rows = con.sql("FROM aef_zonal('fields', years := 2023)").fetchall()
        assert rows[0][3] > 0  # pixels, within the default budget
        # aefsql.zonal takes max_bytes too (it had none, and refused the name)
        fields = con.sql("SELECT id, ST_AsWKB(geom) AS geom FROM fields").to_arrow_table()
    http_collection.log.clear()
    with pytest.raises(Exception, match="polygon 1: the area covers about .*" + SHAPE):
        aefsql.zonal(fields, years=2023, max_bytes=100000, catalog=http_collection.index)
    assert not [p for _, p, _ in http_collection.log.requests if p.endswith(".tiff")]


def test_every_function_speaks_the_same_message(demo_con, demo):
    box = [36.8, -1.3, 36.9, -1.2]
    points = pa.table({"lon": [36.82], "lat": [-1.29]})
    demo_con.register("one_point", points)
    demo_con.execute(
        "CREATE OR REPLACE TEMP TABLE one_area AS SELECT 'POLYGON((36.8 -1.3, 36.9 -1.3, "
        "36.9 -1.2, 36.8 -1.2, 36.8 -1.3))'::GEOMETRY AS geom"
    )
    for query in (
        f"FROM aef_pixels({box}, years := 2024, max_bytes := 1000)",
        "FROM aef_zonal('one_area', years := 2024, max_bytes := 1000)",
        "FROM aef_chips('one_point', years := 2024, max_bytes := 1000)",
    ):
        with pytest.raises(Exception, match=SHAPE):
            demo_con.sql(query).fetchall()
    with pytest.raises(AefsqlError, match=SHAPE):
        aefsql.read_area(box, 2024, catalog=demo[1], max_bytes=1000)


def test_one_constant_per_kind_of_output():
    """The defaults are budgets.py's constants, each named after the output it bounds: no
    other module names a budget of its own (two DEFAULT_MAX_BYTES once meant 16 and 4 GiB)."""
    from aefsql.kernels import chips, engine, pixels, points, rasters

    for module in (chips, engine, pixels, points, rasters):
        assert not [n for n in vars(module) if n.startswith("DEFAULT_") and n.endswith("BYTES")]
    assert inspect.signature(rasters.read_area).parameters["max_bytes"].default == RASTER_BYTES
    assert inspect.signature(aefsql.picture).parameters["max_bytes"].default == RASTER_BYTES
    assert STREAMED_BYTES > RASTER_BYTES > WINDOW_BYTES


# -- chips: a default that fits in memory ----------------------------------------------------

# DuckDB's peak above the int8 of the chips, measured (benchmarks/bench_chip_memory.py, see
# benchmarks/README.md "Chips: peak memory"): COPY … TO parquet, the costlier of the two.
MEASURED_PEAK_PER_INT8 = 20
MACHINE = 24 * 1024**3


def test_the_chips_default_fits_a_24_gib_machine():
    assert WINDOW_BYTES * MEASURED_PEAK_PER_INT8 <= MACHINE / 2  # room to spare
    fits = WINDOW_BYTES // (64 * 64 * 64)
    assert chips_per_call(fits, 64, 64) >= 1
    with pytest.raises(AefsqlError, match=SHAPE):
        chips_per_call(fits + 1, 64, 64)


def test_aef_chips_refuses_by_default_what_would_not_fit(gdal_collection):
    """4,000 chips of 64 x 64 x 64 (1 GiB of int8) peaked past 14 GB: refused by default
    (before: accepted under the 4 GiB default), before any read."""
    _, epsg, x0, y0 = COLLECTION_TILES[3]
    rng = np.random.default_rng(3)
    x = x0 + rng.uniform(0, 2000, 4000)
    y = y0 + rng.uniform(0, 2000, 4000)
    with aefsql.connect(catalog=gdal_collection.index) as con:
        con.register("many", pa.table({"x": x, "y": y}))
        with pytest.raises(Exception, match=r"4,000 windows of 64 x 64 pixels x 64 bands"):
            con.sql(
                f"SELECT count(*) FROM aef_chips('many', years := 2023, x_column := 'x', "
                f"y_column := 'y', crs := {epsg})"
            ).fetchall()


def test_aef_chips_of_no_point(gdal_collection):
    """Before: ZeroDivisionError in the chips' plan."""
    with aefsql.connect(catalog=gdal_collection.index) as con:
        con.register(
            "none", pa.table({"lon": pa.array([], pa.float64()), "lat": pa.array([], pa.float64())})
        )
        assert con.sql("SELECT count(*) FROM aef_chips('none', years := 2023)").fetchall() == [(0,)]


# Both sides of 12°E: tiles of 32N and 33N in the GDAL collection.
BUDGET_BOX = [11.995, 44.995, 12.005, 45.005]


@pytest.mark.parametrize(
    "call",
    [
        lambda c, mb: aefsql.read_area(BUDGET_BOX, 2024, max_bytes=mb, catalog=c),
        lambda c, mb: aefsql.similarity(
            BUDGET_BOX, [0.1] * 64, years=2024, max_bytes=mb, catalog=c
        ),
        lambda c, mb: aefsql.change(BUDGET_BOX, years=[2023, 2024], max_bytes=mb, catalog=c),
        lambda c, mb: aefsql.grid(BUDGET_BOX, cell=1000, years=2024, max_bytes=mb, catalog=c),
    ],
    ids=["read_area", "similarity", "change", "grid"],
)
@pytest.mark.parametrize("bad", ["1GB", True, 1.5e9])
def test_max_bytes_that_is_not_a_number_of_bytes_is_named(gdal_collection, call, bad):
    # '1GB' used to meet a failed comparison deep down (ValueError, TypeError).
    with pytest.raises(aefsql.AefsqlError, match="max_bytes is a number of bytes, not"):
        call(gdal_collection.index, bad)


def test_a_grid_of_too_many_cells_is_refused_before_any_read(http_collection):
    """aef_grid holds every cell's 64 sums: cells far smaller than the area (10 m squares
    over a county) are refused before any header or block is read, by the cells x 64 x
    years float64 they would hold (default 512 MiB; max_bytes := raises it), while the same
    area in 1 km cells is read."""
    _, epsg, x0, y0 = COLLECTION_TILES[1]
    box = [x0 + 5.0, y0 + 5.0, x0 + 2995.0, y0 + 2595.0]  # tile 1, about 77,000 pixels
    with aefsql.connect(catalog=http_collection.index) as con:
        http_collection.log.clear()
        with pytest.raises(
            Exception,
            match=r"the grid has about [\d,]+ cell-years x 64 bands are .* of float64, above "
            r"max_bytes \(9\.5 MiB\): ask for coarser cells, fewer years or a smaller area",
        ):
            con.sql(
                f"FROM aef_grid({box}, cell := 10, years := 2023, crs := {epsg}, "
                "max_bytes := 10000000)"
            ).fetchall()
        assert not [p for _, p, _ in http_collection.log.requests if p.endswith(".tiff")]
        rows = con.sql(
            f"SELECT sum(pixels) FROM aef_grid({box}, cell := 1000, years := 2023, "
            f"crs := {epsg}, max_bytes := 10000000)"
        ).fetchall()
        assert rows[0][0] > 70_000
