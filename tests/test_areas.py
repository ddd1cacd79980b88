"""Areas as pixel spans, checked against GDAL's rasterizer (rasterio.features.geometry_mask,
pixel-centre rule) on north-up and south-up grids."""

import struct

import numpy as np
import pytest
from rasterio.features import geometry_mask
from rasterio.transform import Affine as RioAffine

from aefsql.errors import AefsqlError
from aefsql.format.tiff import Affine
from aefsql.geometry import geo
from aefsql.geometry.areas import (
    DENSIFY_TOLERANCE,
    MAX_AREA_VERTICES,
    Area,
    area_from,
    box_ring,
    centroid,
    chunked,
    densified,
    projected,
    projected_all,
    row_spans,
    split_at_antimeridian,
)
from aefsql.geometry.geo import box_wkb, polygon_wkb

WIDTH, HEIGHT = 120, 90


def grids():
    yield "north_up", Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000900.0)
    yield "south_up", Affine(10.0, 0.0, 500000.0, 0.0, 10.0, 4000000.0)


def mask_from_spans(spans) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    for row, col0, col1 in spans:
        mask[row, col0:col1] = True
    return mask


def gdal_mask(rings, transform: Affine) -> np.ndarray:
    geometry = {"type": "Polygon", "coordinates": [r.tolist() for r in rings]}
    rio = RioAffine(transform.a, transform.b, transform.c, transform.d, transform.e, transform.f)
    # geometry_mask is True outside; invert=True gives True inside (pixel centres).
    return geometry_mask([geometry], (HEIGHT, WIDTH), rio, invert=True, all_touched=False)


def random_polygon(rng, centre, radius, n):
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.3, 1.0, n) * radius
    ring = np.column_stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)])
    return np.vstack([ring, ring[:1]])


@pytest.mark.parametrize("name, transform", list(grids()))
@pytest.mark.parametrize("seed", range(6))
def test_spans_equal_gdal_rasterization(name, transform, seed):
    rng = np.random.default_rng(seed)
    y_centre = 4000450.0
    outer = random_polygon(rng, (500600.0, y_centre), 420.0, 3 + seed * 7)
    rings = [outer]
    if seed % 2:  # a hole
        rings.append(random_polygon(rng, (500600.0, y_centre), 90.0, 5)[::-1])
    area = Area(tuple(rings), 32633)
    ours = mask_from_spans(row_spans(area, transform, WIDTH, HEIGHT))
    theirs = gdal_mask(rings, transform)
    assert ours.sum() > 50
    assert np.array_equal(ours, theirs)


def test_area_past_the_raster_is_clipped_and_outside_is_empty():
    transform = dict(grids())["south_up"]
    big = Area((np.array([[0.0, 0.0], [1e7, 0.0], [1e7, 1e7], [0.0, 1e7], [0.0, 0.0]]),), 32633)
    assert mask_from_spans(row_spans(big, transform, WIDTH, HEIGHT)).all()
    far = area_from([0.0, 0.0, 10.0, 10.0], 32633)
    assert row_spans(far, transform, WIDTH, HEIGHT).shape == (0, 3)


def test_wkb_polygons_multipolygons_and_boxes():
    ring = np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 1.0], [0.0, 0.0]])
    assert len(area_from(polygon_wkb(ring[:, 0], ring[:, 1]), 4326).rings) == 1
    assert area_from(box_wkb(1.0, 2.0, 3.0, 4.0), 4326).bounds == (1.0, 2.0, 3.0, 4.0)
    crossing = area_from([179.5, -1.0, -179.5, 1.0], 4326)  # the antimeridian
    assert len(crossing.rings) == 2
    with pytest.raises(AefsqlError, match="a point"):
        area_from(b"\x01\x01\x00\x00\x00" + b"\x00" * 16, 4326)
    with pytest.raises(AefsqlError, match="south is north of north"):
        area_from([0, 5, 1, 4], 4326)


def test_chunks_cover_each_pixel_once():
    spans = np.array([[3, 0, 5000], [4, 10, 12]])
    chunks = chunked(spans, 2048)
    assert chunks.tolist() == [[3, 0, 2048], [3, 2048, 4096], [3, 4096, 5000], [4, 10, 12]]


