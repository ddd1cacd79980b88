"""Helpers shared by the test modules (fixtures live in conftest.py; files GDAL writes in
gdal_fixtures.py; the local servers in servers.py). A test module imports from here, never
from another test module. The expected values here come from rasterio, PROJ and tifffile;
aefsql lends only its band names and its index writer."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import rasterio
import tifffile
from gdal_fixtures import (
    COLLECTION_TILES,
    NODATA,
    PIXEL,
    TILE_HEIGHT,
    TILE_WIDTH,
    collection_path,
    lonlat,
)
from pyproj import Transformer
from rasterio.transform import rowcol
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

from aefsql.aef import BAND_NAMES
from aefsql.writer import TileEntry, write_index

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


# -- points and values in the GDAL-written collection (gdal_fixtures.write_collection) -------

# The 2023 files of the collection, in catalog order.
TILES = [
    f"2023/{zone}/tile{k}-0000000000-0000000000.tiff"
    for k, zone in enumerate(["32N", "33N", "33N", "18S"])
]


def tile_file(collection, year, k):
    return collection.folder / collection_path(year, k)


def tile_points(k: int, n: int, seed: int):
    """n random lon/lat points inside tile k, with their UTM x/y."""
    _, epsg, x0, y0 = COLLECTION_TILES[k]
    rng = np.random.default_rng(seed)
    x = x0 + (rng.integers(0, TILE_WIDTH, n) + rng.uniform(0.05, 0.95, n)) * PIXEL
    y = y0 + (rng.integers(0, TILE_HEIGHT, n) + rng.uniform(0.05, 0.95, n)) * PIXEL
    lon, lat = lonlat(epsg, x, y)
    return lon, lat, x, y


def points_in_every_tile():
    """(tile index, lon, lat) of 10 points in each 2023 tile."""
    lon, lat = [], []
    for k in range(len(TILES)):
        a, b, _, _ = tile_points(k, 10, seed=k)
        lon.append(a)
        lat.append(b)
    return np.repeat(np.arange(len(TILES)), 10), np.concatenate(lon), np.concatenate(lat)


def gdal_values(folder, year: int, k: int, x, y) -> np.ndarray:
    zone = COLLECTION_TILES[k][0]
    path = folder / f"{year}/{zone}/tile{k}-{0:010d}-{0:010d}.tiff"
    with rasterio.open(path) as ds:
        values = np.array(list(ds.sample(zip(x, y, strict=True)))).astype(np.int16)
    return np.where(values == -128, -999, values)


def band_matrix(table: pa.Table) -> np.ndarray:
    return np.stack(
        [table[b].cast(pa.int16()).fill_null(-999).to_numpy() for b in BAND_NAMES], axis=1
    )


# -- rasterio's reads of a file's pixels and windows (chips, ML datasets) -------------------


def opened(path, level=0):
    return rasterio.open(path, **({"overview_level": level - 1} if level else {}))


def pixel_box(path, x, y, level=0):
    """(west, south, east, north) of the pixel of `path` (at overview `level`) holding x/y."""
    with opened(path, level) as ds:
        (row,), (col,) = rowcol(ds.transform, [x], [y])
        west, south, east, north = window_bounds(Window(col, row, 1, 1), ds.transform)
    return min(west, east), min(south, north), max(west, east), max(south, north)


def chip_corner(path, x, y, size, level=0):
    """(west, north) of the size x size chip whose pixel [size // 2, size // 2] is the pixel of
    `path` holding x/y."""
    west, _, east, north = pixel_box(path, x, y, level)
    pixel = east - west
    return west - (size // 2) * pixel, north + (size // 2) * pixel


def gdal_chip(path, west, north, size, level=0, bands=None):
    """(int8 (bands, size, size) north-up, held (size, size)): rasterio's boundless read of
    the window of `path` whose north-west corner is (west, north), on the file's own grid;
    held: the pixels inside the raster (the rest are -128)."""
    with opened(path, level) as ds:
        t = ds.transform
        pixel = abs(t.a)
        cx = west + (np.arange(size) + 0.5) * pixel  # centres, west to east
        cy = north - (np.arange(size) + 0.5) * pixel  # north to south
        rows, _ = rowcol(t, np.full(size, cx[0]), cy)
        _, cols = rowcol(t, cx, np.full(size, cy[0]))
        rows, cols = np.asarray(rows), np.asarray(cols)
        window = Window(int(cols.min()), int(rows.min()), size, size)
        indexes = None if bands is None else [b + 1 for b in bands]
        data = ds.read(indexes, window=window, boundless=True, fill_value=NODATA)
        if t.e > 0:  # south-up: file rows run northward
            data = data[:, ::-1]
        held = ((rows >= 0) & (rows < ds.height))[:, None] & ((cols >= 0) & (cols < ds.width))
    return data, held


def chip_centres(west, north, size, pixel=PIXEL):
    x = west + (np.arange(size) + 0.5) * pixel
    y = north - (np.arange(size) + 0.5) * pixel
    return np.meshgrid(x, y)


def source_pixels(path, epsg, x, y, level=0):
    """(int8 (64, *x.shape), held): the pixel of `path` holding each point (EPSG `epsg`)."""
    with opened(path, level) as ds:
        tx, ty = Transformer.from_crs(epsg, ds.crs.to_epsg(), always_xy=True).transform(x, y)
        rows, cols = rowcol(ds.transform, np.ravel(tx), np.ravel(ty))
        rows, cols = np.reshape(rows, x.shape), np.reshape(cols, x.shape)
        held = (rows >= 0) & (rows < ds.height) & (cols >= 0) & (cols < ds.width)
        data = ds.read()
    values = np.full((64, *x.shape), NODATA, np.int8)
    values[:, held] = data[:, rows[held], cols[held]]
    return values, held


def own_zone_first(collection, year, epsg, x, y, level=0, skip=()):
    """(values (64, *x.shape), tile index or -1) of each point's source pixel, the tiles of
    the point's own UTM zone tried first (catalog order otherwise), as aef_locate does."""
    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
    zone = np.floor((lon + 180) / 6).astype(int) + 1
    own = np.where(lat >= 0, 32600, 32700) + zone
    values = np.full((64, *x.shape), NODATA, np.int8)
    owner = np.full(x.shape, -1)
    found = {
        k: source_pixels(tile_file(collection, year, k), epsg, x, y, level)
        for k in range(len(COLLECTION_TILES))
        if k not in skip
    }
    for first in (True, False):
        for k, (data, held) in found.items():
            mine = COLLECTION_TILES[k][1] == own
            take = held & (owner < 0) & (mine if first else ~mine)
            values[:, take] = data[:, take]
            owner[take] = k
    return values, owner


def pixel_points(rows, cols, x0, y0, seed=0):
    """UTM x/y inside the given pixels of a south-up tile whose south-west corner is (x0, y0)
    (rows counted northward), never near a pixel edge."""
    rng = np.random.default_rng(seed)
    rows, cols = np.asarray(rows), np.asarray(cols)
    x = x0 + (cols + rng.uniform(0.1, 0.9, cols.size)) * PIXEL
    y = y0 + (rows + rng.uniform(0.1, 0.9, rows.size)) * PIXEL
    return x, y


# -- areas: polygons, and aef_pixels' rows by pixel -----------------------------------------


def star(cx, cy, radius, n=9, seed=0):
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.4, 1.0, n) * radius
    ring = np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])
    return np.vstack([ring, ring[:1]])


