"""aefsql.torchgeo.AEF against rasterio and TorchGeo itself: samples drawn by TorchGeo's own
samplers are compared, pixel for pixel and band for band, with rasterio reads of the
GDAL-written collection (tests/helpers.py: boundless windows where a tile lies on
the query's grid, else the source pixel under each pixel's centre through PROJ, own UTM zone
first), and the sample's metadata with what the installed TorchGeo's own RasterDataset gives
for the same query. Nothing expected here is computed with aefsql's own code.

Runs against whichever TorchGeo is installed: 0.8 (samples: image, crs, the query as bounds)
and >= 0.9 (image, bounds and transform tensors; the spatial/temporal samplers of 0.10)."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

torchgeo = pytest.importorskip("torchgeo")

import rasterio  # noqa: E402
import shapely  # noqa: E402
import torch  # noqa: E402
from gdal_fixtures import (  # noqa: E402
    COLLECTION_TILES,
    PIXEL,
    collection_layout,
    collection_path,
    index_row,
    raster_bounds,
    write_index,
)
from helpers import gdal_chip, own_zone_first, tile_file  # noqa: E402
from pyproj import CRS, Transformer  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchgeo.datasets import RasterDataset, stack_samples  # noqa: E402
from torchgeo.samplers import GridGeoSampler, RandomGeoSampler  # noqa: E402

from aefsql.errors import AefsqlError  # noqa: E402
from aefsql.torchgeo import AEF  # noqa: E402

try:  # TorchGeo >= 0.10
    from torchgeo.samplers import (
        GriddedPatchSampler,
        RandomPatchSampler,
        SequentialTimestampSampler,
    )
except ImportError:
    GriddedPatchSampler = RandomPatchSampler = SequentialTimestampSampler = None

VERSION = tuple(int(p) for p in torchgeo.__version__.split(".")[:2])
TENSOR_SAMPLES = VERSION >= (0, 9)  # bounds and transform as tensors, no crs
NODATA = -128
TILES = range(len(COLLECTION_TILES))
# Around the corner where tiles 1 and 2 (33N) meet and where tile 0 (32N) overlaps tile 1;
# its edges lie on the 33N tiles' 10 m lattice.
ROI = shapely.box(262000.0, 4988000.0, 265600.0, 4989400.0)

# TorchGeo 0.10 deprecates GridGeoSampler and RandomGeoSampler; they still work.
pytestmark = [
    pytest.mark.torch,
    pytest.mark.filterwarnings("ignore:Use torchgeo.samplers:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Use geopandas.GeoSeries.sample_points:DeprecationWarning"),
]


# -- expectations, from rasterio and PROJ only ---------------------------------------------


def on_grid(path, epsg, west, north, res) -> bool:
    """Is the file's pixel grid the window's (same CRS, pixel size, lattice)? (rasterio)"""
    with rasterio.open(path) as src:
        t, code = src.transform, src.crs.to_epsg()
    if code != epsg or abs(t.a) != res or abs(t.e) != res or t.b or t.d:
        return False
    cols, rows = (west - t.c) / res, (north - t.f) / res
    return abs(cols - round(cols)) < 1e-6 and abs(rows - round(rows)) < 1e-6


def centres(west, north, height, width, res):
    x = west + (np.arange(width) + 0.5) * res
    y = north - (np.arange(height) + 0.5) * res
    return np.meshgrid(x, y)


def expected_windows(collection, year, epsg, corners, size, res=PIXEL, tiles=TILES):
    """For each (west, north): (int8 (64, size, size), source tile per pixel (-1: none),
    int8 (64, size, size) by the centre rule alone) of the north-up window of `size` pixels
    of `res` in EPSG `epsg`, from the catalog's tiles `tiles`: every pixel is the source pixel
    under its centre in the tile that owns it (own UTM zone first); where that tile is on the
    window's grid, this is rasterio's boundless window read of it (checked here too)."""
    grids = [centres(w, n, size, size, res) for w, n in corners]
    cx = np.stack([g[0] for g in grids])
    cy = np.stack([g[1] for g in grids])
    skip = [k for k in TILES if k not in tiles]
    centre_values, centre_source = own_zone_first(collection, year, epsg, cx, cy, skip=skip)
    out = []
    for i, (west, north) in enumerate(corners):
        values = centre_values[:, i].copy()
        source = centre_source[i].copy()
        for k in tiles:
            path = tile_file(collection, year, k)
            if not on_grid(path, epsg, west, north, res):
                continue
            data, held = gdal_chip(path, west, north, size)
            assert np.array_equal(values[:, source == k], data[:, source == k])
        out.append((values, source, centre_values[:, i]))
    return out


def corner_of(query, res=PIXEL):
    """(west, north, size in pixels) of a square query."""
    x, y = query[0], query[1]
    size = round((x.stop - x.start) / res)
    assert round((y.stop - y.start) / res) == size
    return x.start, y.stop, size


def dequantized(values):
    v = values.astype(np.float64)
    return np.where(values == NODATA, np.nan, np.sign(v) * (np.abs(v) / 127.5) ** 2)


def year_interval(year):
    return pd.Timestamp(f"{year}-01-01"), pd.Timestamp(f"{year}-12-31 23:59:59.999999")


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zone33_catalog(gdal_collection, tmp_path_factory):
    """A catalog of the 33N tiles (1 and 2) only, both years, absolute paths: its bounds lie
    on their lattice, so TorchGeo 0.10's spatial samplers snap their windows onto it."""
    folder = tmp_path_factory.mktemp("zone33")
    rows = []
    for year in (2023, 2024):
        for k in (1, 2):
            path = str(tile_file(gdal_collection, year, k))
            rows.append(index_row(len(rows) + 1, year, path, collection_layout(k)))
    return str(write_index(folder / "index.parquet", rows))


