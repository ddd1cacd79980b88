"""Sampling speed on local files: aefsql against GDAL (rasterio) and the inflate-only bound.

Writes, with GDAL, an AEF-layout collection (int8 x 64 bands, planar-separate, ZSTD, south-up)
of square tiles in two block sizes (1024, as the published files, and 256), then samples N
points per layout, uniform and clustered, and prints points/s and ratios measured in this run.

    python benchmarks/bench_local.py [--size 4096] [--tiles 2] [--points 20000] [--dir DIR]

The inflate-only bound is the time to decompress, once, every distinct block the points need,
on all cores: no reader that decodes whole blocks can beat it.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import rasterio
import zstandard
from pyproj import Transformer
from rasterio.transform import Affine

import aefsql
from aefsql.writer import TileEntry, write_index

EPSG = 32633
X0, Y0 = 400000.0, 5000000.0
PIXEL = 10.0


def write_collection(folder: Path, size: int, tiles: int, block: int) -> Path:
    """`tiles` tiles side by side (west to east), GDAL-written, and their index.parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for k in range(tiles):
        west = X0 + k * size * PIXEL
        rel = f"2024/33N/bench{block}-{k}.tiff"
        path = folder / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            profile = dict(
                driver="GTiff",
                width=size,
                height=size,
                count=64,
                dtype="int8",
                crs=f"EPSG:{EPSG}",
                transform=Affine(PIXEL, 0, west, 0, PIXEL, Y0),
                nodata=-128,
                tiled=True,
                blockxsize=block,
                blockysize=block,
                compress="ZSTD",
                interleave="band",
                BIGTIFF="YES",
            )
            with rasterio.open(path, "w", **profile) as ds:
                for band in range(64):
                    ds.write(_band(size, band, seed=k), band + 1)
        entries.append(TileEntry(2024, rel, EPSG, west, Y0, west + size * PIXEL, Y0 + size * PIXEL))
    return write_index(folder / f"index{block}.parquet", entries)


def _band(size: int, band: int, seed: int) -> np.ndarray:
    """Smooth structure plus noise: compresses about as much as embeddings do (~2x)."""
    rng = np.random.default_rng(seed * 64 + band)
    y, x = np.ogrid[0:size, 0:size]
    smooth = 60 * np.sin(x / (40 + band)) * np.cos(y / (55 + band))
    return np.clip(smooth + rng.normal(0, 12, (size, size)), -127, 127).astype(np.int8)


def points(kind: str, n: int, size: int, tiles: int, seed: int = 0):
    """UTM x/y of n points over the collection: uniform, or in 50 clusters of 300 m."""
    rng = np.random.default_rng(seed)
    width, height = tiles * size * PIXEL, size * PIXEL
    if kind == "uniform":
        x = X0 + rng.uniform(0, width, n)
        y = Y0 + rng.uniform(0, height, n)
    else:
        centres = np.column_stack(
            [X0 + rng.uniform(500, width - 500, 50), Y0 + rng.uniform(500, height - 500, 50)]
        )
        which = rng.integers(0, 50, n)
        x = centres[which, 0] + rng.normal(0, 300, n)
        y = centres[which, 1] + rng.normal(0, 300, n)
    # Keep clear of the outer edges, where the lon/lat round trip could step outside.
    return np.clip(x, X0 + 1, X0 + width - 1), np.clip(y, Y0 + 1, Y0 + height - 1)


def time_aefsql(index: Path, lon, lat) -> tuple[float, pa.Table]:
    """Best of two runs, each on a new connection (no cache carried over)."""
    table = pa.table({"lon": lon, "lat": lat})
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        result = aefsql.sample_points(table, years=2024, catalog=str(index), progress=False)
        best = min(best, time.perf_counter() - start)
    return best, result


def time_rasterio(folder: Path, size: int, block: int, x, y) -> tuple[float, np.ndarray]:
    tile = ((x - X0) // (size * PIXEL)).astype(int)
    out = np.empty((x.size, 64), dtype=np.int8)
    start = time.perf_counter()
    for k in np.unique(tile):
        chosen = np.flatnonzero(tile == k)
        with rasterio.open(folder / f"2024/33N/bench{block}-{k}.tiff") as ds:
            out[chosen] = np.array(list(ds.sample(zip(x[chosen], y[chosen], strict=True))))
    return time.perf_counter() - start, out


def time_inflate_bound(folder: Path, size: int, block: int, x, y) -> tuple[float, int]:
    """Decompress every distinct block the points need, once, on all cores."""
    tile = ((x - X0) // (size * PIXEL)).astype(int)
    col = ((x - X0 - tile * size * PIXEL) // PIXEL).astype(int)
    row = ((y - Y0) // PIXEL).astype(int)
    per_side = size // block
    raw = []
    for k in np.unique(tile):
        chosen = tile == k
        bases = np.unique((row[chosen] // block) * per_side + col[chosen] // block)
        path = folder / f"2024/33N/bench{block}-{k}.tiff"
        with rasterio.open(path) as ds, open(path, "rb") as f:
            for band in range(64):
                for base in bases:
                    r, c = divmod(int(base), per_side)
                    offset, length = _block_location(ds, band + 1, r, c)
                    f.seek(offset)
                    raw.append(f.read(length))
    start = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b), raw))
    return time.perf_counter() - start, len(raw)


def _block_location(ds, band: int, row: int, col: int) -> tuple[int, int]:
    offset = int(ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band))
    length = int(ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band))
    return offset, length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tiles", type=int, default=2)
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aefsql-bench"))
    args = parser.parse_args()
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    print(
        f"# {args.tiles} tiles of {args.size}x{args.size} px x 64 bands, {args.points} points, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'block':>5} {'points':>9} {'aefsql pt/s':>12} {'rasterio pt/s':>14} "
        f"{'vs rasterio':>11} {'blocks':>7} {'inflate s':>9} {'aefsql s':>9} {'vs bound':>8}"
    )
    for block in (1024, 256):
        index = write_collection(args.dir, args.size, args.tiles, block)
        for kind in ("uniform", "clustered"):
            x, y = points(kind, args.points, args.size, args.tiles)
            lon, lat = (np.asarray(v) for v in to_lonlat.transform(x, y))
            ours_s, ours = time_aefsql(index, lon, lat)
            gdal_s, gdal = time_rasterio(args.dir, args.size, block, x, y)
            bound_s, blocks = time_inflate_bound(args.dir, args.size, block, x, y)
            ours_values = np.stack(
                [ours[f"A{i:02d}"].fill_null(-128).to_numpy() for i in range(64)], axis=1
            )
            assert np.array_equal(ours_values, gdal), "aefsql and GDAL disagree"
            n = args.points
            print(
                f"{block:>5} {kind:>9} {n / ours_s:>12.0f} {n / gdal_s:>14.0f} "
                f"{gdal_s / ours_s:>10.2f}x {blocks:>7} {bound_s:>9.2f} {ours_s:>9.2f} "
                f"{ours_s / bound_s:>7.2f}x"
            )


if __name__ == "__main__":
    main()
