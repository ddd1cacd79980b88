"""Fixtures written by GDAL (through rasterio): the independent writer aefsql is checked against."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.transform import Affine

from aefsql.writer import TileEntry, write_index

PIXEL = 10.0


@dataclass(frozen=True)
class Layout:
    compression: str = "zstd"
    predictor: int = 1
    bigtiff: bool = False
    south_up: bool = True
    block: int = 256
    interleave: str = "band"  # band: planar-separate (AEF); pixel: chunky
    epsg: int = 32633
    width: int = 700
    height: int = 600
    bands: int = 64
    west: float = 420000.0
    south: float | None = None  # default: a realistic northing for the hemisphere

    @property
    def name(self) -> str:
        planar = "planar" if self.interleave == "band" else "chunky"
        return (
            f"int8_{self.bands}band_{planar}_{self.compression}_pred{self.predictor}"
            f"_block{self.block}_{'southup' if self.south_up else 'northup'}"
            f"_{'bigtiff' if self.bigtiff else 'tiff'}_{self.epsg}.tif"
        )

    @property
    def transform(self) -> Affine:
        x0 = self.west
        y_south = self.south or (5100000.0 if self.epsg < 32700 else 7100000.0)
        if self.south_up:
            return Affine(PIXEL, 0, x0, 0, PIXEL, y_south)
        return Affine(PIXEL, 0, x0, 0, -PIXEL, y_south + self.height * PIXEL)


AEF = Layout()
LAYOUTS = [
    AEF,
    Layout(epsg=32733),
    Layout(compression="deflate"),
    Layout(predictor=2),
    Layout(compression="deflate", predictor=2, epsg=32718),
    Layout(bigtiff=True),
    Layout(south_up=False),
    Layout(interleave="pixel", block=128),
    Layout(block=128, width=513, height=257),
]


def layout_data(layout: Layout, seed: int) -> np.ndarray:
    """int8 (bands, rows, cols): random values, a nodata rectangle in all bands, and a few
    nodata pixels in single bands."""
    rng = np.random.default_rng(seed)
    data = rng.integers(-127, 128, (layout.bands, layout.height, layout.width), dtype=np.int8)
    data[:, 40:90, 100:180] = -128
    for _ in range(20):
        data[
            rng.integers(layout.bands), rng.integers(layout.height), rng.integers(layout.width)
        ] = -128
    return data


def write_layout(folder: Path, layout: Layout, seed: int = 0, name: str | None = None) -> Path:
    path = Path(folder) / (name or layout.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff",
        width=layout.width,
        height=layout.height,
        count=layout.bands,
        dtype="int8",
        crs=f"EPSG:{layout.epsg}",
        transform=layout.transform,
        nodata=-128,
        tiled=True,
        blockxsize=layout.block,
        blockysize=layout.block,
        compress=layout.compression.upper(),
        predictor=layout.predictor,
        interleave=layout.interleave,
        BIGTIFF="YES" if layout.bigtiff else "NO",
    )
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(layout_data(layout, seed))
        ds.descriptions = tuple(f"A{i:02d}" for i in range(layout.bands))
        ds.build_overviews([2, 4])
    return path


def lonlat(epsg: int, x, y) -> tuple[np.ndarray, np.ndarray]:
    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
    return np.asarray(lon), np.asarray(lat)


def random_pixel_points(path: Path, n: int, seed: int = 0):
    """UTM x/y of points inside pixels (5%..95% across, never on an edge), their row/col, and
    whether they are inside the raster. Includes the first/last rows and columns, rows and
    columns either side of block edges, and points outside the raster on every side."""
    rng = np.random.default_rng(seed)
    with rasterio.open(path) as ds:
        width, height, block = ds.width, ds.height, ds.block_shapes[0][0]
        transform = ds.transform
    edges_r = np.unique(
        np.r_[0, height - 1, np.arange(block, height, block) - 1, np.arange(block, height, block)]
    )
    edges_c = np.unique(
        np.r_[0, width - 1, np.arange(block, width, block) - 1, np.arange(block, width, block)]
    )
    rows = np.r_[rng.integers(0, height, n), rng.choice(edges_r, n // 4), [-1, height, 3, 3]]
    cols = np.r_[rng.integers(0, width, n), rng.integers(0, width, n // 4), [3, 3, -1, width]]
    rows = np.r_[rows, rng.integers(0, height, n // 4)]
    cols = np.r_[cols, rng.choice(edges_c, n // 4)]
    fx = rng.uniform(0.05, 0.95, rows.size)
    fy = rng.uniform(0.05, 0.95, rows.size)
    x = transform.c + transform.a * (cols + fx)
    y = transform.f + transform.e * (rows + fy)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    return x, y, rows, cols, inside


# -- a multi-tile, two-year collection with its index.parquet ------------------------------

# (zone label, EPSG, x of the western edge, y of the southern edge): 32N/33N meet at 12°E
# and their tiles overlap there; 18S is in the southern hemisphere; nothing covers (0, 0).
COLLECTION_TILES = [
    ("32N", 32632, 735000.0, 4986000.0),  # straddles 12°E, overlapping the next tile
    ("33N", 32633, 262000.0, 4986000.0),
    ("33N", 32633, 265000.0, 4988600.0),  # corner to corner with the last: boxes overlap
    ("18S", 32718, 498000.0, 8506000.0),
]
TILE_WIDTH, TILE_HEIGHT = 300, 260


def write_collection(folder: Path, years=(2023, 2024)) -> Path:
    """The AEF layout (planar, zstd, south-up, int8 x 64, 128-px blocks) in several UTM zones
    and two years, and an index.parquet in the published narrow schema with relative paths."""
    folder = Path(folder)
    entries = []
    for year in years:
        for k, (zone, epsg, x0, y0) in enumerate(COLLECTION_TILES):
            layout = Layout(
                epsg=epsg, width=TILE_WIDTH, height=TILE_HEIGHT, block=128, west=x0, south=y0
            )
            rel = f"{year}/{zone}/tile{k}-{0:010d}-{0:010d}.tiff"
            write_layout(folder, layout, seed=year * 10 + k, name=rel)
            entries.append(
                TileEntry(
                    year, rel, epsg, x0, y0, x0 + TILE_WIDTH * PIXEL, y0 + TILE_HEIGHT * PIXEL
                )
            )
    # The index is written by aefsql's writer: the rasters, the part under test, are GDAL's.
    index = write_index(folder / "index.parquet", entries)
    return index