@pytest.fixture(scope="module")
def ds33(gdal_collection):
    """2023 in 33N, all four tiles (tile 0 reprojected, tile 3 far away)."""
    return AEF(catalog=gdal_collection.index, years=2023, crs=32633)


class Tiles(RasterDataset):
    """TorchGeo's own RasterDataset over files of the collection: the reference for what a
    sample's metadata look like in the installed version."""

    filename_glob = "tile*.tiff"


def reference_dataset(collection, year, zone, crs):
    return Tiles(paths=str(collection.folder / str(year) / zone), crs=crs, res=PIXEL)


def check_samples(collection, ds, queries, samples, year, epsg, tiles=TILES):
    """Every sample's image against rasterio, its metadata against the version's
    conventions; returns the expectations."""
    by_size = {}
    for i, q in enumerate(queries):
        west, north, size = corner_of(q)
        by_size.setdefault(size, []).append((i, west, north))
    expected = [None] * len(queries)
    for size, members in by_size.items():
        windows = expected_windows(
            collection, year, epsg, [(w, n) for _, w, n in members], size, tiles=tiles
        )
        for (i, _, _), e in zip(members, windows, strict=True):
            expected[i] = e
    _, _, bt = ds.bounds
    for q, sample, (values, _, _) in zip(queries, samples, expected, strict=True):
        size = values.shape[-1]
        assert sample["image"].dtype == torch.int8
        assert tuple(sample["image"].shape) == (64, size, size)
        assert np.array_equal(sample["image"].numpy(), values), q
        west, north, _ = corner_of(q)
        if TENSOR_SAMPLES:
            assert set(sample) == {"image", "bounds", "transform"}
            t = q[2] if len(q) > 2 else slice(bt.start, bt.stop)
            bounds = [q[0].start, q[0].stop, PIXEL, q[1].start, q[1].stop, PIXEL]
            bounds += [t.start.timestamp(), t.stop.timestamp(), 1]
            assert torch.equal(sample["bounds"], torch.tensor(bounds))
            assert torch.equal(sample["transform"], torch.tensor(from_origin(west, north, 10, 10)))
        else:
            assert set(sample) == {"image", "crs", "bounds"}
            assert sample["crs"] == CRS.from_epsg(epsg)
            assert sample["bounds"] == q
    return expected