def test_centroid_of_a_square_with_a_hole():
    outer = np.array([[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]], dtype=float)
    hole = np.array([[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]], dtype=float)  # clockwise
    x, y = centroid(Area((outer, hole), 32633))
    # 16 at (2, 2) minus 1 at (0.5, 0.5)
    assert np.isclose(x, (16 * 2 - 0.5) / 15) and np.isclose(y, (16 * 2 - 0.5) / 15)


@pytest.mark.parametrize("name, transform", list(grids()))
def test_centres_exactly_on_edges_follow_gdal(name, transform):
    """Vertices on pixel centres: edges pass exactly through centres, and the boundary rule
    (GDAL's: a centre on a span's left end is out, on its right end in) decides."""
    x0, y_low = 500000.0, min(transform.f, transform.f + HEIGHT * transform.e)
    bowtie = np.array(
        [
            [x0 + 205, y_low + 205],
            [x0 + 805, y_low + 805],
            [x0 + 805, y_low + 205],
            [x0 + 205, y_low + 805],
            [x0 + 205, y_low + 205],
        ]
    )
    diamond = np.array(
        [
            [x0 + 505, y_low + 105],
            [x0 + 905, y_low + 505],
            [x0 + 505, y_low + 865],
            [x0 + 105, y_low + 505],
            [x0 + 505, y_low + 105],
        ]
    )
    for ring in (bowtie, diamond):
        ours = mask_from_spans(row_spans(Area((ring,), 32633), transform, WIDTH, HEIGHT))
        assert np.array_equal(ours, gdal_mask([ring], transform))


# Densifying lon/lat edges: as far as the projection error needs, and bounded.


def _distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Each point's distance to the nearest segment of `line`."""
    a, b = line[:-1], line[1:]
    ab = b - a
    t = ((points[:, None, :] - a) * ab).sum(axis=2) / (ab * ab).sum(axis=1)
    nearest = a + np.clip(t, 0, 1)[..., None] * ab
    return np.hypot(*(points[:, None, :] - nearest).transpose(2, 0, 1)).min(axis=1)


@pytest.mark.parametrize("box", [[12.0, 45.0, 13.0, 46.0], [-75.5, -13.0, -74.0, -12.0]])
def test_lon_lat_edges_bend_within_the_tolerance_with_few_vertices(box):
    """A 1° box became 4,000 edges (0.001° each); now as many as keep every point of the
    true curve (each edge straight in lon/lat, projected point by point) within
    DENSIFY_TOLERANCE of the polyline."""
    epsg = 32633 if box[0] > 0 else 32718
    moved = projected(area_from(box, 4326), epsg).rings[0]
    assert len(moved) < 1000
    fine = densified(box_ring(*box), 1e-4)
    x, y = geo.transform_points(4326, epsg, fine[:, 0], fine[:, 1])
    off = _distance_to_polyline(np.column_stack([x, y]), moved)
    assert off.max() <= DENSIFY_TOLERANCE * 1.05


def test_densifying_follows_every_area_and_ring_apart():
    """Many areas densified in one call keep their own rings, vertices and order."""
    boxes = [[12.0 + k, 45.0, 12.5 + k, 45.5] for k in range(3)]
    areas = [area_from(b, 4326) for b in boxes]
    areas.append(Area((box_ring(12.1, 45.1, 12.2, 45.2), box_ring(12.3, 45.3, 12.4, 45.4)), 4326))
    together = projected_all(areas, 32633)
    for area, moved in zip(areas, together, strict=True):
        alone = projected(area, 32633)
        assert len(moved.rings) == len(area.rings)
        for a, b in zip(moved.rings, alone.rings, strict=True):
            assert np.array_equal(a, b)
            assert np.array_equal(a[0], a[-1])  # still closed


def test_an_area_whose_edges_need_too_many_vertices_is_refused_before_they_are_made():
    """A 32 KB polygon of 2,000 edges 40° long: 0.001° steps made 8 x 10^7 vertices (GBs);
    the count is now bounded before each round of cutting."""
    lon = np.tile([-5.0, 35.0], 1000)
    lat = np.linspace(-60, 60, lon.size)
    ring = np.column_stack([np.append(lon, lon[0]), np.append(lat, lat[0])])
    area = area_from(polygon_wkb(ring[:, 0], ring[:, 1]), 4326)
    with pytest.raises(AefsqlError, match=f"over {MAX_AREA_VERTICES:,} vertices"):
        projected(area, 32633)


