"""aefsql.torch against rasterio: ChipDataset items (chips, masks, grids) are compared with
rasterio reads of the GDAL-written collection (tests/helpers.py), the batch sampler
with tiles found by rasterio, and the DataLoader paths (fork and spawn workers, pickling)
with the single-process read. Nothing expected here is computed with aefsql's own code."""

import math
import os
import pickle
import re
import struct
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

pytestmark = pytest.mark.torch

torch = pytest.importorskip("torch")

from gdal_fixtures import (  # noqa: E402
    COLLECTION_TILES,
    PIXEL,
    TILE_HEIGHT,
    TILE_WIDTH,
    collection_path,
    to_lonlat,
)
from helpers import (  # noqa: E402
    block_ranges,
    block_reads,
    chip_centres,
    chip_corner,
    gdal_chip,
    own_zone_first,
    pixel_points,
    pixel_reads,
    tile_file,
)
from pyproj import Transformer  # noqa: E402
from torch.utils.data import DataLoader, default_collate, get_worker_info  # noqa: E402

from aefsql import AefsqlError  # noqa: E402
from aefsql.torch import ChipDataset, TileBatchSampler  # noqa: E402

NODATA = -128
YEARS = [2023, 2024]
SAMPLE_KEYS = {"image", "mask", "bounds", "crs", "transform", "year", "found"}


# -- expectations, from rasterio and PROJ only ---------------------------------------------


def owners(collection, year, epsg, x, y) -> np.ndarray:
    """The tile (index in COLLECTION_TILES) holding each point, own zone first; -1: none."""
    x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
    return own_zone_first(collection, year, epsg, x, y)[1]


def expected_chip(collection, year, epsg, x, y, size, k=None):
    """(int8 (64, size, size), tile EPSG, west, north, source tile per pixel) of the chip of
    the point x/y (EPSG `epsg`) held by tile k (default: found by `owners`), by the chip rule,
    from rasterio; None if no tile holds it. Every pixel is the source pixel under its centre
    in the tile that owns it (own zone first); where that tile is of k's CRS (all on one 10 m
    lattice here) it equals the tile's boundless window read (checked)."""
    k = int(owners(collection, year, epsg, x, y)[0]) if k is None else k
    if k < 0:
        return None
    code = COLLECTION_TILES[k][1]
    tx, ty = Transformer.from_crs(epsg, code, always_xy=True).transform(x, y)
    west, north = chip_corner(tile_file(collection, year, k), tx, ty, size)
    cx, cy = chip_centres(west, north, size)
    values, source = own_zone_first(collection, year, code, cx, cy)
    for j, tile in enumerate(COLLECTION_TILES):
        if tile[1] == code:
            data, _ = gdal_chip(tile_file(collection, year, j), west, north, size)
            assert np.array_equal(values[:, source == j], data[:, source == j])
    return values, code, west, north, source


def lonlat_points(k, rows, cols, seed=0):
    """lon/lat of points inside the given pixels of tile k (rows counted northward)."""
    _, epsg, x0, y0 = COLLECTION_TILES[k]
    x, y = pixel_points(rows, cols, x0, y0, seed=seed)
    return to_lonlat(epsg, x, y)


def points_table(lon, lat, **columns):
    return pa.table(
        {"id": np.arange(len(lon)), **columns, "lon": np.asarray(lon), "lat": np.asarray(lat)}
    )


def check_item(item, collection, year, epsg, x, y, size, bands=None, k=None):
    """An item's image, mask, grid and CRS against rasterio (the point in tile k: default,
    found by `owners`); returns the expected chip and each pixel's source tile."""
    found = expected_chip(collection, year, epsg, x, y, size, k)
    assert found is not None
    values, code, west, north, source = found
    if bands is not None:
        values = values[bands]
    assert item["image"].dtype == torch.int8
    assert item["image"].shape == (values.shape[0], size, size)
    assert np.array_equal(item["image"].numpy(), values)
    assert item["mask"].dtype == torch.bool
    assert np.array_equal(item["mask"].numpy(), (values != NODATA).all(axis=0))
    assert item["crs"] == f"EPSG:{code}" and item["found"] is True and item["year"] == year
    assert item["bounds"].dtype == torch.float64 and item["transform"].dtype == torch.float64
    assert item["bounds"].tolist() == pytest.approx(
        [west, north - size * PIXEL, west + size * PIXEL, north], abs=1e-6
    )
    assert item["transform"].tolist() == pytest.approx([PIXEL, 0, west, 0, -PIXEL, north], abs=1e-6)
    return values, source