# -- 1: the index, from the catalog alone ----------------------------------------------------


def test_construction_reads_no_cog_and_indexes_the_catalog(http_collection):
    """Over HTTP: building the dataset fetches the catalog, no .tiff. One row a tile of the
    chosen years; the CRS is the one given (required: the tiles lie in three zones); each
    row's interval is its year; a tile in the dataset's CRS has its UTM box as footprint
    (rasterio's bounds), one in another CRS its outline reprojected."""
    log = http_collection.log
    before = log.total
    with pytest.raises(AefsqlError, match=r"3 CRSs .*pass crs= \(e\.g\. crs=32633\)"):
        AEF(catalog=http_collection.index, years=2023)
    ds = AEF(catalog=http_collection.index, years=2023, crs=32633)
    paths = [p for _, p, _ in log.requests[before:]]
    assert paths and not [p for p in paths if p.endswith((".tiff", ".tif"))], paths
    assert len(ds) == len(ds.index) == 4
    assert ds.crs == CRS.from_epsg(32633)
    assert ds.res == (PIXEL, PIXEL)
    index = ds.index.index
    assert index.closed == "both"
    assert list(index.left) == [pd.Timestamp("2023-01-01")] * 4
    assert list(index.right) == [year_interval(2023)[1]] * 4
    assert ds.bounds[2] == slice(*year_interval(2023), 1)

    def row_of(year, k):
        (i,) = [
            i for i, f in enumerate(ds.index["filepath"]) if f.endswith(collection_path(year, k))
        ]
        return ds.index.geometry.iloc[i]

    for k in TILES:
        with rasterio.open(tile_file(http_collection, 2023, k)) as src:
            box = raster_bounds(src)
            code = src.crs.to_epsg()
        footprint = row_of(2023, k)
        if code == 32633:
            assert footprint.bounds == box and footprint.equals(shapely.box(*box)), k
            continue
        # Tiles 0 (32N) and 3 (18S): their outline in 33N, through the raster's corners.
        to_33n = Transformer.from_crs(code, 32633, always_xy=True)
        west, south, east, north = box
        for x, y in [(west, south), (east, south), (east, north), (west, north)]:
            point = shapely.Point(to_33n.transform(x, y))
            assert footprint.exterior.distance(point) < 0.01, (k, x, y)
        assert not footprint.equals(shapely.box(*footprint.bounds)), k  # not a UTM box

    ds2 = AEF(catalog=http_collection.index, years=[2023, 2024], crs="EPSG:32632")
    assert len(ds2) == 8 and ds2.crs == CRS.from_epsg(32632)
    assert sorted(set(ds2.index.index.left)) == [
        pd.Timestamp("2023-01-01"),
        pd.Timestamp("2024-01-01"),
    ]
    for year in (2023, 2024):
        with rasterio.open(tile_file(http_collection, year, 0)) as src:
            box = raster_bounds(src)
        (i,) = [
            i for i, f in enumerate(ds2.index["filepath"]) if f.endswith(collection_path(year, 0))
        ]
        assert ds2.index.geometry.iloc[i].bounds == box
        assert ds2.index.index[i].left == year_interval(year)[0]
        assert ds2.index.index[i].right == year_interval(year)[1]
    assert not [p for _, p, _ in log.requests[before:] if p.endswith(".tiff")]
    # ... and reading a sample does fetch the tiles (the log would see it)
    ds[263000:263320, 4987000:4987320]
    assert [p for _, p, _ in log.requests[before:] if p.endswith(".tiff")]