def by_pixel(table, path):
    mine = table.filter(pa.compute.equal(table["path"], str(path)))
    values = band_matrix(mine)
    keys = zip(mine["row"].to_pylist(), mine["col"].to_pylist(), strict=True)
    return {key: values[i] for i, key in enumerate(keys)}


def assert_same(got: dict, expected: dict):
    assert set(got) == set(expected)
    for key, values in expected.items():
        assert np.array_equal(got[key], values), key


# -- files tifffile writes: layouts GDAL does not write --------------------------------------

SOUTH_UP = (10.0, 0.0, 0.0, 500000.0, 0.0, 10.0, 0.0, 4000000.0, 0, 0, 0, 0, 0, 0, 0, 1)
GEOKEYS_32633 = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633)
TO_LONLAT = Transformer.from_crs(32633, 4326, always_xy=True)


# The good tile of the broken_catalog fixture (conftest.py): 64 bands of 40 x 50 pixels.
GOOD_TILE = np.random.default_rng(11).integers(-127, 128, (64, 40, 50), dtype=np.int8)
GOOD_TILE[:, 5:9, 5:9] = -128  # a nodata patch, all bands together
GOOD_TILE[3, 20, 20] = -128  # one nodata pixel in one band


def geotags(matrix=SOUTH_UP, geokeys=GEOKEYS_32633, nodata="-128"):
    return [
        (34264, "d", 16, matrix, True),
        (34735, "H", len(geokeys), geokeys, True),
        (42113, "s", 0, nodata, True),
    ]


