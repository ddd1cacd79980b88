"""One owner per location across a UTM seam, for every output (aefsql/kernels/mosaic.py).

Zones 32N and 33N meet at 12°E; the collection's tile 1 (33N) overhangs it westward over
tile 0 (32N), and tile 0 eastward over tile 1. Windows across the seam, on either zone's
lattice and on GDAL-written tiles in both orientations, are read through read_area, aef_chips,
ChipDataset, TorchGeo's AEF (queries from TorchGeo's own sampler), picture and aef_pixels;
every output pixel must be the value rasterio reads at its centre in the tile that owns the
centre — the tiles of the centre's own UTM zone first, the first whose raster holds it — and
aef_pixels must give each location once, from that tile. Nothing expected here is computed
with aefsql's own code.
"""

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
import rasterio
import tifffile
from gdal_fixtures import (
    COLLECTION_TILES,
    PIXEL,
    collection_layout,
    collection_path,
    index_row,
    to_lonlat,
    write_index,
    write_layout,
)
from pyproj import Transformer
from rasterio.transform import rowcol

import aefsql
from aefsql.kernels.pictures import picture
from aefsql.kernels.rasters import read_area

NODATA = -128
YEAR = 2023
TILES = (0, 1, 2)  # 32N, and the two 33N tiles (the 18S one is far away)
SIZE = 64
# North-west corners of 64 x 64 windows across 12°E (x ~263554 in 33N, ~736446 in 32N at these
# northings), on each zone's lattice; the centre pixel of each lies in its own zone, so a
# chip centred there is on the window's grid. They keep clear of the fixtures' nodata block.
WINDOWS = {32633: (263300.0, 4987600.0), 32632: (736000.0, 4987600.0)}


@pytest.fixture(scope="module", params=["southup", "northup"])
def collection(request, gdal_collection, tmp_path_factory):
    """(index, folder): the GDAL-written collection (south-up, as AEF publishes), or its 2023
    tiles 0-2 rewritten north-up."""
    if request.param == "southup":
        return gdal_collection.index, gdal_collection.folder
    folder = tmp_path_factory.mktemp("northup_seam")
    rows = []
    for k in TILES:
        layout = replace(collection_layout(k), south_up=False)
        path = collection_path(YEAR, k)
        write_layout(folder, layout, seed=YEAR * 10 + k, name=path)
        rows.append(index_row(len(rows) + 1, YEAR, path, layout))
    return str(write_index(folder / "index.parquet", rows)), folder


@pytest.fixture(scope="module")
def con(collection):
    con = aefsql.connect(catalog=collection[0])
    yield con
    con.close()