def test_tiles_of_several_zones_need_a_crs(gdal_collection, zone33_catalog):
    """By default the dataset takes its tiles' CRS; tiles of several UTM zones (32N, 33N,
    18S here) have none, and reprojecting the world into one of them gave samplers windows
    that are all nodata, without a word: refused, naming the fix. One zone's catalog (the
    fix's "one dataset per zone") samples with TorchGeo's own sampler, every window data."""
    for years in (2023, [2023, 2024]):
        with pytest.raises(AefsqlError, match=r"3 CRSs \(EPSG:32633 \(\d tiles\).*crs="):
            AEF(catalog=gdal_collection.index, years=years)
    ds = AEF(catalog=zone33_catalog, years=2023)
    assert ds.crs == CRS.from_epsg(32633)
    torch.manual_seed(0)
    queries = list(RandomGeoSampler(ds, size=32, length=16))
    boxes = []
    for k in (1, 2):
        with rasterio.open(tile_file(gdal_collection, 2023, k)) as src:
            boxes.append(shapely.box(*raster_bounds(src)))
    for q in queries:  # every window inside a tile (some hold the fixture's nodata block)
        window = shapely.box(q[0].start, q[1].start, q[0].stop, q[1].stop)
        assert any(box.contains(window) for box in boxes), q
    images = [ds[q]["image"].numpy() for q in queries]
    assert len(images) == 16 and sum((image != NODATA).any() for image in images) >= 12


# -- 2: TorchGeo's samplers, sample by sample against rasterio -------------------------------


def test_grid_sampler_samples_equal_rasterio(gdal_collection, ds33):
    """GridGeoSampler walks each tile's footprint (clipped to the ROI): windows on tiles 1/2's
    lattice are exact copies of those files where they own the pixels (where tile 0 overlaps
    tile 1 west of 12°E, tile 0 does), the other pixels take the source pixel under each
    centre in its owner."""
    sampler = GridGeoSampler(ds33, size=32, stride=32, roi=ROI)
    queries = list(sampler)
    assert len(queries) == len(sampler) > 30
    samples = [ds33[q] for q in queries]
    expected = check_samples(gdal_collection, ds33, queries, samples, 2023, 32633)
    aligned = [
        on_grid(tile_file(gdal_collection, 2023, 1), 32633, *corner_of(q)[:2], 10) for q in queries
    ]
    assert any(aligned) and not all(aligned)
    # Some aligned window holds pixels tile 1 holds too but tile 0 owns (west of 12°E, own
    # zone first): they are tile 0's pixel under their centre, not tile 1's copy.
    assert any(
        (source == 0).any() for (_, source, _), a in zip(expected, aligned, strict=True) if a
    )
    sources = np.concatenate([s.ravel() for _, s, _ in expected])
    assert {0, 1, 2} <= set(sources.tolist())
    # The same query through TorchGeo's own RasterDataset: the same metadata.
    reference = reference_dataset(gdal_collection, 2023, "33N", ds33.crs)
    q = next(q for q, a in zip(queries, aligned, strict=True) if a)
    theirs, ours = reference[q], ds33[q]
    assert set(theirs) == set(ours)
    for key in set(ours) - {"image"}:
        if TENSOR_SAMPLES:
            assert torch.equal(ours[key], theirs[key]), key
        else:
            assert ours[key] == theirs[key], key


def test_random_sampler_samples_equal_rasterio(gdal_collection, ds33):
    torch.manual_seed(0)  # RandomGeoSampler picks tiles with the global generator
    sampler = RandomGeoSampler(
        ds33, size=32, length=30, roi=ROI, generator=torch.Generator().manual_seed(1)
    )
    queries = list(sampler)
    assert len(queries) == 30
    check_samples(gdal_collection, ds33, queries, [ds33[q] for q in queries], 2023, 32633)