# The antimeridian.

PARCEL_LON = np.array([179.99, -179.99, -179.99, 179.99, 179.99])
PARCEL_LAT = np.array([-16.001, -16.001, -15.999, -15.999, -16.001])


def test_a_parcel_across_the_antimeridian_is_split_as_its_box_is():
    """Vertices at 179.99 and -179.99: the short way across 180°, not 359.98° round."""
    parcel = area_from(polygon_wkb(PARCEL_LON, PARCEL_LAT), 4326)
    box = area_from([179.99, -16.001, -179.99, -15.999], 4326)
    assert len(parcel.rings) == 2
    assert sorted(r[:, 0].min() for r in parcel.rings) == [-180.0, 179.99]
    assert sorted(r[:, 0].max() for r in parcel.rings) == [-179.99, 180.0]
    # The same pixels on both sides' UTM grids (zone 60 west of 180°, zone 1 east).
    for epsg in (32760, 32701):
        a, b = projected(parcel, epsg), projected(box, epsg)
        west, south, east, north = b.bounds
        x0, y0 = np.floor(west / 10) * 10 - 50, np.floor(south / 10) * 10 - 50
        transform = Affine(10.0, 0.0, x0, 0.0, 10.0, y0)
        width, height = int((east - west) / 10) + 10, int((north - south) / 10) + 10
        ours = row_spans(a, transform, width, height)
        assert ours.shape[0] > 5
        assert np.array_equal(ours, row_spans(b, transform, width, height))


@pytest.mark.parametrize("seed", range(6))
def test_rings_split_at_the_antimeridian_cover_what_the_unwrapped_ring_covers(seed):
    """Concave stars around 180°: the parts, put back side by side, hold the same pixel
    centres (GDAL's rasterizer on the unwrapped ring) in a lon/lat grid across 180°."""
    rng = np.random.default_rng(seed)
    unwrapped = random_polygon(rng, (180.0, 0.0), 0.4, 9 + seed * 5)
    wrapped = unwrapped.copy()
    wrapped[:, 0] = np.where(wrapped[:, 0] > 180.0, wrapped[:, 0] - 360.0, wrapped[:, 0])
    parts = split_at_antimeridian(wrapped)
    assert len(parts) == 2
    for part in parts:
        assert np.array_equal(part[0], part[-1])
        assert (np.abs(part[:, 0]) <= 180.0).all()
    side_by_side = [
        np.column_stack([np.where(p[:, 0] < 0, p[:, 0] + 360.0, p[:, 0]), p[:, 1]]) for p in parts
    ]
    step = 0.8 / 128
    transform = Affine(step, 0.0, 179.6, 0.0, -step, 0.4)
    rio = RioAffine(step, 0.0, 179.6, 0.0, -step, 0.4)
    ours = np.zeros((128, 128), dtype=bool)
    for row, col0, col1 in row_spans(Area(tuple(side_by_side), 4326), transform, 128, 128):
        ours[row, col0:col1] = True
    geometry = {"type": "Polygon", "coordinates": [unwrapped.tolist()]}
    theirs = geometry_mask([geometry], (128, 128), rio, invert=True, all_touched=False)
    assert ours.sum() > 500
    assert np.array_equal(ours, theirs)


def test_antimeridian_rings_that_cannot_be_split_are_refused_and_whole_world_rings_stay():
    # Around the south pole: longitudes turn once round the world.
    polar = np.array([[0.0, -80.0], [120.0, -80.0], [-120.0, -80.0], [0.0, -80.0]])
    with pytest.raises(AefsqlError, match="goes around a pole"):
        split_at_antimeridian(polar)
    # Edges along -180 / 180 run along the antimeridian: a world box stays one ring.
    world = box_ring(-180.0, -90.0, 180.0, 90.0)
    assert len(split_at_antimeridian(world)) == 1
    # A band 340° wide drawn with edges shorter than 180°: read as drawn.
    lon = [-170.0, 0.0, 170.0, 170.0, 0.0, -170.0, -170.0]
    band = np.column_stack([lon, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]])
    assert [r.tolist() for r in split_at_antimeridian(band)] == [band.tolist()]


