"""The scanline rasteriser (`row_spans`) at the sizes county and field outlines have: 10^5
vertices over a published-size tile (8192 rows), checked pixel for pixel against GDAL's
rasterizer (rasterio.features.geometry_mask, pixel-centre rule), and its memory bounded
whatever the vertex count."""

import tracemalloc

import numpy as np
import pytest
import shapely
from rasterio.features import geometry_mask
from rasterio.transform import Affine as RioAffine

from aefsql.format.tiff import Affine
from aefsql.geometry import areas
from aefsql.geometry.areas import Area, area_from, row_spans

PIXEL = 10.0


def grid(size: int, south_up: bool) -> Affine:
    if south_up:
        return Affine(PIXEL, 0.0, 500000.0, 0.0, PIXEL, 4000000.0)
    return Affine(PIXEL, 0.0, 500000.0, 0.0, -PIXEL, 4000000.0 + size * PIXEL)


def wiggly_star(centre, radius, n, seed, spread=0.03):
    """A closed outline of n vertices around `centre`, its radius jittered by `spread`: the
    shape of a county or field boundary (many vertices, few crossings per row)."""
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * (1 + spread * rng.uniform(-1, 1, n))
    ring = np.column_stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)])
    return np.vstack([ring, ring[:1]])


def spans_mask(spans, shape) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for row, col0, col1 in spans.tolist():
        mask[row, col0:col1] = True
    return mask


def gdal_mask(polygons, transform: Affine, shape) -> np.ndarray:
    """True at the pixel centres inside, as GDAL rasterizes (all_touched off); `polygons` is
    a list of ring lists, one per (disjoint) polygon."""
    t = transform
    geometry = {
        "type": "MultiPolygon",
        "coordinates": [[ring.tolist() for ring in rings] for rings in polygons],
    }
    return geometry_mask(
        [geometry], shape, RioAffine(t.a, t.b, t.c, t.d, t.e, t.f), invert=True, all_touched=False
    )