@pytest.mark.skipif(GriddedPatchSampler is None, reason="TorchGeo < 0.10")
def test_patch_samplers_equal_rasterio(gdal_collection, ds33, zone33_catalog):
    """TorchGeo 0.10's spatial samplers yield (x, y) only: the time is the dataset's. Over the
    whole 2023 dataset they snap to its bounds (the 18S footprint's corner: off the tiles'
    lattice, so every pixel is a centre sample); over the 33N-only catalog, onto the tiles'
    lattice (exact copies, -128 where neither tile is)."""
    for sampler in (
        GriddedPatchSampler(ds33, size=32, stride=32, roi=ROI),
        RandomPatchSampler(ds33, size=32, length=30, roi=ROI, generator=0),
    ):
        queries = list(sampler)
        assert len(queries) > 20 and all(len(q) == 2 for q in queries)
        check_samples(gdal_collection, ds33, queries, [ds33[q] for q in queries], 2023, 32633)
    zone33 = AEF(catalog=zone33_catalog, years=2023)
    assert zone33.crs == CRS.from_epsg(32633)
    roi = shapely.box(263500.0, 4987500.0, 266500.0, 4990000.0)
    for sampler in (
        GriddedPatchSampler(zone33, size=32, stride=32, roi=roi),
        RandomPatchSampler(zone33, size=32, length=30, roi=roi, generator=1),
    ):
        queries = list(sampler)
        assert len(queries) > 20
        expected = check_samples(
            gdal_collection,
            zone33,
            queries,
            [zone33[q] for q in queries],
            2023,
            32633,
            tiles=(1, 2),
        )
        assert all(
            on_grid(tile_file(gdal_collection, 2023, 1), 32633, *corner_of(q)[:2], 10)
            for q in queries
        )
        sources = set(np.concatenate([s.ravel() for _, s, _ in expected]).tolist())
        assert {1, 2} <= sources <= {-1, 1, 2}
        if isinstance(sampler, GriddedPatchSampler):  # windows reach past both tiles
            assert -1 in sources


# -- 3: DataLoader ---------------------------------------------------------------------------