# Invalid rings and WKB: one-line errors that say what is wrong.


def _polygon(*rings, order="<"):
    out = struct.pack(order + "BII", 1 if order == "<" else 0, 3, len(rings))
    for ring in rings:
        out += struct.pack(order + "I", len(ring))
        out += b"".join(struct.pack(order + "dd", *p) for p in ring)
    return out


SQUARE = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)]


@pytest.mark.parametrize(
    "blob, message",
    [
        (
            _polygon(SQUARE, [(0.2, 0.2), (0.4, 0.2), (0.2, 0.2)]),
            "polygon 1, ring 2 has 3 points: a ring needs at least 4",
        ),
        (_polygon([]), "polygon 1, ring 1 has 0 points"),
        (_polygon([(0.0, 0.0)]), "polygon 1, ring 1 has 1 point: "),
        (
            _polygon(SQUARE[:-1]),
            r"polygon 1, ring 1 is not closed: it ends at \(0, 1\), not at its first point "
            r"\(0, 0\)",
        ),
        (
            struct.pack("<BII", 1, 6, 2) + _polygon(SQUARE) + _polygon(SQUARE[:4]),
            "polygon 2, ring 1 is not closed",
        ),
    ],
)
def test_invalid_rings_are_refused_in_gis_terms(blob, message):
    with pytest.raises(AefsqlError, match=message):
        area_from(blob, 4326)


def test_truncated_wkb_is_refused_at_every_cut():
    """Every prefix of a valid multipolygon: an AefsqlError, never struct.error."""
    blob = struct.pack(">BII", 0, 6, 2) + _polygon(SQUARE, order=">")
    blob += _polygon(SQUARE, SQUARE, order=">")
    assert len(area_from(blob, 4326).rings) == 3
    for cut in range(len(blob)):
        with pytest.raises(AefsqlError, match="not WKB|WKB truncated"):
            area_from(blob[:cut], 4326)


def test_deeply_nested_collections_are_refused():
    blob = _polygon(SQUARE)
    for _ in range(100):
        blob = struct.pack("<BII", 1, 7, 1) + blob
    with pytest.raises(AefsqlError, match="nested more than 32 deep"):
        area_from(blob, 4326)
    shallow = _polygon(SQUARE)
    for _ in range(5):
        shallow = struct.pack("<BII", 1, 7, 1) + shallow
    assert len(area_from(shallow, 4326).rings) == 1


@pytest.mark.parametrize("value", [None, [1.0, None, 2.0, 3.0], ["a", 1, 2, 3], 5])
def test_null_areas_and_boxes_that_are_not_numbers_are_refused(value):
    with pytest.raises(AefsqlError, match="area is NULL|a box is"):
        area_from(value, 4326)


@pytest.fixture(scope="module")
def antimeridian_catalog(tmp_path_factory):
    """Two GDAL-written tiles meeting at 180° near Fiji: one in UTM 60S west of it, one in
    UTM 1S east of it (each overhangs 180°, as published tiles do), and their index."""
    from gdal_fixtures import Layout, footprint_lonlat, index_row, write_index, write_layout

    folder = tmp_path_factory.mktemp("antimeridian")
    rows = []
    for k, (epsg, lon) in enumerate([(32760, 179.99), (32701, -179.99)]):
        x, y = geo.transform_points(4326, epsg, np.array([lon]), np.array([-16.0]))
        layout = Layout(
            epsg=epsg,
            width=300,
            height=260,
            block=128,
            west=float(np.round(x[0] / 10) * 10 - 1500),
            south=float(np.round(y[0] / 10) * 10 - 1300),
        )
        path = f"2023/{epsg % 100}S/tile{k}.tiff"
        write_layout(folder, layout, seed=k, name=path)
        row = index_row(k + 1, 2023, path, layout)
        lon_edge, _ = footprint_lonlat(epsg, layout.bounds)
        # The tile's lon/lat box crosses 180°: west > east, as the catalog expects.
        row["wgs84_west"] = float(lon_edge[lon_edge > 0].min())
        row["wgs84_east"] = float(lon_edge[lon_edge < 0].max())
        rows.append(row)
    return write_index(folder / "index.parquet", rows)