def dataset(points, size, **kwargs):
    kwargs.setdefault("years", YEARS)
    return ChipDataset(points, size=size, **kwargs)


# -- 1: items are rasterio windows ----------------------------------------------------------


def test_items_equal_rasterio_windows(gdal_collection):
    """Tile 3 (18S, south-up) inside and at its corner; tile 1 by its corner with tile 2
    (33N mosaic, tile 0's 32N pixels under the rest); tile 0 by 12°E (tile 1's pixels east
    of the seam); tile 2 inside. Item i is row i // 2, year [2023, 2024][i % 2]."""
    size = 64
    _, e1, x2, y2 = COLLECTION_TILES[2]
    corner = to_lonlat(e1, np.array([x2 - 7.0]), np.array([y2 - 3.0]))  # in tile 1
    parts = [
        lonlat_points(3, [100, 0], [120, 0], seed=1),
        corner,
        lonlat_points(0, [TILE_HEIGHT - 3], [135], seed=7),  # west of 12°E
        lonlat_points(2, [130], [150], seed=2),
    ]
    lon = np.concatenate([p[0] for p in parts])
    lat = np.concatenate([p[1] for p in parts])
    names = ["inside", "corner", "mosaic", "seam", "tile2"]
    ds = dataset(points_table(lon, lat, name=names), size, catalog=gdal_collection.index)
    assert len(ds) == 2 * len(lon)
    tiles = owners(gdal_collection, 2023, 4326, lon, lat)
    assert tiles.tolist() == [3, 3, 1, 0, 2]  # the seam point is west of 12°E: tile 0's
    sources = {}
    for i in range(len(ds)):
        item = ds[i]
        row, year = i // 2, YEARS[i % 2]
        assert set(item) == SAMPLE_KEYS | {"id", "name", "lon", "lat"}
        assert (item["id"], item["name"]) == (row, names[row])
        assert (item["lon"], item["lat"]) == (lon[row], lat[row])
        _, sources[row, year] = check_item(
            item, gdal_collection, year, 4326, lon[row], lat[row], size, k=tiles[row]
        )
    # the cases are what they say: past the corner of tile 3, a 4-tile mosaic, across 12°E
    assert (sources[1, 2023] == -1).sum() >= (size // 2) ** 2
    assert {-1, 0, 1, 2} <= set(np.unique(sources[2, 2023]).tolist())
    assert {0, 1} <= set(np.unique(sources[3, 2023]).tolist())
    # the years differ, and a batch read equals the single reads
    assert not torch.equal(ds[0]["image"], ds[1]["image"])
    batch = ds.__getitems__([7, 2, 2, 9])
    for got, i in zip(batch, [7, 2, 2, 9], strict=True):
        assert torch.equal(got["image"], ds[i]["image"]) and got["year"] == YEARS[i % 2]


# -- 2, 3: dequantize, bands ----------------------------------------------------------------


def test_dequantize_gives_float32_with_nan_for_nodata(gdal_collection):
    """Around the fixtures' nodata rectangle (file rows 40..89, cols 100..179 of tile 3)."""
    lon, lat = lonlat_points(3, [45, 88], [105, 120], seed=3)
    ds = dataset(points_table(lon, lat), 16, dequantize=True, catalog=gdal_collection.index)
    for i in range(len(ds)):
        item = ds[i]
        year, row = YEARS[i % 2], i // 2
        values = expected_chip(gdal_collection, year, 4326, lon[row], lat[row], 16, 3)[0]
        v = values.astype(np.float64)
        expected = np.where(values == NODATA, np.nan, np.sign(v) * (np.abs(v) / 127.5) ** 2)
        image = item["image"].numpy()
        assert image.dtype == np.float32 and image.shape == (64, 16, 16)
        assert np.array_equal(np.isnan(image), values == NODATA)
        np.testing.assert_allclose(image, expected, rtol=1e-6, atol=0, equal_nan=True)
        assert np.array_equal(item["mask"].numpy(), (values != NODATA).all(axis=0))
        assert 0 < item["mask"].sum() < 16 * 16


def test_bands_are_in_a00_to_a63_order(gdal_collection):
    lon, lat = lonlat_points(3, [45, 200], [98, 10], seed=4)
    ds = dataset(points_table(lon, lat), 12, bands=["A05", "A00"], catalog=gdal_collection.index)
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (2, 12, 12)
        year, row = YEARS[i % 2], i // 2
        check_item(item, gdal_collection, year, 4326, lon[row], lat[row], 12, [0, 5], k=3)


# -- 4: points in no tile -------------------------------------------------------------------


def test_points_in_no_tile_and_null_coordinates(gdal_collection):
    lon, lat = lonlat_points(3, [10], [20])
    points = pa.table(
        {
            "id": [0, 1, 2],
            "lon": pa.array([0.0, None, lon[0]], pa.float64()),
            "lat": [0.0, lat[0], lat[0]],
        }
    )
    assert owners(gdal_collection, 2023, 4326, 0.0, 0.0).tolist() == [-1]
    ds = dataset(points, 8, catalog=gdal_collection.index)
    for i in range(4):
        item = ds[i]
        assert item["found"] is False and item["crs"] == ""
        assert item["image"].shape == (64, 8, 8) and (item["image"] == NODATA).all()
        assert item["mask"].shape == (8, 8) and not item["mask"].any()
        assert torch.isnan(item["bounds"]).all() and torch.isnan(item["transform"]).all()
        assert item["id"] == i // 2 and item["year"] == YEARS[i % 2]
    assert math.isnan(ds[3]["lon"])  # NaN, not None: a batch of it collates
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=6)))
    assert batch["image"].shape == (6, 64, 8, 8) and torch.isnan(batch["lon"][2:4]).all()
    check_item(ds[5], gdal_collection, 2024, 4326, lon[0], lat[0], 8, k=3)
    # the same read as a batch, and in float
    got = ds.__getitems__([0, 3, 4])
    assert [g["found"] for g in got] == [False, False, True]
    floats = dataset(points, 8, dequantize=True, catalog=gdal_collection.index)[2]
    assert floats["image"].dtype == torch.float32 and torch.isnan(floats["image"]).all()


