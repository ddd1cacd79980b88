"""A change map in SQL: aef_change against rasterio reading both years' windows, and against
the idiom documented before it (a self-join of aef_pixels on location, aef_vector each side).

On bench_local.py's collection (GDAL-written: int8 x 64 bands, planar-separate, ZSTD, 1024-px
blocks, south-up) — its 2024 tile 0, and a 2023 tile on the same grid written here with the
same writer (other values, a nodata rectangle) under --dir — measures in one run, each query
from a new connection, fetching its rows as Arrow:

- the whole tile (--size², default 4096²), two years:
  `SELECT x, y, similarity FROM aef_change(tile, years := [2023, 2024], crs := 32633)`,
  and `SELECT count(*), sum(similarity)` (the same work, without handing rows to Python),
  against rasterio's `src.read(window=...)` of both years' windows with
  GDAL_NUM_THREADS=ALL_CPUS (the read alone, issue 24's baseline), and against the same
  read in SQL, `SELECT count(*), sum(A63) FROM aef_pixels(tile, years := [2023, 2024])`
  (what aef_change adds its comparison to);
- a --small² area (default 768²): the old idiom, aef_change, rasterio's two windows.

aef_change's similarities are checked against numpy's cosine over the de-quantized rasterio
windows in the same run, pixel for pixel (and the idiom's against aef_change's).

    python benchmarks/bench_change.py [--size 4096] [--small 768] [--runs 2] [--idiom-runs 1]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import rasterio
from bench_areas import BLOCK, GDAL_THREADS, area_box, best_of, rasterio_area
from bench_local import EPSG, PIXEL, X0, Y0, write_collection
from rasterio.transform import Affine

import aefsql
from aefsql.aef import NODATA, dequantize
from aefsql.writer import TileEntry, write_index

YEARS = (2023, 2024)
QUERIES = {
    "aef_pixels, count (the read in SQL)": (
        "SELECT count(*) AS x, sum(A63) AS y, NULL AS similarity "
        "FROM aef_pixels({box}, years := [2023, 2024], crs := {epsg})"
    ),
    "aef_change, rows to Arrow": (
        "SELECT x, y, similarity FROM aef_change({box}, years := [2023, 2024], crs := {epsg})"
    ),
    "aef_change, count and sum": (
        "SELECT count(*) AS x, sum(similarity) AS y, NULL AS similarity "
        "FROM aef_change({box}, years := [2023, 2024], crs := {epsg})"
    ),
}
IDIOM = (
    "WITH px AS (FROM aef_pixels({box}, years := [2023, 2024], crs := {epsg})) "
    "SELECT a.x, a.y, array_cosine_similarity(aef_vector(a), aef_vector(b)) AS similarity "
    "FROM px a JOIN px b ON a.location = b.location AND a.year = 2023 AND b.year = 2024"
)


def two_years(folder: Path, bench: Path, size: int) -> tuple[str, dict[int, str]]:
    """An index of bench_local.py's 2024 tile 0 (linked) and a 2023 tile on its grid,
    GDAL-written here once; ({year: path})."""
    write_collection(bench, size, 2, BLOCK)
    name = f"33N/bench{BLOCK}-0.tiff"
    later = folder / "2024" / name
    if not later.exists():
        later.parent.mkdir(parents=True, exist_ok=True)
        later.symlink_to(bench / "2024" / name)
    earlier = folder / "2023" / name
    if not earlier.exists():
        earlier.parent.mkdir(parents=True, exist_ok=True)
        profile = dict(
            driver="GTiff",
            width=size,
            height=size,
            count=64,
            dtype="int8",
            crs=f"EPSG:{EPSG}",
            transform=Affine(PIXEL, 0, X0, 0, PIXEL, Y0),
            nodata=NODATA,
            tiled=True,
            blockxsize=BLOCK,
            blockysize=BLOCK,
            compress="ZSTD",
            interleave="band",
            BIGTIFF="YES",
        )
        partial = earlier.with_suffix(".partial")
        with rasterio.open(partial, "w", **profile) as ds:
            for band in range(64):
                ds.write(_band(size, band), band + 1)
        partial.rename(earlier)
    east, north = X0 + size * PIXEL, Y0 + size * PIXEL
    entries = [TileEntry(y, f"{y}/{name}", EPSG, X0, Y0, east, north) for y in YEARS]
    index = write_index(folder / "index.parquet", entries)
    return str(index), {y: str(folder / str(y) / name) for y in YEARS}


def _band(size: int, band: int) -> np.ndarray:
    """bench_local's smooth structure, shifted, plus other noise; a nodata rectangle."""
    rng = np.random.default_rng(1000 + band)
    y, x = np.ogrid[0:size, 0:size]
    smooth = 60 * np.sin(x / (40 + band) + 0.3) * np.cos(y / (55 + band))
    values = np.clip(smooth + rng.normal(0, 12, (size, size)), -127, 127).astype(np.int8)
    values[size // 3 : size // 3 + 100, size // 2 : size // 2 + 200] = NODATA
    return values


def query(catalog: str, text: str) -> pa.Table:
    con = aefsql.connect(catalog=catalog)
    try:
        con.execute("SET enable_progress_bar = false")
        return con.sql(text).to_arrow_table()
    finally:
        con.close()


def rasterio_both(files: dict[int, str], row0: int, col0: int, n: int) -> list[np.ndarray]:
    return [rasterio_area(files[y], row0, col0, n, GDAL_THREADS) for y in YEARS]


def numpy_change(a: np.ndarray, b: np.ndarray, rows: int = 64) -> np.ndarray:
    """float64 (n, n): each pixel's cosine between the de-quantized windows `a` and `b`
    (int8 (64, n, n)), NaN where either has a nodata band; `rows` rows at a time."""
    out = np.empty(a.shape[1:])
    for r in range(0, a.shape[1], rows):
        da, db = dequantize(a[:, r : r + rows]), dequantize(b[:, r : r + rows])
        with np.errstate(invalid="ignore"):
            out[r : r + rows] = (da * db).sum(0) / np.sqrt((da * da).sum(0) * (db * db).sum(0))
    return out


def check(table: pa.Table, expected: np.ndarray, row0: int, col0: int, label: str) -> None:
    rows = np.rint((table["y"].to_numpy() - Y0) / PIXEL - 0.5).astype(np.int64) - row0
    cols = np.rint((table["x"].to_numpy() - X0) / PIXEL - 0.5).astype(np.int64) - col0
    if table.num_rows != expected.size:
        raise AssertionError(f"{label}: {table.num_rows} rows, not the {expected.size} pixels")
    got = table["similarity"].to_numpy(zero_copy_only=False).astype(np.float64)
    want = expected[rows, cols]
    if not np.array_equal(np.isnan(got), np.isnan(want)):
        raise AssertionError(f"{label}: NULLs differ from numpy's nodata")
    valid = ~np.isnan(want)
    if not np.allclose(got[valid], want[valid], rtol=1e-5, atol=1e-6):
        raise AssertionError(f"{label}: similarities differ from numpy over rasterio's windows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="tile side, pixels")
    parser.add_argument("--small", type=int, default=768, help="the idiom's area side, pixels")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--idiom-runs", type=int, default=1, help="runs of the idiom, ~30 s")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aefsql-bench-change"))
    parser.add_argument("--bench-dir", type=Path, default=Path("/tmp/aefsql-bench"))
    args = parser.parse_args()
    index, files = two_years(args.dir, args.bench_dir, args.size)
    print(
        f"# {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; change map 2023 -> 2024, "
        f"64 bands ({BLOCK}-px blocks, south-up, GDAL-written)"
    )
    small = args.small
    for n, row0, col0, label in (
        (args.size, 0, 0, f"whole tile {args.size}²"),
        (small, 700, 900, f"area {small}²"),
    ):
        box = area_box(row0, col0, n)
        windows = rasterio_both(files, row0, col0, n)
        expected = numpy_change(*windows)
        del windows
        queries = {k: q.format(box=box, epsg=EPSG) for k, q in QUERIES.items()}
        if n == small:
            queries["old idiom: self-join + aef_vector"] = IDIOM.format(box=box, epsg=EPSG)
        best = {"rasterio, both windows": float("inf"), **dict.fromkeys(queries, float("inf"))}
        checked = set()
        for run in range(args.runs):  # readers take turns: a passing load touches them all
            start = time.perf_counter()
            del_ = rasterio_both(files, row0, col0, n)
            best["rasterio, both windows"] = min(
                best["rasterio, both windows"], time.perf_counter() - start
            )
            del del_
            for name, text in queries.items():
                if name.startswith("old") and run >= args.idiom_runs:
                    continue
                seconds, table = best_of(1, lambda t=text: query(index, t))
                best[name] = min(best[name], seconds)
                if "count" not in name and name not in checked:  # (counts: nothing to check)
                    check(table, expected, row0, col0, name)
                    checked.add(name)
                del table
        base = best["rasterio, both windows"]
        print(f"\n{label}: {n * n:,} px x 2 years")
        print(f"{'':36} {'seconds':>8} {'M px/s':>8} {'vs rasterio':>12}")
        for name, seconds in best.items():
            print(f"{name:36} {seconds:8.2f} {n * n / seconds / 1e6:8.2f} {base / seconds:11.2f}x")
    print("\nvalues: equal numpy's cosine over rasterio's two windows, pixel for pixel")


if __name__ == "__main__":
    main()