def test_a_parcel_across_the_antimeridian_reads_the_pixels_its_box_reads(antimeridian_catalog):
    """aef_pixels of the parcel (a polygon with vertices at 179.99 and -179.99) gives the
    pixels of the same area as a box [179.99, ..., -179.99, ...] (west > east), from both
    sides' tiles; it used to be read as a 359.98°-wide band and refused or misread."""
    import aefsql

    con = aefsql.connect(catalog=str(antimeridian_catalog))
    try:
        query = "SELECT path, row, col, A00 FROM aef_pixels(?, years := 2023) ORDER BY ALL"
        parcel = con.execute(query, [polygon_wkb(PARCEL_LON, PARCEL_LAT)]).fetchall()
        box = con.execute(query, [[179.99, -16.001, -179.99, -15.999]]).fetchall()
    finally:
        con.close()
    assert len({p for p, *_ in box}) == 2 and len(box) > 1000
    assert parcel == box


def test_aef_zonal_keeps_duckdbs_parse_position_and_says_what_is_wrong_with_a_ring(
    gdal_collection,
):
    import aefsql

    con = aefsql.connect(catalog=gdal_collection.index)
    try:
        for wkt, message in [
            ("POLYGON((12 45, 12.01 45, 12.01 45.01 12 45))", "at offset 38"),
            ("POLYGON((12 45, 12.01 45, 12 45))", "polygon 1, ring 1 has 3 points"),
            ("POLYGON((12 45, 12.01 45, 12.01 45.01, 12 45.01))", "ring 1 is not closed"),
        ]:
            con.execute("CREATE OR REPLACE TABLE parcels AS SELECT ?::VARCHAR AS geom", [wkt])
            with pytest.raises(Exception, match=message):
                con.execute("FROM aef_zonal('parcels', years := 2023)").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("seed", range(3))
def test_a_lon_lat_polygon_reads_what_gdal_rasterizes_of_its_curved_edges(gdal_collection, seed):
    """A lon/lat star inside the 18S tile (no other tile near): aef_pixels (edges followed
    to 1 cm) holds the pixels GDAL's rasterizer gives the same edges followed every 10^-5°
    (~1 m), but for a centre closer to the curve than that."""
    import rasterio
    from gdal_fixtures import COLLECTION_TILES, collection_path

    import aefsql

    _, epsg, x0, y0 = COLLECTION_TILES[3]
    lon0, lat0 = geo.transform_points(epsg, 4326, np.array([x0 + 1500.0]), np.array([y0 + 1300.0]))
    rng = np.random.default_rng(seed)
    star = random_polygon(rng, (lon0[0], lat0[0]), 0.012, 9)
    fine = densified(star, 1e-5)
    x, y = geo.transform_points(4326, epsg, fine[:, 0], fine[:, 1])
    path = f"{gdal_collection.folder}/{collection_path(2023, 3)}"
    with rasterio.open(path) as ds:
        geometry = {"type": "Polygon", "coordinates": [np.column_stack([x, y]).tolist()]}
        inside = geometry_mask([geometry], (ds.height, ds.width), ds.transform, invert=True)
    con = aefsql.connect(catalog=gdal_collection.index)
    try:
        found = con.execute(
            "SELECT row, col FROM aef_pixels(?, years := 2023) WHERE path = ?",
            [polygon_wkb(star[:, 0], star[:, 1]), path],
        ).fetchall()
    finally:
        con.close()
    assert len(found) > 1000
    expected = set(zip(*np.nonzero(inside), strict=True))
    # Only a centre closer to the curve than the tolerance may fall on the other side.
    differ = np.array(sorted(set(found) ^ expected), dtype=float).reshape(-1, 2)
    t = gdal_collection_transform(path)
    centres = np.column_stack([t.c + (differ[:, 1] + 0.5) * t.a, t.f + (differ[:, 0] + 0.5) * t.e])
    curve = np.column_stack([x, y])
    assert len(differ) <= 2
    assert (_distance_to_polyline(centres, curve) < DENSIFY_TOLERANCE).all()