@pytest.mark.parametrize("south_up", [False, True], ids=["north_up", "south_up"])
def test_a_100k_vertex_multipolygon_with_a_hole_on_8192_rows_equals_gdal(south_up):
    size = 8192
    transform = grid(size, south_up)
    x0, y0 = 500000.0, 4000000.0
    extent = size * PIXEL
    outer = wiggly_star((x0 + 0.45 * extent, y0 + 0.5 * extent), 0.4 * extent, 100_000, 1)
    hole = wiggly_star((x0 + 0.45 * extent, y0 + 0.5 * extent), 0.1 * extent, 5_000, 2)[::-1]
    # A second part, past the raster's right edge (clipped there).
    part = wiggly_star((x0 + 0.95 * extent, y0 + 0.2 * extent), 0.06 * extent, 2_000, 3)
    spans = row_spans(Area((outer, hole, part), 32633), transform, size, size)
    ours = spans_mask(spans, (size, size))
    theirs = gdal_mask([[outer, hole], [part]], transform, (size, size))
    assert ours.sum() > 10**7
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("vertices", [20_000, 200_000])
def test_memory_is_bounded_whatever_the_vertex_count(vertices):
    """The former rows x edges matrices took ~1 GB for 20,000 vertices on 2,048 rows (3.3 GB
    for 10^5); the sweep keeps a band of crossings, the edges and the spans."""
    size = 2048
    transform = grid(size, False)
    ring = wiggly_star((500000.0 + 10240.0, 4000000.0 + 10240.0), 9000.0, vertices, 4, 0.002)
    area = Area((ring,), 32633)
    tracemalloc.start()
    try:
        spans = row_spans(area, transform, size, size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Edges (~10 float64 arrays), the spans twice (parts, then joined) and one band.
    bound = vertices * 10 * 8 + spans.nbytes * 2 + areas.SWEEP_CROSSINGS * 48 + (4 << 20)
    assert peak < bound, f"{peak / 2**20:.0f} MiB for {vertices} vertices"
    assert peak < 64 << 20


@pytest.mark.parametrize("band", [1, 7, 100])
@pytest.mark.parametrize("south_up", [False, True], ids=["north_up", "south_up"])
def test_bands_of_the_sweep_join_without_seams(monkeypatch, band, south_up):
    """However few crossings a band holds (one row's, when a row alone has more), the spans
    are those of one band over every row."""
    monkeypatch.setattr(areas, "SWEEP_CROSSINGS", band)
    size = 300
    transform = grid(size, south_up)
    outer = wiggly_star((500000.0 + 1500.0, 4000000.0 + 1500.0), 1300.0, 3000, 5, 0.2)
    hole = wiggly_star((500000.0 + 1500.0, 4000000.0 + 1500.0), 400.0, 50, 6)[::-1]
    ours = spans_mask(row_spans(Area((outer, hole), 32633), transform, size, size), (size, size))
    assert np.array_equal(ours, gdal_mask([[outer, hole]], transform, (size, size)))


def lattice_ring(rng, n, low, high, centre):
    """A closed ring of n vertices on a half-pixel lattice (pixel centres, corners and edge
    midpoints) in [low, high) half-pixels, around `centre`, in either direction."""
    points = rng.integers(low, high, size=(n, 2)) * (PIXEL / 2) + [500000.0, 4000000.0]
    ring = points[np.argsort(np.arctan2(*(points - centre).T[::-1]))]
    if rng.integers(2):
        ring = ring[::-1]
    return np.vstack([ring, ring[:1]])


@pytest.mark.parametrize("south_up", [False, True], ids=["north_up", "south_up"])
@pytest.mark.parametrize("seed", range(40))
def test_vertices_and_edges_on_pixel_centres_follow_gdal(south_up, seed):
    """Vertices on pixel centres, corners and edge midpoints, edges through centres and
    along centre lines, rings and holes either way round: the half-open crossing rule, the
    span rule and GDAL's rule for edges along a centre line decide, as GDAL's do."""
    size = 40
    transform = grid(size, south_up)
    rng = np.random.default_rng(seed)
    centre = np.array([500000.0, 4000000.0]) + size * PIXEL / 2
    rings = [lattice_ring(rng, int(rng.integers(4, 40)), 2, 2 * size - 2, centre)]
    if seed % 2:
        rings.append(lattice_ring(rng, int(rng.integers(3, 8)), size - 4, size + 4, centre))
    ours = spans_mask(row_spans(Area(tuple(rings), 32633), transform, size, size), (size, size))
    assert ours.any()
    assert np.array_equal(ours, gdal_mask([rings], transform, (size, size)))


@pytest.mark.parametrize("band", [None, 3])
@pytest.mark.parametrize("south_up", [False, True], ids=["north_up", "south_up"])
def test_overlapping_parts_of_a_multipolygon_are_joined_as_gdal_joins_them(
    monkeypatch, south_up, band
):
    """GDAL burns each part of a multipolygon: a pixel inside two overlapping parts is
    inside, and a hole of one part that another covers is filled. (They used to be read
    even-odd across parts: the overlap was a hole, two equal parts nothing.) Read from WKB,
    as areas arrive; `band`: the sweep in bands of a few crossings."""
    if band is not None:
        monkeypatch.setattr(areas, "SWEEP_CROSSINGS", band)
    size = 300
    transform = grid(size, south_up)
    x0, y0 = 500000.0, 4000000.0
    a = wiggly_star((x0 + 1000, y0 + 1200), 700, 400, 5)
    b = wiggly_star((x0 + 1500, y0 + 1500), 800, 300, 6)
    hole = wiggly_star((x0 + 1500, y0 + 1500), 300, 50, 7)[::-1]  # partly under part a
    c = wiggly_star((x0 + 2400, y0 + 700), 300, 80, 8)  # alone
    polygons = [[a], [b, hole], [c], [a]]  # part a twice
    wkb = shapely.MultiPolygon([(p[0], p[1:]) for p in polygons]).wkb
    ours = spans_mask(row_spans(area_from(wkb, 32633), transform, size, size), (size, size))
    theirs = gdal_mask(polygons, transform, (size, size))
    overlap = gdal_mask([[a]], transform, (size, size)) & gdal_mask([[b]], transform, (size, size))
    assert overlap.sum() > 1000 and theirs[overlap].all()
    assert np.array_equal(ours, theirs)


def test_parts_are_kept_apart_only_where_their_boxes_overlap():
    """Disjoint parts rasterize even-odd over all rings (the faster way, the same pixels);
    parts whose boxes meet are kept apart (Area.part)."""
    disjoint = shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(2, 0, 3, 1)])
    touching = shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)])
    assert area_from(disjoint.wkb, 32633).part is None
    assert area_from(touching.wkb, 32633).part == (0, 1)
    assert area_from(shapely.box(0, 0, 1, 1).wkb, 32633).part is None