# -- 5: DataLoader workers, pickling --------------------------------------------------------


@pytest.fixture(scope="module")
def loader_points():
    """40 points over the four tiles and one in none."""
    rng = np.random.default_rng(20)
    parts = [
        lonlat_points(k, rng.integers(0, TILE_HEIGHT, 10), rng.integers(0, TILE_WIDTH, 10), k)
        for k in range(4)
    ]
    lon = np.concatenate([p[0] for p in parts] + [[0.0]])
    lat = np.concatenate([p[1] for p in parts] + [[0.0]])
    return points_table(lon, lat)


def collect(loader, expected):
    """{(id, year): image} of every item the loader gives, checked against `expected`
    ({(id, year): image}) and seen exactly once."""
    seen, pids = [], []
    for batch in loader:
        pids.append(batch.get("pids"))
        assert batch["image"].dtype == torch.int8
        keys = zip(batch["id"].tolist(), batch["year"].tolist(), strict=True)
        for k, (row, year) in enumerate(keys):
            seen.append((row, year))
            image, found = expected[row, year]
            assert torch.equal(batch["image"][k], image), (row, year)
            assert bool(batch["found"][k]) is found
    assert sorted(seen) == sorted(expected)
    return pids


def single_process(ds):
    """{(id, year): (image, found)} of every item, read in one batch."""
    items = ds.__getitems__(range(len(ds)))
    return {(it["id"], it["year"]): (it["image"], it["found"]) for it in items}


def collate_noting_sessions(items):
    """default_collate, plus the worker's pid and the pid its dataset's session was opened
    in (a forked worker must open its own)."""
    batch = default_collate(items)
    info = get_worker_info()
    batch["pids"] = (os.getpid(), info.dataset._pid if info else None)
    return batch


