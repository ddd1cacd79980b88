"""Overview levels: how close `aef_zonal(level := k)` comes to the level-0 mean of a parcel.

A level-k pixel stands for 2^k x 2^k pixels of level 0, and what it holds depends on who built
the overview: GDAL's default (`nearest`: one of those pixels), GDAL's `average` (the mean of
the int8 values, rounded), or the publisher's (the mean of the de-quantized unit vectors,
re-normalised to unit length and re-quantised). None of them is the mean of the de-quantized
level-0 pixels that `aef_zonal` gives at level 0, so `level := k` approximates it. This script
measures by how much: for rotated square parcels of several sizes, the cosine between the
level-k mean and the level-0 mean (the baseline, computed in the same run).

The data: one 64-band tile, unit vectors quantised with the inverse of the publisher's
de-quantisation, of three kinds that bracket real embeddings: `independent` pixels (each its
own random direction: the tests' fixtures are of this kind), `fields` (100 m Voronoi fields,
each a random direction, plus per-pixel noise of half its amplitude) and `smooth` (a blend of
five directions varying over ~2 km, the demo collection's kind). The GDAL overviews are
written by GDAL (rasterio's build_overviews) and read through aefsql's `aef_zonal(level := k)`;
the means are also computed with numpy over rasterio's overview arrays (rasterio's
geometry_mask, the pixel-centre rule; the pixel under the centroid when no centre is inside)
and the two are checked equal. The publisher's kind is computed with numpy only, with the
same function (rasterio cannot write overview pixels).

    python benchmarks/bench_overview_means.py [--size 1024] [--parcels 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import rasterio
import shapely
import shapely.affinity
import shapely.geometry
from rasterio.enums import Resampling
from rasterio.features import geometry_mask
from rasterio.transform import Affine, rowcol
from rasterio.windows import Window

import aefsql
from aefsql.writer import TileEntry, write_index

EPSG, WEST, NORTH, PIXEL = 32633, 400000.0, 5000000.0, 10.0
FACTORS = (2, 4, 8)  # levels 1, 2, 3
SIDES_M = (30, 60, 100, 200, 500, 1000, 2000)
KINDS = ("independent", "fields", "smooth")
METHODS = ("gdal-nearest", "gdal-average", "publisher")
YEAR = 2024


def dequantize(q: np.ndarray) -> np.ndarray:
    q = q.astype(np.float64)
    return np.sign(q) * (np.abs(q) / 127.5) ** 2


def quantize(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.sign(x) * np.sqrt(np.abs(x)) * 127.5), -127, 127).astype(np.int8)


def unit(v: np.ndarray, axis=0) -> np.ndarray:
    return v / np.linalg.norm(v, axis=axis, keepdims=True)


def embeddings(kind: str, size: int, rng) -> np.ndarray:
    """int8 (64, size, size) of unit vectors, quantised."""
    if kind == "independent":
        return quantize(unit(rng.normal(size=(64, size, size))))
    rows, cols = np.mgrid[0:size, 0:size]
    if kind == "fields":
        cell = 10  # 100 m: jittered-grid Voronoi, each pixel to its nearest of 9 centres
        n = size // cell + 2
        centres = (np.mgrid[0:n, 0:n].transpose(1, 2, 0) + rng.random((n, n, 2))) * cell
        directions = unit(rng.normal(size=(n, n, 64)), axis=-1)
        best = np.full((size, size), np.inf)
        field = np.zeros((size, size, 2), dtype=int)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                r = np.clip(rows // cell + dr, 0, n - 1)
                c = np.clip(cols // cell + dc, 0, n - 1)
                d = np.hypot(centres[r, c, 0] - rows, centres[r, c, 1] - cols)
                closer = d < best
                best[closer] = d[closer]
                field[closer] = np.stack([r, c], axis=-1)[closer]
        vectors = directions[field[..., 0], field[..., 1]]
        noise = unit(rng.normal(size=vectors.shape), axis=-1)
        return quantize(unit(np.moveaxis(vectors + 0.5 * noise, -1, 0)))
    prototypes = unit(rng.normal(size=(5, 64)), axis=-1)
    phases = rng.random((5, 2)) * 6.3
    period = 200.0  # pixels: 2 km
    weights = np.exp(
        3.0
        * np.stack(
            [
                np.sin(2 * np.pi * cols / period + a) + np.cos(2 * np.pi * rows / period * 0.8 - b)
                for a, b in phases
            ]
        )
    )
    return quantize(unit(np.tensordot(prototypes.T, weights, axes=(1, 0))))


def write_gdal(path: Path, data: np.ndarray, resampling: Resampling) -> None:
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=64,
        dtype="int8",
        crs=f"EPSG:{EPSG}",
        transform=Affine(PIXEL, 0, WEST, 0, -PIXEL, NORTH),
        nodata=-128,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="ZSTD",
        interleave="band",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        ds.descriptions = tuple(f"A{i:02d}" for i in range(64))
        ds.build_overviews(list(FACTORS), resampling)


def gdal_levels(path: Path) -> list[tuple[np.ndarray, Affine]]:
    levels = []
    for level in range(len(FACTORS) + 1):
        options = {} if level == 0 else {"overview_level": level - 1}
        with rasterio.open(path, **options) as ds:
            levels.append((ds.read(), ds.transform))
    return levels


def publisher_levels(data: np.ndarray) -> list[tuple[np.ndarray, Affine]]:
    """Each level from level 0: the mean of the de-quantized vectors of each f x f block,
    re-normalised to unit length, re-quantised (the size divides by every factor here)."""
    levels = [(data, Affine(PIXEL, 0, WEST, 0, -PIXEL, NORTH))]
    vectors = dequantize(data)
    for f in FACTORS:
        b, h, w = vectors.shape
        mean = vectors.reshape(b, h // f, f, w // f, f).mean(axis=(2, 4))
        levels.append((quantize(unit(mean)), Affine(PIXEL * f, 0, WEST, 0, -PIXEL * f, NORTH)))
    return levels


def zonal_mean(data: np.ndarray, transform: Affine, polygon) -> np.ndarray | None:
    """aef_zonal's rule: the mean de-quantized vector of the valid pixels whose centres are
    inside; the pixel under the centroid when no centre is."""
    west, south, east, north = polygon.bounds
    r0, c0 = rowcol(transform, west, north, op=np.floor)
    r1, c1 = rowcol(transform, east, south, op=np.floor)
    r0, c0 = max(int(r0), 0), max(int(c0), 0)
    r1, c1 = min(int(r1) + 1, data.shape[1]), min(int(c1) + 1, data.shape[2])
    window = Window(c0, r0, c1 - c0, r1 - r0)
    inside = geometry_mask(
        [shapely.geometry.mapping(polygon)],
        (r1 - r0, c1 - c0),
        rasterio.windows.transform(window, transform),
        invert=True,
    )
    rows, cols = np.nonzero(inside)
    rows, cols = rows + r0, cols + c0
    if len(rows) == 0:
        centroid = polygon.centroid
        r, c = rowcol(transform, centroid.x, centroid.y, op=np.floor)
        rows, cols = np.array([int(r)]), np.array([int(c)])
    values = data[:, rows, cols]
    valid = values[:, (values != -128).all(axis=0)]
    return dequantize(valid).mean(axis=1) if valid.shape[1] else None


def parcels(size: int, per_side: int, rng) -> list[tuple[int, object]]:
    """(side in metres, rotated square) per_side times for each side, inside the tile."""
    extent = size * PIXEL
    found = []
    for side in SIDES_M:
        for _ in range(per_side):
            margin = side
            x = WEST + rng.uniform(margin, extent - margin)
            y = NORTH - rng.uniform(margin, extent - margin)
            square = shapely.box(x - side / 2, y - side / 2, x + side / 2, y + side / 2)
            found.append((side, shapely.affinity.rotate(square, rng.uniform(0, 90))))
    return found


def aefsql_zonal(folder: Path, path: str, size: int, polygons: list, level: int) -> list:
    extent = size * PIXEL
    index = write_index(
        folder / "index.parquet",
        [TileEntry(YEAR, path, EPSG, WEST, NORTH - extent, WEST + extent, NORTH)],
    )
    con = aefsql.connect(catalog=str(index))
    try:
        con.register("parcels", pa.table({"geom": [shapely.to_wkb(p) for p in polygons]}))
        table = con.sql(
            f"SELECT embedding FROM aef_zonal('parcels', years := {YEAR}, crs := {EPSG}, "
            f"level := {level})"
        ).to_arrow_table()
    finally:
        con.close()
    return table["embedding"].to_pylist()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="tile side in pixels")
    parser.add_argument("--parcels", type=int, default=40, help="parcels of each size")
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()
    if args.size % max(FACTORS) or args.size * PIXEL < 2.5 * max(SIDES_M):
        parser.error(f"--size: a multiple of {max(FACTORS)}, at least {max(SIDES_M) // 4} px")
    rng = np.random.default_rng(args.seed)
    shapes = parcels(args.size, args.parcels, rng)
    sides = np.array([side for side, _ in shapes])
    polygons = [p for _, p in shapes]
    rows = []
    checked, largest_difference = 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            data = embeddings(kind, args.size, rng)
            for method in METHODS:
                started = time.perf_counter()
                if method == "publisher":
                    levels = publisher_levels(data)
                else:
                    folder = Path(tmp) / kind / method
                    relative = f"{YEAR}/33N/{kind}.tiff"
                    resampling = Resampling[method.removeprefix("gdal-")]
                    write_gdal(folder / relative, data, resampling)
                    levels = gdal_levels(folder / relative)
                means = [[zonal_mean(a, t, p) for p in polygons] for a, t in levels]
                if method != "publisher":  # what aef_zonal gives is what is measured
                    for level in range(len(levels)):
                        got = aefsql_zonal(folder, relative, args.size, polygons, level)
                        for mine, theirs in zip(means[level], got, strict=True):
                            assert (mine is None) == (theirs is None)
                            if mine is not None:
                                difference = np.abs(mine - np.asarray(theirs)).max()
                                largest_difference = max(largest_difference, difference)
                                checked += 1
                for level in range(1, len(levels)):
                    cos = np.array(
                        [
                            cosine(a, b) if a is not None and b is not None else np.nan
                            for a, b in zip(means[0], means[level], strict=True)
                        ]
                    )
                    rows.append((kind, method, level, cos))
                print(f"# {kind} {method}: {time.perf_counter() - started:.1f} s", flush=True)
    print(
        f"\naef_zonal equals numpy over rasterio's overviews for {checked} parcel means "
        f"(largest difference {largest_difference:.1e})\n"
    )
    print("cosine(level-k mean, level-0 mean): median, and 5th percentile in brackets\n")
    print("| data | overviews | level | " + " | ".join(f"{s} m" for s in SIDES_M) + " |")
    print("|---|---|---:|" + "---:|" * len(SIDES_M))
    for kind, method, level, cos in rows:
        cells = []
        for side in SIDES_M:
            values = cos[sides == side]
            values = values[~np.isnan(values)]
            cells.append(f"{np.median(values):.3f} ({np.percentile(values, 5):.3f})")
        print(f"| {kind} | {method} | {level} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