def owned_values(folder, epsg, x, y):
    """(int8 (64, *x.shape), owner tile (-1: none), its file row, its file column) of each
    point (x/y in EPSG `epsg`): rasterio's pixel holding it in the tile that owns it — the
    tiles of its own UTM zone first, then the others, each in catalog order."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
    own = np.where(lat >= 0, 32600, 32700) + np.floor((lon + 180) / 6).astype(int) + 1
    values = np.full((64, *x.shape), NODATA, np.int8)
    owner = np.full(x.shape, -1)
    rows, cols = np.full(x.shape, -1), np.full(x.shape, -1)
    for first in (True, False):
        for k in TILES:
            code = COLLECTION_TILES[k][1]
            with rasterio.open(folder / collection_path(YEAR, k)) as ds:
                tx, ty = Transformer.from_crs(epsg, code, always_xy=True).transform(x, y)
                r, c = rowcol(ds.transform, np.ravel(tx), np.ravel(ty))
                r, c = np.reshape(r, x.shape), np.reshape(c, x.shape)
                held = (r >= 0) & (r < ds.height) & (c >= 0) & (c < ds.width)
                take = held & (owner < 0) & ((own == code) if first else (own != code))
                values[:, take] = ds.read()[:, r[take], c[take]]
            owner[take], rows[take], cols[take] = k, r[take], c[take]
    return values, owner, rows, cols


def window_centres(west, north, size=SIZE):
    x = west + (np.arange(size) + 0.5) * PIXEL
    y = north - (np.arange(size) + 0.5) * PIXEL
    return np.meshgrid(x, y)


def expected_window(collection, epsg, size=SIZE, corner=None):
    west, north = corner or WINDOWS[epsg]
    cx, cy = window_centres(west, north, size)
    values, owner, _, _ = owned_values(collection[1], epsg, cx, cy)
    return values, owner


def window_box(epsg, size=SIZE, corner=None):
    west, north = corner or WINDOWS[epsg]
    return [west, north - size * PIXEL, west + size * PIXEL, north]


@pytest.mark.parametrize("epsg", sorted(WINDOWS))
def test_the_windows_cross_the_seam_where_both_zones_hold_pixels(collection, epsg):
    """The expectation is not the grid tile's copy: in each window, some pixels the window's
    own-zone tile holds belong to the other zone's tile, and each zone owns a good share."""
    values, owner = expected_window(collection, epsg)
    cx, cy = window_centres(*WINDOWS[epsg])
    grid_tile = 1 if epsg == 32633 else 0
    other = 0 if epsg == 32633 else 1
    with rasterio.open(collection[1] / collection_path(YEAR, grid_tile)) as ds:
        r, c = rowcol(ds.transform, cx.ravel(), cy.ravel())
        r, c = np.reshape(r, cx.shape), np.reshape(c, cx.shape)
        held = (r >= 0) & (r < ds.height) & (c >= 0) & (c < ds.width)
        copy = ds.read()[:, np.clip(r, 0, ds.height - 1), np.clip(c, 0, ds.width - 1)]
    taken = held & (owner == other)
    assert taken.sum() > 300 and (owner == grid_tile).sum() > 1000
    differ = (copy[:, taken] != values[:, taken]).any(axis=0)
    assert differ.mean() > 0.9  # independent random values: nearly all differ


@pytest.mark.parametrize("epsg", sorted(WINDOWS))
def test_read_area(collection, epsg):
    expected, _ = expected_window(collection, epsg)
    da = read_area(window_box(epsg), YEAR, crs=epsg, target_crs=epsg, catalog=collection[0])
    cx, cy = window_centres(*WINDOWS[epsg])
    assert np.array_equal(da.x.values, cx[0]) and np.array_equal(da.y.values, cy[:, 0])
    assert np.array_equal(da.values[0], expected)