def write(path, data, **kw):
    kw.setdefault("extratags", geotags())
    tifffile.imwrite(path, data, photometric="minisblack", metadata=None, **kw)
    return path


def pixel_lonlat(rows, cols, x0=500000.0, y0=4000000.0, size=10.0):
    """Lon/lat of points inside pixels of the south-up test grid (not on pixel edges)."""
    rng = np.random.default_rng(3)
    x = x0 + (cols + rng.uniform(0.1, 0.9, cols.size)) * size
    y = y0 + (rows + rng.uniform(0.1, 0.9, rows.size)) * size
    return TO_LONLAT.transform(x, y)


# -- what went over the wire: the HTTP server's log, a file's blocks -------------------------


def tile_ranges_of(log, name: str) -> list[tuple[int, int]]:
    ranges = []
    for method, path, byte_range in log.requests:
        if path.endswith(name):
            assert method == "GET" and byte_range, "every read of a COG is a ranged GET"
            start, end = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", byte_range).groups())
            ranges.append((start, end + 1))
    return ranges


def block_ranges(path, level=0):
    """[(first, last byte)] of the pixel blocks of `path`'s level (tifffile)."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[level]
        return [
            (o, o + n - 1) for o, n in zip(page.dataoffsets, page.databytecounts, strict=True) if n
        ]


def pixel_reads(log, since, suffix):
    """[(first, last byte)] of the ranged GETs of paths ending with `suffix` since request
    number `since`, but the header's first read (from byte 0: in GDAL's layout it takes in
    the first few blocks too, and reading a header is not reading pixels)."""
    out = []
    for method, path, byte_range in log.requests[since:]:
        if method == "GET" and path.endswith(suffix) and byte_range:
            first, last = byte_range.removeprefix("bytes=").split("-")
            if int(first) > 0:
                out.append((int(first), int(last)))
    return out


def block_reads(blocks, reads):
    """How many reads overlap each block."""
    return np.array([sum(a <= last and first <= b for a, b in reads) for first, last in blocks])


# -- headers --------------------------------------------------------------------------------

# Every field of an ImageHeader but its block tables (compared apart).
HEADER_FIELDS = (
    "width",
    "height",
    "block_width",
    "block_height",
    "samples_per_pixel",
    "dtype",
    "planar_separate",
    "compression",
    "predictor",
    "transform",
    "epsg",
    "nodata",
    "tiled",
)


# -- the collection Rasteret wrote (tests/fixtures/rasteret) --------------------------------

RASTERET_FIXTURE = Path(__file__).parent / "fixtures" / "rasteret" / "collection"
RASTERET_FILES = {2023: "2023-southup.tif", 2024: "2024-northup.tif"}


def with_rasteret_fixture(root: Path) -> Path:
    """`root` holding the fixture collection (collection/) and a catalog of its two files
    (index.parquet)."""
    shutil.copytree(RASTERET_FIXTURE, root / "collection")
    entries = []
    for year, name in RASTERET_FILES.items():
        west, south, east, north = rasteret_bounds(year)
        entries.append(TileEntry(year, f"collection/tiffs/{name}", 32633, west, south, east, north))
    write_index(root / "index.parquet", entries)
    return root


def rasteret_bounds(year: int) -> tuple[float, float, float, float]:
    """West, south, east, north (rasterio's bounds put a south-up file's top at the south)."""
    with rasterio.open(RASTERET_FIXTURE / "tiffs" / RASTERET_FILES[year]) as ds:
        left, bottom, right, top = ds.bounds
    return left, min(bottom, top), right, max(bottom, top)


def rasteret_points(year: int, n: int = 60, seed: int = 0):
    """Lon/lat points over the file of `year` (some on nodata), with their x/y."""
    west, south, east, north = rasteret_bounds(year)
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(west + 1, east - 1, n), rng.uniform(south + 1, north - 1, n)
    lon, lat = Transformer.from_crs(32633, 4326, always_xy=True).transform(x, y)
    return pa.table({"lon": lon, "lat": lat}), x, y


def rasteret_gdal(year: int, x, y) -> np.ndarray:
    with rasterio.open(RASTERET_FIXTURE / "tiffs" / RASTERET_FILES[year]) as ds:
        return np.array(list(ds.sample(zip(x, y, strict=True)))).astype(np.int16)


def rasteret_values(table: pa.Table) -> np.ndarray:
    return np.stack(
        [table[f"A{b:02d}"].cast(pa.int16()).fill_null(-128).to_numpy() for b in range(64)],
        axis=1,
    )


# -- the SQL surface and the docs -----------------------------------------------------------


def registered_aef_functions(con) -> set[str]:
    rows = con.execute(
        "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_name LIKE 'aef%'"
    ).fetchall()
    return {name for (name,) in rows}


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)\n```", text, flags=re.DOTALL)


def readme_python(marker: str) -> str:
    return next(block for block in blocks(README, "python") if marker in block)


def readme_fast_loop() -> str:
    """The -m expression of the README's fast loop."""
    return next(m[1] for b in blocks(README, "sh") if (m := re.search(r'pytest .*-m "([^"]+)"', b)))