def test_data_loader_with_forked_workers_stacks_samples(ds33):
    sampler = GridGeoSampler(ds33, size=32, stride=32, roi=ROI)
    queries = list(sampler)
    single = [ds33[q] for q in queries]
    if TENSOR_SAMPLES:
        assert all(isinstance(v, torch.Tensor) for s in single for v in s.values())
    loader = DataLoader(
        ds33,
        sampler=sampler,
        batch_size=4,
        collate_fn=stack_samples,
        num_workers=2,
        multiprocessing_context="fork",
    )
    batches = list(loader)
    assert len(batches) == -(-len(queries) // 4)
    images = torch.cat([b["image"] for b in batches])
    assert images.dtype == torch.int8 and tuple(images.shape) == (len(queries), 64, 32, 32)
    assert torch.equal(images, torch.stack([s["image"] for s in single]))
    first = batches[0]
    if TENSOR_SAMPLES:
        assert all(isinstance(v, torch.Tensor) for v in first.values())
        assert tuple(first["bounds"].shape) == (4, 9)
        assert tuple(first["transform"].shape) == (4, 9)
        bounds = torch.cat([b["bounds"] for b in batches])
        assert torch.equal(bounds, torch.stack([s["bounds"] for s in single]))
    else:
        assert first["crs"] == [CRS.from_epsg(32633)] * 4
        assert [q for b in batches for q in b["bounds"]] == queries
    # The dataset pickles without its session (spawned workers get a copy this way).
    copy = pickle.loads(pickle.dumps(ds33))
    assert torch.equal(copy[queries[3]]["image"], single[3]["image"])


# -- 4: off the grid, across zones -------------------------------------------------------------


def test_off_grid_and_other_zone_queries_take_the_source_pixel_under_each_centre(
    gdal_collection, ds33
):
    """A 33N query 3.7 m / 6.2 m off the tiles' lattice, and a dataset in 32N (10 m and
    7.5 m pixels) reading the 33N tiles east of tile 0: no tile is on the query's grid, so
    every pixel is the source pixel under its centre (own zone first), never interpolated."""
    west, north, size = 264703.7, 4988906.2, 48
    [(values, source, _)] = expected_windows(gdal_collection, 2023, 32633, [(west, north)], size)
    got = ds33[west : west + size * PIXEL, north - size * PIXEL : north]["image"].numpy()
    assert np.array_equal(got, values)
    assert {-1, 0, 1, 2} <= set(source.ravel().tolist())

    # 32N: around the corner of tiles 1 and 2, reaching west over tile 0.
    x, y = Transformer.from_crs(32633, 32632, always_xy=True).transform(265000.0, 4988600.0)
    for res, size in ((PIXEL, 64), (7.5, 80)):
        ds = AEF(catalog=gdal_collection.index, years=2023, crs=32632, res=res)
        assert ds.crs == CRS.from_epsg(32632) and ds.res == (res, res)
        west, north = round(x) - 0.4 * size * res + 2.5, round(y) + 0.5 * size * res + 2.5
        assert not on_grid(tile_file(gdal_collection, 2023, 0), 32632, west, north, res)
        [(values, source, _)] = expected_windows(
            gdal_collection, 2023, 32632, [(west, north)], size, res=res
        )
        sample = ds[west : west + size * res, north - size * res : north]
        assert tuple(sample["image"].shape) == (64, size, size)
        assert np.array_equal(sample["image"].numpy(), values), res
        counts = {k: int((source == k).sum()) for k in (-1, 0, 1, 2)}
        assert all(n > 0 for n in counts.values()), counts
        if TENSOR_SAMPLES:
            assert torch.equal(
                sample["transform"], torch.tensor(from_origin(west, north, res, res))
            )


# -- 5: years --------------------------------------------------------------------------------

# Tile 3 (18S) whole, with a margin: every nodata pixel and single-band -128 of both years.
T3_WEST, T3_NORTH, T3_SIZE = 497900.0, 8508700.0, 320


def test_years_mosaic_earliest_first_or_stack(gdal_collection):
    """A query over 2023 and 2024 takes 2023's value wherever 2023 holds one and 2024's
    where 2023 has -128 (value by value, as rasterio.merge does for RasterDataset); a query
    whose time is inside 2024 gives 2024 alone; time_series stacks the years."""
    e = {
        year: expected_windows(
            gdal_collection, year, 32718, [(T3_WEST, T3_NORTH)], T3_SIZE, tiles=(3,)
        )[0][0]
        for year in (2023, 2024)
    }
    ds = AEF(catalog=gdal_collection.index, years=[2023, 2024], crs=32718)
    x = slice(T3_WEST, T3_WEST + T3_SIZE * PIXEL)
    y = slice(T3_NORTH - T3_SIZE * PIXEL, T3_NORTH)
    mosaic = np.where(e[2023] == NODATA, e[2024], e[2023])
    from_2024 = (e[2023] == NODATA) & (e[2024] != NODATA)
    assert from_2024.sum() > 0 and not np.array_equal(mosaic, e[2024])
    both = slice(pd.Timestamp("2023-06-01"), pd.Timestamp("2024-06-01"))
    assert np.array_equal(ds[x, y, both]["image"].numpy(), mosaic)
    assert np.array_equal(ds[x, y]["image"].numpy(), mosaic)  # the dataset's whole time
    for t in (
        slice(pd.Timestamp("2024-02-01"), pd.Timestamp("2024-03-01")),
        slice(*year_interval(2024)),
    ):
        assert np.array_equal(ds[x, y, t]["image"].numpy(), e[2024])
    assert np.array_equal(ds[x, y, slice(*year_interval(2023))]["image"].numpy(), e[2023])

    series = AEF(catalog=gdal_collection.index, years=[2023, 2024], crs=32718, time_series=True)
    stacked = series[x, y, both]["image"]
    assert tuple(stacked.shape) == (2, 64, T3_SIZE, T3_SIZE)
    assert np.array_equal(stacked.numpy(), np.stack([e[2023], e[2024]]))
    only = series[x, y, slice(*year_interval(2024))]["image"]
    assert tuple(only.shape) == (1, 64, T3_SIZE, T3_SIZE)
    assert np.array_equal(only.numpy()[0], e[2024])


@pytest.mark.skipif(SequentialTimestampSampler is None, reason="TorchGeo < 0.10")
def test_spatial_and_temporal_samplers_compose(gdal_collection, zone33_catalog):
    """GriddedPatchSampler @ SequentialTimestampSampler: each location once per year, each
    sample that year's window."""
    ds = AEF(catalog=zone33_catalog, years=[2023, 2024])
    roi = shapely.box(264000.0, 4988000.0, 266000.0, 4989600.0)
    spatial = GriddedPatchSampler(ds, size=32, stride=32, roi=roi)
    sampler = spatial @ SequentialTimestampSampler(ds)
    queries = list(sampler)
    years = [q[2].start.year for q in queries]
    assert sorted(set(years)) == [2023, 2024] and len(queries) > 8
    for year in (2023, 2024):
        mine = [q for q, y in zip(queries, years, strict=True) if y == year]
        assert all(q[2] == slice(*year_interval(year)) for q in mine)
        check_samples(gdal_collection, ds, mine, [ds[q] for q in mine], year, 32633, tiles=(1, 2))


# -- 6: de-quantized, bands ------------------------------------------------------------------


def test_dequantize_and_bands(gdal_collection):
    [(values, _, _)] = expected_windows(
        gdal_collection, 2023, 32718, [(T3_WEST, T3_NORTH)], T3_SIZE, tiles=(3,)
    )
    x = slice(T3_WEST, T3_WEST + T3_SIZE * PIXEL)
    y = slice(T3_NORTH - T3_SIZE * PIXEL, T3_NORTH)
    ds = AEF(catalog=gdal_collection.index, years=2023, crs=32718, dequantize=True)
    image = ds[x, y]["image"]
    assert image.dtype == torch.float32 and tuple(image.shape) == (64, T3_SIZE, T3_SIZE)
    got, want = image.numpy(), dequantized(values)
    assert np.array_equal(np.isnan(got), values == NODATA)
    assert (values == NODATA).any()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, equal_nan=True)

    two = AEF(catalog=gdal_collection.index, years=2023, crs=32718, bands=["A00", "A05"])
    image = two[x, y]["image"]
    assert image.dtype == torch.int8 and tuple(image.shape) == (2, T3_SIZE, T3_SIZE)
    assert np.array_equal(image.numpy(), values[[0, 5]])
    both = AEF(
        catalog=gdal_collection.index, years=2023, crs=32718, bands=["A00", "A05"], dequantize=True
    )
    np.testing.assert_allclose(
        both[x, y]["image"].numpy(), want[[0, 5]], rtol=1e-6, atol=0, equal_nan=True
    )


