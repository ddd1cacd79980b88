"""Fixtures written by GDAL (through rasterio): the independent writer aefsql is checked against."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from pyproj import Transformer
from rasterio.transform import Affine

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

    @property
    def name(self) -> str:
        planar = "planar" if self.interleave == "band" else "chunky"
        return (
            f"int8_{self.bands}band_{planar}_{self.compression}_pred{self.predictor}"
            f"_block{self.block}_{'southup' if self.south_up else 'northup'}"
            f"_{'bigtiff' if self.bigtiff else 'tiff'}_{self.epsg}.tif"
        )

    @property
    def origin(self) -> tuple[float, float]:
        """x of the western edge and y of the southern edge, realistic for the zone."""
        return 420000.0, (5100000.0 if self.epsg < 32700 else 7100000.0)

    @property
    def transform(self) -> Affine:
        x0, y_south = self.origin
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


def write_layout(folder: Path, layout: Layout, seed: int = 0) -> Path:
    path = Path(folder) / layout.name
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


def footprint(epsg: int, x0: float, y0: float, steps: int = 16):
    """The tile's outline in lon/lat, densified: a closed ring of (lon, lat)."""
    w, h = TILE_WIDTH * PIXEL, TILE_HEIGHT * PIXEL
    t = np.linspace(0, 1, steps, endpoint=False)
    xs = np.r_[x0 + t * w, np.full(steps, x0 + w), x0 + w - t * w, np.full(steps, x0), x0]
    ys = np.r_[np.full(steps, y0), y0 + t * h, np.full(steps, y0 + h), y0 + h - t * h, y0]
    return lonlat(epsg, xs, ys)


def polygon_wkb(lon: np.ndarray, lat: np.ndarray) -> bytes:
    ring = b"".join(struct.pack("<dd", a, b) for a, b in zip(lon, lat, strict=True))
    return struct.pack("<BIII", 1, 3, 1, lon.size) + ring


def write_collection(folder: Path, years=(2023, 2024)) -> Path:
    """The AEF layout (planar, zstd, south-up, int8 x 64, 128-px blocks) in several UTM zones
    and two years, and an index.parquet in the published narrow schema with relative paths."""
    folder = Path(folder)
    rows = []
    for year in years:
        for k, (zone, epsg, x0, y0) in enumerate(COLLECTION_TILES):
            layout = Layout(epsg=epsg, width=TILE_WIDTH, height=TILE_HEIGHT, block=128)
            rel = f"{year}/{zone}/tile{k}-{0:010d}-{0:010d}.tiff"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            data = layout_data(layout, seed=year * 10 + k)
            profile = dict(
                driver="GTiff",
                width=TILE_WIDTH,
                height=TILE_HEIGHT,
                count=64,
                dtype="int8",
                crs=f"EPSG:{epsg}",
                transform=Affine(PIXEL, 0, x0, 0, PIXEL, y0),
                nodata=-128,
                tiled=True,
                blockxsize=128,
                blockysize=128,
                compress="ZSTD",
                interleave="band",
            )
            with rasterio.open(folder / rel, "w", **profile) as ds:
                ds.write(data)
                ds.build_overviews([2, 4])
            lon, lat = footprint(epsg, x0, y0)
            rows.append(
                {
                    "fid": len(rows) + 1,
                    "geom": polygon_wkb(lon, lat),
                    "year": year,
                    "path": rel,
                    "crs": f"EPSG:{epsg}",
                    "utm_zone": zone,
                    "utm_west": x0,
                    "utm_south": y0,
                    "utm_east": x0 + TILE_WIDTH * PIXEL,
                    "utm_north": y0 + TILE_HEIGHT * PIXEL,
                    "wgs84_west": lon.min(),
                    "wgs84_south": lat.min(),
                    "wgs84_east": lon.max(),
                    "wgs84_north": lat.max(),
                }
            )
    schema = pa.schema(
        [
            ("fid", pa.int64()),
            ("geom", pa.binary()),
            ("year", pa.int32()),
            ("path", pa.string()),
            ("crs", pa.string()),
            ("utm_zone", pa.string()),
            *(
                (name, pa.float64())
                for name in (
                    "utm_west",
                    "utm_south",
                    "utm_east",
                    "utm_north",
                    "wgs84_west",
                    "wgs84_south",
                    "wgs84_east",
                    "wgs84_north",
                )
            ),
        ]
    )
    geo = (
        '{"version": "1.0.0", "primary_column": "geom", "columns": {"geom": '
        '{"encoding": "WKB", "geometry_types": ["Polygon"]}}}'
    )
    table = pa.Table.from_pylist(rows, schema=schema).replace_schema_metadata({"geo": geo})
    index = folder / "index.parquet"
    pq.write_table(table, index)
    return index