def centre_point(epsg, corner=None):
    """The centre of the window's pixel (SIZE // 2, SIZE // 2): a chip of SIZE centred there
    is the window."""
    west, north = corner or WINDOWS[epsg]
    return west + (SIZE // 2 + 0.5) * PIXEL, north - (SIZE // 2 + 0.5) * PIXEL


@pytest.mark.parametrize("epsg", sorted(WINDOWS))
def test_aef_chips(con, collection, epsg):
    expected, _ = expected_window(collection, epsg)
    x, y = centre_point(epsg)
    lon, lat = to_lonlat(epsg, np.array([x]), np.array([y]))
    con.register("seam_points", pa.table({"lon": lon, "lat": lat}))
    try:
        table = con.sql(
            f"SELECT chip, chip_crs, chip_bounds FROM aef_chips('seam_points', "
            f"size := {SIZE}, years := {YEAR})"
        ).to_arrow_table()
    finally:
        con.unregister("seam_points")
    assert table["chip_crs"].to_pylist() == [f"EPSG:{epsg}"]
    bounds = tuple(table["chip_bounds"][0].as_py().values())
    assert bounds == pytest.approx(tuple(window_box(epsg)), abs=1e-6)
    chip = np.array(table["chip"][0].as_py(), dtype=np.int8)
    assert np.array_equal(chip, expected)


@pytest.mark.torch
@pytest.mark.parametrize("epsg", sorted(WINDOWS))
def test_chip_dataset(collection, epsg):
    pytest.importorskip("torch")
    from aefsql.torch import ChipDataset

    expected, _ = expected_window(collection, epsg)
    x, y = centre_point(epsg)
    lon, lat = to_lonlat(epsg, np.array([x]), np.array([y]))
    chips = ChipDataset(
        pa.table({"lon": lon, "lat": lat}), size=SIZE, years=[YEAR], catalog=collection[0]
    )
    item = chips[0]
    assert item["crs"] == f"EPSG:{epsg}"
    assert np.array_equal(item["image"].numpy(), expected)


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:Use torchgeo.samplers:DeprecationWarning")  # 0.10
@pytest.mark.parametrize("epsg", sorted(WINDOWS))
def test_torchgeo_sampler_queries(collection, epsg):
    """AEF in the window's CRS, queried by TorchGeo's GridGeoSampler over the window: the
    window's own query, and every other query the sampler yields there, equal rasterio's
    owners."""
    pytest.importorskip("torchgeo")
    import shapely
    from torchgeo.samplers import GridGeoSampler

    from aefsql.torchgeo import AEF

    ds = AEF(catalog=collection[0], years=YEAR, crs=epsg)
    roi = shapely.box(*window_box(epsg))
    queries = list(GridGeoSampler(ds, size=SIZE, stride=SIZE, roi=roi))
    corners = [(q[0].start, q[1].stop) for q in queries]
    assert WINDOWS[epsg] in corners
    for q, corner in zip(queries, corners, strict=True):
        size = round((q[0].stop - q[0].start) / PIXEL)
        expected, _ = expected_window(collection, epsg, size, corner)
        assert np.array_equal(ds[q]["image"].numpy(), expected), corner


def test_picture_is_drawn_from_the_owners_pixels(collection, tmp_path):
    """picture's similarity map (its grid chosen by vote: 33N, most of the window) is the
    cosine similarity of rasterio's owners' pixels to the reference pixel's embedding."""
    epsg = 32633
    expected, _ = expected_window(collection, epsg)
    x, y = centre_point(epsg)
    (lon,), (lat,) = to_lonlat(epsg, np.array([x]), np.array([y]))
    drawn = picture(
        window_box(epsg),
        YEAR,
        path=str(tmp_path / "seam.png"),
        crs=epsg,
        reference=(lon, lat),
        catalog=collection[0],
    )
    assert drawn.grid.epsg == epsg and (drawn.grid.width, drawn.grid.height) == (SIZE, SIZE)
    v = expected.astype(np.float64)
    embeddings = np.sign(v) * (np.abs(v) / 127.5) ** 2
    reference = embeddings[:, SIZE // 2, SIZE // 2]
    valid = (expected != NODATA).all(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.einsum("bhw,b->hw", embeddings, reference) / (
            np.linalg.norm(embeddings, axis=0) * np.linalg.norm(reference)
        )
    assert np.array_equal(np.isnan(drawn.similarity), ~valid)
    assert np.allclose(drawn.similarity[valid], cosine[valid], atol=1e-5)


@pytest.mark.parametrize("epsg", sorted(WINDOWS))
def test_aef_pixels_gives_each_location_once_from_its_owner(con, collection, epsg):
    """aef_pixels of the window (grown by 3 pixels: the source pixels under its edge centres):
    each row is a pixel its tile owns (by rasterio's rule, through its own centre), and the
    window's every pixel centre is in the owner's row, with its values — but where the owner's
    pixel has its own centre across the seam, a pixel-wide band along 12°E."""
    expected, owner = expected_window(collection, epsg)
    west, south, east, north = window_box(epsg)
    m = 3 * PIXEL
    rows = con.sql(
        f"SELECT path, row, col, x, y, COLUMNS('A[0-9][0-9]') FROM aef_pixels("
        f"[{west - m}, {south - m}, {east + m}, {north + m}], years := {YEAR}, crs := {epsg})"
    ).fetchnumpy()
    tile_of = {collection_path(YEAR, k): k for k in TILES}
    tile = np.array(
        [tile_of[next(p for p in tile_of if path.endswith(p))] for path in rows["path"]]
    )
    row, col = np.asarray(rows["row"]), np.asarray(rows["col"])
    bands = np.stack(
        [np.ma.filled(np.ma.asarray(rows[f"A{b:02d}"]).astype(np.int16), NODATA) for b in range(64)]
    ).astype(np.int8)  # NULL (band nodata) as the file's -128
    # Each row is owned by its tile: its centre, in its tile's CRS, located by rasterio's rule.
    for k in TILES:
        mine = tile == k
        if not mine.any():
            continue
        code = COLLECTION_TILES[k][1]
        _, owners, r, c = owned_values(collection[1], code, rows["x"][mine], rows["y"][mine])
        assert (owners == k).all(), k
        assert np.array_equal(r, row[mine]) and np.array_equal(c, col[mine])
    keys = list(zip(tile.tolist(), row.tolist(), col.tolist(), strict=True))
    assert len(set(keys)) == len(keys)
    found = {key: i for i, key in enumerate(keys)}
    cx, cy = window_centres(*WINDOWS[epsg])
    _, _, r, c = owned_values(collection[1], epsg, cx, cy)
    got = np.full_like(expected, NODATA)
    across = []  # window pixels whose source pixel's own centre lies across the seam
    for (i, j), k in np.ndenumerate(owner):
        assert k >= 0
        key = (k, int(r[i, j]), int(c[i, j]))
        if key not in found:
            across.append((i, j, key))
            continue
        got[:, i, j] = bands[:, found[key]]
    # Two grids meet at the seam: a centre on one side can lie in a pixel whose own centre is
    # on the other, and aef_pixels gives that location from the other side's tile instead (at
    # most one pixel along the seam: a column of the window).
    assert len(across) <= SIZE
    to_grid = Transformer.from_crs(4326, epsg, always_xy=True)
    for i, j, (k, row_k, col_k) in across:
        _, lat = to_lonlat(epsg, cx[i, j], cy[i, j])
        seam_x, _ = to_grid.transform(12.0, lat)
        assert abs(cx[i, j] - seam_x) < PIXEL / np.sqrt(2) + 0.5  # half a pixel's diagonal
        with rasterio.open(collection[1] / collection_path(YEAR, k)) as ds:
            px, py = ds.xy(row_k, col_k)  # the source pixel's centre
        _, owners, _, _ = owned_values(collection[1], COLLECTION_TILES[k][1], [px], [py])
        assert owners[0] not in (k, -1)
        got[:, i, j] = expected[:, i, j]
    assert np.array_equal(got, expected)


# -- a window its grid's tile owns none of; sub-pixel areas; reads of the owner only ----------

# 48 x 48 pixels of tile 1's (33N) lattice wholly west of 12°E, inside tile 0 (32N): tile 1
# holds every pixel, tile 0 owns them all.
STRIP = (262400.0, 4987600.0)


def test_read_area_of_a_window_its_grid_tile_owns_none_of(collection):
    """Crashed in _scatter (zero-size array) when the aligned tile (1) owned none of it."""
    expected, owner = expected_window(collection, 32633, 48, STRIP)
    assert (owner == 0).all()
    box = window_box(32633, 48, STRIP)
    da = read_area(box, YEAR, crs=32633, target_crs=32633, catalog=collection[0])
    assert da.shape == (1, 64, 48, 48)
    assert np.array_equal(da.values[0], expected)


def square_wkt(x, y, half=1.0):
    return (
        f"POLYGON(({x - half} {y - half}, {x + half} {y - half}, {x + half} {y + half}, "
        f"{x - half} {y + half}, {x - half} {y - half}))"
    )


def test_sub_pixel_squares_in_the_overlap_keep_the_pixel_under_their_centroid(con, collection):
    """2 m squares centred on tile 1's (33N) pixel centres west of 12°E, where tile 0 (32N)
    owns the location: tile 1's centre inside them is not theirs to give, so each square's
    one pixel is the one under its centroid in tile 0 — one row from aef_pixels, one pixel
    and its embedding from aef_zonal (before: 0 rows, pixels = 0 and NULL)."""
    x = 262405.0 + 10.0 * np.arange(17) * 7  # tile 1's pixel centres, 33N
    y = np.full(x.size, 4987405.0)
    values, owner, rows, cols = owned_values(collection[1], 32633, x, y)
    assert (owner == 0).all()
    polygons = [square_wkt(a, b) for a, b in zip(x, y, strict=True)]
    for i, wkt in enumerate(polygons):
        got = con.sql(
            f"SELECT path, row, col, COLUMNS('A[0-9][0-9]') FROM aef_pixels('{wkt}', "
            f"years := {YEAR}, crs := 32633)"
        ).fetchall()
        assert len(got) == 1, i
        path, row, col, *bands = got[0]
        assert path.endswith(collection_path(YEAR, 0)) and (row, col) == (rows[i], cols[i])
        assert [NODATA if b is None else b for b in bands] == values[:, i].tolist()
    con.register("squares", pa.table({"id": np.arange(x.size), "geom": polygons}))
    try:
        zonal = con.sql(
            f"SELECT id, pixels, centroid_pixel, embedding FROM aef_zonal('squares', "
            f"years := {YEAR}, crs := 32633) ORDER BY id"
        ).fetchall()
    finally:
        con.unregister("squares")
    stand_ins = 0
    for i, (_, pixels, centroid_pixel, embedding) in enumerate(zonal):
        # (a square may hold tile 0's own centre: the same pixel, not a stand-in)
        assert pixels == 1, i
        stand_ins += centroid_pixel
        v = values[:, i].astype(np.float64)
        if (values[:, i] == NODATA).any():
            assert embedding is None
            continue
        assert np.allclose(embedding, np.sign(v) * (np.abs(v) / 127.5) ** 2, atol=1e-6)
    assert stand_ins >= 12


def block_ranges(path):
    """[(first, last byte)] of the full-resolution blocks of `path` (tifffile)."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        return [
            (o, o + n - 1) for o, n in zip(page.dataoffsets, page.databytecounts, strict=True) if n
        ]


def blocks_read(log, since, path, blocks) -> int:
    """How many of `blocks` the ranged GETs of `path` since request `since` overlap, but the
    header's first read (from byte 0; reading a header is not reading pixels)."""
    reads = []
    for method, url, byte_range in log.requests[since:]:
        if method == "GET" and url.endswith(path) and byte_range:
            first, last = (int(v) for v in byte_range.removeprefix("bytes=").split("-"))
            if first > 0:
                reads.append((first, last))
    return sum(any(a <= last and first <= b for first, last in reads) for a, b in blocks)


def test_aef_pixels_in_the_overlap_reads_the_owners_blocks_only(http_collection):
    """An area wholly in tile 1's (33N) overhang west of 12°E, owned by tile 0 (32N) and in
    tile 1's first block column: over HTTP, aef_pixels fetches tile 0's blocks and none of
    tile 1's (before: tile 1's were read too, and every pixel of them thrown away)."""
    west, north = STRIP
    box = [west, north - 800.0, west + 800.0, north]  # 80 x 80 of tile 1's pixels, 33N
    cx, cy = window_centres(west, north, 80)
    _, owner, _, _ = owned_values(http_collection.folder, 32633, cx, cy)
    assert (owner == 0).all()
    log = http_collection.log
    before = log.total
    with aefsql.connect(catalog=http_collection.index) as fresh:
        found = fresh.sql(
            f"SELECT path FROM aef_pixels({box}, years := {YEAR}, crs := 32633)"
        ).fetchnumpy()["path"]
    assert found.size > 6000 and all(p.endswith(collection_path(YEAR, 0)) for p in found)
    counts = {}
    for k in (0, 1):
        path = collection_path(YEAR, k)
        counts[k] = blocks_read(log, before, path, block_ranges(http_collection.folder / path))
    assert counts[0] >= 64 and counts[1] == 0, counts