def gdal_collection_transform(path) -> Affine:
    import rasterio

    with rasterio.open(path) as ds:
        t = ds.transform
    return Affine(t.a, t.b, t.c, t.d, t.e, t.f)


def test_a_map_across_the_antimeridian_is_in_the_zone_beside_it(antimeridian_catalog, tmp_path):
    """write_map (and read_area, picture: the same choice) of an area across 180° is in the
    zone of the tiles owning most of it (60S: two thirds of the box lie west of 180°), says
    that it spans zones, and copies the 60S tile's pixels exactly. (Its lattice of voting
    points used to spread over -180..180, miss the area, and fall on zone 31S at 0°.)"""
    import rasterio

    import aefsql

    box = [179.985, -16.005, -179.995, -15.995]
    path = tmp_path / "map.tif"
    with pytest.warns(UserWarning, match="spans UTM zones 1S, 60S"):
        aefsql.write_map(
            box, 2023, path, kind="bands", bands=["A00"], catalog=str(antimeridian_catalog)
        )
    tile = antimeridian_catalog.parent / "2023/60S/tile0.tiff"
    with rasterio.open(path) as ours, rasterio.open(tile) as theirs:
        assert ours.crs.to_epsg() == 32760
        values = ours.read(1)
        rows, cols = np.nonzero(values != ours.nodata)
        x, y = rasterio.transform.xy(ours.transform, rows, cols)
        inside = rasterio.transform.rowcol(theirs.transform, x, y)
        r, c = (np.asarray(v) for v in inside)
        lon, _ = geo.transform_points(32760, geo.WGS84, np.asarray(x), np.asarray(y))
        west = lon > 0  # zone 60's own side of 180°: the 1S tile owns the rest
        held = west & (r >= 0) & (r < theirs.height) & (c >= 0) & (c < theirs.width)
        assert held.sum() == west.sum() > 0.5 * rows.size
        assert np.array_equal(values[rows[held], cols[held]], theirs.read(1)[r[held], c[held]])


def test_a_catalog_without_geom_gives_a_tile_across_180_its_two_sides(
    antimeridian_catalog, tmp_path
):
    """Without a geom column, aef_index's geom is made from the tile's box: across 180°
    (west > east) the MultiPolygon of its two sides, not a ring the long way round."""
    import pyarrow.parquet as pq
    import shapely

    import aefsql

    table = pq.read_table(antimeridian_catalog).drop_columns(["geom"])
    index = antimeridian_catalog.parent / "no_geom.parquet"
    pq.write_table(table, index)
    with aefsql.connect(catalog=str(index)) as con:
        rows = con.sql("SELECT wgs84_west, wgs84_east, ST_AsWKB(geom) FROM aef_index()").fetchall()
    assert len(rows) == 2
    for west, east, blob in rows:
        shape = shapely.from_wkb(bytes(blob))
        assert west > east and shape.geom_type == "MultiPolygon"
        assert shape.bounds[0] == -180.0 and shape.bounds[2] == 180.0
        assert shape.area < 0.1  # a few km², not a band round the world


def test_a_sub_pixel_area_across_180_gets_the_pixel_under_its_centre(antimeridian_catalog):
    """Its two halves (split at 180°) averaged to a centroid near 0°, in no tile here (or in
    another continent's): the pixel under its centre is the one aef_locate gives there."""
    import aefsql

    with aefsql.connect(catalog=str(antimeridian_catalog)) as con:
        for centre in (179.999995, -179.999995):
            west, east = centre - 0.00001, centre + 0.00001
            box = [(west + 180) % 360 - 180, -16.000005, (east + 180) % 360 - 180, -15.999995]
            rows = con.sql(f"SELECT path, lon FROM aef_pixels({box}, years := 2023)").fetchall()
            ((owner,),) = con.sql(f"SELECT aef_locate({centre}, -16.0, 2023)").fetchall()
            assert len(rows) == 1 and rows[0][0] == owner and abs(rows[0][1] - centre) < 1e-3