# -- dbt projects (dbt runs in a process of its own: nothing here imports dbt) --------------

DBT = str(Path(sys.executable).parent / "dbt")
SAMPLE_PLOTS = (
    "{{ config(materialized='table') }}\n"
    "SELECT * FROM aef_sample_points('{{ ref(\"plots\") }}', years := [2023, 2024],\n"
    "                                bands := ['A00', 'A63'])"
)


def write_project(
    folder: Path, database: Path, plugin_config: dict, models: dict, threads: int = 2
) -> None:
    (folder / "models").mkdir(parents=True)
    (folder / "seeds").mkdir()
    (folder / "dbt_project.yml").write_text(
        "name: aef_demo\nversion: '1.0'\nprofile: aef_demo\n"
        "model-paths: [models]\nseed-paths: [seeds]\n"
    )
    # JSON is YAML: the plugin config (storage options included) goes in as one mapping.
    (folder / "profiles.yml").write_text(f"""
aef_demo:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: {database}
      threads: {threads}
      plugins:
        - module: aefsql.dbt
          config: {json.dumps(plugin_config)}
""")
    for name, sql in models.items():
        (folder / "models" / f"{name}.sql").write_text(sql)


def write_plots_seed(folder: Path, plots: list) -> None:
    lines = ["plot,lon,lat", *(f"{name},{lon!r},{lat!r}" for name, lon, lat in plots)]
    (folder / "seeds" / "plots.csv").write_text("\n".join(lines) + "\n")


def plots_in_tile(n: int, seed: int) -> list:
    """n (name, lon, lat) inside the collection's tile 3, named after `seed`."""
    lon, lat, _, _ = tile_points(3, n, seed=seed)
    return [
        (f"plot{seed}_{i}", float(a), float(b))
        for i, (a, b) in enumerate(zip(lon, lat, strict=True))
    ]


def dbt(project: Path, *args: str) -> subprocess.CompletedProcess:
    # dbt in a process of its own, as users run it (it holds the database file while alive).
    return subprocess.run(
        [DBT, *args, "--project-dir", str(project), "--profiles-dir", str(project)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def node_results(project: Path, run: subprocess.CompletedProcess) -> dict:
    """{node name: its entry in dbt's run_results.json} of `run`, dbt's last invocation."""
    path = project / "target" / "run_results.json"
    assert path.exists(), f"dbt ran no node: {run.stdout[-3000:]}"
    results = json.loads(path.read_text())["results"]
    return {r["unique_id"].split(".")[-1]: r for r in results}


def gdal_pixels(table: pa.Table, level: int = 0):
    """For each file of a table of pixels (`path`, `row`, `col` columns, as aef_pixels gives
    them): (the rows of that file, bool over the table) and rasterio's values of those
    pixels, int8 (bands, rows), read from one window of the file's `level`."""
    paths = table["path"].to_numpy(zero_copy_only=False)
    rows, cols = table["row"].to_numpy(), table["col"].to_numpy()
    for path in sorted(set(paths.tolist())):
        mine = paths == path
        r, c = rows[mine], cols[mine]
        with rasterio.open(path, **({"overview_level": level - 1} if level else {})) as ds:
            window = Window(c.min(), r.min(), c.max() - c.min() + 1, r.max() - r.min() + 1)
            yield path, mine, ds.read(window=window)[:, r - r.min(), c - c.min()]