# -- 7: outside ------------------------------------------------------------------------------


def test_a_query_outside_the_index_raises_index_error(ds33):
    with pytest.raises(IndexError):
        ds33[0.0:320.0, 0.0:320.0]  # nowhere near a tile
    with pytest.raises(IndexError):  # over tile 1, but in 2020
        ds33[
            263000.0:263320.0,
            4987000.0:4987320.0,
            pd.Timestamp("2020-01-01") : pd.Timestamp("2020-12-31"),
        ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ds33[263000.0:263320.0, 4987000.0:4987320.0]["image"].shape[-1] == 32


def test_a_window_in_a_rotated_footprints_bounds_reads_nodata(gdal_collection, ds33):
    """TorchGeo's samplers cut windows from each index row's bounds: a window inside tile
    0's 33N bounding box but outside its (rotated) outline, and outside every other tile,
    reads as -128 instead of failing the epoch with an IndexError."""
    west, north, size = 264300.0, 4988960.0, 32
    with rasterio.open(tile_file(gdal_collection, 2023, 0)) as src:
        w, s, e, n = raster_bounds(src)
    to_33n = Transformer.from_crs(32632, 32633, always_xy=True)
    outline = shapely.Polygon([to_33n.transform(x, y) for x, y in [(w, s), (e, s), (e, n), (w, n)]])
    window = shapely.box(west, north - size * PIXEL, west + size * PIXEL, north)
    assert window.intersects(shapely.box(*outline.bounds)) and window.distance(outline) > 10
    [(values, source, _)] = expected_windows(gdal_collection, 2023, 32633, [(west, north)], size)
    assert (source == -1).all() and (values == NODATA).all()
    sample = ds33[west : west + size * PIXEL, north - size * PIXEL : north]
    assert np.array_equal(sample["image"].numpy(), values)