def test_dataloader_fork_workers(gdal_collection, loader_points):
    ds = dataset(loader_points, 8, catalog=gdal_collection.index)
    expected = single_process(ds)  # the parent has a session before the fork
    assert len(expected) == 82
    assert [k for k, (_, found) in expected.items() if not found] == [(40, 2023), (40, 2024)]
    sampler = ds.tile_batches(16)
    loader = DataLoader(
        ds,
        batch_sampler=sampler,
        num_workers=2,
        multiprocessing_context="fork",
        timeout=60,
        collate_fn=collate_noting_sessions,
    )
    for _ in range(2):  # two epochs
        pids = collect(loader, expected)
        assert all(worker == opened != os.getpid() for worker, opened in pids)
    plain = DataLoader(
        ds, batch_size=8, shuffle=True, num_workers=2, multiprocessing_context="fork", timeout=60
    )
    collect(plain, expected)


def test_pickle_drops_the_session_and_spawn_workers(gdal_collection, loader_points):
    ds = dataset(loader_points, 8, catalog=gdal_collection.index)
    expected = single_process(ds)
    session = ds.session()
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._session is None and ds.session() is session  # the original keeps its own
    assert single_process(copy).keys() == expected.keys()
    assert all(torch.equal(v[0], expected[k][0]) for k, v in single_process(copy).items())
    loader = DataLoader(
        ds,
        batch_sampler=ds.tile_batches(16),
        num_workers=2,
        multiprocessing_context="spawn",
        timeout=120,  # a worker's imports take ~10 s
    )
    collect(loader, expected)


# -- 6: the tile batch sampler --------------------------------------------------------------


