"""Areas as pixel spans, checked against GDAL's rasterizer (rasterio.features.geometry_mask,
pixel-centre rule) on north-up and south-up grids."""

import numpy as np
import pytest
from rasterio.features import geometry_mask
from rasterio.transform import Affine as RioAffine

from aefsql.areas import Area, area_from, centroid, chunked, row_spans
from aefsql.errors import AefsqlError
from aefsql.geo import box_wkb, polygon_wkb
from aefsql.tiff import Affine

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