def test_the_zone_lattice_falls_on_the_area_wherever_it_lies():
    """The points read_area, picture and write_map vote their zone with lie in the area: a
    box across 180°, a wide box from -180° (not taken for one across 180°), a multipolygon of
    a UK box and a Fiji box split at 180°."""
    import shapely

    from aefsql.kernels.rasters import _lattice

    fiji = [shapely.box(179.9, -17, 180, -16), shapely.box(-180, -17, -179.9, -16)]
    for area in [
        area_from([179.9, -17.0, -179.9, -16.0], geo.WGS84),
        area_from([-180.0, 40.0, 10.0, 50.0], geo.WGS84),
        area_from(shapely.MultiPolygon([shapely.box(-8, 50, 2, 58), *fiji]).wkb, geo.WGS84),
    ]:
        lon, lat = _lattice(area)
        shapes = shapely.union_all([shapely.Polygon(r) for r in area.rings])
        inside = shapely.contains_xy(shapely.buffer(shapes, 1e-9), lon, lat)
        assert lon.size and inside.all() and (np.abs(lon) <= 180).all()


def test_wkt_reads_as_its_wkb_reads():
    """read_area, write_map and picture read WKT with `wkt_rings`: the same rings and parts
    as the WKB of the same shape (shapely writes both), and what is wrong said."""
    import shapely

    from aefsql.geometry.areas import _wkb_rings, wkt_rings

    shapes = [
        shapely.box(12.0, 45.0, 12.01, 45.01),
        shapely.MultiPolygon(
            [
                shapely.box(0, 0, 1, 1),
                shapely.Polygon(
                    shapely.box(2, 2, 4, 4).exterior, [shapely.box(2.5, 2.5, 3, 3).exterior]
                ),
            ]
        ),
        shapely.Polygon([(0, 0, 5), (1, 0, 5), (1, 1, 5), (0, 0, 5)]),
    ]
    for shape in shapes:
        text = shapely.to_wkt(shape, rounding_precision=-1)
        (a, a_parts), (b, b_parts) = wkt_rings(text), _wkb_rings(shape.wkb)
        assert a_parts == b_parts and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        assert wkt_rings("SRID=4326;" + text.lower())[1] == a_parts
    assert wkt_rings("POLYGON EMPTY") == ([], [])
    # a 10^5-vertex outline, as a county's: the same ring as its WKB
    angles = np.linspace(0, 2 * np.pi, 100_000, endpoint=False)
    ring = np.column_stack([12 + 0.1 * np.cos(angles), 45 + 0.1 * np.sin(angles)])
    county = shapely.Polygon(ring)
    (got,), _ = wkt_rings(shapely.to_wkt(county, rounding_precision=-1))
    assert np.array_equal(got, _wkb_rings(county.wkb)[0][0])
    for bad, said in [
        ("POINT (1 2)", "is not a POLYGON or MULTIPOLYGON"),
        ("POLYGON ((0 0, 1 0, 1 1, 0 0)", "a '\\(' is never closed"),
        ("POLYGON ((0 0, 1 0, 1 x, 0 0))", "'x' is not a number"),
        ("POLYGON ((0 0, 1 0, 1 1))", "ring 1 has 3 points"),
        ("POLYGON ((0 0, 1 0, 1 1, 0 0)) junk", "more after its last"),
        ("POLYGON" + "(" * 100_000 + "0 0" + ")" * 100_000, "more '\\(' than a polygon has"),
    ]:
        with pytest.raises(AefsqlError, match=said):
            area_from(bad, geo.WGS84)


@pytest.mark.parametrize("flavor", ["extended", "iso"])
def test_a_polygon_with_z_reads_as_its_2d_self(flavor):
    """EWKB's Z flag (0x80000003, shapely's and PostGIS's) was read as Z and M both — the
    thousands of the flagged code taken for ISO's — and every Z polygon refused as
    truncated; ISO's 1003 was right."""
    import shapely

    flat = shapely.Polygon([(0, 0), (1, 0), (1, 1), (0, 0)])
    raised = shapely.Polygon([(0, 0, 5), (1, 0, 6), (1, 1, 7), (0, 0, 5)])
    blob = shapely.to_wkb(raised, flavor=flavor, output_dimension=3)
    (got,) = area_from(blob, 32633).rings
    assert np.array_equal(got, area_from(flat.wkb, 32633).rings[0])