def test_tile_batches_group_items_by_tile_and_year(gdal_collection, loader_points):
    ds = dataset(loader_points, 8, catalog=gdal_collection.index)
    lon, lat = loader_points["lon"].to_numpy(), loader_points["lat"].to_numpy()
    owner = owners(gdal_collection, 2023, 4326, lon, lat).tolist()
    key = {i: (owner[i // 2], YEARS[i % 2]) for i in range(len(ds))}
    groups = Counter(key.values())
    assert len(groups) == 10  # 4 tiles and none, 2 years

    sampler = ds.tile_batches(7, seed=3)
    assert isinstance(sampler, TileBatchSampler)
    first, second = list(sampler), list(sampler)
    assert len(sampler) == len(first) == sum(-(-n // 7) for n in groups.values())
    for batches in (first, second):
        assert sorted(i for b in batches for i in b) == list(range(len(ds)))
        assert all(len({key[i] for i in b}) == 1 and 1 <= len(b) <= 7 for b in batches)
    assert first != second  # a new order each epoch ...
    assert sorted(map(tuple, first)) == sorted(map(tuple, second))  # ... of the same batches

    fixed = ds.tile_batches(7, shuffle=False)
    assert list(fixed) == list(fixed) == sorted(first, key=fixed.batches().index)

    dropped = ds.tile_batches(7, drop_last=True)
    batches = list(dropped)
    assert len(dropped) == len(batches) == sum(n // 7 for n in groups.values())
    assert all(len(b) == 7 for b in batches)
    kept = [i for b in batches for i in b]
    assert len(kept) == len(set(kept)) == sum(n // 7 * 7 for n in groups.values())
    with pytest.raises(AefsqlError, match="batch_size is a positive whole number"):
        ds.tile_batches(0)


# -- 7: a batch shares its blocks -----------------------------------------------------------


def test_a_batch_reads_each_block_once(http_collection):
    """32 chips of 16 px inside one 128 px block of tile 3: one __getitems__ fetches each
    of the needed blocks (block 0 of each band) once, and no block twice; 32 single reads
    find them in the dataset's block cache after the first: each block once as well.
    (Nearby ranges may be fetched in one request: every block a request overlaps counts as
    fetched.)"""
    rng = np.random.default_rng(30)
    lon, lat = lonlat_points(3, rng.integers(20, 100, 32), rng.integers(20, 100, 32), 30)
    suffix = "/" + collection_path(2023, 3)
    blocks = block_ranges(http_collection.folder / collection_path(2023, 3))
    log = http_collection.log

    def reads(batched):
        ds = dataset(points_table(lon, lat), 16, years=[2023], catalog=http_collection.index)
        ds.tiles()  # headers first: they are not pixel reads
        before = log.total
        items = ds.__getitems__(range(32)) if batched else [ds[i] for i in range(32)]
        got = pixel_reads(log, before, suffix)
        return items, got, block_reads(blocks, got)

    items, batch_requests, per_block = reads(True)
    per_band = -(-TILE_WIDTH // 128) * -(-TILE_HEIGHT // 128)
    assert len(blocks) == 64 * per_band  # planar: all blocks of band 0, then band 1, ...
    assert per_block.max() == 1 and (per_block[::per_band] == 1).all()
    singles, single_requests, per_block_single = reads(False)
    assert len(single_requests) == len(batch_requests)
    assert per_block_single.max() == 1 and (per_block_single[::per_band] == 1).all()
    for a, b in zip(items, singles, strict=True):
        assert torch.equal(a["image"], b["image"])
    for i in (0, 17, 31):
        check_item(items[i], http_collection, 2023, 4326, lon[i], lat[i], 16, k=3)


# -- 8: kinds of input ----------------------------------------------------------------------


def test_input_kinds(gdal_collection):
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    gpd = pytest.importorskip("geopandas")
    size = 6
    lon, lat = lonlat_points(3, [10, 200], [20, 250], seed=8)
    _, e3, x3, y3 = COLLECTION_TILES[3]
    x, y = pixel_points([10, 200], [20, 250], x3, y3, seed=8)
    _, e1, x1, y1 = COLLECTION_TILES[1]
    gx, gy = pixel_points([50, 0], [250, 0], x1, y1, seed=9)  # tile 1 and 2 (33N)
    gx[1], gy[1] = COLLECTION_TILES[2][2] + 405.0, COLLECTION_TILES[2][3] + 95.0

    def wkb(a, b):
        return struct.pack("<BIdd", 1, 1, a, b)

    assert owners(gdal_collection, 2024, e1, gx, gy).tolist() == [1, 2]
    cases = [
        (pd.DataFrame({"id": [0, 1], "lon": lon, "lat": lat}), {}, 4326, lon, lat),
        (pl.DataFrame({"id": [0, 1], "lon": lon, "lat": lat}), {}, 4326, lon, lat),
        (
            pa.table({"id": [0, 1], "geom": [wkb(a, b) for a, b in zip(lon, lat, strict=True)]}),
            {"geometry_column": "geom"},
            4326,
            lon,
            lat,
        ),
        (
            pa.table({"id": [0, 1], "e": x, "n": y}),
            {"x_column": "e", "y_column": "n", "crs": e3},
            e3,
            x,
            y,
        ),
        (
            gpd.GeoDataFrame({"id": [0, 1]}, geometry=gpd.points_from_xy(gx, gy), crs=e1),
            {},
            e1,
            gx,
            gy,
        ),
    ]
    for points, kwargs, epsg, px, py in cases:
        ds = dataset(points, size, years=[2024], catalog=gdal_collection.index, **kwargs)
        assert len(ds) == 2
        for i in range(2):
            item = ds[i]
            assert item["id"] == i and item["year"] == 2024
            assert "geom" not in item and "geometry" not in item
            k = (1, 2)[i] if epsg == e1 else 3
            check_item(item, gdal_collection, 2024, epsg, px[i], py[i], size, k=k)
    # a GeoDataFrame's own CRS wins over the lon/lat default; a conflicting crs= is refused
    geo = cases[-1][0]
    assert dataset(geo, size, catalog=gdal_collection.index)[3]["crs"] == "EPSG:32633"
    with pytest.raises(AefsqlError, match="reproject it"):
        dataset(geo, size, crs=4326, catalog=gdal_collection.index)


# -- 9: refused parameters ------------------------------------------------------------------


def test_refused_parameters():
    points = pa.table({"id": [1], "lon": [15.0], "lat": [45.0]})
    nowhere = "/nonexistent/index.parquet"  # nothing is opened before these are refused
    with pytest.raises(AefsqlError, match=r"no column 'x'; its columns: id, lon, lat"):
        ChipDataset(points, size=8, years=2024, catalog=nowhere, x_column="x")
    with pytest.raises(AefsqlError, match=r"has column\(s\) image, which each sample holds"):
        ChipDataset(points.append_column("image", pa.array([0])), size=8, years=2024)
    for size in (0, 2049):
        with pytest.raises(AefsqlError, match=rf"{size} x {size} pixels is refused: size must"):
            ChipDataset(points, size=size, years=2024, catalog=nowhere)
    message = "pass years=2024 or years=[2023, 2024]: AEF has one image a year"
    with pytest.raises(AefsqlError, match=re.escape(message)):
        ChipDataset(points, size=8, catalog=nowhere)
